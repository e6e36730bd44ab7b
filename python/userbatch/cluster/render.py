"""Every rendering of the quota file, by target: ``userbatch deploy render`` and the examples under ``deploy/``.

:data:`RENDERERS` maps a target to its file name and renderer (one function per target, in the module of that
target); :func:`submission_settings` gathers, from the runners themselves, where a run of a user lands on each.
"""

from __future__ import annotations

import logging

import yaml

from ..errors import UserbatchError
from ..facility.config import FacilityConfig
from .base import SubmitSpec
from .kubernetes import (
    USER_INFO_ANNOTATION,
    KubernetesRunner,
    installed_spark_version,
    k8s_runner,
    kubernetes_manifests,
    kubernetes_yaml,
    run_namespace_manifests,
    yunikorn_queues_yaml,
)
from .naming import slurm_account
from .quotas import check_user, probe_spec
from .slurm import sbatch_script, slurm_commands
from .yarn import capacity_scheduler_xml

log = logging.getLogger(__name__)


def deploy_spark_examples(cfg, namespaces: list[str] | None = None) -> dict[str, str]:
    """``deploy/kubernetes/spark/`` rendered from a facility config whose runner is ``kind: kubernetes`` (the
    config of ``deploy/kubernetes/facility/configmap.yaml``): ``sparkapplication.yaml``, the SparkApplication
    of an example run (user ``demo`` charged to group ``dp1_team``, 8 cores), and ``run-namespaces.yaml``,
    :func:`run_namespace_manifests` for every run namespace (default: the Namespaces of
    ``schedulers.kubernetes_manifests(cfg)``, i.e. of ``deploy/kubernetes/quotas.yaml``). Paths relative to
    ``deploy/kubernetes/spark``; ``tests/test_deploy.py`` fails when the files differ from a fresh render."""
    if cfg.runner.get("kind") != "kubernetes":
        raise UserbatchError("the Spark-on-Kubernetes examples need a facility config with runner.kind kubernetes")
    runner = KubernetesRunner(**{k: v for k, v in cfg.runner.items() if k != "kind"})
    user, group, run_id = "demo", "dp1_team", "0123456789ab"
    home = runner.home_mount or "/var/lib/userbatch/home"
    env = {"USERBATCH_HOME": home, "USERBATCH_WAREHOUSE": runner.warehouse_mount or "/var/lib/userbatch/warehouse",
           "USERBATCH_USER": user, "USERBATCH_GROUPS": group, "USERBATCH_RUN_ID": run_id,
           "USERBATCH_JOB": "template:crossmatch", "PYTHONUNBUFFERED": "1"}
    if cfg.mlflow.get("tracking_uri"):
        env["MLFLOW_TRACKING_URI"] = cfg.mlflow["tracking_uri"]
    if cfg.mlflow.get("artifact_root"):
        env["USERBATCH_MLFLOW_ARTIFACTS"] = cfg.mlflow["artifact_root"]
    for name in runner.secret_env:
        env[name] = "(from the secret)"
    spec = SubmitSpec(run_id=run_id, run_dir=f"{home}/runs/{run_id}", user=user, group=group,
                      queue=cfg.queue_for(user, group), cores=8, executor_cores=4, executor_memory="8g",
                      driver_memory="2g", env=env)
    if namespaces is None:
        namespaces = [d["metadata"]["name"] for d in kubernetes_manifests(cfg) if d["kind"] == "Namespace"]
    banner = ("# Generated (userbatch.cluster.render.deploy_spark_examples, from the facility.yaml of\n"
              "# ../facility/configmap.yaml) — do not edit; see deploy/README.md.\n")
    app = (banner + "# A run (user demo, group dp1_team, 8 cores = 2 executors x 4) as a spark-operator "
           "SparkApplication:\n# what KubernetesRunner.spark_application renders for each run.\n"
           + runner.render_spark_application(spec, spark_version=installed_spark_version()))
    docs = [d for ns in namespaces for d in run_namespace_manifests(runner, ns)]
    rbac = (banner + "# Per run namespace (ub-<group>, ub-user-<user>; the Namespaces of ../quotas.yaml): the "
            "drivers' ServiceAccount, the\n# RoleBinding of ClusterRole userbatch-spark (facility/rbac.yaml) and "
            "the shared home and warehouse volumes.\n# Also create the userbatch-db Secret (key db-url) in each.\n"
            + yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True))
    return {"sparkapplication.yaml": app, "run-namespaces.yaml": rbac}


