"""HATS in and out: read HATS catalogs in place, import them as Delta tables, export a table version as HATS.

Our Delta tables already use the HATS layout (``Norder=K/Dir=D/Npix=P``, ``_healpix_29``, margin caches), so the
three directions are thin:

* :func:`register_hats` puts an existing HATS catalog (or collection) into our catalog as a table of format
  ``hats``; reads and searches then use its files where they are (:func:`hats_snapshot`, called by
  ``read.resolve``). Nothing is copied; a HATS catalog keeps no history, so it has no versions.
* :func:`import_hats` copies a HATS catalog into a Delta table through :func:`~userbatch.tables.write.write_table`
  (re-partitioned with our options, provenance recorded, time travel from then on).
* :func:`export_hats` writes one version of a table as a HATS collection that ``lsdb.open_catalog`` opens with
  its margin attached. Data files are hard-linked where a pixel has one file (no bytes copied, and the export
  stays valid when a later vacuum removes the table's files); pixels with several files are merged.

The ``hats`` library reads and writes all metadata (properties, ``partition_info.csv``, ``dataset/_metadata``),
so what we write is what LSDB and hats-import expect.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..engine import get_session
from ..errors import UserbatchError
from ..sky.healpix import SPATIAL_INDEX_COLUMN, SPATIAL_INDEX_ORDER, pixel_directory, pixel_to_index_range
from ..version import __version__
from . import delta
from .catalog import Catalog, TableEntry
from .provenance import Provenance
from .snapshots import (  # noqa: F401 - hats_snapshot re-exported: the deep path keeps working
    HIVE_COLUMNS,
    hats_snapshot,
    local_path,
    margin_snapshot,
    open_hats,
    path_pixel,
    require_object_catalog,
    resolve,
    to_spark,
)
from .write import write_table

log = logging.getLogger(__name__)

#: Row groups of merged pixel files stay modest, like the files write_table writes.
ROW_GROUP_BYTES = 4 * 1024 * 1024
_CATALOG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


# ---------------------------------------------------------------- register / import

def register_hats(
    path: str | Path,
    name: str,
    *,
    catalog: Catalog | None = None,
    visibility: str = "public",
    description: str = "",
    group: str | None = None,
) -> TableEntry:
    """Register an existing HATS catalog (or collection) as table ``name`` of format ``hats``; nothing is copied.

    The table's location is the catalog directory (a collection's primary catalog); its ra/dec columns are the
    catalog's ``hats_col_ra``/``hats_col_dec``. What the HATS metadata says (catalog name and type, rows,
    partitions and orders, healpix column, and a collection's default margin with its threshold) is kept under
    ``properties["hats"]``. ``margin_radius_arcsec`` stays unset: that field describes our own Delta margin
    caches (``<location>/_margin``), which a HATS catalog does not have.

    Parameters
    ----------
    path : str or pathlib.Path
        Directory of a HATS object catalog, or of a collection (its primary catalog is registered).
    name : str
        The table name to register, ``namespace.table``.
    catalog : Catalog, optional
        The catalog to register the table in; by default ``Catalog()`` for the current user.
    visibility : {"public", "group", "private"}
        Who may read the table.
    description : str
        Free text stored with the entry.
    group : str, optional
        The group that may read the table; required with ``visibility="group"``.

    Returns
    -------
    TableEntry
        The registered entry (format ``hats``, located at the catalog directory, owned by the current user).
    """
    cat = catalog or Catalog()
    hc, collection = open_hats(path)
    require_object_catalog(hc, path)
    base = local_path(hc.catalog_base_dir).resolve()
    hats_snapshot(base)  # every listed partition file must be there
    info = hc.catalog_info
    pixels = hc.get_healpix_pixels()
    orders = sorted({p.order for p in pixels})
    meta = {
        "catalog_name": info.catalog_name,
        "catalog_type": info.catalog_type,
        "total_rows": info.total_rows,
        "partitions": len(pixels),
        "orders": [orders[0], orders[-1]] if orders else [],
        "healpix_column": info.healpix_column,
        "healpix_order": info.healpix_order,
        "npix_suffix": info.npix_suffix,
        "max_rows": info.hats_max_rows,
        "source_path": str(Path(path).expanduser().resolve()),
    }
    if collection is not None:
        meta["collection"] = str(local_path(collection.collection_path).resolve())
        margin_dir = collection.default_margin_catalog_dir
        if margin_dir is not None:
            meta["margin"] = str(local_path(margin_dir).resolve())
            try:
                meta["margin_threshold_arcsec"] = collection.get_margin_thresholds().get(collection.default_margin)
            except (OSError, ValueError) as exc:
                log.warning("could not read the margin threshold of %s: %s", margin_dir, exc)
    entry = TableEntry(
        name=name,
        location=str(base),
        format="hats",
        ra_column=info.ra_column,
        dec_column=info.dec_column,
        partition_order=orders[0] if len(orders) == 1 else None,
        highest_order=orders[-1] if orders else None,
        visibility=visibility,
        group=group,
        description=description,
        properties={"hats": meta},
    )
    return cat.register(entry)


def import_hats(
    path: str | Path,
    name: str,
    *,
    spark=None,
    catalog: Catalog | None = None,
    **write_options,
):
    """Copy a HATS catalog (or a collection's primary catalog) into Delta table ``name`` with ``write_table``.

    ``write_options`` go to :func:`~userbatch.tables.write.write_table` (``mode``, ``pixel_threshold``,
    ``partition_order``, ``margin_radius_arcsec`` ...); ra/dec default to the catalog's ``hats_col_ra/dec``.
    Spark reads the catalog's partition files; ``Norder/Dir/Npix`` columns are dropped and ``_healpix_29`` is
    recomputed. The input path, catalog name and row count are recorded as provenance.

    Parameters
    ----------
    path : str or pathlib.Path
        Directory of a HATS object catalog, or of a collection (its primary catalog is imported).
    name : str
        The Delta table to write, ``namespace.table``.
    spark : pyspark.sql.SparkSession, optional
        The session that reads the catalog and writes the table; by default the running session, or a new bare one.
    catalog : Catalog, optional
        The catalog to register the table in; by default ``Catalog()`` for the current user.
    **write_options
        Passed to :func:`~userbatch.tables.write.write_table` (``mode``, ``pixel_threshold``, ``partition_order``,
        ``margin_radius_arcsec``, ``provenance`` ...).

    Returns
    -------
    WriteResult
        The table written, the version committed, row and partition counts, and the stage timings.
    """
    hc, _ = open_hats(path)
    require_object_catalog(hc, path)
    base = local_path(hc.catalog_base_dir).resolve()
    snap = hats_snapshot(base)
    if snap.files.num_rows == 0:
        raise UserbatchError(f"HATS catalog {base} has no partitions; there is nothing to import")
    spark = spark or get_session()
    df = to_spark(spark, snap)
    df = df.drop(*[c for c in (*HIVE_COLUMNS, SPATIAL_INDEX_COLUMN) if c in df.columns])
    write_options.setdefault("ra_column", hc.catalog_info.ra_column)
    write_options.setdefault("dec_column", hc.catalog_info.dec_column)
    prov = write_options.pop("provenance", None) or Provenance(job="import_hats")
    prov.inputs.append({"path": str(base), "format": "hats", "catalog_name": hc.catalog_info.catalog_name,
                        "rows": snap.num_rows})
    prov.parameters.update({k: v for k, v in write_options.items() if v is not None and k != "location"})
    return write_table(df, name, catalog=catalog, provenance=prov, **write_options)


# ---------------------------------------------------------------- export

def _check_out_dir(out_dir: str | Path, entry: TableEntry) -> Path:
    out = Path(out_dir).expanduser().resolve()
    loc = Path(entry.location).expanduser().resolve()
    if out == loc or loc in out.parents:
        raise UserbatchError(
            f"cannot export {entry.name} to {out}: that is inside the table's own location {loc}; "
            "choose a directory outside it"
        )
    if out.exists():
        if not out.is_dir():
            raise UserbatchError(f"cannot export {entry.name} to {out}: it exists and is not a directory")
        if any(out.iterdir()):
            raise UserbatchError(
                f"cannot export {entry.name} to {out}: the directory is not empty; give a new or empty directory"
            )
    return out


def _files_by_pixel(snap: delta.Snapshot, what: str) -> dict[tuple[int, int], list[tuple[str, int]]]:
    groups: dict[tuple[int, int], list[tuple[str, int]]] = defaultdict(list)
    paths = snap.files.column("path").to_pylist()
    rows = snap.files.column("num_records").to_pylist()
    for p, n in zip(paths, rows):
        pix = path_pixel(p)
        if pix is None:
            raise UserbatchError(
                f"{what} is not HEALPix-partitioned (file {p} is not under Norder=/Dir=/Npix=); "
                "rewrite it with write_table(ra_column=..., dec_column=...) before exporting it as HATS"
            )
        groups[pix].append((p, int(n or 0)))
    # HATS partitions must not overlap: check the order-29 ranges of the pixels
    spans = sorted(pixel_to_index_range(order, pix)
                   for order, pix in groups)
    for (_, hi), (lo, _) in pairwise(spans):
        if lo < hi:
            raise UserbatchError(f"{what} has overlapping HEALPix partitions; it cannot be written as HATS")
    return groups


def _link_or_copy(src: Path, dest: Path) -> bool:
    try:
        os.link(src, dest)
        return True
    except OSError:
        shutil.copy2(src, dest)
        return False


def _write_pixel(sources: list[Path], dest: Path, schema: pa.Schema) -> str:
    """One file for one pixel: a hard link (or copy) of its only file, else its files merged in index order."""
    if len(sources) == 1 and pq.read_schema(sources[0]).remove_metadata().equals(schema):
        return "linked" if _link_or_copy(sources[0], dest) else "copied"
    table = pads.dataset([str(s) for s in sources], schema=schema, format="parquet").to_table()
    if SPATIAL_INDEX_COLUMN in table.column_names:
        order = pa.compute.sort_indices(table, sort_keys=[(SPATIAL_INDEX_COLUMN, "ascending")])
        table = table.take(order)  # sort_indices is stable: equal indices keep their order
    per_row = max(1, table.nbytes // max(table.num_rows, 1))
    pq.write_table(table, dest, row_group_size=max(1024, ROW_GROUP_BYTES // per_row))
    return "merged"


def _write_catalog(snap: delta.Snapshot, dest: Path, what: str, properties: dict) -> dict:
    """Write ``snap`` as one HATS catalog directory ``dest`` (data, partition_info, _metadata, properties)."""
    import hats
    from hats.catalog import PartitionInfo, TableProperties
    from hats.pixel_math import HealpixPixel

    groups = _files_by_pixel(snap, what)
    if not groups:
        raise UserbatchError(f"{what} has no rows; there is nothing to export")
    root = Path(snap.location)
    first = root / next(iter(groups.values()))[0][0]
    schema = pq.read_schema(first).remove_metadata()
    stats = defaultdict(int)
    max_rows = 0
    for (order, pix), files in sorted(groups.items()):
        target = dest / "dataset" / f"{pixel_directory(order, pix)}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        stats[_write_pixel([root / p for p, _ in files], target, schema)] += 1
        max_rows = max(max_rows, sum(n for _, n in files))
    PartitionInfo.from_healpix([HealpixPixel(o, p) for o, p in sorted(groups)]).write_to_file(catalog_path=dest)
    total = hats.io.write_parquet_metadata(dest)
    props = TableProperties(
        total_rows=int(total),
        healpix_column=SPATIAL_INDEX_COLUMN if SPATIAL_INDEX_COLUMN in schema.names else None,
        healpix_order=SPATIAL_INDEX_ORDER if SPATIAL_INDEX_COLUMN in schema.names else None,
        npix_suffix=".parquet",
        hats_max_rows=max_rows,
        **TableProperties.new_provenance_dict(dest, builder=f"userbatch v{_version()}", **properties),
    )
    props.to_properties_file(dest)
    log.info("%s -> %s: %d rows in %d partitions (%s)", what, dest, total, len(groups), dict(stats))
    return {"rows": int(total), "partitions": len(groups), **stats}


def _version() -> str:

    return __version__


def export_hats(
    name: str | TableEntry,
    out_dir: str | Path,
    *,
    version: int | None = None,
    catalog: Catalog | None = None,
    catalog_name: str | None = None,
    as_collection: bool = True,
    include_margin: bool = True,
) -> Path:
    """Write table ``name`` (latest, or Delta ``version``) as HATS at ``out_dir``; returns ``out_dir``.

    Layout, the same as ``lsdb``'s own ``write_catalog`` (a collection by default)::

        out_dir/collection.properties          primary = <catalog_name>, default margin = <catalog_name>_<r>arcs
        out_dir/<catalog_name>/                object catalog: hats.properties, partition_info.csv,
                                               dataset/_metadata, dataset/_common_metadata,
                                               dataset/Norder=K/Dir=D/Npix=P.parquet (one file per pixel)
        out_dir/<catalog_name>_<r>arcs/        margin catalog (only when the table has a margin cache)

    ``lsdb.open_catalog(out_dir)`` then opens the table with its margin attached (cross-matches near partition
    edges are complete up to ``r`` arcsec = the table's ``margin_radius_arcsec``). With ``as_collection=False``
    ``out_dir`` is the object catalog itself and the margin goes to ``<out_dir>_margin``:
    ``lsdb.open_catalog(out_dir, margin_cache=f"{out_dir}_margin")``.

    The margin exported is the margin cache version that was committed with the exported table version. Our
    margins hold every row of the margin-order pixels bordering a partition: a superset of the rows within ``r``
    of it, which is what HATS' ``hats_margin_threshold`` promises. ``catalog_name`` defaults to the table name
    with ``.`` replaced by ``_``. ``out_dir`` must not exist or be empty and must lie outside the table's
    location; the catalog is built in a hidden sibling directory and renamed into place, so a failed export
    leaves nothing behind. Pixel files are hard links to the table's files where a pixel has one file (a copy
    across filesystems), else the pixel's files merged and sorted by ``_healpix_29``.

    Parameters
    ----------
    name : str or TableEntry
        A catalog table name (``"dp1.object"``) or its entry; it must declare ra/dec columns.
    out_dir : str or pathlib.Path
        Where to write the HATS collection (or catalog); new or empty, outside the table's location.
    version : int, optional
        Delta version to export; by default the latest (in a facility run, the pinned one).
    catalog : Catalog, optional
        The catalog ``name`` is looked up in; by default ``Catalog()`` for the current user.
    catalog_name : str, optional
        The HATS catalog name (letters, digits, ``_``, ``.``, ``-``); by default the table name with ``.`` as ``_``.
    as_collection : bool
        Write a HATS collection (object catalog and margin side by side); else ``out_dir`` is the object catalog.
    include_margin : bool
        Export the table's margin cache too, when it has one.

    Returns
    -------
    pathlib.Path
        ``out_dir``, resolved to an absolute path.
    """
    from hats.catalog import CollectionProperties

    cat = catalog or Catalog()
    entry = name if isinstance(name, TableEntry) else cat.get(name)
    if not entry.spatial:
        raise UserbatchError(f"table {entry.name} declares no ra/dec columns, so it cannot be written as HATS")
    catalog_name = catalog_name or entry.name.replace(".", "_")
    if not _CATALOG_NAME.match(catalog_name):
        raise UserbatchError(
            f"catalog_name {catalog_name!r} must be letters, digits, '_', '.', '-' (it names a directory)",
            params=("catalog_name",))
    out = _check_out_dir(out_dir, entry)
    snap = resolve(entry, version=version)
    margin = None
    if include_margin and entry.format == "delta" and entry.margin_radius_arcsec:
        margin = margin_snapshot(entry, snap.version)
        if margin is not None and margin[0].files.num_rows == 0:
            margin = None
    margin_out = None if as_collection else Path(f"{out}_margin")
    if margin is not None and margin_out is not None:
        _check_out_dir(margin_out, entry)

    common = {"userbatch_table": entry.name, "userbatch_version": snap.version}
    if entry.description:
        common["obs_title"] = entry.description
    object_props = {"catalog_name": catalog_name, "catalog_type": "object", "ra_column": entry.ra_column,
                    "dec_column": entry.dec_column, **common}
    staging = out.parent / f".{out.name}.export-{uuid.uuid4().hex[:12]}"
    margin_staging = None
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if as_collection:
            _write_catalog(snap, staging / catalog_name, f"table {entry.name}@v{snap.version}", object_props)
            coll = {"obs_collection": catalog_name, "hats_primary_table_url": catalog_name}
            if margin is not None:
                margin_name = f"{catalog_name}_{margin[1]:g}arcs"
                _write_catalog(margin[0], staging / margin_name, f"margin of {entry.name}@v{snap.version}", {
                    "catalog_name": margin_name, "catalog_type": "margin", "ra_column": entry.ra_column,
                    "dec_column": entry.dec_column, "primary_catalog": catalog_name, "margin_threshold": margin[1],
                    **common})
                coll.update(all_margins=[margin_name], default_margin=margin_name)
            CollectionProperties(**coll).to_properties_file(staging)
        else:
            _write_catalog(snap, staging, f"table {entry.name}@v{snap.version}", object_props)
            if margin is not None:
                margin_staging = margin_out.parent / f".{margin_out.name}.export-{uuid.uuid4().hex[:12]}"
                _write_catalog(margin[0], margin_staging, f"margin of {entry.name}@v{snap.version}", {
                    "catalog_name": f"{catalog_name}_margin", "catalog_type": "margin",
                    "ra_column": entry.ra_column, "dec_column": entry.dec_column,
                    "primary_catalog": str(out), "margin_threshold": margin[1], **common})
        os.rename(staging, out)  # replaces an empty directory atomically
        if margin_staging is not None:
            os.rename(margin_staging, margin_out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if margin_staging is not None:
            shutil.rmtree(margin_staging, ignore_errors=True)
        raise
    log.info("exported %s@v%d as HATS at %s%s", entry.name, snap.version, out,
             " (with margin)" if margin is not None else "")
    return out
