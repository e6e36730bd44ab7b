"""The engine-neutral half of a cross-match: the plan (which sky pixels of the two sides meet, as independent
tasks) and the kernel run of one task, plus the global steps on the local engine (one-to-one, right unmatched).

Both engines — the thread pool in :mod:`.crossmatch` and the Spark tasks in :mod:`.crossmatch_spark` — call these;
neither imports the other's half. ``crossmatch()`` in :mod:`.crossmatch` is the front users call.

What a task keeps is decided by a :class:`~.xmatch_algorithms.CrossmatchAlgorithm` carried in :class:`Options`. The
built-ins (nearest, k nearest, all, annulus: :data:`FAST_ALGORITHMS`) keep their numba kernel path, so their pairs
and speed are those of before the interface; any other algorithm runs through
:func:`~.xmatch_algorithms.run_algorithm` on the task's rows, positions propagated to the match epoch first.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ColumnNotFound, UserbatchError
from ..sky.healpix import SPATIAL_INDEX_COLUMN
from ..sky.margins import MARGIN_SAFETY
from ..sky.motion import Motion, propagate
from ..tables.catalog import Catalog, TableEntry
from . import xmatch_kernel as kernel
from .xmatch_algorithms import (
    AllWithin,
    Annulus,
    CrossmatchAlgorithm,
    KNearest,
    NearestNeighbour,
    TaskRows,
    run_algorithm,
)
from .crossmatch_sides import FileSide, MemorySide, Side, in_ranges, merge_ranges, ring_ranges

log = logging.getLogger(__name__)

MODES = ("nearest", "k_nearest", "all")
HOWS = ("inner", "left", "outer")
ENGINES = ("auto", "local", "spark")
MARGIN_FALLBACKS = ("error", "read")
DIST_COLUMN = "_dist_arcsec"
RANK_COLUMN = "_rank"
#: The built-ins whose exact type takes the numba kernel path (a subclass may override ``match``, so it does not).
FAST_ALGORITHMS = (NearestNeighbour, KNearest, AllWithin, Annulus)
#: Keys under which a task hands the (propagated) positions to an algorithm; hidden from it as column names.
_POS_RA, _POS_DEC = "__ub_pos_ra", "__ub_pos_dec"
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


def make_side(obj, ra, dec, what, *, catalog, version, timestamp, spark_ok: bool, max_order: int) -> Side:
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
    """Finest partition order an in-memory input may use so that a ring of margin pixels still covers the radius."""
    width = math.radians(MARGIN_SAFETY * search_radius_arcsec / 3600.0)
    m = int(math.floor(math.log2(math.sqrt(math.pi / 3) / (1.6 * width)))) if width > 0 else 29
    if m - 1 < 0:
        raise UserbatchError(f"a {search_radius_arcsec:.4g} arcsec search radius is too large to partition; "
                             "cross-matches are for radii up to a few degrees")
    return min(m - 1, 9)


# ---------------------------------------------------------------- planning


def plan_tasks(left: Side, right: Side, search_radius_arcsec: float, how: str, margin_fallback: str) -> Plan:
    """Align the two partition trees into tasks; check every stored margin used is wide enough."""
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
            touches = any(_overlap(ring, rs[j], re[j]) for j in range(len(rs)))
            if over or touches or keep_unmatched:
                tasks.append(Task(len(tasks), pixel, [i], over, left_drop=inner if len(inner) else None,
                                  right_ranges=ring if touches else None))
    return Plan(tasks, search_radius_arcsec, notes=notes)


def largest_first(tasks: list[Task], left: Side, right: Side) -> list[Task]:
    """Tasks ordered by an estimate of their work (rows of the partitions they read), largest first."""
    lrows, rrows = left.part_rows(), right.part_rows()
    return sorted(tasks, key=lambda t: -(sum(int(lrows[i]) for i in t.left_parts)
                                         + sum(int(rrows[j]) for j in t.right_parts)))


def _overlap(ranges: np.ndarray, a: int, b: int) -> bool:
    pos = np.searchsorted(ranges[:, 1], a, side="right")
    return bool(pos < len(ranges) and ranges[pos, 0] < b)


# ---------------------------------------------------------------- one task


def _numpy(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def _internal_left(left: Side, opts: Options, task: Task) -> list[str]:
    # the spatial index is read only where it is used (decoding it costs as much as a coordinate column)
    cols = [left.ra, left.dec]
    if task.left_keep is not None or task.left_drop is not None:
        cols.append(SPATIAL_INDEX_COLUMN)
    if opts.motion is not None:
        cols += opts.motion.left_columns()
    if not opts.fast:
        cols += list(opts.algorithm.required_left_columns)
    return list(dict.fromkeys(opts.left_cols + cols))


def _internal_right(right: Side, opts: Options) -> list[str]:
    cols = [right.ra, right.dec] + ([SPATIAL_INDEX_COLUMN] if opts.keys else [])
    if opts.motion is not None:
        cols += opts.motion.right_columns()
    if not opts.fast:
        cols += list(opts.algorithm.required_right_columns)
    return list(dict.fromkeys(opts.right_cols + cols))


def output_schema(left: Side, right: Side, opts: Options) -> pa.Schema:
    fields = [left.schema.field(c).with_name(n) for c, n in zip(opts.left_cols, opts.left_out)]
    fields += [right.schema.field(c).with_name(n) for c, n in zip(opts.right_cols, opts.right_out)]
    fields += list(opts.extra_schema)
    if opts.keys:
        fields += [pa.field(LKEY, pa.int64()), pa.field(RKEYS[0], pa.int64()),
                   pa.field(RKEYS[1], pa.float64()), pa.field(RKEYS[2], pa.float64())]
    return pa.schema(fields)


def _task_rows(task: Task, left: Side, right: Side, opts: Options, search_radius: float):
    lt = pa.concat_tables([left.core(i, _internal_left(left, opts, task)) for i in task.left_parts])
    if task.left_keep is not None or task.left_drop is not None:
        idx = lt.column(SPATIAL_INDEX_COLUMN).to_numpy(zero_copy_only=False)
        mask = np.ones(len(idx), dtype=bool)
        if task.left_keep is not None:
            mask &= in_ranges(idx, merge_ranges(task.left_keep))
        if task.left_drop is not None:
            mask &= ~in_ranges(idx, merge_ranges(task.left_drop))
        lt = lt.filter(pa.array(mask))
    rcols = _internal_right(right, opts)
    pieces = [right.core(j, rcols) for j in task.right_parts]
    if task.right_margin is not None:
        pieces.append(right.margin(task.right_margin, rcols, search_radius))
    if task.right_ranges is not None and len(task.right_ranges):
        pieces.append(right.ranges(task.right_ranges, rcols))
    rt = pa.concat_tables(pieces) if pieces else right.schema.empty_table().select(rcols)
    return lt, rt


def run_task(task: Task, left: Side, right: Side, opts: Options, plan: Plan) -> pa.Table:
    """Match one task; returns rows in :func:`output_schema` order.

    Parameters
    ----------
    task : Task
        The task.
    left, right : Side
        The two inputs.
    opts : Options
        What to keep (the algorithm, the join, the columns).
    plan : Plan
        The plan the task belongs to (its search radius).
    """
    lt, rt = _task_rows(task, left, right, opts, plan.search_radius_arcsec)
    schema = output_schema(left, right, opts)
    if lt.num_rows == 0:
        return schema.empty_table()
    match = _match_builtin if opts.fast else _match_algorithm
    li, ri, extra = match(lt, rt, left, right, opts, plan)
    cols = [lt.column(c).take(li) for c in opts.left_cols] + [rt.column(c).take(ri) for c in opts.right_cols]
    cols += [pa.array(extra[f.name], f.type) for f in opts.extra_schema]
    if opts.keys:
        cols += [pa.array((np.int64(task.tid) << 32) | li.astype(np.int64), pa.int64()),
                 rt.column(SPATIAL_INDEX_COLUMN).take(ri).cast(pa.int64()),
                 pa.array(rra_cat(rt, right)[ri], pa.float64()), pa.array(_numpy(rt, right.dec)[ri], pa.float64())]
    out = pa.Table.from_arrays(cols, schema=schema)
    if opts.how in ("left", "outer"):
        unmatched = np.setdiff1d(np.arange(lt.num_rows), li)
        if len(unmatched):
            out = pa.concat_tables([out, _left_only(lt, unmatched, opts, schema, task.tid)])
    return out


def _motion_inputs(rt: pa.Table, m: Motion):
    ref = _numpy(rt, m.ref_epoch) if isinstance(m.ref_epoch, str) else float(m.ref_epoch)
    pm = [_numpy(rt, m.pmra), _numpy(rt, m.pmdec)]
    extra = [_numpy(rt, m.parallax) if m.parallax else None,
             _numpy(rt, m.radial_velocity) if m.radial_velocity else None]
    return ref, pm, extra


def _builtin_params(opts: Options) -> tuple[float, float, int]:
    alg = opts.algorithm
    if alg is None:
        return opts.radius_arcsec, opts.min_radius_arcsec, opts.k
    # one-to-one takes every pair within the radius as a candidate, whatever k the built-in has
    return float(alg.radius_arcsec), float(alg.min_radius_arcsec), 0 if opts.one_to_one else int(alg.k)


def _match_builtin(lt: pa.Table, rt: pa.Table, left: Side, right: Side, opts: Options, plan: Plan):
    """The numba kernel path of the built-ins: the pairs and speed of before the algorithm interface."""
    radius, min_radius, k = _builtin_params(opts)
    lxyz = kernel.radec_to_xyz(_numpy(lt, left.ra), _numpy(lt, left.dec))
    rra, rdec = _numpy(rt, right.ra), _numpy(rt, right.dec)
    m = opts.motion
    if m is not None and rt.num_rows:
        ref, pm, extra = _motion_inputs(rt, m)
    if m is not None and not m.epoch_is_column and rt.num_rows:
        rra, rdec = propagate(rra, rdec, *pm, ref, float(m.to_jyear(m.epoch)), *extra)
        li, ri, dist, rank = kernel.match(lxyz, kernel.radec_to_xyz(rra, rdec), radius, min_radius, k)
    elif m is not None and rt.num_rows:
        # each left row has its own epoch: candidates within radius + the largest motion, then the exact test
        li, ri, _, _ = kernel.match(lxyz, kernel.radec_to_xyz(rra, rdec), plan.search_radius_arcsec, 0.0, 0)
        epochs = m.to_jyear(_numpy(lt, m.epoch))[li]
        refs = ref[ri] if isinstance(ref, np.ndarray) else ref
        at = np.where(np.isfinite(epochs), epochs, refs)
        pra, pdec = propagate(rra[ri], rdec[ri], pm[0][ri], pm[1][ri], refs, at,
                              *(None if e is None else e[ri] for e in extra))
        sep = kernel.chord_to_arcsec(np.linalg.norm(lxyz[li] - kernel.radec_to_xyz(pra, pdec), axis=1))
        ok = (sep <= radius) & (sep >= min_radius)
        li, ri, sep = li[ok], ri[ok], sep[ok]
        order = np.lexsort((ri, sep, li))
        li, ri, dist = li[order], ri[order], sep[order]
        starts = np.r_[0, np.flatnonzero(np.diff(li)) + 1] if len(li) else np.zeros(0, np.int64)
        rank = (np.arange(len(li)) - np.repeat(starts, np.diff(np.r_[starts, len(li)]))).astype(np.int32) + 1
        if k > 0:
            sel = rank <= k
            li, ri, dist, rank = li[sel], ri[sel], dist[sel], rank[sel]
    else:
        li, ri, dist, rank = kernel.match(lxyz, kernel.radec_to_xyz(rra, rdec), radius, min_radius, k)
    return li, ri, {DIST_COLUMN: dist, RANK_COLUMN: rank}


def _arrays(table: pa.Table, columns: list[str]) -> dict[str, np.ndarray]:
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}


def _rows_for(data: dict[str, np.ndarray], ra: np.ndarray, dec: np.ndarray, what: str,
              idx: np.ndarray | None = None) -> TaskRows:
    """An algorithm's view of one side: its required columns, positions under ``ra``/``dec``; rows ``idx`` only."""
    d = {c: (v if idx is None else v[idx]) for c, v in data.items()}
    d[_POS_RA], d[_POS_DEC] = ra, dec
    return TaskRows(d, _POS_RA, _POS_DEC, what)


