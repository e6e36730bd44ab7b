"""The one quota file (``conf/facility.yaml``) rendered for the cluster schedulers a site runs the facility on.

Pure functions from a :class:`~userbatch.facility.config.FacilityConfig` to text: the YARN CapacityScheduler's
``capacity-scheduler.xml``, Apache YuniKorn's ``queues.yaml``, Kubernetes Namespaces with ResourceQuotas, Slurm
``sacctmgr`` commands, an ``sbatch`` script, and the submission settings a run needs to land where those configs
expect it. ``userbatch deploy render`` writes them; ``deploy/`` holds them rendered from the default file.

Division of labour: the facility's core-hour ledger stays authoritative (allocations per period, reservations,
charges); the schedulers enforce *concurrency* — how many cores a user or group holds at once (``max_cores``) —
and who may submit where. Only Slurm is also given the core-hour budget (``GrpTRESMins``), because sbatch jobs do
not pass through the facility's admission.

Who gets a queue. Every group of the file gets one, and so does every user the file names — under ``users:``, as a
group member or as an admin — for runs charged to no group (the facility's personal quota). Names follow
:meth:`FacilityConfig.queue_for` (``<queue_prefix>.<group>`` / ``<queue_prefix>.<user>``, made safe by
:func:`~userbatch.facility.config.queue_segment`) and, for Kubernetes, :class:`KubernetesRunner`'s namespaces:
this module calls both rather than building names itself. A user the file does not name gets a queue only where
the scheduler can create one on first use (YuniKorn, with the user-default limits); on YARN, Kubernetes and Slurm
add them to the file (e.g. as a group member) and render again.

Cores a scheduler sees. On YARN and Kubernetes each run also has a driver (ApplicationMaster) holding
``spark.driver.cores = 1`` besides the executor cores the facility reserves, so a limit of exactly ``max_cores``
would block a run the facility admitted. Their limits are therefore ``max_cores`` plus one core per run that can be
active at once (``min(max_cores, runs.max_concurrent)``); memory is ``memory_per_core_gb`` (``scheduler:`` in the
file) per core. Slurm runs the driver inside the job's own allocation, so its limits are ``max_cores`` exactly.
"""

from __future__ import annotations

import logging
import re
import shlex
from decimal import ROUND_CEILING, Decimal
from xml.sax.saxutils import escape

import yaml

from ..errors import UserbatchError
from .cluster_runners import USER_INFO_ANNOTATION, KubernetesRunner, _digest, dns_label, k8s_quantity, label_value
from .config import FacilityConfig, Limits, queue_segment
from .runners import SubmitSpec

log = logging.getLogger(__name__)

TARGETS = ("yarn", "yunikorn", "kubernetes", "slurm")
#: Files ``userbatch deploy render`` writes, per target.
FILES = {"yarn": "capacity-scheduler.xml", "yunikorn": "queues.yaml", "kubernetes": "quotas.yaml",
         "slurm": "slurm-accounts.sh"}
#: YARN leaf that holds the part of the user share no quota claims (nobody may submit to it; YARN lends it out).
SPARE_QUEUE = "unallocated"
#: YARN's queue for the rest of the facility (root's other child); the site sets its ACLs.
OTHER_QUEUE = "default"
#: Slurm parent account of every facility account.
SLURM_ROOT = "userbatch"
YUNIKORN_SCHEDULER = "yunikorn"
BPS_SERVICE = "userbatch.images.bps_service.UserbatchService"

# a user name is a login name on the cluster: it must survive YARN ACL lists ("a,b g1"), queue mappings
# ("u:name:queue"), YuniKorn's user limits and sacctmgr unchanged, so it is checked, never rewritten
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.@-]{0,63}$")
_TEMPLATE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_HUNDREDTHS = 10000  # percentages are rendered in hundredths of a percent; 10000 = 100 %


class SchedulerConfigError(UserbatchError):
    """The quota file cannot be rendered for a scheduler as written (a name clash, a name a scheduler refuses)."""


