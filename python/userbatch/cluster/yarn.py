"""YARN: the runner (``spark-submit --master yarn``, the run's queue, ``--proxy-user`` as its owner) and the
CapacityScheduler configuration rendered from the quota file.

YARN is not reachable from the facility's own machines, so the runner *renders* by default (``launchable =
False``): a worker deployed on a gateway host sets ``launchable: true`` and submits itself. What it guarantees,
because the facility's quotas depend on it: the run lands in the queue the facility config names; it gets a fixed
number of executors of fixed size (dynamic allocation off), the facility's settings winning over the user's
``spark_conf``; ``spark-submit`` waits for the application (``waitAppCompletion``), because the worker tracks a run
by its submit process; the run's environment reaches the driver and the executors. In cluster mode the run
directory must be on a file system mounted at the same path on the nodes. Cancelling: :meth:`YarnRunner.cancel_argv`.
"""

from __future__ import annotations

import logging
import sys
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from xml.sax.saxutils import escape

from ..errors import UserbatchError
from ..facility.config import FacilityConfig
from .base import Runner, SubmitSpec, archive_list, option_flag, warn_ignored
from .quotas import (
    HUNDREDTHS,
    OTHER_QUEUE,
    SPARE_QUEUE,
    banner,
    check_clashes,
    check_user,
    groups_of,
    leaf_queue,
    queue_prefix,
    scheduler_cores,
    share_cores,
    users_of,
)

log = logging.getLogger(__name__)


class YarnRunner(Runner):
    """A run as a YARN application in the run's queue (capacity or fair scheduler).

    Decisions, and why:

    * ``spark.yarn.submit.waitAppCompletion=true`` (Spark's default, written out so that no site default or user
      conf turns it off): the worker tracks a run by its ``spark-submit`` process — running while it lives, its
      exit status the run's outcome, then accounting reads the event log. With ``false`` the client returns as
      soon as YARN *accepts* the application: the worker would finish the run, release its cores to the next one
      and read an event log still being written, while the application goes on outside the quota.
    * ``spark.yarn.maxAppAttempts=1``: a second attempt would run the driver again — outputs committed twice and
      the work charged twice; the facility has its own rerun, which the user asks for.
    * ``spark.dynamicAllocation.enabled=false`` with ``--num-executors``: the facility reserved exactly ``cores``.
    * ``--queue`` and ``spark.yarn.queue`` both name the queue (Hadoop 3 schedulers accept the full path
      ``root.users.<group>`` the facility config builds); ``spark.yarn.tags`` carry user, group and run so that
      ``yarn application -list -appTags run:<id>`` finds a run.
    * In cluster mode the driver runs in the ApplicationMaster's container, whose environment comes from
      ``spark.yarn.appMasterEnv.*``; executors get ``spark.executorEnv.*``. Both are set from ``spec.env`` in
      either deploy mode (in client mode the AM is only the executor launcher, and the driver has the submit
      process's environment).
    * Python: ``archives`` ships a packed environment (``venv-pack``/``conda-pack`` tarball, e.g.
      ``hdfs:///envs/userbatch.tar.gz#environment``); the interpreter then defaults to ``./<alias>/bin/python`` of
      the first archive with an alias, else to ``python`` (option) or ``python3`` on the nodes. It is set with
      ``spark.pyspark.python`` so the submit host's ``PYSPARK_PYTHON`` (a path on this machine, which Spark
      would otherwise forward to the ApplicationMaster) is not used on the cluster.
    """

    kind = "yarn"
    launchable = False

    def __init__(self, deploy_mode: str = "cluster", spark_home: str | None = None, archives=None,
                 python: str | None = None, launchable: bool = False, **ignored_options):
        if deploy_mode not in ("cluster", "client"):
            raise UserbatchError(f"the yarn runner's deploy_mode is cluster or client; got {deploy_mode!r}")
        warn_ignored(self.kind, ignored_options)
        self.launchable = option_flag(launchable, "yarn", "launchable")
        self.deploy_mode = deploy_mode
        self.spark_home = spark_home
        self.archives = archive_list(archives)
        self.python = python

    @property
    def submit_command(self) -> str:
        """``spark-submit`` of the site's Spark (``spark_home``), else the one on the gateway's PATH."""
        return str(Path(self.spark_home) / "bin" / "spark-submit") if self.spark_home else "spark-submit"

    @staticmethod
    def queue(spec: SubmitSpec) -> str:
        return spec.queue or "default"

    @staticmethod
    def tags(spec: SubmitSpec) -> str:
        """YARN application tags (comma-separated, so commas in values become ``_``)."""
        def clean(v):
            return str(v).replace(",", "_")
        tags = ["userbatch", f"user:{clean(spec.user)}"]
        if spec.group:
            tags.append(f"group:{clean(spec.group)}")
        tags.append(f"run:{clean(spec.run_id)}")
        return ",".join(tags)

    def cluster_python(self) -> str:
        if self.python:
            return self.python
        for archive in self.archives:
            if "#" in archive:
                return f"./{archive.rsplit('#', 1)[1]}/bin/python"
        return "python3"

    def master_args(self, spec: SubmitSpec) -> list[str]:
        args = ["--master", "yarn", "--deploy-mode", self.deploy_mode, "--queue", self.queue(spec),
                "--num-executors", str(spec.num_executors),
                "--executor-cores", str(spec.cores_per_executor),
                "--executor-memory", spec.executor_memory, "--driver-memory", spec.driver_memory]
        if self.archives:
            args += ["--archives", ",".join(self.archives)]
        if spec.os_user:  # the application runs as its owner on the cluster (Hadoop impersonation; kerberised
            args += ["--proxy-user", spec.os_user]  # sites allow the facility's principal in hadoop.proxyuser.*)
        return args

    def conf(self, spec: SubmitSpec) -> dict[str, str]:
        conf = super().conf(spec)
        for key, value in spec.env.items():
            conf[f"spark.yarn.appMasterEnv.{key}"] = value
            conf[f"spark.executorEnv.{key}"] = value
        conf.update({  # the facility's settings win over the user's spark_conf
            "spark.yarn.queue": self.queue(spec),
            "spark.yarn.tags": self.tags(spec),
            "spark.yarn.submit.waitAppCompletion": "true",
            "spark.yarn.maxAppAttempts": "1",
            "spark.dynamicAllocation.enabled": "false",  # sizes come from the flags, which win over --conf
            "spark.pyspark.python": self.cluster_python(),
            # cluster mode: the driver runs in the AM container with the shipped environment; client mode: here
            "spark.pyspark.driver.python": self.cluster_python() if self.deploy_mode == "cluster"
            else sys.executable,
        })
        return conf

    def cancel_argv(self, app_id: str) -> list[str]:
        """The command that stops the application (``app_id``: ``application_...``, which the driver writes to
        ``RUN_DIR/app_id``); stopping ``spark-submit`` alone leaves a cluster-mode application running."""
        return ["yarn", "application", "-kill", app_id]

    def stop_argv(self, spec):
        app = Path(spec.run_dir) / "app_id"
        return self.cancel_argv(app.read_text().strip()) if app.exists() else None

    def launch(self, spec, log_path, creds=None, network=False):
        if self.launchable:  # a site whose gateway reaches the cluster sets launchable on its runner
            return super().launch(spec, log_path)  # as the facility: the cluster runs it as --proxy-user
        raise UserbatchError(
            "the yarn runner cannot launch from this machine: no YARN cluster is reachable from it. Run the "
            "command of YarnRunner.argv(spec) on a gateway host of the cluster (with HADOOP_CONF_DIR set), or set "
            "runner.kind to local or standalone in the facility config")


