"""Writing a Spark DataFrame as a catalog table: HEALPix partitioning, margins, the Delta commit, provenance.

Stages (each logged with its duration): validate -> index (order-29 index + coordinate check, one Arrow pass) ->
plan (row-count histogram -> hats alignment -> pixel-aligned tasks) -> write (Spark writes Parquet files under a
private staging directory) -> place (files moved to ``Norder=/Dir=/Npix=``) -> margin -> commit (delta-rs; the
only step that makes rows visible) -> catalog. A crash anywhere before the commit leaves the table as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import AccessDenied, BadCoordinates, ColumnNotFound, TableExists, TableNotFound, UserbatchError
from ..sky.healpix import SPATIAL_INDEX_COLUMN, SPATIAL_INDEX_ORDER, radec_to_index, valid_radec_mask
from ..sky.margins import assign_margins, margin_order, margin_pairs
from . import delta
from .catalog import Catalog, TableEntry
from .partitioning import (
    DEFAULT_HIGHEST_ORDER,
    DEFAULT_THRESHOLD,
    PartitionPlan,
    pack_tasks,
    plan_from_histogram,
)
from .placement import task_keys
from .provenance import Provenance
from .read import path_pixel, resolve, to_spark

log = logging.getLogger(__name__)

MODES = ("create", "append", "overwrite")
BAD_COORD_POLICIES = ("reject", "quarantine", "error")
#: Column holding why a row's coordinates were refused (only in quarantine tables).
COORD_ERROR_COLUMN = "_coord_error"
#: Partition columns: in the file paths (HATS layout), never inside the files.
PARTITION_COLUMNS = ("Norder", "Dir", "Npix")
_TASK_KEY = "_task_key"
#: Rows per write task; a partition is never split, so a task holds whole pixels.
ROWS_PER_TASK = int(os.environ.get("USERBATCH_ROWS_PER_TASK", 1_500_000))
#: Parquet row groups stay modest so a cone touches few of them.
ROW_GROUP_BYTES = 4 * 1024 * 1024


@dataclass
class WriteResult:
    table: str
    version: int
    rows: int
    partitions: int = 0
    rejected: int = 0
    quarantined: int = 0
    margin_rows: int | None = None
    margin_version: int | None = None
    timings_s: dict = field(default_factory=dict)


@contextmanager
def _stage(name: str, timings: dict):
    t0 = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - t0, 3)
    log.info("stage %-8s %.2f s", name, timings[name])


# ---------------------------------------------------------------- Arrow kernels run on the executors

def _coord_reason(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    reason = np.full(len(ra), None, dtype=object)
    with np.errstate(invalid="ignore"):
        reason[~((dec >= -90) & (dec <= 90))] = "dec out of range [-90, 90]"
        reason[~((ra >= 0) & (ra <= 360))] = "ra out of range [0, 360]"
    reason[~np.isfinite(dec)] = "dec is null or NaN"
    reason[~np.isfinite(ra)] = "ra is null or NaN"
    return reason


def _index_kernel(ra_col: str, dec_col: str):
    """Add ``_healpix_29`` (-1 for unusable coordinates) and the reason a row's coordinates are refused."""

    def run(batches):
        for batch in batches:
            ra = batch.column(ra_col).to_numpy(zero_copy_only=False).astype(np.float64)
            dec = batch.column(dec_col).to_numpy(zero_copy_only=False).astype(np.float64)
            valid = valid_radec_mask(ra, dec)
            index = np.full(len(ra), -1, dtype=np.int64)
            if valid.any():
                index[valid] = radec_to_index(ra[valid], dec[valid])
            reason = pa.array(_coord_reason(ra, dec) if not valid.all() else [None] * len(ra), pa.string())
            yield pa.RecordBatch.from_arrays(
                list(batch.columns) + [pa.array(index), reason],
                names=list(batch.schema.names) + [SPATIAL_INDEX_COLUMN, COORD_ERROR_COLUMN],
            )

    return run


