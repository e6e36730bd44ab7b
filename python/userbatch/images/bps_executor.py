"""Runs a BPS workflow prepared by :mod:`userbatch.images.bps_service` inside a facility run (kind ``bps``).

The facility's driver calls :func:`execute` with the run's Spark session. The plan (``userbatch_plan.json`` in
the submit directory) lists every job with its expanded command line, parents, ``request_cpus`` and retries. A job
is one ``pipetask`` process: ``pre-exec-init-qbb``, ``run-qbb`` of one quantum, or — with ctrl_bps quantum
clustering — ``run-qbb --qgraph-node-id a,b,c`` of a whole cluster of quanta (one process start-up for many
quanta: start-up, not the quanta, dominates small quanta).

**Scheduling** (:func:`run_plan`) is dynamic: a job starts as soon as all its parents have succeeded and enough of
the run's cores are free, and a finished job frees its cores for the next at once; there are no synchronised waves
in which one slow job holds back the others. Ready jobs start in plan order (topological); a job that does not fit
in the free cores blocks those after it (no overtaking), so a job asking for many cores is never starved by a
stream of small ones. Each job runs with ``bash`` and logs to ``<submit>/jobs/<label>/<job>.<attempt>.{out,err}``.
The state of every job goes to ``userbatch_jobs.json`` (what ``bps report`` reads) whenever jobs start or end.

**Placement** — where a started job runs — is a small interface (:class:`Placement`: ``cores``,
``start(payload)`` returning a future, ``close()``) so that the same plan, retries and book-keeping serve other
back-ends. Here, :class:`SparkPlacement` runs each job as a one-task Spark job submitted from a thread of its own
(PySpark's pinned threads: Spark jobs from several threads run side by side in the run's task slots), so the job is
a Spark task of the facility run, in the user's queue, under the run's cores. (:mod:`userbatch.images.bps_slurm`
places a plan differently: all of it at once, as Slurm jobs with dependencies, reusing :func:`run_job` and the
state file's records.)

* A failed job is retried, as soon as a core is free, up to its ``number_of_retries`` (BPS's ``numberOfRetries``)
  unless its exit code is in ``retry_unless_exit`` (``retryUnlessExit``); once it has finally failed its
  descendants are PRUNED and the others go on. A retried cluster re-runs only its unfinished quanta
  (``pipetask run-qbb`` skips quanta whose outputs exist).
* The final job (``finalJob``, ``whenRun: ALWAYS``) runs after everything else could run, whatever the outcome;
  with ``final_by_facility`` it is left to the facility (:func:`run_final`, after the run).
* ``request_cpus``: Spark's stage-level scheduling (a ResourceProfile with task cpus) is not available with a
  ``local[N]`` master nor without dynamic allocation, so the scheduler does the book-keeping itself: the jobs
  running at any moment have ``request_cpus`` (capped at the run's cores) summing to at most the run's cores.
* A restart (a new facility run on the same submit directory) keeps the jobs already SUCCEEDED in the state file
  and runs the rest (the final job again).

The result (stored as the run's summary) is ``{"jobs": {state: count}, "failed": [...], "pruned": [...]}``; if
any job failed :class:`BpsJobsFailed` is raised after the state file is written, so the facility run fails.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import re
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

log = logging.getLogger(__name__)

PLAN_NAME = "userbatch_plan.json"
STATE_NAME = "userbatch_jobs.json"


class BpsJobsFailed(RuntimeError):
    """Some jobs of the workflow failed (after their retries)."""


# ----------------------------------------------------------------------------------------------- on the executors
def run_job(payload: dict) -> dict:
    """Run one job's command line (in a Spark task); never raises: the outcome is in the returned dict."""
    started = time.time()
    out_path, err_path = Path(payload["stdout"]), Path(payload["stderr"])
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        bindir = str(Path(sys.executable).parent)  # the facility's venv: pipetask, butler
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        for key, value in payload.get("env", {}).items():
            env[key] = os.path.expandvars(str(value))
        command = payload["command"]
        if not env.get("CTRL_MPEXEC_DIR"):
            command = command.replace("${CTRL_MPEXEC_DIR}/bin/", "")
        if not env.get("DAF_BUTLER_DIR"):
            command = command.replace("${DAF_BUTLER_DIR}/bin/", "")
        env["USERBATCH_BPS_JOB"] = payload["name"]
        with open(out_path, "w") as out, open(err_path, "w") as err:
            out.write(f"# {command}\n")
            out.flush()
            proc = subprocess.run(["/bin/bash", "-c", command], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                  cwd=payload["cwd"], env=env, preexec_fn=_die_with_parent)
        rc = proc.returncode
        error = "" if rc == 0 else _tail(err_path)
    except Exception as e:  # noqa: BLE001 - a job that cannot start is a failed attempt, reported as such
        rc, error = -1, f"{type(e).__name__}: {e}"
    return {"name": payload["name"], "attempt": payload["attempt"], "exit_code": rc, "error": error,
            "began": started, "seconds": round(time.time() - started, 3), "host": os.uname().nodename}