def _match_algorithm(lt: pa.Table, rt: pa.Table, left: Side, right: Side, opts: Options, plan: Plan):
    """Any algorithm through :func:`run_algorithm` (its contract checked), right positions propagated to the left
    rows' epoch first."""
    alg = opts.algorithm
    lra, ldec = _numpy(lt, left.ra), _numpy(lt, left.dec)
    rra, rdec = _numpy(rt, right.ra), _numpy(rt, right.dec)
    ldata = _arrays(lt, list(alg.required_left_columns))
    rdata = _arrays(rt, list(alg.required_right_columns))
    m = opts.motion
    if m is None or rt.num_rows == 0:
        p = run_algorithm(alg, _rows_for(ldata, lra, ldec, "left"), _rows_for(rdata, rra, rdec, "right"))
        return p.left_idx, p.right_idx, p.extra
    ref, pm, extra = _motion_inputs(rt, m)
    if not m.epoch_is_column:
        pra, pdec = propagate(rra, rdec, *pm, ref, float(m.to_jyear(m.epoch)), *extra)
        p = run_algorithm(alg, _rows_for(ldata, lra, ldec, "left"), _rows_for(rdata, pra, pdec, "right"))
        return p.left_idx, p.right_idx, p.extra
    # A different epoch per left row: the left rows of one epoch against the right rows that can reach them
    # (within the radius plus the largest motion), propagated to that epoch. Exact for any algorithm (each call
    # sees every right row as it is at its left rows' epoch), one call per distinct epoch in the task.
    cl, cr, _, _ = kernel.match(kernel.radec_to_xyz(lra, ldec), kernel.radec_to_xyz(rra, rdec),
                                plan.search_radius_arcsec, 0.0, 0)
    epochs = np.asarray(m.to_jyear(_numpy(lt, m.epoch)), dtype=np.float64)
    finite = np.isfinite(epochs)
    groups = [(e, np.flatnonzero(finite & (epochs == e))) for e in np.unique(epochs[finite])]
    if not finite.all():
        groups.append((None, np.flatnonzero(~finite)))  # no epoch: the right rows as catalogued
    in_group = np.empty(lt.num_rows, dtype=np.int64)
    for g, (_, rows) in enumerate(groups):
        in_group[rows] = g
    out_l, out_r, out_x = [], [], []
    for g, (epoch, lrows) in enumerate(groups):
        rrows = np.unique(cr[in_group[cl] == g])
        if len(rrows) == 0:
            continue
        if epoch is None:
            pra, pdec = rra[rrows], rdec[rrows]
        else:
            refs = ref[rrows] if isinstance(ref, np.ndarray) else ref
            pra, pdec = propagate(rra[rrows], rdec[rrows], pm[0][rrows], pm[1][rrows], refs, float(epoch),
                                  *(None if e is None else e[rrows] for e in extra))
        p = run_algorithm(alg, _rows_for(ldata, lra[lrows], ldec[lrows], "left", lrows),
                          _rows_for(rdata, pra, pdec, "right", rrows))
        out_l.append(lrows[p.left_idx])
        out_r.append(rrows[p.right_idx])
        out_x.append(p.extra)
    if not out_l:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), alg.empty_extra()
    li, ri = np.concatenate(out_l), np.concatenate(out_r)
    order = np.argsort(li, kind="stable")
    extra_cols = {f.name: np.concatenate([x[f.name] for x in out_x])[order] for f in alg.extra_columns}
    return li[order], ri[order], extra_cols


