"""Writing rows as a catalog table: HEALPix partitioning, margins, the Delta commit, provenance.

A Spark DataFrame is written by Spark; rows already in memory (Arrow, pandas) by pyarrow in this process, with the
same plan, layout and commit (:mod:`.write_arrow`).

Stages (each logged with its duration): validate -> plan (one pass over the coordinates: row-count histogram and
bad-coordinate count -> hats alignment -> partitions packed into tasks) -> [quarantine] -> write (one pass over the
rows: order-29 index, partition, margin copies, one shuffle; Spark writes Parquet under a private staging
directory, then the files move to ``Norder=/Dir=/Npix=`` of the table or of its margin) -> margin (its commit) ->
commit (delta-rs; the only step that makes rows visible). A crash anywhere before the commit leaves the table as
it was.
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
import pandas as pd  # module level: the pandas UDF's type hints are resolved against it
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import settings
from ..engine import active_session, default_parallelism
from ..errors import AccessDenied, BadCoordinates, ColumnNotFound, SchemaMismatch, TableExists, UserbatchError
from ..sky.healpix import (
    HATS_DIR_STEP,
    SPATIAL_INDEX_COLUMN,
    SPATIAL_INDEX_ORDER,
    count_pixels,
    hats_dir,
    radec_to_index,
    valid_radec_mask,
)
from ..sky.margins import margin_order, margin_pairs
from . import delta, runctx
from .catalog import Catalog, TableEntry
from .info import partitions_of
from .partitioning import (
    DEFAULT_HIGHEST_ORDER,
    DEFAULT_THRESHOLD,
    MAX_PARTITION_ORDER,
    PartitionPlan,
    pack_tasks,
    plan_from_histogram,
)
from .placement import task_keys
from .provenance import Provenance
from . import write_arrow
from .read import path_pixel, resolve, to_spark
from .views import register_view

log = logging.getLogger(__name__)

MODES = ("create", "append", "overwrite")
BAD_COORD_POLICIES = ("reject", "quarantine", "error")
#: Column holding why a row's coordinates were refused (only in quarantine tables).
COORD_ERROR_COLUMN = "_coord_error"
#: Partition columns: in the file paths (HATS layout), never inside the files.
PARTITION_COLUMNS = ("Norder", "Dir", "Npix")
_TASK_KEY = "_task_key"
#: Partition column that sends a row to the margin table instead of the main one (never inside a file).
MARGIN_FLAG = "ub_margin"
# Sizes (settings().tuning): rows_per_task — rows per write task (a partition is never split, so a task holds
# whole pixels); driver_histogram_max_rows — up to this many input rows, ingest counts pixels on the driver with
# pyarrow (two columns, a few seconds for 10M rows) instead of a Spark pass whose Python workers cost more than the
# counting; beyond it, Spark.
#: Parquet row groups stay modest so a cone touches few of them (one size for both writers).
ROW_GROUP_BYTES = write_arrow.ROW_GROUP_BYTES


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


# ---------------------------------------------------------------- expressions and kernels run on the executors
#
# Only the coordinates cross into Python (a pandas UDF on two columns); partition assignment is a Spark SQL
# expression; only rows that can be margin rows go through the margin kernel. Shipping whole rows to Python and
# back costs more than everything else in a write.

def _index_udf():
    """pandas UDF: order-29 index of (ra, dec) in degrees, -1 where the coordinates are unusable."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("long")
    def healpix29(ra: pd.Series, dec: pd.Series) -> pd.Series:
        ra_a = ra.to_numpy(dtype=np.float64, na_value=np.nan)
        dec_a = dec.to_numpy(dtype=np.float64, na_value=np.nan)
        valid = valid_radec_mask(ra_a, dec_a)
        out = np.full(len(ra_a), -1, dtype=np.int64)
        if valid.any():
            out[valid] = radec_to_index(ra_a[valid], dec_a[valid])
        return pd.Series(out)

    # "non-deterministic" only to stop the optimizer from copying the UDF into both the filter on its result and
    # the projections after it, which would run it twice per row
    return healpix29.asNondeterministic()


def _with_index(df, ra_col: str, dec_col: str):
    from pyspark.sql import functions as F

    index = _index_udf()(F.col(ra_col).cast("double"), F.col(dec_col).cast("double"))
    return df.withColumn(SPATIAL_INDEX_COLUMN, index)


def _coord_error(ra_col: str, dec_col: str):
    """Why a row's coordinates are refused (null when they are fine); same rule as ``valid_radec_mask``."""
    from pyspark.sql import functions as F

    def bad(c):
        return c.isNull() | F.isnan(c) | (F.abs(c) == float("inf"))

    ra, dec = F.col(ra_col).cast("double"), F.col(dec_col).cast("double")
    return (F.when(bad(ra), "ra is null, NaN or infinite").when(bad(dec), "dec is null, NaN or infinite")
            .when((ra < 0) | (ra > 360), "ra out of range [0, 360]")
            .when((dec < -90) | (dec > 90), "dec out of range [-90, 90]"))