# ------------------------------------------------------------------------------------------------ the roster


def _check_user(name: str) -> str:
    if not isinstance(name, str) or not _USER.match(name):
        raise SchedulerConfigError(
            f"user name {name!r} cannot be given to the cluster schedulers: a user is a login name "
            "(letters, digits, _ . @ -, starting with a letter or _, at most 64 characters); rename the user in the "
            "facility config")
    return name


def users_of(cfg: FacilityConfig) -> dict[str, Limits]:
    """Every user the file names (``users:``, group members, admins) with the limits the ledger seeds for them."""
    names = set(cfg.users) | set(cfg.admins) | {m for g in cfg.groups.values() for m in g["members"]}
    return {u: cfg.users.get(u, cfg.user_defaults) for u in sorted(_check_user(n) for n in names)}


def groups_of(cfg: FacilityConfig) -> dict[str, tuple[Limits, list[str]]]:
    """Every group of the file: (limits as the ledger seeds them — the group defaults when it has no quota —,
    sorted members)."""
    out = {}
    for g in sorted(cfg.groups):
        if not isinstance(g, str) or not g:
            raise SchedulerConfigError(f"group name {g!r} must be a non-empty string")
        spec = cfg.groups[g]
        out[g] = (spec.get("limits") or cfg.group_defaults, sorted({_check_user(m) for m in spec["members"]}))
    return out


def _leaf(cfg: FacilityConfig, name: str) -> str:
    """The last segment of :meth:`FacilityConfig.queue_for` for a group or user ``name``."""
    return cfg.queue_for(name, None).rsplit(".", 1)[1]


