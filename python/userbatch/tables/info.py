"""What a user asks of a table: its catalog entry, size, layout, schema, history, sky coverage."""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..sky.healpix import SPATIAL_INDEX_COLUMN, SPATIAL_INDEX_ORDER
from . import delta
from .catalog import Catalog, TableEntry
from .read import path_pixel, resolve, to_spark


def partitions_of(snap: delta.Snapshot) -> np.ndarray:
    pixels = {path_pixel(p) for p in snap.files.column("path").to_pylist()} - {None}
    return np.array(sorted(pixels), dtype=np.int64).reshape(-1, 2)


def describe(entry: TableEntry | str, version: int | None = None, *, catalog: Catalog | None = None) -> dict:
    """A table's entry, size, layout and schema at one version, as ``userbatch tables show`` prints them.

    Parameters
    ----------
    entry : TableEntry or str
        The table (``"dp1.object"``) or its catalog entry.
    version : int, optional
        Delta version to describe; by default the latest (in a facility run, the pinned one).
    catalog : Catalog, optional
        The catalog a table name is looked up in.

    Returns
    -------
    dict
        Keyed by ``name``, ``format``, ``location``, ``owner``, ``visibility``, ``version`` (``"n/a"`` for a
        table without history), ``rows``, ``files``, ``partitions``, ``partition orders`` (order -> partition
        count), ``spatial columns``, ``margin``, ``description`` and ``schema`` (``"column: type"`` strings).
    """
    if not isinstance(entry, TableEntry):
        entry = (catalog or Catalog()).get(entry)
    snap = resolve(entry, version=version)
    parts = partitions_of(snap)
    info = {
        "name": entry.name,
        "format": entry.format,
        "location": entry.location,
        "owner": entry.owner,
        "visibility": entry.visibility + (f" ({entry.group})" if entry.group else ""),
        "version": snap.version if snap.version >= 0 else "n/a",
        "rows": snap.num_rows,
        "files": snap.files.num_rows,
        "partitions": len(parts),
        "partition orders": dict(sorted(Counter(int(o) for o in parts[:, 0]).items())) if len(parts) else {},
        "spatial columns": f"{entry.ra_column}, {entry.dec_column} ({entry.coord_unit})" if entry.spatial else "none",
        "margin": f"{entry.margin_radius_arcsec} arcsec" if entry.margin_radius_arcsec else "none",
        "description": entry.description,
        "schema": [f"{f.name}: {f.type}" for f in snap.schema],
    }
    return info


def pixel_counts(spark, entry: TableEntry, order: int, version: int | None = None) -> dict[int, int]:
    """Rows per HEALPix pixel at ``order`` (one aggregate over the index column only)."""
    from pyspark.sql import functions as F

    snap = resolve(entry, version=version)
    if SPATIAL_INDEX_COLUMN not in snap.schema.names or snap.files.num_rows == 0:
        return {}
    df = to_spark(spark, snap, [SPATIAL_INDEX_COLUMN])
    shift = 2 * (SPATIAL_INDEX_ORDER - order)
    rows = df.groupBy(F.shiftright(SPATIAL_INDEX_COLUMN, shift).alias("p")).count().collect()
    return {int(r["p"]): int(r["count"]) for r in rows}
