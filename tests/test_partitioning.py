"""Partition plans against hats' own alignment, margins against brute force, task placement against Spark."""

import numpy as np
import pytest
from hats.pixel_math.partition_stats import generate_alignment

from userbatch.sky.healpix import SPATIAL_INDEX_ORDER
from userbatch.sky.margins import margin_order
from userbatch.tables.partitioning import pack_tasks, plan_from_histogram
from userbatch.tables.placement import spark_hash_int, task_keys


def _histogram(seed, order, n=5000):
    rng = np.random.default_rng(seed)
    hist = np.zeros(12 * 4**order, dtype=np.int64)
    np.add.at(hist, rng.integers(0, len(hist), n), 1)
    np.add.at(hist, rng.integers(200, 260, n), 1)  # a dense clump
    return hist


@pytest.mark.parametrize("seed", range(6))
def test_adaptive_plan_equals_hats(seed):
    """Same partitions as hats-import's call: generate_alignment(drop_empty_siblings=True, use_lower_order=True)."""
    order = 5
    hist = _histogram(seed, order, n=int(np.random.default_rng(seed).integers(200, 5000)))
    threshold = int(np.random.default_rng(seed).integers(60, 2000))
    ref = generate_alignment(hist, order, 0, threshold, drop_empty_siblings=True, use_lower_order=True)
    expected = sorted({(int(t[0]), int(t[1])) for t in ref if t is not None})
    pix = np.flatnonzero(hist)
    plan = plan_from_histogram(pix, hist[pix], order, threshold=threshold)
    assert sorted(map(tuple, plan.partitions.tolist())) == expected
    assert plan.counts.sum() == hist.sum()


def test_fixed_order_plan_and_lookup():
    hist = _histogram(1, 6)
    pix = np.flatnonzero(hist)
    plan = plan_from_histogram(pix, hist[pix], 6, partition_order=2)
    assert set(plan.partitions[:, 0]) == {2}
    assert sorted(plan.partitions[:, 1]) == sorted(set(pix >> 8))
    index = pix << (2 * (SPATIAL_INDEX_ORDER - 6))
    pos = plan.lookup(index)
    np.testing.assert_array_equal(plan.partitions[pos, 1], pix >> 8)
    assert plan.lookup(np.array([-5]))[0] == -1


def test_incremental_plan_keeps_existing_and_never_overlaps():
    order = 5
    first = _histogram(2, order, n=300)
    pix = np.flatnonzero(first)
    old = plan_from_histogram(pix, first[pix], order, threshold=50)
    new_hist = _histogram(3, order, n=3000)
    npix = np.flatnonzero(new_hist)
    plan = plan_from_histogram(npix, new_hist[npix], order, threshold=50, existing=old.partitions)
    parts = set(map(tuple, plan.partitions.tolist()))
    assert set(map(tuple, old.partitions.tolist())) <= parts
    starts, ends = plan.starts, plan.ends
    assert np.all(starts[1:] >= ends[:-1]), "partitions overlap"
    assert np.all(plan.lookup(npix << (2 * (SPATIAL_INDEX_ORDER - order))) >= 0), "a row has no partition"


def test_pack_tasks_keeps_order_and_balance():
    counts = np.array([10, 10, 10, 10, 500, 10, 10, 10])
    tasks = pack_tasks(counts, rows_per_task=200, max_tasks=4)
    assert np.all(np.diff(tasks) >= 0)
    assert tasks.max() <= 3


def test_margin_wider_than_partitions_is_refused():
    from userbatch.errors import BadCoordinates

    with pytest.raises(BadCoordinates, match="wider"):
        margin_order(3600 * 5, [6])


def test_task_keys_land_in_their_task(spark):
    from pyspark.sql import functions as F

    values = list(range(-5, 200)) + [2**31 - 1, -(2**31)]
    rows = spark.createDataFrame([(v,) for v in values], "k int").select("k", F.hash("k").alias("h")).collect()
    assert all(spark_hash_int(r["k"]) == r["h"] for r in rows)
    n = 7
    keys = task_keys(n)
    df = spark.createDataFrame([(int(k), t) for t, k in enumerate(keys)], "k int, t int").repartition(n, "k")
    placed = df.rdd.mapPartitionsWithIndex(lambda i, it: [(i, r["t"]) for r in it]).collect()
    assert sorted(placed) == [(t, t) for t in range(n)]


def test_orders_out_of_range_are_refused():
    from userbatch.errors import UserbatchError

    with pytest.raises(UserbatchError, match="highest partition order"):
        plan_from_histogram(np.array([1]), np.array([1]), 25)
    with pytest.raises(UserbatchError, match="partition order"):
        plan_from_histogram(np.array([1]), np.array([1]), 5, partition_order=7)
