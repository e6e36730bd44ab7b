"""The worker: starts queued runs when their quota and the facility's slots allow, watches them, stops the ones
cancelled or past their time limit, charges what they used, and submits scheduled workflows when due.

One worker per facility database (a file lock under the facility home). ``userbatch serve`` runs one beside the
API; without a server the CLI starts one in the background on submit (:func:`ensure_worker`), which exits once
nothing is queued or running.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from importlib.metadata import entry_points
from pathlib import Path

from sqlalchemy import select

from ..cluster.base import SubmitSpec, executor_cores, terminate
from ..cluster.registry import runner_for
from ..config import settings
from ..tables.db import engine_for, transaction
from . import ledger, run_kinds, storage
from .accounting import usage_of_run
from .accounts import credentials, effective_mode
from .config import FacilityConfig, load_config
from .models import RunRow, TokenRow, UserRow, WorkflowRow
from .runfiles import read_bytes, read_json
from .worker_lock import ensure_worker, lock_path  # noqa: F401 - ensure_worker: this module's public API too

#: A run whose worker has not renewed its lease for this long is the orphan of a worker that died (on any host).
LEASE_S = 90.0
#: Slack on a run token's lifetime beyond the run's time limit (the worker revokes it when the run ends anyway).
TOKEN_SLACK_H = 0.25

log = logging.getLogger(__name__)


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
        self.worker_id = f"{self.host[:20]}-{os.getpid()}-{secrets.token_hex(3)}"
        self.procs: dict[str, subprocess.Popen] = {}
        self._lock_fh = None
        self._api = None
        self._leased_at = 0.0
        self.mode = effective_mode(self.config.identity)  # refuses 'os' without root, before anything starts

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
        self._start_run_api()
        self.reconcile()
        return True

    def _start_run_api(self) -> None:
        from .runapi import RunApiServer, socket_path

        s = settings()
        if self.mode == "os" and not runner_for(**self.config.runner).runs_as_owner:
            log.warning("the %s runner is single-tenant: runs execute as the facility's account, not as their "
                        "owners (docs/security.md); use it for one user or a trusted group only",
                        self.config.runner.get("kind"))
        if self.mode == "single-user":
            log.warning("userbatch runs as %s without root: this facility is single-user — every run executes as "
                        "this account and can read what it can", getpass.getuser())
        storage.secure_facility_state(self.config, s.home, self.db_url, s.warehouse)
        mlflow = None
        if not self.config.mlflow_remote:  # a local store: runs reach it through a server
            from .mlflow_service import MlflowServer

            mlflow = MlflowServer(self.config.mlflow_tracking_uri(), self.config.mlflow_artifact_root(),
                                  s.home / "mlflow-server")
        self._api = RunApiServer(self.db_url, self.config, socket_path(self.db_url, s.home), mlflow).start()

    def shutdown(self) -> None:
        """Stop the runs this worker launched (they would outlive it unwatched) and record them as failed."""
        for run_id, proc in list(self.procs.items()):
            terminate(proc)
            proc.wait()
            self._finish(run_id, proc.returncode, "failed", "the facility worker shut down while it ran")

    def release(self) -> None:
        if self._api is not None:
            self._api.stop()
            self._api = None
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
            owner = s.get(UserRow, run.user)
            if owner is None or not owner.active:
                self._final(s, run, "failed", 0.0, 0.0, f"refused at start: user {run.user} is disabled")
                return False
            if not ledger.fits_concurrency(s, self.config, run):
                return False  # stays queued until the user's or group's cores free up
            run.state, run.started_at, run.host, run.stage = "starting", ledger.now(), self.host, "launching"
            run.worker_id, run.heartbeat_at = self.worker_id, ledger.now()
            token = self._run_token(s, run)
            groups = tuple(ledger.groups_of(s, run.user))
            run_dir = Path(run.run_dir)
            try:
                creds = credentials(self.config.identity, run.user, groups) if self.mode == "os" else None
            except Exception as e:  # noqa: BLE001 - no OS account: this run fails, the worker goes on
                self._final(s, run, "failed", 0.0, 0.0, f"could not launch: {e}")
                return False
            spec = self._submit_spec(run, token, creds)
            kind, run_spec = run.kind, json.loads(run.spec)
        runner = runner_for(**self.config.runner)
        try:
            if creds is not None and runner.runs_as_owner:
                self._prepare_run_dir(run_dir, creds, run_spec.get("write_namespaces", []))
            else:
                for sub in ("eventlog", "tmp", "home"):
                    (run_dir / sub).mkdir(exist_ok=True)
            run_kind = run_kinds.get(kind)
            run_kind.before_launch(run_spec, creds if runner.runs_as_owner else None, run_dir)
            proc = run_kind.launch(run_spec, runner, spec, creds, run_dir) or runner.launch(
                spec, run_dir / "driver.log", creds=creds, network=self.config.identity.network == "isolated")
        except Exception as e:  # noqa: BLE001 - a launch failure fails the run, not the worker
            with transaction(self.engine, lock=True) as s:
                self._final(s, s.get(RunRow, run_id), "failed", 0.0, 0.0, f"could not launch: {e}")
            return False
        self.procs[run_id] = proc
        batch_id = getattr(proc, "batch_id", None)
        with transaction(self.engine, lock=True) as s:
            run = s.get(RunRow, run_id)
            run.pid, run.state, run.batch_id = proc.pid, "running", batch_id
            run.stage = getattr(proc, "stage", None) or "started"
        log.info("run %s started (%s)", run_id, f"batch job {batch_id}" if batch_id else f"pid {proc.pid}")
        return True

    def _run_token(self, s, run: RunRow) -> str:
        """A delegated token for ``run``: acts as its owner, only while the run lives (the API checks the run's
        state; the worker revokes it at the end; it expires after the time limit), with no admin scope."""
        from datetime import timedelta

        token = "ubr_" + secrets.token_urlsafe(32)
        s.add(TokenRow(id=uuid.uuid4().hex[:12], user=run.user, digest=hashlib.sha256(token.encode()).hexdigest(),
                       label=f"run {run.id}", created_at=ledger.now(), revoked=False, scope="run", run_id=run.id,
                       expires_at=ledger.now() + timedelta(hours=run.max_hours + TOKEN_SLACK_H)))
        return token

    def _prepare_run_dir(self, run_dir: Path, creds, namespaces: list[str]) -> None:
        """The run's directory becomes its owner's (0700; no other run sees it); the facility's copy of the spec
        stays readable to the run but not writable (the worker reads the spec from the database anyway)."""
        for sub in ("eventlog", "tmp", "home"):
            (run_dir / sub).mkdir(exist_ok=True)
            os.chown(run_dir / sub, creds.uid, creds.gid, follow_symlinks=False)
        os.chown(run_dir, creds.uid, creds.gid, follow_symlinks=False)
        os.chmod(run_dir, storage.RUN_DIR_MODE)
        for f in run_dir.iterdir():  # files the facility wrote at submit (spec.json, the script)
            if f.is_file() and not f.is_symlink():
                os.chmod(f, 0o644)
        warehouse = settings().warehouse
        for ns in namespaces:  # the owner's namespaces exist before the run writes there
            if ns != "*":
                storage.ensure_namespace(self.config, warehouse, ns)

    def _submit_spec(self, run: RunRow, token: str | None = None, creds=None) -> SubmitSpec:
        spec = json.loads(run.spec)
        s = settings()
        from .runapi import socket_path

        env = {
            "USERBATCH_WAREHOUSE": str(s.warehouse),
            "USERBATCH_API_SOCKET": str(socket_path(self.db_url, s.home)),
            "USERBATCH_USER": run.user, "USERBATCH_GROUPS": ",".join(spec.get("groups", [])),
            "USERBATCH_RUN_ID": run.id, "USERBATCH_JOB": f"{run.kind}:{run.name}",
            "USERBATCH_PINS": json.dumps(spec.get("pins", {})),
            "USERBATCH_OUTPUT_MAP": json.dumps(spec.get("output_map", {})),
            "USERBATCH_WRITE_NAMESPACES": ",".join(spec.get("write_namespaces", [])),
            "PYTHONUNBUFFERED": "1",
        }
        env.update(run_environment(self.config))  # what installed parts (MLflow) ask runs to have
        if token:
            env["USERBATCH_RUN_TOKEN"] = token
        if s.template_path:
            env["USERBATCH_TEMPLATE_PATH"] = os.pathsep.join(str(p) for p in s.template_path)
        return SubmitSpec(run_id=run.id, run_dir=run.run_dir, user=run.user, group=run.group,
                          queue=self.config.queue_for(run.user, run.group), cores=run.cores,
                          executor_cores=min(run.cores, executor_cores(self.config.runner)),
                          executor_memory=str(self.config.runner.get("executor_memory", "2g")),
                          max_hours=run.max_hours,
                          driver_memory=spec.get("driver_memory", "2g"),
                          spark_conf=spec.get("spark_conf", {}), env=env,
                          os_user=creds.account if creds else None, uid=creds.uid if creds else None,
                          gid=creds.gid if creds else None, gids=creds.groups if creds else ())

    # -------------------------------------------------------------------------------------------- watching
    def _renew_leases(self) -> None:
        """Renew this worker's lease on its runs (a third of LEASE_S apart: one write, not one per poll)."""
        if not self.procs or time.monotonic() - self._leased_at < LEASE_S / 3:
            return
        with transaction(self.engine, lock=True) as s:
            for run in s.scalars(select(RunRow).where(RunRow.id.in_(list(self.procs)))):
                run.heartbeat_at, run.worker_id = ledger.now(), self.worker_id
        self._leased_at = time.monotonic()

    def reap(self) -> None:
        self._renew_leases()
        for run_id, proc in list(self.procs.items()):
            with transaction(self.engine, lock=True) as s:
                run = s.get(RunRow, run_id)
                cancel = run.cancel_requested
                over = run.started_at is not None and not getattr(proc, "enforces_time_limit", False) and (
                    ledger.now() - ledger.aware(run.started_at)).total_seconds() > run.max_hours * 3600
                self._update_stage(run, getattr(proc, "stage", None))
            if proc.poll() is None and (cancel or over):
                log.info("run %s: %s", run_id, "cancel requested" if cancel else "time limit reached")
                self._stop_remote(run_id)
                terminate(proc)
                proc.wait()
                self._finish(run_id, proc.returncode, "cancelled" if cancel else "failed",
                             "" if cancel else f"stopped at its time limit of {run.max_hours} h")
            elif proc.poll() is not None:
                self._finish(run_id, proc.returncode, None, getattr(proc, "error", "") or "")

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

    def _update_stage(self, run: RunRow, batch_stage: str | None = None) -> None:
        if batch_stage:  # still held by the batch system (pending, and why): its word, not the run's
            run.stage = batch_stage[:200]
            return
        p = read_json(Path(run.run_dir) / "progress.json", limit=64 << 10)
        with contextlib.suppress(KeyError, TypeError, ValueError):
            run.stage = f"{str(p['stage'])[:200]} ({int(p['tasks_done'])}/{int(p['tasks_total'])} tasks)"

    def _finish(self, run_id: str, returncode: int | None, forced_state: str | None, error: str) -> None:
        """Record a run's end. The charge is the worker's own measure (reserved cores x wall time held); what the
        run's files say — its event log, result.json — is read as the run's claim: shown, checked, never charged.
        A run a batch system held (Slurm) is charged what that system accounted (``sacct``'s CPU time: allocated
        cores x elapsed), the same model measured by the system that enforced it; the worker's own measure is kept
        beside it in the result as the cross-check."""
        proc = self.procs.pop(run_id, None)
        after: dict = {}
        if forced_state is None:  # ended by itself: the kind's steps under the facility's authority (bps: final job)
            with transaction(self.engine) as s:
                run = s.get(RunRow, run_id)
                kind, run_spec, run_dir = run.kind, json.loads(run.spec), Path(run.run_dir)
            try:
                after = run_kinds.get(kind).after_run(run_spec, run_dir) or {}
            except Exception as e:  # noqa: BLE001 - a failing facility step fails the run, not the worker
                log.exception("run %s: the facility's steps after it failed", run_id)
                after = {"error": f"{type(e).__name__}: {e}"}
        with transaction(self.engine, lock=True) as s:
            run = s.get(RunRow, run_id)
            run_dir = Path(run.run_dir)
            result = read_json(run_dir / "result.json")
            if forced_state:
                state = forced_state
            elif returncode == 0 and isinstance(result, dict):
                state = "succeeded"
            else:
                state = "failed"
                err = read_json(run_dir / "error.json", limit=256 << 10)
                if isinstance(err, dict):
                    error = str(err.get("error", ""))[:2000]
                error = error or f"the driver exited with status {returncode}; see 'userbatch logs {run_id}'"
            if after.get("error") and state == "succeeded":
                state, error = "failed", str(after["error"])[:2000]
            if isinstance(result, dict):
                result = self._checked_result(s, run, result)
                if after.get("summary") and isinstance(result.get("summary"), dict):
                    result["summary"].update(after["summary"])
                run.result = json.dumps(result, default=str)
            app = read_bytes(run_dir / "app_id", limit=256)
            if app:
                run.app_id = app.decode(errors="replace").strip()[:128]
            run.exit_code = returncode
            ended = ledger.now()
            started = ledger.aware(run.started_at) if run.started_at else ended
            wall_h = max(0.0, (ended - started).total_seconds()) / 3600.0
            claimed = usage_of_run(run_dir, end_ms=time.time() * 1000)
            charge, source = run.cores * wall_h, "wall-clock"
            batch_h = getattr(proc, "core_hours", None)
            if batch_h is not None:
                charge, source = float(batch_h), "slurm-sacct"
                doc = json.loads(run.result or "{}") if run.result else {}
                doc["batch"] = {"system": "slurm", "job_id": getattr(proc, "batch_id", None),
                                "charged_core_hours": charge, "worker_wall_core_hours": run.cores * wall_h,
                                "record": getattr(proc, "record", None)}
                run.result = json.dumps(doc, default=str)
            self._final(s, run, state, charge, claimed.cpu_hours, error,
                        used_core_hours=claimed.core_hours, ended=ended, source=source)
        log.info("run %s %s; charged %.4f core-hours (%s; %d cores x %.4f h held)", run_id, state, charge, source,
                 run.cores, wall_h)

    def _checked_result(self, s, run: RunRow, result: dict) -> dict:
        """Keep only the outputs the facility can confirm: in a namespace the owner may write, a version that
        exists. Anything else the run claimed is listed under ``rejected_outputs`` with the reason."""
        from ..tables import delta
        from ..tables.catalog import Catalog
        from .service import Facility, Identity

        fac = Facility(Identity(run.user, tuple(ledger.groups_of(s, run.user))), db_url=self.db_url,
                       config=self.config, start_worker=False)
        cat = Catalog(db_url=self.db_url, user=run.user, groups=fac.identity.groups)
        kept, rejected = [], []
        outputs = result.get("outputs")
        for out in outputs if isinstance(outputs, list) else []:
            try:
                name, version = str(out["table"]), int(out["version"])
                fac.check_writable(name)
                entry = cat.get(name)
                if entry.format == "delta" and not 0 <= version <= delta.latest_version(entry.location):
                    raise ValueError(f"{name} has no version {version}")
                kept.append({"table": name, "version": version, "rows": int(out.get("rows", 0))})
            except Exception as e:  # noqa: BLE001 - whatever the run wrote, a bad claim is only rejected
                rejected.append({"claim": str(out)[:500], "reason": str(e)[:500]})
        result["outputs"] = kept
        if rejected:
            result["rejected_outputs"] = rejected
            log.warning("run %s: %d output claim(s) rejected", run.id, len(rejected))
        return result

    def _final(self, s, run: RunRow, state: str, core_hours: float, cpu_hours: float, error: str,
               used_core_hours: float | None = None, ended=None, source: str | None = None) -> None:
        run.state, run.ended_at, run.error = state, ended or ledger.now(), error or run.error
        run.stage = state
        for t in s.scalars(select(TokenRow).where(TokenRow.run_id == run.id, TokenRow.revoked.is_(False))):
            t.revoked = True  # the run's delegated token dies with it
        ledger.charge(s, run, core_hours, cpu_hours, source or ("wall-clock" if run.started_at else "never-started"),
                      used_core_hours=used_core_hours)

    def reconcile(self) -> None:
        """Runs left ``starting``/``running`` by an earlier worker: one started on this host whose process lives is
        adopted and watched by its pid; any other whose worker's lease lapsed (that worker died, on this host or
        another) is finished from the files it left."""
        now = ledger.now()
        with transaction(self.engine) as s:
            orphans = [(r.id, r.pid, r.run_dir, r.host, r.batch_id) for r in s.scalars(select(RunRow).where(
                RunRow.state.in_(("starting", "running")))) if r.id not in self.procs and (
                r.host == self.host or r.heartbeat_at is None
                or (now - ledger.aware(r.heartbeat_at)).total_seconds() > LEASE_S)]
        runner = runner_for(**self.config.runner)
        for run_id, pid, run_dir, host, batch_id in orphans:
            if batch_id and hasattr(runner, "adopt"):  # the batch system still holds it: watch it there
                log.info("run %s: adopting batch job %s", run_id, batch_id)
                self.procs[run_id] = runner.adopt(batch_id)
            elif host == self.host and _pid_alive(pid):
                log.info("run %s: adopting its live process %d", run_id, pid)
                self.procs[run_id] = _Adopted(pid, Path(run_dir))
            else:
                self._finish(run_id, _Adopted(pid, Path(run_dir)).poll() if host == self.host else 1, None,
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
            with transaction(self.engine, lock=True) as s:
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


#: Entry-point group of run-environment hooks: ``name = "module:function"``, each ``function(config) -> dict``
#: of variables every run gets (``userbatch.ml.tracking:run_environment`` tells runs where MLflow is). The
#: facility asks installed parts for their environment instead of importing them.
RUN_ENVIRONMENT_GROUP = "userbatch.run_environment"


def run_environment(config) -> dict[str, str]:
    """The environment every run gets from the installed parts' hooks (a broken hook is logged and skipped).

    Parameters
    ----------
    config : FacilityConfig
        The facility config the worker runs under.

    Returns
    -------
    dict of str to str
    """
    env: dict[str, str] = {}
    for ep in entry_points(group=RUN_ENVIRONMENT_GROUP):
        try:
            env.update({str(k): str(v) for k, v in ep.load()(config).items()})
        except Exception as exc:  # noqa: BLE001 - an optional part's hook must not stop every run; say which
            log.warning("run-environment hook %s=%s failed: %s", ep.name, ep.value, exc)
    return env


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