def rra_cat(rt: pa.Table, right: Side) -> np.ndarray:
    """Catalogued (not propagated) right RA: the identity of a right row."""
    return _numpy(rt, right.ra)


def _left_only(lt: pa.Table, rows: np.ndarray, opts: Options, schema: pa.Schema, tid: int) -> pa.Table:
    n = len(rows)
    cols = [lt.column(c).take(rows) for c in opts.left_cols]
    cols += [pa.nulls(n, schema.field(name).type) for name in opts.right_out]
    cols += [pa.nulls(n, f.type) for f in opts.extra_schema]
    if opts.keys:
        cols += [pa.array((np.int64(tid) << 32) | rows.astype(np.int64), pa.int64()), pa.nulls(n, pa.int64()),
                 pa.nulls(n, pa.float64()), pa.nulls(n, pa.float64())]
    return pa.Table.from_arrays(cols, schema=schema)


# ---------------------------------------------------------------- global steps (local engine)


def dense_keys(*columns: np.ndarray) -> np.ndarray:
    """Dense ids 0..n-1 of the distinct tuples, numbered in lexicographic order of the tuples."""
    order = np.lexsort(tuple(reversed(columns)))
    change = np.zeros(len(order), dtype=bool)
    if len(order):
        change[0] = True
        for c in columns:
            s = c[order]
            change[1:] |= s[1:] != s[:-1]
    ids = np.empty(len(order), dtype=np.int64)
    ids[order] = np.cumsum(change) - 1
    return ids


