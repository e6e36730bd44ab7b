"""Reading tables: resolve a version to files, prune files by sky position, hand the rest to Spark or pyarrow.

Pruning happens in three places, coarse to fine: files whose ``_healpix_29`` min/max (Delta stats, or the pixel in
the file's ``Norder=/Npix=`` path) miss every wanted range are never opened; the remaining files get a range
predicate on ``_healpix_29`` that Parquet row-group statistics answer; only surviving rows see the exact test.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from ..errors import UserbatchError
from ..sky.healpix import SPATIAL_INDEX_COLUMN, SPATIAL_INDEX_ORDER
from . import delta, runctx
from .catalog import Catalog, TableEntry

log = logging.getLogger(__name__)

_PIXEL_IN_PATH = re.compile(r"Norder=(\d+)/Dir=\d+/Npix=(\d+)")


def path_pixel(path: str) -> tuple[int, int] | None:
    m = _PIXEL_IN_PATH.search(path)
    return (int(m.group(1)), int(m.group(2))) if m else None


def resolve(entry: TableEntry, version: int | None = None, timestamp=None, record: bool = True) -> delta.Snapshot:
    """The files of one version of a table, whatever its format.

    Without a version or timestamp, a facility run reads the version its inputs are pinned to (see
    :mod:`.runctx`); ``record`` notes the version read as one of the run's inputs.
    """
    if entry.format == "delta":
        if version is None and timestamp is None:
            version = runctx.pinned_version(entry.name)
        snap = delta.snapshot(entry.location, version=version, timestamp=timestamp)
        if record:
            runctx.record_read(entry.name, snap.version)
        return snap
    if version is not None or timestamp is not None:
        raise UserbatchError(f"table {entry.name} is {entry.format}, which keeps no history; drop version/timestamp")
    if entry.format == "hats":
        from .hats_io import hats_snapshot

        return hats_snapshot(entry.location)
    files = sorted(str(p.relative_to(entry.location)) for p in Path(entry.location).rglob("*.parquet")
                   if not any(part.startswith(("_", ".")) for part in p.relative_to(entry.location).parts))
    return plain_snapshot(entry.location, files)


def plain_snapshot(location: str, rel_paths: list[str]) -> delta.Snapshot:
    """A snapshot for files without a Delta log (plain Parquet, HATS): stats from the path's pixel only."""
    import pyarrow.parquet as pq

    root = Path(location)
    rows, lo, hi = [], [], []
    for p in rel_paths:
        rows.append(pq.read_metadata(root / p).num_rows)
        pix = path_pixel(p)
        if pix is None:
            lo.append(None), hi.append(None)
        else:
            shift = 2 * (SPATIAL_INDEX_ORDER - pix[0])
            lo.append(pix[1] << shift), hi.append(((pix[1] + 1) << shift) - 1)
    files = pa.table({
        "path": pa.array(rel_paths, pa.string()),
        "num_records": pa.array(rows, pa.int64()),
        f"min.{SPATIAL_INDEX_COLUMN}": pa.array(lo, pa.int64()),
        f"max.{SPATIAL_INDEX_COLUMN}": pa.array(hi, pa.int64()),
    })
    schema = pq.read_schema(root / rel_paths[0]) if rel_paths else pa.schema([])
    return delta.Snapshot(str(location), -1, schema, files)


def margin_snapshot(entry: TableEntry, version: int) -> tuple[delta.Snapshot, float] | None:
    """The margin cache that belongs with table ``version``, and its radius in arcsec (None without a margin).

    The margin is a Delta table of its own, committed just before the main table; each main commit names the
    margin version it goes with, so a reader never pairs a table version with a margin written after it."""
    mloc = entry.margin_location
    if not delta.is_delta_table(mloc):
        return None
    for h in delta.history(entry.location):  # newest first
        if h["version"] > version:
            continue
        margin = (h.get("provenance") or {}).get("margin")
        if margin and margin.get("version") is not None:
            radius = float(margin.get("radius_arcsec") or entry.margin_radius_arcsec)
            return delta.snapshot(mloc, version=int(margin["version"])), radius
    log.warning("%s has a margin cache but no commit up to version %d names its version; margin not exported",
                entry.name, version)
    return None