def _die_with_parent() -> None:
    """In the job's process: be killed when the Spark task's Python worker dies (a cancelled run kills Spark's
    process group; Spark's Python daemon runs in a group of its own)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: rely on the process group
        pass


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


# ----------------------------------------------------------------------------------------------- on the driver
RUN_STATE_NAME = "bps_jobs.json"  # the same state, kept in the facility run's directory: that run's own view


def _write_state(path: Path, state: dict, run_dir: Path | None = None) -> None:
    """Replace the state file(s) atomically. The temporary file is created afresh, never through a link: the
    facility writes here too (the final job's record) in a directory its owner controls."""
    state["updated"] = time.time()
    text = json.dumps(state, indent=1).encode()
    for target in (path, *([Path(run_dir) / RUN_STATE_NAME] if run_dir else [])):
        tmp = target.with_suffix(".tmp")
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(text)
        os.replace(tmp, target)


def initial_state(plan: dict, previous: dict, run_id: str | None) -> dict:
    """The state at the start of a run: every job pending, except those a previous run finished successfully.

    Parameters
    ----------
    plan : dict
        The workflow's plan (``userbatch_plan.json``).
    previous : dict
        The state file as a previous run left it (``{}`` for a first run).
    run_id : str or None
        The facility run starting now.

    Returns
    -------
    dict
        The state file's content: ``{"name", "run_id", "runs", "jobs": {name: record}, "started"}``.
    """
    old = previous.get("jobs", {}) if previous.get("name") == plan["name"] else {}
    final_name = plan["final"]["name"] if plan.get("final") else None
    jobs = {}
    for job in plan["jobs"] + ([plan["final"]] if plan.get("final") else []):
        rec = old.get(job["name"], {})
        kept = rec.get("state") == "SUCCEEDED" and job["name"] != final_name
        jobs[job["name"]] = {
            "label": job["label"],
            "state": "SUCCEEDED" if kept else "PENDING",
            "attempts": rec.get("attempts", 0),  # over all runs: numbers the log files, never overwritten
            "tries": 0,  # in this run: what numberOfRetries limits
            "exit_codes": rec.get("exit_codes", []),
            "run_id": rec.get("run_id") if kept else None,
        }
        if kept and "seconds" in rec:
            jobs[job["name"]]["seconds"] = rec["seconds"]
    runs = list(previous.get("runs", [])) + ([run_id] if run_id else [])
    return {"name": plan["name"], "run_id": run_id, "runs": runs, "jobs": jobs, "started": time.time()}


_initial_state = initial_state  # the name earlier revisions used


def descendants(children: dict[str, list[str]], name: str) -> set[str]:
    """Every job below ``name`` in the graph given as ``{parent: [children]}``."""
    seen, stack = set(), list(children.get(name, []))
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(children.get(n, []))
    return seen


_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")


def log_base(submit: Path, job: dict, attempt: int) -> Path:
    """``<submit>/jobs/<label>/<name>.<attempt>``: where an attempt's ``.out``/``.err`` go. Names and labels are
    BPS's (cluster names come from a user's ``clusterTemplate``): anything but ``[A-Za-z0-9._+=-]`` becomes ``_``,
    so a name can neither leave the directory nor need quoting."""
    label = _UNSAFE.sub("_", job["label"]).lstrip(".") or "_"
    name = _UNSAFE.sub("_", job["name"]).lstrip(".") or "_"
    return submit / "jobs" / label / f"{name}.{attempt}"


def job_payload(plan: dict, recs: dict, submit: Path, job: dict) -> dict:
    """What a placement needs to run the next attempt of ``job``: the input of :func:`run_job`.

    Parameters
    ----------
    plan : dict
        The workflow's plan (its ``submit_env`` goes to every job).
    recs : dict
        The state's job records (``state["jobs"]``): the attempt number continues from them.
    submit : Path
        The submit directory (the jobs' working directory; logs under ``jobs/``).
    job : dict
        The plan's entry for the job.

    Returns
    -------
    dict
        ``{"name", "label", "command", "attempt", "env", "stdout", "stderr", "cwd", "request_cpus"}``.
    """
    attempt = recs[job["name"]]["attempts"] + 1
    base = log_base(submit, job, attempt)
    return {"name": job["name"], "label": job["label"], "command": job["command"], "attempt": attempt,
            "env": {**plan.get("submit_env", {}), **job.get("env", {})},
            "stdout": str(base) + ".out", "stderr": str(base) + ".err", "cwd": str(submit),
            "request_cpus": max(1, int(job.get("request_cpus") or 1))}


_payload = job_payload


def _failed_attempt(payload: dict, error: BaseException) -> dict:
    """A placement that could not run an attempt at all (the Spark job itself failed): a failed attempt."""
    return {"name": payload["name"], "attempt": payload["attempt"], "exit_code": -1,
            "error": f"{type(error).__name__}: {error}"[-2000:], "seconds": 0.0, "host": ""}


# ----------------------------------------------------------------------------------------------- placements
class Placement:
    """Where the scheduler's jobs run. A placement starts one job attempt at a time and reports its outcome.

    ``cores`` is how many cores the scheduler may hand out at once (it never starts jobs whose ``request_cpus``
    exceed the free ones); ``start(payload)`` starts the attempt described by ``payload`` (from
    :func:`job_payload`) without waiting and returns a :class:`concurrent.futures.Future` that resolves to the
    dict :func:`run_job` returns (``name``, ``attempt``, ``exit_code``, ``error``, ``seconds``, ``host``); a future
    that raises counts as a failed attempt (exit code -1). ``close()`` is called once, after the last job, also
    when the scheduler fails.
    """

    cores: int = 1

    def start(self, payload: dict) -> Future:  # pragma: no cover - the interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class SparkPlacement(Placement):
    """Each job attempt is a one-task Spark job (:func:`run_job` in a Python worker), submitted from a driver
    thread of its own, so that several jobs run at once in the run's task slots and a slot is reused as soon as
    its job ends.

    Parameters
    ----------
    spark : SparkSession
        The facility run's session (its ``sparkContext`` is used).
    cores : int
        The run's cores: at most this many jobs (weighted by ``request_cpus``) run at once.
    name : str
        The workflow's name, for Spark's job descriptions (the Spark UI shows which job is which).
    """

    def __init__(self, spark, cores: int, name: str = "bps"):
        self.sc = spark.sparkContext
        self.cores = max(1, int(cores))
        self.name = name
        self._pool = ThreadPoolExecutor(max_workers=self.cores, thread_name_prefix="bps-job")

    def start(self, payload: dict) -> Future:
        return self._pool.submit(self._run, payload)

    def _run(self, payload: dict) -> dict:
        # local properties (the description) are per thread under PySpark's pinned-thread mode
        self.sc.setJobDescription(f"bps {self.name}: {payload['name']} (attempt {payload['attempt']})"[:200])
        return self.sc.parallelize([payload], 1).map(run_job).collect()[0]

    def close(self) -> None:
        self._pool.shutdown(wait=True)


# ----------------------------------------------------------------------------------------------- the scheduler
def _record(rec: dict, res: dict) -> None:
    rec["attempts"] = res["attempt"]
    rec["tries"] = rec.get("tries", 0) + 1
    rec["exit_codes"].append(res["exit_code"])
    rec["seconds"] = res["seconds"]
    if res.get("began"):  # when the process started, by the clock of the host that ran it
        rec["began"] = res["began"]
    if res.get("host"):
        rec["host"] = res["host"]


def run_plan(plan: dict, submit: Path, run_dir: Path, placement: Placement, *, final_by_facility: bool = False,
             progress=None) -> dict:
    """Run every job of ``plan`` through ``placement``, keeping the state file (see the module docstring).

    Parameters
    ----------
    plan : dict
        The workflow's plan, as :func:`userbatch.images.bps_service.read_plan` returns it.
    submit : Path
        The submit directory (state file ``userbatch_jobs.json``, logs under ``jobs/``).
    run_dir : Path
        The facility run's directory: its name is the run id; it keeps the run's own copy of the state.
    placement : Placement
        Where the jobs run; closed before this returns.
    final_by_facility : bool
        Leave the final job PENDING for the facility (:func:`run_final`), which runs it after the run.
    progress : callable, optional
        Called with one-line progress messages.

    Returns
    -------
    dict
        The summary: ``workflow``, ``submit_path``, ``cores``, ``jobs`` ({state: count}), ``failed``, ``pruned``,
        ``attempts`` (job attempts started), ``max_running`` (most jobs running at once).

    Raises
    ------
    BpsJobsFailed
        Some job finally failed (raised after the state file is written).
    """
    submit, run_dir = Path(submit), Path(run_dir)
    state_path = submit / STATE_NAME
    try:
        previous = json.loads(state_path.read_text())
    except (OSError, ValueError):
        previous = {}
    run_id = run_dir.name
    run_dir.mkdir(parents=True, exist_ok=True)
    state = initial_state(plan, previous, run_id)
    recs = state["jobs"]
    order = plan["jobs"]
    index = {j["name"]: i for i, j in enumerate(order)}
    final = plan.get("final")
    children: dict[str, list[str]] = {}
    for j in order:
        for p in j["parents"]:
            children.setdefault(p, []).append(j["name"])
    cores = max(1, int(placement.cores))
    say = progress or (lambda msg: log.info("%s", msg))
    total = len(recs)
    # parents not yet succeeded, per job; a job is ready when it is PENDING and this is 0
    waiting = {j["name"]: sum(recs[p]["state"] != "SUCCEEDED" for p in j["parents"]) for j in order}
    ready = [index[n] for n, w in waiting.items() if w == 0 and recs[n]["state"] == "PENDING"]
    heapq.heapify(ready)
    running: dict[Future, tuple[dict, dict, int]] = {}
    used = attempts = max_running = 0
    _write_state(state_path, state, run_dir)

    def need(job: dict) -> int:
        return min(max(1, int(job.get("request_cpus") or 1)), cores)

    def start(job: dict) -> None:
        nonlocal used, attempts, max_running
        payload = job_payload(plan, recs, submit, job)
        rec = recs[job["name"]]
        rec["state"], rec["run_id"], rec["started"] = "RUNNING", run_id, time.time()
        try:
            fut = placement.start(payload)
        except Exception as e:  # noqa: BLE001 - a job the placement cannot start is a failed attempt
            fut = Future()
            fut.set_exception(e)
        running[fut] = (job, payload, need(job))
        used += need(job)
        attempts += 1
        max_running = max(max_running, len(running))

    def finish(job: dict, res: dict) -> None:
        rec = recs[job["name"]]
        _record(rec, res)
        if res["exit_code"] == 0:
            rec["state"] = "SUCCEEDED"
            for c in children.get(job["name"], []):
                waiting[c] -= 1
                if waiting[c] == 0 and recs[c]["state"] == "PENDING":
                    heapq.heappush(ready, index[c])
            return
        retryable = res["exit_code"] not in job.get("retry_unless_exit", [])
        if retryable and rec["tries"] <= job.get("number_of_retries", 0):
            rec["state"] = "PENDING"
            log.info("job %s failed (exit %s), try %d: retrying", job["name"], res["exit_code"], rec["tries"])
            if job["name"] in index:
                heapq.heappush(ready, index[job["name"]])
            return
        rec["state"], rec["error"] = "FAILED", res.get("error", "")[-2000:]
        log.warning("job %s failed (exit %s) after %d tries", job["name"], res["exit_code"], rec["tries"])
        for d in descendants(children, job["name"]):
            if recs[d]["state"] == "PENDING":
                recs[d]["state"] = "PRUNED"

    def drain(jobs_ready) -> None:
        """Start what is ready and fits, wait for one job to end, record it; until nothing is left to run."""
        nonlocal used
        while True:
            while jobs_ready and used + need(order_or_final(jobs_ready[0])) <= cores:
                start(order_or_final(heapq.heappop(jobs_ready)))
            if not running:
                return
            _write_state(state_path, state, run_dir)
            done_n = sum(r["state"] in ("SUCCEEDED", "FAILED", "PRUNED") for r in recs.values())
            say(f"bps {plan['name']}: {len(running)} job(s) running, {done_n}/{total} done")
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=lambda f: running[f][1]["name"]):
                job, payload, cpus = running.pop(fut)
                used -= cpus
                try:
                    res = fut.result()
                except Exception as e:  # noqa: BLE001 - whatever broke the attempt, it is a failed attempt
                    log.warning("job %s: the placement failed: %s", payload["name"], e)
                    res = _failed_attempt(payload, e)
                finish(job, res)

    final_index = len(order)

    def order_or_final(i: int) -> dict:
        return order[i] if i < final_index else final

    try:
        drain(ready)
        # anything still pending could never run (a parent failed): pruned
        for name, rec in recs.items():
            if rec["state"] == "PENDING" and (final is None or name != final["name"]):
                rec["state"] = "PRUNED"
        failed_main = [n for n, r in recs.items() if r["state"] == "FAILED"]
        if final is not None and final_by_facility:
            say(f"bps {plan['name']}: the final job is left to the facility (it writes the registry)")
        elif final is not None:
            if final.get("when_run", "ALWAYS") == "ALWAYS" or not failed_main:
                while recs[final["name"]]["state"] == "PENDING":  # retried like any job
                    drain([final_index])
            else:
                recs[final["name"]]["state"] = "PRUNED"
    finally:
        placement.close()
    state["ended"] = state["executor_ended"] = time.time()  # run_final moves "ended" on; this one stays
    _write_state(state_path, state, run_dir)
    counts: dict[str, int] = {}
    for rec in recs.values():
        counts[rec["state"]] = counts.get(rec["state"], 0) + 1
    failed = sorted(n for n, r in recs.items() if r["state"] == "FAILED")
    pruned = sorted(n for n, r in recs.items() if r["state"] == "PRUNED")
    summary = {"workflow": plan["name"], "submit_path": str(submit), "cores": cores, "attempts": attempts,
               "max_running": max_running, "jobs": counts, "failed": failed, "pruned": pruned}
    say(f"bps {plan['name']}: {counts}")
    if failed:
        first = recs[failed[0]].get("error", "").strip().splitlines()
        raise BpsJobsFailed(f"{len(failed)} BPS job(s) failed ({', '.join(failed[:5])}"
                            f"{', ...' if len(failed) > 5 else ''}); {len(pruned)} pruned"
                            f"{': ' + first[-1] if first else ''} (logs under {submit / 'jobs'}; "
                            f"'bps report --id {run_id}')")
    return summary


