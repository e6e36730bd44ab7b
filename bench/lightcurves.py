#!/usr/bin/env python
"""Per-object light-curve features: userbatch ``features`` on a director table vs a single-process pandas baseline.

Data: the simulator's survey (``--objects``, default 200,000; ``--visits``, default 200; ``--seed``): Object,
Visit and ForcedSource (about 105 measurements per object, 21M rows at the default size), written once as Parquet
under bench/_data and then held as userbatch tables (built once, re-used; ``--rebuild`` forces a new build):
Object HEALPix-partitioned (``--threshold``, default objects // 40, a few dozen partitions), Visit non-spatial,
ForcedSource a director child of Object (``write_child_table(..., times=VisitTimes(visit table))``: every row in
its object's partition, carrying the visit's ``expMidptMJD``).

Computed, per object and band: the 19 DP1 statistics (``userbatch.ops.lightcurve_kernels``) plus the light-curve
package's StetsonK, Eta and BeyondNStd(nstd=1); one row per object, ``{band}_{feature}`` columns.

* userbatch: ``features("bench.lc_forced_source", engine="local", lc_features=LC).to_arrow()`` (reads its files,
  per partition on a thread per core); ``engine="spark"`` (``local[2]``) reported, not in the RESULT line;
* baseline: one process, the same rows (the director table's files read with pyarrow beforehand, untimed, so
  both start from rows already carrying the time), ``sort_values`` + ``groupby(["objectId", "band"])`` with
  vectorised pandas/numpy for every statistic (Stetson's reweighted mean iterated over all groups at once) and the
  same ``light_curve.Extractor(...).many(..., n_jobs=1)``, pivoted to the same wide layout. Also timed once each
  end to end: read the director files + compute; read the raw ForcedSource + Visit Parquet, ``merge`` on visit,
  compute.

Warm = best of ``--repeats`` calls in one process after a first call, the two sides interleaved. Checked (exit 1
otherwise): psfFluxMean, psfFluxSigma, psfFluxPercentile50, psfFluxStetsonJ, psfFluxLinearSlope, psfFluxNdata and
lc StetsonK agree for every object and band (``np.allclose``, rtol 1e-6, NaN == NaN).

Last line: ``RESULT lc_speedup_vs_pandas=<baseline warm / userbatch local warm> rows=<forced source rows>``.
"""

from __future__ import annotations

import argparse
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

log = logging.getLogger("bench.lightcurves")

DEFAULT_OBJECTS = 200_000
DEFAULT_VISITS = 200
#: ForcedSource rows per generated Parquet file.
FS_FILE_ROWS = 2_000_000
OBJECT, VISIT, FORCED = "bench.lc_object", "bench.lc_visit", "bench.lc_forced_source"
LC = ["StetsonK", "Eta", {"BeyondNStd": {"nstd": 1.0}}]
COLUMNS = ["objectId", "band", "expMidptMJD", "psfFlux", "psfFluxErr"]
KEYS = ["objectId", "band"]
#: DP1 features compared between the two sides (plus the first light-curve extractor's output).
CHECKED = ["psfFluxMean", "psfFluxSigma", "psfFluxPercentile50", "psfFluxStetsonJ", "psfFluxLinearSlope",
           "psfFluxNdata"]
RTOL = 1e-6


def sig3(x: float) -> str:
    """Three significant digits, never in exponent notation."""
    if not math.isfinite(x) or x == 0:
        return str(x)
    d = 2 - math.floor(math.log10(abs(x)))
    return f"{round(x, d):.{max(d, 0)}f}"


