"""The per-partition runner both the per-object computations and the cross-match engines use
(``ops/partition_tasks.py``): largest first when sizes are given, the result in the units' order either way."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from userbatch.ops.partition_tasks import largest_first, run_local

SCHEMA = pa.schema([pa.field("unit", pa.int64())])


def test_largest_first_is_a_stable_descending_order():
    assert largest_first(4, None) == [0, 1, 2, 3]
    assert largest_first(5, [1, 5, 3, 5, 0]) == [1, 3, 2, 0, 4]  # ties keep their order
    with pytest.raises(ValueError, match="2 sizes for 3 units"):
        largest_first(3, [1, 2])


def test_run_local_starts_the_largest_first_and_keeps_the_units_order():
    started, lock = [], threading.Lock()

    def func(u):
        with lock:
            started.append(u)
        return pa.table({"unit": [u, u], "dropped": [0, 0]})  # extra columns are dropped, types cast

    units = [0, 1, 2, 3, 4]
    out = run_local(units, func, SCHEMA, workers=1, sizes=[1, 5, 3, 5, 0])
    assert started == [1, 3, 2, 0, 4]
    assert out.schema == SCHEMA and out.column("unit").to_pylist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    started.clear()
    assert run_local(units, func, SCHEMA, workers=3).num_rows == 10 and sorted(started) == units
    assert run_local([], func, SCHEMA).num_rows == 0