def datastore_run_dir(plan: dict) -> Path | None:
    """Where the output run's files go in the repository's file datastore (``<repo>/<output run>``), or None."""
    prov = plan.get("provenance") or {}
    butler, run = prov.get("butler"), prov.get("output_run")
    if not butler or not run or "://" in str(butler):
        return None
    root = Path(butler)
    root = root.parent if root.suffix in (".yaml", ".yml") else root
    return root / str(run)


def graph_collections(path: str | Path) -> tuple[str | None, str | None]:
    """(output run, output chain) a QuantumGraph file says its outputs go to — what ``aggregate-graph`` writes.

    Read from the header alone, importing no task (``DO_NOT_IMPORT``, as ``aggregate-graph`` itself reads it):
    the file is its submitter's, and importing its tasks or loading its configs would run their code here."""
    if str(path).endswith(".qgraph"):  # the older format
        from lsst.pipe.base import QuantumGraph

        header = QuantumGraph.readHeader(str(path))
        meta = (json.loads(header) if header else {}).get("metadata") or {}
        return meta.get("output_run"), meta.get("output")
    from lsst.pipe.base.pipeline_graph import TaskImportMode
    from lsst.pipe.base.quantum_graph import PredictedQuantumGraph

    with PredictedQuantumGraph.open(str(path), import_mode=TaskImportMode.DO_NOT_IMPORT) as reader:
        return reader.header.output_run, reader.header.output


