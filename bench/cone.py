#!/usr/bin/env python
"""Side-by-side 1-degree cone search: userbatch ``cone_search`` (light pyarrow path and Spark) vs LSDB.

The same simulated Object rows are held (a) as a userbatch Delta table built with ``ingest`` and (b) as a HATS
catalog: ``userbatch.tables.hats_io.export_hats`` of that table when it exists (its pixel files are hard links to
the table's files, so both sides read byte-identical Parquet), otherwise ``hats-import`` of the same input.
Both are built once into bench/_data and re-used (``--rebuild`` forces a new build).

For each centre (inside the footprint, one on RA = 0, one on the dense cluster that straddles RA = 0, one near
the south pole) each query is run once ("first call") and then ``--repeats`` times ("warm", median reported),
interleaving the engines so drift in machine load hits them alike:

* ``userbatch.ops.search.cone_search(table, ra, dec, 3600).to_pandas()``              (engine auto: pyarrow path)
* ``userbatch.ops.search.cone_search(table, ra, dec, 3600).to_pandas(engine="spark")``
* ``lsdb.open_catalog(path).cone_search(ra, dec, 3600).compute()``   (dask's default scheduler, no Client)

Every timing includes everything a user pays for per query: catalog/metadata lookup, planning, reading,
filtering and conversion to pandas. The row sets (objectId) of all three must be identical for every centre.

Last line: ``RESULT cone_latency_ratio_vs_lsdb=<ours auto / lsdb>`` where each side's figure is the median over
centres of its per-centre warm medians (smaller is better).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as C

log = logging.getLogger("bench.cone")

TABLE = "bench.object"
RADIUS_ARCSEC = 3600.0
#: (label, ra, dec). The default footprint is RA 350..10 x Dec -10..10 plus the cap Dec < -86; the cluster
#: (20 % of all objects, radius 0.5 deg) sits at (0.3, 2.0) and straddles RA = 0.
CENTRES = [
    ("ra0-equator", 0.0, 0.0),
    ("cluster-ra0", 0.3, 2.0),
    ("field-east", 5.0, -5.0),
    ("field-west", 354.0, 6.0),
    ("footprint-edge", 9.5, -9.5),
    ("south-cap", 45.0, -88.0),
]


# ------------------------------------------------------------------------------------------------ build / re-use

def data_dir(args) -> Path:
    return C.DATA_DIR / f"cone-{args.rows}-seed{args.seed}-t{args.threshold}-o{args.highest_order}"


def entry_for(location: Path, args):
    from userbatch.tables.catalog import TableEntry

    return TableEntry(name=TABLE, location=str(location), format="delta", pixel_threshold=args.threshold,
                      highest_order=args.highest_order, margin_radius_arcsec=args.margin_arcsec,
                      description="bench/cone.py simulated Object table")


def build_or_reuse(args, spark) -> dict:
    """A Delta table + HATS catalog of the same rows under bench/_data; registered in this run's catalog."""
    from userbatch.tables.catalog import Catalog
    from userbatch.tables.delta import is_delta_table, snapshot

    ddir = data_dir(args)
    manifest = ddir / "manifest.json"
    cat = Catalog()
    if manifest.exists() and not args.rebuild:
        meta = json.loads(manifest.read_text())
        table_loc = Path(meta["table"])
        if is_delta_table(table_loc) and Path(meta["hats_object"]).is_dir():
            cat.register(entry_for(table_loc, args))
            log.info("re-using table %s and HATS %s (%s)", table_loc, meta["hats_object"], meta["hats_source"])
            return meta
    shutil.rmtree(ddir, ignore_errors=True)
    ddir.mkdir(parents=True)
    paths = [str(p) for p in C.ensure_input(args.rows, args.seed)]
    from userbatch.tables.ingest import ingest

    timings: dict = {}
    table_loc = ddir / "table"
    with C.timed(timings, "build userbatch table (ingest)"):
        res = ingest(paths, TABLE, pixel_threshold=args.threshold, highest_order=args.highest_order,
                     margin_radius_arcsec=args.margin_arcsec, location=str(table_loc), spark=spark)
    log.info("ingest stages: %s", res.timings_s)
    hats_dir = ddir / "hats"
    try:
        from userbatch.tables.hats_io import export_hats
    except ImportError:
        export_hats = None
    if export_hats is not None and not args.hats_import:
        with C.timed(timings, "build HATS (export_hats)"):
            export_hats(TABLE, hats_dir, catalog_name="object")
        hats_object = str(hats_dir / "object")  # the primary catalog: a cone needs no margin
        source = "userbatch export_hats (hard-linked table files)"
    else:
        with C.timed(timings, "build HATS (hats-import)"):
            hats_object = _hats_import(args, paths, hats_dir)
        source = "hats-import"
    meta = {"rows": args.rows, "table": str(table_loc), "hats_object": hats_object, "hats_source": source,
            "table_rows": snapshot(table_loc).num_rows, "build_s": timings}
    manifest.write_text(json.dumps(meta, indent=1))
    return meta


