"""The one quota file (``conf/facility.yaml``) as the cluster schedulers see it: who gets a queue, how many cores a
scheduler must allow, and the checks every rendering shares.

Division of labour: the facility's core-hour ledger stays authoritative (allocations per period, reservations,
charges); the schedulers enforce *concurrency* — how many cores a user or group holds at once (``max_cores``) —
and who may submit where. Only Slurm is also given the core-hour budget (``GrpTRESMins``), because sbatch jobs do
not pass through the facility's admission.

Who gets a queue. Every group of the file gets one, and so does every user the file names — under ``users:``, as a
group member or as an admin — for runs charged to no group (the facility's personal quota). Names follow
:meth:`FacilityConfig.queue_for` and, for Kubernetes, :class:`~userbatch.cluster.kubernetes.KubernetesRunner`'s
namespaces. A user the file does not name gets a queue only where the scheduler can create one on first use
(YuniKorn, with the user-default limits); on YARN, Kubernetes and Slurm add them to the file and render again.

Cores a scheduler sees. On YARN and Kubernetes each run also has a driver (ApplicationMaster) holding
``spark.driver.cores = 1`` besides the executor cores the facility reserves, so their limits are ``max_cores``
plus one core per run that can be active at once (``min(max_cores, runs.max_concurrent)``); memory is
``memory_per_core_gb`` per core. Slurm runs the driver inside the job's own allocation: its limits are
``max_cores`` exactly.
"""

from __future__ import annotations

import logging
import re

from ..facility.config import FacilityConfig, Limits, queue_segment
from .base import SubmitSpec
from .naming import SchedulerConfigError, k8s_namespace, k8s_namespace_prefix, k8s_quantity, slurm_account

log = logging.getLogger(__name__)






#: YARN leaf that holds the part of the user share no quota claims (nobody may submit to it; YARN lends it out).
SPARE_QUEUE = "unallocated"


#: YARN's queue for the rest of the facility (root's other child); the site sets its ACLs.
OTHER_QUEUE = "default"


# a user name is a login name on the cluster: it must survive YARN ACL lists ("a,b g1"), queue mappings
# ("u:name:queue"), YuniKorn's user limits and sacctmgr unchanged, so it is checked, never rewritten
USER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.@-]{0,63}$")


HUNDREDTHS = 10000  # percentages are rendered in hundredths of a percent; 10000 = 100 %


def check_user(name: str) -> str:
    if not isinstance(name, str) or not USER_NAME.match(name):
        raise SchedulerConfigError(
            f"user name {name!r} cannot be given to the cluster schedulers: a user is a login name "
            "(letters, digits, _ . @ -, starting with a letter or _, at most 64 characters); rename the user in the "
            "facility config")
    return name


def users_of(cfg: FacilityConfig) -> dict[str, Limits]:
    """Every user the file names (``users:``, group members, admins) with the limits the ledger seeds for them."""
    names = set(cfg.users) | set(cfg.admins) | {m for g in cfg.groups.values() for m in g["members"]}
    return {u: cfg.users.get(u, cfg.user_defaults) for u in sorted(check_user(n) for n in names)}


def groups_of(cfg: FacilityConfig) -> dict[str, tuple[Limits, list[str]]]:
    """Every group of the file: (limits as the ledger seeds them — the group defaults when it has no quota —,
    sorted members)."""
    out = {}
    for g in sorted(cfg.groups):
        if not isinstance(g, str) or not g:
            raise SchedulerConfigError(f"group name {g!r} must be a non-empty string")
        spec = cfg.groups[g]
        out[g] = (spec.get("limits") or cfg.group_defaults, sorted({check_user(m) for m in spec["members"]}))
    return out


def leaf_queue(cfg: FacilityConfig, name: str) -> str:
    """The last segment of :meth:`FacilityConfig.queue_for` for a group or user ``name``."""
    return cfg.queue_for(name, None).rsplit(".", 1)[1]


def check_clashes(cfg: FacilityConfig) -> None:
    """Two subjects sharing a queue, namespace or Slurm account would share their limits: refuse."""
    users, groups = users_of(cfg), groups_of(cfg)
    for what, key in (("scheduler queue", lambda kind, n: cfg.queue_for(n, None)),
                      ("Kubernetes namespace", lambda kind, n: k8s_namespace(n if kind == "user" else "-",
                                                                           n if kind == "group" else None,
                                                                           k8s_namespace_prefix(cfg.runner))),
                      ("Slurm account", lambda kind, n: slurm_account(n if kind == "user" else None,
                                                                      n if kind == "group" else None))):
        seen: dict[str, str] = {}
        for kind, names in (("group", groups), ("user", users)):
            for n in names:
                k = key(kind, n)
                if k in seen:
                    raise SchedulerConfigError(f"{kind} {n!r} and {seen[k]} would share the {what} {k!r}; rename "
                                               "one of them in the facility config")
                seen[k] = f"{kind} {n!r}"
    reserved = {SPARE_QUEUE, OTHER_QUEUE}
    for kind, names in (("group", groups), ("user", users)):
        for n in names:
            if leaf_queue(cfg, n) in reserved:
                raise SchedulerConfigError(f"{kind} name {n!r} is reserved for a YARN queue "
                                           f"({', '.join(sorted(reserved))}); rename it in the facility config")


def queue_prefix(cfg: FacilityConfig) -> str:
    parts = cfg.queue_prefix.split(".")
    if len(parts) != 2 or parts[0] != "root" or queue_segment(parts[1]) != parts[1] or parts[1] == OTHER_QUEUE:
        raise SchedulerConfigError(f"runs.queue_prefix {cfg.queue_prefix!r} must be root.<name> (e.g. root.users) "
                                   "to render scheduler configs")
    return parts[1]


def scheduler_cores(cfg: FacilityConfig, limits: Limits) -> int:
    """Cores a YARN or Kubernetes scheduler must allow for ``limits``: executors plus one driver per run that can
    be active at once (see the module doc)."""
    return limits.max_cores + min(limits.max_cores, max(cfg.max_concurrent_runs, 1))


def scheduler_memory(cfg: FacilityConfig, cores: int) -> str:
    return k8s_quantity(int(round(cores * cfg.memory_per_core_gb * 1024)))


def share_cores(cfg: FacilityConfig) -> float:
    return cfg.total_cores * cfg.user_fraction


def probe_spec(cfg: FacilityConfig, user: str, group: str | None) -> SubmitSpec:
    return SubmitSpec(run_id="settings", run_dir="/", user=user, group=group, queue=cfg.queue_for(user, group))


def banner(cfg: FacilityConfig) -> str:
    from pathlib import Path

    src = Path(cfg.path).name if cfg.path else "the facility config"
    return f"generated by 'userbatch deploy render' from {src}; edit the quota file and render again"
