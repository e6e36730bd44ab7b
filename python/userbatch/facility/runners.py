"""Runners: how a facility run becomes a Spark application on some resource manager.

Every run is one ``spark-submit`` of the facility's driver (:mod:`userbatch.facility.driver`) with the run's
directory as its argument; a runner only decides the master, the resources and where the user's queue is named.
:class:`SubmitSpec` is what the facility knows about a run, :meth:`Runner.argv` turns it into the exact
``spark-submit`` command line (the same text ``userbatch export`` writes into a bundle), and :meth:`Runner.launch`
starts it here. Local and standalone launch on this machine; YARN and Kubernetes (``cluster_runners``) render
their commands and pod templates for a site whose cluster is reachable.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserbatchError
from .accounts import Credentials
from .isolation import clean_environment, wrap

#: umask of every run: files group-writable (group tables are appended by any member), world-readable (the table
#: directory's mode decides who reaches them)
RUN_UMASK = 0o002

log = logging.getLogger(__name__)

#: The driver every run executes (a file, because spark-submit wants a file).
DRIVER = Path(__file__).resolve().with_name("driver.py")


@dataclass(frozen=True)
class SubmitSpec:
    """The resources and identity of one run, independent of where it runs."""

    run_id: str
    run_dir: str
    user: str
    group: str | None = None
    queue: str | None = None  # the scheduler queue (YARN queue, YuniKorn queue); from the facility config
    cores: int = 2  # total executor cores (local[cores] on the local runner)
    executor_cores: int = 2
    executor_memory: str = "2g"
    driver_memory: str = "2g"
    spark_conf: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    #: the OS identity the run executes as (multi-user mode): rendered for cluster targets as the pods'
    #: runAsUser/runAsGroup/fsGroup (Kubernetes) or spark-submit's --proxy-user (YARN)
    os_user: str | None = None
    uid: int | None = None
    gid: int | None = None
    gids: tuple[int, ...] = ()

    @property
    def app_name(self) -> str:
        return f"userbatch-{self.run_id}"

    @property
    def cores_per_executor(self) -> int:
        """The largest divisor of ``cores`` not above ``executor_cores``: executors x cores is then exactly
        ``cores``, never more than the quota reserved."""
        top = max(1, min(self.executor_cores, self.cores))
        return next(c for c in range(top, 0, -1) if self.cores % c == 0)

    @property
    def num_executors(self) -> int:
        return max(1, self.cores // self.cores_per_executor)


def spark_submit() -> str:
    """The spark-submit of the pyspark wheel in this environment."""
    exe = Path(sys.executable).with_name("spark-submit")
    if exe.exists():
        return str(exe)
    found = shutil.which("spark-submit")
    if not found:
        raise UserbatchError("spark-submit not found: install pyspark in the facility's environment")
    return found


def event_log_conf(run_dir: str) -> dict[str, str]:
    """Spark's event log for one run, uncompressed and in one file: accounting reads executor time from it."""
    ev = Path(run_dir) / "eventlog"
    return {
        "spark.eventLog.enabled": "true",
        # a shell variable (an exported bundle's $BUNDLE) stays for the shell to expand
        "spark.eventLog.dir": f"file://{ev}" if run_dir.startswith("$") else ev.as_uri(),
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
    }