def _hats_import(args, paths, out: Path) -> str:
    from dask.distributed import Client
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.pipeline import pipeline_with_client

    tmp = C.WORK_DIR / "cone-dask-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    with Client(n_workers=2, threads_per_worker=1, local_directory=str(tmp), dashboard_address=None) as client:
        pipeline_with_client(ImportArguments(
            output_artifact_name="object", output_path=str(out), input_file_list=paths, file_reader="parquet",
            ra_column="coord_ra", dec_column="coord_dec", pixel_threshold=args.threshold,
            highest_healpix_order=args.highest_order, dask_tmp=str(tmp), progress_bar=False, resume=False,
        ), client)
    shutil.rmtree(tmp, ignore_errors=True)
    return str(out / "object")


# ------------------------------------------------------------------------------------------------ queries

def q_ours(ra, dec, engine):
    from userbatch.ops.search import cone_search

    s = cone_search(TABLE, ra, dec, RADIUS_ARCSEC)
    return s.to_pandas() if engine == "auto" else s.to_pandas(engine=engine)


def q_lsdb(path, ra, dec):
    import lsdb

    # progress_bar=False: only suppresses the tqdm bar lsdb draws on stderr (no effect on the computation)
    return lsdb.open_catalog(path).cone_search(ra, dec, RADIUS_ARCSEC).compute(progress_bar=False)


def timed_call(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def ids_of(df) -> set:
    return set(map(int, df["objectId"].to_numpy()))


def boundary_check(ra0, dec0, frames: dict, sets: dict) -> str:
    """Explain a row-set difference: are the odd rows within float round-off of the cone's edge?"""
    import numpy as np

    all_ids = set.union(*sets.values())
    odd = {i for i in all_ids if not all(i in s for s in sets.values())}
    if not odd:
        return "identical"
    rows = []
    for df in frames.values():
        sel = df[df["objectId"].isin(odd)]
        rows.append(sel[["objectId", "coord_ra", "coord_dec"]])
    import pandas as pd

    sel = pd.concat(rows).drop_duplicates("objectId")
    ra, dec = np.radians(sel["coord_ra"].to_numpy()), np.radians(sel["coord_dec"].to_numpy())
    r0, d0 = np.radians(ra0), np.radians(dec0)
    hav = np.sin((dec - d0) / 2) ** 2 + np.cos(dec) * np.cos(d0) * np.sin((ra - r0) / 2) ** 2
    dist_arcsec = np.degrees(2 * np.arcsin(np.sqrt(hav))) * 3600
    worst = float(np.max(np.abs(dist_arcsec - RADIUS_ARCSEC)))
    counts = {k: len(odd & s) for k, s in sets.items()}
    return f"DIFFER on {len(odd)} id(s) (present in: {counts}); max |distance - radius| = {worst:.3g} arcsec"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=C.DEFAULT_ROWS, help="simulated objects (default %(default)s)")
    ap.add_argument("--seed", type=int, default=C.DEFAULT_SEED)
    ap.add_argument("--threshold", type=int, default=C.HATS_DEFAULT_THRESHOLD)
    ap.add_argument("--highest-order", type=int, default=C.HATS_DEFAULT_HIGHEST_ORDER)
    ap.add_argument("--margin-arcsec", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=7, help="warm calls per engine and centre (median; >= 5)")
    ap.add_argument("--spark-repeats", type=int, default=5, help="warm calls for the Spark engine")
    ap.add_argument("--no-spark", action="store_true", help="skip the engine='spark' measurements")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the table and HATS catalog in bench/_data")
    ap.add_argument("--hats-import", action="store_true",
                    help="build the HATS side with hats-import instead of userbatch's export_hats")
    ap.add_argument("--keep", action="store_true",
                    help="keep this run's USERBATCH_HOME (catalog db, Spark scratch) under bench/_work/")
    ap.add_argument("--json", type=Path, help="also write all measurements to this JSON file")
    ap.add_argument("--live-source", action="store_true",
                    help="import python/userbatch as it is during the run instead of a copy taken at the start")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    C.setup_logging(args.verbose)
    if not args.verbose:  # one 'search plan' line per query otherwise
        logging.getLogger("userbatch.ops.search").setLevel(logging.WARNING)
    if args.repeats < 5:
        ap.error("--repeats must be at least 5")

    if args.work is None:  # parent: pin the code, then run the measurements in a child process
        return C.run_measuring_child(__file__, "cone", args, argv)
    work = args.work
    C.check_frozen_source()
    os.environ["USERBATCH_HOME"] = str(work / "userbatch_home")
    os.environ.pop("USERBATCH_WAREHOUSE", None)
    os.environ.pop("USERBATCH_DB_URL", None)
    log.info("%s", C.env_summary())
    return run(args, work)


