"""Putting rows into exactly the Spark task we chose, without a sampling pass.

``DataFrame.repartition(n, col)`` sends a row to task ``pmod(murmur3_32(col, seed=42), n)``. Knowing the hash, the
driver can pick for each task ``t`` an integer key that hashes to ``t``; tagging rows with the key of the task
their partition was packed into then gives a balanced, pixel-aligned shuffle in one pass. The hash below is Spark's
``Murmur3_x86_32.hashInt``; a test checks it against Spark's own ``hash()``.
"""

from __future__ import annotations

import numpy as np

_M32 = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def spark_hash_int(value: int, seed: int = 42) -> int:
    """Spark's ``hash(CAST(value AS INT))`` as a signed 32-bit integer."""
    k1 = (value & _M32) * 0xCC9E2D51 & _M32
    k1 = _rotl(k1, 15) * 0x1B873593 & _M32
    h1 = seed ^ k1
    h1 = (_rotl(h1, 13) * 5 + 0xE6546B64) & _M32
    h1 ^= 4
    h1 ^= h1 >> 16
    h1 = h1 * 0x85EBCA6B & _M32
    h1 ^= h1 >> 13
    h1 = h1 * 0xC2B2AE35 & _M32
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 & 0x80000000 else h1


def task_keys(n_tasks: int) -> np.ndarray:
    """For each task 0..n-1, the smallest non-negative int key that ``repartition(n, key)`` sends there."""
    keys = np.full(n_tasks, -1, dtype=np.int32)
    found = 0
    candidate = 0
    while found < n_tasks:
        bucket = spark_hash_int(candidate) % n_tasks  # Python's % is already a non-negative pmod
        if keys[bucket] < 0:
            keys[bucket] = candidate
            found += 1
        candidate += 1
    return keys
