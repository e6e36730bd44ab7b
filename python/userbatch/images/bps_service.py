"""The userbatch WMS plugin for BPS (``lsst.ctrl.bps``): a GenericWorkflow becomes one facility run.

A submit YAML with ``wmsServiceClass: userbatch.images.bps_service.UserbatchService`` (or ``BPS_WMS_SERVICE_CLASS``
in the environment) makes plain ``bps submit``/``report``/``cancel``/``restart`` talk to the User Batch facility:

* :meth:`UserbatchService.prepare` saves the GenericWorkflow under the submit directory and writes a job plan
  (``userbatch_plan.json``): each job's fully expanded command line, environment, parents, resources and retries,
  and the final job with its ``whenRun`` rule;
* :meth:`UserbatchService.submit` queues a facility run of kind ``bps`` (``userbatchCores`` cores for
  ``userbatchMaxHours`` hours, optionally paid by ``userbatchGroup``) and returns at once; the facility run id is
  the BPS run id. An over-quota request raises :class:`~userbatch.facility.ledger.QuotaExceeded` before anything
  runs (already in :meth:`run_submission_checks`, before the QuantumGraph is even built);
* the run's driver calls :func:`userbatch.images.bps_executor.execute`, which runs the jobs as Spark tasks and
  keeps their states in ``userbatch_jobs.json`` in the submit directory;
* :meth:`report`/:meth:`get_status` combine the facility run's state with that state file;
  :meth:`cancel` cancels the facility run; :meth:`restart` queues a new facility run on the same submit directory,
  which re-runs only the jobs that did not succeed.

A run id given to report/cancel/restart may be the facility run id or the submit directory.

**Quantum clustering.** ctrl_bps' own clustering works unchanged: with ``clusterAlgorithm:
lsst.ctrl.bps.quantum_clustering_funcs.dimension_clustering`` and ``cluster:`` sections a GenericWorkflow job is a
cluster of quanta (one ``pipetask run-qbb ... --qgraph-node-id a,b,c`` process); the plan keeps each job's quanta
per task label, ``bps report`` counts jobs per job label (the cluster label) and its run summary counts quanta per
task label. Small quanta cost far less than a ``pipetask`` start-up (seconds of imports, butler and graph
loading), so running one process per quantum wastes most of a run. :func:`userbatch_clustering`
(``clusterAlgorithm: userbatch.images.bps_service.userbatch_clustering``, the bridge's default) makes about
``userbatchClusters`` (default ``userbatchCores``) clusters, each a set of whole data-ID chains, with ctrl_bps'
``dimension_clustering`` and ``partitionDimensions``/``partitionMaxClusters`` — one process per core — unless
the submit YAML has ``cluster:`` sections of its own, which win.
"""

from __future__ import annotations

import json
import os
import logging
import re
import time
from pathlib import Path

from lsst.ctrl.bps import BaseWmsService, BaseWmsWorkflow, WmsJobReport, WmsRunReport, WmsStates

from ..errors import UserbatchError
from ..resources import conf

log = logging.getLogger(__name__)

#: The plugin's defaults (read by BPS after its own and before the user's submit YAML).
DEFAULTS_PATH = conf("bps", "userbatch.yaml")
PLAN_NAME = "userbatch_plan.json"
STATE_NAME = "userbatch_jobs.json"
SUBMIT_NAME = "userbatch_submit.json"
GW_NAME = "userbatch_generic_workflow.pickle"

_ENV = re.compile(r"<ENV:([^>\s]+)>")
_FILE = re.compile(r"<FILE:([^>\s]+)>")
_RUN_ID = re.compile(r"^[0-9a-f]{4,16}$")

#: Facility run state -> BPS run state.
RUN_STATES = {"queued": WmsStates.PENDING, "starting": WmsStates.RUNNING, "running": WmsStates.RUNNING,
              "succeeded": WmsStates.SUCCEEDED, "failed": WmsStates.FAILED, "cancelled": WmsStates.DELETED}
ACTIVE = ("queued", "starting", "running")


