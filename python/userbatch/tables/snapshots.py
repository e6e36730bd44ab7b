"""A table version as files: resolve a version (Delta, plain Parquet or HATS) to a snapshot, prune it by sky
position, and hand it to Spark or pyarrow.

Pruning happens in three places, coarse to fine: files whose ``_healpix_29`` min/max (Delta stats, or the pixel in
the file's ``Norder=/Npix=`` path) miss every wanted range are never opened; the remaining files get a range
predicate on ``_healpix_29`` that Parquet row-group statistics answer; only surviving rows see the exact test.

This module sits below everything else in the tables layer that reads (``read``, ``views``, ``info``, ``write``,
``hats_io``): HATS catalogs are read in place here, imported and exported in :mod:`.hats_io`.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..errors import UserbatchError
from ..sky.healpix import SPATIAL_INDEX_COLUMN, pixel_to_index_range
from . import delta, runctx
from .catalog import TableEntry

log = logging.getLogger(__name__)

#: Hive partition columns some HATS writers put inside the data files; never part of a table's schema here.
HIVE_COLUMNS = ("Norder", "Dir", "Npix")
#: Spark reads unsigned Parquet integers as the next wider signed type (uint64 as decimal(20,0)); pyarrow
#: casts to the same types on read, so both engines see one schema.
_UNSIGNED_AS = {
    pa.uint8(): pa.int16(),
    pa.uint16(): pa.int32(),
    pa.uint32(): pa.int64(),
    pa.uint64(): pa.decimal128(20, 0),
}


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
        return hats_snapshot(entry.location)
    files = sorted(str(p.relative_to(entry.location)) for p in Path(entry.location).rglob("*.parquet")
                   if not any(part.startswith(("_", ".")) for part in p.relative_to(entry.location).parts))
    return plain_snapshot(entry.location, files)


def plain_snapshot(location: str, rel_paths: list[str]) -> delta.Snapshot:
    """A snapshot for files without a Delta log (plain Parquet, HATS): stats from the path's pixel only."""
    root = Path(location)
    rows, lo, hi = [], [], []
    for p in rel_paths:
        rows.append(pq.read_metadata(root / p).num_rows)
        pix = path_pixel(p)
        if pix is None:
            lo.append(None), hi.append(None)
        else:
            a, b = pixel_to_index_range(*pix)
            lo.append(a), hi.append(b - 1)
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


def to_arrow(snap: delta.Snapshot, columns: list[str] | None = None,
             index_ranges: np.ndarray | None = None) -> pa.Table:
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


# ---------------------------------------------------------------- opening HATS catalogs

def local_path(upath) -> Path:
    """A local :class:`~pathlib.Path` from what hats returns (a ``UPath`` or a plain path)."""
    return Path(getattr(upath, "path", str(upath)))


def open_hats(path: str | Path):
    """``(catalog, collection_or_None)`` for a HATS catalog or collection directory, or a clear error."""
    import hats
    from hats.catalog import CatalogCollection

    p = Path(path).expanduser()
    if not p.is_dir():
        raise UserbatchError(
            f"{path} is not a directory; give the directory of a HATS catalog (it holds hats.properties, "
            "partition_info.csv and dataset/) or of a HATS collection (collection.properties)"
        )
    if not any((p / f).is_file() for f in ("hats.properties", "properties", "collection.properties")):
        raise UserbatchError(
            f"{p} is not a HATS catalog: it has no hats.properties (nor properties, nor collection.properties); "
            "write HATS with hats-import or lsdb, or export a userbatch table with export_hats"
        )
    try:
        obj = hats.read_hats(p.resolve(), read_moc=False)
    except (OSError, ValueError, TypeError, KeyError, NotImplementedError) as exc:
        raise UserbatchError(f"{p} is not a readable HATS catalog: {exc.__class__.__name__}: {exc}") from exc
    if isinstance(obj, CatalogCollection):
        return obj.main_catalog, obj
    return obj, None


