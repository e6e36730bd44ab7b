"""Spark standalone: the runner that submits to a ``spark://`` master, and a cluster on this machine from the
pyspark wheel (a master and N workers on 127.0.0.1) for development and tests.

The standalone runner submits to its ``spark://`` URL exactly as it would to a real one. Processes of the local
cluster are started in their own session so that :meth:`Cluster.stop` takes down each daemon and the executors it
forked.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserbatchError
from .base import Runner, terminate

log = logging.getLogger(__name__)


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_class() -> str:
    exe = Path(sys.executable).with_name("spark-class")
    if not exe.exists():
        raise UserbatchError("spark-class not found beside this Python: install pyspark in the facility's venv")
    return str(exe)


def wait_port(port: int, timeout_s: float, proc: subprocess.Popen, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserbatchError(f"the {what} exited at start (status {proc.returncode}); see {log_path}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.3)
    raise UserbatchError(f"the {what} did not open port {port} within {timeout_s:.0f} s; see {log_path}")


@dataclass
class Cluster:
    master_url: str
    work_dir: Path
    master: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)
    webui_port: int = 0  # the master's web UI: http://127.0.0.1:<webui_port>/json/ lists the workers
    worker_ports: list[int] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)  # master.log, worker0.log, ...

    def stop(self) -> None:
        for p in [*self.workers, self.master]:
            terminate(p, grace_s=5)
            p.wait()

    def alive(self) -> bool:
        return self.master.poll() is None and all(w.poll() is None for w in self.workers)


def start_cluster(work_dir: str | Path, workers: int = 1, cores_per_worker: int = 2, memory_per_worker: str = "2g",
                  timeout_s: float = 60) -> Cluster:
    """Start a master and ``workers`` workers on 127.0.0.1 (free ports) and wait until each is registered."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", SPARK_WORKER_DIR=str(work_dir / "work"),
               SPARK_LOG_DIR=str(work_dir / "logs"), PYSPARK_PYTHON=sys.executable)
    port, ui = _free_port(), _free_port()
    mlog = work_dir / "master.log"
    master = subprocess.Popen([_spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(ui)], stdout=open(mlog, "ab"),  # noqa: SIM115
                              stderr=subprocess.STDOUT, env=env, start_new_session=True)
    cluster = Cluster(f"spark://127.0.0.1:{port}", work_dir, master, webui_port=ui, logs=[mlog])
    try:
        wait_port(port, timeout_s, master, "Spark master", mlog)
        for i in range(workers):
            wport, wui = _free_port(), _free_port()
            wlog = work_dir / f"worker{i}.log"
            w = subprocess.Popen([_spark_class(), "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                                  "--port", str(wport), "--webui-port", str(wui), "--cores", str(cores_per_worker),
                                  "--memory", memory_per_worker, "--work-dir", str(work_dir / f"work{i}"),
                                  cluster.master_url], stdout=open(wlog, "ab"),  # noqa: SIM115
                                 stderr=subprocess.STDOUT, env=env, start_new_session=True)
            cluster.workers.append(w)
            cluster.worker_ports.append(wport)
            cluster.logs.append(wlog)
            wait_port(wport, timeout_s, w, f"Spark worker {i}", wlog)
        _wait_registered(cluster, workers, timeout_s, mlog)
    except BaseException:
        cluster.stop()
        raise
    log.info("standalone cluster %s with %d worker(s) x %d cores", cluster.master_url, workers, cores_per_worker)
    return cluster


def _wait_registered(cluster: Cluster, n: int, timeout_s: float, mlog: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if mlog.read_text(errors="replace").count("Registering worker") >= n:
            return
        time.sleep(0.3)
    raise UserbatchError(f"{n} worker(s) did not register with {cluster.master_url}; see {mlog}")
