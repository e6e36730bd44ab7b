"""A catalogue seen partition by partition, whatever it is: HEALPix partitions of rows, each readable on its own,
with the rows just outside it (its margin) and arbitrary index ranges readable too.

The two inputs (sides) of a cross-match are read through these, and so are the director tables of per-object
computations (:mod:`~userbatch.ops.per_object`, :mod:`~userbatch.ops.lightcurves`): that is why this module sits in
``ops/`` below both rather than inside the :mod:`~userbatch.ops.crossmatch` package.

A catalog table (Delta or HATS) reads its partition files, its stored margin cache and, for index ranges, the
files that overlap them. An in-memory table (pandas, Arrow, a collected Spark DataFrame) is sorted by
``_healpix_29`` once and partitioned here; its margins are cut on demand at whatever radius the match needs.
Sides are plain picklable objects so a Spark executor can rebuild a task's rows from the files alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cdshealpix
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from ..errors import BadCoordinates, ColumnNotFound, UserbatchError
from ..sky.healpix import (
    SPATIAL_INDEX_COLUMN,
    count_pixels,
    pixel_to_index_range,
    pixels_to_index_ranges,
    radec_to_index,
    valid_radec_mask,
)
from ..sky.margins import margin_order
from ..tables.hats_io import hats_snapshot
from ..tables.partitioning import plan_from_histogram
from ..tables.read import margin_snapshot, path_pixel, resolve

log = logging.getLogger(__name__)

#: In-memory inputs are cut into partitions of at most this many rows (more partitions than cores either way).
MEMORY_PARTITION_ROWS = 250_000


def merge_ranges(ranges: np.ndarray) -> np.ndarray:
    """Sorted, non-overlapping half-open ranges covering the same indices."""
    r = np.asarray(ranges, dtype=np.int64).reshape(-1, 2)
    if len(r) == 0:
        return r
    r = r[np.argsort(r[:, 0], kind="stable")]
    reach = np.maximum.accumulate(r[:, 1])
    first = np.ones(len(r), dtype=bool)
    first[1:] = r[1:, 0] > reach[:-1]  # a range that starts beyond everything before it opens a new run
    last = np.append(np.flatnonzero(first)[1:] - 1, len(r) - 1)
    return np.column_stack([r[first, 0], reach[last]])


def in_ranges(index: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Mask of ``index`` values inside any of the sorted, disjoint half-open ``ranges``."""
    ranges = np.asarray(ranges, dtype=np.int64).reshape(-1, 2)
    if len(ranges) == 0:
        return np.zeros(len(index), dtype=bool)
    pos = np.searchsorted(ranges[:, 0], index, side="right") - 1
    ok = pos >= 0
    pos = np.clip(pos, 0, None)
    return ok & (index < ranges[pos, 1])


def overlaps(ranges: np.ndarray, a: int, b: int) -> bool:
    """Whether the half-open range ``[a, b)`` meets any of the sorted, disjoint half-open ``ranges``.

    Parameters
    ----------
    ranges : numpy.ndarray
        ``(n, 2)`` ranges, sorted and disjoint (as :func:`merge_ranges` returns them).
    a, b : int
        The range to test.
    """
    pos = np.searchsorted(ranges[:, 1], a, side="right")
    return bool(pos < len(ranges) and ranges[pos, 0] < b)


def ring_ranges(order: int, pixel: int, radius_arcsec: float) -> np.ndarray:
    """Index ranges of the pixels just outside ``(order, pixel)`` that hold every point within the radius of it."""
    m = margin_order(radius_arcsec, [order])
    edges, corners = cdshealpix.nested.external_neighbours(np.array([pixel], dtype=np.uint64), int(order),
                                                           int(m - order))
    pix = np.concatenate([np.asarray(edges, np.int64).ravel(), np.asarray(corners, np.int64).ravel()])
    pix = np.unique(pix[pix >= 0])
    return merge_ranges(np.column_stack(pixels_to_index_ranges(m, pix)))


class Side:
    """One input of a match. Subclasses fill the fields and implement the three readers."""
    label: str
    ra: str
    dec: str
    schema: pa.Schema
    partitions: np.ndarray  # (n, 2) (order, pixel), sorted by index range
    margin_radius_arcsec: float = 0.0  # what a stored margin holds; inf where margins are cut on demand
    table: str | None = None
    version: int | None = None

    def part_rows(self) -> np.ndarray:
        """Rows per partition (an estimate is enough: it orders the work, largest first)."""
        return np.ones(len(self.partitions), dtype=np.int64)

    @property
    def starts(self) -> np.ndarray:
        return pixels_to_index_ranges(self.partitions[:, 0], self.partitions[:, 1])[0]

    @property
    def ends(self) -> np.ndarray:
        return pixels_to_index_ranges(self.partitions[:, 0], self.partitions[:, 1])[1]

    def check_columns(self, columns) -> None:
        missing = [c for c in columns if c not in self.schema.names]
        if missing:
            raise ColumnNotFound(f"{self.label} has no column(s) {', '.join(missing)}; it has "
                                 f"{', '.join(self.schema.names)}")

    def core(self, i: int, columns: list[str]) -> pa.Table:
        raise NotImplementedError

    def margin(self, i: int, columns: list[str], radius_arcsec: float) -> pa.Table:
        raise NotImplementedError

    def ranges(self, ranges: np.ndarray, columns: list[str]) -> pa.Table:
        raise NotImplementedError

    def all_rows(self, columns: list[str]) -> pa.Table:
        return pa.concat_tables([self.core(i, columns) for i in range(len(self.partitions))]) \
            if len(self.partitions) else self.schema.empty_table().select(columns)

    def column_range(self, column: str) -> tuple[float, float] | None:
        """min/max of a numeric column over the finite values (None when it has none)."""
        v = self.all_rows([column]).column(0).to_numpy(zero_copy_only=False).astype(np.float64)
        v = v[np.isfinite(v)]
        return (float(v.min()), float(v.max())) if len(v) else None


