"""The plan of a cross-match, read before anything runs: which sky pixels of the two sides meet (independent
tasks), what each task keeps (:class:`Options`, carrying the algorithm) and what columns the result has.

Why a module of its own: the plan is a pure function of the two partition lists, the search radius and the join, so
it is testable without Spark or a single row read (``Plan.describe()``), and both engines
(:mod:`~userbatch.ops.crossmatch.local`, :mod:`~userbatch.ops.crossmatch.spark`) and one task's run
(:mod:`~userbatch.ops.crossmatch.tasks`) read it without importing each other.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ...errors import ColumnNotFound, UserbatchError
from ...sky.margins import MARGIN_SAFETY
from ...sky.motion import Motion
from ...tables.catalog import Catalog, TableEntry
from ..sides import FileSide, MemorySide, Side, in_ranges, overlaps, ring_ranges
from .algorithms import (
    DIST_COLUMN,
    RANK_COLUMN,
    AllWithin,
    Annulus,
    CrossmatchAlgorithm,
    KNearest,
    NearestNeighbour,
)

log = logging.getLogger(__name__)

MODES = ("nearest", "k_nearest", "all")
HOWS = ("inner", "left", "outer")
ENGINES = ("auto", "local", "spark")
MARGIN_FALLBACKS = ("error", "read")
#: The built-ins whose exact type takes the numba kernel path (a subclass may override ``match``, so it does not).
FAST_ALGORITHMS = (NearestNeighbour, KNearest, AllWithin, Annulus)
#: Internal columns carried through the tasks for the global steps, dropped from the result.
LKEY = "__ub_lkey"
RKEYS = ("__ub_ridx", "__ub_rra", "__ub_rdec")


class MarginTooSmall(UserbatchError):
    """A stored margin cache is narrower than the match needs."""


@dataclass
class Task:
    """One independent unit: left rows of some partitions (optionally restricted to index ranges) against the right
    rows that can lie within the search radius of them."""

    tid: int
    pixel: tuple[int, int]
    left_parts: list[int]
    right_parts: list[int]
    left_keep: np.ndarray | None = None  # keep left rows inside these ranges
    left_drop: np.ndarray | None = None  # drop left rows inside these ranges
    right_margin: int | None = None  # read this right partition's margin
    right_ranges: np.ndarray | None = None  # read right rows in these ranges (outside right_parts)


@dataclass
class Plan:
    tasks: list[Task]
    search_radius_arcsec: float
    displacement_arcsec: float = 0.0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        kinds = {"margin": sum(t.right_margin is not None for t in self.tasks),
                 "ring read": sum(t.right_ranges is not None and len(t.right_ranges) > 0 for t in self.tasks)}
        return (f"{len(self.tasks)} tasks ({kinds['margin']} with a stored/computed margin, {kinds['ring read']} "
                f"reading a ring of neighbouring rows); search radius {self.search_radius_arcsec:.4g} arcsec"
                + (f" (incl. {self.displacement_arcsec:.4g} arcsec of proper motion)"
                   if self.displacement_arcsec else "")
                + "".join(f"; {n}" for n in self.notes))


@dataclass
class Options:
    radius_arcsec: float
    min_radius_arcsec: float
    k: int  # 0 = all pairs
    how: str
    one_to_one: bool
    motion: Motion | None
    left_cols: list[str]  # requested, in output order
    right_cols: list[str]
    left_out: list[str]  # their output names
    right_out: list[str]
    keys: bool  # carry identity columns for the global steps
    algorithm: CrossmatchAlgorithm | None = None  # what a task keeps; None: a built-in from the fields above

    @property
    def fast(self) -> bool:
        """Whether tasks take the numba kernel path (a built-in algorithm, or none)."""
        return self.algorithm is None or type(self.algorithm) in FAST_ALGORITHMS

    @property
    def extra_schema(self) -> pa.Schema:
        """The columns the algorithm adds to each pair."""
        if self.algorithm is None:
            return pa.schema([pa.field(DIST_COLUMN, pa.float64()), pa.field(RANK_COLUMN, pa.int32())])
        return self.algorithm.extra_columns

    @property
    def score(self) -> tuple[str, bool]:
        """The column one-to-one ranks by and whether higher is better."""
        return (DIST_COLUMN, False) if self.algorithm is None else algorithm_score(self.algorithm)


def algorithm_score(alg: CrossmatchAlgorithm) -> tuple[str, bool]:
    """The column one-to-one ranks an algorithm's pairs by, and whether higher is better; refused without one.

    Parameters
    ----------
    alg : CrossmatchAlgorithm
        The algorithm.
    """
    if alg.score_column is None:
        raise UserbatchError(f"{type(alg).__name__} declares no score_column, so one_to_one has nothing to rank "
                             "pairs by; set score_column (and score_higher_is_better) or drop one_to_one")
    return alg.score_column, bool(alg.score_higher_is_better)


# ---------------------------------------------------------------- inputs


def make_side(obj, ra, dec, what, *, catalog, version, timestamp, max_order: int) -> Side:
    """One input of a cross-match as a :class:`~userbatch.ops.sides.Side`, its coordinate columns checked.

    Parameters
    ----------
    obj : str, TableEntry, Side, pandas.DataFrame, pyarrow.Table or pyspark.sql.DataFrame
        A catalog table (name or entry), a side already made, or rows in memory / in Spark (collected here).
    ra, dec : str or None
        Its coordinate columns (degrees): required for rows in memory; for a table, override its declared ones.
    what : {"left", "right"}
        Which input, for messages.
    catalog : Catalog or None
        Where table names are looked up; by default ``Catalog()``.
    version, timestamp : optional
        The Delta version, or time, of a catalog table; refused for other inputs.
    max_order : int
        Finest partition order for rows in memory (:func:`max_memory_order`).
    """
    if isinstance(obj, Side):
        return obj
    if isinstance(obj, (str, TableEntry)):
        entry = obj if isinstance(obj, TableEntry) else (catalog or Catalog()).get(obj)
        side = FileSide.from_entry(entry, version=version, timestamp=timestamp)
        if ra or dec:
            side.ra, side.dec = ra or side.ra, dec or side.dec
            side.check_columns([side.ra, side.dec])
        return side
    if version is not None or timestamp is not None:
        raise UserbatchError(f"{what}: version/timestamp apply to catalog tables only")
    if ra is None or dec is None:
        raise UserbatchError(f"{what}: name its coordinate columns ({what}_ra=..., {what}_dec=...)")
    label = f"the {what} input"
    if isinstance(obj, pa.Table):
        return MemorySide.from_arrow(obj, ra, dec, label, max_order)
    try:
        import pandas as pd

        if isinstance(obj, pd.DataFrame):
            return MemorySide.from_arrow(pa.Table.from_pandas(obj, preserve_index=False), ra, dec, label, max_order)
    except ImportError:  # pragma: no cover
        pass
    if hasattr(obj, "sparkSession") and hasattr(obj, "toArrow"):
        missing = [c for c in (ra, dec) if c not in obj.columns]
        if missing:
            raise ColumnNotFound(f"{label} has no column(s) {', '.join(missing)}; it has {', '.join(obj.columns)}")
        return MemorySide.from_arrow(obj.toArrow(), ra, dec, label, max_order)
    raise UserbatchError(f"{what}: expected a table name, a pandas/Arrow/Spark DataFrame; got {type(obj).__name__}")


def max_memory_order(search_radius_arcsec: float) -> int:
    """Finest partition order an in-memory input may use so that a ring of margin pixels still covers the radius.

    Parameters
    ----------
    search_radius_arcsec : float
        The search radius, proper motion included.
    """
    width = math.radians(MARGIN_SAFETY * search_radius_arcsec / 3600.0)
    m = int(math.floor(math.log2(math.sqrt(math.pi / 3) / (1.6 * width)))) if width > 0 else 29
    if m - 1 < 0:
        raise UserbatchError(f"a {search_radius_arcsec:.4g} arcsec search radius is too large to partition; "
                             "cross-matches are for radii up to a few degrees")
    return min(m - 1, 9)


# ---------------------------------------------------------------- planning


def plan_tasks(left: Side, right: Side, search_radius_arcsec: float, how: str, margin_fallback: str) -> Plan:
    """Align the two partition trees into tasks; check every stored margin used is wide enough.

    Parameters
    ----------
    left, right : Side
        The two inputs.
    search_radius_arcsec : float
        How far from a left row a right row can match (the radius plus the largest proper-motion displacement).
    how : {"inner", "left", "outer"}
        The join: with ``left``/``outer`` a left pixel with no right rows near it is still a task.
    margin_fallback : {"error", "read"}
        With ``error``, a stored margin narrower than the search raises :class:`MarginTooSmall`; with ``read``,
        the task reads the ring of neighbouring rows instead.

    Returns
    -------
    Plan
        The tasks, in the order their results are concatenated.
    """
    ls, le, rs, re = left.starts, left.ends, right.starts, right.ends
    tasks: list[Task] = []
    notes: list[str] = []
    keep_unmatched = how in ("left", "outer")

    def margin_or_ring(task: Task, j: int) -> None:
        if right.margin_radius_arcsec >= search_radius_arcsec:
            task.right_margin = j
            return
        stored = right.margin_files is not None if isinstance(right, FileSide) else False
        if stored and margin_fallback == "error":
            raise MarginTooSmall(
                f"{right.label} has a {right.margin_radius_arcsec:g} arcsec margin cache but this match needs "
                f"{search_radius_arcsec:.4g} arcsec; re-ingest it with margin_radius_arcsec >= "
                f"{math.ceil(search_radius_arcsec)} or pass margin_fallback='read' to read neighbouring partitions")
        ring = ring_ranges(*task.pixel, search_radius_arcsec)
        ring = ring[~in_ranges(ring[:, 0], np.array([[rs[j], re[j]]]))]  # rows of partition j are read whole
        task.right_ranges = ring
        if "ring reads" not in " ".join(notes):
            margin = "no margin cache" if not stored else f"a {right.margin_radius_arcsec:g} arcsec margin"
            notes.append(f"ring reads of neighbouring partitions ({right.label} has {margin})")

    for i in range(len(left.partitions)):
        a, b = int(ls[i]), int(le[i])
        j0 = int(np.searchsorted(re, a, side="right"))
        j1 = int(np.searchsorted(rs, b, side="left"))
        over = list(range(j0, j1))
        pixel = (int(left.partitions[i, 0]), int(left.partitions[i, 1]))
        if len(over) == 1 and rs[over[0]] <= a and re[over[0]] >= b:
            t = Task(len(tasks), pixel, [i], [over[0]])
            margin_or_ring(t, over[0])
            tasks.append(t)
            continue
        covered = 0
        for j in over:  # right partitions inside this left one
            t = Task(len(tasks), (int(right.partitions[j, 0]), int(right.partitions[j, 1])), [i], [j],
                     left_keep=np.array([[rs[j], re[j]]], dtype=np.int64))
            margin_or_ring(t, j)
            tasks.append(t)
            covered += int(re[j] - rs[j])
        if covered < b - a:
            # left rows where the right side has no partition: their neighbours are in the right partitions
            # inside this one (read whole) or in the ring around it
            inner = np.array([[rs[j], re[j]] for j in over], dtype=np.int64).reshape(-1, 2)
            ring = ring_ranges(*pixel, search_radius_arcsec)
            touches = any(overlaps(ring, rs[j], re[j]) for j in range(len(rs)))
            if over or touches or keep_unmatched:
                tasks.append(Task(len(tasks), pixel, [i], over, left_drop=inner if len(inner) else None,
                                  right_ranges=ring if touches else None))
    return Plan(tasks, search_radius_arcsec, notes=notes)


def task_sizes(tasks: list[Task], left: Side, right: Side) -> list[int]:
    """An estimate of each task's work (rows of the partitions it reads), to run the largest first.

    Parameters
    ----------
    tasks : list of Task
        The plan's tasks.
    left, right : Side
        The two inputs.

    Returns
    -------
    list of int
        One size per task, in the order of ``tasks``.
    """
    lrows, rrows = left.part_rows(), right.part_rows()
    return [sum(int(lrows[i]) for i in t.left_parts) + sum(int(rrows[j]) for j in t.right_parts) for t in tasks]


# ---------------------------------------------------------------- the result


def output_schema(left: Side, right: Side, opts: Options) -> pa.Schema:
    """The schema of every task's rows: the left columns, the right ones, the algorithm's, then the identity
    columns (:data:`LKEY`, :data:`RKEYS`) when the global steps need them.

    Parameters
    ----------
    left, right : Side
        The two inputs.
    opts : Options
        The columns kept, their output names and the algorithm.
    """
    fields = [left.schema.field(c).with_name(n) for c, n in zip(opts.left_cols, opts.left_out)]
    fields += [right.schema.field(c).with_name(n) for c, n in zip(opts.right_cols, opts.right_out)]
    fields += list(opts.extra_schema)
    if opts.keys:
        fields += [pa.field(LKEY, pa.int64()), pa.field(RKEYS[0], pa.int64()),
                   pa.field(RKEYS[1], pa.float64()), pa.field(RKEYS[2], pa.float64())]
    return pa.schema(fields)