def _check_clashes(cfg: FacilityConfig) -> None:
    """Two subjects sharing a queue, namespace or Slurm account would share their limits: refuse."""
    users, groups = users_of(cfg), groups_of(cfg)
    for what, key in (("scheduler queue", lambda kind, n: cfg.queue_for(n, None)),
                      ("Kubernetes namespace", lambda kind, n: namespace_for(cfg, n if kind == "user" else None,
                                                                           n if kind == "group" else None)),
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
            if _leaf(cfg, n) in reserved:
                raise SchedulerConfigError(f"{kind} name {n!r} is reserved for a YARN queue "
                                           f"({', '.join(sorted(reserved))}); rename it in the facility config")


def _queue_prefix(cfg: FacilityConfig) -> str:
    parts = cfg.queue_prefix.split(".")
    if len(parts) != 2 or parts[0] != "root" or queue_segment(parts[1]) != parts[1] or parts[1] == OTHER_QUEUE:
        raise SchedulerConfigError(f"runs.queue_prefix {cfg.queue_prefix!r} must be root.<name> (e.g. root.users) "
                                   "to render scheduler configs")
    return parts[1]


def scheduler_cores(cfg: FacilityConfig, limits: Limits) -> int:
    """Cores a YARN or Kubernetes scheduler must allow for ``limits``: executors plus one driver per run that can
    be active at once (see the module doc)."""
    return limits.max_cores + min(limits.max_cores, max(cfg.max_concurrent_runs, 1))


def _memory(cfg: FacilityConfig, cores: int) -> str:
    return k8s_quantity(int(round(cores * cfg.memory_per_core_gb * 1024)))


def _share_cores(cfg: FacilityConfig) -> float:
    return cfg.total_cores * cfg.user_fraction


# ------------------------------------------------------------------------------------------------ names


def namespace_for(cfg: FacilityConfig, user: str | None, group: str | None) -> str:
    """The Kubernetes namespace of a run, from :meth:`KubernetesRunner.namespace` (one place for the name)."""
    return _k8s_runner(cfg).namespace(_spec(cfg, user or "-", group))


def slurm_account(user: str | None, group: str | None) -> str:
    """The Slurm account a run is charged to: ``g_<group>``, else the user's own ``u_<user>`` — the facility's
    namespace convention, so a group and a user of the same name keep separate accounts. Slurm folds account
    names to lower case, so anything but ``[a-z0-9_]`` is replaced and a digest of the original appended."""
    if not (group or user):
        raise SchedulerConfigError("a Slurm account belongs to a user or a group")
    name = f"g_{group}" if group else f"u_{user}"
    clean = re.sub(r"[^a-z0-9_]+", "_", name.lower())
    if clean == name and len(name) <= 60:
        return name
    return f"{clean[:51].rstrip('_')}_{_digest(name)}"


def _k8s_runner(cfg: FacilityConfig) -> KubernetesRunner:
    opts = {k: v for k, v in cfg.runner.items() if k != "kind"} if cfg.runner.get("kind") == "kubernetes" else {}
    return KubernetesRunner(**opts)


def _spec(cfg: FacilityConfig, user: str, group: str | None) -> SubmitSpec:
    return SubmitSpec(run_id="settings", run_dir="/", user=user, group=group, queue=cfg.queue_for(user, group))


def submission_settings(cfg: FacilityConfig, user: str, group: str | None = None) -> dict[str, str]:
    """The settings that put a run of ``user`` (charged to ``group``) where the rendered configs expect it.

    The queue is :meth:`FacilityConfig.queue_for` and the namespace, scheduler and queue label come from
    :class:`KubernetesRunner` — the same calls the runners make, so these never drift from what they submit. The
    YuniKorn ``user.info`` annotation carries the facility user and group, which YuniKorn's per-user and
    per-group limits match (the facility's service account must be trusted to set it in YuniKorn's admission
    controller); the Slurm account is :func:`slurm_account`.
    """
    _check_user(user)
    if group is not None and group not in cfg.groups:
        log.warning("group %r is not in the facility config; its queue is not in the rendered configs", group)
    runner = _k8s_runner(cfg)
    spec = _spec(cfg, user, group)
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


# ------------------------------------------------------------------------------------------------ arithmetic


def largest_remainder(weights: dict[str, float], total: int = _HUNDREDTHS) -> dict[str, int]:
    """Integers proportional to ``weights`` that sum to exactly ``total`` (Hamilton's largest-remainder method):
    each gets the floor of its exact share, and the units left go to the largest fractional parts (ties by name),
    so no share is off by a whole unit and the sum is exact — which YARN checks at every level."""
    s = sum(weights.values())
    if s <= 0:
        weights, s = {k: 1.0 for k in weights}, float(len(weights))
    exact = {k: Decimal(repr(w)) * total / Decimal(repr(s)) for k, w in weights.items()}
    out = {k: int(v) for k, v in exact.items()}
    left = total - sum(out.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[:left]:
        out[k] += 1
    return out


def _pct(hundredths: int) -> str:
    return f"{hundredths // 100}.{hundredths % 100:02d}"


def _yarn_leaves(cfg: FacilityConfig) -> list[dict]:
    """The leaf queues under the user share with capacity and maximum capacity in hundredths of a percent.

    Guaranteed capacity is each subject's scheduler cores as a share of the user-computing cores; when the quotas
    claim less than the whole share, the rest goes to :data:`SPARE_QUEUE` (nobody submits there, YARN lends it
    out); when they claim more, the guarantees are scaled down to fit. Either way they sum to exactly 100 % by
    largest remainder. Maximum capacity is the subject's own scheduler cores (rounded up, at least its capacity),
    so a queue never grows past ``max_cores`` plus its drivers.
    """
    share = _share_cores(cfg)
    leaves = []
    for g, (lim, members) in groups_of(cfg).items():
        leaves.append({"kind": "group", "name": g, "leaf": _leaf(cfg, g), "limits": lim, "members": members})
    for u, lim in users_of(cfg).items():
        leaves.append({"kind": "user", "name": u, "leaf": _leaf(cfg, u), "limits": lim, "members": [u]})
    want = {q["leaf"]: scheduler_cores(cfg, q["limits"]) / share * _HUNDREDTHS for q in leaves}
    claimed = sum(want.values())
    if claimed < _HUNDREDTHS:
        want[SPARE_QUEUE] = _HUNDREDTHS - claimed
    caps = largest_remainder(want)
    if caps.get(SPARE_QUEUE, 1) == 0:
        del caps[SPARE_QUEUE]
    for q in leaves:
        q["capacity"] = caps[q["leaf"]]
        top = Decimal(scheduler_cores(cfg, q["limits"])) / Decimal(repr(share)) * _HUNDREDTHS
        q["maximum"] = max(min(int(top.to_integral_value(ROUND_CEILING)), _HUNDREDTHS), q["capacity"])
    if SPARE_QUEUE in caps:
        leaves.append({"kind": "spare", "name": SPARE_QUEUE, "leaf": SPARE_QUEUE, "members": [],
                       "capacity": caps[SPARE_QUEUE], "maximum": caps[SPARE_QUEUE]})
    return sorted(leaves, key=lambda q: q["leaf"])


# ------------------------------------------------------------------------------------------------ YARN


def _acl(users) -> str:
    """A YARN ACL value: ``user,user group,group``; a single space is nobody (an empty value means everyone
    on some Hadoop versions, so it is never written)."""
    users = sorted(users)
    return ",".join(users) if users else " "


def capacity_scheduler_xml(cfg: FacilityConfig) -> str:
    """``capacity-scheduler.xml``: ``root`` -> {``users`` (the user share), ``default`` (the rest)} -> a leaf per
    group and per named user (and :data:`SPARE_QUEUE`), see :func:`_yarn_leaves`.

    * ACLs: YARN ORs a queue's ACLs with its parents' and root's default is everyone, so root and the user share
      submit to nobody and are administered by the admins; a group leaf admits its members, a personal leaf its
      user. (``yarn.acl.enable=true`` in yarn-site.xml makes YARN check them.)
    * ``user-limit-factor`` lets one user reach the leaf's maximum capacity (a personal queue has one user; in a
      group queue, each member's own ``max_cores`` across queues is held by the facility's worker).
    * Queue mappings place applications submitted without a queue: ``u:<user>`` to the personal queue first, then
      ``g:<group>`` (the Unix group named as the queue). Override stays off: the facility names the queue of every
      run it submits (``spark.yarn.queue``) and a member must be able to choose between personal and group queue;
      the ACLs are what stop anyone from using a queue that is not theirs.
    * The DominantResourceCalculator makes capacities count vcores, not only memory.
    """
    users_leaf = _queue_prefix(cfg)
    _check_clashes(cfg)
    share = round(cfg.user_fraction * _HUNDREDTHS)
    admins = sorted(_check_user(a) for a in cfg.admins)
    props: list[tuple[str, str, str]] = []

    def put(key: str, value: str, why: str = "") -> None:
        props.append((f"yarn.scheduler.capacity.{key}", value, why))

    put("resource-calculator", "org.apache.hadoop.yarn.util.resource.DominantResourceCalculator",
        "count vcores as well as memory")
    put("root.queues", f"{users_leaf},{OTHER_QUEUE}")
    put("root.acl_submit_applications", " ", "nobody at root: YARN ORs child ACLs with their parents'")
    put("root.acl_administer_queue", _acl(admins))
    put(f"root.{users_leaf}.capacity", _pct(share),
        f"the user-computing share: {cfg.user_fraction:g} of {cfg.total_cores} cores")
    put(f"root.{users_leaf}.maximum-capacity", _pct(share))
    put(f"root.{users_leaf}.acl_submit_applications", " ")
    put(f"root.{users_leaf}.acl_administer_queue", _acl(admins))
    put(f"root.{OTHER_QUEUE}.capacity", _pct(_HUNDREDTHS - share), "the rest of the facility (the site's queues)")
    put(f"root.{OTHER_QUEUE}.maximum-capacity", _pct(_HUNDREDTHS))
    put(f"root.{OTHER_QUEUE}.acl_submit_applications", " ", "the site grants its own users")
    put(f"root.{OTHER_QUEUE}.acl_administer_queue", _acl(admins))
    leaves = _yarn_leaves(cfg)
    put(f"root.{users_leaf}.queues", ",".join(q["leaf"] for q in leaves))
    for q in leaves:
        base = f"root.{users_leaf}.{q['leaf']}"
        if q["kind"] == "spare":
            why = "user share no quota claims; lent to the other queues"
        else:
            lim = q["limits"]
            why = (f"{q['kind']} {q['name']}: max_cores {lim.max_cores} (+ drivers = "
                   f"{scheduler_cores(cfg, lim)} cores), {lim.core_hours:g} core-hours per {cfg.period}")
        put(f"{base}.capacity", _pct(q["capacity"]), why)
        put(f"{base}.maximum-capacity", _pct(q["maximum"]))
        factor = Decimal(q["maximum"]) / Decimal(max(q["capacity"], 1))
        put(f"{base}.user-limit-factor", f"{factor.quantize(Decimal('0.0001'), ROUND_CEILING).normalize():f}")
        put(f"{base}.acl_submit_applications", _acl(q["members"]))
        put(f"{base}.acl_administer_queue", _acl(admins))
        put(f"{base}.state", "RUNNING")
    mappings = [f"u:{u}:{cfg.queue_for(u, None)}" for u in users_of(cfg)]
    mappings += [f"g:{_leaf(cfg, g)}:{cfg.queue_for('-', g)}" for g in groups_of(cfg)]
    put("queue-mappings", ",".join(mappings), "applications submitted without a queue: u: first, then g:")
    put("queue-mappings-override.enable", "false", "the facility names every run's queue; ACLs guard the queues")

    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f"<!-- {_banner(cfg)} -->",
             "<configuration>"]
    for name, value, why in props:
        lines.append("  <property>")
        lines.append(f"    <name>{escape(name)}</name>")
        lines.append(f"    <value>{escape(value)}</value>")
        if why:
            lines.append(f"    <description>{escape(why)}</description>")
        lines.append("  </property>")
    lines.append("</configuration>")
    return "\n".join(lines) + "\n"


def _banner(cfg: FacilityConfig) -> str:
    from pathlib import Path

    src = Path(cfg.path).name if cfg.path else "the facility config"
    return f"generated by 'userbatch deploy render' from {src}; edit the quota file and render again"


# ------------------------------------------------------------------------------------------------ YuniKorn


def _yk_resources(cfg: FacilityConfig, cores: int) -> dict:
    return {"vcore": cores, "memory": _memory(cfg, cores)}


def yunikorn_queues_yaml(cfg: FacilityConfig) -> str:
    """YuniKorn's ``queues.yaml``: partition ``default``, queue ``root.<users>`` with a child per group and per
    named user, each with ``resources.max`` from its quota.

    Limits: on the user share, one per named user (their ``max_cores`` across all their queues, as the facility
    counts it) and a last ``*`` wildcard with the user defaults for everyone else; on a group's queue, a limit
    for the group. Placement: the ``provided`` queue (the ``queue`` label the Kubernetes runner sets) if it
    exists, else the user's own queue under the user share, created on first use — so users the file does not
    name still land under the wildcard limit. A subject with ``max_cores: 0`` gets no resources and nobody in its
    submit ACL (YuniKorn refuses all-zero quotas). ``maxapplications`` is left out: YuniKorn would then require
    it on every child.
    """
    users_leaf = _queue_prefix(cfg)
    _check_clashes(cfg)
    admins = ",".join(sorted(_check_user(a) for a in cfg.admins)) or " "
    users, groups = users_of(cfg), groups_of(cfg)

    def queue(name: str, lim: Limits, members: list[str], limits: list[dict]) -> dict:
        q: dict = {"name": name, "submitacl": ",".join(members) if lim.max_cores > 0 and members else " ",
                   "adminacl": admins}
        if lim.max_cores > 0:
            q["resources"] = {"max": _yk_resources(cfg, scheduler_cores(cfg, lim))}
            if limits:
                q["limits"] = limits
        return q

    children = []
    for g, (lim, members) in groups.items():
        limit = [{"limit": f"group {g}", "groups": [queue_segment(g)],
                  "maxresources": _yk_resources(cfg, scheduler_cores(cfg, lim))}]
        children.append(queue(_leaf(cfg, g), lim, members, limit))
    for u, lim in users.items():
        children.append(queue(_leaf(cfg, u), lim, [u], []))
    children.sort(key=lambda q: q["name"])
    user_limits = [{"limit": f"user {u}", "users": [u], "maxresources": _yk_resources(cfg, scheduler_cores(cfg, lim))}
                   for u, lim in users.items() if lim.max_cores > 0]
    if cfg.user_defaults.max_cores > 0:
        user_limits.append({"limit": "users the file does not name", "users": ["*"],
                            "maxresources": _yk_resources(cfg, scheduler_cores(cfg, cfg.user_defaults))})
    share = int(_share_cores(cfg))
    users_q = {"name": users_leaf, "parent": True, "submitacl": " ", "adminacl": admins,
               "resources": {"max": _yk_resources(cfg, share)}, "limits": user_limits, "queues": children}
    if not user_limits:
        del users_q["limits"]
    doc = {"partitions": [{
        "name": "default",
        "placementrules": [
            {"name": "provided", "create": False},
            {"name": "user", "create": True, "parent": {"name": "fixed", "value": cfg.queue_prefix}},
        ],
        "queues": [{"name": "root", "submitacl": " ", "adminacl": admins, "queues": [users_q]}],
    }]}
    return f"# {_banner(cfg)}\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


# ------------------------------------------------------------------------------------------------ Kubernetes


def kubernetes_manifests(cfg: FacilityConfig) -> list[dict]:
    """A Namespace and a ResourceQuota per group and per named user, named as the Kubernetes runner names them.

    The quota caps ``requests``/``limits`` of cpu and memory at the subject's scheduler cores (``max_cores`` +
    drivers) and ``memory_per_core_gb`` per core, and ``pods`` at that many cores (every Spark pod holds at least
    one core). The namespaces carry the facility's labels and YuniKorn's queue annotation, so pods in them that
    name no queue still land in the subject's queue.
    """
    _check_clashes(cfg)
    runner = _k8s_runner(cfg)
    out = []
    subjects = [("group", g, lim) for g, (lim, _) in groups_of(cfg).items()]
    subjects += [("user", u, lim) for u, lim in users_of(cfg).items()]
    for kind, name, lim in subjects:
        spec = _spec(cfg, name if kind == "user" else "-", name if kind == "group" else None)
        ns = runner.namespace(spec)
        labels = {"app.kubernetes.io/part-of": "userbatch", f"userbatch/{kind}": label_value(name)}
        cores = scheduler_cores(cfg, lim)
        mem = _memory(cfg, cores)
        out.append({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "labels": labels,
                                 "annotations": {"yunikorn.apache.org/queue": spec.queue}}})
        out.append({"apiVersion": "v1", "kind": "ResourceQuota",
                    "metadata": {"name": dns_label(f"userbatch-{kind}-quota"), "namespace": ns, "labels": labels},
                    "spec": {"hard": {"requests.cpu": str(cores), "limits.cpu": str(cores),
                                      "requests.memory": mem, "limits.memory": mem, "pods": str(cores)}}})
    return out


