"""The catalog→image bridge: ``userbatch images submit REQUEST.yaml`` turns a short request (pipeline, butler repo,
input collections, data query, config overrides) into a BPS submit YAML for the userbatch WMS plugin and submits
it with plain ``bps submit``, so the workflow becomes one facility run under the user's (or group's) quota — the
same ids, status, logs, cancel and charge as a Spark job. Outputs land in ``u/<user>/<name>`` collections.

Quanta are clustered by default: a ``pipetask`` process spends seconds starting (imports, butler, graph) and a
small quantum a fraction of that, so one process per quantum would spend most of the run starting processes. The
submit YAML asks for :func:`userbatch.images.bps_service.userbatch_clustering`: about ``clusters`` (default: the
request's ``cores``) clusters of whole per-data-ID chains, one ``pipetask run-qbb`` each, enough to keep every core
busy. A request's own ``cluster`` sections (ctrl_bps' ``cluster:``, run with ``dimension_clustering``) win;
``clusters: 0`` runs one quantum per job. Outputs are the same either way.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import settings
from ..errors import UserbatchError
from ..resources import path as shipped_path

log = logging.getLogger(__name__)

#: the shipped pipelines (the repository's pipelines/ in a checkout, else the packaged copy)
PIPELINES = shipped_path("pipelines")
SERVICE = "userbatch.images.bps_service.UserbatchService"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_KEYS = {"pipeline", "butler", "inputs", "query", "config", "name", "cores", "max_hours", "group", "retries",
         "cluster", "clusters"}
#: ctrl_bps' clustering of a request's own ``cluster`` sections
DIMENSION_CLUSTERING = "lsst.ctrl.bps.quantum_clustering_funcs.dimension_clustering"
#: the default: about ``clusters`` clusters of whole chains (see the module docstring)
DEFAULT_CLUSTERING = "userbatch.images.bps_service.userbatch_clustering"
#: the keys a request's cluster section may set (ctrl_bps' dimension clustering and a cluster's resources)
_CLUSTER_KEYS = {"pipetasks", "dimensions", "equalDimensions", "partitionDimensions", "partitionMaxClusters",
                 "partitionMaxSize", "findDependencyMethod", "clusterTemplate", "requestCpus", "requestMemory",
                 "numberOfRetries"}
_CLUSTER_VALUE = re.compile(r"^[\w,:{}. =-]*$")


class ImageRequestError(UserbatchError):
    """An image-processing request that cannot be submitted as written."""


@dataclass(frozen=True)
class ImageRequest:
    pipeline: str
    butler: str
    inputs: tuple[str, ...]
    name: str
    query: str = ""
    config: dict = field(default_factory=dict)  # "label:field" -> value, as pipetask -c
    cores: int = 2
    max_hours: float = 1.0
    group: str | None = None
    retries: int = 1
    cluster: dict = field(default_factory=dict)  # the request's own ctrl_bps cluster sections: label -> settings
    clusters: int | None = None  # clusters of the default clustering (None: cores; 0: one quantum per job)

    def output(self, user: str) -> str:
        return f"u/{user}/{self.name}"


def pipeline_path(name: str) -> Path:
    """A pipeline file: a path, or the name of one shipped in ``pipelines/`` (``stamps``, ``standard`` ...)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p.resolve()
    if _NAME.match(name) and (PIPELINES / f"{name}.yaml").is_file():
        return PIPELINES / f"{name}.yaml"
    shipped = sorted(q.stem for q in PIPELINES.glob("*.yaml"))
    raise ImageRequestError(f"pipeline {name!r} is neither a YAML file nor one of {', '.join(shipped)}")