def _assign_columns(plan: PartitionPlan, part_keys: np.ndarray, task_of_part: np.ndarray) -> dict:
    """Norder, Npix, Dir and the shuffle key as Spark expressions of ``_healpix_29`` (a CASE over the few partition
    orders, each an InSet lookup), so assignment never leaves the JVM."""
    from pyspark.sql import functions as F

    idx = F.col(SPATIAL_INDEX_COLUMN)
    orders, pixels = plan.partitions[:, 0], plan.partitions[:, 1]
    norder = None
    for order in np.unique(orders):
        cond = F.shiftright(idx, int(2 * (SPATIAL_INDEX_ORDER - order))).isin([int(p) for p in pixels[orders == order]])
        norder = F.when(cond, F.lit(int(order))) if norder is None else norder.when(cond, F.lit(int(order)))
    norder = norder.otherwise(F.raise_error(F.lit(
        "a row falls outside every partition planned from the same input: the input changed between its two "
        "reads (a non-deterministic DataFrame?); cache it before writing")))
    npix = F.expr(f"shiftright({SPATIAL_INDEX_COLUMN}, {2 * SPATIAL_INDEX_ORDER} - 2 * Norder)")
    start = F.expr(f"shiftleft(Npix, {2 * SPATIAL_INDEX_ORDER} - 2 * Norder)")
    starts = plan.starts
    key = None
    for task in np.unique(task_of_part):
        cond = start.isin([int(x) for x in starts[task_of_part == task]])
        value = F.lit(int(part_keys[task_of_part == task][0]))
        key = F.when(cond, value) if key is None else key.when(cond, value)
    # applied in this order: each expression reads the columns added before it
    return {"Norder": norder.cast("int"), "Npix": npix, "Dir": F.expr(f"Npix - Npix % {HATS_DIR_STEP}"), _TASK_KEY: key}


def _margin_destinations(spark, plan: PartitionPlan, part_keys: np.ndarray, order: int):
    """A small DataFrame (broadcast in joins): for each margin-order pixel bordering some partition, the
    partitions whose margin it belongs to, as an array of (Norder, Dir, Npix, task key)."""
    from pyspark.sql.types import ArrayType, IntegerType, LongType, StructField, StructType

    mpix, dest = margin_pairs(plan.partitions, order)
    orders, pixels = plan.partitions[:, 0], plan.partitions[:, 1]
    starts = np.flatnonzero(np.r_[True, mpix[1:] != mpix[:-1]])
    struct = pa.StructArray.from_arrays(
        [pa.array(orders[dest].astype(np.int32)), pa.array(hats_dir(pixels[dest]).astype(np.int64)),
         pa.array(pixels[dest].astype(np.int64)), pa.array(part_keys[dest].astype(np.int32))],
        names=["Norder", "Dir", "Npix", _TASK_KEY],
    )
    offsets = pa.array(np.r_[starts, len(mpix)].astype(np.int32))
    table = pa.table({"_mpix": pa.array(mpix[starts]), "_dests": pa.ListArray.from_arrays(offsets, struct)})
    schema = StructType([
        StructField("_mpix", LongType()),
        StructField("_dests", ArrayType(StructType([
            StructField("Norder", IntegerType()), StructField("Dir", LongType()), StructField("Npix", LongType()),
            StructField(_TASK_KEY, IntegerType())]))),
    ])
    return spark.createDataFrame(table.to_pandas(), schema)


def _with_margin_copies(rows, dests, order: int, columns: list[str], keep_own: bool):
    """Each row once for its own partition (``keep_own``) plus once per neighbouring partition whose margin it
    belongs to — one broadcast join and an explode, so the input is scanned once for table and margin together."""
    from pyspark.sql import functions as F

    joined = (
        rows.withColumn("_mpix", F.shiftright(SPATIAL_INDEX_COLUMN, 2 * (SPATIAL_INDEX_ORDER - order)))
        .join(F.broadcast(dests), "_mpix", "left" if keep_own else "inner").drop("_mpix")
    )
    copies = F.transform("_dests", lambda d: F.struct(
        d["Norder"].alias("Norder"), d["Dir"].alias("Dir"), d["Npix"].alias("Npix"),
        d[_TASK_KEY].alias(_TASK_KEY), F.lit(True).alias(MARGIN_FLAG)))
    if keep_own:
        own = F.struct("Norder", "Dir", "Npix", _TASK_KEY, F.lit(False).alias(MARGIN_FLAG))
        targets = F.when(F.col("_dests").isNull(), F.array(own)).otherwise(F.concat(F.array(own), copies))
    else:
        targets = copies
    return joined.select(*columns, F.explode(targets).alias("_d")).select(*columns, "_d.*")


# ---------------------------------------------------------------- driver side

@contextmanager
def _sql_conf(spark, settings: dict):
    """Set SQL confs for one write and put the previous values back."""
    old = {k: spark.conf.get(k, None) for k in settings}
    for k, v in settings.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