# ----------------------------------------------------------------------------------------------- the plan
def _resolve_command(command: str, cmdvals: dict, files: dict[str, str]) -> str:
    """BPS's symbolic command line made concrete, as the parsl plugin does: ``{var}`` from the job's cmdvals,
    ``<ENV:X>`` to ``${X}`` (expanded by the shell that runs it), ``<FILE:name>`` to the file's path."""
    if cmdvals:
        command = command.format(**cmdvals)
    prev = None
    while prev != command:
        prev = command
        command = _ENV.sub(r"${\1}", command)
        command = _FILE.sub(lambda m: files[m.group(1)], command)
    return command


def _int(value, default: int | None = None) -> int | None:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _job_entry(generic_workflow, job) -> dict:
    files = {f.name: f.src_uri for f in generic_workflow.get_job_inputs(job.name)}
    if job.executable is None:
        raise UserbatchError(f"BPS job {job.name} has no executable")
    command = _resolve_command(f"{job.executable.src_uri} {job.arguments or ''}".strip(), job.cmdvals, files)
    env = {str(k): _resolve_command(str(v), {}, files) for k, v in (job.environment or {}).items()}
    retry_unless = job.retry_unless_exit
    if retry_unless is not None and not isinstance(retry_unless, list):
        retry_unless = [retry_unless]
    return {
        "name": job.name,
        "label": job.label or job.name,
        "command": command,
        "env": env,
        "parents": [],
        "request_cpus": max(1, _int(job.request_cpus, 1)),
        "request_memory": _int(job.request_memory),
        "number_of_retries": max(0, _int(job.number_of_retries, 0)),
        "retry_unless_exit": [int(c) for c in retry_unless or []],
        "quanta": dict(job.quanta_counts or {}),
        "tags": {k: str(v) for k, v in (job.tags or {}).items()},
    }


#: The label of :func:`userbatch_clustering`'s clusters (jobs ``quanta_001``, ``quanta_002``, ... in bps report).
CLUSTER_LABEL = "quanta"


def userbatch_clustering(config, qgraph, name: str):
    """ctrl_bps clustering into about ``userbatchClusters`` (default ``userbatchCores``) clusters of whole chains.

    Every task of the pipeline goes into one cluster definition (label :data:`CLUSTER_LABEL`), partitioned by the
    dimensions all tasks share (e.g. ``instrument, visit, detector``) into at most ``userbatchClusters`` clusters
    with ctrl_bps' ``dimension_clustering`` (``partitionDimensions``, ``partitionMaxClusters``): each cluster is
    one ``pipetask run-qbb`` process over whole per-data-ID chains, and enough clusters run side by side to use
    the run's cores. Clusters of whole chains depend only on ``pipetaskInit``, never on each other.

    A submit YAML with ``cluster:`` sections of its own gets exactly those (``dimension_clustering``). When the
    tasks share no dimension (nothing to partition by) or ``userbatchClusters`` is 0, every quantum is its own
    job (``single_quantum_clustering``), as without clustering.

    Parameters
    ----------
    config : lsst.ctrl.bps.BpsConfig
        The submission's configuration; the cluster section chosen is written into it, so that the transform
        step and the saved configuration see the same clusters.
    qgraph : lsst.pipe.base.quantum_graph.PredictedQuantumGraph
        The workflow's QuantumGraph.
    name : str
        The name of the ClusteredQuantumGraph.

    Returns
    -------
    lsst.ctrl.bps.ClusteredQuantumGraph
        The clustered graph.
    """
    from lsst.ctrl.bps import quantum_clustering_funcs as qcf

    found, section = config.search("cluster", opt={"default": None})
    if found and section:
        log.info("clustering: the submit configuration's own cluster sections (%s)", ", ".join(section))
        return qcf.dimension_clustering(config, qgraph, name)
    _, wanted = config.search("userbatchClusters", opt={"default": None})
    _, cores = config.search("userbatchCores", opt={"default": 2})
    n = _int(wanted if wanted not in (None, "") else cores, 2)
    tasks = qgraph.pipeline_graph.tasks
    dims: list[str] | None = None
    for node in tasks.values():
        names = list(node.dimensions.required)
        dims = names if dims is None else [d for d in dims if d in names]
    if not n or n < 1 or not dims:
        log.info("clustering: one quantum per job (%s)", "userbatchClusters is 0" if not n or n < 1 else
                 "the pipeline's tasks share no dimension to partition by")
        return qcf.single_quantum_clustering(config, qgraph, name)
    config["cluster"] = {CLUSTER_LABEL: {"pipetasks": ",".join(tasks), "partitionDimensions": ",".join(dims),
                                         "partitionMaxClusters": n}}
    log.info("clustering: tasks %s in at most %d cluster(s) partitioned by %s", ", ".join(tasks), n,
             ", ".join(dims))
    return qcf.dimension_clustering(config, qgraph, name)


