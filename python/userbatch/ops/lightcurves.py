"""Per-object light-curve features over ForcedSource-like tables, without a shuffle on director tables.

``features("dp1.forced_source")`` computes, per object and band, the DP1 DiaObject-style statistics of
:mod:`~userbatch.ops.lightcurve_kernels` plus any feature of the ``light-curve`` package the user names, and
returns one row per object with ``{band}_{feature}`` columns (``layout="wide"``) or one row per (object, band)
(``layout="long"``).

Where the rows come from decides how they are grouped:

* a **director table** (ingested with its parent, :mod:`userbatch.tables.director`): every row of an object is in
  its parent's partition, so each partition is one independent unit — read with pyarrow, sorted, reduced — on
  threads here or Spark tasks on a cluster (:mod:`.partition_tasks`); nothing is shuffled;
* any other table or a Spark DataFrame: Spark hash-partitions the rows by object first (one shuffle), then the
  same kernel runs per Spark partition; pandas / Arrow input is computed in this process.

Rows whose flux or error is not finite, or whose error is not positive, are left out of the statistics (the
``psfFluxNdata`` count says how many were used); a band with no usable row gives nulls and a count of 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..errors import ColumnNotFound, UserbatchError
from ..tables.catalog import Catalog
from ..tables.read import resolve
from .sides import FileSide
from .lightcurve_kernels import FEATURES, N_FEATURES, segment_features
from .per_object import PerObject

log = logging.getLogger(__name__)

LSST_BANDS = ("u", "g", "r", "i", "z", "y")
LAYOUTS = ("wide", "long")
ENGINES = ("auto", "local", "spark")
DEFAULT_TIME_COLUMN = "expMidptMJD"


# ---------------------------------------------------------------- light-curve package extractors


def make_extractor(features):
    """A ``light_curve.Extractor`` from feature objects, class names (``"StetsonK"``) or ``{name: kwargs}``."""
    import light_curve as lc

    if not features:
        return None
    objs = []
    for spec in features:
        if isinstance(spec, str):
            name, kwargs = spec, {}
        elif isinstance(spec, dict) and len(spec) == 1:
            name, kwargs = next(iter(spec.items()))
            kwargs = dict(kwargs or {})
        else:
            if hasattr(spec, "names"):  # already a light_curve feature
                objs.append(spec)
                continue
            raise UserbatchError(f"light-curve feature {spec!r}: give a class name, {{name: {{args}}}} or an object")
        cls = getattr(lc, name, None)
        if cls is None or not isinstance(cls, type) or name.startswith("_") or name in ("Extractor",):
            raise UserbatchError(f"light-curve has no feature {name!r}; see light_curve's documentation "
                                 "(e.g. Amplitude, StetsonK, Eta, BeyondNStd, ReducedChi2)")
        try:
            objs.append(cls(**kwargs))
        except (TypeError, ValueError) as e:
            raise UserbatchError(f"light-curve feature {name}({kwargs}): {e}") from None
    return lc.Extractor(*objs)


def extractor_names(extractor) -> list[str]:
    return [f"lc_{n}" for n in extractor.names] if extractor is not None else []


# ---------------------------------------------------------------- the per-unit computation


@dataclass
class Columns:
    """Where a light curve's values are, and which bands are used: shared by every per-object computation."""
    object_column: str = "objectId"
    band_column: str = "band"
    time_column: str = DEFAULT_TIME_COLUMN
    flux_column: str = "psfFlux"
    err_column: str = "psfFluxErr"
    bands: tuple[str, ...] = LSST_BANDS

    @property
    def columns(self) -> list[str]:
        return [self.object_column, self.band_column, self.time_column, self.flux_column, self.err_column]


@dataclass
class Spec(Columns):
    """What to compute, and from which columns; travels to Spark executors."""
    layout: str = "wide"
    lc_features: list = field(default_factory=list)
    extra_names: list[str] = field(default_factory=list)

    def feature_names(self) -> list[str]:
        return list(FEATURES) + self.extra_names

    def schema(self, object_type: pa.DataType = pa.int64()) -> pa.Schema:
        fields = [pa.field(self.object_column, object_type)]
        if self.layout == "long":
            fields.append(pa.field(self.band_column, pa.string()))
            fields += [pa.field(n, pa.int64() if n == "psfFluxNdata" else pa.float64())
                       for n in self.feature_names()]
        else:
            for b in self.bands:
                fields += [pa.field(f"{b}_{n}", pa.int64() if n == "psfFluxNdata" else pa.float64())
                           for n in self.feature_names()]
        return pa.schema(fields)


@dataclass
class Series:
    """Usable rows sorted by (object, band, time); ``starts`` bound each (object, band) light curve."""
    objects: np.ndarray  # every object of the input, sorted, usable rows or not
    obj: np.ndarray  # the input's object column (all rows)
    code_all: np.ndarray  # the input's band codes (-1: a band not asked for)
    obj_i: np.ndarray  # per usable row: index into objects
    code: np.ndarray
    t: np.ndarray
    y: np.ndarray
    dy: np.ndarray
    starts: np.ndarray


