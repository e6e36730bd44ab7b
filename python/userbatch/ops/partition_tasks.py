"""Run one function per partition of a table, on threads here or as Spark tasks, with nothing shuffled.

Per-object work over a director table (every row of an object in one partition) only ever needs one partition's
rows at a time. Each unit reads its own files with pyarrow and returns an Arrow table; locally the units run on a
thread pool (the kernels release the GIL), on Spark they are dealt into a few tasks per core of
``spark.range(n).mapInArrow`` — the file lists travel in the closure and executors read shared storage, so a
cluster runs it unchanged.
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



def run_local(units: Sequence, func: Callable[[object], pa.Table], schema: pa.Schema,
              workers: int | None = None) -> pa.Table:
    """``func`` over every unit on a thread pool, largest first if the units say how large they are."""
    if not units:
        return schema.empty_table()
    workers = max(1, min(len(units), workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(func, units))
    return pa.concat_tables([p.select(schema.names).cast(schema) for p in parts]) if parts else schema.empty_table()


def run_spark(spark, units: Sequence, func: Callable[[object], pa.Table], schema: pa.Schema):
    """The same as a Spark DataFrame: one stream of Arrow batches per group of units, no shuffle."""
    from pyspark.sql.pandas.types import from_arrow_schema

    sschema = from_arrow_schema(schema)
    if not units:
        return spark.createDataFrame([], sschema)
    n_groups = min(len(units), max(1, default_parallelism(spark)) * settings().tuning.tasks_per_core)
    # ^ Spark tasks per core that the units are dealt into (each runs its units one after the other, streaming)
    groups = [list(units[g::n_groups]) for g in range(n_groups)]
    names = schema.names

    def run(batches):
        for batch in batches:
            for g in batch.column(0).to_pylist():
                for unit in groups[g]:
                    yield from func(unit).select(names).cast(schema).to_batches()

    return spark.range(0, n_groups, 1, numPartitions=n_groups).mapInArrow(run, sschema)
