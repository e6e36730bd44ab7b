#!/usr/bin/env python
"""Image pipelines through the userbatch BPS WMS plugin vs plain ``pipetask run -j 1`` and ``-j 2``: quanta/s.

Same pipeline and inputs on every path: a simulated butler repository (``userbatch.images.sim_repo.build_repo``,
``--visits`` x ``--detectors`` detector-visits, default 4 x 4, built once per run in a temporary directory) and one
of the repository's pipelines (``--pipeline``, default ``background``: three independent tasks per (visit,
detector), so 3 x V x D = 48 quanta by default). Each path writes its own output collection in the same repository.

Paths (the :data:`PATHS` registry: name -> function(ctx) -> measurement; a new placement is one more entry):

* ``pipetask_j1`` / ``pipetask_j2``: ``pipetask run -b REPO -i INPUT -o u/bench/pipetask_jN -p PIPE -j N
  --register-dataset-types``, timed wall-clock (QuantumGraph build included); quanta from pipetask's own
  ``Executed N quanta successfully`` line. With ``-j 1`` every quantum runs in the one process; with ``-j`` > 1
  pipetask's MP executor starts a fresh ``spawn`` Python process per quantum (each re-imports the middleware and
  the tasks), so on small quanta ``-j 2`` is much slower than ``-j 1``.
* ``bps_spark``: the userbatch plugin as a user gets it: a facility in the temporary directory (SQLite, generous
  quota) with a ``Worker`` in a thread; ``userbatch.images.bridge.submit({...})`` with ``cores=--cores`` (=
  ``bps submit``: QuantumGraph build + clustering + prepare + facility submit) and the bridge's default
  clustering (about ``cores`` clusters of whole per-(visit, detector) chains, one ``pipetask run-qbb`` process
  each), then ``Facility.wait``; jobs run as Spark tasks of the facility run, scheduled as soon as their parents
  succeed. Timed end to end: from the submit call to the run's ``succeeded`` (graph build, queueing, Spark
  start-up, ``pipetaskInit``, the quantum clusters, the final job that registers the outputs). Per-job records
  from the submit directory's ``userbatch_jobs.json`` (the executor's state file).
* ``bps_slurm``: the same plan placed as Slurm jobs — added when a Slurm placement of the plan exists
  (:func:`bps_slurm_path`); until then its ratio is printed as ``nan`` with the reason.

Checks (exit 1 otherwise): every path ran the same number of quanta and produced the same ``--check-types``
datasets (default: the three background outputs) with the same data IDs and identical values.

Definitions: ``quanta/s`` = quanta / end-to-end wall seconds of the path. ``bps_vs_pipetask_best_ratio`` = BPS
(Spark placement) quanta/s over the faster of ``pipetask -j 1`` and ``-j 2``; ``bps_slurm_vs_pipetask_best_ratio``
likewise for the Slurm placement; ``bps_vs_pipetask_j2_ratio`` = BPS over ``pipetask -j 2``.

Last line: ``RESULT bps_vs_pipetask_best_ratio=<x> bps_slurm_vs_pipetask_best_ratio=<y>
bps_vs_pipetask_j2_ratio=<z> quanta=<n>``. Run from the repository root:
``PATH=$PWD/.venv/bin:$PATH .venv/bin/python bench/bps.py`` (~2 min at the defaults on 2 cores, most of it
``pipetask -j 2``).
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Callable

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
DEFAULT_CHECK_TYPES = "ub_background,ub_background_median,ub_background_mesh"


@dataclass
class Context:
    """What every path gets: the same repository, input collection and pipeline."""

    repo: str
    inputs: str
    pipe: Path
    cores: int
    work: Path
    timeout_s: float


#: A path: ``fn(ctx) -> {"wall_s", "quanta", "collection", "rows": [(what, seconds)], "notes": [str]}``.
PathFn = Callable[[Context], dict]


def _epoch(iso: str) -> float:
    t = datetime.fromisoformat(iso)
    if t.tzinfo is None:  # SQLite keeps the UTC wall time without its zone
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


# ----------------------------------------------------------------------------------------------- pipetask
def pipetask_path(jobs: int) -> PathFn:
    """``pipetask run -j jobs`` in one process tree, graph build included."""

    def run(ctx: Context) -> dict:
        out = f"u/bench/pipetask_j{jobs}"
        log = ctx.work / f"pipetask_j{jobs}.log"
        cmd = [str(BIN / "pipetask"), "run", "-b", ctx.repo, "-i", ctx.inputs, "-o", out, "-p", str(ctx.pipe),
               "-j", str(jobs), "--register-dataset-types"]
        t0 = time.perf_counter()
        with open(log, "w") as fh:
            p = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ctx.work, check=False)
        wall = time.perf_counter() - t0
        text = log.read_text(errors="replace")
        if p.returncode != 0:
            raise RuntimeError(f"pipetask -j {jobs} failed (exit {p.returncode}); log {log}:\n" + text[-3000:])
        m = EXECUTED.findall(text)
        quanta = int(m[-1][0]) if m else 0
        task_s = [float(x) for x in TOOK.findall(text)]
        notes = [f"in-task {sum(task_s):.1f} s over {len(task_s)} quanta; wall {wall:.1f} s "
                 f"({wall / max(quanta, 1):.2f} s per quantum)"] if task_s else []
        return {"wall_s": wall, "quanta": quanta, "collection": out, "rows": [], "notes": notes}

    return run


# ----------------------------------------------------------------------------------------------- userbatch BPS
def run_bps(ctx: Context, name: str, request_extra: dict | None = None) -> dict:
    """One request through the bridge into the facility of the bench (its runner as configured), timed from the
    submit call to the run's end; the measurement of a BPS path."""
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
    submit_root = ctx.work / "submit"
    try:
        t0 = time.perf_counter()
        run = submit({"pipeline": str(ctx.pipe), "butler": ctx.repo, "inputs": [ctx.inputs], "name": name,
                      "cores": ctx.cores, "max_hours": 1.0, "retries": 0, **(request_extra or {})},
                     facility=fac, submit_root=submit_root)
        t_submit = time.perf_counter() - t0
        done = fac.wait(run["id"], timeout_s=ctx.timeout_s, poll_s=0.2)
        t_done = time.perf_counter() - t0
        if done["state"] != "succeeded":
            raise RuntimeError(f"BPS run {run['id']} ended {done['state']}: {done.get('error')}\n"
                               f"{fac.logs(run['id'], tail=60)}")
    finally:
        stop.set()
        th.join(timeout=60)
        worker.shutdown()
        worker.release()
    submit_dir = submit_root / name
    plan = json.loads((submit_dir / "userbatch_plan.json").read_text())
    state = json.loads((submit_dir / "userbatch_jobs.json").read_text())
    jobs = state["jobs"]
    quanta = sum(n for j in plan["jobs"] for label, n in (j.get("quanta") or {}).items() if label not in NOT_QUANTA)
    quantum_jobs = [j for j in jobs.values() if j["label"] not in NOT_QUANTA]
    other = {j["label"]: j.get("seconds") for j in jobs.values() if j["label"] in NOT_QUANTA}
    task_s = []  # in-task time of each quantum, as run-qbb logs it in the jobs' own log files
    for f in (submit_dir / "jobs").glob("*/*.*"):
        if f.suffix in (".out", ".err"):
            task_s += [float(x) for x in TOOK.findall(f.read_text(errors="replace"))]
    started, ended = _epoch(done["started_at"]), _epoch(done["ended_at"])
    qj = [j.get("seconds") or 0.0 for j in quantum_jobs]
    spark_up = state["started"] - started
    executor_end = state.get("executor_ended", state["ended"])
    if state.get("placement") == "slurm":  # no Spark: the worker submitted the jobs to Slurm and watched them
        spark_up, executor_end = 0.0, ended
    rows = [
        ("  (a) bps submit: graph build + clustering + prepare + queue", t_submit),
        ("  (b) submit returned -> succeeded", t_done - t_submit),
        ("      worker pick-up (run submitted_at -> started_at)", started - _epoch(done["submitted_at"])),
        ("      facility run wall (started_at -> ended_at)", ended - started),
        ("        Spark start-up (started_at -> executor start)", spark_up),
        ("        executor: init + quantum jobs (+ final job unless by facility)", executor_end - state["started"]),
        ("        after executor (driver exit, final job by facility, charge)", ended - executor_end),
        ("      pipetaskInit job", other.get("pipetaskInit") or float("nan")),
        ("      finalJob (registers outputs)", other.get("finalJob") or float("nan")),
        (f"      quantum jobs: {len(qj)}, mean seconds per job", sum(qj) / len(qj) if qj else float("nan")),
    ]
    notes = [f"{len(plan['jobs'])} jobs + final for {quanta} quanta (clustered: {plan.get('clustered')}); "
             f"job labels {plan.get('labels')}; quanta per task {plan.get('quanta')}"]
    if task_s:
        notes.append(f"in-task time (run-qbb's 'took X seconds'): {sum(task_s):.1f} s over {len(task_s)} quanta; "
                     f"quantum jobs held {sum(qj):.1f} job-s, so {sum(qj) - sum(task_s):.1f} s went to process "
                     "start-up, butler and graph loading")
    notes.append(f"charged {(done.get('charged_core_hours') or 0) * 3600:.1f} core-s; job states "
                 f"{sorted({j['state'] for j in jobs.values()})}; facility run {run['id']}")
    return {"wall_s": t_done, "quanta": quanta, "collection": f"u/bench/{name}", "rows": rows, "notes": notes}