def kubernetes_yaml(cfg: FacilityConfig) -> str:
    """:func:`kubernetes_manifests` as one multi-document YAML file (``kubectl apply -f``)."""
    docs = kubernetes_manifests(cfg)
    return f"# {_banner(cfg)}\n" + yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False,
                                                      explicit_start=True)


# ------------------------------------------------------------------------------------------------ Slurm


def _sq(value: str) -> str:
    return shlex.quote(value)


def slurm_commands(cfg: FacilityConfig) -> str:
    """A shell script of ``sacctmgr`` commands: account ``userbatch`` (the user share's cores and core-hours
    per period), under it ``g_<group>`` per group and ``u_<user>`` per named user with ``GrpTRES=cpu=<max_cores>``
    and ``GrpTRESMins=cpu=<core_hours x 60>``, and each user's associations with ``MaxTRES=cpu=<max_cores>``.

    ``GrpTRESMins`` is a budget over the usage Slurm remembers, so slurm.conf needs
    ``PriorityUsageResetPeriod`` matching the facility's period (and ``AccountingStorageEnforce`` with
    ``limits``) for it to renew like the ledger's allocations. Each account is added (which fails harmlessly when
    it exists) and then modified, so the script can be run again after the quota file changes.
    """
    _check_clashes(cfg)
    users, groups = users_of(cfg), groups_of(cfg)
    reset = {"month": "MONTHLY", "quarter": "QUARTERLY", "year": "YEARLY"}[cfg.period]
    lines = ["#!/bin/sh", f"# {_banner(cfg)}",
             f"# slurm.conf: AccountingStorageEnforce=associations,limits,safe  PriorityUsageResetPeriod={reset}",
             "set -u", ""]

    def account(name: str, parent: str | None, desc: str, cores: int, core_hours: float) -> None:
        par = f" parent={parent}" if parent else ""
        lines.append(f"sacctmgr -i add account {name}{par} Description={_sq(desc)} Organization=userbatch"
                     " >/dev/null 2>&1 || true")
        lines.append(f"sacctmgr -i modify account where name={name} set GrpTRES=cpu={cores}"
                     f" GrpTRESMins=cpu={int(round(core_hours * 60))}")

    def user(name: str, acct: str, cores: int, extra: str = "") -> None:
        lines.append(f"sacctmgr -i add user {_sq(name)} account={acct}{extra} >/dev/null 2>&1 || true")
        lines.append(f"sacctmgr -i modify user where name={_sq(name)} account={acct} set MaxTRES=cpu={cores}")

    account(SLURM_ROOT, None, "User Batch: the user-computing share", int(_share_cores(cfg)),
            cfg.user_capacity_core_hours)
    for a in sorted(_check_user(a) for a in cfg.admins):
        lines.append(f"sacctmgr -i add coordinator account={SLURM_ROOT} names={_sq(a)}")
    for g, (lim, members) in groups.items():
        lines.append("")
        lines.append(f"# group {g}: {lim.core_hours:g} core-hours per {cfg.period}, {lim.max_cores} cores at once")
        acct = slurm_account(None, g)
        account(acct, SLURM_ROOT, f"userbatch group {g}", lim.max_cores, lim.core_hours)
        for m in members:
            user(m, acct, min(users[m].max_cores, lim.max_cores))
    for u, lim in users.items():
        lines.append("")
        lines.append(f"# user {u}: {lim.core_hours:g} core-hours per {cfg.period}, {lim.max_cores} cores at once")
        acct = slurm_account(u, None)
        account(acct, SLURM_ROOT, f"userbatch user {u}", lim.max_cores, lim.core_hours)
        user(u, acct, lim.max_cores, f" DefaultAccount={acct}")
    return "\n".join(lines) + "\n"