def _write_files(df, root: Path, partitioned: bool, margin_root: Path | None = None, max_open_files: int = 0):
    """Let Spark write ``df`` under a private staging directory, then move the files into the table layout.

    Partitioned writes split by ``Norder/Dir/Npix`` (and, with ``margin_root``, by the margin flag: those files go
    to the margin table). The rows arrive sorted by ``_healpix_29`` only, which keeps each pixel contiguous; with
    ``max_open_files`` > 0 Spark's concurrent writers take them in that order instead of re-sorting every row by
    four keys with a useless sort prefix. Returns the files relative to ``root`` (and to ``margin_root``) and
    their Arrow schema. Nothing is visible until committed.
    """
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import StructType

    spark = df.sparkSession
    staging = root / "_staging" / uuid.uuid4().hex
    by = ([MARGIN_FLAG] if margin_root else []) + list(PARTITION_COLUMNS)
    writer = df.write.mode("error").option("parquet.block.size", str(ROW_GROUP_BYTES))
    # dictionary encoding only pays on strings (bands, flags); on float columns it is tried and abandoned per page
    writer = writer.option("parquet.enable.dictionary", "false")
    for f in df.schema.fields:
        if f.dataType.typeName() == "string":
            writer = writer.option(f"parquet.enable.dictionary#{f.name}", "true")
    if partitioned:
        writer = writer.partitionBy(*by)
    confs = {"spark.sql.maxConcurrentOutputFileWriters": str(max_open_files),
             "spark.sql.optimizer.plannedWrite.enabled": "false"} if max_open_files else {}
    with _sql_conf(spark, confs):
        writer.parquet(str(staging))
    moved: dict[Path, list[str]] = {root: [], margin_root: []}
    for path in sorted(staging.rglob("*.parquet")):
        rel = path.relative_to(staging)
        if any(part.startswith((".", "_")) for part in rel.parts):
            continue
        target = root
        if margin_root is not None:
            target = margin_root if rel.parts[0] == f"{MARGIN_FLAG}=true" else root
            rel = Path(*rel.parts[1:])
        dest = target / (rel if partitioned else Path("data") / rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        moved[target].append(str(dest.relative_to(target)))
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (root / "_staging").rmdir()
    except OSError:
        pass
    first = next((t / p[0] for t, p in moved.items() if t is not None and p), None)
    if first is not None:
        schema = pq.read_schema(first)
    else:
        schema = to_arrow_schema(StructType([f for f in df.schema.fields if not (partitioned and f.name in by)]))
    return moved[root], moved[margin_root], schema.remove_metadata()


#: Test hook: callables run with the table's location once a write's data files are in place, just before its
#: commit — the crash test installs one that signals and waits, then kills the process at exactly that moment.
#: Empty in production: nothing here reads the environment or sleeps.
before_commit_hooks: list = []


def _commit(location: Path, rel_paths, schema, mode, metadata, expected_version=None, merge_schema=False) -> int:
    for hook in before_commit_hooks:
        hook(location)
    exists = delta.is_delta_table(location)
    delta_mode = "create" if not exists else mode
    try:
        return delta.commit_files(location, rel_paths, schema, delta_mode, metadata, expected_version,
                                  merge_schema=merge_schema and delta_mode == "append")
    except Exception as exc:
        delta.remove_uncommitted(location, rel_paths)
        if "schema" in str(exc).lower() and not isinstance(exc, UserbatchError):
            raise UserbatchError(f"the rows do not match the schema of the table at {location}: {exc}") from exc
        raise


def _histogram(src, ra_col: str, dec_col: str, order: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Non-empty pixels at ``order`` with their row counts, and the number of rows with unusable coordinates.

    Only the two coordinate columns are read; each Arrow batch is reduced to (pixel, count) pairs in Python, so
    what comes back to the JVM is a partial histogram, not a value per row.
    """
    from pyspark.sql import functions as F

    def partial(batches):
        for batch in batches:
            pix, cnt = count_pixels(batch.column(0).to_numpy(zero_copy_only=False),
                                    batch.column(1).to_numpy(zero_copy_only=False), order)
            yield pa.RecordBatch.from_arrays([pa.array(pix), pa.array(cnt)], names=["p", "n"])

    coords = src.select(F.col(ra_col).cast("double"), F.col(dec_col).cast("double"))
    rows = coords.mapInArrow(partial, "p long, n long").groupBy("p").agg(F.sum("n").alias("n")).collect()
    pix = np.array([r["p"] for r in rows], dtype=np.int64)
    cnt = np.array([r["n"] for r in rows], dtype=np.int64)
    bad = int(cnt[pix < 0].sum())
    return pix[pix >= 0], cnt[pix >= 0], bad


def _histogram_from_files(paths: list[str], ra_col: str, dec_col: str, order: int):
    """The same histogram as :func:`_histogram`, read on the driver with pyarrow from Parquet files that hold
    exactly the rows being written: only the two coordinate columns, streamed in batches (memory stays flat),
    no Spark job. Used by ingest for inputs up to ``settings().tuning.driver_histogram_max_rows``."""
    import pyarrow.dataset as pads

    pix_parts, cnt_parts = [], []
    for batch in pads.dataset(paths, format="parquet").to_batches(columns=[ra_col, dec_col], batch_size=1 << 20):
        pix, cnt = count_pixels(batch.column(0).to_numpy(zero_copy_only=False),
                                batch.column(1).to_numpy(zero_copy_only=False), order)
        pix_parts.append(pix)
        cnt_parts.append(cnt)
    if not pix_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    pix, inverse = np.unique(np.concatenate(pix_parts), return_inverse=True)
    cnt = np.bincount(inverse.ravel(), weights=np.concatenate(cnt_parts)).astype(np.int64)
    bad = int(cnt[pix < 0].sum())
    return pix[pix >= 0], cnt[pix >= 0], bad


def _use_driver_histogram(paths: list[str] | None) -> bool:
    if not paths:
        return False
    rows = sum(pq.read_metadata(p).num_rows for p in paths)
    return rows <= settings().tuning.driver_histogram_max_rows


def _prepare_entry(cat: Catalog, name: str, mode: str, options: dict) -> tuple[TableEntry, bool]:
    if mode not in MODES:
        raise UserbatchError(f"write mode {mode!r} is not one of {', '.join(MODES)}")
    if cat.exists(name):
        if mode == "create":
            raise TableExists(f"table {name} already exists; use mode 'append' or 'overwrite', or another name")
        entry = cat.get(name)
        shared = entry.visibility == "group" and entry.group in cat.groups or \
            entry.namespace in {f"g_{g}" for g in cat.groups}
        if entry.owner != cat.user and not shared:
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
    visibility: str | None = None,
    group: str | None = None,
    description: str = "",
    properties: dict | None = None,
    location: str | None = None,
    provenance: Provenance | None = None,
    source_files: list[str] | None = None,
    partitions: np.ndarray | None = None,
    merge_schema: bool = False,
) -> WriteResult:
    """Write ``df`` as table ``name`` (``create``, ``append`` or ``overwrite``) and commit it atomically.

    A spatial table (``ra_column``/``dec_column`` given) is HEALPix-partitioned: fixed ``partition_order``, or
    adaptive pixels of at most ``pixel_threshold`` rows. Rows whose coordinates are NaN or out of range are
    ``reject``-ed (dropped, counted, reported), ``quarantine``-d (kept in ``<name>_quarantine`` with the reason) or
    make the write fail (``error``). ``append`` and ``overwrite`` use the layout the table was created with.
    ``source_files``: Parquet files holding exactly the rows of ``df`` (as ingest knows them); the partition plan
    then counts pixels from their coordinate columns without a Spark pass. ``partitions``: (order, pixel) pairs
    to use as they are, whatever their row counts (a director table's layout, so children land with their parent).
    ``visibility`` (public, group, private) of a new table: by default private inside a facility run (a run's
    outputs are shared only when it says so), public outside one.

    Parameters
    ----------
    df : pyspark.sql.DataFrame, pyarrow.Table or pandas.DataFrame
        The rows to write. A Spark DataFrame is read twice (cache it if it is not deterministic); rows in memory
        (Arrow or pandas) are written by this process with pyarrow, without the JVM (:mod:`.write_arrow`).
    name : str
        The table to write, ``namespace.table`` (inside a facility run, a rerun may redirect it).
    mode : {"create", "append", "overwrite"}
        Make a new table, add rows to an existing one, or replace its rows.
    catalog : Catalog, optional
        The catalog to register the table in; by default ``Catalog()`` for the current user.
    ra_column : str or None
        RA column (degrees) of a new table; None, with ``dec_column`` None, for a non-spatial table.
    dec_column : str or None
        Dec column (degrees) of a new table; None, with ``ra_column`` None, for a non-spatial table.
    partition_order : int, optional
        One fixed HEALPix order for every partition of a new table; by default partitions adapt to the data.
    pixel_threshold : int, optional
        Most rows in an adaptive partition of a new table; by default 1,000,000.
    highest_order : int, optional
        Finest order an adaptive partition of a new table may reach; by default 9.
    margin_radius_arcsec : float, optional
        Radius of the margin cache kept beside a new table (rows near each partition, for cross-matches); by
        default no margin.
    on_bad_coords : {"reject", "quarantine", "error"}
        What happens to rows whose coordinates are null, NaN or out of range.
    visibility : {"public", "group", "private"}, optional
        Who may read a new table; by default private in a facility run, public outside one.
    group : str, optional
        The group that may read a new table; required with ``visibility="group"``.
    description : str
        Free text stored with a new table's entry.
    properties : dict, optional
        Open-ended properties of a new table (director parent, id column, time column ...).
    location : str, optional
        Directory of a new table; by default ``<warehouse>/<namespace>/<table>``. It must be new or empty.
    provenance : Provenance, optional
        Provenance committed with the rows; by default a new one (job, run, user and code version, no inputs).
    source_files : list of str, optional
        Parquet files holding exactly the rows of ``df``, so pixels are counted without a Spark pass.
    partitions : numpy.ndarray, optional
        (order, pixel) pairs, shape (n, 2), to use as partitions whatever their row counts.
    merge_schema : bool
        With ``append``: columns the table does not have yet are added (nullable; older rows read them as null),
        and columns the rows lack read as null; a column whose type differs is refused
        (:class:`~userbatch.errors.SchemaMismatch`). The columns added are recorded in the commit's provenance.

    Returns
    -------
    WriteResult
        The table written, the version committed, row and partition counts, rows rejected or quarantined, the
        margin's rows and version, and the stage timings.
    """
    timings: dict = {}
    df = _arrow_or_spark(df)
    if on_bad_coords not in BAD_COORD_POLICIES:
        raise UserbatchError(f"on_bad_coords must be one of {', '.join(BAD_COORD_POLICIES)}",
                             params=("on_bad_coords",))
    _check_layout_options(partition_order, highest_order, pixel_threshold, margin_radius_arcsec)
    options = dict(
        ra_column=ra_column, dec_column=dec_column, partition_order=partition_order,
        pixel_threshold=pixel_threshold, highest_order=highest_order,
        margin_radius_arcsec=margin_radius_arcsec, visibility=visibility, group=group,
        description=description, properties=properties or {}, location=location,
    )
    name, cat, entry, created = _open_write(name, mode, catalog, options, timings)
    with _stage("validate", timings):
        names = df.column_names if isinstance(df, pa.Table) else df.columns
        missing = [c for c in (entry.ra_column, entry.dec_column) if c and c not in names]
        if missing and not created:
            raise ColumnNotFound(
                f"{name} keeps its positions in {entry.ra_column}/{entry.dec_column}, but the rows have no "
                f"{', '.join(missing)} (columns: {', '.join(names)}); give the rows those column names"
            )
        if missing:
            cat.drop(name)
            raise ColumnNotFound(
                f"{name}: spatial column(s) {', '.join(missing)} not in the data (columns: {', '.join(names)});"
                " name the right ones with ra_column/dec_column", params=("ra_column", "dec_column")
            )
        if mode == "append" and not created:
            _check_append_columns(entry, df, merge_schema)
    try:
        prov = provenance or Provenance()
        if entry.spatial and isinstance(df, pa.Table):
            result = _write_spatial_arrow(df, entry, mode, created, prov, on_bad_coords, cat, timings, partitions,
                                          merge_schema=merge_schema)
        elif entry.spatial:
            result = _write_spatial(df, entry, mode, created, prov, on_bad_coords, cat, timings, source_files,
                                    partitions, merge_schema=merge_schema)
        else:
            with _stage("write", timings):
                if isinstance(df, pa.Table):
                    data = df.drop_columns([c for c in PARTITION_COLUMNS if c in df.column_names])
                    rel, schema = write_arrow.write_plain(data, Path(entry.location)), data.schema
                else:
                    data = df.drop(*[c for c in PARTITION_COLUMNS if c in df.columns])
                    rel, _, schema = _write_files(data, Path(entry.location), partitioned=False)
            with _stage("commit", timings):
                version = _commit(Path(entry.location), rel, schema, mode, {**prov.as_dict()},
                                  merge_schema=merge_schema)
            rows = resolve(entry, record=False).num_rows
            result = WriteResult(entry.name, version, rows)
    except BaseException:
        if created and not delta.is_delta_table(entry.location):
            cat.drop(name)
        raise
    return _close_write(result, entry, timings)


def _check_append_columns(entry: TableEntry, df, merge_schema: bool) -> None:
    """Refuse, before anything is written, an append whose columns are not the table's — or, with
    ``merge_schema``, whose shared columns change type (the commit checks again, against the stored schema)."""
    if not delta.is_delta_table(entry.location):
        return
    derived = {SPATIAL_INDEX_COLUMN, *PARTITION_COLUMNS}
    table_schema = pa.schema(delta.open_table(entry.location).schema().to_arrow())
    if isinstance(df, pa.Table):
        rows_schema = df.schema
    else:
        from pyspark.sql.pandas.types import to_arrow_schema

        try:
            rows_schema = to_arrow_schema(df.schema)
        except Exception:  # a Spark type Arrow cannot hold: the commit's own check decides
            rows_schema = pa.schema([pa.field(c, pa.null()) for c in df.columns])
    have = [f.name for f in table_schema if f.name not in derived]
    given = [f.name for f in rows_schema if f.name not in derived]
    missing, extra = [c for c in have if c not in given], [c for c in given if c not in have]
    if (missing or extra) and not merge_schema:
        raise SchemaMismatch(
            f"the rows do not match the columns of {entry.name}: missing {', '.join(missing) or 'none'}, "
            f"new {', '.join(extra) or 'none'}; append with merge_schema=True (--merge-schema) to add the new "
            "columns (missing ones read as null), or overwrite the table"
        )
    changed = []
    for f in rows_schema:
        if f.name in derived or f.name not in table_schema.names or pa.types.is_null(f.type):
            continue
        want = table_schema.field(f.name).type
        try:
            same = delta.same_delta_type(f.type, want)
        except Exception:  # no Delta type for it: the commit's own check decides
            continue
        if not same:
            changed.append(f"{f.name} ({want} in the table, {f.type} in the rows)")
    if changed:
        raise SchemaMismatch(
            f"the rows change the type of column(s) {', '.join(changed)} of {entry.name}; cast them to the "
            "table's types (a schema merge only adds columns), or overwrite the table to change them"
        )


def _check_layout_options(partition_order, highest_order, pixel_threshold, margin_radius_arcsec) -> None:
    """Refuse partitioning and margin options that cannot work, before anything is read or registered; each
    message names its parameter."""
    for param, value in (("partition_order", partition_order), ("highest_order", highest_order)):
        if value is not None and not 0 <= value <= MAX_PARTITION_ORDER:
            raise UserbatchError(f"{param} must be a HEALPix order in 0..{MAX_PARTITION_ORDER}; got {value}",
                                 params=(param,))
    if pixel_threshold is not None and pixel_threshold < 1:
        raise UserbatchError(f"pixel_threshold must be at least 1 row per partition; got {pixel_threshold}",
                             params=("pixel_threshold",))
    if margin_radius_arcsec is not None and not (np.isfinite(margin_radius_arcsec) and margin_radius_arcsec >= 0):
        raise BadCoordinates(f"margin_radius_arcsec must be a finite number of arcsec, 0 or more (0: no margin); "
                             f"got {margin_radius_arcsec}", params=("margin_radius_arcsec",))


def _open_write(name: str, mode: str, catalog: Catalog | None, options: dict, timings: dict):
    """The start of every write: the name a facility run writes under, the check that it may, the default
    visibility, and the catalog entry (registered if the table is new). Returns ``(name, catalog, entry,
    created)``."""
    name = runctx.output_name(name)
    runctx.check_writable(name)
    if options.get("visibility") is None:  # a run's outputs are private unless it says otherwise
        options["visibility"] = "private" if runctx.run_id() else "public"
    cat = catalog or Catalog()
    with _stage("validate", timings):
        entry, created = _prepare_entry(cat, name, mode, options)
    return name, cat, entry, created


def _close_write(result: WriteResult, entry: TableEntry, timings: dict) -> WriteResult:
    """The end of every write: timings, the run's record of what it wrote, the SQL view."""
    result.timings_s = timings
    runctx.record_write(result.table, result.version, result.rows)
    _refresh_view(entry)
    return result


def write_from_tasks(
    produce,
    name: str,
    mode: str = "create",
    *,
    partitions: np.ndarray,
    ra_column: str,
    dec_column: str,
    catalog: Catalog | None = None,
    visibility: str | None = None,
    group: str | None = None,
    description: str = "",
    properties: dict | None = None,
    location: str | None = None,
    provenance: Provenance | None = None,
) -> WriteResult:
    """Commit a spatial table whose files were written where its rows were made, by tasks (a cross-match's Spark
    tasks), with a layout known in advance: no rows pass through the driver, none are shuffled.

    ``produce(staging)`` makes the tasks write their rows into the directory ``staging`` (each with
    :func:`~.write_arrow.write_rows_into`, so ``Norder=/Dir=/Npix=`` and every file sorted by ``_healpix_29``)
    and returns the table of files written (``path`` relative to ``staging``, ``rows``). The files then move
    into the table and are committed as one version; a failure leaves the table as it was. Only ``create`` and
    ``overwrite``: an append must use the partitions the table already has (write it with :func:`write_table`).

    Parameters
    ----------
    produce : callable
        ``produce(staging: pathlib.Path) -> pyarrow.Table`` with columns ``path`` and ``rows``.
    name : str
        The table to write, ``namespace.table``.
    mode : {"create", "overwrite"}
        Make a new table or replace its rows.
    partitions : numpy.ndarray
        (order, pixel) pairs, shape (n, 2), the tasks partition by (rows outside go to their pixel at the finest
        order); recorded as the table's layout.
    ra_column, dec_column : str
        The coordinate columns (degrees) the rows were partitioned by.
    catalog : Catalog, optional
        The catalog to register the table in; by default ``Catalog()`` for the current user.
    visibility : {"public", "group", "private"}, optional
        Who may read a new table; by default private in a facility run, public outside one.
    group : str, optional
        The group that may read a new table; required with ``visibility="group"``.
    description : str
        Free text stored with a new table's entry.
    properties : dict, optional
        Open-ended properties of a new table.
    location : str, optional
        Directory of a new table; by default ``<warehouse>/<namespace>/<table>``.
    provenance : Provenance, optional
        Provenance committed with the rows; by default a new one.

    Returns
    -------
    WriteResult
        The table written, the version committed, the row and partition counts, and the stage timings.
    """
    if mode not in ("create", "overwrite"):
        raise UserbatchError(f"write_from_tasks makes or replaces a table (mode create or overwrite); got {mode!r}")
    timings: dict = {}
    options = dict(ra_column=ra_column, dec_column=dec_column, visibility=visibility, group=group,
                   description=description, properties=properties or {}, location=location)
    name, cat, entry, created = _open_write(name, mode, catalog, options, timings)
    try:
        prov = provenance or Provenance()
        root = Path(entry.location)
        staging = root / "_staging" / uuid.uuid4().hex
        with _stage("write", timings):
            try:
                written = produce(staging)
                rel = [write_arrow.move_into(staging / p, root, Path(p).parent)
                       for p in written.column("path").to_pylist()]
            finally:
                write_arrow.remove_staging(root, staging)
        if not rel:
            raise UserbatchError(f"{name}: the tasks wrote no file (not even an empty one for the schema)")
        rows = int(pc.sum(written.column("rows")).as_py() or 0)
        n_parts = len({path_pixel(p) for p in rel} - {None})
        schema = pq.read_schema(root / rel[0]).remove_metadata()
        with _stage("commit", timings):
            version = _commit(root, rel, schema, mode, {**prov.as_dict(), "rejected": 0, "quarantined": 0,
                                                        "partitions": n_parts})
        result = WriteResult(entry.name, version, rows, n_parts)
    except BaseException:
        if created and not delta.is_delta_table(entry.location):
            cat.drop(name)
        raise
    return _close_write(result, entry, timings)


def _write_spatial(df, entry: TableEntry, mode, created, prov: Provenance, on_bad, cat, timings,
                   source_files=None, fixed_partitions=None, merge_schema=False) -> WriteResult:
    """The input is read twice: its coordinates alone for the histogram, then whole for the write. A
    non-deterministic input must be cached by the caller (the write fails loudly rather than lose rows)."""
    from pyspark.sql import functions as F

    spark = df.sparkSession
    root = Path(entry.location)
    src = df.drop(*[c for c in (SPATIAL_INDEX_COLUMN, COORD_ERROR_COLUMN, *PARTITION_COLUMNS) if c in df.columns])
    columns = src.columns + [SPATIAL_INDEX_COLUMN]
    ra, dec = entry.ra_column, entry.dec_column
    with _stage("plan", timings):
        bad_rows_seen = []

        def pixel_counts(order):
            if _use_driver_histogram(source_files):
                pixels, counts, n_bad = _histogram_from_files(source_files, ra, dec, order)
            else:
                pixels, counts, n_bad = _histogram(src, ra, dec, order)
            bad_rows_seen.append(n_bad)
            return pixels, counts

        plan, existing = _plan_for(entry, mode, created, fixed_partitions, pixel_counts)
        bad = bad_rows_seen[0]
        if bad and on_bad == "error":
            raise BadCoordinates(f"{bad} row(s) have NaN or out-of-range {ra}/{dec}; "
                                 "fix them, or write with on_bad_coords='reject' or 'quarantine'",
                                 params=("on_bad_coords",))
        task_of_part, n_tasks = _tasks(plan, default_parallelism(spark))
        keys = task_keys(n_tasks)[task_of_part] if len(plan) else np.zeros(0, np.int32)
    quarantined = 0
    if bad and on_bad == "quarantine":
        with _stage("quarantine", timings):
            bad_rows = src.withColumn(COORD_ERROR_COLUMN, _coord_error(ra, dec)).filter(
                F.col(COORD_ERROR_COLUMN).isNotNull())
            q_name = f"{entry.name}_quarantine"
            write_table(bad_rows, q_name, "append" if cat.exists(q_name) else "create", catalog=cat,
                        ra_column=None, dec_column=None, visibility=entry.visibility, group=entry.group,
                        description=f"rows refused by {entry.name} for unusable coordinates", provenance=prov)
            quarantined = bad
    elif bad:
        log.warning("%s: rejected %d row(s) with NaN or out-of-range coordinates", entry.name, bad)
    good = _with_index(src, ra, dec).filter(F.col(SPATIAL_INDEX_COLUMN) >= 0)
    metadata = {**prov.as_dict(), "rejected": bad if on_bad == "reject" else 0, "quarantined": quarantined,
                "partitions": len(plan)}
    margin_root = Path(entry.margin_location) if entry.margin_radius_arcsec and len(plan) else None
    # an append that adds pixels changes which old rows border what: rebuild the margin from all rows then
    rebuild_margin = margin_root is not None and existing is not None and (
        set(map(tuple, existing)) != set(map(tuple, plan.partitions)))
    m_order = margin_order(entry.margin_radius_arcsec, plan.partitions[:, 0]) if margin_root else None
    with _stage("write", timings):
        assigned = good
        if len(plan):
            for name, expr in _assign_columns(plan, keys, task_of_part).items():
                assigned = assigned.withColumn(name, expr)
            one_pass = margin_root is not None and not rebuild_margin
            if one_pass:
                dests = _margin_destinations(spark, plan, keys, m_order)
                assigned = _with_margin_copies(assigned, dests, m_order, columns, keep_own=True)
            out = assigned.repartition(n_tasks, _TASK_KEY).drop(_TASK_KEY).sortWithinPartitions(SPATIAL_INDEX_COLUMN)
            rel, margin_rel, arrow_schema = _write_files(
                out, root, partitioned=True, margin_root=margin_root if one_pass else None,
                max_open_files=_max_open_files(plan))
        else:
            rel, margin_rel, arrow_schema = _write_files(good.limit(0), root, partitioned=False)
    def rebuild():
        stored = to_spark(spark, resolve(entry, record=False))
        # merge_schema: a column this append adds is null in the stored rows, one it lacks is null in the new ones
        for name in [c for c in columns if c not in stored.columns]:
            stored = stored.withColumn(name, F.lit(None).cast(good.schema[name].dataType))
        every = columns + [c for c in stored.columns if c not in columns]
        fresh = good
        for name in every[len(columns):]:
            fresh = fresh.withColumn(name, F.lit(None).cast(stored.schema[name].dataType))
        source = fresh.select(*every).unionByName(stored.select(*every))
        dests = _margin_destinations(spark, plan, keys, m_order)
        copies = _with_margin_copies(source, dests, m_order, every, keep_own=False)
        out = copies.repartition(n_tasks, _TASK_KEY).drop(_TASK_KEY, MARGIN_FLAG).sortWithinPartitions(
            SPATIAL_INDEX_COLUMN)
        written, _, schema = _write_files(out, margin_root, partitioned=True, max_open_files=_max_open_files(plan))
        return written, schema

    version, margin_rows, margin_version = _commit_spatial(
        entry, prov, metadata, mode, rel, arrow_schema, timings, margin_root, m_order, margin_rel, existing,
        rebuild if rebuild_margin else None, merge_schema=merge_schema)
    rows = sum(pq.read_metadata(root / p).num_rows for p in rel)
    return WriteResult(entry.name, version, rows, len(plan), bad if on_bad == "reject" else 0, quarantined,
                       margin_rows, margin_version)


def _commit_spatial(entry: TableEntry, prov: Provenance, metadata: dict, mode: str, rel, schema, timings: dict,
                    margin_root: Path | None, m_order, margin_rel, existing, rebuild=None, merge_schema=False):
    """The end of a spatial write, either writer: the margin's commit (its files written with the rows, or all of
    it written again by ``rebuild()`` when an append added pixels), then the table's — the one step that makes the
    rows visible. Returns ``(version, margin rows, margin version)``."""
    margin_rows = margin_version = None
    if margin_root is not None:
        with _stage("margin", timings):
            meta = {**prov.as_dict(), "margin_of": entry.name, "margin_order": m_order,
                    "radius_arcsec": entry.margin_radius_arcsec}
            margin_mode, margin_schema = ("append" if existing is not None else "overwrite"), schema
            if rebuild is not None:
                (margin_rel, margin_schema), margin_mode = rebuild(), "overwrite"
            margin_version = _commit(margin_root, margin_rel, margin_schema, margin_mode, meta,
                                     merge_schema=merge_schema)
            margin_rows = sum(pq.read_metadata(margin_root / p).num_rows for p in margin_rel)
            metadata["margin"] = {"version": margin_version, "radius_arcsec": entry.margin_radius_arcsec,
                                  "rows": margin_rows}
    with _stage("commit", timings):
        version = _commit(Path(entry.location), rel, schema, mode, metadata, merge_schema=merge_schema)
    return version, margin_rows, margin_version


def _arrow_or_spark(df):
    """Rows in memory as an Arrow table (pandas converted, schema metadata dropped); a Spark DataFrame as it is."""
    if isinstance(df, pd.DataFrame):
        df = pa.Table.from_pandas(df, preserve_index=False)
    if isinstance(df, pa.Table):
        return df.replace_schema_metadata(None)
    if not (hasattr(df, "sparkSession") and hasattr(df, "columns")):
        raise UserbatchError(f"write_table takes a Spark DataFrame, a pyarrow.Table or a pandas.DataFrame; got "
                             f"{type(df).__name__}")
    return df


def _plan_for(entry: TableEntry, mode: str, created: bool, fixed_partitions,
              pixel_counts) -> tuple[PartitionPlan, np.ndarray | None]:
    """The partitions of a spatial write, from a histogram maker ``pixel_counts(order) -> (pixels, counts)``:
    a new table's own (fixed order or adaptive), an append's existing ones plus new ones outside them, or the
    ``fixed_partitions`` given; and the partitions kept as they were (None for a new layout)."""
    existing = partitions_of(resolve(entry, record=False)) if (mode == "append" and not created) else None
    if fixed_partitions is not None and len(fixed_partitions):
        existing = np.asarray(fixed_partitions, dtype=np.int64).reshape(-1, 2)
    if existing is not None and len(existing) == 0:
        existing = None
    hist_order = entry.partition_order if entry.partition_order is not None else (
        entry.highest_order or DEFAULT_HIGHEST_ORDER)
    if existing is not None:
        hist_order = max(hist_order, int(existing[:, 0].max()))
    pixels, counts = pixel_counts(hist_order)
    plan = plan_from_histogram(pixels, counts, hist_order, partition_order=entry.partition_order,
                               threshold=entry.pixel_threshold or DEFAULT_THRESHOLD, existing=existing)
    return plan, existing


def _write_spatial_arrow(table: pa.Table, entry: TableEntry, mode, created, prov: Provenance, on_bad, cat, timings,
                         fixed_partitions=None, merge_schema=False) -> WriteResult:
    """The Arrow path of a spatial write: the same partitions, margin, quarantine and commit as
    :func:`_write_spatial`, the files written by pyarrow in this process (:mod:`.write_arrow`)."""
    root = Path(entry.location)
    src = table.drop_columns([c for c in (SPATIAL_INDEX_COLUMN, COORD_ERROR_COLUMN, *PARTITION_COLUMNS)
                              if c in table.column_names])
    ra, dec = entry.ra_column, entry.dec_column
    with _stage("plan", timings):
        index = write_arrow.spatial_index(*write_arrow.coordinates(src, ra, dec))
        good_mask = index >= 0
        bad = int((~good_mask).sum())
        if bad and on_bad == "error":
            raise BadCoordinates(f"{bad} row(s) have NaN or out-of-range {ra}/{dec}; "
                                 "fix them, or write with on_bad_coords='reject' or 'quarantine'",
                                 params=("on_bad_coords",))
        if bad:
            good, index = src.filter(pa.array(good_mask)), index[good_mask]
        else:
            good = src
        plan, existing = _plan_for(entry, mode, created, fixed_partitions,
                                   lambda order: write_arrow.histogram(index, order))
    quarantined = 0
    if bad and on_bad == "quarantine":
        with _stage("quarantine", timings):
            lost = src.filter(pa.array(~good_mask))
            ra_v, dec_v = write_arrow.coordinates(lost, ra, dec)
            reason = np.where(~np.isfinite(ra_v), "ra is null, NaN or infinite",
                              np.where(~np.isfinite(dec_v), "dec is null, NaN or infinite",
                                       np.where((ra_v < 0) | (ra_v > 360), "ra out of range [0, 360]",
                                                "dec out of range [-90, 90]")))
            lost = lost.append_column(COORD_ERROR_COLUMN, pc.cast(pa.array(reason), pa.string()))
            q_name = f"{entry.name}_quarantine"
            write_table(lost, q_name, "append" if cat.exists(q_name) else "create", catalog=cat,
                        ra_column=None, dec_column=None, visibility=entry.visibility, group=entry.group,
                        description=f"rows refused by {entry.name} for unusable coordinates", provenance=prov)
            quarantined = bad
    elif bad:
        log.warning("%s: rejected %d row(s) with NaN or out-of-range coordinates", entry.name, bad)
    metadata = {**prov.as_dict(), "rejected": bad if on_bad == "reject" else 0, "quarantined": quarantined,
                "partitions": len(plan)}
    margin_root = Path(entry.margin_location) if entry.margin_radius_arcsec and len(plan) else None
    rebuild_margin = margin_root is not None and existing is not None and (
        set(map(tuple, existing)) != set(map(tuple, plan.partitions)))
    m_order = margin_order(entry.margin_radius_arcsec, plan.partitions[:, 0]) if margin_root else None
    with _stage("write", timings):
        rows, sorted_index = write_arrow.sort_by_index(good, index)
        jobs = [(root, write_arrow.partition_path(*plan.partitions[i]), rows.slice(a, b - a))
                for i, a, b in write_arrow.partition_slices(plan, sorted_index)]
        if margin_root is not None and not rebuild_margin:
            take, slices = write_arrow.margin_slices(plan, sorted_index, m_order)
            copies = rows.take(pa.array(take)) if len(take) else rows.slice(0, 0)
            jobs += [(margin_root, write_arrow.partition_path(*plan.partitions[i]), copies.slice(a, b - a))
                     for i, a, b in slices]
        moved = write_arrow.write_layout(jobs)
        rel = moved.get(root, [])
        margin_rel = moved.get(margin_root, []) if margin_root is not None else []
        if not rel:  # no rows: an empty file keeps the schema, as the Spark writer's does
            rel = write_arrow.write_plain(rows.slice(0, 0), root)
        arrow_schema = rows.schema
    def rebuild():
        from .snapshots import to_arrow

        stored = to_arrow(resolve(entry, record=False))
        # merge_schema: a column this append adds is null in the stored rows, one it lacks is null in the new ones
        fresh = rows
        for f in rows.schema:
            if f.name not in stored.column_names:
                stored = stored.append_column(f, pa.nulls(stored.num_rows, f.type))
        for f in stored.schema:
            if f.name not in fresh.column_names:
                fresh = fresh.append_column(f, pa.nulls(fresh.num_rows, f.type))
        every = pa.concat_tables([fresh, stored.select(fresh.schema.names).cast(fresh.schema)])
        every, every_index = write_arrow.sort_by_index(every.drop_columns([SPATIAL_INDEX_COLUMN]),
                                                       every.column(SPATIAL_INDEX_COLUMN).to_numpy())
        take, slices = write_arrow.margin_slices(plan, every_index, m_order)
        copies = every.take(pa.array(take)) if len(take) else every.slice(0, 0)
        written = write_arrow.write_layout(
            [(margin_root, write_arrow.partition_path(*plan.partitions[i]), copies.slice(a, b - a))
             for i, a, b in slices]).get(margin_root, [])
        return written, fresh.schema

    version, margin_rows, margin_version = _commit_spatial(
        entry, prov, metadata, mode, rel, arrow_schema, timings, margin_root, m_order, margin_rel, existing,
        rebuild if rebuild_margin else None, merge_schema=merge_schema)
    return WriteResult(entry.name, version, rows.num_rows, len(plan), bad if on_bad == "reject" else 0,
                       quarantined, margin_rows, margin_version)


def _max_open_files(plan: PartitionPlan) -> int:
    """Enough concurrent writers for every (table | margin) x pixel a task can hold, so Spark never falls back to
    re-sorting rows by partition columns (which would undo the ``_healpix_29`` order inside files)."""
    return int(min(2 * len(plan) + 8, 20_000))


def _tasks(plan: PartitionPlan, parallelism: int) -> tuple[np.ndarray, int]:
    """Pack partitions into write tasks: about ``tuning.rows_per_task`` rows each, but at least one task per core."""
    if not len(plan):
        return np.zeros(0, dtype=np.int64), 1
    counts = plan.counts if plan.counts is not None else np.ones(len(plan), dtype=np.int64)
    wanted = max(-(-int(counts.sum()) // settings().tuning.rows_per_task), min(parallelism, len(plan)))
    task_of_part = pack_tasks(counts, max(1, -(-int(counts.sum()) // wanted)), max_tasks=wanted)
    return task_of_part, int(task_of_part.max()) + 1


def _refresh_view(entry: TableEntry) -> None:
    """Keep the SQL view of a running session pointing at the version just written."""
    spark = active_session()
    if spark is None:
        return

    try:
        register_view(spark, entry)
    except UserbatchError as exc:  # the write itself succeeded; a stale view is only logged
        log.warning("could not refresh view %s: %s", entry.name, exc)
