"""Writing rows that are already in memory as Arrow: the partition files of a catalog table, without the JVM.

:func:`~.write.write_table` takes a Spark DataFrame or a :class:`pyarrow.Table`. Rows already in this process (a
cross-match matched by the local engine, a pandas frame) gain nothing from being handed to Spark to be written:
the copy into the JVM, the histogram pass and the shuffle cost more than the rows' own Parquet encoding. Here the
same layout is produced with pyarrow alone — the order-29 index computed once, rows ordered by it (each partition
is then a zero-copy slice), one file per partition and per margin partition, written on a thread pool (Parquet
encoding releases the GIL) under a private staging directory and moved into ``Norder=/Dir=/Npix=`` only when all
are written. Nothing is visible until :func:`~.write.write_table` commits them.

The functions here are pure (no catalog, no commit) so that a Spark task can call :func:`write_partition_file`
for the rows it holds as well.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import BadCoordinates
from ..sky.healpix import SPATIAL_INDEX_COLUMN, SPATIAL_INDEX_ORDER, hats_dir, radec_to_index, valid_radec_mask
from ..sky.margins import margin_pairs
from .partitioning import PartitionPlan

log = logging.getLogger(__name__)

#: Parquet row groups stay modest so a cone touches few of them (the same size the Spark writer uses).
ROW_GROUP_BYTES = 4 * 1024 * 1024


def coordinates(table: pa.Table, ra: str, dec: str) -> tuple[np.ndarray, np.ndarray]:
    """RA and Dec as float64 numpy arrays, nulls as NaN (so they count as unusable coordinates).

    Parameters
    ----------
    table : pyarrow.Table
        The rows.
    ra, dec : str
        The coordinate columns (degrees).
    """
    out = []
    for c in (ra, dec):
        col = pc.cast(table.column(c), pa.float64())
        out.append(col.to_numpy(zero_copy_only=False) if col.null_count == 0
                   else pc.fill_null(col, float("nan")).to_numpy(zero_copy_only=False))
    return out[0], out[1]


def spatial_index(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Order-29 index of each row, -1 where the coordinates are unusable (null, NaN or out of range).

    Parameters
    ----------
    ra, dec : numpy.ndarray
        Coordinates in degrees.
    """
    valid = valid_radec_mask(ra, dec)
    index = np.full(len(ra), -1, dtype=np.int64)
    if valid.any():
        index[valid] = radec_to_index(ra[valid], dec[valid])
    return index