def final_command(final: dict) -> list[str]:
    """The final job as the facility runs it: built from the facility's own copy of the graph and the repository,
    never from the plan's text (which its owner can edit)."""
    butler = Path(sys.executable).with_name("butler")
    return [str(butler) if butler.exists() else "butler", "aggregate-graph", final["qgraph"], final["butler"],
            "-j", "1", "--register-dataset-types", "--update-output-chain"]


def _copy_into(root: Path, dirs: list[str], name: str, data: bytes) -> None:
    """Write ``root/dirs.../name`` as the facility in a tree its owner controls: every directory is opened without
    following a link, the file is created afresh (O_EXCL, O_NOFOLLOW)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    fd = os.open(root, flags)
    try:
        for part in dirs:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            nfd = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
        try:
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd)
        with os.fdopen(out, "wb") as fh:
            fh.write(data)
    finally:
        os.close(fd)


def run_final(bps_spec: dict, run_dir: Path) -> dict:
    """The workflow's final job, run by the facility (it writes the registry) after the run's quanta ran as their
    owner: the command is :func:`final_command` of what the facility recorded at submit (``bps_spec["final"]``);
    its logs go to the facility's directory; the state file and the run's copy are brought up to date.

    Returns ``{"error": ...}`` when the final job failed, ``{"summary": {...}}`` with the job counts after it."""
    final = bps_spec.get("final")
    if not final:
        return {}
    submit = Path(bps_spec["submit_path"])
    state_path = submit / STATE_NAME
    try:
        with os.fdopen(os.open(state_path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
            state = json.loads(fh.read(64 << 20))
        recs = state["jobs"]
        rec = recs[final["name"]]
    except (OSError, ValueError, KeyError, TypeError):
        return {"error": f"the workflow's state file {state_path} is unreadable; the final job did not run"}
    if rec.get("state") != "PENDING":
        return {}
    if any(r.get("state") == "RUNNING" for r in recs.values()):
        return {"error": "jobs were still running when the run ended; the final job did not run"}
    failed = [n for n, r in recs.items() if r.get("state") == "FAILED"]
    if final.get("when_run", "ALWAYS") != "ALWAYS" and failed:
        rec["state"] = "PRUNED"
    else:
        attempt = int(rec.get("attempts", 0)) + 1
        logs = Path(final["log_dir"]) / f"{final['name']}.{Path(run_dir).name}.{attempt}"
        started = time.time()
        with open(f"{logs}.out", "wb") as out, open(f"{logs}.err", "wb") as err:
            code = subprocess.run(final_command(final), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                  cwd=final["log_dir"]).returncode
        rec.update(attempts=attempt, tries=int(rec.get("tries", 0)) + 1, seconds=time.time() - started,
                   run_id=Path(run_dir).name, state="SUCCEEDED" if code == 0 else "FAILED")
        rec.setdefault("exit_codes", []).append(code)
        if code != 0:
            rec["error"] = _tail(Path(f"{logs}.err"), 20)[-2000:]
        for ext in ("out", "err"):  # beside the other jobs' logs, where bps report and the user look
            _copy_into(submit, ["jobs", final["label"]], f"{final['name']}.{attempt}.{ext}",
                       Path(f"{logs}.{ext}").read_bytes())
    state["ended"] = time.time()
    _write_state(state_path, state)
    copy = Path(run_dir) / RUN_STATE_NAME
    if copy.is_file() and not copy.is_symlink():
        _write_state(copy, state)
    counts: dict[str, int] = {}
    for r in recs.values():
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    out: dict = {"summary": {"jobs": counts, "failed": sorted(n for n, r in recs.items() if r["state"] == "FAILED")}}
    if rec["state"] == "FAILED":
        out["error"] = f"the final job {final['name']} failed: {rec.get('error', '').strip()[-300:]}"
    return out


def _cores(spark, bps_spec: dict) -> int:
    if bps_spec.get("cores"):
        return max(1, int(bps_spec["cores"]))
    return max(1, int(spark.sparkContext.defaultParallelism))


def execute(spark, bps_spec: dict, run_dir: Path, progress=None) -> dict:
    """Run the workflow in ``bps_spec["submit_path"]`` as Spark tasks of the facility run (see the module
    docstring): :func:`run_plan` with a :class:`SparkPlacement` on the run's cores.

    Parameters
    ----------
    spark : SparkSession
        The facility run's session.
    bps_spec : dict
        The run's ``bps`` spec: ``submit_path``, ``cores``, ``final_by_facility``.
    run_dir : Path
        The facility run's directory (its name is the run id).
    progress : callable, optional
        Called with one-line progress messages.

    Returns
    -------
    dict
        :func:`run_plan`'s summary.
    """
    submit = Path(bps_spec["submit_path"])
    plan = json.loads((submit / PLAN_NAME).read_text())
    placement = SparkPlacement(spark, _cores(spark, bps_spec), plan["name"])
    return run_plan(plan, submit, Path(run_dir), placement, final_by_facility=bool(bps_spec.get("final_by_facility")),
                    progress=progress)