def prune(snap: delta.Snapshot, index_ranges: np.ndarray | None) -> delta.Snapshot:
    """Keep only files whose ``_healpix_29`` span meets one of the half-open ``index_ranges``."""
    if index_ranges is None:
        return snap
    files = snap.files
    lo_col, hi_col = f"min.{SPATIAL_INDEX_COLUMN}", f"max.{SPATIAL_INDEX_COLUMN}"
    if lo_col not in files.column_names:
        lo = np.full(files.num_rows, -1, dtype=np.int64)
        hi = np.full(files.num_rows, np.iinfo(np.int64).max, dtype=np.int64)
    else:
        lo = files.column(lo_col).to_numpy(zero_copy_only=False)
        hi = files.column(hi_col).to_numpy(zero_copy_only=False)
        unknown = np.isnan(lo) | np.isnan(hi) if lo.dtype.kind == "f" else np.zeros(len(lo), bool)
        lo = np.where(unknown, -1, lo).astype(np.int64)
        hi = np.where(unknown, np.iinfo(np.int64).max, hi).astype(np.int64)
    ranges = np.asarray(index_ranges, dtype=np.int64).reshape(-1, 2)
    if len(ranges) == 0:
        keep = np.zeros(files.num_rows, dtype=bool)
    else:
        # a file [lo, hi] meets range [a, b) iff the first range ending after lo starts at or before hi
        pos = np.searchsorted(ranges[:, 1], lo, side="right")
        keep = (pos < len(ranges)) & (ranges[np.clip(pos, 0, len(ranges) - 1), 0] <= hi)
    return delta.Snapshot(snap.location, snap.version, snap.schema, files.filter(pa.array(keep)))


def index_filter_sql(index_ranges: np.ndarray) -> str:
    """A Spark predicate on ``_healpix_29`` that Parquet row-group statistics can answer."""
    terms = [f"(`{SPATIAL_INDEX_COLUMN}` >= {a} AND `{SPATIAL_INDEX_COLUMN}` < {b})" for a, b in index_ranges]
    return "(" + " OR ".join(terms) + ")" if terms else "false"


def to_spark(spark, snap: delta.Snapshot, columns: list[str] | None = None):
    """A Spark DataFrame over a snapshot's files (an empty one with the schema when no file survives)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    schema = from_arrow_schema(snap.schema)
    if snap.files.num_rows == 0:
        df = spark.createDataFrame([], schema)
    else:
        df = spark.read.schema(schema).parquet(*snap.paths)
    return df.select(*columns) if columns else df


def to_arrow(snap: delta.Snapshot, columns: list[str] | None = None, index_ranges: np.ndarray | None = None) -> pa.Table:
    """Read a (small) snapshot directly with pyarrow: no Spark job, row groups skipped by ``_healpix_29``."""
    if snap.files.num_rows == 0:
        return snap.schema.empty_table().select(columns) if columns else snap.schema.empty_table()
    dataset = pads.dataset(snap.paths, schema=snap.schema, format="parquet")
    expr = None
    if index_ranges is not None and SPATIAL_INDEX_COLUMN in snap.schema.names:
        field = pc.field(SPATIAL_INDEX_COLUMN)
        for a, b in np.asarray(index_ranges).reshape(-1, 2):
            term = (field >= int(a)) & (field < int(b))
            expr = term if expr is None else expr | term
    return dataset.to_table(columns=columns, filter=expr)


def read_table(
    name: str | TableEntry,
    version: int | None = None,
    timestamp=None,
    *,
    spark=None,
    catalog: Catalog | None = None,
    columns: list[str] | None = None,
):
    """A catalog table as a Spark DataFrame, at its latest version, a version, or a timestamp."""
    from ..spark import active_session, session

    entry = name if isinstance(name, TableEntry) else (catalog or Catalog()).get(name)
    snap = resolve(entry, version=version, timestamp=timestamp)
    spark = spark or active_session() or session()
    if columns:
        missing = [c for c in columns if c not in snap.schema.names]
        if missing:
            from ..errors import ColumnNotFound

            raise ColumnNotFound(f"{entry.name} has no column(s) {', '.join(missing)}; it has {', '.join(snap.schema.names)}")
    return to_spark(spark, snap, columns)
