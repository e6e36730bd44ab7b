"""The rows a classifier learns from: a features table joined to its labels, feature columns chosen, a split.

The split is a hash of the key (``objectId``) and the seed, not a random sample: an object stays on the same side
when the table grows or is re-read at a newer version, a retrain is comparable with the model it replaces, and
anyone can recompute which objects were held out (:func:`split_expr`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from ..errors import ColumnNotFound, UserbatchError
from ..tables.catalog import Catalog
from ..tables.read import resolve, to_spark

log = logging.getLogger(__name__)

#: The value a missing or non-finite feature becomes before it reaches a model (trees split it off cleanly).
MISSING = -1.0e9

_NUMERIC = ("tinyint", "smallint", "int", "bigint", "float", "double", "boolean")


@dataclass
class TableInput:
    """One table read for training: which one, at which version, where its Delta log lives."""
    table: str
    version: int
    location: str

    def as_dict(self) -> dict:
        return {"table": self.table, "version": self.version}

    @property
    def digest(self) -> str:
        """A short fingerprint of (location, version) — what MLflow shows to tell dataset versions apart."""
        return hashlib.sha256(f"{self.location}@{self.version}".encode()).hexdigest()[:12]


@dataclass
class LabelledData:
    """Features and labels of one training set, with what it was built from."""
    df: object  # Spark DataFrame: key, features..., label, _validation (bool)
    key: str
    label: str
    feature_columns: list[str]
    classes: list[str]
    inputs: list[TableInput] = field(default_factory=list)
    counts: dict = field(default_factory=dict)  # {"train": {class: n}, "validation": {class: n}, "unlabelled": n}


def _read(table: str, version: int | None, spark) -> tuple[object, TableInput]:

    entry = Catalog().get(table)
    snap = resolve(entry, version=version)
    return to_spark(spark, snap), TableInput(entry.name, snap.version, entry.location)


def numeric_columns(df) -> list[str]:
    return [f.name for f in df.schema.fields if f.dataType.simpleString() in _NUMERIC]


def choose_features(df, key: str, label: str | None, feature_columns: list[str] | None,
                    exclude: list[str] | None = None) -> list[str]:
    """The named feature columns (checked), or every numeric column but the key, label, positions and ``_*``."""
    names = df.columns
    exclude = list(exclude or [])
    missing = [c for c in exclude if c not in names]
    if missing:
        raise ColumnNotFound(f"exclude_columns names {', '.join(missing)}, not in the features table")
    if feature_columns:
        missing = [c for c in feature_columns if c not in names]
        if missing:
            raise ColumnNotFound(f"feature column(s) {', '.join(missing)} not in the features table; "
                                 f"it has {', '.join(names)}")
        numeric = set(numeric_columns(df))
        bad = [c for c in feature_columns if c not in numeric]
        if bad:
            raise UserbatchError(f"feature column(s) {', '.join(bad)} are not numeric; a classifier needs numbers")
        chosen = [c for c in feature_columns if c not in exclude]
    else:
        skip = {key, label, "coord_ra", "coord_dec", "ra", "dec", *exclude}
        chosen = [c for c in numeric_columns(df) if c not in skip and not c.startswith("_")]
    if label in chosen:
        raise UserbatchError(f"the label column {label!r} cannot also be a feature")
    if not chosen:
        raise UserbatchError("no feature columns: the features table has no numeric columns besides the key and "
                             "label; name them with feature_columns")
    return chosen


def split_expr(key: str, seed: int, validation_fraction: float) -> str:
    """SQL deciding whether a row is held out: a hash of (key, seed) below the fraction (stable per object)."""
    return f"(pmod(xxhash64(`{key}`, {int(seed)}), 1000000) < {int(round(validation_fraction * 1_000_000))})"


def clean_sql(columns: list[str]) -> str:
    """A SELECT turning null, NaN and infinite features into :data:`MISSING` (a Spark ML SQLTransformer)."""
    exprs = ", ".join(
        f"CASE WHEN isnan(CAST(`{c}` AS DOUBLE)) OR `{c}` IS NULL OR abs(CAST(`{c}` AS DOUBLE)) = double('inf') "
        f"THEN {MISSING!r} ELSE CAST(`{c}` AS DOUBLE) END AS `{_clean_name(i)}`" for i, c in enumerate(columns))
    return f"SELECT *, {exprs} FROM __THIS__"


def _clean_name(i: int) -> str:
    return f"_ubfeat_{i}"


def clean_names(columns: list[str]) -> list[str]:
    return [_clean_name(i) for i in range(len(columns))]


def labelled_data(features: str, *, label_column: str, labels: str | None = None, key: str = "objectId",
                  features_version: int | None = None, labels_version: int | None = None,
                  feature_columns: list[str] | None = None, exclude_columns: list[str] | None = None,
                  validation_fraction: float = 0.25, seed: int = 42, spark=None) -> LabelledData:
    """Join features with labels, pick feature columns, mark the validation rows; check it can be learned from."""
    from pyspark.sql import functions as F

    if not 0.0 < validation_fraction < 1.0:
        raise UserbatchError(f"validation_fraction must be between 0 and 1 (exclusive), got {validation_fraction}")
    fdf, fin = _read(features, features_version, spark)
    inputs = [fin]
    if key not in fdf.columns:
        raise ColumnNotFound(f"{features} has no key column {key!r}; set key to its object id column")
    if labels:
        ldf, lin = _read(labels, labels_version, spark)
        inputs.append(lin)
        for col, what in ((key, "key"), (label_column, "label")):
            if col not in ldf.columns:
                raise ColumnNotFound(f"labels table {labels} has no {what} column {col!r}; it has "
                                     f"{', '.join(ldf.columns)}")
        if label_column in fdf.columns:
            fdf = fdf.drop(label_column)
        df = fdf.join(ldf.select(key, label_column).dropDuplicates([key]), on=key, how="inner")
    else:
        if label_column not in fdf.columns:
            raise ColumnNotFound(f"{features} has no label column {label_column!r}; name one of its columns or "
                                 f"give a labels table (labels=..., joined on {key})")
        df = fdf
    cols = choose_features(df, key, label_column, feature_columns, exclude_columns)
    df = df.select(key, *cols, F.col(label_column).cast("string").alias(label_column))
    df = df.withColumn("_validation", F.expr(split_expr(key, seed, validation_fraction)))

    counts_rows = df.groupBy("_validation", label_column).count().collect()
    train = {r[label_column]: r["count"] for r in counts_rows if not r["_validation"] and r[label_column] is not None}
    valid = {r[label_column]: r["count"] for r in counts_rows if r["_validation"] and r[label_column] is not None}
    unlabelled = sum(r["count"] for r in counts_rows if r[label_column] is None)
    classes = sorted(set(train) | set(valid))
    total = sum(train.values()) + sum(valid.values())
    if total == 0:
        raise UserbatchError(f"no labelled rows: {features}" + (f" joined with {labels} on {key}" if labels else "")
                             + f" gives {unlabelled} rows, none with a {label_column}")
    if len(classes) < 2:
        raise UserbatchError(f"only one class ({classes[0]!r}) in {label_column}: a classifier needs at least two")
    empty = [c for c in classes if not train.get(c)]
    if empty:
        raise UserbatchError(f"class(es) {', '.join(map(repr, empty))} have no training rows after the split; "
                             "lower validation_fraction or add examples")
    if not valid:
        raise UserbatchError("the validation split is empty; raise validation_fraction or add rows")
    log.info("training set: %d rows (%s), validation %d, unlabelled %d skipped", sum(train.values()),
             ", ".join(f"{c}={train.get(c, 0)}" for c in classes), sum(valid.values()), unlabelled)
    return LabelledData(df=df.where(F.col(label_column).isNotNull()), key=key, label=label_column,
                        feature_columns=cols, classes=classes, inputs=inputs,
                        counts={"train": train, "validation": valid, "unlabelled": unlabelled})
