"""The development cluster the CLI manages: ``userbatch cluster start|stop|status`` and ``userbatch connect ...``.

:func:`~userbatch.cluster.standalone.start_cluster` starts a master and N workers on 127.0.0.1; here they are
started *detached* (each in its own session, surviving the CLI process) and recorded in a state file,
``$USERBATCH_HOME/cluster/state.json`` (master URL, web UI port, pids, log paths), so that a later ``stop`` or
``status`` — from another shell — finds them. ``status`` asks the master itself (its web UI serves
``/json/`` with every worker and its state) and falls back to the pids when the master does not answer.

The Spark Connect server (``org.apache.spark.sql.connect.service.SparkConnectServer``, shipped in the wheel's
``jars/spark-connect_*.jar``, so no ``--packages`` and no Maven) runs the same way, against the dev cluster, any
``spark://`` master or ``local[N]``, with its own state file ``connect.json``; notebooks then use
``userbatch.session(remote="sc://127.0.0.1:15002")``.

For development and tests only: production submits to the site's cluster (YARN, Kubernetes, standalone).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..config import settings
from ..engine import base_conf
from ..errors import UserbatchError
from .base import spark_submit
from .standalone import start_cluster, wait_port

log = logging.getLogger(__name__)


#: The Spark Connect server's main class (in pyspark/jars/spark-connect_2.13-*.jar).
CONNECT_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


DEFAULT_CONNECT_PORT = 15002


def cluster_dir() -> Path:
    return settings().home / "cluster"


def _state_path(name: str) -> Path:
    return cluster_dir() / f"{name}.json"


def _read_state(name: str) -> dict | None:
    p = _state_path(name)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _write_state(name: str, state: dict) -> None:
    p = _state_path(name)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(p)


def _is_ours(pid: int | None, marker: str) -> bool:
    """The pid is alive *and* is the Spark process we recorded (a pid reused by something else is not ours)."""
    if not pid:
        return False
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True  # no /proc here: trust the pid
    if marker not in cmd:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _stop_pid(pid: int | None, marker: str, grace_s: float = 10.0) -> bool:
    """SIGTERM the process group of ``pid`` (the daemon and what it forked), then SIGKILL; True if it was alive."""
    if not _is_ours(pid, marker):
        return False
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return False
    target = pgid if pgid == pid else None  # started in its own session: the group is ours to signal
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(target, sig) if target else os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5)
        while time.monotonic() < deadline:
            if not _is_ours(pid, marker):
                return True
            time.sleep(0.1)
    return True


def cluster_state() -> dict | None:
    """The recorded dev cluster (or None)."""
    return _read_state("state")


def start(workers: int = 2, cores: int = 1, memory: str = "1g", timeout_s: float = 90) -> dict:
    """Start the dev cluster (master + ``workers`` workers on 127.0.0.1), detached; returns its state."""
    if workers < 1 or cores < 1:
        raise UserbatchError("a cluster needs at least one worker with one core")
    old = cluster_state()
    if old and _is_ours(old.get("master_pid"), "deploy.master.Master"):
        raise UserbatchError(f"a cluster is already running at {old['master_url']}; "
                             "'userbatch cluster stop' it first")
    if old:
        _cleanup(old)  # stale: stop any worker left behind, forget it
    work = cluster_dir() / time.strftime("%Y%m%dT%H%M%S")
    c = start_cluster(work, workers=workers, cores_per_worker=cores, memory_per_worker=memory, timeout_s=timeout_s)
    state = {
        "master_url": c.master_url,
        "webui_port": c.webui_port,
        "webui_url": f"http://127.0.0.1:{c.webui_port}",
        "master_pid": c.master.pid,
        "worker_pids": [w.pid for w in c.workers],
        "worker_ports": c.worker_ports,
        "workers": workers, "cores_per_worker": cores, "memory_per_worker": memory,
        "work_dir": str(work),
        "logs": [str(p) for p in c.logs],
        "started_at": time.time(),
    }
    _write_state("state", state)
    log.info("dev cluster %s: %d worker(s) x %d core(s), %s each", c.master_url, workers, cores, memory)
    return state


def _cleanup(state: dict) -> list[int]:
    stopped = []
    for pid in state.get("worker_pids", []):
        if _stop_pid(pid, "deploy.worker.Worker"):
            stopped.append(pid)
    if _stop_pid(state.get("master_pid"), "deploy.master.Master"):
        stopped.append(state["master_pid"])
    _state_path("state").unlink(missing_ok=True)
    return stopped


def stop() -> dict:
    """Stop the dev cluster (workers first, then the master); idempotent, and forgets a stale record."""
    state = cluster_state()
    if not state:
        return {"running": False, "stopped": []}
    return {"running": False, "stopped": _cleanup(state), "master_url": state.get("master_url")}


def master_json(webui_port: int, timeout_s: float = 3.0) -> dict:
    """The master's own view (``/json/``): workers with their state, cores, memory; active applications."""
    with urllib.request.urlopen(f"http://127.0.0.1:{webui_port}/json/", timeout=timeout_s) as r:
        return json.loads(r.read())


