"""One cross-match task, run the same way by both engines: read its left rows and the right rows that can lie within
the search radius of them, keep the pairs the algorithm keeps, return them as Arrow rows of the planned schema.

Why apart from the engines: the thread pool in :mod:`~userbatch.ops.crossmatch.local` and the Spark tasks in
:mod:`~userbatch.ops.crossmatch.spark` both call :func:`run_task`, so a task matches the same pairs whichever runs
it, and the engines never import each other.

What a task keeps is decided by a :class:`~userbatch.ops.crossmatch.algorithms.CrossmatchAlgorithm` carried in
:class:`~userbatch.ops.crossmatch.plan.Options`. The built-ins (nearest, k nearest, all, annulus:
:data:`~userbatch.ops.crossmatch.plan.FAST_ALGORITHMS`) keep their numba kernel path
(:mod:`~userbatch.ops.crossmatch.kernel`), so their pairs and speed are those of before the interface; any other
algorithm runs through :func:`~userbatch.ops.crossmatch.algorithms.run_algorithm` on the task's rows, positions
propagated to the match epoch first.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ...sky.healpix import SPATIAL_INDEX_COLUMN
from ...sky.motion import Motion, propagate
from ..sides import Side, in_ranges, merge_ranges
from . import kernel
from .algorithms import TaskRows, run_algorithm
from .plan import DIST_COLUMN, RANK_COLUMN, Options, Plan, Task, output_schema

#: Keys under which a task hands the (propagated) positions to an algorithm; hidden from it as column names.
_POS_RA, _POS_DEC = "__ub_pos_ra", "__ub_pos_dec"


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
