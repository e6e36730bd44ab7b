#!/usr/bin/env python
"""Lomb–Scargle periodograms per object: userbatch ``periodogram`` on a director table vs an astropy per-object loop.

Data: the simulator's survey (``--objects``, default 10,000; ``--visits``, default 1,700 over its 730 days, so
about 280 r-band visits and a median of ~150 r-band points per object; ``--seed``): Object, Visit and ForcedSource
(all six bands) written once as Parquet under bench/_data and then held as userbatch tables (built once, re-used;
``--rebuild`` forces a new build): Object HEALPix-partitioned (pixel threshold objects // 16), Visit non-spatial,
ForcedSource a director child of Object (``write_child_table(..., times=VisitTimes(visit table))``: every row in
its object's partition, carrying the visit's ``expMidptMJD``).

Computed, per object, on its r-band series (both sides drop the other bands' rows): the generalised Lomb–Scargle
power (astropy's ``standard`` normalisation, floating mean) on one frequency grid, its highest peak (period and
power) and Baluev's false-alarm probability of that peak. The grid is userbatch's default for the data
(``res.spec.grid``: periods 0.05 d .. the 2-year baseline, 5 samples per peak, ~73k frequencies), and the
baseline is handed exactly that array.

* userbatch: ``periodogram("bench.pg_forced_source", bands=("r",), engine="local").to_arrow()`` (reads its files,
  one partition per task on a thread per core; nifty-ls batches the series of a partition); ``engine="spark"``
  (``local[2]``) reported, not in the RESULT line;
* baseline: what users write today, in one process: the director table's rows read with pyarrow (untimed), the
  r-band series grouped with pandas (timed and reported separately, not in the ratio), then for each series with at
  least 5 points ``ls = LombScargle(t, y, dy)``, ``p = ls.power(freq)`` (astropy's method "auto": "fast" on this
  regular grid), ``argmax``, ``ls.false_alarm_probability(p[i], method="baluev", maximum_frequency=freq[-1])``.
  **Timed: the loop.** At ~0.15-0.3 s per series on this grid the full loop over 10k series takes 25-45 minutes,
  so by default it runs on a random subset of ``--baseline-series`` (default 1,000) series and its time is scaled
  by (all series / timed series); ``--baseline-series 0`` loops over every series.

Warm = best of ``--repeats`` userbatch calls after a first call in the same process. Checked (exit 1 otherwise):
the same series (object ids, point counts) on both sides; on every series the loop ran, the best period is the same
grid frequency for at least 99 % of them and the best powers agree within 1e-6; the Spark engine's output equals the
local engine's. Also reported: the largest FAP difference, and (``--cython-series``, default 20) astropy's exact
``method="cython"`` on a few of those series against both "fast" and userbatch.

Last line: ``RESULT ls_speedup_vs_astropy_loop=<astropy loop time (scaled to all series) / userbatch local warm>
objects=<objects>``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as C

log = logging.getLogger("bench.periodogram")

DEFAULT_OBJECTS = 10_000
DEFAULT_VISITS = 1_700
DEFAULT_BASELINE_SERIES = 1_000
BAND = "r"
#: ForcedSource rows per generated Parquet file.
FS_FILE_ROWS = 2_000_000
OBJECT, VISIT, FORCED = "bench.pg_object", "bench.pg_visit", "bench.pg_forced_source"
COLUMNS = ["objectId", "band", "expMidptMJD", "psfFlux", "psfFluxErr"]
MIN_POINTS = 5  # userbatch.ops.periodogram.MIN_POINTS
POWER_TOL = 1e-6
PERIOD_AGREEMENT = 0.99


def sig3(x: float) -> str:
    """Three significant digits, never in exponent notation."""
    if not math.isfinite(x) or x == 0:
        return str(x)
    d = 2 - math.floor(math.log10(abs(x)))
    return f"{round(x, d):.{max(d, 0)}f}"


def threshold_of(args) -> int:
    return max(1, args.objects // 16)


# ------------------------------------------------------------------------------------------------ input data

def input_dir(args) -> Path:
    return C.DATA_DIR / f"periodogram-{args.objects}-v{args.visits}-seed{args.seed}"


def ensure_pg_input(args) -> dict:
    """Object, Visit and ForcedSource Parquet under bench/_data, generated once; ``manifest.json`` written last."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from userbatch.sim import SurveyConfig, simulate_forced_sources, simulate_objects, simulate_visits

    out = input_dir(args)
    manifest = out / "manifest.json"
    if manifest.exists():
        meta = json.loads(manifest.read_text())
        if all((out / f).exists() for f in [meta["object"], meta["visit"], *meta["forced_source"]]):
            log.info("re-using input %s (%d forced sources)", out, meta["rows"]["forced_source"])
            return meta
    shutil.rmtree(out, ignore_errors=True)
    (out / "forced_source").mkdir(parents=True)
    t0 = time.perf_counter()
    cfg = SurveyConfig(n_objects=args.objects, n_visits=args.visits, seed=args.seed)
    objects, visits = simulate_objects(cfg), simulate_visits(cfg)
    fs = simulate_forced_sources(cfg, objects, visits)
    pq.write_table(pa.Table.from_pandas(objects, preserve_index=False), out / "object.parquet")
    pq.write_table(pa.Table.from_pandas(visits, preserve_index=False), out / "visit.parquet")
    n_obj, n_vis, n_fs = len(objects), len(visits), len(fs)
    del objects, visits
    files = []
    for i, start in enumerate(range(0, n_fs, FS_FILE_ROWS)):
        name = f"forced_source/part-{i:05d}.parquet"
        pq.write_table(pa.Table.from_pandas(fs.iloc[start:start + FS_FILE_ROWS], preserve_index=False), out / name)
        files.append(name)
    del fs
    meta = {"objects": args.objects, "visits": args.visits, "seed": args.seed, "survey_days": cfg.survey_days,
            "object": "object.parquet", "visit": "visit.parquet", "forced_source": files,
            "rows": {"object": n_obj, "visit": n_vis, "forced_source": n_fs}}
    manifest.write_text(json.dumps(meta, indent=1))
    log.info("generated %d objects, %d visits, %d forced sources under %s in %.1f s", n_obj, n_vis, n_fs, out,
             time.perf_counter() - t0)
    return meta


