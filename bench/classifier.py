#!/usr/bin/env python
"""Variability classifier: userbatch ``train_classifier`` + ``classify`` vs plain scikit-learn on the same rows.

Data, built once per run in the run's own ``USERBATCH_HOME`` (not part of the comparison; its time is reported):
the simulator's survey, ``SurveyConfig(n_objects=--objects, n_visits=--visits, seed=--seed,
variable_fraction=--variable-fraction, transient_fraction=--transient-fraction)`` (classes constant / periodic /
transient in ``Object.variability_class``), written as Parquet and ingested as ``dp1.object`` (HEALPix, pixel
threshold objects // 16), ``dp1.visit`` and ``dp1.forced_source`` (a director child of Object with visit times),
then light-curve features ``features("dp1.forced_source", bands="gri", lc_features=["StetsonK"],
engine="local").write("u_bench.features")``: one row per object, 19 DP1 statistics per band + lc_StetsonK.

Measured, one Spark session ``local[2]``, one process:

* userbatch, MLlib random forest: ``train_classifier("u_bench.features", labels="dp1.object",
  label_column="variability_class", algorithm="random_forest", hyperparameters={"numTrees": --trees, "maxDepth":
  --max-depth}, model_name=...)``. **Timed: the whole call** (join + split, fit, evaluation on the validation and
  the training rows, MLflow run with the model, its registration); ``TrainResult.timings`` splits it into
  data / fit / evaluate / mlflow. ``--repeats`` calls (default 2: the first is cold — MLlib's first fit in the
  JVM, the MLflow store created — the best one is in the RESULT line, all are printed), with the CPU seconds of
  the process tree (driver, JVM, Python workers). Then ``classify("u_bench.features", model).write(...)``,
  **timed** (model load from MLflow + scoring + the table write and commit), rows/s over every row; also the
  scoring alone (the same predictions to Spark's ``noop`` sink, reported).
* userbatch, scikit-learn through Spark: the same with ``algorithm="sklearn",
  sklearn_estimator="RandomForestClassifier", hyperparameters={"n_estimators": --trees, "max_depth":
  --max-depth, "n_jobs": 2}`` (trained on the driver; ``classify`` scores through a pandas UDF).
  ``--no-sklearn-udf`` skips it.
* peer, plain scikit-learn in this process: the features table joined to its labels and read to pandas once with
  the same validation flag (``userbatch.ml.dataset.split_expr``: ``pmod(xxhash64(objectId, 42), 1000000) <
  250000``; read time reported, not counted), the same feature columns, non-finite values replaced by the same
  sentinel; ``RandomForestClassifier(n_estimators=--trees, max_depth=--max-depth, n_jobs=2,
  class_weight="balanced", random_state=--seed)``. **Timed: ``fit`` on the training rows; ``predict_proba`` +
  argmax over every row** (``--repeats`` times each, the best reported). Validation accuracy on the held-out rows.

Checks (exit 1 otherwise): the peer's training / validation row counts equal userbatch's; userbatch's logged
validation accuracy equals the accuracy of its own classified table on the held-out rows; every accuracy is
above chance (the largest class's share) and the MLlib and scikit-learn accuracies are within 0.05 of each other.

Last line: ``RESULT train_ratio_vs_sklearn=<userbatch RF train_classifier wall / sklearn fit>
fit_ratio_vs_sklearn=<userbatch RF fit_s / sklearn fit> train_cpu_ratio_vs_sklearn=<CPU s of the same, process
tree / sklearn fit's process CPU> classify_rows_per_s=<...> sklearn_predict_rows_per_s=<...>
accuracy_userbatch=<...> accuracy_sklearn=<...> objects=<n>`` (ratios > 1 mean userbatch is slower).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as C

log = logging.getLogger("bench.classifier")

DEFAULT_OBJECTS = 50_000
DEFAULT_VISITS = 100
DEFAULT_SEED = 11
OBJECT, VISIT, FORCED, FEATURES = "dp1.object", "dp1.visit", "dp1.forced_source", "u_bench.features"
LABEL = "variability_class"
SPLIT_SEED, VALIDATION_FRACTION = 42, 0.25  # train_classifier's defaults
BENCH_USER = "bench"
ACCURACY_TOLERANCE = 0.05


def sig3(x: float) -> str:
    """Three significant digits, never in exponent notation."""
    if not math.isfinite(x) or x == 0:
        return str(x)
    d = 2 - math.floor(math.log10(abs(x)))
    return f"{round(x, d):.{max(d, 0)}f}"


# ------------------------------------------------------------------------------------------------ data

def build(args, spark, r: dict) -> None:
    """Simulate the survey, ingest Object / Visit / ForcedSource, compute and write the features table."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from userbatch.ops.lightcurves import features
    from userbatch.sim import SurveyConfig, simulate_forced_sources, simulate_objects, simulate_visits
    from userbatch.tables.director import VisitTimes, write_child_table
    from userbatch.tables.write import write_table

    t: dict = {}
    src = args.work / "input"
    src.mkdir(parents=True, exist_ok=True)
    with C.timed(t, "simulate"):
        cfg = SurveyConfig(n_objects=args.objects, n_visits=args.visits, seed=args.seed,
                           variable_fraction=args.variable_fraction, transient_fraction=args.transient_fraction)
        objects, visits = simulate_objects(cfg), simulate_visits(cfg)
        fs = simulate_forced_sources(cfg, objects, visits)
        r["class_counts"] = {str(k): int(v) for k, v in objects[LABEL].value_counts().sort_index().items()}
        r["input_rows"] = {"object": len(objects), "visit": len(visits), "forced_source": len(fs)}
        pq.write_table(pa.Table.from_pandas(objects, preserve_index=False), src / "object.parquet")
        pq.write_table(pa.Table.from_pandas(visits, preserve_index=False), src / "visit.parquet")
        pq.write_table(pa.Table.from_pandas(fs, preserve_index=False), src / "forced_source.parquet",
                       row_group_size=1 << 20)
        del objects, visits, fs
    with C.timed(t, "ingest"):
        res = write_table(spark.read.parquet(str(src / "object.parquet")), OBJECT,
                          pixel_threshold=max(1, args.objects // 16))
        r["object_partitions"] = res.partitions
        write_table(spark.read.parquet(str(src / "visit.parquet")), VISIT, ra_column=None, dec_column=None)
        res = write_child_table(spark.read.parquet(str(src / "forced_source.parquet")), FORCED, parent=OBJECT,
                                times=VisitTimes(VISIT))
        r["forced_source_rows"] = res.rows
    with C.timed(t, "features"):
        res = features(FORCED, bands="gri", lc_features=["StetsonK"], engine="local").write(FEATURES)
        r["feature_rows"] = res.rows
    r["build_s"] = t


# ------------------------------------------------------------------------------------------------ userbatch

def tree_cpu() -> float:
    """CPU seconds of this process, the Spark JVM it launched and the JVM's Python workers (all the work)."""
    return C.process_tree_cpu_s(os.getpid())


def userbatch_side(args, spark, algorithm: str, r: dict, tag: str) -> None:
    """train_classifier then classify(...).write(...), each timed; the score-only pass to a noop sink."""
    from userbatch.ml import classify, train_classifier
    from userbatch.tables.read import read_table

    name = f"bench-varclass-{tag}"
    if algorithm == "random_forest":
        kw = {"algorithm": "random_forest", "hyperparameters": {"numTrees": args.trees, "maxDepth": args.max_depth}}
    else:
        kw = {"algorithm": "sklearn", "sklearn_estimator": "RandomForestClassifier",
              "hyperparameters": {"n_estimators": args.trees, "max_depth": args.max_depth, "n_jobs": 2}}
    out: dict = {"algorithm": algorithm, "train_s": [], "train_cpu_s": [], "timings": []}
    for i in range(args.repeats):
        c0, t0 = tree_cpu(), time.perf_counter()
        tr = train_classifier(FEATURES, labels=OBJECT, label_column=LABEL, model_name=name,
                              run_name=f"bench-{tag}-{i}", spark=spark, **kw)
        out["train_s"].append(time.perf_counter() - t0)
        out["train_cpu_s"].append(tree_cpu() - c0)
        out["timings"].append(dict(tr.timings))
        log.info("%s train_classifier: %.2f s (%s), validation accuracy %.4f", tag, out["train_s"][-1],
                 ", ".join(f"{k}={v:.2f}" for k, v in tr.timings.items()), tr.metrics["accuracy"])
    out.update(accuracy=tr.metrics["accuracy"], balanced_accuracy=tr.metrics["balanced_accuracy"],
               counts=tr.counts, classes=tr.classes, features=tr.feature_columns,
               model_version=tr.model_version, mlflow_run_id=tr.mlflow_run_id)

    c0, t0 = tree_cpu(), time.perf_counter()
    c = classify(FEATURES, name, model_version=tr.model_version, spark=spark)
    out["classify_load_s"] = time.perf_counter() - t0
    res = c.write(f"u_bench.varclass_{tag}")
    out["classify_s"] = time.perf_counter() - t0
    out["classify_cpu_s"] = tree_cpu() - c0
    out["classify_rows"] = res.rows
    log.info("%s classify + write: %.2f s for %d rows (model load %.2f s)", tag, out["classify_s"], res.rows,
             out["classify_load_s"])

    c2 = classify(FEATURES, name, model_version=tr.model_version, spark=spark)
    t0 = time.perf_counter()
    c2.to_spark().write.format("noop").mode("overwrite").save()
    out["score_only_s"] = time.perf_counter() - t0

    # check: the classified table's accuracy on the held-out objects is the logged validation accuracy
    from pyspark.sql import functions as F
    from userbatch.ml.dataset import split_expr

    pred = read_table(f"u_bench.varclass_{tag}", spark=spark).select("objectId", "predicted_class")
    lab = read_table(OBJECT, spark=spark).select("objectId", LABEL)
    row = (pred.join(lab, "objectId").where(F.expr(split_expr("objectId", SPLIT_SEED, VALIDATION_FRACTION)))
           .agg(F.avg((F.col("predicted_class") == F.col(LABEL)).cast("double")).alias("acc"),
                F.count(F.lit(1)).alias("n")).collect()[0])
    out["table_accuracy"], out["table_validation_rows"] = float(row["acc"]), int(row["n"])
    r[tag] = out


# ------------------------------------------------------------------------------------------------ peer

def load_for_sklearn(spark, feature_columns: list[str]):
    """Features + labels + the validation flag, to pandas once (what the peer starts from)."""
    from pyspark.sql import functions as F
    from userbatch.ml.dataset import split_expr
    from userbatch.tables.read import read_table

    feat = read_table(FEATURES, spark=spark)
    lab = read_table(OBJECT, spark=spark).select("objectId", F.col(LABEL).cast("string").alias(LABEL))
    df = (feat.join(lab, "objectId").where(F.col(LABEL).isNotNull())
          .select("objectId", *feature_columns, LABEL,
                  F.expr(split_expr("objectId", SPLIT_SEED, VALIDATION_FRACTION)).alias("_validation")))
    return df.toPandas()


def sklearn_side(args, pdf, feature_columns: list[str], r: dict) -> None:
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from userbatch.ml.dataset import MISSING

    x = pdf[feature_columns].astype("float64").to_numpy()
    x = np.where(np.isfinite(x), x, MISSING)  # the sentinel userbatch uses; sklearn refuses inf
    y = pdf[LABEL].to_numpy(dtype=object).astype(str)
    val = pdf["_validation"].to_numpy(dtype=bool)
    est = RandomForestClassifier(n_estimators=args.trees, max_depth=args.max_depth, n_jobs=2,
                                 class_weight="balanced", random_state=args.seed)
    fits, cpus, predicts = [], [], []
    for _ in range(args.repeats):  # as many calls as userbatch gets; the best is reported
        c0, t0 = time.process_time(), time.perf_counter()
        est.fit(x[~val], y[~val])
        fits.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        t0 = time.perf_counter()
        proba = est.predict_proba(x)
        pred = est.classes_[np.argmax(proba, axis=1)]
        predicts.append(time.perf_counter() - t0)
    best = int(np.argmin(fits))
    fit_s, fit_cpu, predict_s = fits[best], cpus[best], min(predicts)
    classes = list(est.classes_)
    acc = float(np.mean(pred[val] == y[val]))
    recall = {c: float(np.mean(pred[val & (y == c)] == c)) for c in classes}
    r["sklearn"] = {"fit_s": fit_s, "fit_cpu_s": fit_cpu, "predict_s": predict_s, "rows": len(y),
                    "fit_all_s": fits, "predict_all_s": predicts,
                    "n_train": int((~val).sum()), "n_validation": int(val.sum()), "accuracy": acc,
                    "balanced_accuracy": float(np.mean(list(recall.values()))), "classes": classes}
    log.info("sklearn: fit %.2f s, predict_proba %.2f s over %d rows, validation accuracy %.4f", fit_s, predict_s,
             len(y), acc)


# ------------------------------------------------------------------------------------------------ measurement

def measure(args) -> int:
    work = args.work
    home = work / "userbatch_home"
    os.environ["USERBATCH_HOME"] = str(home)
    os.environ["USERBATCH_DB_URL"] = f"sqlite:///{home / 'facility.db'}"
    os.environ["USERBATCH_WAREHOUSE"] = str(home / "warehouse")
    os.environ["USERBATCH_USER"] = BENCH_USER
    for k in ("MLFLOW_TRACKING_URI", "USERBATCH_MLFLOW_ARTIFACTS"):  # MLflow: SQLite + artifacts in the home
        os.environ.pop(k, None)
    log.info("%s", C.env_summary())
    import userbatch.spark

    r: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    t0 = time.perf_counter()
    spark = userbatch.spark.session(master="local[2]")
    r["spark_start_s"] = time.perf_counter() - t0
    build(args, spark, r)

    import sklearn.ensemble  # noqa: F401  (imported before any timed call)

    userbatch_side(args, spark, "random_forest", r, "rf")
    if not args.no_sklearn_udf:
        userbatch_side(args, spark, "sklearn", r, "sk")

    t0 = time.perf_counter()
    pdf = load_for_sklearn(spark, r["rf"]["features"])
    r["peer_read_s"] = time.perf_counter() - t0
    sklearn_side(args, pdf, r["rf"]["features"], r)
    del pdf

    rf, sk = r["rf"], r["sklearn"]
    checks = []
    n_tr, n_val = sum(rf["counts"]["train"].values()), sum(rf["counts"]["validation"].values())
    same = (n_tr, n_val) == (sk["n_train"], sk["n_validation"])
    checks.append((same, f"rows: userbatch train {n_tr:,} / validation {n_val:,}; sklearn train {sk['n_train']:,} / "
                         f"validation {sk['n_validation']:,} -> {'same split' if same else 'SPLIT DIFFERS'}"))
    chance = max(r["class_counts"].values()) / sum(r["class_counts"].values())
    for tag in ("rf", "sk"):
        if tag not in r:
            continue
        u = r[tag]
        ok = abs(u["table_accuracy"] - u["accuracy"]) < 1e-9 and u["table_validation_rows"] == n_val
        checks.append((ok, f"{tag}: classified table accuracy on the held-out rows {u['table_accuracy']:.4f} "
                           f"({u['table_validation_rows']:,} rows) vs logged val_accuracy {u['accuracy']:.4f}"))
    accs = {"userbatch MLlib RF": rf["accuracy"], "sklearn RF": sk["accuracy"]}
    if "sk" in r:
        accs["userbatch sklearn RF"] = r["sk"]["accuracy"]
    above = all(a > chance for a in accs.values())
    close = abs(rf["accuracy"] - sk["accuracy"]) <= ACCURACY_TOLERANCE
    checks.append((above and close, "validation accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in accs.items())
                   + f" (chance = largest class {chance:.3f}; MLlib vs sklearn within {ACCURACY_TOLERANCE}: "
                   f"{'yes' if close else 'NO'})"))
    ok = all(c[0] for c in checks)
    r["checks"] = [c[1] for c in checks]
    spark.stop()
    report(args, r, ok)
    return 0 if ok else 1


def report(args, r: dict, ok: bool) -> None:
    rf, sk = r["rf"], r["sklearn"]
    b = r["build_s"]
    n_feat = len(rf["features"])
    print()
    counts = ", ".join(f"{k} {v:,}" for k, v in r["class_counts"].items())
    print(f"== classifier benchmark: {r['input_rows']['object']:,} objects ({counts}), "
          f"{r['input_rows']['visit']:,} visits, {r['forced_source_rows']:,} ForcedSource rows ==")
    print(C.env_summary() + "  (shared machine: timings are noisy)")
    print(f"userbatch code measured: {os.environ.get('BENCH_CODE', 'live python/userbatch')}")
    print(f"features table {FEATURES}: {r['feature_rows']:,} rows x {n_feat} features (gri DP1 + lc_StetsonK); "
          f"random forest {args.trees} trees, depth {args.max_depth}, class weights balanced; Spark local[2]")
    print(f"split: train {sum(rf['counts']['train'].values()):,}, validation "
          f"{sum(rf['counts']['validation'].values()):,} (pmod(xxhash64(objectId, {SPLIT_SEED}), 1e6) < 250000)")
    print()

    def tim(u, i=-1):
        t = u["timings"][i]
        rest = u["train_s"][i] - sum(t.values())  # before TrainResult's clock starts: MLflow store + experiment
        return ", ".join(f"{k[:-2]} {v:.1f}" for k, v in t.items()) + f", setup {rest:.1f}"

    rows = [
        ["(not compared) Spark session start", f"{r['spark_start_s']:.1f}", "", ""],
        ["(not compared) simulate + Parquet", f"{b['simulate']:.1f}", "", ""],
        ["(not compared) ingest Object/Visit/ForcedSource", f"{b['ingest']:.1f}", "", ""],
        ["(not compared) features -> table", f"{b['features']:.1f}", "", ""],
    ]
    for tag, label in (("rf", "userbatch MLlib RF"), ("sk", "userbatch sklearn RF")):
        if tag not in r:
            continue
        u = r[tag]
        for i, t in enumerate(u["train_s"]):
            rows.append([f"{label}: train_classifier" + (f" #{i + 1}" if len(u["train_s"]) > 1 else ""),
                         f"{t:.2f}", f"{u['train_cpu_s'][i]:.1f}", tim(u, i)])
        rows.append([f"{label}: classify(...).write(...)", f"{u['classify_s']:.2f}", f"{u['classify_cpu_s']:.1f}",
                     f"{u['classify_rows'] / u['classify_s']:,.0f} rows/s; model load {u['classify_load_s']:.1f}"])
        rows.append([f"{label}: scoring only (noop sink)", f"{u['score_only_s']:.2f}", "",
                     f"{u['classify_rows'] / u['score_only_s']:,.0f} rows/s"])
    rows += [
        ["(not counted) peer read: features + labels -> pandas", f"{r['peer_read_s']:.2f}", "", ""],
        [f"sklearn RF: fit (n_jobs=2), best of {len(sk['fit_all_s'])}", f"{sk['fit_s']:.2f}", f"{sk['fit_cpu_s']:.1f}",
         "all: " + ", ".join(f"{v:.2f}" for v in sk["fit_all_s"])],
        [f"sklearn RF: predict_proba + argmax, all rows, best of {len(sk['predict_all_s'])}",
         f"{sk['predict_s']:.2f}", "", f"{sk['rows'] / sk['predict_s']:,.0f} rows/s"],
    ]
    print(C.fmt_table(rows, ["what", "seconds", "CPU s", "notes"]))
    print("(CPU s: userbatch = this process + the Spark JVM + its Python workers, over the call; sklearn = this "
          "process, over fit)")
    print("(train_classifier timings: data = join + split + counts; fit; evaluate = scoring the validation and "
          "training rows; mlflow = run, plots, datasets, model logging and registration; setup = MLflow store and "
          "experiment before its clock starts (the first call creates the SQLite store); RESULT: best call)")
    print()
    print("validation accuracy (balanced accuracy):")
    print(f"  userbatch MLlib RF    {rf['accuracy']:.4f} ({rf['balanced_accuracy']:.4f})")
    if "sk" in r:
        print(f"  userbatch sklearn RF  {r['sk']['accuracy']:.4f} ({r['sk']['balanced_accuracy']:.4f})")
    print(f"  sklearn RF            {sk['accuracy']:.4f} ({sk['balanced_accuracy']:.4f})")
    for c in r["checks"]:
        print(c)
    print(f"checks: {'PASS' if ok else 'FAIL'}")
    i = rf["train_s"].index(min(rf["train_s"]))  # the best call, and its own fit time
    train, fit, train_cpu = rf["train_s"][i], rf["timings"][i]["fit_s"], rf["train_cpu_s"][i]
    print(f"userbatch MLlib RF train_classifier {train:.2f} s (fit alone {fit:.2f} s) vs sklearn fit "
          f"{sk['fit_s']:.2f} s -> {train / sk['fit_s']:.1f}x ({fit / sk['fit_s']:.1f}x for the fit)")
    if "sk" in r:
        u = r["sk"]
        j = u["train_s"].index(min(u["train_s"]))
        print(f"userbatch sklearn RF train_classifier {u['train_s'][j]:.2f} s (fit {u['timings'][j]['fit_s']:.2f} s"
              f", includes collecting the training rows); classify {u['classify_rows'] / u['classify_s']:,.0f} rows/s")
    if args.json:
        args.json.write_text(json.dumps(r, indent=1, default=str))
    print(f"RESULT train_ratio_vs_sklearn={sig3(train / sk['fit_s'])} fit_ratio_vs_sklearn={sig3(fit / sk['fit_s'])} "
          f"train_cpu_ratio_vs_sklearn={sig3(train_cpu / sk['fit_cpu_s'])} "
          f"classify_rows_per_s={sig3(rf['classify_rows'] / rf['classify_s'])} "
          f"sklearn_predict_rows_per_s={sig3(sk['rows'] / sk['predict_s'])} "
          f"accuracy_userbatch={rf['accuracy']:.4f} accuracy_sklearn={sk['accuracy']:.4f} "
          f"objects={r['input_rows']['object']}")


# ------------------------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=DEFAULT_OBJECTS, help="simulated objects (default %(default)s)")
    ap.add_argument("--visits", type=int, default=DEFAULT_VISITS,
                    help="simulated visits, all bands, over 730 days (default %(default)s)")
    ap.add_argument("--variable-fraction", type=float, default=0.3, help="periodic objects (default %(default)s)")
    ap.add_argument("--transient-fraction", type=float, default=0.2, help="transients (default %(default)s)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="survey seed, and sklearn's random_state")
    ap.add_argument("--trees", type=int, default=100, help="trees in both forests (default %(default)s)")
    ap.add_argument("--max-depth", type=int, default=8, help="tree depth on both sides (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=2,
                    help="train_classifier calls per userbatch algorithm, the first one cold (the best is in the "
                         "RESULT; default %(default)s)")
    ap.add_argument("--no-sklearn-udf", action="store_true",
                    help="skip userbatch's algorithm='sklearn' (pandas-UDF inference) path")
    ap.add_argument("--keep", action="store_true", help="keep this run's work dir under bench/_work/")
    ap.add_argument("--json", type=Path, help="also write all measurements to this JSON file")
    ap.add_argument("--live-source", action="store_true",
                    help="import python/userbatch as it is during the run instead of a copy taken at the start")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.rows = args.objects  # names the work dir
    C.setup_logging(args.verbose)
    if args.repeats < 1 or args.trees < 1 or args.max_depth < 1:
        ap.error("--repeats, --trees and --max-depth must be at least 1")
    if args.work is None:  # parent: pin the code, then measure in a child process
        return C.run_measuring_child(__file__, "classifier", args, argv)
    C.check_frozen_source()
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
