"""Ingest Parquet, CSV and FITS files into a HEALPix-partitioned Delta table.

Reading is the only format-specific step: Parquet and CSV go straight to Spark's readers; FITS tables (which
Spark cannot read) are converted on the driver, a chunk of rows at a time, to Parquet in a scratch directory.
Everything after that — the order-29 index, partitioning, bad-coordinate policy, margins, commit — is
:func:`write_table`.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import settings
from ..engine import get_session
from ..errors import InputFormatError, UserbatchError
from .catalog import Catalog
from .provenance import Provenance
from .write import WriteResult, write_table

log = logging.getLogger(__name__)

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".fits": "fits", ".fit": "fits", ".fits.gz": "fits"}
FITS_CHUNK_ROWS = 500_000


def detect_format(path: str | Path) -> str:
    name = str(path).lower()
    for suffix, fmt in sorted(FORMATS.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return fmt
    if Path(path).is_dir():
        return "parquet"
    raise InputFormatError(f"cannot tell the format of {path}; name it .parquet, .csv or .fits, or pass fmt=")


def _fits_to_parquet(paths: list[Path], scratch: Path) -> list[str]:
    """Convert binary-table HDUs to Parquet (native byte order, scalar columns only)."""
    import fitsio

    out = []
    for i, path in enumerate(paths):
        try:
            with fitsio.FITS(str(path)) as fits:
                hdu = next((h for h in fits if h.get_exttype() in ("BINARY_TBL", "ASCII_TBL")), None)
                if hdu is None:
                    raise InputFormatError(f"{path} holds no table HDU")
                nrows = hdu.get_nrows()
                target = scratch / f"fits-{i:05d}.parquet"
                writer = None
                for start in range(0, max(nrows, 1), FITS_CHUNK_ROWS):
                    data = hdu[start:min(start + FITS_CHUNK_ROWS, nrows)] if nrows else hdu.read()
                    arrays, names = [], []
                    for name in data.dtype.names:
                        col = data[name]
                        if col.ndim > 1:
                            raise InputFormatError(f"{path}: column {name} is an array column; flatten it first")
                        col = col.astype(col.dtype.newbyteorder("="), copy=False)
                        if col.dtype.kind in "SU":
                            col = np.char.rstrip(col.astype(str))
                        arrays.append(pa.array(col))
                        names.append(name)
                    table = pa.Table.from_arrays(arrays, names=names)
                    writer = writer or pq.ParquetWriter(target, table.schema)
                    writer.write_table(table)
                if writer:
                    writer.close()
                    out.append(str(target))
        except OSError as exc:
            raise InputFormatError(f"cannot read FITS file {path}: {exc}") from exc
    return out


def read_input(spark, paths: list[str | Path], fmt: str | None = None, scratch: Path | None = None):
    """A Spark DataFrame over input files of one format, and the Parquet files behind it (None for CSV)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserbatchError("no input files given")
    for p in paths:
        if not p.exists():
            raise InputFormatError(f"input {p} does not exist")
    fmts = {fmt or detect_format(p) for p in paths}
    if len(fmts) != 1:
        raise InputFormatError(f"inputs mix formats {sorted(fmts)}; ingest one format at a time")
    fmt = fmts.pop()
    try:
        if fmt == "parquet":
            # directories are listed by Spark's own rules (hidden files, partition discovery): no file list then
            files = [str(p) for p in paths] if all(p.is_file() for p in paths) else None
            return spark.read.parquet(*map(str, paths)), files
        if fmt == "csv":
            return (spark.read.option("header", "true").option("inferSchema", "true")
                    .option("mode", "FAILFAST").csv([str(p) for p in paths])), None
        if fmt == "fits":
            scratch.mkdir(parents=True, exist_ok=True)
            files = _fits_to_parquet(paths, scratch)
            return spark.read.parquet(*files), files
    except UserbatchError:
        raise
    except Exception as exc:  # Spark's AnalysisException etc.: the file is not what it claims to be
        raise InputFormatError(f"cannot read {fmt} input {', '.join(map(str, paths))}: {exc}") from exc
    raise InputFormatError(f"unknown input format {fmt!r}; use parquet, csv or fits")


def ingest(
    paths: list[str | Path] | str | Path,
    name: str,
    *,
    fmt: str | None = None,
    mode: str = "create",
    spark=None,
    catalog: Catalog | None = None,
    provenance: Provenance | None = None,
    **write_options,
) -> WriteResult:
    """Ingest files into table ``name``; ``write_options`` go to :func:`write_table` (ra/dec columns,
    partition order or pixel threshold, margin radius, ``on_bad_coords`` ...).

    Parameters
    ----------
    paths : str, pathlib.Path or list of them
        Input files (or Parquet directories), all of one format.
    name : str
        The table to write, ``namespace.table``.
    fmt : {"parquet", "csv", "fits"}, optional
        The input format; by default told from the file names (``.parquet``, ``.pq``, ``.csv``, ``.fits``,
        ``.fit``, ``.fits.gz``; a directory is Parquet).
    mode : {"create", "append", "overwrite"}
        Make a new table, add rows to an existing one, or replace its rows.
    spark : pyspark.sql.SparkSession, optional
        The session that reads the files and writes the table; by default the running session, or a new bare one.
    catalog : Catalog, optional
        The catalog to register the table in; by default ``Catalog()`` for the current user.
    provenance : Provenance, optional
        Provenance to commit with the rows (the input paths and sizes are added to it); by default a new one for
        job ``ingest``.
    **write_options
        Passed to :func:`~userbatch.tables.write.write_table` (``ra_column``, ``dec_column``, ``partition_order``,
        ``pixel_threshold``, ``margin_radius_arcsec``, ``on_bad_coords`` ...).

    Returns
    -------
    WriteResult
        The table written, the version committed, row and partition counts, rows rejected or quarantined, and
        the stage timings.
    """
    spark = spark or get_session()
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    prov = provenance or Provenance(job="ingest")
    for p in paths:
        st = os.stat(p) if os.path.exists(p) else None
        prov.inputs.append({"path": str(Path(p).resolve()), "bytes": st.st_size if st else None})
    prov.parameters.update({k: v for k, v in write_options.items() if v is not None}, fmt=fmt, mode=mode)
    scratch = settings().spark_dir / "tmp" / f"ingest-{uuid.uuid4().hex}"
    try:
        df, files = read_input(spark, paths, fmt, scratch)
        return write_table(df, name, mode, catalog=catalog, provenance=prov, source_files=files, **write_options)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