def build_plan(config, generic_workflow, out_prefix: str) -> dict:
    """The executor's job plan for ``generic_workflow`` (see the module docstring).

    Parameters
    ----------
    config : lsst.ctrl.bps.BpsConfig
        The submission's configuration (``userbatchCores``, ``finalJob.whenRun``, the payload's collections).
    generic_workflow : lsst.ctrl.bps.GenericWorkflow
        The workflow: one job per quantum or per cluster of quanta, a ``pipetaskInit`` job, a final job.
    out_prefix : str
        The submit directory.

    Returns
    -------
    dict
        The plan: ``jobs`` in topological order (name, label, command, env, parents, request_cpus, retries,
        ``quanta`` per task label), ``final``, ``labels`` (jobs per job label), ``quanta`` (quanta per task
        label), ``clustered``, ``cores``, ``submit_env`` and the provenance.
    """
    import networkx as nx

    from lsst.ctrl.bps import GenericWorkflowJob

    jobs = []
    for name in nx.topological_sort(generic_workflow):
        job = generic_workflow.get_job(name)
        if not isinstance(job, GenericWorkflowJob):
            raise UserbatchError(f"BPS workflow node {name} is a sub-workflow; the userbatch plugin runs jobs only")
        entry = _job_entry(generic_workflow, job)
        entry["parents"] = sorted(generic_workflow.predecessors(name))
        jobs.append(entry)
    final = generic_workflow.get_final()
    final_entry = None
    if final is not None:
        if not isinstance(final, GenericWorkflowJob):
            raise UserbatchError("a final sub-workflow is not supported by the userbatch plugin; use a final job")
        final_entry = _job_entry(generic_workflow, final)
        _, when = config.search(".finalJob.whenRun", opt={"default": "ALWAYS"})
        final_entry["when_run"] = str(when or "ALWAYS").upper()
    opts = {"default": None}
    cores = max(1, _int(config.search("userbatchCores", opt=dict(opts))[1], 2))
    all_jobs = jobs + ([final_entry] if final_entry else [])
    labels: dict[str, int] = {}
    for j in all_jobs:
        labels[j["label"]] = labels.get(j["label"], 0) + 1
    return {
        "name": generic_workflow.name,
        "submit_path": str(out_prefix),
        "run": generic_workflow.run_attrs.get("bps_run") or config.search("outputRun", opt=dict(opts))[1],
        "operator": config.search("operator", opt=dict(opts))[1],
        "project": config.search("project", opt=dict(opts))[1],
        "campaign": config.search("campaign", opt=dict(opts))[1],
        "payload": config.search("payloadName", opt=dict(opts))[1],
        # what the facility run's provenance links: the graph, the butler and the collections read and written
        "provenance": {
            "output_run": config.search("outputRun", opt=dict(opts))[1],
            "output": config.search("output", opt=dict(opts))[1],
            "butler": str(config.search("butlerConfig", opt=dict(opts))[1]),
            "inputs": config.search("inCollection", opt=dict(opts))[1],
            "data_query": config.search("dataQuery", opt=dict(opts))[1],
            "pipeline": config.search("pipelineYaml", opt=dict(opts))[1],
            "qgraph": sorted(str(p) for p in Path(out_prefix).rglob("*.qg*")),
        },
        "cores": cores,
        # the submitter's environment the jobs need, as HTCondor's getenv gives it: on a cluster the executors'
        # environment is the workers', not the submitter's, so task packages on PYTHONPATH would be missing
        "submit_env": submit_environment(),
        "max_request_cpus": max((j["request_cpus"] for j in all_jobs), default=1),
        "labels": labels,
        "quanta": quanta_summary(all_jobs),
        "clustered": any(sum(j["quanta"].values()) > 1 for j in jobs),
        "jobs": jobs,
        "final": final_entry,
        "created": time.time(),
    }


