"""Runners: how a facility run becomes a Spark application on some resource manager — the interface.

Every run is one ``spark-submit`` of the facility's driver (:mod:`userbatch.facility.driver`) with the run's
directory as its argument; a runner only decides the master, the resources and where the user's queue is named.
:class:`SubmitSpec` is what the facility knows about a run, :meth:`Runner.argv` turns it into the exact
``spark-submit`` command line (the same text ``userbatch export`` writes into a bundle), and :meth:`Runner.launch`
starts it here. The runners themselves live beside this module (``local``, ``standalone``, ``yarn``,
``kubernetes``) and are found by name through :mod:`~userbatch.cluster.registry`, like ctrl_bps'
``BaseWmsService`` plug-ins.
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
from ..facility.accounts import Credentials
from ..facility.isolation import clean_environment, wrap

log = logging.getLogger(__name__)


#: umask of every run: files group-writable (group tables are appended by any member), world-readable (the table
#: directory's mode decides who reaches them)
RUN_UMASK = 0o002


#: The driver every run executes (a file, because spark-submit wants a file).
DRIVER = Path(__file__).resolve().parent.parent / "facility" / "driver.py"


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
    #: the run's wall-time limit (a batch system's --time); None: the facility's worker enforces it
    max_hours: float | None = None
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


def terminate(proc_or_pid, grace_s: float = 10.0) -> None:
    """Stop a run's process group: SIGTERM (Spark's shutdown hook writes the event log's end), then SIGKILL. A run
    held by a batch system (an object with ``cancel``, e.g. a Slurm job) is cancelled there instead."""
    import time

    if hasattr(proc_or_pid, "cancel"):
        proc_or_pid.cancel(grace_s)
        return
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


def warn_ignored(kind: str, options: dict) -> None:
    if options:
        log.warning("the %s runner ignores option(s) %s", kind, ", ".join(sorted(options)))


def option_flag(value, kind: str, option: str) -> bool:
    if not isinstance(value, bool):
        raise UserbatchError(f"the {kind} runner's {option} is true or false; got {value!r}")
    return value


def archive_list(archives) -> list[str]:
    if not archives:
        return []
    if isinstance(archives, str):
        return [a.strip() for a in archives.split(",") if a.strip()]
    return [str(a) for a in archives]
