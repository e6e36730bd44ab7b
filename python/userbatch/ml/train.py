"""Train a classifier on a features table and record everything about it in MLflow.

One call: features (+ labels) -> hash split -> fit -> validation metrics -> one MLflow run holding the parameters,
metrics, confusion matrix (JSON and plot), feature importances, the input tables as MLflow datasets *with their
Delta versions*, and the model with its signature — optionally registered under a name, with an alias. The MLflow
run is tagged with the facility run that made it (``userbatch.run_id``), and the result the facility stores names
the MLflow run, so each side finds the other.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from ..config import settings
from ..engine import get_session
from ..errors import UserbatchError
from ..extras import require
from ..tables import runctx
from ..tables.catalog import Catalog
from ..tables.provenance import code_version
from ..tables.read import resolve, to_spark
from . import metrics as M
from .dataset import LabelledData, labelled_data
from .models import PREDICTION, Predictor, fit, probability_column
from .registry import check_alias, check_can_register, register
from .tracking import configure, experiment_id, tracking_uri

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    mlflow_run_id: str
    experiment: str
    experiment_id: str
    model_uri: str
    algorithm: str
    classes: list[str]
    feature_columns: list[str]
    metrics: dict[str, float]
    confusion: list[list[int]]
    inputs: list[dict]
    counts: dict
    registered_model: str | None = None
    model_version: int | None = None
    model_alias: str | None = None
    tracking_uri: str = ""
    importances: dict[str, float] | None = field(default=None, repr=False)
    timings: dict[str, float] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate(pred: Predictor, data: LabelledData, validation: bool = True) -> tuple[dict, np.ndarray]:
    """Metrics of ``pred`` on the validation (or training) rows of ``data``, and the confusion matrix."""
    from pyspark.sql import functions as F

    rows = data.df.where(F.col("_validation") if validation else ~F.col("_validation"))
    scored = pred.predict(rows, keep=[data.key, data.label]).cache()
    try:
        cm = M.confusion(scored, data.label, PREDICTION, data.classes)
        out = M.from_confusion(cm, data.classes)
        if validation and len(data.classes) == 2 and pred.probabilities:
            positive = data.classes[1]
            pdf = scored.select(data.label, probability_column(positive)).toPandas()
            out["roc_auc"] = M.roc_auc(pdf[data.label].to_numpy() == positive,
                                       pdf[probability_column(positive)].to_numpy())
    finally:
        scored.unpersist()
    return out, cm


def _signature(pred: Predictor, data: LabelledData):
    import pandas as pd
    from mlflow.models import infer_signature

    example = pd.DataFrame({c: [0.0] for c in pred.feature_columns})
    output = pd.DataFrame({PREDICTION: [data.classes[0]]})
    return infer_signature(example, output)


def _delta_source_class():
    from mlflow.data.delta_dataset_source import DeltaDatasetSource

    class DeltaSource(DeltaDatasetSource):
        """MLflow's Delta source, except that version 0 is kept (MLflow drops a falsy version when serialising)."""
        def to_dict(self):
            info = super().to_dict()
            if self._delta_table_version is not None:
                info["delta_table_version"] = int(self._delta_table_version)
            return info

    return DeltaSource


def _log_inputs(mlflow, data: LabelledData, spark) -> None:
    from mlflow.data.spark_dataset import SparkDataset


    _DeltaSource = _delta_source_class()
    for i, inp in enumerate(data.inputs):
        snap = resolve(Catalog().get(inp.table), version=inp.version, record=False)
        # built by hand: mlflow.data.from_spark treats version 0 as "unknown" and asks delta-spark (absent here)
        source = _DeltaSource(path=inp.location, delta_table_version=inp.version)
        ds = SparkDataset(df=to_spark(spark, snap), source=source, name=f"{inp.table}@v{inp.version}",
                          digest=inp.digest, targets=data.label if (i == len(data.inputs) - 1) else None)
        mlflow.log_input(ds, context="training" if i == 0 else "labels")


