#!/usr/bin/env python
"""Image pipelines through the userbatch BPS WMS plugin vs plain ``pipetask run -j 2`` (and ``-j 1``): quanta/s.

Same inputs on both sides: a simulated butler repository (``userbatch.images.sim_repo.build_repo``, ``--visits`` x
``--detectors`` detector-visits, default 2 x 3, built once per run in a temporary directory) and one of the
repository's pipelines (``--pipeline``, default ``background``: three independent tasks per (visit, detector), so
3 x V x D quanta).

* **pipetask**: ``pipetask run -b REPO -i INPUT -o u/bench/pipetask_jN -p PIPE -j N --register-dataset-types``,
  for N = 2 and N = 1, timed wall-clock (QuantumGraph build included); quanta from pipetask's own
  ``Executed N quanta successfully`` log line. Note: with ``-j`` > 1 pipetask's MP executor starts a fresh
  ``spawn`` Python process per quantum (each re-imports the middleware and the tasks), with ``-j 1`` every quantum
  runs in the one process; on small quanta that makes ``-j 2`` much slower than ``-j 1``.
* **userbatch**: a facility in the temporary directory (SQLite, generous quota) with a ``Worker`` in a thread;
  ``userbatch.images.bridge.submit({...}, facility=..., submit_root=...)`` with ``cores=2`` (= ``bps submit``:
  QuantumGraph build + prepare + facility submit), then ``Facility.wait``. Timed: (a) the submit call, (b) submit
  returned -> run succeeded. Per-job records (seconds, state) from the submit directory's ``userbatch_jobs.json``
  (the executor's state file); quanta = jobs other than ``pipetaskInit`` and ``finalJob``.

Definitions (printed again with the table):

* ``*_quanta_per_s`` = quanta / end-to-end wall time (pipetask: the whole ``pipetask run``; userbatch: from the
  ``bridge.submit`` call to the run's ``succeeded``, i.e. graph build + queueing + Spark start-up + jobs).
* Spark start-up = the executor's state-file ``started`` (the driver entered the BPS executor, the session is up)
  minus the facility run's ``started_at`` (the worker launched spark-submit).
* ``overhead_per_quantum_s`` = (facility run wall ``started_at`` -> ``ended_at`` minus Spark start-up) / quanta:
  the run's wall seconds per quantum once Spark is up (init and final jobs included). Also printed: the mean
  per-quantum job time (one ``pipetask run-qbb`` process each) against the in-task time pipetask logs
  (``Execution of task ... took X seconds``), whose difference is what a quantum pays for its own process.

Checks (exit 1 otherwise): both pipetask runs and the BPS run produce the same number of ``--check-type``
datasets (default ``ub_background``), and the same number of quanta.

Last line: ``RESULT ...``. Run from the repository root:
``PATH=$PWD/.venv/bin:$PATH .venv/bin/python bench/bps.py`` (~3 min at the defaults on 2 cores, 18 quanta;
``--detectors 4``: 24 quanta, ~4 min).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
BIN = Path(sys.executable).parent

CONFIG = """
capacity: {cores: 1000, user_fraction: 0.5}
defaults:
  user:  {core_hours: 1000, max_cores: 16, storage_gb: 100}
  group: {core_hours: 1000, max_cores: 16, storage_gb: 100}