def quanta_summary(jobs: list[dict]) -> dict[str, int]:
    """Quanta per task label over ``jobs`` (plan entries); a job without quanta (``pipetaskInit``, the final job)
    counts as one of its own label. Without clustering this is the number of jobs per label."""
    out: dict[str, int] = {}
    for j in jobs:
        for label, n in (j.get("quanta") or {j["label"]: 1}).items():
            out[label] = out.get(label, 0) + int(n)
    return out


#: Variables of the ``bps submit`` environment every job gets (besides what the workflow's jobs set themselves).
SUBMIT_ENV_NAMES = ("PYTHONPATH",)
SUBMIT_ENV_PREFIXES = ("LSST_", "DAF_BUTLER_", "PIPE_", "CTRL_", "DYLD_")


def submit_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in SUBMIT_ENV_NAMES or k.startswith(SUBMIT_ENV_PREFIXES)}


def read_plan(submit_path: str | Path) -> dict:
    path = Path(submit_path) / PLAN_NAME
    if not path.exists():
        raise UserbatchError(f"{path} not found: {submit_path} is not a submit directory of the userbatch plugin")
    return json.loads(path.read_text())


def read_state(submit_path: str | Path, name: str = STATE_NAME) -> dict:
    try:
        return json.loads((Path(submit_path) / name).read_text())
    except (OSError, ValueError):
        return {}


class UserbatchWorkflow(BaseWmsWorkflow):
    """A prepared workflow: its submit directory holds the plan the facility run executes."""

    def __init__(self, name, config):
        super().__init__(name, config)
        self.plan: dict | None = None

    @classmethod
    def from_generic_workflow(cls, config, generic_workflow, out_prefix, service_class):
        wf = cls(generic_workflow.name, config)
        wf.service_class = service_class
        wf.submit_path = str(out_prefix)
        wf.plan = build_plan(config, generic_workflow, out_prefix)
        return wf

    def write(self, out_prefix):
        out = Path(out_prefix)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / (PLAN_NAME + ".tmp")
        tmp.write_text(json.dumps(self.plan, indent=1))
        tmp.replace(out / PLAN_NAME)