def read_files(paths: list[str], schema: pa.Schema, columns: list[str]) -> pa.Table:
    """Some columns of a list of Parquet files, as one Arrow table (empty, with those columns, for no files).

    Parameters
    ----------
    paths : list of str
        The files.
    schema : pyarrow.Schema
        The schema the files are read with (the table's).
    columns : list of str
        The columns to read.
    """
    if not paths:
        return schema.empty_table().select(columns)
    return pads.dataset(paths, schema=schema, format="parquet").to_table(columns=columns)


@dataclass
class FileSide(Side):
    """A catalog table: its partition files, and its margin cache when it has one."""
    label: str
    ra: str
    dec: str
    schema: pa.Schema
    partitions: np.ndarray
    files: list[list[str]]  # per partition
    margin_files: list[list[str]] | None = None
    margin_radius_arcsec: float = 0.0
    table: str | None = None
    version: int | None = None
    stats: dict = field(default_factory=dict)  # column -> (min, max) from Delta statistics
    num_rows: int = 0
    rows_per_part: np.ndarray | None = None

    def part_rows(self) -> np.ndarray:
        return self.rows_per_part if self.rows_per_part is not None else super().part_rows()

    @classmethod
    def from_entry(cls, entry, version=None, timestamp=None) -> "FileSide":
        if not entry.spatial:
            raise UserbatchError(f"table {entry.name} declares no ra/dec columns, so it cannot be cross-matched")
        snap = resolve(entry, version=version, timestamp=timestamp)
        paths = snap.files.column("path").to_pylist()
        by_pixel: dict[tuple[int, int], list[str]] = {}
        for rel in paths:
            pix = path_pixel(rel)
            if pix is None:
                raise UserbatchError(f"table {entry.name} is not HEALPix-partitioned (file {rel}); re-ingest it")
            by_pixel.setdefault(pix, []).append(str(Path(snap.location) / rel))
        parts = sorted(by_pixel, key=lambda p: pixel_to_index_range(*p)[0])
        partitions = np.array(parts, dtype=np.int64).reshape(-1, 2)
        margin_files, radius = None, 0.0
        if entry.format == "delta":
            found = margin_snapshot(entry, snap.version)
            if found is not None:
                msnap, radius = found
                margin_files = _group(msnap, parts)
        elif entry.format == "hats":
            meta = (entry.properties or {}).get("hats", {})
            if meta.get("margin") and meta.get("margin_threshold_arcsec"):

                msnap = hats_snapshot(meta["margin"])
                margin_files = _group(msnap, parts)
                radius = float(meta["margin_threshold_arcsec"])
        rows_per_part = None
        if "num_records" in snap.files.column_names:
            counts = dict.fromkeys(parts, 0)
            for rel, n in zip(paths, snap.files.column("num_records").to_pylist()):
                counts[path_pixel(rel)] += int(n or 0)
            rows_per_part = np.array([counts[p] for p in parts], dtype=np.int64)
        stats = {}
        for name in snap.files.column_names:
            if name.startswith("min.") and f"max.{name[4:]}" in snap.files.column_names:
                col = name[4:]
                lo = snap.files.column(name).to_numpy(zero_copy_only=False)
                hi = snap.files.column(f"max.{col}").to_numpy(zero_copy_only=False)
                if lo.dtype.kind in "fiu" and len(lo) and not np.isnan(lo.astype(float)).any() \
                        and not np.isnan(hi.astype(float)).any():
                    stats[col] = (float(lo.min()), float(hi.max()))
        return cls(
            label=f"table {entry.name}", ra=entry.ra_column, dec=entry.dec_column, schema=snap.schema,
            partitions=partitions, files=[by_pixel[p] for p in parts], margin_files=margin_files,
            margin_radius_arcsec=radius, table=entry.name, version=snap.version if snap.version >= 0 else None,
            stats=stats if entry.format == "delta" else {}, num_rows=snap.num_rows, rows_per_part=rows_per_part,
        )

    def core(self, i, columns):
        return read_files(self.files[i], self.schema, columns)

    def margin(self, i, columns, radius_arcsec):
        if self.margin_files is None or radius_arcsec > self.margin_radius_arcsec:
            raise UserbatchError(f"{self.label}: stored margin too small")  # the planner checks first
        return read_files(self.margin_files[i], self.schema, columns)

    def ranges(self, ranges, columns):
        ranges = merge_ranges(ranges)
        if len(ranges) == 0:
            return self.schema.empty_table().select(columns)
        starts, ends = self.starts, self.ends
        parts = [i for i in range(len(self.partitions))
                 if in_ranges(np.array([starts[i]]), ranges)[0] or overlaps(ranges, starts[i], ends[i])]
        want = list(dict.fromkeys([*columns, SPATIAL_INDEX_COLUMN]))
        pieces = []
        for i in parts:
            t = self.core(i, want)
            idx = t.column(SPATIAL_INDEX_COLUMN).to_numpy(zero_copy_only=False)
            pieces.append(t.filter(pa.array(in_ranges(idx, ranges))).select(columns))
        return pa.concat_tables(pieces) if pieces else self.schema.empty_table().select(columns)

    def column_range(self, column):
        if column in self.stats:
            return self.stats[column]
        return super().column_range(column)


