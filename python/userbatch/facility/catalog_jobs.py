"""Entry functions of the catalog templated jobs: resolved parameters in, a written table with provenance out.

Each is ``f(params, provenance) -> summary``; the parameters were checked against the job's template
(``conf/templates/<job>.yaml``), so what is left to check here is what needs the data (columns, coordinates),
which the library functions do with their own clear errors.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from ..errors import UserbatchError
from ..tables.provenance import Provenance
from ..user_code import locate

log = logging.getLogger(__name__)


def _motion(spec: dict | None):
    from ..sky.motion import Motion

    if not spec:
        return None
    known = set(Motion.__dataclass_fields__)
    unknown = sorted(set(spec) - known)
    if unknown or "epoch" not in spec:
        raise UserbatchError(f"motion takes {', '.join(sorted(known))} (epoch required); "
                             + (f"unknown: {', '.join(unknown)}" if unknown else "epoch is missing"))
    return Motion(**spec)


#: The crossmatch template's defaults for the built-in matching, which ``algorithm`` replaces.
_BUILTIN_DEFAULTS = {"radius_arcsec": 1.0, "mode": "nearest", "k": None, "min_radius_arcsec": 0.0}


def _matching(p: dict[str, Any]) -> dict[str, Any]:
    """What decides the pairs: ``algorithm`` (``module:Class`` or a built-in name) with ``algorithm_params``, or the
    built-in parameters; both at once is refused, naming the parameters to drop."""
    if not p.get("algorithm"):
        if p.get("algorithm_params"):
            raise UserbatchError("algorithm_params needs algorithm (module:Class or a built-in name)")
        return {k: p[k] for k in _BUILTIN_DEFAULTS}
    changed = [k for k, v in _BUILTIN_DEFAULTS.items() if p.get(k, v) != v]
    if changed:
        raise UserbatchError(f"with algorithm, drop {', '.join(changed)}: the algorithm declares its radius and "
                             "which pairs it keeps (give them in algorithm_params)")
    return {"algorithm": p["algorithm"], "algorithm_params": p.get("algorithm_params") or {}}


def crossmatch(params: dict[str, Any], provenance: Provenance) -> dict:
    """Cross-match two catalog tables and write the pairs as a new table (see ``conf/templates/crossmatch.yaml``).

    A user's ``algorithm: my_match:MyMatch`` (or ``path/to/my_match.py:MyMatch``) is found on the driver by
    :func:`~userbatch.user_code.locate` (the job file's directory and the working directory are searched); the
    Spark engine ships it to the executors itself (:func:`~userbatch.user_code.ship`).
    """
    from ..ops.crossmatch import crossmatch as xmatch
    from ..spark import session

    p = params
    matching = _matching(p)
    user = locate(matching["algorithm"], what="algorithm") if ":" in str(matching.get("algorithm", "")) else None
    if user is not None:
        matching["algorithm"] = user.spec
    spark = session(app_name="userbatch-crossmatch")
    xm = xmatch(p["left"], p["right"], **matching, how=p["how"],
                one_to_one=p["one_to_one"], motion=_motion(p["motion"]),
                left_columns=p["left_columns"], right_columns=p["right_columns"],
                suffixes=("", p["right_suffix"]), left_version=p["left_version"], right_version=p["right_version"],
                margin_fallback=p["margin_fallback"], engine=p["engine"], spark=spark)
    log.info("crossmatch: %s", xm.explain())
    result = xm.write(p["output"], mode=p["write_mode"], provenance=provenance,
                      pixel_threshold=p["pixel_threshold"], margin_radius_arcsec=p["margin_radius_arcsec"])
    return {"outputs": [{"table": result.table, "version": result.version, "rows": result.rows}],
            "inputs": provenance.inputs, "plan": xm.explain(), "write": asdict(result)}


def forced_source_stats(params: dict[str, Any], provenance: Provenance) -> dict:
    """Per-object light-curve features of a ForcedSource table (see ``conf/templates/forced_source_stats.yaml``)."""
    from ..ops.lightcurves import features
    from ..spark import session

    p = params
    spark = session(app_name="userbatch-forced_source_stats")
    f = features(p["source"], bands=p["bands"], layout=p["layout"], lc_features=p["lc_features"],
                 time_column=p["time_column"], version=p["source_version"], engine=p["engine"], spark=spark)
    log.info("forced_source_stats: %s", f.explain())
    result = f.write(p["output"], mode=p["write_mode"], provenance=provenance)
    return {"outputs": [{"table": result.table, "version": result.version, "rows": result.rows}],
            "inputs": provenance.inputs, "plan": f.explain()}


def periodogram(params: dict[str, Any], provenance: Provenance) -> dict:
    """Lomb–Scargle periodograms per object (see ``conf/templates/periodogram.yaml``)."""
    from ..ops.periodogram import periodogram as run
    from ..spark import session

    p = params
    spark = session(app_name="userbatch-periodogram")
    pg = run(p["source"], bands=p["bands"], multiband=p["multiband"], min_period_day=p["min_period_day"],
             max_period_day=p["max_period_day"], baseline_day=p["baseline_day"],
             samples_per_peak=p["samples_per_peak"], top_n=p["top_n"], fap=p["fap"], backend=p["backend"],
             time_column=p["time_column"], version=p["source_version"], engine=p["engine"], spark=spark)
    log.info("periodogram: %s", pg.explain())
    result = pg.write(p["output"], mode=p["write_mode"], provenance=provenance)
    return {"outputs": [{"table": result.table, "version": result.version, "rows": result.rows}],
            "inputs": provenance.inputs, "plan": pg.explain()}


def train_classifier(params: dict[str, Any], provenance: Provenance) -> dict:
    """Train a classifier tracked in MLflow (see ``conf/templates/train_classifier.yaml``); no table is written —
    the MLflow run and the registered model version are the outputs, named in the run's result."""
    from ..ml.train import train_classifier as train
    from ..spark import session

    p = params
    spark = session(app_name="userbatch-train_classifier")
    r = train(p["features"], label_column=p["label_column"], labels=p["labels"], key=p["key"],
              features_version=p["features_version"], labels_version=p["labels_version"],
              feature_columns=p["feature_columns"], exclude_columns=p["exclude_columns"], algorithm=p["algorithm"],
              sklearn_estimator=p["sklearn_estimator"], hyperparameters=p["hyperparameters"],
              class_weight=p["class_weight"], validation_fraction=p["validation_fraction"], seed=p["seed"],
              experiment=p["experiment"], run_name=p["run_name"], model_name=p["model_name"],
              model_alias=p["model_alias"], spark=spark)
    return {"outputs": [], "inputs": r.inputs,
            "mlflow": {"run_id": r.mlflow_run_id, "experiment": r.experiment, "experiment_id": r.experiment_id,
                       "model_uri": r.model_uri, "registered_model": r.registered_model,
                       "model_version": r.model_version, "model_alias": r.model_alias,
                       "tracking_uri": r.tracking_uri},
            "metrics": r.metrics, "classes": r.classes}


def classify(params: dict[str, Any], provenance: Provenance) -> dict:
    """Batch inference of a registered model over a table (see ``conf/templates/classify.yaml``)."""
    from ..ml.inference import classify as run
    from ..spark import session

    p = params
    spark = session(app_name="userbatch-classify")
    c = run(p["source"], p["model"], model_version=p["model_version"], model_alias=p["model_alias"],
            table_version=p["source_version"], keep_columns=p["keep_columns"], where=p["where"], spark=spark)
    log.info("classify: %s", c.explain())
    result = c.write(p["output"], mode=p["write_mode"], provenance=provenance)
    return {"outputs": [{"table": result.table, "version": result.version, "rows": result.rows}],
            "inputs": provenance.inputs, "plan": c.explain(), "model": c.provenance_parameters()["model"]}