def bps_spark_path(ctx: Context) -> dict:
    """The plugin's default placement: the plan's jobs as Spark tasks of one facility run (local runner)."""
    return run_bps(ctx, "bench_bps")


def bps_slurm_path() -> tuple[PathFn | None, str]:
    """The Slurm placement of the same plan: :func:`run_bps` against a facility whose runner is the local Slurm
    (``.services/slurm``, started here when it is not up): every job (a quantum cluster) an ``sbatch`` job of the
    owner with ``afterok`` dependencies, no Spark. Returns (None, why) where that Slurm cannot run."""
    from userbatch.cluster import slurm_local
    from userbatch.errors import UserbatchError

    if os.geteuid() != 0:
        return None, "the local Slurm runs its daemons as root (and runs as their owners need root)"
    slurm_dir = ROOT / ".services" / "slurm"
    try:
        st = slurm_local.status(slurm_dir)
        if not st["running"]:
            st = slurm_local.start(slurm_dir)
    except UserbatchError as e:
        return None, f"the local Slurm cannot start here: {e}"

    def run(ctx: Context) -> dict:
        from userbatch.cluster.slurm import apply_accounts
        from userbatch.facility.config import load_config

        config = ctx.work / "facility-slurm.yaml"
        config.write_text(CONFIG + "users:\n  bench: {core_hours: 1000, max_cores: 16, storage_gb: 100}\n"
                          f"runner: {{kind: slurm, slurm_conf: {st['conf']}, poll_s: 0.25}}\n")
        before = os.environ["USERBATCH_FACILITY_CONFIG"]
        os.environ["USERBATCH_FACILITY_CONFIG"] = str(config)
        try:
            apply_accounts(load_config(), st["conf"])  # the bench user's Slurm account, from the same quota file
            return run_bps(ctx, "bench_bps_slurm")
        finally:
            os.environ["USERBATCH_FACILITY_CONFIG"] = before

    return run, ""


