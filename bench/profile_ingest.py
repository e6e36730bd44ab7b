#!/usr/bin/env python
"""Where does userbatch's ingest spend its time? Run ``ingest`` once with Spark's event log on and break every
``write_table`` stage (plan / write / margin / commit) down into its Spark stages with their task metrics.

Not a side-by-side benchmark (no RESULT line): a diagnostic for ``bench/ingest.py``. Uses the same input files
(bench/_data) and the same options. Per Spark stage it prints wall time, summed task run time and CPU time, GC,
bytes read / shuffled / spilled / written, and the time the SQL metrics attribute to Python (Arrow UDFs).

    .venv/bin/python bench/profile_ingest.py --rows 10000000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as C

log = logging.getLogger("bench.profile")


class _StageMarks(logging.Handler):
    """Collect the wall-clock end of each write_table stage from its INFO log line."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.ends: list[tuple[str, float]] = []

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("stage "):
            self.ends.append((msg.split()[1], record.created))


def _acc(stage_info: dict) -> dict:
    out = {}
    for a in stage_info.get("Accumulables", []):
        name, value = a.get("Name"), a.get("Value")
        if name is None or value is None:
            continue
        try:
            out[name] = out.get(name, 0) + float(value)
        except (TypeError, ValueError):
            pass
    return out


def _event_lines(root: Path):
    """Lines of the event log(s) under ``root`` (Spark 4 writes a directory of rolled files)."""
    for f in sorted(p for p in root.rglob("events_*") if p.is_file()):
        with open(f) as fh:
            yield from (line for line in fh if line.strip())


def parse_event_log(root: Path) -> list[dict]:
    stages = []
    if True:
        for line in _event_lines(root):
            ev = json.loads(line)
            if ev.get("Event") != "SparkListenerStageCompleted":
                continue
            si = ev["Stage Info"]
            acc = _acc(si)
            stages.append({
                "id": si["Stage ID"], "name": si.get("Stage Name", ""), "tasks": si.get("Number of Tasks"),
                "start": si.get("Submission Time", 0) / 1000, "end": si.get("Completion Time", 0) / 1000,
                "run_s": acc.get("internal.metrics.executorRunTime", 0) / 1000,
                "cpu_s": acc.get("internal.metrics.executorCpuTime", 0) / 1e9,
                "gc_s": acc.get("internal.metrics.jvmGCTime", 0) / 1000,
                "scan_s": acc.get("scan time", 0) / 1000,
                "shuf_w_mb": acc.get("internal.metrics.shuffle.write.bytesWritten", 0) / 1e6,
                "shuf_w_s": acc.get("internal.metrics.shuffle.write.writeTime", 0) / 1e9,
                "shuf_r_mb": (acc.get("internal.metrics.shuffle.read.localBytesRead", 0)
                              + acc.get("internal.metrics.shuffle.read.remoteBytesRead", 0)) / 1e6,
                "spill_mb": acc.get("internal.metrics.diskBytesSpilled", 0) / 1e6,
                "out_mb": acc.get("internal.metrics.output.bytesWritten", 0) / 1e6,
                # SQL metrics of the Python operators (ms, summed over tasks and over the stage's Python operators)
                "py_init_s": (acc.get("time to start Python workers", 0)
                              + acc.get("time to initialize Python workers", 0)) / 1000,
                "py_exec_s": acc.get("time to execute Python code", 0) / 1000,
                "to_py_mb": acc.get("data sent to Python workers", 0) / 1e6,
                "sort_s": acc.get("sort time", 0) / 1000,
            })
    return stages


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=C.DEFAULT_ROWS)
    ap.add_argument("--seed", type=int, default=C.DEFAULT_SEED)
    ap.add_argument("--threshold", type=int, default=C.HATS_DEFAULT_THRESHOLD)
    ap.add_argument("--highest-order", type=int, default=C.HATS_DEFAULT_HIGHEST_ORDER)
    ap.add_argument("--margin-arcsec", type=float, default=5.0)
    ap.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                    help="extra Spark conf for the session (repeatable), to try a setting")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    C.setup_logging(args.verbose)
    paths = [str(p) for p in C.ensure_input(args.rows, args.seed)]
    work = C.WORK_DIR / f"profile-{args.rows}-{time.strftime('%Y%m%d-%H%M%S')}"
    (work / "events").mkdir(parents=True)
    os.environ["USERBATCH_HOME"] = str(work / "userbatch_home")
    try:
        import userbatch
        from userbatch.tables.ingest import ingest

        conf = {"spark.eventLog.enabled": "true", "spark.eventLog.dir": str(work / "events"),
                "spark.eventLog.compress": "false"}
        conf.update(dict(kv.split("=", 1) for kv in args.conf))
        t0 = time.time()
        spark = userbatch.session(conf=conf)
        log.info("session start %.1f s; conf extra %s", time.time() - t0, args.conf)
        C.warm_page_cache([Path(p) for p in paths])
        marks = _StageMarks()
        logging.getLogger("userbatch.tables.write").addHandler(marks)
        t_start = time.time()
        res = ingest(paths, "bench.object", pixel_threshold=args.threshold, highest_order=args.highest_order,
                     margin_radius_arcsec=args.margin_arcsec)
        t_end = time.time()
        spark.stop()
        stages = parse_event_log(work / "events")
        # attribute Spark stages to write_table stages by completion time
        bounds, prev = [], t_start
        for name, end in marks.ends:
            bounds.append((name, prev, end))
            prev = end
        by = defaultdict(list)
        for s in stages:
            owner = next((n for n, a, b in bounds if a <= s["end"] <= b + 0.5), "other")
            by[owner].append(s)
        print(f"\n== profile of ingest, {args.rows:,} rows: total {t_end - t_start:.1f} s; "
              f"write_table stages {res.timings_s} ==")
        print(C.env_summary() + "  (shared machine: timings are noisy)")
        cols = ["run_s", "cpu_s", "gc_s", "py_init_s", "py_exec_s", "to_py_mb", "scan_s", "sort_s", "shuf_w_mb",
                "shuf_w_s", "shuf_r_mb", "spill_mb", "out_mb"]
        rows = []
        for owner, _, _ in bounds + [("other", 0, 0)]:
            for s in sorted(by.get(owner, []), key=lambda s: s["start"]):
                rows.append([owner, s["id"], s["name"][:38], s["tasks"], f"{s['end'] - s['start']:.1f}",
                             *[f"{s[c]:.1f}" for c in cols]])
        print(C.fmt_table(rows, ["ub stage", "id", "spark stage", "tasks", "wall_s", *cols]))
        print("(run/cpu/gc/python = summed over tasks; 2 task slots, so wall ~ run/2 when both are busy; "
              "py_init_s = starting + initialising Python workers (imports, UDF unpickling), py_exec_s = time in "
              "the UDF code, to_py_mb = bytes sent to Python; all summed over tasks and Python operators)")
        if args.json:
            args.json.write_text(json.dumps({"timings": res.timings_s, "stages": stages,
                                             "bounds": bounds}, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
