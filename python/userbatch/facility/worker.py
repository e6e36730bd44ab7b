"""The worker: starts queued runs when their quota and the facility's slots allow, watches them, stops the ones
cancelled or past their time limit, charges what they used, and submits scheduled workflows when due.

One worker per facility database (a file lock under the facility home). ``userbatch serve`` runs one beside the
API; without a server the CLI starts one in the background on submit (:func:`ensure_worker`), which exits once
nothing is queued or running.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select

from ..config import settings
from ..ml.tracking import artifact_root, tracking_uri
from ..tables.db import engine_for, transaction
from . import ledger
from .accounting import usage_of_run
from .config import FacilityConfig, load_config
from .models import RunRow, WorkflowRow
from .runners import SubmitSpec, executor_cores, runner_for, terminate

log = logging.getLogger(__name__)


def lock_path(db_url: str) -> Path:
    key = hashlib.sha256(db_url.encode()).hexdigest()[:16]
    d = settings().home / "workers"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{key}.lock"


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


class Worker:
    def __init__(self, db_url: str | None = None, config: FacilityConfig | None = None):
        self.db_url = db_url or settings().db_url
        self.config = config or load_config()
        self.engine = engine_for(self.db_url)
        self.host = socket.gethostname()
        self.procs: dict[str, subprocess.Popen] = {}
        self._lock_fh = None

    # -------------------------------------------------------------------------------------------- lifecycle
    def acquire(self, block: bool = False) -> bool:
        self._lock_fh = open(lock_path(self.db_url), "a+")  # noqa: SIM115 - held for the worker's life
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            self._lock_fh.close()
            self._lock_fh = None
            return False
        self._lock_fh.seek(0)
        self._lock_fh.truncate()
        self._lock_fh.write(str(os.getpid()))
        self._lock_fh.flush()
        self.reconcile()
        return True

    def shutdown(self) -> None:
        """Stop the runs this worker launched (they would outlive it unwatched) and record them as failed."""
        for run_id, proc in list(self.procs.items()):
            terminate(proc)
            proc.wait()
            self._finish(run_id, proc.returncode, "failed", "the facility worker shut down while it ran")

    def release(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def run(self, until_idle: bool = False, poll_s: float = 0.5, idle_grace_s: float = 3.0,
            stop=None) -> None:
        """Loop until ``stop`` is set (an Event), or — ``until_idle`` — nothing has been queued or running for
        ``idle_grace_s``."""
        idle_since = None
        while stop is None or not stop.is_set():
            busy = self.step()
            if until_idle:
                if busy:
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > idle_grace_s:
                    return
            time.sleep(poll_s)

    def step(self) -> bool:
        """One pass; returns whether anything is still queued or running."""
        self.submit_due_workflows()
        self.reap()
        self.start_queued()
        with transaction(self.engine) as s:
            return bool(s.scalars(select(RunRow.id).where(RunRow.state.in_(("queued", "starting", "running")))
                                  .limit(1)).first())

    # -------------------------------------------------------------------------------------------- starting
    def start_queued(self) -> None:
        slots = self.config.max_concurrent_runs - len(self.procs)
        if slots <= 0:
            return
        with transaction(self.engine) as s:
            queued = list(s.scalars(select(RunRow.id).where(RunRow.state == "queued")
                                    .order_by(RunRow.submitted_at)))
        for run_id in queued:
            if slots <= 0:
                break
            if self._admit_and_start(run_id):
                slots -= 1

    def _admit_and_start(self, run_id: str) -> bool:
        with transaction(self.engine, lock=True) as s:
            run = s.get(RunRow, run_id)
            if run is None or run.state != "queued":
                return False
            if run.cancel_requested:
                self._final(s, run, "cancelled", 0.0, 0.0, "cancelled before it started")
                return False
            try:  # quotas may have been lowered since submit: admit again
                ledger.check_admission(s, self.config, run.user, run.group, run.cores, run.reserved_core_hours,
                                       exclude_run=run.id)
            except ledger.QuotaExceeded as e:
                self._final(s, run, "failed", 0.0, 0.0, f"refused at start: {e}")
                return False
            if not ledger.fits_concurrency(s, self.config, run):
                return False  # stays queued until the user's or group's cores free up
            run.state, run.started_at, run.host, run.stage = "starting", ledger.now(), self.host, "launching"
            spec = self._submit_spec(run)
            run_dir = Path(run.run_dir)
        runner = runner_for(**self.config.runner)
        try:
            proc = runner.launch(spec, run_dir / "driver.log")
        except Exception as e:  # noqa: BLE001 - a launch failure fails the run, not the worker
            with transaction(self.engine, lock=True) as s:
                self._final(s, s.get(RunRow, run_id), "failed", 0.0, 0.0, f"could not launch: {e}")
            return False
        self.procs[run_id] = proc
        with transaction(self.engine) as s:
            run = s.get(RunRow, run_id)
            run.pid, run.state, run.stage = proc.pid, "running", "started"
        log.info("run %s started (pid %d)", run_id, proc.pid)
        return True

    def _submit_spec(self, run: RunRow) -> SubmitSpec:
        spec = json.loads(run.spec)
        s = settings()
        env = {
            "USERBATCH_HOME": str(s.home), "USERBATCH_DB_URL": self.db_url, "USERBATCH_WAREHOUSE": str(s.warehouse),
            "USERBATCH_USER": run.user, "USERBATCH_GROUPS": ",".join(spec.get("groups", [])),
            "USERBATCH_RUN_ID": run.id, "USERBATCH_JOB": f"{run.kind}:{run.name}",
            "USERBATCH_PINS": json.dumps(spec.get("pins", {})),
            "USERBATCH_OUTPUT_MAP": json.dumps(spec.get("output_map", {})),
            "USERBATCH_WRITE_NAMESPACES": ",".join(spec.get("write_namespaces", [])),
            "PYTHONUNBUFFERED": "1",
            # one MLflow store for every run (a run's own directory must not become its tracking store)
            "MLFLOW_TRACKING_URI": tracking_uri(self.config), "USERBATCH_MLFLOW_ARTIFACTS": artifact_root(self.config),
        }
        if os.environ.get("USERBATCH_TEMPLATE_PATH"):
            env["USERBATCH_TEMPLATE_PATH"] = os.environ["USERBATCH_TEMPLATE_PATH"]
        return SubmitSpec(run_id=run.id, run_dir=run.run_dir, user=run.user, group=run.group,
                          queue=self.config.queue_for(run.user, run.group), cores=run.cores,
                          executor_cores=min(run.cores, executor_cores(self.config.runner)),
                          executor_memory=str(self.config.runner.get("executor_memory", "2g")),
                          driver_memory=spec.get("driver_memory", "2g"),
                          spark_conf=spec.get("spark_conf", {}), env=env)

    # -------------------------------------------------------------------------------------------- watching
    def reap(self) -> None:
        for run_id, proc in list(self.procs.items()):
            with transaction(self.engine) as s:
                run = s.get(RunRow, run_id)
                cancel = run.cancel_requested
                over = run.started_at is not None and (
                    ledger.now() - _aware(run.started_at)).total_seconds() > run.max_hours * 3600
                self._update_stage(run)
            if proc.poll() is None and (cancel or over):
                log.info("run %s: %s", run_id, "cancel requested" if cancel else "time limit reached")
                self._stop_remote(run_id)
                terminate(proc)
                proc.wait()
                self._finish(run_id, proc.returncode, "cancelled" if cancel else "failed",
                             "" if cancel else f"stopped at its time limit of {run.max_hours} h")
            elif proc.poll() is not None:
                self._finish(run_id, proc.returncode, None, "")

    def _stop_remote(self, run_id: str) -> None:
        """A cluster-mode application outlives its spark-submit: ask its cluster to stop it first."""
        with transaction(self.engine) as s:
            spec = self._submit_spec(s.get(RunRow, run_id))
        argv = runner_for(**self.config.runner).stop_argv(spec)
        if not argv:
            return
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            log.info("run %s: %s -> exit %d", run_id, " ".join(argv), done.returncode)
        except (OSError, subprocess.SubprocessError) as e:  # the process group is still signalled
            log.warning("run %s: could not run %s: %s", run_id, " ".join(argv), e)

    def _update_stage(self, run: RunRow) -> None:
        path = Path(run.run_dir) / "progress.json"
        with contextlib.suppress(OSError, ValueError):
            p = json.loads(path.read_text())
            run.stage = f"{p['stage']} ({p['tasks_done']}/{p['tasks_total']} tasks)"

    def _finish(self, run_id: str, returncode: int | None, forced_state: str | None, error: str) -> None:
        self.procs.pop(run_id, None)
        with transaction(self.engine, lock=True) as s:
            run = s.get(RunRow, run_id)
            run_dir = Path(run.run_dir)
            result_path, error_path = run_dir / "result.json", run_dir / "error.json"
            if forced_state:
                state = forced_state
            elif returncode == 0 and result_path.exists():
                state = "succeeded"
            else:
                state = "failed"
                if error_path.exists():
                    error = json.loads(error_path.read_text()).get("error", "")
                error = error or f"the driver exited with status {returncode}; see 'userbatch logs {run_id}'"
            if result_path.exists():
                run.result = result_path.read_text()
            app = run_dir / "app_id"
            if app.exists():
                run.app_id = app.read_text().strip()
            run.exit_code = returncode
            usage = usage_of_run(run_dir, end_ms=time.time() * 1000)
            self._final(s, run, state, usage.core_hours, usage.cpu_hours, error)
        log.info("run %s %s; charged %.4f core-hours", run_id, state, usage.core_hours)

    def _final(self, s, run: RunRow, state: str, core_hours: float, cpu_hours: float, error: str) -> None:
        run.state, run.ended_at, run.error = state, ledger.now(), error or run.error
        run.stage = state
        ledger.charge(s, run, core_hours, cpu_hours, "spark-eventlog")

    def reconcile(self) -> None:
        """Runs this host started under an earlier worker (a restarted ``serve``): a live one is adopted and watched
        by its pid; one whose process is gone is finished from the files it left."""
        with transaction(self.engine) as s:
            orphans = [(r.id, r.pid, r.run_dir) for r in s.scalars(select(RunRow).where(
                RunRow.state.in_(("starting", "running")), RunRow.host == self.host)) if r.id not in self.procs]
        for run_id, pid, run_dir in orphans:
            if _pid_alive(pid):
                log.info("run %s: adopting its live process %d", run_id, pid)
                self.procs[run_id] = _Adopted(pid, Path(run_dir))
            else:
                self._finish(run_id, _Adopted(pid, Path(run_dir)).poll(), None,
                             "the worker that ran it stopped and the run's process is gone")

    # -------------------------------------------------------------------------------------------- schedule
    def submit_due_workflows(self) -> None:
        now = datetime.now(timezone.utc)
        with transaction(self.engine) as s:
            due = [(w.id, w.owner) for w in s.scalars(select(WorkflowRow).where(
                WorkflowRow.enabled.is_(True), WorkflowRow.schedule.is_not(None),
                WorkflowRow.next_run_at.is_not(None), WorkflowRow.next_run_at <= now))]
        if not due:
            return
        from .service import Facility, Identity
        from .workflows import next_run

        for wf_id, owner in due:
            fac = Facility(Identity.lookup(owner, self.engine), db_url=self.db_url, config=self.config,
                           start_worker=False)
            try:
                run = fac.run_workflow(wf_id, scheduled=True)
                log.info("workflow %s: scheduled run %s", wf_id, run["id"])
            except Exception as e:  # noqa: BLE001 - a refused scheduled run is logged; the schedule goes on
                log.warning("workflow %s: scheduled run refused: %s", wf_id, e)
            with transaction(self.engine) as s:
                w = s.get(WorkflowRow, wf_id)
                w.next_run_at = next_run(w.schedule, now)


class _Adopted:
    """A run process this worker did not start (so cannot ``wait`` on): watched by pid; its outcome is read from
    the files the driver leaves, since its exit status is lost."""

    def __init__(self, pid: int, run_dir: Path):
        self.pid, self.run_dir, self.returncode = pid, run_dir, None

    def poll(self) -> int | None:
        if self.returncode is None and not _pid_alive(self.pid):
            self.returncode = 0 if (self.run_dir / "result.json").exists() else 1
        return self.returncode

    def wait(self) -> int:
        while self.poll() is None:
            time.sleep(0.2)
        return self.returncode


@contextlib.contextmanager
def running_worker(db_url: str | None = None, config: FacilityConfig | None = None, poll_s: float = 0.3):
    """A worker serving ``db_url`` in a background thread for the duration of a ``with`` block (the demo, tests,
    benchmarks); on exit it stops, and runs it launched that are still going are stopped and recorded as failed."""
    import threading

    worker = Worker(db_url=db_url, config=config)
    if not worker.acquire():
        raise RuntimeError(f"another worker already serves {worker.db_url}")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, kwargs={"stop": stop, "poll_s": poll_s}, daemon=True,
                              name="userbatch-worker")
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(timeout=60)
        worker.shutdown()
        worker.release()


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def ensure_worker(db_url: str) -> bool:
    """Start a background worker for ``db_url`` unless one holds its lock; returns whether one was started."""
    path = lock_path(db_url)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
    logf = open(path.with_suffix(".log"), "ab")  # noqa: SIM115 - handed to the child
    env = dict(os.environ, USERBATCH_DB_URL=db_url)
    subprocess.Popen([sys.executable, "-m", "userbatch.facility.worker", "--until-idle"], stdout=logf,
                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    logf.close()
    return True


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="userbatch-worker")
    ap.add_argument("--until-idle", action="store_true", help="exit once nothing is queued or running")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(name)s] %(message)s")
    w = Worker()
    if not w.acquire():
        log.info("another worker serves %s", w.db_url)
        return 0
    try:
        w.run(until_idle=args.until_idle)
    finally:
        w.shutdown()
        w.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