def score_key(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """A score as a key sorting best first (ascending), NaN last.

    Parameters
    ----------
    values : numpy.ndarray
        The score column.
    higher_is_better : bool
        Whether a larger score is a better pair.
    """
    v = np.asarray(values, dtype=np.float64)
    return -v if higher_is_better else v


def resolve_one_to_one_local(out: pa.Table, opts: Options) -> pa.Table:
    """Greedy one-to-one over the pairs of every task, best score first; unmatched rows kept per ``opts.how``.

    Parameters
    ----------
    out : pyarrow.Table
        The tasks' rows, with the identity columns.
    opts : Options
        The options (algorithm, score, join).
    """
    score, higher = opts.score
    matched = pc.is_valid(out.column(RKEYS[0]))
    pairs = out.filter(matched)
    lone = out.filter(pc.invert(matched))
    lkey = pairs.column(LKEY).to_numpy()
    rid = dense_keys(*(pairs.column(c).to_numpy(zero_copy_only=False) for c in RKEYS))
    keep = kernel.one_to_one(dense_keys(lkey), rid,
                             score_key(pairs.column(score).to_numpy(zero_copy_only=False), higher))
    accepted = pairs.filter(pa.array(keep))
    if RANK_COLUMN in accepted.schema.names and pa.types.is_integer(accepted.schema.field(RANK_COLUMN).type):
        i = accepted.schema.get_field_index(RANK_COLUMN)
        accepted = accepted.set_column(i, accepted.schema.field(i),
                                       pa.array(np.ones(accepted.num_rows, np.int32), accepted.schema.field(i).type))
    pieces = [accepted]
    if opts.how in ("left", "outer"):
        lost_mask = ~np.isin(lkey, lkey[keep])
        if lost_mask.any():
            _, first = np.unique(lkey[lost_mask], return_index=True)
            lost = pairs.filter(pa.array(lost_mask)).take(pa.array(first))
            pieces.append(_null_right(lost, opts))
        pieces.append(lone)
    return pa.concat_tables(pieces)


def _null_right(t: pa.Table, opts: Options) -> pa.Table:
    for name in [*opts.right_out, *opts.extra_schema.names, *RKEYS]:
        i = t.schema.get_field_index(name)
        t = t.set_column(i, t.schema.field(i), pa.nulls(t.num_rows, t.schema.field(i).type))
    return t


def right_unmatched_local(out: pa.Table, right: Side, opts: Options) -> pa.Table:
    """Right rows that appear in no pair, as rows with null left columns."""
    schema = out.schema
    keys = out.filter(pc.is_valid(out.column(RKEYS[0]))).select(list(RKEYS))
    rows = right.all_rows(list(dict.fromkeys(opts.right_cols + [SPATIAL_INDEX_COLUMN, right.ra, right.dec])))
    ident = pa.table({RKEYS[0]: rows.column(SPATIAL_INDEX_COLUMN).cast(pa.int64()),
                      RKEYS[1]: rows.column(right.ra).cast(pa.float64()),
                      RKEYS[2]: rows.column(right.dec).cast(pa.float64()),
                      "__row": pa.array(np.arange(rows.num_rows))})
    alone = ident.join(keys, list(RKEYS), join_type="left anti") if keys.num_rows else ident
    take = pa.array(np.sort(alone.column("__row").to_numpy()))
    n = len(take)
    cols = [pa.nulls(n, schema.field(name).type) for name in opts.left_out]
    cols += [rows.column(c).take(take) for c in opts.right_cols]
    cols += [pa.nulls(n, f.type) for f in opts.extra_schema]
    if opts.keys:
        cols += [pa.nulls(n, pa.int64())] + [ident.column(c).take(take) for c in RKEYS]
    return pa.Table.from_arrays(cols, schema=schema)