def largest_remainder(weights: dict[str, float], total: int = HUNDREDTHS) -> dict[str, int]:
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
    share = share_cores(cfg)
    leaves = []
    for g, (lim, members) in groups_of(cfg).items():
        leaves.append({"kind": "group", "name": g, "leaf": leaf_queue(cfg, g), "limits": lim, "members": members})
    for u, lim in users_of(cfg).items():
        leaves.append({"kind": "user", "name": u, "leaf": leaf_queue(cfg, u), "limits": lim, "members": [u]})
    want = {q["leaf"]: scheduler_cores(cfg, q["limits"]) / share * HUNDREDTHS for q in leaves}
    claimed = sum(want.values())
    if claimed < HUNDREDTHS:
        want[SPARE_QUEUE] = HUNDREDTHS - claimed
    caps = largest_remainder(want)
    if caps.get(SPARE_QUEUE, 1) == 0:
        del caps[SPARE_QUEUE]
    for q in leaves:
        q["capacity"] = caps[q["leaf"]]
        top = Decimal(scheduler_cores(cfg, q["limits"])) / Decimal(repr(share)) * HUNDREDTHS
        q["maximum"] = max(min(int(top.to_integral_value(ROUND_CEILING)), HUNDREDTHS), q["capacity"])
    if SPARE_QUEUE in caps:
        leaves.append({"kind": "spare", "name": SPARE_QUEUE, "leaf": SPARE_QUEUE, "members": [],
                       "capacity": caps[SPARE_QUEUE], "maximum": caps[SPARE_QUEUE]})
    return sorted(leaves, key=lambda q: q["leaf"])


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
    users_leaf = queue_prefix(cfg)
    check_clashes(cfg)
    share = round(cfg.user_fraction * HUNDREDTHS)
    admins = sorted(check_user(a) for a in cfg.admins)
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
    put(f"root.{OTHER_QUEUE}.capacity", _pct(HUNDREDTHS - share), "the rest of the facility (the site's queues)")
    put(f"root.{OTHER_QUEUE}.maximum-capacity", _pct(HUNDREDTHS))
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
    mappings += [f"g:{leaf_queue(cfg, g)}:{cfg.queue_for('-', g)}" for g in groups_of(cfg)]
    put("queue-mappings", ",".join(mappings), "applications submitted without a queue: u: first, then g:")
    put("queue-mappings-override.enable", "false", "the facility names every run's queue; ACLs guard the queues")

    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f"<!-- {banner(cfg)} -->",
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