def _log_model(mlflow, pred: Predictor, data: LabelledData, meta: dict):
    sig = _signature(pred, data)
    if pred.flavor == "spark":
        import mlflow.spark
        import pyspark

        return mlflow.spark.log_model(pred.model, "model", signature=sig, metadata=meta,
                                      pip_requirements=[f"pyspark=={pyspark.__version__}"])
    import mlflow.sklearn
    import sklearn
    import skops.io

    # skops (MLflow's safe format) lists the types a loader must trust; these are the ones this model, which we
    # just trained, is made of — the HGB tree predictor and the feature-cleaning function
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(pred.model))
    return mlflow.sklearn.log_model(pred.model, name="model", signature=sig, metadata=meta,
                                    skops_trusted_types=trusted,
                                    pip_requirements=[f"scikit-learn=={sklearn.__version__}",
                                                      f"numpy=={np.__version__}"])


def train_classifier(features: str, *, label_column: str, labels: str | None = None, key: str = "objectId",
                     features_version: int | None = None, labels_version: int | None = None,
                     feature_columns: list[str] | None = None, exclude_columns: list[str] | None = None,
                     algorithm: str = "random_forest", sklearn_estimator: str = "HistGradientBoostingClassifier",
                     hyperparameters: dict | None = None, class_weight: str = "balanced",
                     validation_fraction: float = 0.25, seed: int = 42, experiment: str | None = None,
                     run_name: str | None = None, model_name: str | None = None, model_alias: str | None = None,
                     spark=None) -> TrainResult:
    """Train, evaluate on held-out objects, log to MLflow and (with ``model_name``) register the model.

    Parameters
    ----------
    features : str
        The catalog table to learn from, one row per object.
    label_column : str
        Column holding each object's class (in ``labels`` when given, else in ``features``); rows without one
        are skipped.
    labels : str, optional
        A catalog table of labels, joined to ``features`` on ``key``; by default the labels are in ``features``.
    key : str
        The object id column: the join key, and what the train/validation split hashes.
    features_version : int, optional
        Delta version of ``features``; by default the latest (in a facility run, the pinned one).
    labels_version : int, optional
        Delta version of ``labels``; by default the latest (in a facility run, the pinned one).
    feature_columns : list of str, optional
        Numeric columns to learn from; by default every numeric column but the key, the label, ``coord_ra``,
        ``coord_dec``, ``ra``, ``dec`` and names starting with ``_``.
    exclude_columns : list of str, optional
        Columns left out of the features.
    algorithm : {"random_forest", "gbt", "sklearn"}
        Spark MLlib random forest or gradient-boosted trees (one-vs-rest without probabilities beyond two
        classes), or a scikit-learn estimator trained on the driver.
    sklearn_estimator : {"HistGradientBoostingClassifier", "RandomForestClassifier", "ExtraTreesClassifier"}
        The scikit-learn estimator of ``algorithm="sklearn"``.
    hyperparameters : dict, optional
        Estimator parameters over the defaults: MLlib names (``numTrees`` or ``num_trees``, ``maxDepth`` ...) or
        the scikit-learn estimator's own.
    class_weight : {"balanced", "none"}
        Weight rows by n / (k n_class), so each class counts alike, or not at all.
    validation_fraction : float
        Fraction of objects held out for validation, between 0 and 1 (exclusive).
    seed : int
        Seed of the split hash and of the estimator.
    experiment : str, optional
        The MLflow experiment to log to; by default ``classifiers/<user>``.
    run_name : str, optional
        Name of the MLflow run; by default ``<algorithm>-<features table>``.
    model_name : str, optional
        Register the model under this name (new, or one of your own) as a new version; by default not registered.
    model_alias : str, optional
        Alias to point at the registered version; needs ``model_name``.
    spark : pyspark.sql.SparkSession, optional
        The session to train with; by default the running session, or a new bare one.

    Returns
    -------
    TrainResult
        The MLflow run and experiment, model URI, classes, feature columns, validation metrics, confusion matrix,
        input tables with their versions, and the registered model version (None when not registered).
    """
    mlflow = require("mlflow", "ml")


    spark = spark or get_session()
    user = settings().user
    client = configure()
    if model_name:  # refuse before any training if the name is not the user's to add to
        check_can_register(client, model_name, user)
        if model_alias:
            check_alias(model_alias)
    elif model_alias:
        raise UserbatchError("model_alias needs model_name: an alias points at a registered model version")
    exp_name = experiment or f"classifiers/{user}"
    exp_id = experiment_id(exp_name)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    data = labelled_data(features, label_column=label_column, labels=labels, key=key,
                         features_version=features_version, labels_version=labels_version,
                         feature_columns=feature_columns, exclude_columns=exclude_columns,
                         validation_fraction=validation_fraction, seed=seed, spark=spark)
    data.df = data.df.cache()
    timings["data_s"] = time.perf_counter() - t0
    try:
        pred = fit(data, algorithm, hyperparameters, class_weight, seed, sklearn_estimator)
        timings["fit_s"] = time.perf_counter() - t0 - sum(timings.values())
        val, cm = evaluate(pred, data, validation=True)
        train_metrics, _ = evaluate(pred, data, validation=False)
        timings["evaluate_s"] = time.perf_counter() - t0 - sum(timings.values())
    finally:
        data.df.unpersist()

    inputs = [i.as_dict() for i in data.inputs]
    meta = {"userbatch": {"classes": data.classes, "feature_columns": data.feature_columns, "key": key,
                          "label": label_column, "algorithm": algorithm, "probabilities": pred.probabilities,
                          "training_inputs": inputs, "split": {"seed": seed, "validation_fraction":
                                                                validation_fraction}}}
    params = {"algorithm": algorithm, "class_weight": class_weight, "validation_fraction": validation_fraction,
              "seed": seed, "key": key, "label_column": label_column, "n_features": len(data.feature_columns),
              "classes": ",".join(data.classes), "n_train": sum(data.counts["train"].values()),
              "n_validation": sum(data.counts["validation"].values()), "features_table": data.inputs[0].table,
              "features_version": data.inputs[0].version}
    if labels:
        params.update(labels_table=data.inputs[1].table, labels_version=data.inputs[1].version)
    if algorithm == "sklearn":
        params["sklearn_estimator"] = sklearn_estimator
    params.update({f"hp_{k}": v for k, v in (hyperparameters or {}).items()})
    tags = {"userbatch.user": user, "userbatch.code_version": code_version(),
            "userbatch.inputs": ", ".join(f"{i['table']}@v{i['version']}" for i in inputs)}
    if runctx.run_id():
        tags.update({"userbatch.run_id": runctx.run_id(), "userbatch.job": runctx.job_name() or ""})

    with mlflow.start_run(experiment_id=exp_id, run_name=run_name or f"{algorithm}-{data.inputs[0].table}",
                          tags=tags) as run:
        mlflow.log_params(params)
        mlflow.log_metrics({f"val_{k}": v for k, v in val.items()})
        mlflow.log_metric("train_accuracy", train_metrics["accuracy"])
        mlflow.log_dict({"classes": data.classes, "matrix": cm.tolist()}, "confusion_matrix.json")
        mlflow.log_dict({"feature_columns": data.feature_columns, "counts": data.counts,
                         "importances": pred.importances}, "features.json")
        fig = M.plot_confusion(cm, data.classes, f"{algorithm} on {data.inputs[0].table}@v{data.inputs[0].version}"
                               f" (validation, accuracy {val['accuracy']:.3f})")
        mlflow.log_figure(fig, "confusion_matrix.png")
        with warnings.catch_warnings():  # MLflow's hint about integer columns: ours are counts, never null
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            _log_inputs(mlflow, data, spark)
            info = _log_model(mlflow, pred, data, meta)
        run_id = run.info.run_id
    model_uri = info.model_uri  # runs:/<run>/model (spark) or models:/m-<id> (MLflow 3 logged models)
    version = register(client, model_uri, model_name, run_id, user, model_alias) if model_name else None
    timings["mlflow_s"] = time.perf_counter() - t0 - sum(timings.values())
    log.info("train_classifier timings: %s", ", ".join(f"{k}={v:.1f}" for k, v in timings.items()))
    log.info("trained %s: validation accuracy %.3f (MLflow run %s%s)", algorithm, val["accuracy"], run_id,
             f", {model_name} v{version}" if version else "")
    return TrainResult(mlflow_run_id=run_id, experiment=exp_name, experiment_id=exp_id, model_uri=model_uri,
                       algorithm=algorithm, classes=data.classes, feature_columns=data.feature_columns,
                       metrics=val, confusion=cm.tolist(), inputs=inputs, counts=data.counts,
                       registered_model=model_name, model_version=version, model_alias=model_alias,
                       tracking_uri=tracking_uri(), importances=pred.importances, timings=timings)