# ------------------------------------------------------------------------------------------------ build / re-use

def build_dir(args) -> Path:
    return input_dir(args) / f"tables-t{threshold_of(args)}"


def build_worker(args) -> int:
    """Child process: the three userbatch tables under build_dir, their catalog entries in ``tables.json``."""
    meta = ensure_pg_input(args)
    return C.build_survey_tables(input_dir(args), meta, build_dir(args), args.work, threshold_of(args),
                                 (OBJECT, VISIT, FORCED), "bench/periodogram.py")


def ensure_built(args, env: dict) -> dict:
    ddir = build_dir(args)
    if args.rebuild or not (ddir / "tables.json").exists():
        log.info("building the userbatch tables under %s (Spark local[2]; takes minutes)", ddir)
        cmd = [sys.executable, __file__, "--build-worker", "--work", str(args.work), *common_args(args)]
        subprocess.run(cmd, check=True, env=env)
    else:
        log.info("re-using built tables under %s", ddir)
    return json.loads((ddir / "tables.json").read_text())


def common_args(args) -> list[str]:
    return (["--objects", str(args.objects), "--visits", str(args.visits), "--seed", str(args.seed)]
            + (["-v"] if args.verbose else []))


def register(built: dict) -> None:
    from userbatch.tables.catalog import Catalog, TableEntry

    cat = Catalog()
    for name, d in built["entries"].items():
        if not cat.exists(name):
            cat.register(TableEntry(**d))


def director_files(name: str) -> list[str]:
    from userbatch.tables.catalog import Catalog
    from userbatch.tables.read import resolve

    snap = resolve(Catalog().get(name))
    return [str(Path(snap.location) / p) for p in snap.files.column("path").to_pylist()]


# ------------------------------------------------------------------------------------------------ the two sides

def plan_userbatch(engine: str):
    from userbatch.ops.periodogram import periodogram

    return periodogram(FORCED, bands=(BAND,), engine=engine)


def call_userbatch(engine: str):
    """What a user runs: plan (grid from the table's time statistics) and compute, one call."""
    return plan_userbatch(engine).to_arrow()


def read_director(files: list[str]):
    """The director table's rows (every band) as pandas, ``band`` as a categorical."""
    import pyarrow.parquet as pq

    return pq.ParquetDataset(files).read(columns=COLUMNS).to_pandas(strings_to_categorical=True)