def threshold_of(args) -> int:
    return args.threshold or max(1, args.objects // 40)


# ------------------------------------------------------------------------------------------------ input data

def input_dir(args) -> Path:
    return C.DATA_DIR / f"lightcurves-{args.objects}-v{args.visits}-seed{args.seed}"


def ensure_lc_input(args) -> dict:
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
    meta = {"objects": args.objects, "visits": args.visits, "seed": args.seed, "object": "object.parquet",
            "visit": "visit.parquet", "forced_source": files,
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
    meta = ensure_lc_input(args)
    return C.build_survey_tables(input_dir(args), meta, build_dir(args), args.work, threshold_of(args),
                                 (OBJECT, VISIT, FORCED), "bench/lightcurves.py")


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
    return (["--objects", str(args.objects), "--visits", str(args.visits), "--seed", str(args.seed),
             "--threshold", str(threshold_of(args))] + (["-v"] if args.verbose else []))


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

def call_userbatch(engine: str):
    from userbatch.ops.lightcurves import features

    return features(FORCED, engine=engine, lc_features=LC).to_arrow()


def read_director(files: list[str]):
    """The director table's rows as pandas, ``band`` as a categorical (what a careful user reads it as)."""
    import pyarrow.parquet as pq

    return pq.ParquetDataset(files).read(columns=COLUMNS).to_pandas(strings_to_categorical=True)


def read_raw(src: Path, meta: dict):
    """The raw inputs: ForcedSource (no time) merged with Visit on ``visit``."""
    import pandas as pd
    import pyarrow.parquet as pq

    fs = pq.ParquetDataset([str(src / f) for f in meta["forced_source"]]).read(
        columns=["objectId", "visit", "band", "psfFlux", "psfFluxErr"]).to_pandas(strings_to_categorical=True)
    visits = pd.read_parquet(src / meta["visit"], columns=["visit", "expMidptMJD"])
    return fs.merge(visits, on="visit", how="inner").drop(columns="visit")


def make_extractor():
    import light_curve

    return light_curve.Extractor(light_curve.StetsonK(), light_curve.Eta(), light_curve.BeyondNStd(nstd=1.0))


def baseline_features(df):
    """The careful single-process user: pandas groupby, vectorised; the same definitions as the DP1 kernel.

    Sums over a group's rows use ``np.bincount`` on the group numbers (in row order, i.e. time order within a
    group, as the DP1 kernel adds them); order statistics, std, skew, min/max use pandas' grouped reductions.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    objects = np.unique(df["objectId"].to_numpy())
    ok = (np.isfinite(df["psfFlux"]) & np.isfinite(df["psfFluxErr"]) & (df["psfFluxErr"] > 0)
          & np.isfinite(df["expMidptMJD"]))
    d = df if ok.all() else df[ok]
    d = d.sort_values(["objectId", "band", "expMidptMJD"], ignore_index=True)
    g = d.groupby(KEYS, observed=True, sort=False)
    gid = g.ngroup().to_numpy()  # numbered in order of appearance: non-decreasing along the sorted rows
    index = g.size().index  # (objectId, band) of group 0, 1, ...
    t = d["expMidptMJD"].to_numpy(np.float64)
    f = d["psfFlux"].to_numpy(np.float64)
    e = d["psfFluxErr"].to_numpy(np.float64)
    ng = len(index)
    n = np.bincount(gid, minlength=ng).astype(np.float64)
    two = n >= 2

    def gsum(x):
        return np.bincount(gid, weights=x, minlength=ng)

    w = 1.0 / (e * e)
    sw = gsum(w)
    mean = gsum(w * f) / sw
    out = {"psfFluxMean": mean, "psfFluxMeanErr": np.sqrt(1.0 / sw)}
    fg = g["psfFlux"]
    red = fg.agg(["std", "min", "max", "skew"])
    out["psfFluxSigma"] = red["std"].to_numpy()
    resid = (f - mean[gid]) / e
    out["psfFluxChi2"] = np.where(two, gsum(resid * resid), np.nan)
    out["psfFluxNdata"] = n
    out["psfFluxMin"] = red["min"].to_numpy()
    out["psfFluxMax"] = red["max"].to_numpy()
    out["psfFluxSkew"] = red["skew"].to_numpy()

    # Stetson J about Stetson's iteratively reweighted mean: all groups at once, each stops when it converges.
    # The rows of still-iterating groups are kept in compressed copies, re-compressed when a quarter has stopped.
    nf = np.sqrt(n / np.where(two, n - 1.0, np.nan))
    smean = mean.copy()
    active = two.copy()
    rows = np.flatnonzero(active[gid])
    gr, fr, er, wr, nfr = gid[rows], f[rows], e[rows], w[rows], nf[gid[rows]]
    for _ in range(20):
        act = np.flatnonzero(active)
        if not len(act):
            break
        chi = np.abs(nfr * (fr - smean[gr]) / er)
        ww = wr / (1.0 + (chi / 2.0) ** 2)
        new = np.bincount(gr, weights=ww * fr, minlength=ng)[act] / np.bincount(gr, weights=ww, minlength=ng)[act]
        diff = np.abs(new - smean[act])
        smean[act] = new
        active[act[(diff / np.abs(new) < 1e-6) & (diff < 1e-6)]] = False
        keep = active[gr]
        if keep.sum() < 0.75 * len(gr):
            gr, fr, er, wr, nfr = gr[keep], fr[keep], er[keep], wr[keep], nfr[keep]
    p = (nf[gid] * (f - smean[gid]) / e) ** 2 - 1.0
    out["psfFluxStetsonJ"] = np.where(two, gsum(np.copysign(np.sqrt(np.abs(p)), p)) / n, np.nan)

    # error-weighted linear fit of flux on time, centred on the weighted mean time
    tbar = gsum(t / (e * e)) / sw
    dt = t - tbar[gid]
    sxx = gsum(w * dt * dt)
    sxy = gsum(w * dt * (f - mean[gid]))
    fit = two & (sxx > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(fit, sxy / sxx, np.nan)
    out["psfFluxLinearSlope"] = slope
    out["psfFluxLinearIntercept"] = np.where(fit, mean - slope * tbar, np.nan)

    # percentiles (linear interpolation, numpy's default) and the median absolute deviation
    qs = (5, 25, 50, 75, 95)
    pct = fg.quantile([q / 100 for q in qs]).to_numpy().reshape(ng, len(qs))
    med = pct[:, qs.index(50)]
    out["psfFluxMAD"] = pd.Series(np.abs(f - med[gid])).groupby(gid).median().to_numpy()

    # largest slope between consecutive points in time
    same = gid[1:] == gid[:-1]
    dtt = np.diff(t)
    keep = same & (dtt > 0)
    slopes = pd.Series(np.diff(f)[keep] / dtt[keep]).groupby(gid[1:][keep]).max()
    out["psfFluxMaxSlope"] = slopes.reindex(np.arange(ng)).to_numpy()
    out["psfFluxErrMean"] = g["psfFluxErr"].mean().to_numpy()
    for j, q in enumerate(qs):
        out[f"psfFluxPercentile{q:02d}"] = pct[:, j]

    # the light-curve package, on every (object, band) light curve, in one batched call. Its Arrow input (a
    # List<Struct<t, m, sigma>> over the sorted columns, zero-copy) rather than a list of (t, m, sigma) tuples:
    # tuples of numpy *views* of one array cost quadratic time in ``many`` (each view's borrow is checked against
    # every other live borrow of the same base array), and per-curve copies cost more than the Arrow route.
    ex = make_extractor()
    starts = np.append(np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]]), len(gid))
    lcs = pa.ListArray.from_arrays(pa.array(starts, pa.int64()).cast(pa.int32()), pa.StructArray.from_arrays(
        [pa.array(t), pa.array(f), pa.array(e)], names=["t", "m", "sigma"]))
    extra = np.asarray(ex.many(lcs, arrow_fields={"t": "t", "m": "m", "sigma": "sigma"}, n_jobs=1,
                               fill_value=np.nan, sorted=True, check=False)).reshape(ng, -1)
    for j, name in enumerate(ex.names):
        out[f"lc_{name}"] = extra[:, j]

    # one row per object, {band}_{feature} columns
    long = pd.DataFrame(out, index=index)
    wide = long.unstack("band")
    wide.columns = [f"{b}_{feat}" for feat, b in wide.columns]
    wide = wide.reindex(objects)
    nd = [c for c in wide.columns if c.endswith("_psfFluxNdata")]
    wide[nd] = wide[nd].fillna(0).astype(np.int64)
    return wide


# ------------------------------------------------------------------------------------------------ checks

def compare(ub, base) -> tuple[bool, list[str]]:
    """Every checked feature, every object and band: userbatch (Arrow, wide) vs baseline (pandas, wide)."""
    import numpy as np

    notes = []
    ub_ids = ub.column("objectId").to_numpy()
    order = np.argsort(ub_ids, kind="stable")
    base_ids = base.index.to_numpy()
    if not np.array_equal(ub_ids[order], base_ids):
        return False, [f"object sets DIFFER: userbatch {len(ub_ids):,} objects, baseline {len(base_ids):,}"]
    bands = sorted({c.split("_", 1)[0] for c in base.columns}, key="ugrizy".index)
    feats = CHECKED + ["lc_stetson_K"]
    ok = True
    for feat in feats:
        worst, bad, n = 0.0, 0, 0
        for b in bands:
            col = f"{b}_{feat}"
            a = ub.column(col).to_numpy(zero_copy_only=False).astype(np.float64)[order]
            x = base[col].to_numpy(np.float64)
            close = np.isclose(a, x, rtol=RTOL, equal_nan=True)
            bad += int((~close).sum())
            n += len(a)
            both = np.isfinite(a) & np.isfinite(x) & (x != 0)
            if both.any():
                worst = max(worst, float(np.max(np.abs(a[both] - x[both]) / np.abs(x[both]))))
            nan_a, nan_x = int(np.isnan(a).sum()), int(np.isnan(x).sum())
            if nan_a != nan_x:
                notes.append(f"  {col}: nulls userbatch {nan_a:,}, baseline {nan_x:,}")
        ok &= bad == 0
        notes.append(f"  {feat:<22} {n:>10,} values  {'ok' if bad == 0 else f'{bad:,} DIFFER'}  "
                     f"max rel diff {worst:.1e}")
    return ok, notes


# ------------------------------------------------------------------------------------------------ measurement

def timed_call(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def measure(args) -> int:
    import gc

    work = args.work
    env = dict(os.environ)
    env["USERBATCH_HOME"] = str(work / "userbatch_home")
    os.environ["USERBATCH_HOME"] = env["USERBATCH_HOME"]
    for k in ("USERBATCH_WAREHOUSE", "USERBATCH_DB_URL"):
        os.environ.pop(k, None)
        env.pop(k, None)
    log.info("%s", C.env_summary())
    meta = ensure_lc_input(args)
    built = ensure_built(args, env)
    register(built)
    rows = int(built["results"]["forced_source"]["rows"])
    r: dict = {"rows": rows, "input_rows": meta["rows"], "built": built}
    files = director_files(FORCED)
    r["files"] = len(files)
    C.warm_page_cache([Path(p) for p in files])

    import light_curve  # noqa: F401  (imports before the first calls, on both sides)
    import pandas  # noqa: F401
    import userbatch.ops.lightcurves  # noqa: F401

    # untimed: the baseline's input, read once (the warm calls then time the computation alone)
    t0 = time.perf_counter()
    df = read_director(files)
    r["baseline_read_s"] = time.perf_counter() - t0
    log.info("baseline input: %d rows read in %.1f s (%.0f MB in pandas)", len(df), r["baseline_read_s"],
             df.memory_usage(deep=True).sum() / 1e6)
    if len(df) != rows:
        raise RuntimeError(f"director files hold {len(df)} rows, the build wrote {rows}")

    fns = {"baseline": lambda: baseline_features(df), "userbatch": lambda: call_userbatch("local")}
    first, warm, warm_cpu, results = {}, {k: [] for k in fns}, {k: [] for k in fns}, {}
    for k in ("baseline", "userbatch"):
        first[k], _, results[k] = timed_call(fns[k])
        log.info("first %s: %.2f s", k, first[k])
    for i in range(args.repeats):
        for k in (("baseline", "userbatch") if i % 2 == 0 else ("userbatch", "baseline")):
            out = None
            gc.collect()
            w, c, out = timed_call(fns[k])
            del out
            warm[k].append(w)
            warm_cpu[k].append(c)
            log.info("warm %s: %.2f s (process CPU %.1f s)", k, w, c)
    r.update(first_s=first, warm_s=warm, warm_cpu_s=warm_cpu)
    ok, notes = compare(results["userbatch"], results["baseline"])
    checks = [(ok, "userbatch local vs baseline:\n" + "\n".join(notes))]
    r["objects_out"] = results["userbatch"].num_rows
    r["columns_out"] = results["userbatch"].num_columns
    df = None  # frees the baseline input before the end-to-end runs (the lambdas above are done)
    gc.collect()

    # end to end, once each: the same computation from files
    src = input_dir(args)
    r["e2e_director_s"], _, base2 = timed_call(lambda: baseline_features(read_director(files)))
    del base2
    gc.collect()
    log.info("baseline end to end from the director table's files: %.2f s", r["e2e_director_s"])
    if not args.no_raw:
        r["e2e_raw_s"], _, base3 = timed_call(lambda: baseline_features(read_raw(src, meta)))
        checks.append((base3.index.equals(results["baseline"].index) and len(base3) == len(results["baseline"]),
                       (f"baseline from raw Parquet + Visit merge: {len(base3):,} objects (same set as from the "
                        "director table)")))
        del base3
        gc.collect()
        log.info("baseline end to end from raw ForcedSource + Visit (merge): %.2f s", r["e2e_raw_s"])

    # ---- Spark engine (reported, not in the RESULT line)
    if not args.no_spark:
        import userbatch.spark

        t0 = time.perf_counter()
        spark = userbatch.spark.session(master="local[2]")
        r["spark_start_s"] = time.perf_counter() - t0
        r["spark_first_s"], _, tbl = timed_call(lambda: call_userbatch("spark"))
        del tbl
        r["spark_warm_s"], _, tbl = timed_call(lambda: call_userbatch("spark"))
        sok, snotes = compare(tbl, results["baseline"])
        checks.append((sok, "userbatch spark vs baseline:\n" + "\n".join(snotes)))
        del tbl
        spark.stop()
        log.info("spark: start %.1f s, first %.2f s, warm %.2f s", r["spark_start_s"], r["spark_first_s"],
                 r["spark_warm_s"])
    del results
    ok = all(c[0] for c in checks)
    r["checks"] = [c[1] for c in checks]
    report(args, r, ok)
    return 0 if ok else 1


def report(args, r: dict, ok: bool) -> None:
    rows = r["rows"]
    base_warm, ub_warm = min(r["warm_s"]["baseline"]), min(r["warm_s"]["userbatch"])
    b = r["built"]["results"]
    nrep = len(r["warm_s"]["userbatch"])
    print()
    print(f"== light-curve features benchmark: {rows:,} ForcedSource rows, {b['object']['rows']:,} objects, "
          f"{r['input_rows']['visit']:,} visits ==")
    print(C.env_summary() + "  (shared machine: timings are noisy)")
    print(f"userbatch code measured: {os.environ.get('BENCH_CODE', 'live python/userbatch')}")
    print(f"director table: {b['forced_source']['partitions']} partitions (Object pixel threshold "
          f"{threshold_of(args):,}), {r['files']} files, {b['forced_source']['rejected']} rows refused; "
          f"features: 19 DP1 + light-curve {', '.join(str(x) for x in LC)} per band -> "
          f"{r['objects_out']:,} rows x {r['columns_out']} columns")
    print()
    table = [
        ["baseline (pandas, 1 process): first call", f"{r['first_s']['baseline']:.2f}", ""],
        [f"baseline: warm compute (best of {nrep})", f"{base_warm:.2f}", f"{min(r['warm_cpu_s']['baseline']):.1f}"],
        ["baseline: read director files + compute (once)", f"{r['e2e_director_s']:.2f}", ""],
    ]
    if "e2e_raw_s" in r:
        table.append(["baseline: read raw FS + Visit, merge, compute (once)", f"{r['e2e_raw_s']:.2f}", ""])
    table += [
        ["userbatch local: first call", f"{r['first_s']['userbatch']:.2f}", ""],
        [f"userbatch local: warm, reads included (best of {nrep})", f"{ub_warm:.2f}",
         f"{min(r['warm_cpu_s']['userbatch']):.1f}"],
    ]
    if "spark_warm_s" in r:
        table += [["userbatch spark: session start local[2] (not counted)", f"{r['spark_start_s']:.1f}", ""],
                  ["userbatch spark: first call", f"{r['spark_first_s']:.2f}", ""],
                  ["userbatch spark: warm (one call)", f"{r['spark_warm_s']:.2f}", ""]]
    table.append(["(untimed) baseline input read, director files -> pandas", f"{r['baseline_read_s']:.2f}", ""])
    print(C.fmt_table(table, ["what", "seconds", "CPU s"]))
    print("(warm: in one process after a first call, sides interleaved; the baseline's warm figure starts from rows "
          "already in pandas, userbatch's reads its Parquet files; CPU s: this process's CPU during the call)")
    print()
    for c in r["checks"]:
        print(c)
    print(f"features agree (rtol {RTOL:g}, NaN == NaN): {'YES' if ok else 'NO'}")
    print(f"userbatch local warm {ub_warm:.2f} s vs baseline warm {base_warm:.2f} s -> {base_warm / ub_warm:.2f}x; "
          f"vs baseline end to end {r['e2e_director_s']:.2f} s -> {r['e2e_director_s'] / ub_warm:.2f}x")
    if "spark_warm_s" in r:
        print(f"userbatch spark warm {r['spark_warm_s']:.2f} s -> {base_warm / r['spark_warm_s']:.2f}x baseline warm")
    if args.json:
        args.json.write_text(json.dumps(r, indent=1, default=str))
    print(f"RESULT lc_speedup_vs_pandas={sig3(base_warm / ub_warm)} rows={rows}")


# ------------------------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=DEFAULT_OBJECTS, help="simulated objects (default %(default)s)")
    ap.add_argument("--visits", type=int, default=DEFAULT_VISITS, help="simulated visits (default %(default)s)")
    ap.add_argument("--seed", type=int, default=C.DEFAULT_SEED)
    ap.add_argument("--threshold", type=int, default=0,
                    help="Object pixel threshold (rows per partition; default objects // 40)")
    ap.add_argument("--repeats", type=int, default=2, help="warm calls per side (best reported; default 2)")
    ap.add_argument("--no-spark", action="store_true", help="skip the engine='spark' measurement")
    ap.add_argument("--no-raw", action="store_true", help="skip the baseline end to end from the raw Parquet")
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
    if args.work is None:  # parent: pin the code, then measure in a child process
        return C.run_measuring_child(__file__, "lightcurves", args, argv)
    C.check_frozen_source()
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