# ----------------------------------------------------------------------------------------------- the service
class UserbatchService(BaseWmsService):
    """BPS's view of the User Batch facility (see the module docstring)."""

    @property
    def defaults(self):
        from lsst.daf.butler import Config

        return Config(str(DEFAULTS_PATH)) if DEFAULTS_PATH.exists() else None

    @property
    def defaults_uri(self):
        from lsst.resources import ResourcePath

        return ResourcePath(str(DEFAULTS_PATH)) if DEFAULTS_PATH.exists() else None

    # --------------------------------------------------------------------------------------- facility access
    @staticmethod
    def _facility():
        """The facility as the caller: its REST API when USERBATCH_API_URL is set, else the facility in process
        (user from USERBATCH_USER). The worker that launches the run is started by the facility on submit."""
        from ..facility.client import client_from_env

        client = client_from_env()
        if client is not None:
            return client
        from ..facility.service import Facility

        return Facility()

    def _setting(self, key: str, default=None):
        config = self.config
        if not config:
            return default
        try:
            found, value = config.search(key, opt={"default": default})
        except (KeyError, TypeError):
            return default
        return value if found and value not in (None, "") else default

    def _resources(self) -> tuple[int, float, str | None]:
        cores = _int(self._setting("userbatchCores", 2), 2)
        hours = float(self._setting("userbatchMaxHours", 1.0) or 1.0)
        group = self._setting("userbatchGroup", None) or None
        return max(1, cores), hours, group

    def run_submission_checks(self):
        """Refuse an over-quota request before the QuantumGraph is built (the facility checks again on submit)."""
        from ..facility.client import client_from_env

        if client_from_env() is not None:
            return  # the API checks on submit
        from ..facility import ledger
        from ..facility.service import Facility
        from ..tables.db import transaction

        fac = Facility(start_worker=False)
        cores, hours, group = self._resources()
        group = fac._group_for(group)
        with transaction(fac.engine) as s:
            ledger.check_admission(s, fac.config, fac.user, group, cores, cores * hours)

    # --------------------------------------------------------------------------------------- prepare/submit
    def prepare(self, config, generic_workflow, out_prefix=None):
        if out_prefix is None:
            raise UserbatchError("the userbatch plugin needs a submit directory (submitPath)")
        out = Path(out_prefix)
        out.mkdir(parents=True, exist_ok=True)
        service_class = f"{type(self).__module__}.{type(self).__name__}"
        workflow = UserbatchWorkflow.from_generic_workflow(config, generic_workflow, str(out), service_class)
        with open(out / GW_NAME, "wb") as fh:
            generic_workflow.save(fh, "pickle")
        workflow.write(str(out))
        log.info("userbatch plan for %s: %d jobs%s in %s", workflow.name, len(workflow.plan["jobs"]),
                 " + final job" if workflow.plan["final"] else "", out)
        return workflow

    def _submit_run(self, name: str, submit_path: str, cores: int, hours: float, group: str | None,
                    restart_of: str | None = None) -> dict:
        fac = self._facility()
        bps = {"name": name, "submit_path": str(submit_path), "cores": cores}
        path = Path(submit_path) / SUBMIT_NAME
        try:
            placement = json.loads(path.read_text()).get("placement")
        except (OSError, ValueError):
            placement = None
        # userbatchPlacement: slurm (a Slurm job per quantum cluster; the default on a Slurm facility), spark
        # (the jobs as Spark tasks of one run), auto
        bps["placement"] = placement or str(self._setting("userbatchPlacement", "auto") or "auto")
        if restart_of:
            bps["restart_of"] = restart_of
        try:
            run = fac.submit(bps=bps, cores=cores, max_hours=hours, group=group)
        except TypeError as e:  # an API client without BPS support
            raise UserbatchError(f"this facility client cannot submit BPS workflows ({e})") from None
        path = Path(submit_path) / SUBMIT_NAME
        try:
            history = json.loads(path.read_text())
        except (OSError, ValueError):
            history = {"runs": []}
        history.update(name=name, cores=cores, max_hours=hours, group=group, placement=bps["placement"])
        history["runs"].append(run["id"])
        path.write_text(json.dumps(history, indent=1))
        return run

    def submit(self, workflow, **kwargs):
        config = kwargs.get("config") or workflow.config or self.config
        if config is not None and not self.config:
            self.config = config
        cores, hours, group = self._resources()
        plan = getattr(workflow, "plan", None) or read_plan(workflow.submit_path)
        if plan.get("max_request_cpus", 1) > cores:
            log.warning("a job requests %d cores but the run has %d (userbatchCores): such jobs run alone, "
                        "on all %d", plan["max_request_cpus"], cores, cores)
        run = self._submit_run(workflow.name, workflow.submit_path, cores, hours, group)
        workflow.run_id = run["id"]
        log.info("facility run %s queued for workflow %s (%d cores, %.2f h)", run["id"], workflow.name, cores, hours)
        return workflow

    # --------------------------------------------------------------------------------------- lookups
    def _find(self, fac, wms_id: str) -> tuple[dict, str]:
        """The facility run (its status dict) and submit directory for a run id or a submit directory."""
        wms_id = str(wms_id).strip()
        if _RUN_ID.match(wms_id) and not Path(wms_id).is_dir():
            run = fac.status(wms_id)
            if run.get("kind") != "bps":
                raise UserbatchError(f"facility run {wms_id} is not a BPS workflow ({run.get('kind')})")
            return run, _submit_path_of(run)
        path = Path(wms_id).expanduser().resolve()
        if not (path / PLAN_NAME).exists():
            raise UserbatchError(f"{wms_id} is neither a facility run id nor a userbatch submit directory")
        try:
            runs = json.loads((path / SUBMIT_NAME).read_text())["runs"]
        except (OSError, ValueError, KeyError):
            runs = []
        if not runs:
            raise UserbatchError(f"{wms_id} was prepared but never submitted to the facility")
        return fac.status(runs[-1]), str(path)

    # --------------------------------------------------------------------------------------- report
    def report(self, wms_workflow_id=None, user=None, hist=0, pass_thru=None, is_global=False,
               return_exit_codes=False):
        fac = self._facility()
        try:
            if wms_workflow_id:
                run, submit_path = self._find(fac, wms_workflow_id)
                return [_run_report(run, submit_path, detailed=True)], ""
            cutoff = time.time() - float(hist or 0) * 86400
            reports = []
            for brief in fac.runs(user=user if user and user != fac_user(fac) else None, limit=200):
                if brief.get("kind") != "bps":
                    continue
                if brief["state"] not in ACTIVE and _ts(brief.get("ended_at")) < cutoff:
                    continue
                run = fac.status(brief["id"])
                reports.append(_run_report(run, _submit_path_of(run), detailed=False))
            return reports, ""
        except UserbatchError as e:
            return [], str(e)

    def get_status(self, wms_workflow_id, hist=1, is_global=False):
        fac = self._facility()
        try:
            run, _ = self._find(fac, wms_workflow_id)
        except UserbatchError as e:
            return WmsStates.UNKNOWN, str(e)
        return RUN_STATES.get(run["state"], WmsStates.UNKNOWN), run.get("error") or ""

    # --------------------------------------------------------------------------------------- cancel/restart/list
    def list_submitted_jobs(self, wms_id=None, user=None, require_bps=True, pass_thru=None, is_global=False):
        fac = self._facility()
        if wms_id:
            try:
                run, _ = self._find(fac, wms_id)
            except UserbatchError:
                return []
            return [run["id"]] if run["state"] in ACTIVE else []
        runs = fac.runs(user=user if user and user != fac_user(fac) else None, state="active", limit=200)
        return [r["id"] for r in runs if r.get("kind") == "bps" or not require_bps]

    def cancel(self, wms_id, pass_thru=None):
        fac = self._facility()
        try:
            run, _ = self._find(fac, wms_id)
            fac.cancel(run["id"])
        except UserbatchError as e:
            return False, str(e)
        return True, ""

    def restart(self, wms_workflow_id):
        fac = self._facility()
        try:
            run, submit_path = self._find(fac, wms_workflow_id)
            if run["state"] in ACTIVE:
                return None, None, f"facility run {run['id']} of this workflow is still {run['state']}"
            state = read_state(submit_path)
            jobs = state.get("jobs", {})
            if run["state"] == "succeeded" and jobs and all(j.get("state") == "SUCCEEDED" for j in jobs.values()):
                return None, None, "every job of this workflow already succeeded; nothing to restart"
            try:
                saved = json.loads((Path(submit_path) / SUBMIT_NAME).read_text())
            except (OSError, ValueError):
                saved = {}
            plan = read_plan(submit_path)
            cores = int(saved.get("cores") or run.get("cores") or plan.get("cores") or 2)
            hours = float(saved.get("max_hours") or run.get("max_hours") or 1.0)
            new = self._submit_run(plan["name"], submit_path, cores, hours, saved.get("group", run.get("group")),
                                   restart_of=run["id"])
        except UserbatchError as e:
            return None, None, str(e)
        return new["id"], plan["name"], ""

    def ping(self, pass_thru):
        try:
            fac = self._facility()
            fac.runs(limit=1)
        except Exception as e:  # noqa: BLE001 - ping reports any failure as a message
            return 1, str(e)
        return 0, ""


