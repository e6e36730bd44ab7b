"""Runs a BPS workflow prepared by :mod:`userbatch.images.bps_service` inside a facility run (kind ``bps``).

The facility's driver calls :func:`execute` with the run's Spark session. The plan (``userbatch_plan.json`` in
the submit directory) lists every job with its expanded command line, parents, ``request_cpus`` and retries.
Jobs run in dependency order, in waves: the jobs that are ready (all parents succeeded) are dealt, as the tasks of
one Spark job, to the run's executors, where each runs its command line with ``bash`` and logs to
``<submit>/jobs/<label>/<job>.<attempt>.{out,err}``. After each wave the state of every job goes to
``userbatch_jobs.json`` (what ``bps report`` reads); jobs of the next wave are marked RUNNING before it starts.

* A failed job is retried, in a later wave, up to its ``number_of_retries`` (BPS's ``numberOfRetries``) unless its
  exit code is in ``retry_unless_exit`` (``retryUnlessExit``); once it has finally failed its descendants are
  PRUNED and the others go on.
* The final job (``finalJob``, ``whenRun: ALWAYS``) runs after everything else could run, whatever the outcome.
* ``request_cpus``: Spark's stage-level scheduling (a ResourceProfile with task cpus) is not available with a
  ``local[N]`` master nor without dynamic allocation, so the executor does the book-keeping itself: a wave holds
  jobs whose ``request_cpus`` (capped at the run's cores) sum to at most the run's cores, so never more jobs run
  at once than the cores the facility reserved allow. Each job is still one Spark task (one task slot); a job
  asking for several cores simply gets fewer neighbours.
* A restart (a new facility run on the same submit directory) keeps the jobs already SUCCEEDED in the state file
  and runs the rest (the final job again).

The result (stored as the run's summary) is ``{"jobs": {state: count}, "failed": [...], "pruned": [...]}``; if
any job failed :class:`BpsJobsFailed` is raised after the state file is written, so the facility run fails.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
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
            "seconds": round(time.time() - started, 3), "host": os.uname().nodename}


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


def _initial_state(plan: dict, previous: dict, run_id: str | None) -> dict:
    """The state at the start of a run: every job pending, except those a previous run finished successfully."""
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
    runs = list(previous.get("runs", [])) + ([run_id] if run_id else [])
    return {"name": plan["name"], "run_id": run_id, "runs": runs, "jobs": jobs, "started": time.time()}


def _descendants(children: dict[str, list[str]], name: str) -> set[str]:
    seen, stack = set(), list(children.get(name, []))
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(children.get(n, []))
    return seen


def _payload(plan: dict, recs: dict, submit: Path, job: dict) -> dict:
    attempt = recs[job["name"]]["attempts"] + 1
    base = submit / "jobs" / job["label"] / f"{job['name']}.{attempt}"
    return {"name": job["name"], "command": job["command"], "attempt": attempt,
            "env": {**plan.get("submit_env", {}), **job.get("env", {})},
            "stdout": str(base) + ".out", "stderr": str(base) + ".err", "cwd": str(submit)}


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
    """Run the workflow in ``bps_spec["submit_path"]`` (see the module docstring)."""
    submit = Path(bps_spec["submit_path"])
    plan = json.loads((submit / PLAN_NAME).read_text())
    state_path = submit / STATE_NAME
    try:
        previous = json.loads(state_path.read_text())
    except (OSError, ValueError):
        previous = {}
    run_id = Path(run_dir).name
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    state = _initial_state(plan, previous, run_id)
    jobs = {j["name"]: j for j in plan["jobs"]}
    final = plan.get("final")
    children: dict[str, list[str]] = {}
    for j in plan["jobs"]:
        for p in j["parents"]:
            children.setdefault(p, []).append(j["name"])
    cores = _cores(spark, bps_spec)
    sc = spark.sparkContext
    recs = state["jobs"]
    _write_state(state_path, state, run_dir)
    say = progress or (lambda msg: log.info("%s", msg))
    total = len(recs)

    def payload(job: dict) -> dict:
        return _payload(plan, recs, submit, job)

    def run_wave(batch: list[dict], wave: int) -> None:
        for job in batch:
            recs[job["name"]]["state"] = "RUNNING"
            recs[job["name"]]["run_id"] = run_id
        _write_state(state_path, state, run_dir)
        done = sum(r["state"] in ("SUCCEEDED", "FAILED", "PRUNED") for r in recs.values())
        say(f"bps wave {wave}: {len(batch)} job(s) running, {done}/{total} done")
        sc.setJobDescription(f"bps {plan['name']} wave {wave}: " + ", ".join(j["name"] for j in batch)[:200])
        results = sc.parallelize([payload(j) for j in batch], len(batch)).map(run_job).collect()
        for res in results:
            job = jobs.get(res["name"]) or final
            rec = recs[res["name"]]
            rec["attempts"] = res["attempt"]
            rec["tries"] = rec.get("tries", 0) + 1
            rec["exit_codes"].append(res["exit_code"])
            rec["seconds"] = res["seconds"]
            if res["exit_code"] == 0:
                rec["state"] = "SUCCEEDED"
                continue
            retryable = res["exit_code"] not in job.get("retry_unless_exit", [])
            if retryable and rec["tries"] <= job.get("number_of_retries", 0):
                rec["state"] = "PENDING"
                log.info("job %s failed (exit %s), try %d: retrying", res["name"], res["exit_code"], rec["tries"])
                continue
            rec["state"], rec["error"] = "FAILED", res["error"][-2000:]
            log.warning("job %s failed (exit %s) after %d tries", res["name"], res["exit_code"], rec["tries"])
            for d in _descendants(children, res["name"]):
                if recs[d]["state"] == "PENDING":
                    recs[d]["state"] = "PRUNED"
        _write_state(state_path, state, run_dir)

    wave = 0
    while True:
        ready = [j for j in plan["jobs"] if recs[j["name"]]["state"] == "PENDING"
                 and all(recs[p]["state"] == "SUCCEEDED" for p in j["parents"])]
        if not ready:
            break
        batch, used = [], 0
        for job in ready:  # plan order is topological; fill the run's cores
            need = min(max(1, int(job.get("request_cpus") or 1)), cores)
            if used + need > cores:
                continue
            batch.append(job)
            used += need
        wave += 1
        run_wave(batch, wave)
    # anything still pending could never run (a parent failed): pruned
    for name, rec in recs.items():
        if rec["state"] == "PENDING" and (final is None or name != final["name"]):
            rec["state"] = "PRUNED"
    failed_main = [n for n, r in recs.items() if r["state"] == "FAILED"]
    if final is not None and bps_spec.get("final_by_facility"):
        say(f"bps {plan['name']}: the final job is left to the facility (it writes the registry)")
    elif final is not None:
        if final.get("when_run", "ALWAYS") == "ALWAYS" or not failed_main:
            while recs[final["name"]]["state"] == "PENDING":
                wave += 1
                run_wave([final], wave)
        else:
            recs[final["name"]]["state"] = "PRUNED"
    state["ended"] = time.time()
    _write_state(state_path, state, run_dir)
    counts: dict[str, int] = {}
    for rec in recs.values():
        counts[rec["state"]] = counts.get(rec["state"], 0) + 1
    failed = sorted(n for n, r in recs.items() if r["state"] == "FAILED")
    pruned = sorted(n for n, r in recs.items() if r["state"] == "PRUNED")
    summary = {"workflow": plan["name"], "submit_path": str(submit), "cores": cores, "waves": wave,
               "jobs": counts, "failed": failed, "pruned": pruned}
    say(f"bps {plan['name']}: {counts}")
    if failed:
        first = recs[failed[0]].get("error", "").strip().splitlines()
        raise BpsJobsFailed(f"{len(failed)} BPS job(s) failed ({', '.join(failed[:5])}"
                            f"{', ...' if len(failed) > 5 else ''}); {len(pruned)} pruned"
                            f"{': ' + first[-1] if first else ''} (logs under {submit / 'jobs'}; "
                            f"'bps report --id {run_id}')")
    return summary
