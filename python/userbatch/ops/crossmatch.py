"""Cross-match two catalogues: nearest, k nearest or all pairs within a radius, or any
:class:`~userbatch.ops.xmatch_algorithms.CrossmatchAlgorithm` (error-aware, Bayesian, a user's own), optionally
one-to-one, with proper motions applied, on catalog tables (Delta or HATS) or in-memory/Spark data.

How it runs: the two partition trees are aligned into *tasks*, each a sky pixel whose left rows are matched against
every right row that can lie within the radius of it (the right partition's rows plus its margin cache, or, where
the right side is finer or has gaps, its partitions plus the rows in the ring around the pixel). Tasks are
independent, so they run on a thread pool (``engine="local"``, one process, no JVM) or as Spark tasks that read
their own files (``engine="spark"``; the same code on a cluster). Memory per task is bounded by the partition sizes
chosen at ingest (``pixel_threshold``), never by the catalogue size.

What needs the whole result is done after the tasks: a one-to-one assignment (greedy, best pairs first, exactly
what a sequential greedy over all pairs gives) and the unmatched right rows of an outer join. Both identify a right
row by its position (``_healpix_29``, ra, dec): rows at bit-identical positions count as one.
"""

from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..config import settings
from ..engine import get_session
from ..errors import UserbatchError
from ..sky.healpix import SPATIAL_INDEX_COLUMN
from ..sky.motion import Motion, max_displacement_arcsec
from ..tables.catalog import Catalog
from ..tables.provenance import Provenance
from ..tables.write import write_table
from .crossmatch_sides import MemorySide, Side
from .crossmatch_spark import run_spark
from .crossmatch_tasks import (  # noqa: F401 - MarginTooSmall, DIST_COLUMN, RANK_COLUMN re-exported
    DIST_COLUMN,
    ENGINES,
    FAST_ALGORITHMS,
    HOWS,
    MARGIN_FALLBACKS,
    MODES,
    RANK_COLUMN,
    MarginTooSmall,
    Options,
    Plan,
    algorithm_score,
    largest_first,
    make_side,
    max_memory_order,
    output_schema,
    plan_tasks,
    resolve_one_to_one_local,
    right_unmatched_local,
    run_task,
)
from .xmatch_algorithms import (  # noqa: F401 - AlgorithmContractError, Pairs, TaskRows re-exported
    AlgorithmContractError,
    AllWithin,
    CrossmatchAlgorithm,
    KNearest,
    NearestNeighbour,
    Pairs,
    TaskRows,
    load_algorithm,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the result


@dataclass
class Crossmatch:
    """A planned cross-match. Read it with :meth:`to_arrow` / :meth:`to_pandas` / :meth:`to_spark`, or
    :meth:`write` it as a catalog table."""

    left: Side
    right: Side
    options: Options
    plan: Plan
    engine: str
    spark: object = None
    timings_s: dict = field(default_factory=dict)
    _arrow: pa.Table | None = None
    _df: object = None

    def explain(self) -> str:
        return f"{self.plan.describe()}; engine {self.engine}"

    @property
    def columns(self) -> list[str]:
        return self.options.left_out + self.options.right_out + self.options.extra_schema.names

    def to_arrow(self) -> pa.Table:
        if self.engine == "spark":
            try:
                return self.to_spark().toArrow().select(self.columns)
            except Exception as e:  # an algorithm's contract error raised in a Spark task: raise it as itself
                _reraise_contract_error(e)
                raise
        if self._arrow is None:
            self._arrow = self._run_local()
        return self._arrow

    def to_pandas(self):
        return self.to_arrow().to_pandas()

    def to_spark(self, spark=None):
        """The matches as a Spark DataFrame: lazy with ``engine="spark"``, else matched here and handed to Spark.

        Parameters
        ----------
        spark : pyspark.sql.SparkSession, optional
            The session to use when :func:`crossmatch` was given none; by default the running session, or a new
            bare one.

        Returns
        -------
        pyspark.sql.DataFrame
            The pairs: the left columns, the right ones, ``_dist_arcsec`` and ``_rank``.
        """
        if self.engine != "spark":
            spark = spark or self.spark or get_session()
            return spark.createDataFrame(self.to_arrow().to_pandas(), _spark_schema(self.to_arrow().schema))
        if self._df is None:

            self._df = run_spark(self, self.spark or spark)
        return self._df

    def _run_local(self) -> pa.Table:
        t0 = time.perf_counter()
        opts, plan = self.options, self.plan
        workers = max(1, min(len(plan.tasks), os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            # largest tasks first, so the threads finish together; results keep the plan's order
            futures = {t.tid: pool.submit(run_task, t, self.left, self.right, opts, plan)
                       for t in largest_first(plan.tasks, self.left, self.right)}
            parts = [futures[t.tid].result() for t in plan.tasks]
        schema = output_schema(self.left, self.right, opts)
        out = pa.concat_tables(parts) if parts else schema.empty_table()
        self.timings_s["tasks"] = time.perf_counter() - t0
        if opts.one_to_one:
            out = resolve_one_to_one_local(out, opts)
        if opts.how == "outer":
            out = pa.concat_tables([out, right_unmatched_local(out, self.right, opts)])
        self.timings_s["total"] = time.perf_counter() - t0
        return out.select(self.columns)

    def write(self, name: str, mode: str = "create", *, catalog: Catalog | None = None, provenance=None,
              **write_options):
        """Write the matches as a catalog table, HEALPix-partitioned by the left coordinates (rows without a left
        side, from an outer join, by the right ones), with both inputs and their versions in the provenance.

        Parameters
        ----------
        name : str
            The table to write, ``namespace.table``.
        mode : {"create", "append", "overwrite"}
            Make a new table, add rows to an existing one, or replace its rows.
        catalog : Catalog, optional
            The catalog to register the table in; by default ``Catalog()`` for the current user.
        provenance : Provenance, optional
            Provenance to commit with the rows (the inputs and the cross-match parameters are added to it); by
            default a new one for job ``crossmatch``.
        **write_options
            Passed to :func:`~userbatch.tables.write.write_table` (``partition_order``, ``pixel_threshold``,
            ``margin_radius_arcsec``, ``visibility`` ...); ``ra_column``/``dec_column`` are set here.

        Returns
        -------
        WriteResult
            The table written, the version committed, row and partition counts, and the stage timings.
        """
        from pyspark.sql import functions as F


        prov = provenance or Provenance(job="crossmatch")
        for side in (self.left, self.right):
            if side.table:
                prov.add_input(side.table, side.version)
        prov.parameters.setdefault("crossmatch", self.parameters())
        df = self.to_spark()
        ra_out = self.options.left_out[self.options.left_cols.index(self.left.ra)] \
            if self.left.ra in self.options.left_cols else None
        dec_out = self.options.left_out[self.options.left_cols.index(self.left.dec)] \
            if self.left.dec in self.options.left_cols else None
        if ra_out is None or dec_out is None:
            raise UserbatchError(f"to write the matches as a table keep the left coordinates ({self.left.ra}, "
                                 f"{self.left.dec}) among left_columns")
        if self.options.how == "outer":
            rra = self.options.right_out[self.options.right_cols.index(self.right.ra)] \
                if self.right.ra in self.options.right_cols else None
            rdec = self.options.right_out[self.options.right_cols.index(self.right.dec)] \
                if self.right.dec in self.options.right_cols else None
            if rra is None or rdec is None:
                raise UserbatchError("an outer match keeps right-only rows; keep the right coordinates among "
                                     "right_columns to write it as a table")
            df = df.withColumn("match_ra", F.coalesce(F.col(ra_out), F.col(rra))) \
                   .withColumn("match_dec", F.coalesce(F.col(dec_out), F.col(rdec)))
            ra_out, dec_out = "match_ra", "match_dec"
        return write_table(df, name, mode, catalog=catalog, ra_column=ra_out, dec_column=dec_out,
                           provenance=prov, **write_options)

    def parameters(self) -> dict:
        o = self.options
        return {
            "left": self.left.table or self.left.label, "left_version": self.left.version,
            "right": self.right.table or self.right.label, "right_version": self.right.version,
            "radius_arcsec": o.radius_arcsec, "min_radius_arcsec": o.min_radius_arcsec, "k": o.k, "how": o.how,
            "one_to_one": o.one_to_one, "engine": self.engine,
            "algorithm": None if o.algorithm is None else repr(o.algorithm),
            "motion": None if o.motion is None else {k: v for k, v in o.motion.__dict__.items()},
        }


def _reraise_contract_error(e: Exception) -> None:
    """Raise :class:`AlgorithmContractError` with the message a Spark task's one carried, if ``e`` wraps one."""
    text = str(e)
    marker = "AlgorithmContractError: "
    if isinstance(e, AlgorithmContractError) or marker not in text:
        return
    message = text[text.rindex(marker) + len(marker):].strip().splitlines()[0]
    raise AlgorithmContractError(message) from e


def _spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _output_names(left_cols, right_cols, suffixes, extra_names) -> tuple[list[str], list[str]]:
    reserved = set(extra_names)
    lset, rset = set(left_cols), set(right_cols)
    lout = [c + suffixes[0] if c in rset else c for c in left_cols]
    rout = [c + suffixes[1] if c in lset else c for c in right_cols]
    names = lout + rout
    if len(set(names)) != len(names) or reserved & set(names):
        raise UserbatchError(f"output column names collide ({', '.join(names)}); choose other suffixes or columns")
    return lout, rout


def _default_columns(side: Side) -> list[str]:
    return [c for c in side.schema.names if c not in (SPATIAL_INDEX_COLUMN, "Norder", "Dir", "Npix")]


def crossmatch(
    left,
    right,
    radius_arcsec: float | None = None,
    *,
    algorithm: CrossmatchAlgorithm | type | str | None = None,
    algorithm_params: dict | None = None,
    mode: str = "nearest",
    k: int | None = None,
    how: str = "inner",
    one_to_one: bool = False,
    min_radius_arcsec: float = 0.0,
    motion: Motion | None = None,
    left_columns: list[str] | None = None,
    right_columns: list[str] | None = None,
    suffixes: tuple[str, str] = ("", "_right"),
    left_ra: str | None = None,
    left_dec: str | None = None,
    right_ra: str | None = None,
    right_dec: str | None = None,
    left_version: int | None = None,
    right_version: int | None = None,
    left_timestamp=None,
    right_timestamp=None,
    margin_fallback: str = "error",
    engine: str = "auto",
    spark=None,
    catalog: Catalog | None = None,
) -> Crossmatch:
    """Match ``left`` against ``right`` within ``radius_arcsec``, or with an ``algorithm``.

    ``left``/``right``: catalog table names (Delta or HATS, at a version or timestamp), or pandas / Arrow / Spark
    DataFrames (then name their coordinate columns with ``left_ra`` etc.; degrees).
    ``mode``: ``nearest`` (k = 1), ``k_nearest`` (``k`` nearest) or ``all`` (every pair within the radius).
    ``how``: ``inner``; ``left`` keeps unmatched left rows; ``outer`` keeps unmatched rows of both sides
    (null-filled). ``one_to_one``: every row of either side in at most one pair, best pairs first.
    ``min_radius_arcsec`` makes the search an annulus. ``motion``: apply proper motions of the right side to the
    left side's epoch first (see :class:`~userbatch.sky.motion.Motion`).
    Result columns: the left columns, the right ones (a name also on the left gets ``suffixes[1]``),
    ``_dist_arcsec`` and ``_rank`` (1 = nearest; null for unmatched rows) — or, with ``algorithm``, the algorithm's
    ``extra_columns`` (null for unmatched rows).
    Stored margin caches narrower than the radius (plus the largest proper-motion displacement) raise
    :class:`MarginTooSmall` unless ``margin_fallback="read"``, which reads neighbouring partitions instead.

    Parameters
    ----------
    left : str, TableEntry, pandas.DataFrame, pyarrow.Table or pyspark.sql.DataFrame
        The catalogue each match starts from: a catalog table name or entry, or rows in memory / in Spark.
    right : str, TableEntry, pandas.DataFrame, pyarrow.Table or pyspark.sql.DataFrame
        The catalogue searched for neighbours of each left row, in the same forms as ``left``.
    radius_arcsec : float, optional
        Match radius in arcseconds (positive; default 1). Not with ``algorithm``, which declares its own.
    algorithm : CrossmatchAlgorithm, type, or str, optional
        What each task keeps, instead of ``mode``/``k``/``radius_arcsec``/``min_radius_arcsec``: an instance, a
        :class:`~userbatch.ops.xmatch_algorithms.CrossmatchAlgorithm` subclass, a built-in name (``"nearest"``,
        ``"k_nearest"``, ``"all"``, ``"annulus"``, ``"error_aware"``, ``"bayesian"``) or
        ``"package.module:ClassName"``; checked (:func:`~userbatch.ops.xmatch_algorithms.load_algorithm`) before
        anything is read. The search radius is its ``radius_arcsec``; one-to-one ranks by its ``score_column``.
    algorithm_params : dict, optional
        Parameters for the class when ``algorithm`` is a class or a name.
    mode : {"nearest", "k_nearest", "all"}
        Which pairs within the radius are kept for each left row: the nearest, the ``k`` nearest, or all.
    k : int, optional
        Neighbours per left row for ``mode="k_nearest"`` (required there); only None or 1 with ``"nearest"``,
        only None with ``"all"``.
    how : {"inner", "left", "outer"}
        Whether unmatched left rows (``"left"``), or unmatched rows of both sides (``"outer"``), are kept,
        null-filled on the missing side.
    one_to_one : bool
        Keep every row of either side in at most one pair, best pairs first (every pair within the radius is a
        candidate; ``k`` is then ignored).
    min_radius_arcsec : float
        Inner radius in arcseconds: pairs closer than it are not matches (an annulus); below ``radius_arcsec``.
    motion : Motion, optional
        Proper motions of the right side, applied to bring its rows to the left side's epoch before matching.
    left_columns : list of str, optional
        Left columns to keep in the result; by default all but ``_healpix_29``, ``Norder``, ``Dir`` and ``Npix``.
    right_columns : list of str, optional
        Right columns to keep in the result; by default all but ``_healpix_29``, ``Norder``, ``Dir`` and ``Npix``.
    suffixes : tuple of (str, str)
        Appended to a left / right output column whose name is also among the other side's columns.
    left_ra : str, optional
        Left RA column (degrees): required for in-memory / Spark input; for a table, overrides its declared one.
    left_dec : str, optional
        Left Dec column (degrees), as ``left_ra``.
    right_ra : str, optional
        Right RA column (degrees), as ``left_ra``.
    right_dec : str, optional
        Right Dec column (degrees), as ``left_ra``.
    left_version : int, optional
        Delta version of a left catalog table; by default the latest (in a facility run, the pinned one).
    right_version : int, optional
        Delta version of a right catalog table, as ``left_version``.
    left_timestamp : datetime or str, optional
        Read a left Delta table as of this time (its latest commit at or before it) instead of a version.
    right_timestamp : datetime or str, optional
        Read a right Delta table as of this time, as ``left_timestamp``.
    margin_fallback : {"error", "read"}
        What to do when a stored margin cache is narrower than the search: raise :class:`MarginTooSmall`, or read
        the neighbouring partitions instead.
    engine : {"auto", "local", "spark"}
        ``"local"`` runs the tasks on a thread pool in this process, ``"spark"`` as Spark tasks; ``"auto"`` is
        local when both sides together hold at most ``settings().tuning.xmatch_local_max_rows`` rows.
    spark : pyspark.sql.SparkSession, optional
        The session for the Spark engine and for :meth:`Crossmatch.to_spark`; by default the running session.
    catalog : Catalog, optional
        The catalog table names are looked up in; by default ``Catalog()`` for the current user.

    Returns
    -------
    Crossmatch
        The planned cross-match (tasks planned, nothing matched yet); read it with :meth:`Crossmatch.to_pandas`,
        :meth:`Crossmatch.to_arrow` or :meth:`Crossmatch.to_spark`, or :meth:`Crossmatch.write` it.
    """
    alg = _algorithm(algorithm, algorithm_params, radius_arcsec, mode, k, min_radius_arcsec)
    if how not in HOWS:
        raise UserbatchError(f"how must be one of {', '.join(HOWS)}; got {how!r}")
    if engine not in ENGINES:
        raise UserbatchError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if margin_fallback not in MARGIN_FALLBACKS:
        raise UserbatchError(f"margin_fallback must be one of {', '.join(MARGIN_FALLBACKS)}")
    fast = type(alg) in FAST_ALGORITHMS
    if one_to_one:
        algorithm_score(alg)  # refuses an algorithm without a score
        if fast and alg.k > 1:
            log.info("one_to_one: every pair within the radius is a candidate; k is ignored")
    if len(suffixes) != 2:
        raise UserbatchError("suffixes must be two strings (left, right)")
    radius = float(alg.radius_arcsec)
    min_radius = float(alg.min_radius_arcsec) if fast else 0.0
    k_eff = int(alg.k) if fast else 0

    search = radius
    max_order = max_memory_order(search)
    common = dict(catalog=catalog, spark_ok=engine != "local", max_order=max_order)
    lside = make_side(left, left_ra, left_dec, "left", version=left_version, timestamp=left_timestamp, **common)
    rside = make_side(right, right_ra, right_dec, "right", version=right_version, timestamp=right_timestamp, **common)

    lcols = list(left_columns) if left_columns is not None else _default_columns(lside)
    rcols = list(right_columns) if right_columns is not None else _default_columns(rside)
    lside.check_columns(lcols + [lside.ra, lside.dec] + list(alg.required_left_columns))
    rside.check_columns(rcols + [rside.ra, rside.dec] + list(alg.required_right_columns))
    displacement = 0.0
    if motion is not None:
        if not isinstance(motion, Motion):
            raise UserbatchError("motion must be a userbatch.sky.motion.Motion")
        rside.check_columns(motion.right_columns())
        lside.check_columns(motion.left_columns())
        displacement = _max_displacement(lside, rside, motion)
        search += displacement
        if isinstance(lside, MemorySide) or isinstance(rside, MemorySide):
            max_memory_order(search)
    lout, rout = _output_names(lcols, rcols, suffixes, alg.extra_columns.names)
    opts = Options(radius, min_radius, k_eff if not one_to_one else 0, how, one_to_one,
                   motion, lcols, rcols, lout, rout, keys=one_to_one or how == "outer", algorithm=alg)
    plan = plan_tasks(lside, rside, search, how, margin_fallback)
    plan.displacement_arcsec = displacement
    if engine == "auto":
        n = sum(_rows(s) for s in (lside, rside))
        engine = "local" if n <= settings().tuning.xmatch_local_max_rows else "spark"
    log.info("cross-match plan: %s; engine %s", plan.describe(), engine)
    return Crossmatch(lside, rside, opts, plan, engine, spark)


def _algorithm(algorithm, params, radius_arcsec, mode, k, min_radius_arcsec) -> CrossmatchAlgorithm:
    """The checked algorithm of a call: the one given, or the built-in its ``mode``/``k``/radii describe."""
    if algorithm is not None:
        given = [n for n, v, default in (("radius_arcsec", radius_arcsec, None), ("mode", mode, "nearest"),
                                         ("k", k, None), ("min_radius_arcsec", min_radius_arcsec, 0.0))
                 if v != default]
        if given:
            raise UserbatchError(f"with algorithm=..., {', '.join(given)} cannot be given too: the algorithm "
                                 "declares its radius and which pairs it keeps (set them in algorithm_params)")
        return load_algorithm(algorithm, **(params or {}))
    if params:
        raise UserbatchError("algorithm_params needs an algorithm")
    if mode not in MODES:
        raise UserbatchError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    radius_arcsec = 1.0 if radius_arcsec is None else radius_arcsec
    for what, value in (("radius_arcsec", radius_arcsec), ("min_radius_arcsec", min_radius_arcsec)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise UserbatchError(f"{what} must be a finite, non-negative number of arcsec; got {value!r}")
    if radius_arcsec <= 0:
        raise UserbatchError(f"radius_arcsec must be positive; got {radius_arcsec!r}")
    if min_radius_arcsec >= radius_arcsec:
        raise UserbatchError(f"min_radius_arcsec ({min_radius_arcsec}) must be smaller than "
                             f"radius_arcsec ({radius_arcsec})")
    if mode == "nearest":
        if k not in (None, 1):
            raise UserbatchError("mode='nearest' means k=1; use mode='k_nearest' for more neighbours")
        alg = NearestNeighbour(radius_arcsec, min_radius_arcsec)
    elif mode == "k_nearest":
        if k is None or isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UserbatchError(f"mode='k_nearest' needs a positive integer k; got {k!r}")
        alg = KNearest(k, radius_arcsec, min_radius_arcsec)
    else:
        if k is not None:
            raise UserbatchError("mode='all' keeps every pair; drop k")
        alg = AllWithin(radius_arcsec, min_radius_arcsec)
    return load_algorithm(alg)


def _rows(side: Side) -> int:
    if isinstance(side, MemorySide):
        return side.rows.num_rows
    return side.num_rows


def _max_displacement(left: Side, right: Side, motion: Motion) -> float:
    """Largest distance any right row can move between its catalogue epoch and a left row's epoch (arcsec)."""
    pm = 0.0
    for c in (motion.pmra, motion.pmdec):
        r = right.column_range(c)
        if r is not None:
            pm = max(pm, abs(r[0]), abs(r[1]))
    pm *= math.sqrt(2.0)  # both components at their extremes
    if isinstance(motion.ref_epoch, str):
        refs = right.column_range(motion.ref_epoch) or (0.0, 0.0)
    else:
        refs = (float(motion.ref_epoch),) * 2
    if motion.epoch_is_column:
        er = left.column_range(motion.epoch)
        if er is None:
            return 0.0
        epochs = tuple(float(x) for x in motion.to_jyear(np.array(er)))
    else:
        epochs = (float(motion.to_jyear(motion.epoch)),) * 2
    dt = max(abs(e - r) for e in epochs for r in refs)
    return max_displacement_arcsec(pm, dt) if pm > 0 else 0.0