def group_series(df) -> list[tuple]:
    """The user's grouping: the band's finite rows, sorted by object and time, one (objectId, t, y, dy) per object
    with at least MIN_POINTS points (the same rows userbatch keeps)."""
    import numpy as np

    d = df[(df["band"] == BAND).to_numpy() & np.isfinite(df["expMidptMJD"]).to_numpy()
           & np.isfinite(df["psfFlux"]).to_numpy() & np.isfinite(df["psfFluxErr"]).to_numpy()
           & (df["psfFluxErr"] > 0).to_numpy()]
    d = d.sort_values(["objectId", "expMidptMJD"], ignore_index=True)
    out = []
    for oid, g in d.groupby("objectId", sort=True):
        if len(g) >= MIN_POINTS:
            out.append((int(oid), g["expMidptMJD"].to_numpy(np.float64), g["psfFlux"].to_numpy(np.float64),
                        g["psfFluxErr"].to_numpy(np.float64)))
    return out


def astropy_loop(series: list[tuple], freq, method: str | None = None) -> dict:
    """The per-object loop users write: LombScargle per series on the given grid, best peak, Baluev FAP."""
    import numpy as np
    from astropy.timeseries import LombScargle

    n = len(series)
    idx = np.empty(n, np.int64)
    power = np.empty(n)
    fap = np.empty(n)
    fmax = freq[-1]
    for k, (_, t, y, dy) in enumerate(series):
        ls = LombScargle(t, y, dy)
        p = ls.power(freq) if method is None else ls.power(freq, method=method)
        i = int(np.argmax(p))
        idx[k] = i
        power[k] = p[i]
        fap[k] = ls.false_alarm_probability(p[i], method="baluev", maximum_frequency=fmax)
    return {"objectId": np.array([s[0] for s in series], np.int64), "idx": idx, "power": power, "fap": fap,
            "period": 1.0 / freq[idx]}


def astropy_auto_method(series: list[tuple], freq) -> str:
    """The method astropy's ``method="auto"`` picks for these inputs."""
    from astropy.timeseries.periodograms.lombscargle.implementations.main import validate_method

    _, _, _, dy = series[0]
    return validate_method("auto", dy=dy, fit_mean=True, nterms=1, frequency=freq, assume_regular_frequency=False)


# ------------------------------------------------------------------------------------------------ checks

def ub_by_object(tbl) -> dict:
    """userbatch's rows that have a periodogram (>= MIN_POINTS points), by objectId."""
    import numpy as np

    keep = tbl.filter(tbl.column("best_power").is_valid())
    ids = keep.column("objectId").to_numpy()
    order = np.argsort(ids, kind="stable")

    def col(c):
        return keep.column(c).to_numpy(zero_copy_only=False).astype(np.float64)[order]

    return {"objectId": ids[order], "n_points": keep.column("n_points").to_numpy()[order],
            "period": col("best_period_day"), "power": col("best_power"), "fap": col("fap")}


def compare_to(ub: dict, base: dict, grid, label: str) -> tuple[bool, list[str]]:
    """Best period (as a grid index), best power and FAP of ``base``'s series against userbatch's."""
    import numpy as np

    pos = np.searchsorted(ub["objectId"], base["objectId"])
    pos = np.minimum(pos, len(ub["objectId"]) - 1)
    found = ub["objectId"][pos] == base["objectId"]
    if not found.all():
        return False, [f"  {label}: {int((~found).sum()):,} series have no userbatch periodogram"]
    ub_idx = np.rint((1.0 / ub["period"][pos] - grid.fmin) / grid.df).astype(np.int64)
    same = ub_idx == base["idx"]
    dpow = np.abs(ub["power"][pos] - base["power"])
    fa, fb = ub["fap"][pos], base["fap"]
    both = (fa > 1e-300) & (fb > 1e-300)
    dfap = float(np.max(np.abs(fa[both] - fb[both]) / fb[both])) if both.any() else 0.0
    n = len(same)
    ok = same.mean() >= PERIOD_AGREEMENT and float(dpow.max()) <= POWER_TOL
    notes = [(f"  {label}: {n:,} series; best period the same grid frequency for {int(same.sum()):,} "
              f"({same.mean():.2%}); max |best power diff| {dpow.max():.1e} (tolerance {POWER_TOL:g}); "
              f"FAP max rel diff {dfap:.1e}")]
    if not same.all():
        k = np.flatnonzero(~same)[:5]
        notes.append("    differing (objectId, grid index ub / astropy, power ub / astropy): " + "; ".join(
            f"({base['objectId'][j]}, {ub_idx[j]} / {base['idx'][j]}, {ub['power'][pos][j]:.6f} / "
            f"{base['power'][j]:.6f})" for j in k))
    return ok, notes