def run(args, work: Path) -> int:
    import numpy as np
    import userbatch
    from userbatch.ops.search import cone_search

    t0 = time.perf_counter()
    spark = userbatch.session()
    spark_start = time.perf_counter() - t0
    log.info("Spark session start: %.1f s (not in any query time)", spark_start)
    meta = build_or_reuse(args, spark)
    hats_path = meta["hats_object"]
    import dask

    log.info("dask scheduler: %s (no distributed Client)", dask.config.get("scheduler", "default (threads)"))

    results = []
    all_ok = True
    for label, ra, dec in CENTRES:
        plan = cone_search(TABLE, ra, dec, RADIUS_ARCSEC).plan
        import lsdb

        lsdb_parts = len(lsdb.open_catalog(hats_path).cone_search(ra, dec, RADIUS_ARCSEC).get_healpix_pixels())
        first: dict = {}
        frames: dict = {}
        queries = {
            "auto": functools.partial(q_ours, ra, dec, "auto"),
            "lsdb": functools.partial(q_lsdb, hats_path, ra, dec),
            "spark": functools.partial(q_ours, ra, dec, "spark"),
        }
        first["auto"], frames["auto"] = timed_call(queries["auto"])
        first["lsdb"], frames["lsdb"] = timed_call(queries["lsdb"])
        warm: dict = {"auto": [], "lsdb": []}
        for i in range(args.repeats):
            order = ("auto", "lsdb") if i % 2 == 0 else ("lsdb", "auto")
            for eng in order:
                warm[eng].append(timed_call(queries[eng])[0])
        if not args.no_spark:
            first["spark"], frames["spark"] = timed_call(queries["spark"])
            warm["spark"] = [timed_call(queries["spark"])[0] for _ in range(args.spark_repeats)]
        sets = {k: ids_of(v) for k, v in frames.items()}
        check = boundary_check(ra, dec, frames, sets)
        all_ok &= check == "identical"
        row = {
            "centre": label, "ra": ra, "dec": dec, "rows": len(sets["auto"]),
            "first_s": first, "warm_s": warm, "warm_median_s": {k: statistics.median(v) for k, v in warm.items()},
            "check": check, "plan": plan.describe(), "ours_partitions": plan.partitions_selected,
            "ours_rows_in_files": plan.rows_selected_files, "lsdb_partitions": lsdb_parts,
        }
        log.info("%s: %d rows, warm medians %s, %s", label, row["rows"],
                 {k: round(v, 3) for k, v in row["warm_median_s"].items()}, check)
        results.append(row)

    engines = ["auto", "lsdb"] + ([] if args.no_spark else ["spark"])
    overall = {e: statistics.median(r["warm_median_s"][e] for r in results) for e in engines}

    print()
    print(f"== cone benchmark: {meta['table_rows']:,} rows, 1-degree radius, {args.repeats} warm repeats "
          f"({args.spark_repeats} for Spark) ==")
    print(C.env_summary() + "  (shared machine: timings are noisy)")
    print(f"userbatch code measured: {os.environ.get('BENCH_CODE', 'live python/userbatch')}")
    print(f"HATS side: {meta['hats_source']} at {hats_path}; Spark session start {spark_start:.1f} s (not counted)")
    print()
    table = []
    for r in results:
        w, f = r["warm_median_s"], r["first_s"]
        line = [r["centre"], f"{r['ra']:g},{r['dec']:g}", f"{r['rows']:,}",
                f"{r['ours_partitions']}/{r['lsdb_partitions']}", f"{r['ours_rows_in_files']:,}",
                f"{f['auto']:.3f}", f"{w['auto']:.3f}", f"{f['lsdb']:.3f}", f"{w['lsdb']:.3f}",
                f"{w['auto'] / w['lsdb']:.2f}"]
        if not args.no_spark:
            line += [f"{f['spark']:.2f}", f"{w['spark']:.2f}", f"{w['spark'] / w['lsdb']:.2f}"]
        line.append("ok" if r["check"] == "identical" else "DIFF")
        table.append(line)
    headers = ["centre", "ra,dec", "rows", "parts ub/lsdb", "ub rows in files", "ub first", "ub warm",
               "lsdb first", "lsdb warm", "ub/lsdb"]
    if not args.no_spark:
        headers += ["spark first", "spark warm", "spark/lsdb"]
    headers.append("same ids")
    print(C.fmt_table(table, headers))
    print("(seconds; warm = median of the repeats; 'ub rows in files' = rows in the files the plan kept,"
          " before row-group skipping)")
    for r in results:
        if r["check"] != "identical":
            print(f"  {r['centre']}: {r['check']}")
    ratios = [r["warm_median_s"]["auto"] / r["warm_median_s"]["lsdb"] for r in results]
    print(f"per-centre ub/lsdb ratios: geometric mean {float(np.exp(np.mean(np.log(ratios)))):.3f}")
    print(f"median over centres of warm medians: ours auto {overall['auto']:.3f} s, lsdb {overall['lsdb']:.3f} s"
          + ("" if args.no_spark else f", ours spark {overall['spark']:.3f} s"))
    print(f"row sets identical for every centre: {'YES' if all_ok else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "spark_start_s": spark_start, "results": results,
                                         "overall": overall}, indent=1, default=str))
    spark.stop()
    if not args.no_spark:
        print(f"RESULT cone_latency_ratio_spark_vs_lsdb={overall['spark'] / overall['lsdb']:.3f}")
    print(f"RESULT cone_latency_ratio_vs_lsdb={overall['auto'] / overall['lsdb']:.3f}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
