"""The Spark History Server from the pyspark wheel, over the runs' event logs: a run's Spark UI after it ended.

Each run writes its event log into its own directory (``RUN_DIR/eventlog/<app id>``,
:func:`userbatch.cluster.base.event_log_conf`), where accounting reads it. The History Server reads one directory,
so :func:`link_event_logs` keeps a directory of symbolic links to them (``$USERBATCH_HOME/history``), and
:func:`start` runs ``spark-class org.apache.spark.deploy.history.HistoryServer`` over it, bound to the loopback
interface only. ``userbatch serve`` starts it beside the API, refreshes the links while it serves and stops it when
it stops (:func:`userbatch.facility.api.serve`). A run's page links to :func:`history_url`.

Runs of other OS users (multi-user mode) keep their run directory ``0700``: the History Server runs as the
facility account, which reads them when it is root; a log it cannot read is skipped with a warning, not linked.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..errors import UserbatchError

log = logging.getLogger(__name__)

#: the History Server's default port (Spark's own default)
DEFAULT_PORT = 18080
#: it listens on the loopback interface only
HOST = "127.0.0.1"
HISTORY_CLASS = "org.apache.spark.deploy.history.HistoryServer"


def history_url(app_id: str, port: int = DEFAULT_PORT) -> str:
    """The History Server's page of one Spark application.

    Parameters
    ----------
    app_id : str
        The application id (``local-...``, ``app-...``, ``application_...``).
    port : int
        The History Server's port.

    Returns
    -------
    str
        ``http://127.0.0.1:<port>/history/<app_id>/jobs/``.
    """
    return f"http://{HOST}:{port}/history/{quote(app_id, safe='')}/jobs/"


def link_event_logs(runs_root: Path, history_dir: Path) -> int:
    """Link every run's event log (``runs_root/<run>/eventlog/<file>``, or a rolling log's ``eventlog_v2_*``
    directory) into ``history_dir``, once.

    Parameters
    ----------
    runs_root : Path
        The directory holding one directory per run.
    history_dir : Path
        The History Server's log directory (created).

    Returns
    -------
    int
        How many links were made now; logs already linked, and logs this process cannot read, are not counted.
    """
    history_dir.mkdir(parents=True, exist_ok=True)
    made = 0
    for ev in sorted(Path(runs_root).glob("*/eventlog")) if Path(runs_root).is_dir() else []:
        if not os.access(ev, os.R_OK | os.X_OK):
            log.warning("cannot read %s: the History Server will not show that run", ev)
            continue
        for f in ev.iterdir():
            link = history_dir / f.name
            rolling = f.is_dir() and f.name.startswith("eventlog_v2_")  # a rolling log is a directory
            if link.is_symlink() or link.exists() or not (f.is_file() or rolling) or f.name.startswith("."):
                continue
            if not os.access(f, os.R_OK):
                log.warning("cannot read %s: the History Server will not show that run", f)
                continue
            link.symlink_to(f.resolve())
            made += 1
    return made


def spark_class() -> Path:
    """``spark-class`` of the pyspark wheel in this environment."""
    import pyspark

    exe = Path(pyspark.__file__).parent / "bin" / "spark-class"
    if not exe.is_file():
        raise UserbatchError(f"no spark-class in the pyspark wheel ({exe}): reinstall pyspark")
    return exe


@dataclass
class HistoryServer:
    """A running History Server: its process, port and log directory."""

    proc: subprocess.Popen
    port: int
    log_dir: Path
    output: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def start(log_dir: Path, port: int = DEFAULT_PORT, *, output: Path | None = None, update_interval_s: int = 10,
          wait_s: float = 90.0) -> HistoryServer:
    """Start the History Server over ``log_dir`` on ``127.0.0.1:port`` and wait until it answers.

    Parameters
    ----------
    log_dir : Path
        The directory of event logs (``spark.history.fs.logDirectory``).
    port : int
        ``spark.history.ui.port``; it must be free.
    output : Path, optional
        Where its stdout and stderr go (default ``log_dir/../history-server.log``).
    update_interval_s : int
        How often it looks for new logs (``spark.history.fs.update.interval``).
    wait_s : float
        How long to wait for it to answer.

    Returns
    -------
    HistoryServer
        The running server; :func:`stop` stops it.
    """
    log_dir = Path(log_dir).resolve()
    if not log_dir.is_dir():
        raise UserbatchError(f"no event-log directory {log_dir}")
    if _answers(port):
        raise UserbatchError(f"port {port} is in use: pick another History Server port (--history-port)")
    output = output or log_dir.parent / "history-server.log"
    exe = spark_class()
    opts = [f"-Dspark.history.fs.logDirectory={log_dir.as_uri()}", f"-Dspark.history.ui.port={port}",
            f"-Dspark.history.fs.update.interval={int(update_interval_s)}s", "-Dspark.ui.reverseProxy=false"]
    env = {**os.environ, "SPARK_HOME": str(exe.parent.parent), "SPARK_LOCAL_IP": HOST,
           "SPARK_PUBLIC_DNS": HOST, "SPARK_HISTORY_OPTS": " ".join(opts),
           "SPARK_NO_DAEMONIZE": "1"}
    with open(output, "ab") as out:
        proc = subprocess.Popen([str(exe), HISTORY_CLASS], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = HistoryServer(proc, port, log_dir, output)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserbatchError(f"the History Server exited with status {proc.returncode} (it needs Java); "
                                 f"see {output}")
        if _answers(port):
            log.info("Spark History Server at %s over %s (pid %d)", server.url, log_dir, proc.pid)
            return server
        time.sleep(0.5)
    stop(server)
    raise UserbatchError(f"the History Server did not answer on port {port} within {wait_s:.0f} s; see {output}")


def stop(server: HistoryServer, timeout_s: float = 20.0) -> None:
    """Stop the History Server (its whole process group): SIGTERM, then SIGKILL after ``timeout_s``.

    Parameters
    ----------
    server : HistoryServer
        What :func:`start` returned.
    timeout_s : float
        How long to wait after SIGTERM.
    """
    if server.proc.poll() is None:
        try:
            os.killpg(server.proc.pid, signal.SIGTERM)
            server.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=timeout_s)
        except ProcessLookupError:  # it ended between poll and kill
            pass
    log.info("Spark History Server on port %d stopped", server.port)