runs: {max_concurrent: 2, default_cores: 2, default_max_hours: 1.0}
"""
EXECUTED = re.compile(r"Executed (\d+) quanta successfully, (\d+) failed")
TOOK = re.compile(r"Execution of task '[^']+' on quantum .* took ([0-9.]+) seconds")
NOT_QUANTA = ("pipetaskInit", "finalJob")


def _epoch(iso: str) -> float:
    t = datetime.fromisoformat(iso)
    if t.tzinfo is None:  # SQLite keeps the UTC wall time without its zone
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def count_datasets(repo: str, dataset_type: str, collection: str) -> int:
    from lsst.daf.butler import Butler, MissingCollectionError, MissingDatasetTypeError

    butler = Butler.from_config(repo)
    try:
        try:
            return len(butler.query_datasets(dataset_type, collections=collection, explain=False, limit=None))
        except (MissingCollectionError, MissingDatasetTypeError):
            return 0
    finally:
        butler.close()


def run_pipetask(repo: str, inputs: str, pipe: Path, jobs: int, work: Path) -> dict:
    out = f"u/bench/pipetask_j{jobs}"
    log = work / f"pipetask_j{jobs}.log"
    cmd = [str(BIN / "pipetask"), "run", "-b", repo, "-i", inputs, "-o", out, "-p", str(pipe), "-j", str(jobs),
           "--register-dataset-types"]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        p = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=work, check=False)
    wall = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"pipetask -j {jobs} failed (exit {p.returncode}); log {log}:\n" + text[-3000:])
    m = EXECUTED.findall(text)
    quanta = int(m[-1][0]) if m else 0
    task_s = [float(x) for x in TOOK.findall(text)]
    return {"jobs": jobs, "output": out, "wall_s": wall, "quanta": quanta, "task_s_sum": sum(task_s),
            "task_s_n": len(task_s), "log": str(log)}


def run_bps(repo: str, inputs: str, pipe: Path, cores: int, work: Path, timeout_s: float) -> dict:
    from userbatch.facility.config import load_config
    from userbatch.facility.service import Facility, Identity
    from userbatch.facility.worker import Worker
    from userbatch.images.bridge import submit
    from userbatch.tables.db import engine_for

    db_url = os.environ["USERBATCH_DB_URL"]
    cfg = load_config()
    fac = Facility(Identity.lookup("bench", engine_for(db_url), cfg), db_url=db_url, config=cfg, start_worker=False)
    worker = Worker(db_url=db_url, config=cfg)
    if not worker.acquire():
        raise RuntimeError("could not acquire the facility worker lock")
    stop = threading.Event()
    th = threading.Thread(target=worker.run, kwargs={"stop": stop, "poll_s": 0.2}, daemon=True)
    th.start()
    submit_root = work / "submit"
    try:
        t0 = time.perf_counter()
        run = submit({"pipeline": str(pipe), "butler": repo, "inputs": [inputs], "name": "bench_bps",
                      "cores": cores, "max_hours": 1.0, "retries": 0}, facility=fac, submit_root=submit_root)
        t_submit = time.perf_counter() - t0
        done = fac.wait(run["id"], timeout_s=timeout_s, poll_s=0.2)
        t_done = time.perf_counter() - t0
        if done["state"] != "succeeded":
            raise RuntimeError(f"BPS run {run['id']} ended {done['state']}: {done.get('error')}\n"
                               f"{fac.logs(run['id'], tail=60)}")
    finally:
        stop.set()
        th.join(timeout=60)
        worker.shutdown()
        worker.release()
    submit_dir = submit_root / "bench_bps"
    state = json.loads((submit_dir / "userbatch_jobs.json").read_text())
    jobs = state["jobs"]
    quantum_jobs = {n: j for n, j in jobs.items() if j["label"] not in NOT_QUANTA}
    other = {j["label"]: j.get("seconds") for j in jobs.values() if j["label"] in NOT_QUANTA}
    # in-task time of each quantum, as run-qbb logs it in the job's own log files
    task_s = []
    for f in (submit_dir / "jobs").glob("*/*.*"):
        if f.suffix in (".out", ".err"):
            task_s += [float(x) for x in TOOK.findall(f.read_text(errors="replace"))]
    started, ended = _epoch(done["started_at"]), _epoch(done["ended_at"])
    return {"id": run["id"], "output": "u/bench/bench_bps", "submit_s": t_submit, "submit_to_done_s": t_done - t_submit,
            "end_to_end_s": t_done, "queue_s": started - _epoch(done["submitted_at"]), "run_wall_s": ended - started,
            "spark_startup_s": state["started"] - started, "executor_s": state["ended"] - state["started"],
            "after_executor_s": ended - state["ended"], "quanta": len(quantum_jobs),
            "states": sorted({j["state"] for j in jobs.values()}),
            "quantum_job_s": [j["seconds"] for j in quantum_jobs.values()], "init_s": other.get("pipetaskInit"),
            "final_s": other.get("finalJob"), "task_s_sum": sum(task_s), "task_s_n": len(task_s),
            "charged_core_s": (done.get("charged_core_hours") or 0) * 3600, "submit_dir": str(submit_dir)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--visits", type=int, default=2)
    ap.add_argument("--detectors", type=int, default=3)
    ap.add_argument("--pipeline", default="background", help="a pipelines/ name or a YAML path (default background)")
    ap.add_argument("--check-type", default="ub_background", help="output dataset type counted on both sides")
    ap.add_argument("--cores", type=int, default=2, help="BPS run cores and pipetask -j of the main peer")
    ap.add_argument("--no-j1", action="store_true", help="skip the pipetask -j 1 run")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for the BPS run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--json", help="write every measurement here")
    args = ap.parse_args()

    pipe = Path(args.pipeline)
    if not pipe.is_file():
        pipe = ROOT / "pipelines" / f"{args.pipeline}.yaml"
    if not pipe.is_file():
        print(f"no pipeline {args.pipeline!r}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="ub-bench-bps-"))
    os.environ.update(
        USERBATCH_HOME=str(work / "home"), USERBATCH_USER="bench", USERBATCH_DB_URL=f"sqlite:///{work / 'facility.db'}",
        USERBATCH_WAREHOUSE=str(work / "warehouse"), USERBATCH_FACILITY_CONFIG=str(work / "facility.yaml"),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "python"), os.environ.get("PYTHONPATH")) if p))
    os.environ.pop("USERBATCH_API_URL", None)
    (work / "home").mkdir()
    (work / "facility.yaml").write_text(CONFIG)
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "python/userbatch"],
                               capture_output=True, text=True, check=False).stdout.strip()
        print(f"== BPS plugin vs pipetask: {args.visits} visits x {args.detectors} detectors, pipeline {pipe.name} ==")
        print(f"vm: {os.cpu_count()} cores, load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
              f"Python {sys.version.split()[0]}; userbatch code measured: git {rev}"
              + (" (+ uncommitted changes in python/userbatch)" if dirty else "") + f"; work dir {work}")
        from userbatch.images.sim_repo import build_repo

        t0 = time.perf_counter()
        info = build_repo(work / "repo", n_visits=args.visits, n_detectors=args.detectors)
        print(f"repo built in {time.perf_counter() - t0:.1f} s ({len(info.visits)} visits x {len(info.detectors)} "
              f"detectors), input collection {info.input_collection}", flush=True)
        results: dict = {}
        print(f"pipetask run -j {args.cores} ...", flush=True)
        results["pipetask_j2"] = pj2 = run_pipetask(info.root, info.input_collection, pipe, args.cores, work)
        pj1 = None
        if not args.no_j1:
            print("pipetask run -j 1 ...", flush=True)
            results["pipetask_j1"] = pj1 = run_pipetask(info.root, info.input_collection, pipe, 1, work)
        print(f"bps submit (userbatch plugin, cores={args.cores}) ...", flush=True)
        results["bps"] = b = run_bps(info.root, info.input_collection, pipe, args.cores, work, args.timeout)

        counts = {"pipetask_j2": count_datasets(info.root, args.check_type, pj2["output"]),
                  "bps": count_datasets(info.root, args.check_type, b["output"])}
        if pj1:
            counts["pipetask_j1"] = count_datasets(info.root, args.check_type, pj1["output"])
        results["counts"] = counts
        quanta = b["quanta"]

        def rate(n, s):
            return n / s if s > 0 else float("nan")

        qj = b["quantum_job_s"]
        mean_job = sum(qj) / len(qj) if qj else float("nan")
        overhead = (b["run_wall_s"] - b["spark_startup_s"]) / quanta if quanta else float("nan")
        rows = [
            (f"pipetask run -j {args.cores} (graph build included)", pj2["wall_s"], pj2["quanta"],
             rate(pj2["quanta"], pj2["wall_s"])),
        ]
        if pj1:
            rows.append(("pipetask run -j 1 (graph build included)", pj1["wall_s"], pj1["quanta"],
                         rate(pj1["quanta"], pj1["wall_s"])))
        rows += [
            ("userbatch BPS: submit -> succeeded (end to end)", b["end_to_end_s"], quanta,
             rate(quanta, b["end_to_end_s"])),
            ("  (a) bps submit: graph build + prepare + queue", b["submit_s"], None, None),
            ("  (b) submit returned -> succeeded", b["submit_to_done_s"], None, None),
            ("      worker pick-up (run submitted_at -> started_at)", b["queue_s"], None, None),
            ("      facility run wall (started_at -> ended_at)", b["run_wall_s"], None, None),
            ("        Spark start-up (started_at -> executor start)", b["spark_startup_s"], None, None),
            ("        executor: all jobs, init + quanta + final", b["executor_s"], None, None),
            ("        after executor (driver exit, charge)", b["after_executor_s"], None, None),
            ("      pipetaskInit job", b["init_s"] or float("nan"), None, None),
            ("      finalJob (registers outputs)", b["final_s"] or float("nan"), None, None),
            ("      quantum jobs: mean per job (one run-qbb each)", mean_job, None, None),
        ]
        w = max(len(r[0]) for r in rows)
        print()
        print(f"{'what':<{w}}  {'seconds':>8}  {'quanta':>6}  {'quanta/s':>8}")
        print(f"{'-' * w}  {'-' * 8}  {'-' * 6}  {'-' * 8}")
        for name, s, n, r in rows:
            print(f"{name:<{w}}  {s:8.2f}  {'' if n is None else n:>6}  {'' if r is None else f'{r:8.3f}':>8}")
        print()
        if b["task_s_n"]:
            print(f"in-task time (pipetask's 'took X seconds'): BPS jobs {b['task_s_sum']:.1f} s over {b['task_s_n']} "
                  f"quanta ({b['task_s_sum'] / b['task_s_n']:.3f} s each); per-quantum job {mean_job:.2f} s, so "
                  f"~{mean_job - b['task_s_sum'] / b['task_s_n']:.2f} s per quantum is run-qbb process start-up, "
                  "butler and graph loading")
        for p in (pj2, pj1):
            if p and p["task_s_n"]:
                print(f"pipetask -j {p['jobs']}: in-task {p['task_s_sum']:.1f} s over {p['task_s_n']} quanta; wall "
                      f"{p['wall_s']:.1f} s ({p['wall_s'] / max(p['quanta'], 1):.2f} s per quantum)")
        print(f"overhead_per_quantum_s = (facility run wall {b['run_wall_s']:.1f} s - Spark start-up "
              f"{b['spark_startup_s']:.1f} s) / {quanta} quanta = {overhead:.2f} s (run wall per quantum once Spark "
              f"is up, on {args.cores} cores; init and final jobs included)")
        print(f"BPS run charged {b['charged_core_s']:.1f} core-s; job states {b['states']}")
        print(f"{args.check_type} datasets: " + ", ".join(f"{k} {v}" for k, v in counts.items())
              + f"; quanta: pipetask -j {args.cores} {pj2['quanta']}" + (f", -j 1 {pj1['quanta']}" if pj1 else "")
              + f", BPS {quanta}")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        ok = len(set(counts.values())) == 1 and min(counts.values()) > 0
        ok &= pj2["quanta"] == quanta and (pj1 is None or pj1["quanta"] == quanta)
        if not ok:
            print("FAILED: the sides differ in output datasets or quanta")
            return 1
        print("same number of output datasets and quanta on every side: YES")
        b_rate, j2_rate = rate(quanta, b["end_to_end_s"]), rate(pj2["quanta"], pj2["wall_s"])
        j1_rate = rate(pj1["quanta"], pj1["wall_s"]) if pj1 else float("nan")
        print(f"RESULT bps_quanta_per_s={b_rate:.3g} pipetask_j2_quanta_per_s={j2_rate:.3g} "
              f"bps_vs_pipetask_j2_ratio={b_rate / j2_rate:.3g} pipetask_j1_quanta_per_s={j1_rate:.3g} "
              f"overhead_per_quantum_s={overhead:.3g} quanta={quanta}")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
