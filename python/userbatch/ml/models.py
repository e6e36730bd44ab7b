"""The classifiers userbatch trains, behind one interface: fit on a :class:`~.dataset.LabelledData`, predict on any
Spark DataFrame holding the feature columns.

* ``random_forest`` (default) and ``gbt``: Spark MLlib, trained where the data is; the fitted model is a Spark
  ``PipelineModel`` (feature cleaning -> vector -> classifier -> class name) logged with MLflow's ``spark`` flavor.
  MLlib's gradient-boosted trees are binary only, so a multi-class ``gbt`` is one-vs-rest; that model gives a class
  but no probabilities.
* ``sklearn``: a scikit-learn estimator trained on the driver (the training set is collected: fine for feature
  tables of a few million rows) and applied on Spark through a pandas UDF, the broadcast model scoring Arrow
  batches on the executors; logged with the ``sklearn`` flavor, so it also serves anywhere MLflow does.

Class imbalance is handled with per-row weights (``balanced``: n / (k n_class)), which every algorithm accepts.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np

from ..engine import require_classic
from ..errors import UserbatchError
from ..extras import require
from .dataset import MISSING, LabelledData, clean_names, clean_sql

log = logging.getLogger(__name__)

ALGORITHMS = ("random_forest", "gbt", "sklearn")
SKLEARN_ESTIMATORS = {
    "HistGradientBoostingClassifier": "sklearn.ensemble",
    "RandomForestClassifier": "sklearn.ensemble",
    "ExtraTreesClassifier": "sklearn.ensemble",
}
SPARK_DEFAULTS = {"random_forest": {"numTrees": 100, "maxDepth": 8}, "gbt": {"maxIter": 40, "maxDepth": 5}}
SKLEARN_DEFAULTS = {"RandomForestClassifier": {"n_estimators": 200}, "ExtraTreesClassifier": {"n_estimators": 200}}
PREDICTION = "predicted_class"


def probability_column(cls: str) -> str:
    """``p_<class>``, the class name reduced to letters, digits and underscores."""
    return "p_" + re.sub(r"[^0-9A-Za-z_]", "_", str(cls))


def clean_array(x):
    """NaN, infinite (and None) features -> :data:`~.dataset.MISSING`, as the Spark pipeline's SQL does."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.isfinite(x), x, MISSING)


def class_weights(counts: dict[str, int], mode: str) -> dict[str, float]:
    if mode == "none":
        return {c: 1.0 for c in counts}
    if mode != "balanced":
        raise UserbatchError(f"class_weight must be 'balanced' or 'none', got {mode!r}")
    total, k = sum(counts.values()), len(counts)
    return {c: total / (k * n) for c, n in counts.items()}


@dataclass
class Predictor:
    """A fitted or loaded model with what it needs to score a DataFrame."""

    flavor: str  # "spark" | "sklearn"
    model: object
    feature_columns: list[str]
    classes: list[str]
    probabilities: bool = True
    importances: dict[str, float] | None = field(default=None)

    def predict(self, df, keep: list[str]):
        """``keep`` columns + ``predicted_class`` + ``p_<class>`` (when the model gives probabilities)."""
        missing = [c for c in self.feature_columns if c not in df.columns]
        if missing:
            raise UserbatchError(f"the input lacks the model's feature column(s) {', '.join(missing)}")
        keep = [c for c in keep if c in df.columns]
        if self.flavor == "spark":
            return self._predict_spark(df, keep)
        return self._predict_sklearn(df, keep)

    def _predict_spark(self, df, keep):
        from pyspark.ml.functions import vector_to_array
        from pyspark.sql import functions as F

        out = self.model.transform(df)
        cols = [F.col(c) for c in keep] + [F.col(PREDICTION)]
        if self.probabilities:
            arr = vector_to_array(F.col("_ubprobability"))
            cols += [arr[i].alias(probability_column(c)) for i, c in enumerate(self.classes)]
        return out.select(*cols)

    def _predict_sklearn(self, df, keep):
        import pandas as pd
        from pyspark.sql import types as T

        spark = df.sparkSession
        require_classic(spark, "batch inference of a scikit-learn model (a broadcast variable)")
        model = spark.sparkContext.broadcast(self.model)
        features, classes = list(self.feature_columns), list(self.classes)
        inputs = list(dict.fromkeys(keep + features))
        schema = T.StructType([df.schema[c] for c in keep] + [T.StructField(PREDICTION, T.StringType())]
                              + [T.StructField(probability_column(c), T.DoubleType()) for c in classes])

        def score(batches):
            m = model.value
            order = [list(m.classes_).index(c) for c in classes]
            for b in batches:
                x = b[features].astype("float64").to_numpy()
                proba = m.predict_proba(x)[:, order] if len(b) else np.zeros((0, len(classes)))
                out = b[keep].copy()
                out[PREDICTION] = np.asarray(classes, dtype=object)[np.argmax(proba, axis=1)] if len(b) else []
                for i, c in enumerate(classes):
                    out[probability_column(c)] = proba[:, i]
                yield pd.DataFrame(out)

        return df.select(*inputs).mapInPandas(score, schema)


