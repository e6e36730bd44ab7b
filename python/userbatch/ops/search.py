"""Spatial search over any registered table: cone, box, convex polygon.

Coarse, then fine (as in LSDB's ``AbstractSearch``): the plan — region -> order-29 index ranges -> the files of the
snapshot that can hold a match — is a pure function of the region and the file statistics, testable without
Spark and shown by :meth:`Search.explain`. The row step then applies the region's exact test.

Two engines answer the row step with the same formulas: Spark, for anything large or to keep composing
DataFrames, and a light pyarrow path for small pruned queries, so a 1-degree cone does not pay for a Spark job.
``engine="auto"`` takes the light path when the pruned files hold at most ``settings().tuning.light_path_max_rows``
rows (``USERBATCH_LIGHT_PATH_MAX_ROWS``, 5M).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..config import settings
from ..engine import get_session
from ..errors import ColumnNotFound, UserbatchError
from ..sky.healpix import SPATIAL_INDEX_COLUMN
from ..sky.regions import Box, Cone, Polygon, Region
from ..tables.catalog import Catalog, TableEntry
from ..tables.delta import Snapshot
from ..tables.read import index_filter_sql, path_pixel, prune, resolve, to_arrow, to_spark

log = logging.getLogger(__name__)

ENGINES = ("auto", "spark", "arrow")


@dataclass(frozen=True)
class SearchPlan:
    """What a search will read, decided before any row is read."""

    table: str
    version: int
    region: Region
    index_ranges: np.ndarray
    files_total: int
    files_selected: int
    partitions_total: int
    partitions_selected: int
    rows_total: int
    rows_selected_files: int

    def describe(self) -> str:
        return (
            f"{self.table}@v{self.version}: {type(self.region).__name__.lower()} -> {len(self.index_ranges)} HEALPix "
            f"range(s); partitions {self.partitions_selected}/{self.partitions_total}, files "
            f"{self.files_selected}/{self.files_total}, rows in those files {self.rows_selected_files:,}/"
            f"{self.rows_total:,}"
        )


def _partitions(snap: Snapshot) -> int:
    return len({path_pixel(p) or p for p in snap.files.column("path").to_pylist()})


class Search:
    """A planned search; read it with :meth:`to_spark`, :meth:`to_arrow` or :meth:`to_pandas`."""

    def __init__(
        self,
        table: str | TableEntry,
        region: Region,
        *,
        version: int | None = None,
        timestamp=None,
        columns: list[str] | None = None,
        catalog: Catalog | None = None,
    ):
        self.entry = table if isinstance(table, TableEntry) else (catalog or Catalog()).get(table)
        if not self.entry.spatial:
            raise UserbatchError(f"table {self.entry.name} declares no ra/dec columns, so it cannot be searched")
        self.region = region
        self.snapshot = resolve(self.entry, version=version, timestamp=timestamp)
        names = self.snapshot.schema.names
        for col in (self.entry.ra_column, self.entry.dec_column, *(columns or [])):
            if col not in names:
                raise ColumnNotFound(f"{self.entry.name} has no column {col!r}; it has {', '.join(names)}")
        self.columns = columns
        ranges = region.index_ranges()
        self.pruned = prune(self.snapshot, ranges) if SPATIAL_INDEX_COLUMN in names else self.snapshot
        self.plan = SearchPlan(
            table=self.entry.name,
            version=self.snapshot.version,
            region=region,
            index_ranges=ranges,
            files_total=self.snapshot.files.num_rows,
            files_selected=self.pruned.files.num_rows,
            partitions_total=_partitions(self.snapshot),
            partitions_selected=_partitions(self.pruned),
            rows_total=self.snapshot.num_rows,
            rows_selected_files=self.pruned.num_rows,
        )
        log.info("search plan: %s", self.plan.describe())

    def explain(self) -> str:
        return self.plan.describe()

    @property
    def _has_index(self) -> bool:
        return SPATIAL_INDEX_COLUMN in self.snapshot.schema.names

    def to_spark(self, spark=None):
        """The matching rows as a Spark DataFrame (lazy).

        Parameters
        ----------
        spark : pyspark.sql.SparkSession, optional
            The session to read with; by default the running session, or a new bare one.

        Returns
        -------
        pyspark.sql.DataFrame
            The rows inside the region (only ``columns`` when the search named them), not yet computed.
        """
        spark = spark or get_session()
        df = to_spark(spark, self.pruned)
        if self._has_index and self.pruned.files.num_rows:
            df = df.filter(index_filter_sql(self.plan.index_ranges))
        df = df.filter(self.region.condition(self.entry.ra_column, self.entry.dec_column))
        return df.select(*self.columns) if self.columns else df

    def to_arrow(self, engine: str = "auto", spark=None) -> pa.Table:
        """The matching rows as an Arrow table, read with pyarrow or with Spark.

        Parameters
        ----------
        engine : {"auto", "spark", "arrow"}
            ``"arrow"`` reads the pruned files with pyarrow in this process, ``"spark"`` runs a Spark job;
            ``"auto"`` takes pyarrow unless the pruned files hold more than
            ``settings().tuning.light_path_max_rows`` rows.
        spark : pyspark.sql.SparkSession, optional
            The session for the Spark path; by default the running session, or a new bare one.

        Returns
        -------
        pyarrow.Table
            The rows inside the region (only ``columns`` when the search named them).
        """
        if engine not in ENGINES:
            raise UserbatchError(f"engine must be one of {', '.join(ENGINES)}")
        light_max = settings().tuning.light_path_max_rows
        if engine == "spark" or (engine == "auto" and self.plan.rows_selected_files > light_max):
            return pa.Table.from_pandas(self.to_spark(spark).toPandas(), preserve_index=False)
        table = to_arrow(self.pruned, index_ranges=self.plan.index_ranges if self._has_index else None)
        ra = table.column(self.entry.ra_column).to_numpy(zero_copy_only=False)
        dec = table.column(self.entry.dec_column).to_numpy(zero_copy_only=False)
        table = table.filter(pa.array(self.region.contains(ra, dec)))
        return table.select(self.columns) if self.columns else table

    def to_pandas(self, engine: str = "auto", spark=None):
        """The matching rows as a pandas DataFrame (:meth:`to_arrow`, converted).

        Parameters
        ----------
        engine : {"auto", "spark", "arrow"}
            How the rows are read, as for :meth:`to_arrow`.
        spark : pyspark.sql.SparkSession, optional
            The session for the Spark path; by default the running session, or a new bare one.

        Returns
        -------
        pandas.DataFrame
            The rows inside the region (only ``columns`` when the search named them).
        """
        return self.to_arrow(engine=engine, spark=spark).to_pandas()


def search(table, region: Region, **kwargs) -> Search:
    """Plan a search of ``table`` for the rows inside any region (:class:`Cone`, :class:`Box`, :class:`Polygon`).

    Parameters
    ----------
    table : str or TableEntry
        A catalog table name (``"dp1.object"``) or its entry; it must declare ra/dec columns.
    region : Region
        The sky region the rows must lie in.
    **kwargs
        Passed to :class:`Search`: ``version`` (int) or ``timestamp`` (datetime or ISO string: the latest commit
        at or before it) of a Delta table, ``columns`` (list of str) to keep, ``catalog`` (:class:`Catalog`) to
        look ``table`` up in.

    Returns
    -------
    Search
        The planned search (files already pruned, no row read yet); read it with :meth:`Search.to_pandas`,
        :meth:`Search.to_arrow` or :meth:`Search.to_spark`.
    """
    return Search(table, region, **kwargs)


def cone_search(table, ra_deg: float, dec_deg: float, radius_arcsec: float, **kwargs) -> Search:
    """Plan a search of ``table`` for the rows within ``radius_arcsec`` of (``ra_deg``, ``dec_deg``).

    Parameters
    ----------
    table : str or TableEntry
        A catalog table name (``"dp1.object"``) or its entry; it must declare ra/dec columns.
    ra_deg : float
        Right ascension of the cone's centre, degrees in [0, 360].
    dec_deg : float
        Declination of the cone's centre, degrees in [-90, 90].
    radius_arcsec : float
        Radius of the cone in arcseconds, in (0, 648000].
    **kwargs
        Passed to :class:`Search`: ``version`` (int) or ``timestamp`` (datetime or ISO string: the latest commit
        at or before it) of a Delta table, ``columns`` (list of str) to keep, ``catalog`` (:class:`Catalog`) to
        look ``table`` up in.

    Returns
    -------
    Search
        The planned search (files already pruned, no row read yet); read it with :meth:`Search.to_pandas`,
        :meth:`Search.to_arrow` or :meth:`Search.to_spark`.
    """
    return Search(table, Cone(ra_deg, dec_deg, radius_arcsec), **kwargs)


def box_search(table, ra_min_deg: float, ra_max_deg: float, dec_min_deg: float, dec_max_deg: float, **kwargs) -> Search:
    """Plan a search of ``table`` for the rows inside an RA/Dec box (:class:`Box` tells how RA bounds wrap).

    Parameters
    ----------
    table : str or TableEntry
        A catalog table name (``"dp1.object"``) or its entry; it must declare ra/dec columns.
    ra_min_deg : float
        Western RA bound, degrees in [0, 360]; the box runs east from it to ``ra_max_deg``.
    ra_max_deg : float
        Eastern RA bound, degrees in [0, 360]; below ``ra_min_deg``, the box wraps through RA = 0.
    dec_min_deg : float
        Lower declination bound, degrees in [-90, 90].
    dec_max_deg : float
        Upper declination bound, degrees in [-90, 90], not below ``dec_min_deg``.
    **kwargs
        Passed to :class:`Search`: ``version`` (int) or ``timestamp`` (datetime or ISO string: the latest commit
        at or before it) of a Delta table, ``columns`` (list of str) to keep, ``catalog`` (:class:`Catalog`) to
        look ``table`` up in.

    Returns
    -------
    Search
        The planned search (files already pruned, no row read yet); read it with :meth:`Search.to_pandas`,
        :meth:`Search.to_arrow` or :meth:`Search.to_spark`.
    """
    return Search(table, Box(ra_min_deg, ra_max_deg, dec_min_deg, dec_max_deg), **kwargs)


def polygon_search(table, vertices_deg, **kwargs) -> Search:
    """Plan a search of ``table`` for the rows inside a convex spherical polygon.

    Parameters
    ----------
    table : str or TableEntry
        A catalog table name (``"dp1.object"``) or its entry; it must declare ra/dec columns.
    vertices_deg : sequence of (float, float)
        At least three (ra, dec) vertices in degrees, in either winding order, forming a convex polygon.
    **kwargs
        Passed to :class:`Search`: ``version`` (int) or ``timestamp`` (datetime or ISO string: the latest commit
        at or before it) of a Delta table, ``columns`` (list of str) to keep, ``catalog`` (:class:`Catalog`) to
        look ``table`` up in.

    Returns
    -------
    Search
        The planned search (files already pruned, no row read yet); read it with :meth:`Search.to_pandas`,
        :meth:`Search.to_arrow` or :meth:`Search.to_spark`.
    """
    return Search(table, Polygon(tuple(map(tuple, vertices_deg))), **kwargs)
