"""The local engine of the cross-match: the planned tasks on a thread pool in this process, then the steps that need
every task's pairs (a one-to-one assignment, the unmatched right rows of an outer join) on the concatenated result.

Why threads: the kernels release the GIL (numba ``nogil``, pyarrow), so one process with no JVM uses every core;
memory per task is bounded by the partition sizes chosen at ingest. The tasks run through the same runner as every
per-partition computation (:func:`userbatch.ops.partition_tasks.run_local`), largest first so the threads finish
together; the result keeps the plan's order, so it does not depend on which thread finished first.

The one-to-one step is the sequential greedy (best pairs first) over all pairs; a right row is identified by its
position (``_healpix_29``, ra, dec): rows at bit-identical positions count as one.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...sky.healpix import SPATIAL_INDEX_COLUMN
from .. import partition_tasks
from ..sides import Side
from .kernel import dense_keys, one_to_one
from .plan import LKEY, RANK_COLUMN, RKEYS, Options, output_schema, task_sizes
from .tasks import run_task


def run_local(xm) -> pa.Table:
    """The matches of a planned cross-match, computed here on a thread pool.

    Parameters
    ----------
    xm : Crossmatch
        The planned cross-match; its ``timings_s`` gets the seconds spent in the tasks (``"tasks"``) and in all
        (``"total"``).

    Returns
    -------
    pyarrow.Table
        The result columns (``xm.columns``), the rows of the tasks in the plan's order, then any rows the global
        steps add.
    """
    t0 = time.perf_counter()
    left, right, opts, plan = xm.left, xm.right, xm.options, xm.plan
    out = partition_tasks.run_local(plan.tasks, lambda t: run_task(t, left, right, opts, plan),
                                    output_schema(left, right, opts), sizes=task_sizes(plan.tasks, left, right))
    xm.timings_s["tasks"] = time.perf_counter() - t0
    if opts.one_to_one:
        out = resolve_one_to_one_local(out, opts)
    if opts.how == "outer":
        out = pa.concat_tables([out, right_unmatched_local(out, right, opts)])
    xm.timings_s["total"] = time.perf_counter() - t0
    return out.select(xm.columns)


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
    keep = one_to_one(dense_keys(lkey), rid,
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
    """Right rows that appear in no pair, as rows with null left columns.

    Parameters
    ----------
    out : pyarrow.Table
        The pairs (and unmatched left rows), with the identity columns.
    right : Side
        The right input.
    opts : Options
        The columns kept and their output names.
    """
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
