#!/usr/bin/env python
"""The facility's own costs: how fast the quota ledger takes concurrent submissions, and what a run pays for going
through the facility instead of a bare ``spark-submit``.

* Ledger: ``--threads`` submitters (default 16) race ``--attempts`` submissions (default 400) of 1 core-hour against
  an allocation of ``--allocation`` (default 300) core-hours, on SQLite and — when a server answers on
  127.0.0.1:5432 — PostgreSQL. Checked (exit 1 otherwise): exactly ``allocation`` are accepted. Reported: accepted
  + refused submissions per second.
* Latency: ``--runs`` (default 3) trivial PySpark scripts submitted one after another to a facility with a worker
  (poll 0.2 s): submit() return time, submit -> state running (the worker launched spark-submit), submit -> the
  driver running the user's code (Spark session up), submit -> succeeded and charged. The peer: the same script
  by ``spark-submit --master local[1]`` directly, timed the same number of times. ``facility_overhead_s`` = median
  facility submit->succeeded minus median bare spark-submit wall time. As root the facility runs each job as its
  owner's OS account in its own PID and network namespaces with a delegated token (``isolated=1`` in the RESULT
  line); the bare spark-submit is not isolated, so the overhead includes what isolation costs.

Last line: ``RESULT ...``. Run from the repository root: ``.venv/bin/python bench/facility.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

SCRIPT = "import userbatch\nspark = userbatch.session()\nassert spark.range(100000).count() == 100000\n"
PG = os.environ.get("USERBATCH_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def _config(path: Path, allocation: float) -> None:
    path.write_text(f"defaults:\n  user: {{core_hours: {allocation}, max_cores: 64, storage_gb: 100}}\n"
                    "runs: {max_concurrent: 1, default_cores: 1, default_max_hours: 1.0, max_queued: 100000}\n")


def ledger(db_url: str, threads: int, attempts: int, allocation: float) -> dict:
    from userbatch.facility.config import load_config
    from userbatch.facility.ledger import QuotaExceeded
    from userbatch.facility.service import Facility, Identity
    from userbatch.tables.db import engine_for

    engine = engine_for(db_url)
    user = f"b{uuid.uuid4().hex[:8]}"
    cfg = load_config()
    Identity.lookup(user, engine, cfg)
    ok, refused = [], []
    per = attempts // threads

    def work():
        f = Facility(Identity.lookup(user, engine, cfg), db_url=db_url, config=cfg, start_worker=False)
        for _ in range(per):
            try:
                f.submit(script=("noop.py", "pass\n"), cores=1, max_hours=1.0)
                ok.append(1)
            except QuotaExceeded:
                refused.append(1)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    return {"accepted": len(ok), "refused": len(refused), "seconds": dt, "per_s": (len(ok) + len(refused)) / dt}


def latency(runs: int, home: Path) -> dict:
    from userbatch.facility.service import Facility
    from userbatch.facility.worker import Worker

    fac = Facility(start_worker=False)
    w = Worker()
    w.acquire()
    stop = threading.Event()
    th = threading.Thread(target=w.run, kwargs={"stop": stop, "poll_s": 0.2}, daemon=True)
    th.start()
    out = []
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            r = fac.submit(script=("trivial.py", SCRIPT), cores=1, max_hours=0.5)
            t_submit = time.perf_counter() - t0
            t_running = t_code = None
            while True:
                st = fac.status(r["id"])
                now = time.perf_counter() - t0
                if st["state"] == "running" and t_running is None:
                    t_running = now
                if t_code is None and "running script" in (st.get("progress") or {}).get("stage", ""):
                    t_code = now
                if st["state"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.05)
            assert st["state"] == "succeeded", fac.logs(r["id"], 40)
            out.append({"submit_s": t_submit, "to_running_s": t_running, "to_user_code_s": t_code,
                        "to_done_s": time.perf_counter() - t0, "charged_core_s": st["charged_core_hours"] * 3600})
    finally:
        stop.set()
        th.join()
        w.shutdown()
        w.release()
    script = home / "trivial.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    bare = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([str(Path(sys.executable).with_name("spark-submit")), "--master", "local[1]", str(script)],
                       check=True, capture_output=True, env=env)
        bare.append(time.perf_counter() - t0)
    return {"facility": out, "bare_spark_submit_s": bare}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--attempts", type=int, default=400)
    ap.add_argument("--allocation", type=float, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", help="write every measurement here")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ub-bench-facility-"))
    home.chmod(0o711)  # runs execute as their owner's account (as root): they pass through to their run directory
    os.environ.update(USERBATCH_HOME=str(home), USERBATCH_USER="bench",
                      USERBATCH_FACILITY_CONFIG=str(home / "facility.yaml"))
    os.environ.pop("USERBATCH_DB_URL", None)
    _config(home / "facility.yaml", args.allocation)
    results: dict = {}
    results["sqlite"] = ledger(f"sqlite:///{home / 'ledger.db'}", args.threads, args.attempts, args.allocation)
    try:
        import sqlalchemy as sa

        name = f"ub_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(PG, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as c:
            c.execute(sa.text(f"CREATE DATABASE {name}"))
        try:
            results["postgresql"] = ledger(PG.rsplit("/", 1)[0] + "/" + name, args.threads, args.attempts,
                                           args.allocation)
        finally:
            from userbatch.tables.db import engine_for

            engine_for(PG.rsplit("/", 1)[0] + "/" + name).dispose()
            with admin.connect() as c:
                c.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    except Exception as e:  # noqa: BLE001 - no server: report SQLite only
        print(f"PostgreSQL skipped: {type(e).__name__}: {e}")
    for db, r in results.items():
        print(f"ledger {db:10s}: {args.threads} threads, {r['accepted'] + r['refused']} submissions in "
              f"{r['seconds']:.2f} s = {r['per_s']:.0f}/s; accepted {r['accepted']} of allocation "
              f"{args.allocation:.0f}")
        if r["accepted"] != int(args.allocation):
            print(f"FAILED: {db} accepted {r['accepted']} != {args.allocation}")
            return 1
    lat = latency(args.runs, home)
    results["latency"] = lat
    for i, r in enumerate(lat["facility"]):
        print(f"run {i}: submit {r['submit_s'] * 1000:.0f} ms, running after {r['to_running_s']:.2f} s, user code "
              f"after {r['to_user_code_s'] or float('nan'):.2f} s, done after {r['to_done_s']:.2f} s, charged "
              f"{r['charged_core_s']:.1f} core-s")
    print("bare spark-submit: " + ", ".join(f"{t:.2f} s" for t in lat["bare_spark_submit_s"]))
    med = statistics.median
    f = lat["facility"]
    overhead = med(r["to_done_s"] for r in f) - med(lat["bare_spark_submit_s"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    pg = results.get("postgresql", {}).get("per_s")
    from userbatch.facility.accounts import effective_mode
    from userbatch.facility.config import load_config

    isolated = int(effective_mode(load_config().identity) == "os")
    print(f"RESULT submit_ms={med(r['submit_s'] for r in f) * 1000:.0f} "
          f"submit_to_running_s={med(r['to_running_s'] for r in f):.2f} "
          f"submit_to_user_code_s={med(r['to_user_code_s'] for r in f):.2f} "
          f"facility_overhead_s={overhead:.2f} "
          f"facility_vs_bare_ratio={med(r['to_done_s'] for r in f) / med(lat['bare_spark_submit_s']):.2f} "
          f"ledger_submits_per_s_sqlite={results['sqlite']['per_s']:.0f} "
          + (f"ledger_submits_per_s_pg={pg:.0f} " if pg else "")
          + f"ledger_threads={args.threads} isolated={isolated}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