# ----------------------------------------------------------------------------------------------- reports
def fac_user(fac) -> str | None:
    return getattr(fac, "user", None)


def _ts(iso: str | None) -> float:
    if not iso:
        return 0.0
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0


def _submit_path_of(run: dict) -> str:
    """The submit directory a facility run executes (from the run's spec.json in its run directory)."""
    run_dir = run.get("run_dir")
    if run_dir:
        try:
            return json.loads((Path(run_dir) / "spec.json").read_text())["bps"]["submit_path"]
        except (OSError, ValueError, KeyError):
            pass
    raise UserbatchError(f"cannot find the submit directory of facility run {run.get('id')}")


def job_states(plan: dict, state: dict, run_state: str) -> dict[str, WmsStates]:
    """Each job's BPS state from the executor's state file and the facility run's state."""
    recorded = state.get("jobs", {})
    out: dict[str, WmsStates] = {}
    all_jobs = plan["jobs"] + ([plan["final"]] if plan.get("final") else [])
    for job in all_jobs:
        rec = recorded.get(job["name"], {})
        s = rec.get("state")
        if s in ("SUCCEEDED", "FAILED", "PRUNED"):
            out[job["name"]] = WmsStates[s]
        elif s == "RUNNING":
            out[job["name"]] = (WmsStates.RUNNING if run_state in ACTIVE else
                                WmsStates.DELETED if run_state == "cancelled" else WmsStates.FAILED)
        elif run_state == "cancelled":
            out[job["name"]] = WmsStates.DELETED
        elif job is plan.get("final"):
            out[job["name"]] = WmsStates.UNREADY if run_state in ACTIVE else WmsStates.PRUNED
        elif run_state in ("queued", "starting"):
            out[job["name"]] = WmsStates.PENDING if not job["parents"] else WmsStates.UNREADY
        elif run_state == "running":
            parents_ok = all(out.get(p) == WmsStates.SUCCEEDED for p in job["parents"])
            out[job["name"]] = WmsStates.READY if parents_ok else WmsStates.UNREADY
        else:  # the run ended without reaching this job
            out[job["name"]] = WmsStates.UNREADY
    return out