def _group(msnap, parts) -> list[list[str]]:
    by_pixel: dict = {}
    for rel in msnap.files.column("path").to_pylist():
        pix = path_pixel(rel)
        if pix is not None:
            by_pixel.setdefault(pix, []).append(str(Path(msnap.location) / rel))
    return [by_pixel.get(p, []) for p in parts]


@dataclass
class MemorySide(Side):
    """Rows held in memory, sorted by ``_healpix_29``; partitions and margins are computed here."""
    label: str
    ra: str
    dec: str
    schema: pa.Schema
    partitions: np.ndarray
    rows: pa.Table
    index: np.ndarray
    margin_radius_arcsec: float = float("inf")
    table: str | None = None
    version: int | None = None

    @classmethod
    def from_arrow(cls, table: pa.Table, ra: str, dec: str, label: str, max_order: int = 20) -> "MemorySide":
        for c in (ra, dec):
            if c not in table.column_names:
                raise ColumnNotFound(f"{label} has no column {c!r}; it has {', '.join(table.column_names)}; "
                                     "name the coordinate columns with left_ra/left_dec or right_ra/right_dec")
        ra_v = table.column(ra).to_numpy(zero_copy_only=False).astype(np.float64)
        dec_v = table.column(dec).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = ~valid_radec_mask(ra_v, dec_v)
        if bad.any():
            raise BadCoordinates(
                f"{label}: {int(bad.sum())} row(s) have NaN or out-of-range coordinates (first at row "
                f"{int(np.flatnonzero(bad)[0])}: {ra}={ra_v[bad][0]}, {dec}={dec_v[bad][0]}); need 0 <= ra < 360 "
                "and -90 <= dec <= 90 degrees; drop or fix them first"
            )
        if SPATIAL_INDEX_COLUMN in table.column_names:
            table = table.drop_columns([SPATIAL_INDEX_COLUMN])
        index = radec_to_index(ra_v, dec_v)
        order = np.argsort(index, kind="stable")
        index = index[order]
        table = table.take(pa.array(order)).append_column(SPATIAL_INDEX_COLUMN, pa.array(index, pa.int64()))
        hist_order = min(max_order, 9)
        pixels, counts = count_pixels(ra_v, dec_v, hist_order) if len(ra_v) else (np.zeros(0, np.int64),) * 2
        plan = plan_from_histogram(pixels, counts, hist_order, threshold=MEMORY_PARTITION_ROWS)
        return cls(label=label, ra=ra, dec=dec, schema=table.schema, partitions=plan.partitions,
                   rows=table, index=index)

    def part_rows(self) -> np.ndarray:
        return np.searchsorted(self.index, self.ends) - np.searchsorted(self.index, self.starts)

    def _slice(self, a: int, b: int) -> tuple[int, int]:
        return int(np.searchsorted(self.index, a, "left")), int(np.searchsorted(self.index, b, "left"))

    def core(self, i, columns):
        lo, hi = self._slice(self.starts[i], self.ends[i])
        return self.rows.slice(lo, hi - lo).select(columns)

    def margin(self, i, columns, radius_arcsec):
        order, pixel = self.partitions[i]
        return self.ranges(ring_ranges(int(order), int(pixel), radius_arcsec), columns)

    def ranges(self, ranges, columns):
        r = merge_ranges(ranges)
        lo = np.searchsorted(self.index, r[:, 0], "left")
        hi = np.searchsorted(self.index, r[:, 1], "left")
        n = hi - lo
        if n.sum() == 0:
            return self.schema.empty_table().select(columns)
        # the row positions of all ranges at once (a ring holds thousands of small ranges)
        starts = np.repeat(lo - np.cumsum(n) + n, n)
        return self.rows.select(columns).take(pa.array(np.arange(n.sum()) + starts))

    def all_rows(self, columns):
        return self.rows.select(columns)
