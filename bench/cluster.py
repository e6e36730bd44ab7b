#!/usr/bin/env python
"""The same templated job on ``local[2]`` and on a 2-worker standalone cluster (1 core, 1g each) on this machine.

Two simulated catalogs of ``--rows`` rows (default 300,000 left, 60 % of them again on the right with 0.2-arcsec
noise) are written once as userbatch tables in a scratch facility (``bench/_work/cluster``); then
``jobs/crossmatch.py`` (nearest within 1 arcsec, ``engine=spark``) runs through ``spark-submit``, ``--repeats``
times on each target, alternating, each time a fresh application (JVM, executors, Python workers: what a user's
job costs end to end). Wall time is the best of the repeats as the parent process sees it. The outputs of the two
targets must be identical row for row (the script exits 1 otherwise).

Both use ``spark.sql.shuffle.partitions=4`` (2 cores x 2). The cluster is started with
:func:`userbatch.cluster.dev.start` and stopped at the end.

Last line: ``RESULT cluster_vs_local_ratio=<cluster_s / local_s> local_s=<s> cluster_s=<s> rows=<n>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "_work" / "cluster"


def _env(home: Path) -> dict:
    return dict(os.environ, USERBATCH_HOME=str(home), USERBATCH_USER="bench", PYSPARK_PYTHON=sys.executable,
                PYSPARK_DRIVER_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1",
                USERBATCH_DB_URL=f"sqlite:///{home / 'facility.db'}", USERBATCH_WAREHOUSE=str(home / "warehouse"))


def build(rows: int, home: Path) -> None:
    os.environ.update(_env(home))
    sys.path.insert(0, str(ROOT / "python"))
    import numpy as np
    import pandas as pd

    import userbatch
    from userbatch.tables.write import write_table

    rng = np.random.default_rng(1)
    ra = rng.uniform(0, 40, rows)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-40)), np.sin(np.radians(-20)), rows)))
    left = pd.DataFrame({"objectId": np.arange(rows, dtype=np.int64), "coord_ra": ra, "coord_dec": dec,
                         "r_psfFlux": rng.lognormal(8, 1, rows)})
    pick = rng.choice(rows, int(rows * 0.6), replace=False)
    noise = 0.2 / 3600
    right = pd.DataFrame({"objectId": np.arange(len(pick), dtype=np.int64) + 10**9,
                          "coord_ra": (ra[pick] + rng.normal(0, noise, len(pick)) / np.cos(np.radians(dec[pick])))
                          % 360,
                          "coord_dec": dec[pick] + rng.normal(0, noise, len(pick))})
    spark = userbatch.session(master="local[2]", register_views=False,
                              conf={"spark.sql.shuffle.partitions": "4", "spark.driver.memory": "2g"})
    try:
        write_table(spark.createDataFrame(left), "bench.cl_left", pixel_threshold=20_000, margin_radius_arcsec=5)
        write_table(spark.createDataFrame(right), "bench.cl_right", pixel_threshold=20_000, margin_radius_arcsec=5)
    finally:
        spark.stop()


def run_job(master: str, output: str, home: Path) -> float:
    argv = [str(Path(sys.executable).with_name("spark-submit")), "--master", master, "--driver-memory", "1g",
            "--conf", "spark.sql.shuffle.partitions=4", "--conf", "spark.ui.enabled=false"]
    if master.startswith("spark://"):
        argv += ["--total-executor-cores", "2", "--executor-cores", "1", "--executor-memory", "1g"]
    argv += [str(ROOT / "jobs" / "crossmatch.py"), "-p", "left=bench.cl_left", "-p", "right=bench.cl_right",
             "-p", "radius_arcsec=1.0", "-p", "engine=spark", "-p", f"output={output}", "-p", "write_mode=overwrite"]
    env = dict(_env(home), SPARK_MASTER=master)
    t0 = time.monotonic()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    dt = time.monotonic() - t0
    if p.returncode:
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-3000:])
        raise SystemExit(f"job on {master} failed")
    return dt


def table(name: str, home: Path):
    os.environ.update(_env(home))
    from userbatch.tables.read import resolve
    from userbatch.tables.catalog import Catalog
    import pyarrow.parquet as pq

    snap = resolve(Catalog().get(name), record=False)
    root = snap.location.rstrip("/")
    t = pq.ParquetDataset([f"{root}/{p}" for p in snap.files.column("path").to_pylist()]).read().to_pandas()
    t = t[sorted(t.columns)]
    return t.sort_values(list(t.columns)).reset_index(drop=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rebuild", action="store_true")
    a = ap.parse_args()
    home = WORK / f"home-{a.rows}"
    if a.rebuild and home.exists():
        shutil.rmtree(home)
    if not (home / "facility.db").exists():
        t0 = time.monotonic()
        build(a.rows, home)
        print(f"built {a.rows:,} + {int(a.rows * 0.6):,} rows in {time.monotonic() - t0:.1f} s")
    os.environ.update(_env(home))
    sys.path.insert(0, str(ROOT / "python"))
    from userbatch.cluster import dev

    dev.stop()  # a stale record of an earlier interrupted run
    st = dev.start(workers=2, cores=1, memory="1g")
    local, remote = [], []
    try:
        for i in range(a.repeats):
            local.append(run_job("local[2]", "bench.cl_xm_local", home))
            remote.append(run_job(st["master_url"], "bench.cl_xm_cluster", home))
            print(f"repeat {i + 1}: local[2] {local[-1]:.1f} s, 2-worker cluster {remote[-1]:.1f} s", flush=True)
    finally:
        dev.stop()
    x, y = table("bench.cl_xm_local", home), table("bench.cl_xm_cluster", home)
    import pandas as pd

    try:
        pd.testing.assert_frame_equal(x, y, check_exact=True)
    except AssertionError as exc:
        print(f"outputs differ: {exc}")
        return 1
    print(f"outputs identical: {len(x):,} rows; load average {os.getloadavg()[0]:.1f}")
    ls, cs = min(local), min(remote)
    print(f"RESULT cluster_vs_local_ratio={cs / ls:.2f} local_s={ls:.1f} cluster_s={cs:.1f} rows={a.rows}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