def submission_settings(cfg: FacilityConfig, user: str, group: str | None = None) -> dict[str, str]:
    """The settings that put a run of ``user`` (charged to ``group``) where the rendered configs expect it.

    The queue is :meth:`FacilityConfig.queue_for` and the namespace, scheduler and queue label come from
    :class:`KubernetesRunner` — the same calls the runners make, so these never drift from what they submit. The
    YuniKorn ``user.info`` annotation carries the facility user and group, which YuniKorn's per-user and
    per-group limits match (the facility's service account must be trusted to set it in YuniKorn's admission
    controller); the Slurm account is :func:`slurm_account`.
    """
    check_user(user)
    if group is not None and group not in cfg.groups:
        log.warning("group %r is not in the facility config; its queue is not in the rendered configs", group)
    runner = k8s_runner(cfg)
    spec = probe_spec(cfg, user, group)
    queue = cfg.queue_for(user, group)
    user_info = runner.annotations(spec)[USER_INFO_ANNOTATION]  # the runner's annotation, one source
    out = {
        "spark.yarn.queue": queue,
        "spark.kubernetes.namespace": runner.namespace(spec),
        "spark.kubernetes.scheduler.name": runner.scheduler or "",
        "spark.kubernetes.driver.label.queue": runner.labels(spec)["queue"],
        "spark.kubernetes.executor.label.queue": runner.labels(spec)["queue"],
        f"spark.kubernetes.driver.annotation.{USER_INFO_ANNOTATION}": user_info,
        f"spark.kubernetes.executor.annotation.{USER_INFO_ANNOTATION}": user_info,
        "slurm.account": slurm_account(user, group),
    }
    if not runner.scheduler:
        del out["spark.kubernetes.scheduler.name"]
    return out


#: Target -> (file name, renderer): one renderer per scheduler, each in the module of its target.
RENDERERS = {
    "yarn": ("capacity-scheduler.xml", capacity_scheduler_xml),
    "yunikorn": ("queues.yaml", yunikorn_queues_yaml),
    "kubernetes": ("quotas.yaml", kubernetes_yaml),
    "slurm": ("slurm-accounts.sh", slurm_commands),
}
TARGETS = tuple(RENDERERS)
FILES = {target: file for target, (file, _) in RENDERERS.items()}


def render(cfg: FacilityConfig, target: str) -> dict[str, str]:
    """The quota file rendered for one scheduler, or for all of them.

    Parameters
    ----------
    cfg : FacilityConfig
        The facility's quota file.
    target : str
        One of :data:`TARGETS`, or ``all``.

    Returns
    -------
    dict of str to str
        File name to its text.
    """
    if target != "all" and target not in RENDERERS:
        raise UserbatchError(f"target {target!r} is not one of {', '.join(TARGETS)}, all")
    targets = TARGETS if target == "all" else (target,)
    return {RENDERERS[t][0]: RENDERERS[t][1](cfg) for t in targets}


#: The examples committed under ``deploy/`` (path relative to it -> target or sbatch), rendered from the default
#: ``conf/facility.yaml``; ``tests/test_schedulers.py`` checks they equal a fresh render.
EXAMPLES = {"yarn/capacity-scheduler.xml": "yarn", "kubernetes/yunikorn-queues.yaml": "yunikorn",
            "kubernetes/quotas.yaml": "kubernetes", "slurm/accounts.sh": "slurm", "slurm/job.sbatch": "sbatch"}


def deploy_examples(cfg: FacilityConfig) -> dict[str, str]:
    """{path under ``deploy/``: text} of the committed examples (the sbatch one: a cross-match by user ``demo``
    charged to ``dp1_team`` when the file has them)."""
    out = {}
    for path, target in EXAMPLES.items():
        if target == "sbatch":
            group = "dp1_team" if "dp1_team" in cfg.groups else None
            out[path] = sbatch_script(
                "template", template="crossmatch", account=slurm_account("demo", group),
                params=["left=dp1.object", "right=dp1.gaia", "radius_arcsec=1", "output=u_demo.object_gaia"],
                cores=cfg.default_cores, hours=cfg.default_max_hours, memory_per_core_gb=cfg.memory_per_core_gb)
        else:
            out[path] = render(cfg, target)[FILES[target]]
    return out
