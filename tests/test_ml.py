"""Classifiers over light-curve features, tracked in MLflow: training on simulated light curves with known classes
(constant / periodic / transient), everything the MLflow run must hold, the registered model reproducing its
logged validation metrics (scikit-learn's metrics as the oracle), retraining on a newer table version, batch
inference with provenance, the jobs (one through the facility), and bad inputs that train nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import facility_under
from sklearn import metrics as skm

from userbatch.errors import AccessDenied, ColumnNotFound, UserbatchError
from userbatch.ml import classify, train_classifier
from userbatch.ml import metrics as M
from userbatch.ml.registry import ModelNotFound
from userbatch.sim import SurveyConfig, simulate_survey
from userbatch.tables.delta import history
from userbatch.tables.director import VisitTimes, write_child_table
from userbatch.tables.read import read_table
from userbatch.tables.write import write_table

# the module's survey, features and first model: more Spark work than the fast tier has time for
pytestmark = pytest.mark.heavy

RF = {"numTrees": 40, "maxDepth": 8}
ACCURACY_FLOOR = 0.80  # three classes, the largest ~50 %: chance (always "constant") is ~0.5, random 0.33


def _held_out(pdf: pd.DataFrame, fraction: float = 0.25, seed: int = 42) -> pd.Series:
    """The documented split rule, recomputed independently in Spark SQL: pmod(xxhash64(objectId, seed), 1e6)."""
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    ids = spark.createDataFrame(pdf[["objectId"]]).selectExpr(
        "objectId", f"pmod(xxhash64(objectId, {seed}), 1000000) < {int(fraction * 1e6)} AS held").toPandas()
    return pdf[["objectId"]].merge(ids, on="objectId", how="left")["held"].to_numpy()


@pytest.fixture(scope="module")
def ml(spark, session_home, tmp_path_factory):
    """Object / Visit / ForcedSource of a small survey with many variables, and its light-curve features."""
    from userbatch.ops.lightcurves import features

    base = tmp_path_factory.mktemp("ml")
    mlflow_env = {"MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
                  "USERBATCH_MLFLOW_ARTIFACTS": str(base / "mlartifacts"), "USERBATCH_USER": "tester"}
    with facility_under(base, env=mlflow_env):
        s = simulate_survey(SurveyConfig(n_objects=1300, n_visits=110, seed=11, variable_fraction=0.3,
                                         transient_fraction=0.2))
        obj, vis, fs = s["object"], s["visit"], s["forced_source"]
        write_table(spark.createDataFrame(obj), "dp1.object", pixel_threshold=400)
        write_table(spark.createDataFrame(vis), "dp1.visit", ra_column=None, dec_column=None)
        write_child_table(spark.createDataFrame(fs), "dp1.forced_source", parent="dp1.object",
                          times=VisitTimes("dp1.visit"))
        features("dp1.forced_source", bands="gri", lc_features=["StetsonK"], engine="local").write("u_tester.feat")
        labels = obj[["objectId", "variability_class"]]
        r = train_classifier("u_tester.feat", labels="dp1.object", label_column="variability_class",
                             hyperparameters=RF, model_name="varclass", model_alias="champion",
                             run_name="rf-first")
        yield {"spark": spark, "object": obj, "labels": labels, "rf": r, "base": base}


def _client():
    from userbatch.ml.tracking import configure

    return configure()


# ------------------------------------------------------------------------------------------------ metrics


def test_metrics_equal_scikit_learn():
    rng = np.random.default_rng(3)
    classes = ["a", "b", "c"]
    y = rng.choice(classes, 500, p=[0.6, 0.3, 0.1])
    p = np.where(rng.random(500) < 0.7, y, rng.choice(classes, 500))
    cm = skm.confusion_matrix(y, p, labels=classes)
    got = M.from_confusion(cm, classes)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, p, average="macro"))
    for c, prec, rec in zip(classes, skm.precision_score(y, p, average=None, labels=classes),
                            skm.recall_score(y, p, average=None, labels=classes)):
        assert got[f"precision_{c}"] == pytest.approx(prec) and got[f"recall_{c}"] == pytest.approx(rec)
    scores = np.round(rng.random(500), 2)  # many ties
    labels = rng.random(500) < scores
    assert M.roc_auc(labels, scores) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)


# ------------------------------------------------------------------------------------------------ training


def test_random_forest_learns_the_classes_and_mlflow_holds_the_run(ml):
    r = ml["rf"]
    assert r.classes == ["constant", "periodic", "transient"]
    assert r.metrics["accuracy"] >= ACCURACY_FLOOR, r.metrics
    assert r.metrics["balanced_accuracy"] >= 0.70, r.metrics
    assert min(r.metrics["recall_periodic"], r.metrics["recall_transient"]) >= 0.5, r.metrics
    n = read_table("u_tester.feat").count()  # objects with forced photometry, all labelled
    assert sum(r.counts["train"].values()) + sum(r.counts["validation"].values()) == n and n > 1250
    assert r.registered_model == "varclass" and r.model_version == 1 and r.model_alias == "champion"

    client = _client()
    run = client.get_run(r.mlflow_run_id)
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    assert p["algorithm"] == "random_forest" and p["hp_numTrees"] == "40" and p["features_table"] == "u_tester.feat"
    assert p["features_version"] == "0" and p["labels_table"] == "dp1.object" and p["class_weight"] == "balanced"
    assert m["val_accuracy"] == pytest.approx(r.metrics["accuracy"]) and "val_f1_transient" in m
    assert "train_accuracy" in m and "val_roc_auc" not in m  # AUC only for binary problems
    assert t["userbatch.user"] == "tester" and t["userbatch.inputs"] == "u_tester.feat@v0, dp1.object@v0"
    artifacts = {a.path for a in client.list_artifacts(r.mlflow_run_id)}
    assert {"confusion_matrix.png", "confusion_matrix.json", "features.json"} <= artifacts
    cm = json.loads(Path(client.download_artifacts(r.mlflow_run_id, "confusion_matrix.json")).read_text())
    assert cm["matrix"] == r.confusion and np.sum(cm["matrix"]) == sum(r.counts["validation"].values())
    # the input tables as MLflow datasets, with their Delta versions and locations
    ds = {d.dataset.name: (d, json.loads(d.dataset.source)) for d in run.inputs.dataset_inputs}
    assert set(ds) == {"u_tester.feat@v0", "dp1.object@v0"}
    feat, src = ds["u_tester.feat@v0"]
    assert feat.dataset.source_type == "delta_table" and src["delta_table_version"] == 0
    assert src["path"].endswith("u_tester/feat") and {t.key: t.value for t in feat.tags}["mlflow.data.context"] \
        == "training"
    # the registered model: version, alias, signature, owner
    mv = client.get_model_version_by_alias("varclass", "champion")
    assert int(mv.version) == 1 and mv.run_id == r.mlflow_run_id
    assert client.get_registered_model("varclass").tags["userbatch.owner"] == "tester"
    import mlflow

    info = mlflow.models.get_model_info("models:/varclass/1")
    assert [c.name for c in info.signature.inputs.inputs] == r.feature_columns
    assert info.metadata["userbatch"]["training_inputs"] == [{"table": "u_tester.feat", "version": 0},
                                                              {"table": "dp1.object", "version": 0}]


def test_registered_model_reproduces_the_logged_metrics_and_writes_provenance(ml):
    r = ml["rf"]
    c = classify("u_tester.feat", "varclass", model_alias="champion")
    assert "varclass v1 (@champion)" in c.explain()
    res = c.write("u_tester.varclass")
    out = read_table("u_tester.varclass").toPandas()
    assert len(out) == res.rows == len(read_table("u_tester.feat").toPandas())
    probs = out[["p_constant", "p_periodic", "p_transient"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (np.array(["constant", "periodic", "transient"])[probs.argmax(axis=1)] == out.predicted_class).all()
    # scikit-learn's metrics on the held-out objects == what the training run logged
    v = out.merge(ml["labels"], on="objectId")
    v = v[_held_out(v)]
    assert len(v) == sum(r.counts["validation"].values())
    y, p = v.variability_class.to_numpy(), v.predicted_class.to_numpy()
    run = _client().get_run(r.mlflow_run_id).data.metrics
    assert run["val_accuracy"] == pytest.approx(skm.accuracy_score(y, p), abs=1e-12)
    assert run["val_balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p), abs=1e-12)
    for cls, f1 in zip(r.classes, skm.f1_score(y, p, average=None, labels=r.classes)):
        assert run[f"val_f1_{cls}"] == pytest.approx(f1, abs=1e-12)
    # provenance: the input version, the model version and MLflow run, and the model's own training tables
    from userbatch.tables.catalog import Catalog

    prov = history(Catalog().get("u_tester.varclass").location)[0]["provenance"]
    model = prov["parameters"]["classify"]["model"]
    assert (model["name"], model["version"], model["mlflow_run_id"]) == ("varclass", 1, r.mlflow_run_id)
    inputs = {(i["table"], i["version"], i.get("role")) for i in prov["inputs"]}
    assert inputs == {("u_tester.feat", 0, None), ("u_tester.feat", 0, "model training"),
                      ("dp1.object", 0, "model training")}


def test_retraining_on_a_newer_table_version_is_a_new_run_and_model_version(ml):
    spark = ml["spark"]
    feat = read_table("u_tester.feat")
    write_table(feat.where("objectId % 10 != 3"), "u_tester.feat", "overwrite", ra_column=None, dec_column=None)
    r2 = train_classifier("u_tester.feat", labels="dp1.object", label_column="variability_class",
                          hyperparameters=RF, model_name="varclass", spark=spark)
    assert r2.mlflow_run_id != ml["rf"].mlflow_run_id and r2.model_version == 2
    assert r2.inputs[0] == {"table": "u_tester.feat", "version": 1}
    run = _client().get_run(r2.mlflow_run_id)
    assert run.data.params["features_version"] == "1"
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"u_tester.feat@v1", "dp1.object@v0"}
    assert sum(r2.counts["train"].values()) + sum(r2.counts["validation"].values()) == feat.where(
        "objectId % 10 != 3").count()
    # the alias still names version 1, trained on version 0; "latest" is version 2
    assert classify("u_tester.feat", "varclass", model_alias="champion").model.version == 1
    assert classify("u_tester.feat", "varclass").model.version == 2
    old = classify("u_tester.feat", "varclass", model_version=1, table_version=0)
    assert old.version == 0 and old.metadata["training_inputs"][0]["version"] == 0


def test_binary_gbt_logs_roc_auc_and_sklearn_model_scores_through_a_pandas_udf(ml):
    spark = ml["spark"]
    labels = ml["labels"].assign(periodic=lambda d: np.where(d.variability_class == "periodic", "yes", "no"))
    write_table(spark.createDataFrame(labels[["objectId", "periodic"]]), "u_tester.periodic_labels",
                ra_column=None, dec_column=None)
    g = train_classifier("u_tester.feat", labels="u_tester.periodic_labels", label_column="periodic",
                         algorithm="gbt", hyperparameters={"max_iter": 10, "maxDepth": 4}, model_name="is_periodic")
    assert g.classes == ["no", "yes"] and g.metrics["accuracy"] >= 0.85 and g.metrics["roc_auc"] >= 0.9
    out = classify("u_tester.feat", "is_periodic").to_pandas().merge(labels, on="objectId")
    v = out[_held_out(out)]
    assert g.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(v.periodic == "yes", v.p_yes), abs=1e-12)

    s = train_classifier("u_tester.feat", labels="dp1.object", label_column="variability_class",
                         algorithm="sklearn", sklearn_estimator="HistGradientBoostingClassifier",
                         hyperparameters={"max_iter": 60}, model_name="varclass_hgb")
    assert s.metrics["accuracy"] >= ACCURACY_FLOOR, s.metrics
    c = classify("u_tester.feat", "varclass_hgb")
    assert c.flavor == "sklearn"
    out = c.to_pandas().merge(ml["labels"], on="objectId")
    v = out[_held_out(out)]
    assert s.metrics["accuracy"] == pytest.approx(skm.accuracy_score(v.variability_class, v.predicted_class))
    # the same model scored by MLflow's own pyfunc loader gives the same classes (the model serves elsewhere)
    import mlflow

    pyfunc = mlflow.pyfunc.load_model("models:/varclass_hgb/1")
    x = read_table("u_tester.feat").toPandas().sort_values("objectId").head(50)
    got = out.set_index("objectId").loc[x.objectId, "predicted_class"].to_numpy()
    assert (np.asarray(pyfunc.predict(x[s.feature_columns].astype("float64"))) == got).all()


# ------------------------------------------------------------------------------------------------ bad inputs


def _runs(name="classifiers/tester") -> int:
    client = _client()
    exp = client.get_experiment_by_name(name)
    return len(client.search_runs([exp.experiment_id], max_results=1000)) if exp else 0


def test_bad_inputs_are_clear_errors_and_train_nothing(ml, monkeypatch):
    spark = ml["spark"]
    before = _runs()
    kw = dict(labels="dp1.object", label_column="variability_class")
    with pytest.raises(ColumnNotFound, match="no label column 'klass'.*labels="):
        train_classifier("u_tester.feat", label_column="klass")
    with pytest.raises(ColumnNotFound, match="labels table dp1.object has no label column 'klass'"):
        train_classifier("u_tester.feat", labels="dp1.object", label_column="klass")
    one = ml["labels"].assign(kind="star")[["objectId", "kind"]]
    write_table(spark.createDataFrame(one), "u_tester.one_class", ra_column=None, dec_column=None)
    with pytest.raises(UserbatchError, match="only one class .'star'. in kind"):
        train_classifier("u_tester.feat", labels="u_tester.one_class", label_column="kind")
    empty = read_table("u_tester.feat").limit(0)
    write_table(empty, "u_tester.empty_feat", ra_column=None, dec_column=None)
    with pytest.raises(UserbatchError, match="no labelled rows"):
        train_classifier("u_tester.empty_feat", **kw)
    with pytest.raises(ColumnNotFound, match="feature column.* nope"):
        train_classifier("u_tester.feat", feature_columns=["g_psfFluxMean", "nope"], **kw)
    with pytest.raises(UserbatchError, match="must be one of random_forest, gbt, sklearn"):
        train_classifier("u_tester.feat", algorithm="xgboost", **kw)
    with pytest.raises(UserbatchError, match="no hyperparameter 'numTress'.*numTrees"):
        train_classifier("u_tester.feat", hyperparameters={"numTress": 5}, **kw)
    with pytest.raises(UserbatchError, match="HistGradientBoostingClassifier has no hyperparameter"):
        train_classifier("u_tester.feat", algorithm="sklearn", hyperparameters={"n_estimators": 5}, **kw)
    with pytest.raises(UserbatchError, match="validation_fraction"):
        train_classifier("u_tester.feat", validation_fraction=1.5, **kw)
    with pytest.raises(UserbatchError, match="model_alias needs model_name"):
        train_classifier("u_tester.feat", model_alias="champion", **kw)
    with pytest.raises(UserbatchError, match="model name '../evil'"):
        train_classifier("u_tester.feat", model_name="../evil", **kw)
    with pytest.raises(UserbatchError, match="alias 'latest'"):
        train_classifier("u_tester.feat", model_name="varclass", model_alias="latest", **kw)
    monkeypatch.setenv("USERBATCH_USER", "mallory")
    with pytest.raises(AccessDenied, match="registered model 'varclass' belongs to tester"):
        train_classifier("u_tester.feat", model_name="varclass", **kw)
    monkeypatch.setenv("USERBATCH_USER", "tester")
    assert _runs() == before and _runs("classifiers/mallory") == 0  # nothing was trained or logged
    with pytest.raises(ModelNotFound, match="no registered model 'nosuch'; known: .*varclass"):
        classify("u_tester.feat", "nosuch")
    with pytest.raises(ModelNotFound, match="has no version 99; versions: 1, 2"):
        classify("u_tester.feat", "varclass", model_version=99)
    with pytest.raises(ModelNotFound, match="has no alias 'gold'; aliases: champion"):
        classify("u_tester.feat", "varclass", model_alias="gold")
    with pytest.raises(UserbatchError, match="lacks the model's feature column"):
        classify("dp1.object", "varclass")
    with pytest.raises(UserbatchError, match="bad where filter"):
        classify("u_tester.feat", "varclass", where="no_such_column > 1")


# ------------------------------------------------------------------------------------------------ jobs, CLI


def test_jobs_and_cli(ml, tmp_path):
    from userbatch.cli import main
    from userbatch.facility.jobmain import run_template

    summary = run_template("classify", {"source": "u_tester.feat", "model": "varclass", "model_alias": "champion",
                                        "output": "u_tester.varclass_job", "where": "objectId % 2 = 0"})
    out = read_table("u_tester.varclass_job").toPandas()
    assert summary["model"]["version"] == 1 and len(out) == summary["outputs"][0]["rows"] > 0
    assert (out.objectId % 2 == 0).all()
    runner = CliRunner()
    res = runner.invoke(main, ["models", "list"])
    assert res.exit_code == 0 and "varclass " in res.output and "@champion=v1" in res.output
    res = runner.invoke(main, ["models", "show", "varclass", "--alias", "champion"])
    assert res.exit_code == 0 and "trained on: u_tester.feat@v0, dp1.object@v0" in res.output
    assert "val_accuracy" in res.output
    res = runner.invoke(main, ["models", "alias", "varclass", "champion", "2"])
    assert res.exit_code == 0, res.output
    assert int(_client().get_model_version_by_alias("varclass", "champion").version) == 2
    res = runner.invoke(main, ["mlflow", "ui", "--print", "--port", "5077"])
    assert res.exit_code == 0 and f"--backend-store-uri sqlite:///{ml['base'] / 'mlflow.db'}" in res.output
    assert "--port 5077" in res.output and "--host 127.0.0.1" in res.output
    res = runner.invoke(main, ["models", "show", "nosuch"])
    assert res.exit_code == 2 and res.output.startswith("error: no registered model")


@pytest.mark.slow
def test_training_through_the_facility_links_both_run_ids(ml, tmp_path):
    """One real spark-submit: the facility run's result names the MLflow run, which is tagged with the facility
    run id; the run is charged like any other."""
    with facility_under(tmp_path, "admins: [tester]\nruns: {default_cores: 1, default_max_hours: 0.5}\n",
                        db_url=os.environ["USERBATCH_DB_URL"]) as fx:
        ann = fx.fac("ann")
        with fx.worker():
            run = ann.submit(template="train_classifier", cores=1, params={
                "features": "u_tester.feat", "labels": "dp1.object", "label_column": "variability_class",
                "hyperparameters": {"numTrees": 10, "maxDepth": 5}, "model_name": "ann_varclass",
                "model_alias": "champion"})
            done = ann.wait(run["id"], timeout_s=600)
    assert done["state"] == "succeeded", done["error"]
    result = done["result"]
    mlrun = _client().get_run(result["mlflow"]["run_id"])
    assert mlrun.data.tags["userbatch.run_id"] == run["id"] and mlrun.data.tags["userbatch.user"] == "ann"
    assert mlrun.data.tags["userbatch.job"] == "template:train_classifier"
    assert result["mlflow"]["registered_model"] == "ann_varclass" and result["mlflow"]["model_version"] == 1
    from userbatch.tables.catalog import Catalog
    from userbatch.tables.read import resolve

    latest = resolve(Catalog().get("u_tester.feat"), record=False).version
    assert {(i["table"], i["version"]) for i in result["inputs"]} >= {("u_tester.feat", latest), ("dp1.object", 0)}
    assert result["summary"]["metrics"]["accuracy"] >= ACCURACY_FLOOR
    assert ann.results(run["id"])["mlflow"]["run_id"] == mlrun.info.run_id
    assert done["charged_core_hours"] > 0
    assert _client().get_registered_model("ann_varclass").tags["userbatch.owner"] == "ann"