# ------------------------------------------------------------------------------------------------ measurement

def timed_call(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def measure(args) -> int:
    import gc

    import numpy as np

    work = args.work
    env = dict(os.environ)
    env["USERBATCH_HOME"] = str(work / "userbatch_home")
    os.environ["USERBATCH_HOME"] = env["USERBATCH_HOME"]
    for k in ("USERBATCH_WAREHOUSE", "USERBATCH_DB_URL"):
        os.environ.pop(k, None)
        env.pop(k, None)
    log.info("%s", C.env_summary())
    meta = ensure_pg_input(args)
    built = ensure_built(args, env)
    register(built)
    rows = int(built["results"]["forced_source"]["rows"])
    r: dict = {"rows": rows, "input_rows": meta["rows"], "built": built}
    files = director_files(FORCED)
    r["files"] = len(files)
    C.warm_page_cache([Path(p) for p in files])

    import astropy.timeseries  # noqa: F401  (imports before the first calls, on both sides)
    import pandas  # noqa: F401
    import userbatch.ops.periodogram  # the timed calls import nothing new

    # ---- userbatch, local engine: a first call, then the warm repeats
    grid = plan_userbatch("local").spec.grid
    freq = grid.frequencies
    r["grid"] = {"nf": grid.nf, "fmin": grid.fmin, "df": grid.df, "fmax": grid.fmax}
    log.info("grid: %d frequencies %.5g..%.5g /day", grid.nf, grid.fmin, grid.fmax)
    r["first_s"], _, tbl = timed_call(lambda: call_userbatch("local"))
    log.info("first userbatch local: %.2f s", r["first_s"])
    warm, warm_cpu = [], []
    for _ in range(args.repeats):
        del tbl
        gc.collect()
        w, c, tbl = timed_call(lambda: call_userbatch("local"))
        warm.append(w)
        warm_cpu.append(c)
        log.info("warm userbatch local: %.2f s (process CPU %.1f s)", w, c)
    r.update(warm_s=warm, warm_cpu_s=warm_cpu)
    ub = ub_by_object(tbl)
    r["ub_rows"] = tbl.num_rows
    del tbl
    gc.collect()

    # ---- baseline input (untimed read), grouping (timed, reported), loop (timed)
    t0 = time.perf_counter()
    df = read_director(files)
    r["baseline_read_s"] = time.perf_counter() - t0
    if len(df) != rows:
        raise RuntimeError(f"director files hold {len(df)} rows, the build wrote {rows}")
    r["group_s"], _, series = timed_call(functools.partial(group_series, df))
    del df
    gc.collect()
    n_series = len(series)
    npts = np.array([len(s[1]) for s in series])
    r["n_series"] = n_series
    r["points"] = {"median": float(np.median(npts)), "p5": float(np.percentile(npts, 5)),
                   "p95": float(np.percentile(npts, 95)), "total": int(npts.sum())}
    log.info("baseline: %d %s-band series (median %d points) grouped in %.2f s", n_series, BAND,
             r["points"]["median"], r["group_s"])
    checks = []
    base_ids = np.array([s[0] for s in series], np.int64)
    same_series = np.array_equal(base_ids, ub["objectId"]) and np.array_equal(npts, ub["n_points"])
    checks.append((same_series, (f"series: userbatch {len(ub['objectId']):,} with >= {MIN_POINTS} points, "
                                 f"baseline {n_series:,}; object ids and point counts "
                                 f"{'identical' if same_series else 'DIFFER'}")))
    r["astropy_method"] = astropy_auto_method(series, freq)
    if args.baseline_series and args.baseline_series < n_series:
        rng = np.random.default_rng(args.seed)
        pick = np.sort(rng.choice(n_series, args.baseline_series, replace=False))
        timed_series = [series[i] for i in pick]
    else:
        timed_series = series
    r["n_timed"] = len(timed_series)
    log.info("astropy loop (method auto -> %s) over %d of %d series ...", r["astropy_method"], r["n_timed"], n_series)
    r["loop_s"], r["loop_cpu_s"], base = timed_call(functools.partial(astropy_loop, timed_series, freq))
    r["loop_scaled_s"] = r["loop_s"] * n_series / r["n_timed"]
    log.info("astropy loop: %.1f s for %d series (%.1f ms each) -> %.1f s for all %d", r["loop_s"], r["n_timed"],
             1e3 * r["loop_s"] / r["n_timed"], r["loop_scaled_s"], n_series)
    ok, notes = compare_to(ub, base, grid, f"userbatch vs astropy '{r['astropy_method']}'")
    checks.append((ok, "best peak, timed series:\n" + "\n".join(notes)))

    # ---- astropy's exact method on a few of the timed series (reported; "fast" is an approximation in general)
    if args.cython_series:
        few = timed_series[:args.cython_series]
        r["n_cython"] = len(few)
        r["cython_s"], _, exact = timed_call(lambda: astropy_loop(few, freq, method="cython"))
        sub = {k: v[:len(few)] for k, v in base.items()}
        same_fast = float(np.mean(exact["idx"] == sub["idx"]))
        notes = [(f"  astropy 'cython' vs '{r['astropy_method']}': {len(few)} series; same best frequency "
                  f"{same_fast:.0%}; max |best power diff| {np.max(np.abs(exact['power'] - sub['power'])):.1e}")]
        _, n2 = compare_to(ub, exact, grid, "userbatch vs astropy 'cython'")
        r["cython_notes"] = notes + n2
        log.info("astropy cython: %.1f s for %d series", r["cython_s"], len(few))
    del series, timed_series
    gc.collect()

    # ---- Spark engine (reported, not in the RESULT line)
    if not args.no_spark:
        import userbatch.spark

        t0 = time.perf_counter()
        spark = userbatch.spark.session(master="local[2]")
        r["spark_start_s"] = time.perf_counter() - t0
        r["spark_first_s"], _, tbl = timed_call(lambda: call_userbatch("spark"))
        del tbl
        r["spark_warm_s"], _, tbl = timed_call(lambda: call_userbatch("spark"))
        sp = ub_by_object(tbl)
        # not bit-identical: finufft's result depends in the last digits on its thread count (a Spark task's
        # Python worker is not this process), so the same tolerances as against astropy
        same = np.array_equal(sp["objectId"], ub["objectId"]) and np.array_equal(sp["n_points"], ub["n_points"])
        if same:
            same_p = float(np.mean(sp["period"] == ub["period"]))
            dpow = float(np.max(np.abs(sp["power"] - ub["power"]))) if len(sp["power"]) else 0.0
            same = same_p >= PERIOD_AGREEMENT and dpow <= POWER_TOL
            note = (f"same series; best period equal for {same_p:.2%}, max |best power diff| {dpow:.1e}")
        else:
            note = "series DIFFER"
        checks.append((same, f"userbatch spark vs local: {len(sp['objectId']):,} series; {note}"))
        del tbl, sp
        spark.stop()
        log.info("spark: start %.1f s, first %.2f s, warm %.2f s", r["spark_start_s"], r["spark_first_s"],
                 r["spark_warm_s"])
    ok = all(c[0] for c in checks)
    r["checks"] = [c[1] for c in checks]
    report(args, r, ok)
    return 0 if ok else 1


def report(args, r: dict, ok: bool) -> None:
    b = r["built"]["results"]
    ub_warm = min(r["warm_s"])
    loop_all = r["loop_scaled_s"]
    n_series, n_timed = r["n_series"], r["n_timed"]
    g, pts = r["grid"], r["points"]
    scaled = n_timed < n_series
    print()
    print(f"== periodogram benchmark: {b['object']['rows']:,} objects, {r['input_rows']['visit']:,} visits, "
          f"{r['rows']:,} ForcedSource rows; {BAND}-band series ==")
    print(C.env_summary() + "  (shared machine: timings are noisy)")
    print(f"userbatch code measured: {os.environ.get('BENCH_CODE', 'live python/userbatch')}")
    print(f"director table: {b['forced_source']['partitions']} partitions (Object pixel threshold "
          f"{threshold_of(args):,}), {r['files']} files; grid {g['nf']:,} frequencies {g['fmin']:.4g}..{g['fmax']:.4g}"
          f" /day (periods 0.05 d .. {1 / g['fmin']:.0f} d), the same array on both sides")
    print(f"series: {n_series:,} {BAND}-band light curves with >= {MIN_POINTS} points; points per series median "
          f"{pts['median']:.0f} (5-95 %: {pts['p5']:.0f}-{pts['p95']:.0f}), {pts['total']:,} points")
    print()
    loop_label = f"astropy loop ('{r['astropy_method']}'), " + (
        f"{n_timed:,} random series timed, scaled x{n_series / n_timed:.2f}" if scaled else f"all {n_series:,} series")
    table = [
        [loop_label, f"{loop_all:.1f}", f"{r['loop_cpu_s'] * n_series / n_timed:.1f}"],
    ]
    if scaled:
        table.append([f"  measured: {n_timed:,} series ({1e3 * r['loop_s'] / n_timed:.0f} ms per series)",
                      f"{r['loop_s']:.1f}", f"{r['loop_cpu_s']:.1f}"])
    table += [
        ["baseline grouping (pandas sort + groupby; not in the ratio)", f"{r['group_s']:.2f}", ""],
        ["(untimed) baseline input read, director files -> pandas", f"{r['baseline_read_s']:.2f}", ""],
        ["userbatch local: first call", f"{r['first_s']:.2f}", ""],
        [f"userbatch local: warm, reads included (best of {len(r['warm_s'])})", f"{ub_warm:.2f}",
         f"{min(r['warm_cpu_s']):.1f}"],
    ]
    if "spark_warm_s" in r:
        table += [["userbatch spark: session start local[2] (not counted)", f"{r['spark_start_s']:.1f}", ""],
                  ["userbatch spark: first call", f"{r['spark_first_s']:.2f}", ""],
                  ["userbatch spark: warm (one call)", f"{r['spark_warm_s']:.2f}", ""]]
    if "cython_s" in r:
        table.append([f"(check) astropy 'cython', {r['n_cython']} series (not timed against)",
                      f"{r['cython_s']:.1f}", ""])
    print(C.fmt_table(table, ["what", "seconds", "CPU s"]))
    print("(userbatch warm: in one process after a first call; it reads its Parquet files, all bands, and keeps "
          f"the {BAND} band; the astropy loop starts from grouped numpy arrays; CPU s: this process's CPU)")
    print()
    for c in r["checks"]:
        print(c)
    for line in r.get("cython_notes", []):
        print(line)
    print(f"same best periods (>= {PERIOD_AGREEMENT:.0%}) and powers (within {POWER_TOL:g}): {'YES' if ok else 'NO'}")
    print(f"userbatch local warm {ub_warm:.2f} s vs astropy loop {loop_all:.1f} s"
          f"{f' (scaled from {n_timed} of {n_series} series)' if scaled else ''} -> {loop_all / ub_warm:.1f}x"
          f"; per series {1e3 * ub_warm / n_series:.2f} ms vs {1e3 * loop_all / n_series:.1f} ms")
    if "spark_warm_s" in r:
        print(f"userbatch spark warm {r['spark_warm_s']:.2f} s -> {loop_all / r['spark_warm_s']:.1f}x the astropy loop")
    if args.json:
        args.json.write_text(json.dumps(r, indent=1, default=str))
    print(f"RESULT ls_speedup_vs_astropy_loop={sig3(loop_all / ub_warm)} objects={b['object']['rows']}")


# ------------------------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=DEFAULT_OBJECTS, help="simulated objects (default %(default)s)")
    ap.add_argument("--visits", type=int, default=DEFAULT_VISITS,
                    help="simulated visits, all bands, over 730 days (default %(default)s)")
    ap.add_argument("--seed", type=int, default=C.DEFAULT_SEED)
    ap.add_argument("--repeats", type=int, default=2, help="warm userbatch calls (best reported; default 2)")
    ap.add_argument("--baseline-series", type=int, default=DEFAULT_BASELINE_SERIES,
                    help="series the astropy loop is timed on, a random subset, scaled to all (default "
                         "%(default)s; 0 = every series)")
    ap.add_argument("--cython-series", type=int, default=20,
                    help="series also run with astropy's exact method='cython' as a check (default %(default)s; "
                         "0 = skip)")
    ap.add_argument("--no-spark", action="store_true", help="skip the engine='spark' measurement")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the tables in bench/_data")
    ap.add_argument("--keep", action="store_true", help="keep this run's work dir under bench/_work/")
    ap.add_argument("--json", type=Path, help="also write all measurements to this JSON file")
    ap.add_argument("--live-source", action="store_true",
                    help="import python/userbatch as it is during the run instead of a copy taken at the start")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--build-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.rows = args.objects  # names the work dir
    C.setup_logging(args.verbose)
    if args.build_worker:
        return build_worker(args)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if args.baseline_series < 0 or args.cython_series < 0:
        ap.error("--baseline-series and --cython-series must be >= 0")
    if args.work is None:  # parent: pin the code, then measure in a child process
        return C.run_measuring_child(__file__, "periodogram", args, argv)
    C.check_frozen_source()
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
