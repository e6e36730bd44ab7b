"""The Spark engine of the cross-match: the same tasks, run by executors that read their own files.

The match tasks are dealt, largest first, into a few Spark tasks per core by the runner every per-partition
computation uses (:func:`userbatch.ops.partition_tasks.run_spark`): the tasks travel in the closure, with the
options and the algorithm instance in them (pickled), each executor reads its partition files, margin and ring with
pyarrow and runs :func:`~userbatch.ops.crossmatch.tasks.run_task` (the numba kernel for the built-ins,
``run_algorithm`` for any other algorithm), so nothing is shuffled and a cluster with shared storage runs it
unchanged. The algorithm's class must be importable on the executors (a class defined in a notebook travels by
value). The global steps are Spark jobs over the pairs only:

* one-to-one: rounds of "mutual best" (a pair that is the best remaining for both its rows); such a pair is exactly
  one the sequential greedy would take, so after the rounds the result equals the greedy assignment, computed with
  a few window aggregations per round instead of one process holding every pair.
* outer: right rows whose identity (``_healpix_29``, ra, dec) appears in no pair, by an anti-join.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from ...config import settings
from ...engine import get_session
from ...sky.healpix import SPATIAL_INDEX_COLUMN
from .. import partition_tasks
from ..sides import FileSide, MemorySide
from .algorithms import AlgorithmContractError
from .kernel import dense_keys, one_to_one
from .plan import LKEY, RANK_COLUMN, RKEYS, output_schema, task_sizes
from .tasks import run_task
from ...user_code import ship, user_class
from ...tables.write import write_from_tasks
from ...tables.write_arrow import sort_by_index, write_partition_file, write_rows_into

log = logging.getLogger(__name__)

# The match tasks are dealt into settings().tuning.xmatch_tasks_per_core Spark tasks per core of the
# application (``defaultParallelism``). Once settings().tuning.xmatch_driver_pairs candidate pairs remain (keys
# and distance only, ~40 bytes each), the driver finishes the assignment with the sequential greedy: dense clusters
# chain pairs and would otherwise take many rounds.

#: A guard, not a tuning knob: each round settles at least the globally best remaining pair, in practice most.
MAX_ROUNDS = 1000


def run_spark(xm, spark=None):
    """The matches of a planned cross-match as a lazy Spark DataFrame, one Spark task per group of match tasks.

    Parameters
    ----------
    xm : Crossmatch
        The planned cross-match.
    spark : pyspark.sql.SparkSession, optional
        The session; by default the running one.

    Returns
    -------
    pyspark.sql.DataFrame
        The result columns (``xm.columns``), lazy.
    """
    spark = spark or get_session()
    _ship_algorithm(spark, xm.options)
    left, right, opts, plan = xm.left, xm.right, xm.options, xm.plan
    df = partition_tasks.run_spark(spark, plan.tasks, lambda t: run_task(t, left, right, opts, plan),
                                   output_schema(left, right, opts), sizes=task_sizes(plan.tasks, left, right),
                                   tasks_per_core=settings().tuning.xmatch_tasks_per_core)
    if opts.one_to_one:
        df = _one_to_one(df.localCheckpoint(), opts)
    if opts.how == "outer":
        df = df.localCheckpoint()
        df = df.unionByName(_right_unmatched(spark, df, xm))
    return df.select(*xm.columns)


def _ship_algorithm(spark, opts) -> None:
    """Make the algorithm's class importable on the executors: a user's module file (not installed, not defined
    in ``__main__``, which travels by value) is added with ``addPyFile``, once per application."""
    if opts.algorithm is not None:
        ship(spark, user_class(type(opts.algorithm)))


#: What each Spark task of a write reports: the files it wrote (relative to the staging directory) and their rows.
FILES_WRITTEN = pa.schema([pa.field("path", pa.string()), pa.field("rows", pa.int64())])


def write_from_spark_tasks(xm, name: str, mode: str, partitions, ra_column: str, dec_column: str, **write_options):
    """Write the pairs of a planned cross-match as a table from the Spark tasks that make them: each task writes
    its rows into the table's layout (``partitions``) under a staging directory, the driver collects the file
    list only and commits (:func:`~userbatch.tables.write.write_from_tasks`). Nothing is shuffled or collected,
    and the pairs are computed once (no histogram pass). For joins whose rows need no global step (not
    one-to-one, not outer).

    Parameters
    ----------
    xm : Crossmatch
        The planned cross-match (engine ``"spark"``).
    name : str
        The table to write.
    mode : {"create", "overwrite"}
        Make a new table or replace its rows.
    partitions : numpy.ndarray
        (order, pixel) pairs the rows are filed by (the left table's).
    ra_column, dec_column : str
        The output columns holding the left coordinates.
    **write_options
        Passed to :func:`~userbatch.tables.write.write_from_tasks` (``catalog``, ``provenance``,
        ``visibility`` ...).
    """
    spark = xm.spark or get_session()
    _ship_algorithm(spark, xm.options)
    left, right, opts, plan = xm.left, xm.right, xm.options, xm.plan
    columns = xm.columns
    empty = output_schema(left, right, opts).empty_table().select(columns)

    def produce(staging):
        def task(t):
            rows = run_task(t, left, right, opts, plan).select(columns)
            return write_rows_into(rows, ra_column, dec_column, partitions, staging)

        files = partition_tasks.run_spark(spark, plan.tasks, task, FILES_WRITTEN,
                                          sizes=task_sizes(plan.tasks, left, right),
                                          tasks_per_core=settings().tuning.xmatch_tasks_per_core).toArrow()
        if files.num_rows == 0:  # no pairs: one empty file keeps the schema
            rows, _ = sort_by_index(empty, np.zeros(0, np.int64))
            path = write_partition_file(rows, staging / "data")
            files = pa.table({"path": [str(path.relative_to(staging))], "rows": [0]}, schema=FILES_WRITTEN)
        return files

    return write_from_tasks(produce, name, mode, partitions=partitions, ra_column=ra_column,
                            dec_column=dec_column, **write_options)


def _one_to_one(df, opts):
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    score, higher = opts.score
    matched = df.filter(F.col(RKEYS[0]).isNotNull())
    lone = df.filter(F.col(RKEYS[0]).isNull())
    rkeys = list(RKEYS)
    # one ascending key, best first: the score (negated when higher is better), NaN and null last as in the greedy
    key = "__ub_score"
    raw = F.col(score).cast("double")
    matched = matched.withColumn(key, F.when(raw.isNull() | F.isnan(raw), F.lit(float("inf")))
                                 .otherwise(-raw if higher else raw))
    remaining = matched.select(LKEY, *rkeys, key).localCheckpoint()
    accepted = None
    for n in range(MAX_ROUNDS):
        if remaining.count() <= settings().tuning.xmatch_driver_pairs:
            best = _greedy_on_driver(remaining, key)
            accepted = best if accepted is None else accepted.unionByName(best)
            log.info("one-to-one: %d Spark round(s), the rest on the driver", n)
            break
        by_left = Window.partitionBy(LKEY).orderBy(key, *rkeys)
        by_right = Window.partitionBy(*rkeys).orderBy(key, LKEY)
        best = (remaining.withColumn("_bl", F.row_number().over(by_left))
                .withColumn("_br", F.row_number().over(by_right))
                .filter("_bl = 1 AND _br = 1").select(LKEY, *rkeys).localCheckpoint())
        if best.isEmpty():
            break
        accepted = best if accepted is None else accepted.unionByName(best)
        remaining = (remaining.join(best.select(LKEY), LKEY, "left_anti")
                     .join(best.select(*rkeys), rkeys, "left_anti").localCheckpoint())
        if remaining.isEmpty():
            log.info("one-to-one settled in %d round(s)", n + 1)
            break
    if accepted is None:
        kept = matched.limit(0)
    else:
        kept = matched.join(accepted.localCheckpoint(), [LKEY, *rkeys], "left_semi")
        if RANK_COLUMN in df.columns and df.schema[RANK_COLUMN].dataType.typeName() in ("integer", "long", "short"):
            kept = kept.withColumn(RANK_COLUMN, F.lit(1).cast(df.schema[RANK_COLUMN].dataType))
    if opts.how == "inner":
        return kept.drop(key)
    # left rows that lost every candidate: once, with the right side null
    first = Window.partitionBy(LKEY).orderBy(key, *rkeys)
    lost = (matched.join(kept.select(LKEY), LKEY, "left_anti")
            .withColumn("_n", F.row_number().over(first)).filter("_n = 1").drop("_n"))
    kept, lost = kept.drop(key), lost.drop(key)
    for c in [*opts.right_out, *opts.extra_schema.names, *rkeys]:
        lost = lost.withColumn(c, F.lit(None).cast(df.schema[c].dataType))
    return kept.unionByName(lost).unionByName(lone)


def _greedy_on_driver(pairs, key):

    spark = pairs.sparkSession
    t = pairs.toArrow()
    rkeys = list(RKEYS)
    if t.num_rows == 0:
        return pairs.select(LKEY, *rkeys).limit(0)
    lkey = t.column(LKEY).to_numpy()
    rid = dense_keys(*(t.column(c).to_numpy(zero_copy_only=False) for c in rkeys))
    keep = one_to_one(dense_keys(lkey), rid, t.column(key).to_numpy(zero_copy_only=False))
    kept = t.select([LKEY, *rkeys]).filter(pa.array(keep))
    return spark.createDataFrame(kept.to_pandas(), pairs.select(LKEY, *rkeys).schema)


def _right_unmatched(spark, df, xm):
    from pyspark.sql import functions as F

    right, opts = xm.right, xm.options
    want = list(dict.fromkeys(opts.right_cols + [SPATIAL_INDEX_COLUMN, right.ra, right.dec]))
    if isinstance(right, FileSide):
        from pyspark.sql.pandas.types import from_arrow_schema

        paths = [p for files in right.files for p in files]
        rows = spark.read.schema(from_arrow_schema(right.schema)).parquet(*paths).select(*want) if paths \
            else spark.createDataFrame([], from_arrow_schema(right.schema.empty_table().select(want).schema))
    else:
        assert isinstance(right, MemorySide)
        rows = spark.createDataFrame(right.rows.select(want).to_pandas())
    rows = (rows.withColumn(RKEYS[0], F.col(SPATIAL_INDEX_COLUMN).cast("long"))
            .withColumn(RKEYS[1], F.col(right.ra).cast("double"))
            .withColumn(RKEYS[2], F.col(right.dec).cast("double")))
    used = df.filter(F.col(RKEYS[0]).isNotNull()).select(*RKEYS).distinct()
    alone = rows.join(used, list(RKEYS), "left_anti")
    out = []
    for name in df.columns:
        if name in opts.right_out:
            out.append(F.col(opts.right_cols[opts.right_out.index(name)]).alias(name))
        elif name in RKEYS:
            out.append(F.col(name))
        else:
            out.append(F.lit(None).cast(df.schema[name].dataType).alias(name))
    return alone.select(*out)


def reraise_contract_error(e: Exception) -> None:
    """Raise :class:`~userbatch.ops.crossmatch.algorithms.AlgorithmContractError` with the message a Spark task's
    one carried, if ``e`` wraps one (Spark hands a task's exception to the driver as the text of another).

    Parameters
    ----------
    e : Exception
        What a Spark action raised; returns without raising when it carries no contract error.
    """
    text = str(e)
    marker = "AlgorithmContractError: "
    if isinstance(e, AlgorithmContractError) or marker not in text:
        return
    message = text[text.rindex(marker) + len(marker):].strip().splitlines()[0]
    raise AlgorithmContractError(message) from e