def sbatch_script(kind: str, *, template: str | None = None, params: list[str] | tuple = (),
                  bps_file: str | None = None, account: str, cores: int = 2, hours: float = 1.0,
                  memory_per_core_gb: float = 4.0, mode: str = "cli") -> str:
    """An ``sbatch`` script that runs one job inside its own allocation, charged to ``account``.

    ``kind="template"``: a templated job with ``-p key=value`` parameters, as ``userbatch jobs run`` (``mode="cli"``)
    or ``spark-submit jobs/<template>.py`` (``mode="spark-submit"``), on ``local[$SLURM_CPUS_PER_TASK]`` — Spark
    uses exactly the cores Slurm gave the job. ``kind="bps"``: ``bps submit`` of a submit YAML with the userbatch
    WMS plugin (overridable through ``BPS_WMS_SERVICE_CLASS``). Every value is shell-quoted; ``--time`` is the
    facility's wall-time limit, so cores x hours is what Slurm may charge.
    """
    if kind not in ("template", "bps"):
        raise UserbatchError(f"an sbatch script runs a 'template' or a 'bps' job, not {kind!r}")
    if mode not in ("cli", "spark-submit"):
        raise UserbatchError(f"mode is cli or spark-submit, not {mode!r}")
    if not isinstance(cores, int) or cores < 1:
        raise UserbatchError(f"cores must be a positive integer; got {cores!r}")
    if not hours > 0:
        raise UserbatchError(f"hours must be positive; got {hours!r}")
    if not re.match(r"^[a-z0-9_]{1,60}$", account or ""):
        raise UserbatchError(f"Slurm account {account!r} is not an account name (see slurm_account)")
    minutes = max(1, int(-(-Decimal(repr(hours)) * 60 // 1)))
    lines = ["#!/bin/bash"]
    if kind == "template":
        if not template or not _TEMPLATE.match(template):
            raise UserbatchError(f"template name {template!r} is not a template (userbatch jobs list)")
        for p in params:
            if "=" not in p:
                raise UserbatchError(f"parameter {p!r} is not KEY=VALUE")
        job = f"userbatch-{template}"
        args = " ".join(f"-p {_sq(p)}" for p in params)
        if mode == "cli":
            run = f'userbatch --master "local[${{SLURM_CPUS_PER_TASK}}]" jobs run {template} {args}'.rstrip()
        else:
            run = (f'spark-submit --master "local[${{SLURM_CPUS_PER_TASK}}]" '
                   f'--driver-memory "$(( SLURM_CPUS_PER_TASK * {int(memory_per_core_gb * 1024)} / 2 ))m" '
                   f"jobs/{template}.py {args}").rstrip()
    else:
        if not bps_file:
            raise UserbatchError("a bps job needs its submit YAML (bps_file)")
        job = "userbatch-bps"
        run = f"bps submit {_sq(bps_file)}"
    lines += [f"#SBATCH --job-name={job}", f"#SBATCH --account={account}", "#SBATCH --ntasks=1",
              f"#SBATCH --cpus-per-task={cores}", f"#SBATCH --mem-per-cpu={int(memory_per_core_gb * 1024)}M",
              f"#SBATCH --time={minutes // 60:02d}:{minutes % 60:02d}:00", f"#SBATCH --output={job}-%j.out",
              "set -euo pipefail",
              'export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$(command -v python3)}"']
    if kind == "bps":
        lines.append(f'export BPS_WMS_SERVICE_CLASS="${{BPS_WMS_SERVICE_CLASS:-{BPS_SERVICE}}}"')
    lines.append(run)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ all of it


def render(cfg: FacilityConfig, target: str) -> dict[str, str]:
    """{file name: text} for ``target`` (one of :data:`TARGETS`, or ``all``)."""
    targets = TARGETS if target == "all" else (target,)
    out = {}
    for t in targets:
        if t == "yarn":
            out[FILES[t]] = capacity_scheduler_xml(cfg)
        elif t == "yunikorn":
            out[FILES[t]] = yunikorn_queues_yaml(cfg)
        elif t == "kubernetes":
            out[FILES[t]] = kubernetes_yaml(cfg)
        elif t == "slurm":
            out[FILES[t]] = slurm_commands(cfg)
        else:
            raise UserbatchError(f"target {target!r} is not one of {', '.join(TARGETS)}, all")
    return out


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