def histogram(index: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-empty pixels at ``order`` and their row counts, from valid order-29 indices.

    Parameters
    ----------
    index : numpy.ndarray
        Order-29 indices (all valid).
    order : int
        The order to count at.
    """
    return np.unique(index >> (2 * (SPATIAL_INDEX_ORDER - order)), return_counts=True)


def sort_by_index(table: pa.Table, index: np.ndarray) -> tuple[pa.Table, np.ndarray]:
    """The rows ordered by ``index`` with the index appended as ``_healpix_29``; and the sorted index.

    A stable sort: rows that arrive nearly in order (a cross-match's tasks follow the partitions) sort fast, and
    rows at one position keep their order.
    """
    order = np.argsort(index, kind="stable")
    if np.array_equal(order, np.arange(len(order))):
        ordered = table
    else:
        ordered = table.take(pa.array(order))
    sorted_index = index[order]
    return ordered.append_column(pa.field(SPATIAL_INDEX_COLUMN, pa.int64()), pa.array(sorted_index)), sorted_index


def partition_slices(plan: PartitionPlan, sorted_index: np.ndarray) -> list[tuple[int, int, int]]:
    """(partition position, first row, end row) of every non-empty partition, for rows sorted by index.

    Every row must fall inside some partition of ``plan`` (it was planned from these rows).
    """
    lo = np.searchsorted(sorted_index, plan.starts, side="left")
    hi = np.searchsorted(sorted_index, plan.ends, side="left")
    if int((hi - lo).sum()) != len(sorted_index):
        raise AssertionError("rows fall outside the partitions planned from them")  # a bug, not bad input
    return [(i, int(a), int(b)) for i, (a, b) in enumerate(zip(lo, hi)) if b > a]


def margin_slices(plan: PartitionPlan, sorted_index: np.ndarray, order: int) -> tuple[np.ndarray, list]:
    """The margin copies: rows (positions in the sorted rows) grouped by the partition whose margin they belong to.

    Every row in a margin-order pixel that borders a partition from outside is copied into that partition's
    margin (the same rule as the Spark writer: whole margin pixels, no distance cut). Returns the row positions,
    ordered by destination partition then index, and ``(partition position, first, end)`` slices into them.

    Parameters
    ----------
    plan : PartitionPlan
        The table's partitions.
    sorted_index : numpy.ndarray
        The rows' order-29 indices, sorted.
    order : int
        The margin order.
    """
    mpix, dest = margin_pairs(plan.partitions, order)
    row_mpix = sorted_index >> (2 * (SPATIAL_INDEX_ORDER - order))
    first = np.searchsorted(mpix, row_mpix, side="left")
    n = np.searchsorted(mpix, row_mpix, side="right") - first
    rows = np.repeat(np.arange(len(sorted_index)), n)
    if len(rows) == 0:
        return rows, []
    starts = np.repeat(first, n)
    offsets = np.arange(len(rows)) - np.repeat(np.cumsum(n) - n, n)
    dests = dest[starts + offsets]
    order_ = np.lexsort((rows, dests))  # rows are sorted by index already: by destination, then index
    rows, dests = rows[order_], dests[order_]
    edges = np.flatnonzero(np.r_[True, dests[1:] != dests[:-1], True])
    return rows, [(int(dests[a]), int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def partition_path(order: int, pixel: int) -> Path:
    """The directory of a partition inside a table: ``Norder=o/Dir=d/Npix=p``."""
    return Path(f"Norder={int(order)}") / f"Dir={int(hats_dir(pixel))}" / f"Npix={int(pixel)}"


def write_partition_file(rows: pa.Table, directory: Path) -> Path:
    """Write ``rows`` as one Parquet file (a new name) in ``directory``; modest row groups, dictionaries for
    strings only (as the Spark writer does).

    Parameters
    ----------
    rows : pyarrow.Table
        The rows of one partition, ordered by ``_healpix_29``.
    directory : pathlib.Path
        Where the file goes (made if missing).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"part-{uuid.uuid4().hex}.parquet"
    per_row = max(1, rows.nbytes // max(rows.num_rows, 1))
    strings = [f.name for f in rows.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    pq.write_table(rows, path, row_group_size=max(1024, ROW_GROUP_BYTES // per_row),
                   use_dictionary=strings or False, write_statistics=True)
    return path


def write_layout(jobs: list[tuple[Path, Path, pa.Table]], workers: int | None = None) -> dict[Path, list[str]]:
    """Write every ``(root, partition dir, rows)`` under a staging directory of its root on a thread pool, then
    move the files into place; returns the new files of each root, relative to it.

    A failure removes what was staged and leaves the roots as they were.
    """
    roots = {root for root, _, _ in jobs}
    staging = {root: root / "_staging" / uuid.uuid4().hex for root in roots}

    def one(job):
        root, rel_dir, rows = job
        return root, rel_dir, write_partition_file(rows, staging[root] / rel_dir)

    workers = max(1, min(len(jobs), workers or os.cpu_count() or 1))
    try:
        with ThreadPoolExecutor(workers) as pool:
            written = list(pool.map(one, jobs)) if jobs else []
        moved: dict[Path, list[str]] = {root: [] for root in roots}
        for root, rel_dir, path in written:
            moved[root].append(move_into(path, root, rel_dir))
        return moved
    finally:
        for root, stage in staging.items():
            remove_staging(root, stage)


def move_into(path: Path, root: Path, rel_dir: Path) -> str:
    """Move a written file into ``root/rel_dir``; its path relative to ``root``."""
    dest = root / rel_dir / path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    return str(dest.relative_to(root))


def remove_staging(root: Path, stage: Path) -> None:
    """Remove one write's staging directory, and ``_staging`` itself once no other write uses it."""
    shutil.rmtree(stage, ignore_errors=True)
    try:
        (root / "_staging").rmdir()
    except OSError:
        pass


def write_rows_into(rows: pa.Table, ra: str, dec: str, partitions: np.ndarray, staging: Path) -> pa.Table:
    """Write some rows of a table being built, by a task that holds them, into ``staging`` in the table layout;
    the files written (``path`` relative to ``staging``, ``rows``), to be committed by the driver.

    Rows go to the partition of ``partitions`` that holds them; a row outside all of them (an outer join's
    right-only row where the left side has no partition) goes to its pixel at the finest order of
    ``partitions``, which no partition can overlap (a coarser one holding the pixel would hold the row). So
    tasks need not know of each other, and the layout stays disjoint.

    Parameters
    ----------
    rows : pyarrow.Table
        The rows (any order).
    ra, dec : str
        Their coordinate columns (degrees); all must be valid.
    partitions : numpy.ndarray
        (order, pixel) pairs, shape (n, 2): the table's partitions.
    staging : pathlib.Path
        The write's staging directory (shared storage on a cluster).
    """
    if rows.num_rows == 0:
        return pa.table({"path": pa.array([], pa.string()), "rows": pa.array([], pa.int64())})
    index = spatial_index(*coordinates(rows, ra, dec))
    if (index < 0).any():
        raise BadCoordinates(f"{int((index < 0).sum())} row(s) to write have NaN or out-of-range {ra}/{dec}")
    rows, sorted_index = sort_by_index(rows, index)
    plan = PartitionPlan(partitions)
    pos = plan.lookup(sorted_index)
    finest = int(plan.partitions[:, 0].max()) if len(plan) else 0
    orders = np.where(pos >= 0, plan.partitions[np.clip(pos, 0, None), 0], finest)
    pixels = np.where(pos >= 0, plan.partitions[np.clip(pos, 0, None), 1],
                      sorted_index >> (2 * (SPATIAL_INDEX_ORDER - finest)))
    edges = np.flatnonzero(np.r_[True, (orders[1:] != orders[:-1]) | (pixels[1:] != pixels[:-1]), True])
    paths, counts = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        if b > a:
            path = write_partition_file(rows.slice(a, b - a), staging / partition_path(orders[a], pixels[a]))
            paths.append(str(path.relative_to(staging)))
            counts.append(int(b - a))
    return pa.table({"path": pa.array(paths, pa.string()), "rows": pa.array(counts, pa.int64())})


def write_plain(rows: pa.Table, root: Path) -> list[str]:
    """A non-spatial table's rows as one file under ``data/``; returns it relative to ``root``.

    Parameters
    ----------
    rows : pyarrow.Table
        The rows.
    root : pathlib.Path
        The table's directory.
    """
    moved = write_layout([(root, Path("data"), rows)])
    return moved[root]
