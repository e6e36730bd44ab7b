"""Ingest Parquet, CSV and FITS files into a HEALPix-partitioned Delta table.

Reading is the only format-specific step: Parquet and CSV go straight to Spark's readers; FITS tables (which
Spark cannot read) are converted on the driver, a chunk of rows at a time, to Parquet in a scratch directory.
Everything after that — the order-29 index, partitioning, bad-coordinate policy, margins, commit — is
:func:`write_table`.

The coordinate columns of a new table, when the caller names none, are found in the input's schema among the
common names (:data:`COORDINATE_COLUMNS`, :func:`detect_coordinate_columns`): exactly one pair must be there.
An append or overwrite keeps the columns its table declares.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import settings
from ..engine import get_session
from ..errors import ColumnNotFound, InputFormatError, UserbatchError
from . import runctx
from .catalog import Catalog
from .provenance import Provenance
from .write import WriteResult, write_table

log = logging.getLogger(__name__)

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".fits": "fits", ".fit": "fits", ".fits.gz": "fits"}
FITS_CHUNK_ROWS = 500_000

#: The (ra, dec) column pairs a new table's positions are looked for under when none are named, in the order
#: messages list them. Matched without regard to case (``RA``/``DEC``, ``Ra``/``Dec`` and ``ra``/``dec`` are one
#: pair). Rubin's DP0/DP1 tables; Gaia, hats-import and LSDB; VizieR's J2000, computed J2000 and ICRS columns and
#: its RAdeg/DEdeg; SExtractor.
COORDINATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("coord_ra", "coord_dec"),
    ("ra", "dec"),
    ("ra_deg", "dec_deg"),
    ("RAJ2000", "DEJ2000"),
    ("_RAJ2000", "_DEJ2000"),
    ("RA_ICRS", "DE_ICRS"),
    ("RAdeg", "DEdeg"),
    ("ALPHA_J2000", "DELTA_J2000"),
)
#: Columns listed by name in a "no coordinate columns" message, at most (a DP1 Object table has hundreds).
_COLUMNS_SHOWN = 40
_COORD_PARAMS = ("ra_column", "dec_column")


def detect_format(path: str | Path) -> str:
    name = str(path).lower()
    for suffix, fmt in sorted(FORMATS.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return fmt
    if Path(path).is_dir():
        return "parquet"
    raise InputFormatError(f"cannot tell the format of {path}; name it .parquet, .csv or .fits, or name the format "
                           "with fmt", params=("fmt",))


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


def coordinate_candidates(column_names: Iterable[str]) -> list[tuple[str, str]]:
    """Every (ra, dec) pair of :data:`COORDINATE_COLUMNS` present in ``column_names``, spelled as they are there.

    Parameters
    ----------
    column_names : iterable of str
        The columns of the input (or of a table).

    Returns
    -------
    list of (str, str)
        The pairs found, in the order of :data:`COORDINATE_COLUMNS`; a pair present in two spellings (``ra`` and
        ``RA``) counts once per spelling.
    """
    by_lower: dict[str, list[str]] = defaultdict(list)
    for c in column_names:
        by_lower[c.lower()].append(c)
    return [(ra, dec) for ra_name, dec_name in COORDINATE_COLUMNS
            for ra in by_lower.get(ra_name.lower(), ()) for dec in by_lower.get(dec_name.lower(), ())]


def _known_pairs() -> str:
    return ", ".join(f"{ra}/{dec}" for ra, dec in COORDINATE_COLUMNS)


def detect_coordinate_columns(column_names: Iterable[str]) -> tuple[str, str]:
    """The one pair of coordinate columns among ``column_names``, from the common names of
    :data:`COORDINATE_COLUMNS` (in any case).

    Parameters
    ----------
    column_names : iterable of str
        The columns of the input.

    Returns
    -------
    (str, str)
        The ra and dec columns, spelled as in ``column_names``.

    Raises
    ------
    ColumnNotFound
        When no known pair is there; the message lists the columns seen.
    UserbatchError
        When several pairs are there; the message names them. Name the pair with ``ra_column``/``dec_column``.
    """
    names = list(column_names)
    found = coordinate_candidates(names)
    if len(found) == 1:
        return found[0]
    if found:
        raise UserbatchError(
            f"the input has several pairs of coordinate columns ({', '.join(f'{r}/{d}' for r, d in found)}); "
            "choose one with ra_column/dec_column", params=_COORD_PARAMS)
    shown = ", ".join(names[:_COLUMNS_SHOWN]) + (f" ... ({len(names) - _COLUMNS_SHOWN} more)"
                                                 if len(names) > _COLUMNS_SHOWN else "")
    raise ColumnNotFound(
        f"found no coordinate columns in the input (looked for {_known_pairs()}, in any case; columns: "
        f"{shown or 'none'}); name them with ra_column/dec_column, or write a table without positions with "
        "ra_column=None, dec_column=None", params=(*_COORD_PARAMS, "ra_column=None, dec_column=None"))


def _partner(column_names: list[str], given: str, want_dec: bool) -> str:
    """The other coordinate column of a pair whose one column the caller named: its pair in
    :data:`COORDINATE_COLUMNS` (spelled as in the input when there), else the one pair found in the input."""
    lower = {c.lower(): c for c in column_names}
    for ra, dec in COORDINATE_COLUMNS:
        mine, other = (ra, dec) if want_dec else (dec, ra)
        if given.lower() == mine.lower():
            return lower.get(other.lower(), other)
    found = coordinate_candidates(column_names)
    if len(found) == 1:
        return found[0][1 if want_dec else 0]
    missing = "dec_column" if want_dec else "ra_column"
    raise UserbatchError(f"{given} is not one of the usual coordinate column names, so its partner cannot be "
                         f"told; name {missing} too", params=(missing,))


def coordinate_options(column_names: list[str], name: str, mode: str, catalog: Catalog,
                       options: dict) -> dict:
    """``options`` for :func:`write_table` with the coordinate columns settled.

    Columns the caller named are kept (one named alone gets its partner); a new table without any gets the pair
    found in ``column_names`` (:func:`detect_coordinate_columns`); an append or overwrite keeps the columns its
    table declares and refuses others.

    Parameters
    ----------
    column_names : list of str
        The columns of the rows to write.
    name : str
        The table to write.
    mode : {"create", "append", "overwrite"}
        The write mode.
    catalog : Catalog
        The catalog the table is (or will be) in.
    options : dict
        The write options; ``ra_column``/``dec_column`` are read from them when present.

    Returns
    -------
    dict
        A copy of ``options`` (with ``ra_column`` and ``dec_column`` set for a new table).
    """
    options = dict(options)
    given = {k: options[k] for k in _COORD_PARAMS if k in options}
    target = runctx.output_name(name)
    if catalog.exists(target):
        if mode == "create":
            return options  # write_table refuses it, with the reason
        entry = catalog.get(target)
        declared = {"ra_column": entry.ra_column, "dec_column": entry.dec_column}
        differ = [k for k, v in given.items() if v != declared[k]]
        if differ:
            raise UserbatchError(
                f"table {target} keeps its positions in {entry.ra_column}/{entry.dec_column}; an {mode} cannot "
                f"change them ({', '.join(f'{k}={given[k]!r}' for k in differ)}); leave "
                f"{'/'.join(differ)} out", params=tuple(differ))
        return options
    if len(given) == 2:
        return options
    if len(given) == 1:
        (key, value), = given.items()
        if value is None:
            raise UserbatchError("a table without positions needs ra_column=None and dec_column=None both",
                                 params=_COORD_PARAMS)
        other = "dec_column" if key == "ra_column" else "ra_column"
        options[other] = _partner(column_names, value, want_dec=key == "ra_column")
        return options
    ra, dec = detect_coordinate_columns(column_names)
    log.info("%s: positions from columns %s/%s, the one pair of common coordinate names in the input",
             target, ra, dec)
    options.update(ra_column=ra, dec_column=dec)
    return options


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
        ``pixel_threshold``, ``margin_radius_arcsec``, ``on_bad_coords`` ...). Without ``ra_column`` and
        ``dec_column`` a new table's positions are the one pair of common coordinate names in the input
        (:data:`COORDINATE_COLUMNS`: ``coord_ra``/``coord_dec``, ``ra``/``dec``, ``RAJ2000``/``DEJ2000`` ...,
        in any case), and it is an error when there are none or several; an append keeps its table's columns.
        ``ra_column=None, dec_column=None`` writes a table without positions.

    Returns
    -------
    WriteResult
        The table written, the version committed, row and partition counts, rows rejected or quarantined, and
        the stage timings.
    """
    spark = spark or get_session()
    catalog = catalog or Catalog()
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    prov = provenance or Provenance(job="ingest")
    for p in paths:
        st = os.stat(p) if os.path.exists(p) else None
        prov.inputs.append({"path": str(Path(p).resolve()), "bytes": st.st_size if st else None})
    scratch = settings().spark_dir / "tmp" / f"ingest-{uuid.uuid4().hex}"
    try:
        df, files = read_input(spark, paths, fmt, scratch)
        write_options = coordinate_options(df.columns, name, mode, catalog, write_options)
        prov.parameters.update({k: v for k, v in write_options.items() if v is not None}, fmt=fmt, mode=mode)
        return write_table(df, name, mode, catalog=catalog, provenance=prov, source_files=files, **write_options)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