def _partition_columns(orders: np.ndarray, pixels: np.ndarray, keys: np.ndarray, pos: np.ndarray) -> list[pa.Array]:
    return [
        pa.array(orders[pos].astype(np.int32)),
        pa.array(((pixels[pos] // 10_000) * 10_000).astype(np.int64)),
        pa.array(pixels[pos].astype(np.int64)),
        pa.array(keys[pos].astype(np.int32)),
    ]


def _assign_kernel(plan: PartitionPlan, part_keys: np.ndarray, columns: list[str]):
    """Tag each row with its partition (Norder, Dir, Npix) and the shuffle key of its task."""
    orders, pixels = plan.partitions[:, 0], plan.partitions[:, 1]

    def run(batches):
        for batch in batches:
            index = batch.column(SPATIAL_INDEX_COLUMN).to_numpy()
            pos = plan.lookup(index)
            if (pos < 0).any():  # cannot happen: the plan covers every indexed row it was built from
                raise RuntimeError("row outside every partition of the plan")
            cols = [batch.column(c) for c in columns]
            yield pa.RecordBatch.from_arrays(
                cols + _partition_columns(orders, pixels, part_keys, pos),
                names=columns + list(PARTITION_COLUMNS) + [_TASK_KEY],
            )

    return run


def _margin_kernel(plan: PartitionPlan, order: int, pairs, part_keys: np.ndarray, columns: list[str]):
    """Copy each row near a partition edge into the margin of every neighbouring partition it borders."""
    orders, pixels = plan.partitions[:, 0], plan.partitions[:, 1]

    def run(batches):
        for batch in batches:
            index = batch.column(SPATIAL_INDEX_COLUMN).to_numpy()
            rows, dest = assign_margins(index, order, pairs)
            if rows.size == 0:
                continue
            taken = batch.select(columns).take(pa.array(rows))
            yield pa.RecordBatch.from_arrays(
                list(taken.columns) + _partition_columns(orders, pixels, part_keys, dest),
                names=columns + list(PARTITION_COLUMNS) + [_TASK_KEY],
            )

    return run


# ---------------------------------------------------------------- driver side

def _spark_schema_with(df, extra: list[tuple[str, str]]):
    from pyspark.sql.types import StructField, StructType, _parse_datatype_string

    return StructType(list(df.schema.fields) + [StructField(n, _parse_datatype_string(t), True) for n, t in extra])


def _write_files(df, root: Path, partitioned: bool) -> tuple[list[str], pa.Schema | None]:
    """Let Spark write ``df`` under a private staging directory, then move the files into the table layout.

    Returns the files' paths relative to ``root`` and their Arrow schema. Nothing is visible until committed.
    """
    from pyspark.sql.pandas.types import to_arrow_schema

    staging = root / "_staging" / uuid.uuid4().hex
    writer = df.write.mode("error").option("parquet.block.size", str(ROW_GROUP_BYTES))
    if partitioned:
        writer = writer.partitionBy(*PARTITION_COLUMNS)
    writer.parquet(str(staging))
    rel_paths = []
    for path in sorted(staging.rglob("*.parquet")):
        rel = path.relative_to(staging)
        if any(part.startswith((".", "_")) for part in rel.parts):
            continue
        dest = root / (rel if partitioned else Path("data") / rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        rel_paths.append(str(dest.relative_to(root)))
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (root / "_staging").rmdir()
    except OSError:
        pass
    if rel_paths:
        schema = pq.read_schema(root / rel_paths[0])
    else:
        cols = [f for f in df.schema.fields if not (partitioned and f.name in PARTITION_COLUMNS)]
        from pyspark.sql.types import StructType

        schema = to_arrow_schema(StructType(cols))
    return rel_paths, schema.remove_metadata()


#: Fault injection for the crash test: when set to a file path, a write touches that file once its data files
#: are in place and then waits, so a test can kill the process at exactly the worst moment (before the commit).
FAULT_BEFORE_COMMIT_ENV = "USERBATCH_FAULT_BEFORE_COMMIT"


def _commit(location: Path, rel_paths, schema, mode, metadata, expected_version=None) -> int:
    marker = os.environ.get(FAULT_BEFORE_COMMIT_ENV)
    if marker:
        Path(marker).write_text(str(location))
        time.sleep(3600)
    exists = delta.is_delta_table(location)
    delta_mode = "create" if not exists else mode
    try:
        return delta.commit_files(location, rel_paths, schema, delta_mode, metadata, expected_version)
    except Exception as exc:
        delta.remove_uncommitted(location, rel_paths)
        if "schema" in str(exc).lower() and not isinstance(exc, UserbatchError):
            raise UserbatchError(f"the rows do not match the schema of the table at {location}: {exc}") from exc
        raise


def _histogram(indexed, order: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Non-empty pixels at ``order`` with their row counts (one aggregate job), and the number of rows with
    unusable coordinates (they carry index -1)."""
    from pyspark.sql import functions as F

    shift = 2 * (SPATIAL_INDEX_ORDER - order)
    rows = (
        indexed.select(F.shiftright(F.col(SPATIAL_INDEX_COLUMN), shift).alias("p"))
        .groupBy("p").count().collect()
    )
    pix = np.array([r["p"] for r in rows], dtype=np.int64)
    cnt = np.array([r["count"] for r in rows], dtype=np.int64)
    bad = int(cnt[pix < 0].sum())
    return pix[pix >= 0], cnt[pix >= 0], bad


def _existing_partitions(entry: TableEntry) -> np.ndarray:
    snap = resolve(entry)
    pixels = {path_pixel(p) for p in snap.files.column("path").to_pylist()} - {None}
    return np.array(sorted(pixels), dtype=np.int64).reshape(-1, 2)


def _prepare_entry(cat: Catalog, name: str, mode: str, options: dict) -> tuple[TableEntry, bool]:
    if mode not in MODES:
        raise UserbatchError(f"write mode {mode!r} is not one of {', '.join(MODES)}")
    if cat.exists(name):
        if mode == "create":
            raise TableExists(f"table {name} already exists; use mode 'append' or 'overwrite', or another name")
        entry = cat.get(name)
        if entry.owner != cat.user:
            raise AccessDenied(f"table {name} belongs to {entry.owner}; write your own table instead")
        if entry.format != "delta":
            raise UserbatchError(f"table {name} is {entry.format}; only delta tables take writes")
        return entry, False
    location = options.pop("location", None) or cat.default_location(name)
    if Path(location).exists() and any(Path(location).iterdir()):
        raise TableExists(f"the location {location} of new table {name} is not empty; drop or move what is there")
    entry = TableEntry(name=name, location=str(location), format="delta", **options)
    return cat.register(entry), True


def write_table(
    df,
    name: str,
    mode: str = "create",
    *,
    catalog: Catalog | None = None,
    ra_column: str | None = "coord_ra",
    dec_column: str | None = "coord_dec",
    partition_order: int | None = None,
    pixel_threshold: int | None = None,
    highest_order: int | None = None,
    margin_radius_arcsec: float | None = None,
    on_bad_coords: str = "reject",
    visibility: str = "public",
    group: str | None = None,
    description: str = "",
    properties: dict | None = None,
    location: str | None = None,
    provenance: Provenance | None = None,
) -> WriteResult:
    """Write ``df`` as table ``name`` (``create``, ``append`` or ``overwrite``) and commit it atomically.

    A spatial table (``ra_column``/``dec_column`` given) is HEALPix-partitioned: fixed ``partition_order``, or
    adaptive pixels of at most ``pixel_threshold`` rows. Rows whose coordinates are NaN or out of range are
    ``reject``-ed (dropped, counted, reported), ``quarantine``-d (kept in ``<name>_quarantine`` with the reason) or
    make the write fail (``error``). ``append`` and ``overwrite`` use the layout the table was created with.
    """
    timings: dict = {}
    cat = catalog or Catalog()
    if on_bad_coords not in BAD_COORD_POLICIES:
        raise UserbatchError(f"on_bad_coords must be one of {', '.join(BAD_COORD_POLICIES)}")
    with _stage("validate", timings):
        options = dict(
            ra_column=ra_column, dec_column=dec_column, partition_order=partition_order,
            pixel_threshold=pixel_threshold, highest_order=highest_order,
            margin_radius_arcsec=margin_radius_arcsec, visibility=visibility, group=group,
            description=description, properties=properties or {}, location=location,
        )
        entry, created = _prepare_entry(cat, name, mode, options)
        missing = [c for c in (entry.ra_column, entry.dec_column) if c and c not in df.columns]
        if missing:
            if created:
                cat.drop(name)
            raise ColumnNotFound(
                f"{name}: spatial column(s) {', '.join(missing)} not in the data (columns: {', '.join(df.columns)});"
                " name the right ones with ra_column/dec_column"
            )
    try:
        prov = provenance or Provenance()
        if entry.spatial:
            result = _write_spatial(df, entry, mode, created, prov, on_bad_coords, cat, timings)
        else:
            with _stage("write", timings):
                data = df.drop(*[c for c in PARTITION_COLUMNS if c in df.columns])
                rel, schema = _write_files(data, Path(entry.location), partitioned=False)
            with _stage("commit", timings):
                version = _commit(Path(entry.location), rel, schema, mode, {**prov.as_dict()})
            rows = resolve(entry).num_rows
            result = WriteResult(entry.name, version, rows)
    except BaseException:
        if created and not delta.is_delta_table(entry.location):
            cat.drop(name)
        raise
    result.timings_s = timings
    _refresh_view(entry)
    return result


def _write_spatial(df, entry: TableEntry, mode, created, prov: Provenance, on_bad, cat, timings) -> WriteResult:
    from pyspark import StorageLevel

    spark = df.sparkSession
    root = Path(entry.location)
    src = df.drop(*[c for c in (SPATIAL_INDEX_COLUMN, COORD_ERROR_COLUMN, *PARTITION_COLUMNS) if c in df.columns])
    columns = src.columns + [SPATIAL_INDEX_COLUMN]
    with _stage("index", timings):
        schema = _spark_schema_with(src, [(SPATIAL_INDEX_COLUMN, "bigint"), (COORD_ERROR_COLUMN, "string")])
        indexed = src.mapInArrow(_index_kernel(entry.ra_column, entry.dec_column), schema)
        indexed = indexed.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with _stage("plan", timings):
            existing = _existing_partitions(entry) if (mode == "append" and not created) else None
            if existing is not None and len(existing) == 0:
                existing = None
            hist_order = entry.partition_order if entry.partition_order is not None else (
                entry.highest_order or DEFAULT_HIGHEST_ORDER)
            if existing is not None:
                hist_order = max(hist_order, int(existing[:, 0].max()))
            hist_pixels, hist_counts, bad = _histogram(indexed, hist_order)
            if bad and on_bad == "error":
                raise BadCoordinates(f"{bad} row(s) have NaN or out-of-range {entry.ra_column}/{entry.dec_column}; "
                                     "fix them, or write with on_bad_coords='reject' or 'quarantine'")
            plan = plan_from_histogram(
                hist_pixels, hist_counts, hist_order, partition_order=entry.partition_order,
                threshold=entry.pixel_threshold or DEFAULT_THRESHOLD, existing=existing,
            )
            counts = plan.counts if plan.counts is not None else np.ones(len(plan), dtype=np.int64)
            parallelism = spark.sparkContext.defaultParallelism
            task_of_part = pack_tasks(counts, ROWS_PER_TASK, max_tasks=max(len(plan), 1))
            n_tasks = max(int(task_of_part.max()) + 1 if len(task_of_part) else 1, min(parallelism, len(plan) or 1))
            if len(task_of_part) and n_tasks > int(task_of_part.max()) + 1:
                task_of_part = pack_tasks(counts, max(1, int(counts.sum()) // n_tasks), max_tasks=n_tasks)
                n_tasks = int(task_of_part.max()) + 1
            keys = task_keys(n_tasks)[task_of_part] if len(plan) else np.zeros(0, np.int32)
        quarantined = 0
        if bad and on_bad == "quarantine":
            with _stage("quarantine", timings):
                from pyspark.sql import functions as F

                bad_rows = indexed.filter(F.col(SPATIAL_INDEX_COLUMN) < 0).drop(SPATIAL_INDEX_COLUMN)
                q_name = f"{entry.name}_quarantine"
                q_mode = "append" if cat.exists(q_name) else "create"
                write_table(bad_rows, q_name, q_mode, catalog=cat, ra_column=None, dec_column=None,
                            visibility=entry.visibility, group=entry.group,
                            description=f"rows refused by {entry.name} for unusable coordinates",
                            provenance=prov)
                quarantined = bad
        elif bad:
            log.warning("%s: rejected %d row(s) with NaN or out-of-range coordinates", entry.name, bad)
        from pyspark.sql import functions as F

        good = indexed.filter(F.col(SPATIAL_INDEX_COLUMN) >= 0)
        assigned_schema = _spark_schema_with(
            src, [(SPATIAL_INDEX_COLUMN, "bigint"), ("Norder", "int"), ("Dir", "bigint"), ("Npix", "bigint"),
                  (_TASK_KEY, "int")])
        with _stage("write", timings):
            assigned = good.mapInArrow(_assign_kernel(plan, keys, columns), assigned_schema)
            out = (
                assigned.repartition(n_tasks, _TASK_KEY).drop(_TASK_KEY)
                .sortWithinPartitions(*PARTITION_COLUMNS, SPATIAL_INDEX_COLUMN)
            )
            rel, arrow_schema = _write_files(out, root, partitioned=True)
        metadata = {**prov.as_dict(), "rejected": bad if on_bad == "reject" else 0, "quarantined": quarantined,
                    "partitions": len(plan)}
        margin_rows = margin_version = None
        if entry.margin_radius_arcsec:
            with _stage("margin", timings):
                additive = existing is not None and set(map(tuple, existing)) == set(map(tuple, plan.partitions))
                source = good.select(*columns)
                if existing is not None and not additive:  # new pixels: their margins need the old rows too
                    source = source.unionByName(to_spark(spark, resolve(entry)).select(*columns))
                margin_mode = "append" if additive else "overwrite"
                margin_rows, margin_version = _write_margin(source, entry, plan, keys, n_tasks, margin_mode,
                                                            columns, assigned_schema, prov)
                metadata["margin"] = {"version": margin_version, "radius_arcsec": entry.margin_radius_arcsec,
                                      "rows": margin_rows}
        with _stage("commit", timings):
            version = _commit(root, rel, arrow_schema, mode, metadata)
        rows = sum(pq.read_metadata(root / p).num_rows for p in rel)
        return WriteResult(entry.name, version, rows, len(plan), bad if on_bad == "reject" else 0, quarantined,
                           margin_rows, margin_version)
    finally:
        indexed.unpersist()


def _write_margin(source, entry, plan, keys, n_tasks, mode, columns, schema, prov) -> tuple[int, int]:
    order = margin_order(entry.margin_radius_arcsec, plan.partitions[:, 0])
    pairs = margin_pairs(plan.partitions, order)
    root = Path(entry.margin_location)
    margin = (
        source.mapInArrow(_margin_kernel(plan, order, pairs, keys, columns), schema)
        .repartition(n_tasks, _TASK_KEY).drop(_TASK_KEY)
        .sortWithinPartitions(*PARTITION_COLUMNS, SPATIAL_INDEX_COLUMN)
    )
    rel, arrow_schema = _write_files(margin, root, partitioned=True)
    meta = {**prov.as_dict(), "margin_of": entry.name, "margin_order": order,
            "radius_arcsec": entry.margin_radius_arcsec}
    version = _commit(root, rel, arrow_schema, mode, meta)
    rows = sum(pq.read_metadata(root / p).num_rows for p in rel)
    return rows, version


def _refresh_view(entry: TableEntry) -> None:
    """Keep the SQL view of a running session pointing at the version just written."""
    from ..spark import active_session

    spark = active_session()
    if spark is None:
        return
    from .views import register_view

    try:
        register_view(spark, entry)
    except UserbatchError as exc:  # the write itself succeeded; a stale view is only logged
        log.warning("could not refresh view %s: %s", entry.name, exc)