#: name -> (label in the table, path). BPS placements are the entries whose names start with ``bps``.
PATHS: dict[str, tuple[str, PathFn]] = {
    "pipetask_j1": ("pipetask run -j 1 (graph build included)", pipetask_path(1)),
    "pipetask_j2": ("pipetask run -j 2 (graph build included)", pipetask_path(2)),
    "bps_spark": ("userbatch BPS, Spark placement: submit -> succeeded", bps_spark_path),
}


# ----------------------------------------------------------------------------------------------- checks
def read_outputs(repo: str, dataset_types: list[str], collection: str) -> dict:
    """{(dataset type, data ID): array} of a path's outputs."""
    import numpy as np
    from lsst.daf.butler import Butler, MissingCollectionError, MissingDatasetTypeError

    butler = Butler.from_config(repo)
    out = {}
    try:
        for dt in dataset_types:
            try:
                refs = butler.query_datasets(dt, collections=collection, explain=False, limit=None)
            except (MissingCollectionError, MissingDatasetTypeError):
                continue
            for ref in refs:
                key = (dt, tuple(sorted((k, str(v)) for k, v in ref.dataId.required.items())))
                out[key] = np.asarray(butler.get(ref))
    finally:
        butler.close()
    return out


def compare_outputs(outputs: dict[str, dict]) -> list[str]:
    """Differences between the paths' outputs (empty when every path wrote the same datasets and values)."""
    import numpy as np

    names = list(outputs)
    ref_name = names[0]
    ref = outputs[ref_name]
    problems = [] if ref else [f"{ref_name} wrote none of the checked datasets"]
    for name in names[1:]:
        got = outputs[name]
        if set(got) != set(ref):
            problems.append(f"{name}: {len(got)} datasets, {ref_name}: {len(ref)}; data IDs differ")
            continue
        diff = [k for k in ref if not np.array_equal(ref[k], got[k], equal_nan=True)]
        if diff:
            problems.append(f"{name}: {len(diff)} dataset(s) differ in value from {ref_name}, e.g. {diff[0]}")
    return problems