def status() -> dict:
    """Whether the dev cluster runs, and its alive workers (from the master; from the pids if it does not answer)."""
    state = cluster_state()
    if not state:
        return {"running": False}
    master_alive = _is_ours(state.get("master_pid"), "deploy.master.Master")
    out = {**state, "running": master_alive}
    if not master_alive:
        out["alive_workers"] = 0
        out["stale"] = True
        return out
    try:
        info = master_json(state["webui_port"])
        alive = [w for w in info.get("workers", []) if w.get("state") == "ALIVE"]
        out.update(source="master", alive_workers=len(alive), cores=info.get("cores"),
                   active_apps=[a.get("name") for a in info.get("activeapps", [])],
                   worker_list=[{"id": w.get("id"), "host": w.get("host"), "port": w.get("port"),
                                 "cores": w.get("cores"), "memory_mb": w.get("memory"), "state": w.get("state")}
                                for w in info.get("workers", [])])
    except OSError as exc:
        log.info("master web UI did not answer (%s); counting worker pids", exc)
        out.update(source="pids",
                   alive_workers=sum(_is_ours(p, "deploy.worker.Worker") for p in state.get("worker_pids", [])))
    return out


def connect_jar() -> Path:
    import pyspark

    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("spark-connect_*.jar"))
    if not jars:
        raise UserbatchError("the pyspark wheel here has no spark-connect jar; install pyspark >= 4")
    return jars[-1]


def connect_argv(master: str, port: int) -> list[str]:
    """The spark-submit command line of the Connect server (the connect jar is already on the wheel's classpath;
    it is also the primary resource spark-submit wants)."""
    conf = base_conf(master)
    conf.update({
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.memory": settings().spark.connect_driver_memory,
        "spark.executorEnv.PYSPARK_PYTHON": sys.executable,
    })
    if master.startswith("spark://"):
        conf.setdefault("spark.executor.memory", "1g")
        cs = cluster_state()
        if cs and cs.get("master_url") == master:  # the dev cluster: plan for its cores, not 200 shuffle partitions
            total = cs["workers"] * cs["cores_per_worker"]
            conf["spark.default.parallelism"] = str(total)
            conf["spark.sql.shuffle.partitions"] = str(max(2, 2 * total))
    elif master.startswith("local"):
        n = master[6:-1]
        conf["spark.default.parallelism"] = n if n.isdigit() else str(os.cpu_count() or 2)
    argv = [spark_submit(), "--master", master, "--name", "userbatch-connect", "--class", CONNECT_CLASS]
    for k, v in sorted(conf.items()):
        argv += ["--conf", f"{k}={v}"]
    return [*argv, str(connect_jar())]


def connect_state() -> dict | None:
    return _read_state("connect")


def connect_start(master: str | None = None, port: int = DEFAULT_CONNECT_PORT, timeout_s: float = 120) -> dict:
    """Start the Spark Connect server on 127.0.0.1:``port`` against ``master`` (default: the dev cluster if one
    runs, else ``local[*]``); waits until the port answers."""
    old = connect_state()
    if old and _is_ours(old.get("pid"), CONNECT_CLASS):
        raise UserbatchError(f"a Spark Connect server already runs at {old['url']}; 'userbatch connect stop' it")
    if master is None:
        cs = cluster_state()
        master = cs["master_url"] if cs and _is_ours(cs.get("master_pid"), "deploy.master.Master") else "local[*]"
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise UserbatchError(f"port {port} on 127.0.0.1 is in use; choose another with --port")
    d = cluster_dir()
    d.mkdir(parents=True, exist_ok=True)
    log_path = d / f"connect-{port}.log"
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable,
               PYSPARK_DRIVER_PYTHON=sys.executable)
    for key in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED"):
        env.pop(key, None)
    argv = connect_argv(master, port)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    state = {"url": f"sc://127.0.0.1:{port}", "port": port, "master": master, "pid": proc.pid,
             "log": str(log_path), "started_at": time.time()}
    try:
        wait_port(port, timeout_s, proc, "Spark Connect server", log_path)
    except BaseException:
        _stop_pid(proc.pid, CONNECT_CLASS, grace_s=5)
        proc.wait()
        raise
    _write_state("connect", state)
    return state


def connect_stop() -> dict:
    state = connect_state()
    if not state:
        return {"running": False, "stopped": False}
    stopped = _stop_pid(state.get("pid"), CONNECT_CLASS)
    _state_path("connect").unlink(missing_ok=True)
    return {"running": False, "stopped": stopped, "url": state.get("url")}


def connect_status() -> dict:
    state = connect_state()
    if not state:
        return {"running": False}
    alive = _is_ours(state.get("pid"), CONNECT_CLASS)
    answers = False
    if alive:
        with socket.socket() as s:
            s.settimeout(1)
            answers = s.connect_ex(("127.0.0.1", state["port"])) == 0
    return {**state, "running": alive and answers, "stale": not alive}