class Runner:
    """One way of running a SubmitSpec. Subclasses set :attr:`kind` and :meth:`master_args`."""

    kind = "base"
    #: True where :meth:`launch` can start the application from this machine.
    launchable = False

    def master_args(self, spec: SubmitSpec) -> list[str]:
        raise NotImplementedError

    def conf(self, spec: SubmitSpec) -> dict[str, str]:
        """Spark configuration common to every runner; subclasses add their scheduler's settings."""
        return {
            **spec.spark_conf,  # the user's settings first: the facility's below win (accounting needs them)
            "spark.app.name": spec.app_name,
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.driver.memory": spec.driver_memory,
            "spark.driver.extraJavaOptions": "-Dlog4j2.level=warn",
            **event_log_conf(spec.run_dir),
        }

    def argv(self, spec: SubmitSpec, submit: str = "spark-submit") -> list[str]:
        """The exact spark-submit command line for ``spec``."""
        args = [submit, *self.master_args(spec)]
        for key, value in sorted(self.conf(spec).items()):
            args += ["--conf", f"{key}={value}"]
        return [*args, str(DRIVER), spec.run_dir]

    def environment(self, spec: SubmitSpec) -> dict[str, str]:
        """The run's whole environment: clean (no facility state or secret), then the run's own variables."""
        return clean_environment(spec.env, spec.run_dir)

    def stop_argv(self, spec: SubmitSpec) -> list[str] | None:
        """The command that stops the application where it runs, when signalling the local ``spark-submit``
        process group is not enough (cluster deploy mode: YARN, Kubernetes); None for client-mode runners."""
        return None

    #: Whether a run of this runner can live in its own network namespace (its Spark talks only to itself).
    isolates_network = False
    #: Whether the run's processes can be its owner's. False for a runner whose executors run as the cluster's
    #: one account (Spark standalone): a driver as the owner could not even commit what those executors wrote.
    runs_as_owner = True

    def launch(self, spec: SubmitSpec, log_path: Path, creds: Credentials | None = None,
               network: bool = False) -> subprocess.Popen:
        """Start the application as ``creds`` (:func:`.isolation.wrap`; None: as ourselves, single-user), in a new
        session whose process group the worker signals on cancel.

        Parameters
        ----------
        spec : SubmitSpec
            The run.
        log_path : Path
            The driver log (opened by the facility, so the run cannot point it elsewhere).
        creds : Credentials, optional
            The owner's uid and gids; the run's namespaces and identity are set up only when given.
        network : bool
            A network namespace of its own (loopback only), where this runner allows it.
        """
        if not self.launchable:
            raise UserbatchError(f"the {self.kind} runner cannot launch from this machine; "
                                 "use 'userbatch export' for the submit command")
        env = self.environment(spec)
        if creds is not None and not self.runs_as_owner:
            log.warning("run %s: the %s runner is single-tenant; it runs as the facility's account, not as %s",
                        spec.run_id, self.kind, creds.account)
            creds = None
        isolate_net = bool(creds is not None and network and self.isolates_network)
        if isolate_net:  # the driver must bind to the namespace's loopback, not the host's name
            env.update(SPARK_LOCAL_IP="127.0.0.1", SPARK_LOCAL_HOSTNAME="localhost")
        argv = wrap(self.argv(spec, spark_submit()), creds, isolate_net)
        log.info("run %s: %s", spec.run_id, " ".join(argv))
        out = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=spec.run_dir, start_new_session=True, umask=RUN_UMASK)
        finally:
            out.close()


class LocalRunner(Runner):
    """``local[cores]`` on this machine: the embedded default."""

    kind = "local"
    launchable = True
    isolates_network = True

    def master_args(self, spec):
        return ["--master", f"local[{spec.cores}]"]

    def environment(self, spec):
        env = super().environment(spec)
        env["SPARK_MASTER"] = f"local[{spec.cores}]"
        return env


class StandaloneRunner(Runner):
    """A Spark standalone cluster (``spark://host:port``), driver in client mode on the facility host so that
    cancel can stop it; the run gets at most ``cores`` executor cores."""

    kind = "standalone"
    launchable = True
    #: Spark standalone is single-tenant (Spark's security page): its executors run as the account that started
    #: the workers, for every application. Runs are then the facility's account too; docs/security.md says so.
    runs_as_owner = False

    def __init__(self, master: str):
        if not master.startswith("spark://"):
            raise UserbatchError(f"a standalone master URL starts with spark://; got {master!r}")
        self.master = master

    def master_args(self, spec):
        return ["--master", self.master, "--deploy-mode", "client",
                "--total-executor-cores", str(spec.cores), "--executor-cores", str(spec.cores_per_executor),
                "--executor-memory", spec.executor_memory]

    def environment(self, spec):
        env = super().environment(spec)
        env["SPARK_MASTER"] = self.master
        return env


def terminate(proc_or_pid, grace_s: float = 10.0) -> None:
    """Stop a run's process group: SIGTERM (Spark's shutdown hook writes the event log's end), then SIGKILL."""
    import time

    pid = proc_or_pid if isinstance(proc_or_pid, int) else proc_or_pid.pid
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        if not isinstance(proc_or_pid, int) and proc_or_pid.poll() is not None:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def executor_cores(runner_options: dict) -> int:
    """Cores per executor the facility asks for (``runner.executor_cores``, default 4): an executor must fit on one
    worker or node, so a cluster of small workers needs it lowered, or its runs would wait for executors forever."""
    try:
        value = int(runner_options.get("executor_cores", 4))
    except (TypeError, ValueError):
        raise UserbatchError("runner.executor_cores must be a whole number of cores") from None
    if value < 1:
        raise UserbatchError("runner.executor_cores must be at least 1")
    return value


def runner_for(kind: str, **options) -> Runner:
    """The runner named in the facility config (``runner: {kind: local|standalone|yarn|kubernetes, ...}``).
    ``executor_cores`` / ``executor_memory`` (any kind) size every run's executors; the worker reads them (see
    :func:`executor_cores`), not the runner."""
    options = {k: v for k, v in options.items() if k not in ("executor_cores", "executor_memory")}
    if kind == "local":
        return LocalRunner()
    if kind == "standalone":
        return StandaloneRunner(options.get("master") or os.environ.get("USERBATCH_SPARK_MASTER", ""))
    if kind in ("yarn", "kubernetes"):
        from .cluster_runners import KubernetesRunner, YarnRunner

        cls = YarnRunner if kind == "yarn" else KubernetesRunner
        return cls(**options)
    raise UserbatchError(f"runner kind {kind!r} is not one of local, standalone, yarn, kubernetes")