# ----------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--visits", type=int, default=4)
    ap.add_argument("--detectors", type=int, default=4)
    ap.add_argument("--pipeline", default="background", help="a pipelines/ name or a YAML path (default background)")
    ap.add_argument("--check-types", default=DEFAULT_CHECK_TYPES,
                    help="output dataset types (NumPy arrays) compared between the paths, comma-separated")
    ap.add_argument("--cores", type=int, default=2, help="the BPS run's cores")
    ap.add_argument("--paths", default=None,
                    help=f"which paths to run (default all: {','.join(PATHS)}, and bps_slurm where Slurm runs)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for a BPS run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--json", help="write every measurement here")
    args = ap.parse_args()

    pipe = Path(args.pipeline)
    if not pipe.is_file():
        pipe = ROOT / "pipelines" / f"{args.pipeline}.yaml"
    if not pipe.is_file():
        print(f"no pipeline {args.pipeline!r}")
        return 2
    paths = dict(PATHS)
    slurm, slurm_why = bps_slurm_path()
    if slurm is not None:
        paths["bps_slurm"] = ("userbatch BPS, Slurm placement: submit -> succeeded", slurm)
    wanted = [p.strip() for p in (args.paths or ",".join(paths)).split(",") if p.strip()]
    unknown = [p for p in wanted if p not in paths]
    if unknown:
        print(f"unknown path(s) {', '.join(unknown)}; known: {', '.join(paths)}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="ub-bench-bps-"))
    work.chmod(0o755)  # runs execute as their owner's OS account (as root): they must reach their directories
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
        print(f"== BPS plugin vs pipetask: {args.visits} visits x {args.detectors} detectors, pipeline {pipe.name}, "
              f"{args.cores} cores ==")
        print(f"vm: {os.cpu_count()} cores, load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
              f"Python {sys.version.split()[0]}; userbatch code measured: git {rev}"
              + (" (+ uncommitted changes in python/userbatch)" if dirty else "") + f"; work dir {work}")
        from userbatch.images.sim_repo import build_repo

        t0 = time.perf_counter()
        info = build_repo(work / "repo", n_visits=args.visits, n_detectors=args.detectors)
        os.chmod(info.root, 0o755)
        print(f"repo built in {time.perf_counter() - t0:.1f} s ({len(info.visits)} visits x {len(info.detectors)} "
              f"detectors), input collection {info.input_collection}", flush=True)
        ctx = Context(repo=info.root, inputs=info.input_collection, pipe=pipe, cores=args.cores, work=work,
                      timeout_s=args.timeout)
        results: dict[str, dict] = {}
        for name in wanted:
            print(f"{name} ...", flush=True)
            results[name] = paths[name][1](ctx)
            print(f"  {results[name]['wall_s']:.1f} s, {results[name]['quanta']} quanta", flush=True)

        def rate(name: str) -> float:
            r = results.get(name)
            return r["quanta"] / r["wall_s"] if r and r["wall_s"] > 0 else float("nan")

        rows = []
        for name, r in results.items():
            rows.append((paths[name][0], r["wall_s"], r["quanta"], rate(name)))
            rows += [(what, s, None, None) for what, s in r["rows"]]
        w = max(len(r[0]) for r in rows)
        print()
        print(f"{'what':<{w}}  {'seconds':>8}  {'quanta':>6}  {'quanta/s':>8}")
        print(f"{'-' * w}  {'-' * 8}  {'-' * 6}  {'-' * 8}")
        for what, s, n, r in rows:
            print(f"{what:<{w}}  {s:8.2f}  {'' if n is None else n:>6}  {'' if r is None else f'{r:8.3f}':>8}")
        print()
        for name, r in results.items():
            for note in r["notes"]:
                print(f"{name}: {note}")

        types = [t.strip() for t in args.check_types.split(",") if t.strip()]
        outputs = {name: read_outputs(info.root, types, r["collection"]) for name, r in results.items()}
        problems = compare_outputs(outputs)
        quanta = {name: r["quanta"] for name, r in results.items()}
        if len(set(quanta.values())) != 1:
            problems.append(f"quanta differ: {quanta}")
        print(f"checked datasets ({', '.join(types)}): " + ", ".join(f"{n} {len(o)}" for n, o in outputs.items())
              + "; quanta: " + ", ".join(f"{n} {q}" for n, q in quanta.items()))
        if args.json:
            Path(args.json).write_text(json.dumps({"results": results, "quanta": quanta, "problems": problems},
                                                  indent=2, default=str))
        if problems:
            print("FAILED: the paths differ: " + "; ".join(problems))
            return 1
        print("same datasets (data IDs and values) and quanta on every path: YES")
        pipetask_rates = [rate(n) for n in ("pipetask_j1", "pipetask_j2") if n in results]
        best = max(pipetask_rates) if pipetask_rates else float("nan")
        j2 = rate("pipetask_j2")
        if "bps_slurm" not in results:
            print(f"bps_slurm_vs_pipetask_best_ratio=nan: {slurm_why if slurm is None else 'not among --paths'}")
        n = next(iter(quanta.values()))
        print(f"RESULT bps_vs_pipetask_best_ratio={rate('bps_spark') / best:.3g} "
              f"bps_slurm_vs_pipetask_best_ratio={rate('bps_slurm') / best:.3g} "
              f"bps_vs_pipetask_j2_ratio={rate('bps_spark') / j2:.3g} quanta={n}")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