def parse_request(source) -> ImageRequest:
    """A request from a YAML file (path) or a mapping; each mistake names the key."""
    if isinstance(source, (str, Path)) and not isinstance(source, dict):
        path = Path(source)
        try:
            doc = yaml.safe_load(path.read_text())
        except OSError as e:
            raise ImageRequestError(f"cannot read request {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ImageRequestError(f"request {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    else:
        doc = source
    if not isinstance(doc, dict):
        raise ImageRequestError("a request is a mapping: pipeline, butler, inputs, query, config, name, cores, ...")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise ImageRequestError(f"unknown request key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    for k in ("pipeline", "butler", "inputs", "name"):
        if not doc.get(k):
            raise ImageRequestError(f"the request needs {k!r}")
    name = doc["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise ImageRequestError(f"name {name!r} must be a lower-case identifier (it names u/<user>/<name>)")
    inputs = doc["inputs"]
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(inputs, list) or not all(isinstance(i, str) and i for i in inputs):
        raise ImageRequestError("inputs must be a collection name or a list of them")
    config = doc.get("config") or {}
    if not isinstance(config, dict) or not all(isinstance(k, str) and ":" in k for k in config):
        raise ImageRequestError("config must map 'task_label:field' to a value, e.g. {'cutout:stampSize': 41}")
    butler = Path(str(doc["butler"])).expanduser()
    if not (butler / "butler.yaml").is_file():
        raise ImageRequestError(f"no butler repository at {butler} (no butler.yaml)")
    try:
        cores, hours, retries = int(doc.get("cores", 2)), float(doc.get("max_hours", 1.0)), int(doc.get("retries", 1))
    except (TypeError, ValueError):
        raise ImageRequestError("cores, max_hours and retries must be numbers") from None
    if cores < 1 or hours <= 0 or retries < 0:
        raise ImageRequestError("cores >= 1, max_hours > 0 and retries >= 0, please")
    clusters = doc.get("clusters")
    if clusters is not None and (isinstance(clusters, bool) or not isinstance(clusters, int) or clusters < 0):
        raise ImageRequestError("clusters must be a whole number >= 0 (0: one quantum per job)")
    return ImageRequest(pipeline=str(pipeline_path(str(doc["pipeline"]))), butler=str(butler.resolve()),
                        inputs=tuple(inputs), name=name, query=str(doc.get("query") or ""), config=dict(config),
                        cores=cores, max_hours=hours, group=doc.get("group"), retries=retries,
                        cluster=_cluster_sections(doc.get("cluster")), clusters=clusters)


def _cluster_sections(value) -> dict:
    """A request's ``cluster`` key: ctrl_bps ``cluster:`` sections, ``{label: {pipetasks: "a,b", dimensions:
    "visit", ...}}``, checked key by key (only clustering and resource settings; no commands)."""
    if value in (None, {}):
        return {}
    example = "e.g. {'chain': {'pipetasks': 'background,detection', 'dimensions': 'visit,detector'}}"
    if not isinstance(value, dict):
        raise ImageRequestError(f"cluster must map a cluster label to its settings, {example}")
    out = {}
    for label, section in value.items():
        if not isinstance(label, str) or not _NAME.match(label.lower()):
            raise ImageRequestError(f"cluster label {label!r} must be an identifier")
        if not isinstance(section, dict) or not section.get("pipetasks"):
            raise ImageRequestError(f"cluster {label!r} needs 'pipetasks' (task labels), {example}")
        unknown = sorted(set(section) - _CLUSTER_KEYS)
        if unknown:
            raise ImageRequestError(f"cluster {label!r}: unknown key(s) {', '.join(map(str, unknown))}; known: "
                                    f"{', '.join(sorted(_CLUSTER_KEYS))}")
        for key, v in section.items():
            if isinstance(v, bool) or not isinstance(v, (str, int)) or not _CLUSTER_VALUE.match(str(v)):
                raise ImageRequestError(f"cluster {label!r}: {key} must be a name list or a number, not {v!r}")
        out[label] = dict(section)
    return out


def submit_yaml(req: ImageRequest, user: str, submit_root: Path) -> dict:
    """The BPS submit configuration for ``req`` run by ``user``.

    Parameters
    ----------
    req : ImageRequest
        The checked request.
    user : str
        Who runs it: outputs go to ``u/<user>/<name>``.
    submit_root : Path
        The directory holding the submit directories (``<submit_root>/<name>``).

    Returns
    -------
    dict
        The submit YAML's content: the plugin, the payload, the run's resources, the retries and the clustering
        (the request's own ``cluster`` sections, else the default of the module docstring).
    """
    output = req.output(user)
    overrides = " ".join(f"-c {k}={_scalar(v)}" for k, v in sorted(req.config.items()))
    doc = {
        "pipelineYaml": req.pipeline,
        "wmsServiceClass": SERVICE,
        "payload": {"payloadName": req.name, "butlerConfig": req.butler, "inCollection": ",".join(req.inputs),
                    "dataQuery": req.query, "output": output, "outputRun": f"{output}/run"},
        "submitPath": str(submit_root / req.name),
        "userbatchCores": req.cores,
        "userbatchMaxHours": req.max_hours,
        "numberOfRetries": req.retries,
    }
    if req.cluster:
        doc["clusterAlgorithm"] = DIMENSION_CLUSTERING
        doc["cluster"] = {label: dict(section) for label, section in req.cluster.items()}
    else:
        doc["clusterAlgorithm"] = DEFAULT_CLUSTERING
        doc["userbatchClusters"] = req.cores if req.clusters is None else req.clusters
    if req.group:
        doc["userbatchGroup"] = req.group
    if overrides:
        doc["extraQgraphOptions"] = overrides
    return doc


def _scalar(v) -> str:
    text = str(v).lower() if isinstance(v, bool) else str(v)
    if re.search(r"\s|[\"'$`;&|]", text):
        raise ImageRequestError(f"config value {v!r} may not hold spaces or shell characters")
    return text


def submit(source, facility=None, submit_root: str | Path | None = None) -> dict:
    """Check the quota, write the submit YAML, ``bps submit`` it; returns the facility run (dict)."""
    from ..facility.service import Facility

    req = parse_request(source)
    fac = facility or Facility()
    fac.check_quota(cores=req.cores, max_hours=req.max_hours, group=req.group)  # before any graph is built
    root = Path(submit_root or settings().home / "bps" / fac.user)
    root.mkdir(parents=True, exist_ok=True)
    conf = submit_yaml(req, fac.user, root)
    if Path(conf["submitPath"]).exists():
        raise ImageRequestError(f"{conf['submitPath']} exists: a request named {req.name!r} was submitted before; "
                                "choose another name (outputs go to u/<user>/<name>)")
    path = root / f"{req.name}_submit.yaml"
    path.write_text(yaml.safe_dump(conf, sort_keys=False))
    env = dict(os.environ, USERBATCH_USER=fac.user, BPS_WMS_SERVICE_CLASS=SERVICE)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    bps = Path(sys.executable).with_name("bps")
    proc = subprocess.run([str(bps), "submit", str(path)], capture_output=True, text=True, env=env, cwd=root)
    m = re.search(r"Run Id: (\S+)", proc.stdout)
    if proc.returncode != 0 or not m:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ImageRequestError(f"bps submit failed: {last[0]} (submit YAML {path})")
    log.info("image request %s: facility run %s", req.name, m.group(1))
    return fac.status(m.group(1))


def stamps(table: str, where: str | None, butler: str, inputs: list[str], name: str, facility=None,
           cores: int = 2, max_hours: float = 1.0, group: str | None = None, stamp_size: int | None = None,
           submit_root: str | Path | None = None) -> dict:
    """Postage stamps around the objects a catalog query selects: the query's rows become the ``stamp_targets``
    dataset in ``u/<user>/<name>/targets``, the data query is narrowed to the visits and detectors that hold them,
    and the stamps pipeline is submitted through BPS like any other request."""
    from ..facility.service import Facility
    from .tasks.targets import stamps_request, targets_data_query

    fac = facility or Facility()
    fac.check_quota(cores=cores, max_hours=max_hours, group=group)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ImageRequestError(f"name {name!r} must be a lower-case identifier")
    targets_run = f"u/{fac.user}/{name}/targets"
    targets = stamps_request(table, where=where, repo=butler, run=targets_run)
    if len(targets) == 0:
        raise ImageRequestError(f"the query on {table} selects no objects; nothing to cut out")
    request = {"pipeline": "stamps", "butler": butler, "inputs": [*inputs, targets_run], "name": name,
               "query": targets_data_query(butler, targets), "cores": cores, "max_hours": max_hours,
               "group": group}
    if stamp_size:
        request["config"] = {"cutout:stampSize": int(stamp_size)}
    run = submit(request, facility=fac, submit_root=submit_root)
    return {**run, "targets": len(targets), "targets_collection": targets_run}