def _spark_params(estimator, params: dict) -> dict:
    """Hyperparameters checked against the estimator (``num_trees`` accepted for ``numTrees``)."""
    out = {}
    for name, value in params.items():
        camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
        pname = name if estimator.hasParam(name) else camel
        if not estimator.hasParam(pname) or pname in ("featuresCol", "labelCol", "weightCol", "predictionCol",
                                                      "probabilityCol", "rawPredictionCol"):
            known = sorted(p.name for p in estimator.params if not p.name.endswith("Col"))
            raise UserbatchError(f"{type(estimator).__name__} has no hyperparameter {name!r}; known: "
                                 + ", ".join(known))
        out[pname] = value
    return out


def fit(data: LabelledData, algorithm: str = "random_forest", hyperparameters: dict | None = None,
        class_weight: str = "balanced", seed: int = 42, sklearn_estimator: str = "HistGradientBoostingClassifier"
        ) -> Predictor:
    """Train on the rows of ``data`` not marked ``_validation``."""
    if algorithm not in ALGORITHMS:
        raise UserbatchError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    weights = class_weights(data.counts["train"], class_weight)
    if algorithm == "sklearn":
        return _fit_sklearn(data, sklearn_estimator, dict(hyperparameters or {}), weights, seed)
    return _fit_spark(data, algorithm, dict(hyperparameters or {}), weights, seed)


def _fit_spark(data: LabelledData, algorithm: str, hyper: dict, weights: dict, seed: int) -> Predictor:
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import GBTClassifier, OneVsRest, RandomForestClassifier
    from pyspark.ml.feature import IndexToString, SQLTransformer, VectorAssembler
    from pyspark.sql import functions as F

    label, classes = data.label, data.classes
    cols = {"featuresCol": "_ubfeatures", "labelCol": "_ublabel", "predictionCol": "_ubprediction"}
    probs = True
    if algorithm == "random_forest":
        est = RandomForestClassifier(seed=seed, weightCol="_ubweight", probabilityCol="_ubprobability",
                                     rawPredictionCol="_ubraw", **cols)
        est._set(**_spark_params(est, {**SPARK_DEFAULTS["random_forest"], **hyper}))
    else:
        gbt = GBTClassifier(seed=seed)
        gbt._set(**_spark_params(gbt, {**SPARK_DEFAULTS["gbt"], **hyper}))
        if len(classes) == 2:
            est = gbt._set(weightCol="_ubweight", probabilityCol="_ubprobability", rawPredictionCol="_ubraw", **cols)
        else:
            # one-vs-rest: its binary models keep their default output columns, which is what a reloaded
            # OneVsRestModel looks for
            est = OneVsRest(classifier=gbt, weightCol="_ubweight", **cols)
            probs = False
    stages = [SQLTransformer(statement=clean_sql(data.feature_columns)),
              VectorAssembler(inputCols=clean_names(data.feature_columns), outputCol="_ubfeatures"),
              est, IndexToString(inputCol="_ubprediction", outputCol="predicted_class", labels=classes)]
    index = F.array_position(F.array(*[F.lit(c) for c in classes]), F.col(label)) - 1
    weight = F.lit(1.0)
    for c, w in weights.items():
        weight = F.when(F.col(label) == c, F.lit(float(w))).otherwise(weight)
    train = (data.df.where(~F.col("_validation"))
             .withColumn("_ublabel", index.cast("double")).withColumn("_ubweight", weight))
    model = Pipeline(stages=stages).fit(train)
    importances = None
    fitted = model.stages[2]
    if hasattr(fitted, "featureImportances"):
        imp = fitted.featureImportances.toArray()
        importances = {c: float(v) for c, v in zip(data.feature_columns, imp)}
    return Predictor("spark", model, list(data.feature_columns), list(classes), probs, importances)


def _fit_sklearn(data: LabelledData, name: str, hyper: dict, weights: dict, seed: int) -> Predictor:
    import importlib
    import inspect

    from pyspark.sql import functions as F

    require("sklearn", "ml")
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    if name not in SKLEARN_ESTIMATORS:
        raise UserbatchError(f"sklearn_estimator must be one of {', '.join(SKLEARN_ESTIMATORS)}, got {name!r}")
    cls = getattr(importlib.import_module(SKLEARN_ESTIMATORS[name]), name)
    accepted = set(inspect.signature(cls).parameters)
    unknown = sorted(set(hyper) - accepted)
    if unknown:
        raise UserbatchError(f"{name} has no hyperparameter(s) {', '.join(unknown)}; known: "
                             + ", ".join(sorted(accepted)))
    params = {**SKLEARN_DEFAULTS.get(name, {}), **hyper}
    if "random_state" in accepted:
        params.setdefault("random_state", seed)
    pdf = data.df.where(~F.col("_validation")).select(*data.feature_columns, data.label).toPandas()
    x = pdf[data.feature_columns].astype("float64").to_numpy()
    y = pdf[data.label].to_numpy(dtype=object).astype(str)
    w = np.array([weights[v] for v in y])
    model = Pipeline([("clean", FunctionTransformer(clean_array)), ("model", cls(**params))])
    model.fit(x, y, model__sample_weight=w)
    est = model.named_steps["model"]
    importances = None
    if hasattr(est, "feature_importances_"):
        importances = {c: float(v) for c, v in zip(data.feature_columns, est.feature_importances_)}
    log.info("sklearn %s trained on %d rows", name, len(pdf))
    return Predictor("sklearn", model, list(data.feature_columns), list(data.classes), True, importances)