def require_object_catalog(cat, path) -> None:
    """Refuse, with the reason, a HATS catalog that cannot be a table here (not object/source, no ra/dec)."""
    from hats.catalog import Catalog as HatsCatalog

    kind = getattr(cat.catalog_info, "catalog_type", "?")
    if not isinstance(cat, HatsCatalog):
        raise UserbatchError(
            f"{path} is a HATS {kind} catalog; only object or source catalogs can be tables here "
            "(give the primary catalog, or the collection that holds it)"
        )
    info = cat.catalog_info
    if not (info.ra_column and info.dec_column):
        raise UserbatchError(f"HATS catalog {path} declares no hats_col_ra/hats_col_dec; add them to its properties")
    if cat.schema is not None:
        missing = [c for c in (info.ra_column, info.dec_column) if c not in cat.schema.names]
        if missing:
            raise UserbatchError(
                f"HATS catalog {path} names ra/dec column(s) {', '.join(missing)} that its schema does not have"
            )


def _pixel_files(cat) -> list[str]:
    """Data files of every partition of a HATS catalog, relative to its directory (``dataset/Norder=...``)."""
    from hats.io import pixel_catalog_file

    base = local_path(cat.catalog_base_dir)
    suffix = cat.catalog_info.npix_suffix
    rel: list[str] = []
    for pixel in cat.get_healpix_pixels():
        target = local_path(pixel_catalog_file(base, pixel, npix_suffix=suffix))
        if suffix in ("/", "\\"):
            if not target.is_dir():
                raise UserbatchError(f"HATS catalog {base} lists partition {pixel} but {target} is not a directory")
            files = sorted(f for f in target.iterdir() if f.is_file() and not f.name.startswith((".", "_")))
            rel.extend(str(f.relative_to(base)) for f in files)
        else:
            if not target.is_file():
                raise UserbatchError(f"HATS catalog {base} lists partition {pixel} but its file {target} is missing")
            rel.append(str(target.relative_to(base)))
    return rel


def _counts_from_metadata(base: Path, rel_paths: list[str]) -> dict[str, int] | None:
    """Rows per file from ``dataset/_metadata`` (one read instead of one footer per file), when it covers them."""
    meta_file = base / "dataset" / "_metadata"
    if not meta_file.is_file():
        return None
    try:
        meta = pq.read_metadata(meta_file)
    except (OSError, pa.ArrowException):
        return None
    counts: dict[str, int] = defaultdict(int)
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        if rg.num_columns == 0:
            return None
        counts["dataset/" + rg.column(0).file_path.lstrip("/")] += rg.num_rows
    if not all(p in counts for p in rel_paths):
        return None
    return counts


def _reader_schema(schema: pa.Schema) -> pa.Schema:
    """The schema both engines read a HATS catalog with: no hive columns, unsigned ints widened, no metadata."""
    fields = []
    for f in schema:
        if f.name in HIVE_COLUMNS:
            continue
        fields.append(f.with_type(_UNSIGNED_AS.get(f.type, f.type)))
    return pa.schema(fields)


def hats_snapshot(location: str | Path) -> delta.Snapshot:
    """The files of a HATS catalog as a :class:`~userbatch.tables.delta.Snapshot` (version -1: no history).

    ``location`` is a catalog directory (or a collection, whose primary catalog is used). Row counts come from
    ``dataset/_metadata`` when present, else from each file's footer; per-file ``_healpix_29`` bounds come from
    the pixel in the path. The schema is the catalog's (``_common_metadata``) without ``Norder/Dir/Npix`` and with
    unsigned integers widened the way Spark reads them.
    """
    cat, _ = open_hats(location)
    base = local_path(cat.catalog_base_dir)
    rel = _pixel_files(cat)
    counts = _counts_from_metadata(base, rel) if rel else None
    if counts is None:
        files = plain_snapshot(str(base), rel).files
    else:
        lo, hi = [], []
        for p in rel:
            order, pix = path_pixel(p)
            a, b = pixel_to_index_range(order, pix)
            lo.append(a)
            hi.append(b - 1)
        files = pa.table({
            "path": pa.array(rel, pa.string()),
            "num_records": pa.array([counts[p] for p in rel], pa.int64()),
            f"min.{SPATIAL_INDEX_COLUMN}": pa.array(lo, pa.int64()),
            f"max.{SPATIAL_INDEX_COLUMN}": pa.array(hi, pa.int64()),
        })
    schema = cat.schema if cat.schema is not None else (pq.read_schema(base / rel[0]) if rel else pa.schema([]))
    return delta.Snapshot(str(base), -1, _reader_schema(schema), files)