def series(table: pa.Table, spec) -> Series:
    """Light curves of ``table``: rows of the asked-for bands with finite time, flux and a positive error."""
    def col(name, dtype=np.float64):
        v = table.column(name).to_numpy(zero_copy_only=False)
        return v.astype(dtype) if dtype is not None else v

    obj = col(spec.object_column, None)
    code_all = _codes(col(spec.band_column, str), spec.bands)
    t, y, dy = col(spec.time_column), col(spec.flux_column), col(spec.err_column)
    objects = np.unique(obj)
    ok = (code_all >= 0) & np.isfinite(y) & np.isfinite(dy) & (dy > 0) & np.isfinite(t)
    obj_i = np.searchsorted(objects, obj[ok])
    code, t, y, dy = code_all[ok], t[ok], y[ok], dy[ok]
    order = np.lexsort((t, code, obj_i))
    obj_i, code, t, y, dy = obj_i[order], code[order], t[order], y[order], dy[order]
    change = np.ones(len(obj_i), dtype=bool)
    change[1:] = (obj_i[1:] != obj_i[:-1]) | (code[1:] != code[:-1])
    starts = np.append(np.flatnonzero(change), len(obj_i)).astype(np.int64)
    return Series(objects, obj, code_all, obj_i, code, t, y, dy, starts)


def compute(table: pa.Table, spec: Spec) -> pa.Table:
    """Features of every object in ``table`` (all of each object's rows must be in it)."""
    obj_type = table.schema.field(spec.object_column).type
    schema = spec.schema(obj_type)
    if table.num_rows == 0:
        return schema.empty_table()
    ser = series(table, spec)
    objects, obj_i, code, t, f, e, starts = ser.objects, ser.obj_i, ser.code, ser.t, ser.y, ser.dy, ser.starts
    nseg = len(starts) - 1
    vals = np.empty((nseg, N_FEATURES), dtype=np.float64)
    segment_features(starts, t, f, e, vals)
    extractor = make_extractor(spec.lc_features)
    if extractor is not None and nseg:
        # copies, not views: light-curve handles a view of a large array many times slower (measured ~100x)
        lcs = [(t[a:b].copy(), f[a:b].copy(), e[a:b].copy()) for a, b in zip(starts[:-1], starts[1:])]
        extra = np.asarray(extractor.many(lcs, fill_value=np.nan, sorted=True, check=False, n_jobs=1))
        vals = np.hstack([vals, extra.reshape(nseg, -1)])
    seg_obj, seg_band = obj_i[starts[:-1]], code[starts[:-1]]
    names = spec.feature_names()
    nd = names.index("psfFluxNdata")

    def column(values, name):
        if name == "psfFluxNdata":
            return pa.array(values.astype(np.int64))
        return pa.array(values, pa.float64(), from_pandas=True)  # NaN -> null

    if spec.layout == "long":
        # one row per (object, band) that has any row in the input, usable or not
        inband = ser.code_all >= 0
        present = np.unique(np.column_stack([np.searchsorted(objects, ser.obj[inband]), ser.code_all[inband]]),
                            axis=0).reshape(-1, 2)
        full = np.full((len(present), len(names)), np.nan)
        full[:, nd] = 0
        key = present[:, 0] * len(spec.bands) + present[:, 1]
        pos = np.searchsorted(key, seg_obj * len(spec.bands) + seg_band)
        full[pos] = vals
        cols = [pa.array(objects[present[:, 0]]).cast(obj_type),
                pa.array(np.asarray(spec.bands, dtype=object)[present[:, 1]], pa.string())]
        cols += [column(full[:, j], n) for j, n in enumerate(names)]
        return pa.Table.from_arrays(cols, schema=schema)
    wide = np.full((len(objects), len(spec.bands), len(names)), np.nan)
    wide[:, :, nd] = 0
    wide[seg_obj, seg_band] = vals
    cols = [pa.array(objects).cast(obj_type)]
    for bi in range(len(spec.bands)):
        cols += [column(wide[:, bi, j], n) for j, n in enumerate(names)]
    return pa.Table.from_arrays(cols, schema=schema)


def _codes(bandv: np.ndarray, bands) -> np.ndarray:
    code = np.full(len(bandv), -1, dtype=np.int64)
    for i, b in enumerate(bands):
        code[bandv == b] = i
    return code


# ---------------------------------------------------------------- the API


class Features(PerObject):
    """Planned light-curve features; read with :meth:`to_arrow`/:meth:`to_pandas`/:meth:`to_spark` or
    :meth:`write` them as a table."""

    kernel = staticmethod(compute)
    job = "forced_source_stats"
    param_key = "features"

    def parameters(self) -> dict:
        s = self.spec
        return {"source": self.table or self.source[0], "version": self.version, "bands": list(s.bands),
                "layout": s.layout, "columns": s.columns, "lc_features": [str(x) for x in s.lc_features],
                "engine": self.engine}