def _run_report(run: dict, submit_path: str, detailed: bool) -> WmsRunReport:
    plan = read_plan(submit_path)
    state = read_state(submit_path)
    if state.get("run_id") != run["id"] and run.get("run_dir"):
        # a restart ran since: this run's own view is the copy the executor kept in its run directory
        own = read_state(run["run_dir"], name="bps_jobs.json")
        if not own and run["state"] in ACTIVE:  # not started yet: it will keep what already succeeded
            own = {"jobs": {n: r for n, r in state.get("jobs", {}).items() if r.get("state") == "SUCCEEDED"}}
        state = own or {"jobs": {}}
    states = job_states(plan, state, run["state"])
    all_jobs = plan["jobs"] + ([plan["final"]] if plan.get("final") else [])
    counts = dict.fromkeys(WmsStates, 0)
    summary: dict[str, dict[WmsStates, int]] = {}
    for job in all_jobs:
        st = states[job["name"]]
        counts[st] += 1
        summary.setdefault(job["label"], dict.fromkeys(WmsStates, 0))[st] += 1
    exit_codes: dict[str, list[int]] = {}
    for name, rec in state.get("jobs", {}).items():
        if rec.get("state") == "FAILED":
            exit_codes.setdefault(rec.get("label", name), []).extend(
                c for c in rec.get("exit_codes", []) if c not in (0, None))
    run_state = RUN_STATES.get(run["state"], WmsStates.UNKNOWN)
    labels = quanta_summary(all_jobs)  # quanta per task label, as HTCondor's run summary (= jobs, unclustered)
    report = WmsRunReport(
        wms_id=run["id"], global_wms_id=run["id"], path=submit_path, label=plan.get("name"),
        run=plan.get("run") or plan.get("name"), project=plan.get("project") or "",
        campaign=plan.get("campaign") or "", payload=plan.get("payload") or "",
        operator=plan.get("operator") or run.get("user"), site="userbatch",
        run_summary=";".join(f"{k}:{v}" for k, v in labels.items()), state=run_state,
        total_number_jobs=len(all_jobs), job_state_counts=counts, job_summary=summary,
        exit_code_summary=exit_codes,
        jobs=[WmsJobReport(wms_id=f"{run['id']}.{job['name']}", name=job["name"], label=job["label"],
                           state=states[job["name"]]) for job in all_jobs] if detailed else [],
    )
    return report


__all__ = ["UserbatchService", "UserbatchWorkflow", "build_plan", "read_plan", "read_state", "job_states",
           "userbatch_clustering", "quanta_summary", "CLUSTER_LABEL", "PLAN_NAME", "STATE_NAME"]
