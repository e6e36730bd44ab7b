"""Batch inference: a registered model version applied to a catalog table on Spark, written as a new table.

The output keeps the model's key (``objectId``) and the input's position columns — so a classified table is a
spatial table like any other, open to cone searches and cross-matches — plus ``predicted_class`` and one
``p_<class>`` probability column per class. Its commit provenance names the input table and version, the model
(name, version, alias, MLflow run) and, through the model, the table versions the model was trained on, so
``userbatch provenance`` walks from a classification back to the rows the classifier learned from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..engine import get_session
from ..errors import ColumnNotFound, UserbatchError
from ..tables.catalog import Catalog
from ..tables.provenance import Provenance
from ..tables.read import resolve, to_spark
from ..tables.write import write_table
from .registry import load

log = logging.getLogger(__name__)


@dataclass
class Classification:
    table: str
    version: int
    model: object  # registry.ModelRef
    metadata: dict
    df: object  # Spark DataFrame of the predictions
    ra_column: str | None
    dec_column: str | None
    flavor: str

    def to_spark(self):
        return self.df

    def to_pandas(self):
        return self.df.toPandas()

    def explain(self) -> str:
        m = self.model
        return (f"classify {self.table}@v{self.version} with {m.name} v{m.version}"
                + (f" (@{m.alias})" if m.alias else "") + f" [{self.flavor}, {self.metadata['algorithm']}; "
                f"classes {', '.join(self.metadata['classes'])}; {len(self.metadata['feature_columns'])} features]")

    def provenance_parameters(self) -> dict:
        m = self.model
        return {"model": {"name": m.name, "version": m.version, "alias": m.alias, "mlflow_run_id": m.run_id,
                          "uri": m.uri, "algorithm": self.metadata["algorithm"], "classes": self.metadata["classes"],
                          "training_inputs": self.metadata.get("training_inputs", [])}}

    def write(self, name: str, mode: str = "create", *, provenance=None, **write_options):
        """Write the predictions as table ``name``; provenance names the input, the model and its training data."""
        prov = provenance or Provenance(job="classify")
        prov.add_input(self.table, self.version)
        for t in self.metadata.get("training_inputs", []):  # the model's own inputs, one step further back
            prov.add_input(t["table"], t["version"], role="model training",
                           model=f"{self.model.name}@v{self.model.version}")
        prov.parameters.setdefault("classify", self.provenance_parameters())
        return write_table(self.df, name, mode, ra_column=self.ra_column, dec_column=self.dec_column,
                           provenance=prov, **write_options)


def classify(table: str, model: str, *, model_version: int | None = None, model_alias: str | None = None,
             table_version: int | None = None, keep_columns: list[str] | None = None,
             where: str | None = None, spark=None) -> Classification:
    """Score every row of ``table`` (at ``table_version``) with registered model ``model`` (a version, an alias,
    or the latest). ``keep_columns`` are carried to the output beside the key and positions; ``where`` is an
    optional SQL filter on the input rows.

    Parameters
    ----------
    table : str
        The catalog table to score, e.g. a features table; it must hold the model's key column.
    model : str
        Name of a model registered in MLflow by :func:`~userbatch.ml.train.train_classifier`.
    model_version : int, optional
        The registered version to use; by default the latest (not with ``model_alias``).
    model_alias : str, optional
        The alias of the version to use (not with ``model_version``).
    table_version : int, optional
        Delta version of ``table`` to score; by default the latest (in a facility run, the pinned one).
    keep_columns : list of str, optional
        Input columns carried to the output besides the key and the ra/dec columns.
    where : str, optional
        A Spark SQL condition; only rows meeting it are scored.
    spark : pyspark.sql.SparkSession, optional
        The session to score with; by default the running session, or a new bare one.

    Returns
    -------
    Classification
        The predictions (lazy): ``predicted_class``, and ``p_<class>`` columns when the model gives
        probabilities; read them with ``to_spark`` or ``to_pandas``, or ``write`` them as a table.
    """

    if model_version is not None and model_alias:
        raise UserbatchError("give model_version or model_alias, not both")
    spark = spark or get_session()
    pred, ref, meta = load(model, version=model_version, alias=model_alias)
    entry = Catalog().get(table)
    snap = resolve(entry, version=table_version)
    df = to_spark(spark, snap)
    key = meta["key"]
    if key not in df.columns:
        raise UserbatchError(f"{table} has no column {key!r}, the key model {model} was trained with")
    if where:
        from pyspark.errors import PySparkException

        try:
            df = df.where(where)
            df.schema  # noqa: B018 - analyse now so a bad filter is the user's error, not a task failure
        except PySparkException as e:
            raise UserbatchError(f"bad where filter {where!r}: {str(e).splitlines()[0]}") from None
    extra = [c for c in (keep_columns or []) if c not in df.columns]
    if extra:

        raise ColumnNotFound(f"keep_columns {', '.join(extra)} not in {table}")
    ra, dec = entry.ra_column, entry.dec_column
    spatial = bool(ra and dec and ra in df.columns and dec in df.columns)
    keep = list(dict.fromkeys([key] + ([ra, dec] if spatial else []) + list(keep_columns or [])))
    keep = [c for c in keep if c not in ("predicted_class",) and not c.startswith("p_")] if keep else keep
    out = pred.predict(df, keep)
    log.info("classify %s@v%d with %s v%d", entry.name, snap.version, ref.name, ref.version)
    return Classification(entry.name, snap.version, ref, meta, out, ra if spatial else None,
                          dec if spatial else None, pred.flavor)