def features(
    source,
    *,
    bands=LSST_BANDS,
    layout: str = "wide",
    lc_features=None,
    object_column: str = "objectId",
    band_column: str = "band",
    time_column: str | None = None,
    flux_column: str = "psfFlux",
    err_column: str = "psfFluxErr",
    version: int | None = None,
    timestamp=None,
    engine: str = "auto",
    spark=None,
    catalog: Catalog | None = None,
) -> Features:
    """Per-object light-curve features of ``source`` (a table name, or a pandas / Arrow / Spark DataFrame).

    ``bands``: which bands get columns (LSST's ugrizy by default; rows of other bands are ignored).
    ``lc_features``: extra features from the ``light-curve`` package, by class name (``"StetsonK"``), as
    ``{"BeyondNStd": {"nstd": 2}}`` or as objects; their columns are ``lc_<name>``. ``time_column``: the table's
    declared time column (a director table with visit times records it), else ``expMidptMJD``.

    Parameters
    ----------
    source : str, pandas.DataFrame, pyarrow.Table or pyspark.sql.DataFrame
        A catalog table name (``"dp1.forced_source"``), or the rows themselves.
    bands : str or sequence of str
        Distinct LSST bands to compute, e.g. ``("g", "r")`` or ``"gr"``; by default ``ugrizy``.
    layout : {"wide", "long"}
        One row per object with ``{band}_{feature}`` columns, or one row per (object, band).
    lc_features : list, optional
        Extra ``light-curve`` features: class names, ``{name: kwargs}`` dicts or feature objects.
    object_column : str
        Column holding the object id the rows are grouped by.
    band_column : str
        Column holding each row's band.
    time_column : str, optional
        Column holding each row's time in days (MJD); by default the table's declared one, else ``expMidptMJD``.
    flux_column : str
        Column holding the flux.
    err_column : str
        Column holding the flux error.
    version : int, optional
        Delta version of a catalog table; by default the latest. Ignored for in-memory or Spark input.
    timestamp : datetime or str, optional
        Read a catalog Delta table as of this time (its latest commit at or before it) instead of a version.
    engine : {"auto", "local", "spark"}
        For a director table, threads in this process (``"local"``, what ``"auto"`` picks) or Spark tasks; any
        other table runs on Spark (``"local"`` is refused), Spark input on Spark and pandas / Arrow input here.
    spark : pyspark.sql.SparkSession, optional
        The session for Spark work; by default the running session, or a new bare one.
    catalog : Catalog, optional
        The catalog ``source`` is looked up in; by default ``Catalog()`` for the current user.

    Returns
    -------
    Features
        The planned computation; read it with ``to_arrow``, ``to_pandas`` or ``to_spark``, or ``write`` it.
    """
    if layout not in LAYOUTS:
        raise UserbatchError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    if engine not in ENGINES:
        raise UserbatchError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if isinstance(bands, str):
        bands = tuple(bands) if all(b in LSST_BANDS for b in bands) else (bands,)
    bands = tuple(bands)
    unknown = [b for b in bands if b not in LSST_BANDS]
    if unknown or not bands or len(set(bands)) != len(bands):
        raise UserbatchError(f"bands must be distinct LSST bands ({', '.join(LSST_BANDS)}); got {list(bands)}")
    extractor = make_extractor(list(lc_features or []))  # checks the names now, not on an executor
    spec = Spec(object_column, band_column, time_column or DEFAULT_TIME_COLUMN, flux_column, err_column, bands,
                layout, list(lc_features or []), extractor_names(extractor))

    if isinstance(source, str):

        entry = (catalog or Catalog()).get(source)
        spec.time_column = time_column or entry.properties.get("time_column") or DEFAULT_TIME_COLUMN
        snap = resolve(entry, version=version, timestamp=timestamp)
        _check(snap.schema.names, spec, f"table {source}")
        ver = snap.version if snap.version >= 0 else None
        if entry.properties.get("director") and entry.spatial:
            side = FileSide.from_entry(entry, version=ver if entry.format == "delta" else None)
            eng = "local" if engine == "auto" else engine
            return Features(spec, ("director", side), eng, spark, source, ver)
        if engine == "local":
            raise UserbatchError(f"{source} is not a director table: its objects' rows may be in several "
                                 "partitions, so it is grouped by Spark (engine 'auto' or 'spark')")
        return Features(spec, ("table", entry, ver), "spark", spark, source, ver)
    if hasattr(source, "sparkSession") and hasattr(source, "schema"):
        _check(source.columns, spec, "the DataFrame")
        return Features(spec, ("spark", source), "spark", spark)
    if hasattr(source, "to_pandas") and not isinstance(source, pa.Table):
        raise UserbatchError("pass a pandas DataFrame, an Arrow table, a Spark DataFrame or a table name")
    table = source if isinstance(source, pa.Table) else pa.Table.from_pandas(source, preserve_index=False)
    _check(table.column_names, spec, "the input")
    return Features(spec, ("arrow", table), "local", spark)


def _check(columns, spec: Spec, what: str) -> None:
    missing = [c for c in spec.columns if c not in columns]
    if missing:
        raise ColumnNotFound(f"{what} has no column(s) {', '.join(missing)}; it has {', '.join(columns)}"
                             + ("; times come from the Visit table: ingest with the visit table, or name "
                                "time_column" if spec.time_column in missing else ""))
