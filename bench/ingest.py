#!/usr/bin/env python
"""Side-by-side ingest: userbatch ``ingest`` (Spark + Delta) vs ``hats-import`` (dask), margins included.

Both sides read the same simulated Object Parquet files (bench/_data, generated once), partition adaptively with
the same pixel threshold and highest order, and build a 5-arcsec margin cache. Each side runs in its own child
process so neither inherits the other's JVM / dask workers, memory or caches.

Timed on each side:
* userbatch: ``userbatch.tables.ingest.ingest(...)`` wall time, which includes reading the input, the order-29
  index, the histogram + plan, the Parquet write, the margin table and both Delta commits. Spark session
  start-up (``userbatch.session()``) is timed and reported separately and is NOT in the ingest time.
* hats-import: ``pipeline_with_client(ImportArguments)`` then ``pipeline_with_client(MarginCacheArguments)`` on a
  ``Client(n_workers=2, threads_per_worker=1)`` local cluster; cluster start-up reported separately, NOT in the
  time. Stage durations come from the stage progress bars hats-import opens (see ``HatsStageTimer``).

Last line: ``RESULT ingest_speedup_vs_hats_import=<hats_total/userbatch_total> rows=<n>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as C

log = logging.getLogger("bench.ingest")

TABLE = "bench.object"


# ------------------------------------------------------------------------------------------------ child: userbatch

def run_userbatch(args, paths: list[str], work: Path) -> dict:
    home = work / "userbatch_home"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["USERBATCH_HOME"] = str(home)
    os.environ.pop("USERBATCH_WAREHOUSE", None)
    os.environ.pop("USERBATCH_DB_URL", None)
    import pyarrow.parquet as pq
    import userbatch
    from userbatch.sky.margins import margin_order
    from userbatch.tables.catalog import Catalog
    from userbatch.tables.delta import snapshot
    from userbatch.tables.ingest import ingest
    from userbatch.tables.read import path_pixel, resolve

    t: dict = {}
    with C.timed(t, "spark_session_start"):
        spark = userbatch.session()
    log.info("spark %s, master %s, defaultParallelism %d", spark.version, spark.sparkContext.master,
             spark.sparkContext.defaultParallelism)
    with C.timed(t, "ingest_total"):
        res = ingest(paths, TABLE, pixel_threshold=args.threshold, highest_order=args.highest_order,
                     margin_radius_arcsec=args.margin_arcsec)
    worker_src = spark.sparkContext.parallelize([0], 1).map(lambda _: __import__("userbatch").__file__).collect()[0]
    log.info("Spark Python workers import userbatch from %s", worker_src)
    entry = Catalog().get(TABLE)
    snap = resolve(entry)
    parts: dict[tuple[int, int], int] = {}
    files = snap.files.to_pylist()
    for f in files:
        key = path_pixel(f["path"])
        parts[key] = parts.get(key, 0) + int(f["num_records"])
    margin_snap = snapshot(entry.margin_location)
    m_order = margin_order(args.margin_arcsec, [o for o, _ in parts])
    jvm_pid = int(spark.sparkContext._jvm.ProcessHandle.current().pid())
    jvm_cpu = C.process_tree_cpu_s(jvm_pid)  # the JVM is never reaped by us: count its tree by hand
    spark.stop()
    return {
        "side": "userbatch",
        "worker_userbatch": worker_src,
        "jvm_tree_cpu_s": jvm_cpu,
        "timings_s": t,
        "stages_s": res.timings_s,
        "rows": int(res.rows),
        "rejected": int(res.rejected),
        "partitions": [[o, p, n] for (o, p), n in sorted(parts.items())],
        "files": len(files),
        "margin_rows": int(res.margin_rows or 0),
        "margin_rows_snapshot": int(margin_snap.num_rows),
        "margin_files": int(margin_snap.files.num_rows),
        "margin_order": int(m_order),
        "bytes": C.dir_bytes(Path(entry.location)) - C.dir_bytes(Path(entry.margin_location)),
        "margin_bytes": C.dir_bytes(Path(entry.margin_location)),
        "compression": pq.read_metadata(Path(entry.location) / files[0]["path"]).row_group(0).column(0).compression,
    }


# ------------------------------------------------------------------------------------------------ child: hats-import

def run_hats(args, paths: list[str], work: Path) -> dict:
    import pyarrow.parquet as pq
    from dask.distributed import Client
    from hats import read_hats
    from hats.io import paths as hpaths
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.margin_cache.margin_cache_arguments import MarginCacheArguments
    from hats_import.pipeline import pipeline_with_client

    out = work / "hats"
    dask_tmp = work / "dask_tmp"
    out.mkdir(parents=True, exist_ok=True)
    dask_tmp.mkdir(parents=True, exist_ok=True)
    extra = {}
    if args.hats_compression != "default":  # hats-import's default is ZSTD level 15
        extra["write_table_kwargs"] = {"compression": args.hats_compression}
    t: dict = {}
    with C.timed(t, "dask_client_start"):
        client = Client(n_workers=args.workers, threads_per_worker=1, local_directory=str(dask_tmp),
                        dashboard_address=None)
    try:
        with C.HatsStageTimer() as stage_timer:
            t0 = time.perf_counter()
            with C.timed(t, "catalog"):
                cat_args = ImportArguments(
                    output_artifact_name="object", output_path=str(out), input_file_list=list(paths),
                    file_reader="parquet", ra_column="coord_ra", dec_column="coord_dec",
                    pixel_threshold=args.threshold, highest_healpix_order=args.highest_order,
                    dask_tmp=str(dask_tmp), progress_bar=False, resume=False, **extra,
                )
                pipeline_with_client(cat_args, client)
            t1 = time.perf_counter()
            with C.timed(t, "margin"):
                margin_args = MarginCacheArguments(
                    input_catalog_path=str(out / "object"), output_path=str(out),
                    output_artifact_name="object_5arcs", margin_threshold=args.margin_arcsec,
                    dask_tmp=str(dask_tmp), progress_bar=False, resume=False, **extra,
                )
                pipeline_with_client(margin_args, client)
            t2 = time.perf_counter()
        stages = {**stage_timer.stages(t0, t1, "catalog."), **stage_timer.stages(t1, t2, "margin.")}
    finally:
        client.close()
    t["hats_total"] = t["catalog"] + t["margin"]
    cat = read_hats(out / "object")
    parts = []
    first = None
    for pix in cat.get_healpix_pixels():
        f = hpaths.pixel_catalog_file(cat.catalog_base_dir, pix)
        first = first or f
        parts.append([int(pix.order), int(pix.pixel), int(pq.read_metadata(str(f)).num_rows)])
    margin = read_hats(out / "object_5arcs")
    return {
        "side": "hats_import",
        "timings_s": t,
        "stages_s": stages,
        "rows": int(sum(n for _, _, n in parts)),
        "total_rows_property": int(cat.catalog_info.total_rows),
        "partitions": sorted(parts),
        "files": len(parts),
        "margin_rows": int(margin.catalog_info.total_rows or 0),
        "margin_files": len(margin.get_healpix_pixels()),
        "margin_order": int(margin_args.margin_order),
        "bytes": C.dir_bytes(out / "object"),
        "margin_bytes": C.dir_bytes(out / "object_5arcs"),
        "compression": pq.read_metadata(str(first)).row_group(0).column(0).compression if first else None,
    }


# ------------------------------------------------------------------------------------------------ parent

def compare_partitions(ub: dict, hi: dict) -> list[str]:
    notes = []
    a = {(o, p): n for o, p, n in ub["partitions"]}
    b = {(o, p): n for o, p, n in hi["partitions"]}
    if a == b:
        notes.append(f"partitions: IDENTICAL ({len(a)} pixels, same (order, pixel) set and same row counts)")
        return notes
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    diff = [k for k in set(a) & set(b) if a[k] != b[k]]
    notes.append(f"partitions DIFFER: userbatch {len(a)}, hats-import {len(b)}; only in userbatch {only_a[:10]}"
                 f"{'...' if len(only_a) > 10 else ''}; only in hats-import {only_b[:10]}"
                 f"{'...' if len(only_b) > 10 else ''}; same pixel, different count: {len(diff)}")
    return notes


def describe_counts(parts: list) -> str:
    import numpy as np

    n = np.array([c for _, _, c in parts]) if parts else np.zeros(1)
    orders = sorted({o for o, _, _ in parts})
    return (f"{len(parts)} pixels, orders {orders}, rows/pixel min {int(n.min()):,} median {int(np.median(n)):,} "
            f"max {int(n.max()):,}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=C.DEFAULT_ROWS, help="simulated objects (default %(default)s)")
    ap.add_argument("--seed", type=int, default=C.DEFAULT_SEED)
    ap.add_argument("--threshold", type=int, default=C.HATS_DEFAULT_THRESHOLD,
                    help="pixel threshold, both sides (default: hats-import's, %(default)s)")
    ap.add_argument("--highest-order", type=int, default=C.HATS_DEFAULT_HIGHEST_ORDER,
                    help="highest HEALPix order, both sides (default: hats-import's, %(default)s)")
    ap.add_argument("--margin-arcsec", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2, help="dask workers for hats-import (1 thread each)")
    ap.add_argument("--hats-compression", default="default",
                    help="hats-import Parquet compression; 'default' keeps hats-import's ZSTD level 15, "
                         "'snappy' matches Spark's default")
    ap.add_argument("--only", choices=("both", "userbatch", "hats"), default="both")
    ap.add_argument("--keep", action="store_true", help="keep the outputs under bench/_work/")
    ap.add_argument("--json", type=Path, help="also write all measurements to this JSON file")
    ap.add_argument("--live-source", action="store_true",
                    help="import python/userbatch as it is during the run instead of a copy taken at the start")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--child", choices=("userbatch", "hats"), help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    C.setup_logging(args.verbose)

    if args.child == "hats" and not args.verbose:
        # distributed logs every worker start/stop at INFO in all its processes; read by dask at import
        os.environ.setdefault("DASK_DISTRIBUTED__LOGGING__DISTRIBUTED", "warning")
    paths = [str(p) for p in C.ensure_input(args.rows, args.seed)]
    if args.child:
        C.check_frozen_source()
        fn = run_userbatch if args.child == "userbatch" else run_hats
        result = fn(args, paths, args.work)
        args.out.write_text(json.dumps(result, indent=1))
        return 0

    log.info("%s", C.env_summary())
    work = C.WORK_DIR / f"ingest-{args.rows}-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    env, code = C.code_env(work, args.live_source)
    log.info("code measured: %s", code)
    results: dict[str, dict] = {}
    try:
        sides = ["userbatch", "hats"] if args.only == "both" else [args.only]
        for side in sides:
            nbytes = C.warm_page_cache([Path(p) for p in paths])
            log.info("---- %s (input %.0f MB, page cache warmed)", side, nbytes / 1e6)
            out = work / f"{side}.json"
            cmd = [sys.executable, __file__, "--child", side, "--work", str(work), "--out", str(out),
                   "--rows", str(args.rows), "--seed", str(args.seed), "--threshold", str(args.threshold),
                   "--highest-order", str(args.highest_order), "--margin-arcsec", str(args.margin_arcsec),
                   "--workers", str(args.workers), "--hats-compression", args.hats_compression]
            if args.verbose:
                cmd.append("-v")
            t0 = time.perf_counter()
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(cmd, check=True, env=env)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            results[side] = json.loads(out.read_text())
            results[side]["process_wall_s"] = time.perf_counter() - t0
            # CPU of the whole side (child + JVM / dask workers, start-ups included): less sensitive to load
            # from other work than wall time
            results[side]["process_cpu_s"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            results[side]["process_cpu_s"] += results[side].get("jvm_tree_cpu_s", 0.0)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log.info("outputs kept under %s", work)

    ub, hi = results.get("userbatch"), results.get("hats")
    print()
    print(f"== ingest benchmark: {args.rows:,} rows, threshold {args.threshold:,}, highest order "
          f"{args.highest_order}, margin {args.margin_arcsec} arcsec ==")
    print(C.env_summary() + "  (shared machine: timings are noisy)")
    print(f"userbatch code measured: {code}")
    rows = []
    if ub:
        t, s = ub["timings_s"], ub["stages_s"]
        rows.append(["userbatch: Spark session start (NOT counted)", f"{t['spark_session_start']:.1f}"])
        for k in ("validate", "index", "plan", "write", "margin", "commit"):
            if k in s:
                rows.append([f"userbatch:   stage {k}", f"{s[k]:.1f}"])
        other = t["ingest_total"] - sum(s.values())
        rows.append(["userbatch:   other (input read set-up, catalog, view refresh)", f"{other:.1f}"])
        rows.append(["userbatch: TOTAL ingest (catalog + margin)", f"{t['ingest_total']:.1f}"])
        rows.append(["userbatch: CPU s of the whole side (all processes, start-up incl.)",
                     f"{ub['process_cpu_s']:.1f}"])
    if hi:
        t, s = hi["timings_s"], hi["stages_s"]
        rows.append(["hats-import: dask Client start (NOT counted)", f"{t['dask_client_start']:.1f}"])
        for k, v in s.items():
            rows.append([f"hats-import:   {k}", f"{v:.1f}"])
        rows.append(["hats-import: catalog", f"{t['catalog']:.1f}"])
        rows.append(["hats-import: margin cache", f"{t['margin']:.1f}"])
        rows.append(["hats-import: TOTAL (catalog + margin)", f"{t['hats_total']:.1f}"])
        rows.append(["hats-import: CPU s of the whole side (all processes, start-up incl.)",
                     f"{hi['process_cpu_s']:.1f}"])
    print(C.fmt_table(rows, ["what", "seconds"]))
    print()
    out_rows = []
    for name, r in (("userbatch", ub), ("hats-import", hi)):
        if r:
            out_rows.append([name, f"{r['rows']:,}", r["files"], f"{r['margin_rows']:,}", r["margin_order"],
                             f"{r['bytes'] / 1e6:.0f}", f"{r['margin_bytes'] / 1e6:.0f}", r["compression"]])
    print(C.fmt_table(out_rows, ["side", "rows", "partitions", "margin rows", "margin order", "data MB",
                                 "margin MB", "codec"]))
    for name, r in (("userbatch", ub), ("hats-import", hi)):
        if r:
            print(f"{name}: {describe_counts(r['partitions'])}")
    rows_n = (ub or hi)["rows"]
    if ub and hi:
        print()
        ok_rows = ub["rows"] == hi["rows"] == args.rows
        print(f"rows: userbatch {ub['rows']:,}, hats-import {hi['rows']:,}, input {args.rows:,} -> "
              f"{'SAME' if ok_rows else 'DIFFERENT'}")
        for note in compare_partitions(ub, hi):
            print(note)
        if ub["margin_order"] != hi["margin_order"]:
            print(f"margins differ by design: userbatch pads the radius x2 (sky/margins.py MARGIN_SAFETY) so it picks "
                  f"margin order {ub['margin_order']} vs hats-import's {hi['margin_order']}; margin rows "
                  f"{ub['margin_rows']:,} vs {hi['margin_rows']:,}")
        speedup = hi["timings_s"]["hats_total"] / ub["timings_s"]["ingest_total"]
        print(f"userbatch {ub['timings_s']['ingest_total']:.1f} s vs hats-import {hi['timings_s']['hats_total']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if ub and hi:
        print(f"RESULT ingest_speedup_vs_hats_import={speedup:.2f} rows={rows_n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
