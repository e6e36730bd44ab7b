"""Run one function per partition of a table, on threads here or as Spark tasks, with nothing shuffled.

Per-object work over a director table (every row of an object in one partition) only ever needs one partition's
rows at a time, and a cross-match task only its pixel's rows and the ring around them. Each unit reads its own
files with pyarrow and returns an Arrow table; locally the units run on a thread pool (the kernels release the
GIL), on Spark they are dealt into a few tasks per core of ``spark.range(n).mapInArrow`` — the units travel in the
closure and executors read shared storage, so a cluster runs it unchanged. One runner for both, so scheduling
(largest first, tasks per core) is decided in one place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from ..config import settings
from ..engine import default_parallelism

log = logging.getLogger(__name__)


def largest_first(n: int, sizes: Sequence[float] | None) -> list[int]:
    """Positions ``0..n-1`` ordered by ``sizes``, largest first (ties keep their order); as given without sizes.

    Parameters
    ----------
    n : int
        How many units.
    sizes : sequence of float, optional
        One estimate of work per unit.
    """
    if sizes is None:
        return list(range(n))
    if len(sizes) != n:
        raise ValueError(f"{len(sizes)} sizes for {n} units")
    return sorted(range(n), key=lambda i: -sizes[i])


def run_local(units: Sequence, func: Callable[[object], pa.Table], schema: pa.Schema,
              workers: int | None = None, *, sizes: Sequence[float] | None = None) -> pa.Table:
    """``func`` over every unit on a thread pool, the parts concatenated in the order of ``units``.

    Parameters
    ----------
    units : sequence
        What each call of ``func`` works on (a partition's files, a cross-match task).
    func : callable
        One unit in, an Arrow table holding at least the columns of ``schema`` out.
    schema : pyarrow.Schema
        The result's schema; each part is selected and cast to it.
    workers : int, optional
        Threads; by default one per core, never more than there are units.
    sizes : sequence of float, optional
        An estimate of each unit's work: the units are started largest first, so the threads finish together.
        The result keeps the order of ``units`` either way.

    Returns
    -------
    pyarrow.Table
        Every unit's rows, in the order of ``units``.
    """
    if not units:
        return schema.empty_table()
    workers = max(1, min(len(units), workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        futures = {i: pool.submit(func, units[i]) for i in largest_first(len(units), sizes)}
        parts = [futures[i].result() for i in range(len(units))]
    return pa.concat_tables([p.select(schema.names).cast(schema) for p in parts])


def run_spark(spark, units: Sequence, func: Callable[[object], pa.Table], schema: pa.Schema, *,
              sizes: Sequence[float] | None = None, tasks_per_core: int | None = None):
    """The same as a lazy Spark DataFrame: one stream of Arrow batches per group of units, no shuffle.

    The units are dealt round-robin (largest first when ``sizes`` are given, which evens out the groups) into a
    few Spark tasks per core: a Spark task costs ~0.1 s to schedule and start. A Spark task runs its units one
    after the other and streams each result, so its memory stays that of its largest unit. ``func`` and the units
    travel to the executors in the closure (pickled).

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        The session.
    units : sequence
        What each call of ``func`` works on; picklable.
    func : callable
        One unit in, an Arrow table holding at least the columns of ``schema`` out; runs on an executor.
    schema : pyarrow.Schema
        The result's schema; each part is selected and cast to it.
    sizes : sequence of float, optional
        An estimate of each unit's work, to deal the largest first.
    tasks_per_core : int, optional
        Spark tasks per core of the application (``defaultParallelism``) the units are dealt into; by default
        ``settings().tuning.tasks_per_core``.

    Returns
    -------
    pyspark.sql.DataFrame
        Every unit's rows (in no promised order).
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    sschema = from_arrow_schema(schema)
    if not units:
        return spark.createDataFrame([], sschema)
    per_core = settings().tuning.tasks_per_core if tasks_per_core is None else tasks_per_core
    n_groups = min(len(units), max(1, default_parallelism(spark)) * per_core)
    ordered = [units[i] for i in largest_first(len(units), sizes)]
    groups = [ordered[g::n_groups] for g in range(n_groups)]
    names = schema.names

    def run(batches):
        for batch in batches:
            for g in batch.column(0).to_pylist():
                for unit in groups[g]:
                    yield from func(unit).select(names).cast(schema).to_batches()

    return spark.range(0, n_groups, 1, numPartitions=n_groups).mapInArrow(run, sschema)
