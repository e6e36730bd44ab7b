"""From a catalog query to the object list the CutoutTask reads (the ``stamp_targets`` dataset).

:func:`stamps_request` takes a catalog table (a name in the userbatch catalog, a :class:`TableEntry`, a Spark
DataFrame, a pandas DataFrame or a pyarrow Table), optionally a sky region (``userbatch.sky.regions`` Cone / Box /
Polygon: the search is pruned by HEALPix ranges through :mod:`userbatch.ops.search`) and a row filter ``where``,
and returns an astropy Table (objectId, coord_ra, coord_dec, plus any ``extra_columns``). Given ``repo`` and
``run`` it also stores the table in the butler as ``stamp_targets`` (no dimensions), ready for
``pipetask run -p pipelines/stamps.yaml -i <inputs>,<run>``.

``where`` is a Spark SQL boolean expression (``"r_psfFlux > 1e4 AND extendedness = 0"``) when the rows come from
Spark (a Spark DataFrame, or ``engine="spark"``); on the light pyarrow/pandas path it is a pandas
``DataFrame.query`` expression, which accepts the same simple comparisons joined with ``and`` / ``or``
(``AND``/``OR``/``=`` are translated). A callable ``where(pandas_frame) -> boolean mask`` works on that path too.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pyarrow as pa
from astropy.table import Table

__all__ = ["stamps_request", "targets_data_query"]

log = logging.getLogger(__name__)

_MAX_TARGETS_DEFAULT = 100_000


def _sql_to_pandas_query(where: str) -> str:
    q = re.sub(r"\bAND\b", "and", where, flags=re.IGNORECASE)
    q = re.sub(r"\bOR\b", "or", q, flags=re.IGNORECASE)
    q = re.sub(r"\bNOT\b", "not", q, flags=re.IGNORECASE)
    q = re.sub(r"(?<![<>=!])=(?!=)", "==", q)
    return q


def _apply_where_pandas(df: pd.DataFrame, where) -> pd.DataFrame:
    if where is None:
        return df
    if callable(where):
        return df[np.asarray(where(df), dtype=bool)]
    from userbatch.errors import UserbatchError

    try:
        return df.query(_sql_to_pandas_query(where))
    except Exception as exc:  # pandas raises many types for a bad expression
        raise UserbatchError(f"cannot apply where={where!r} to the rows: {exc}; use simple comparisons joined by "
                             f"AND/OR, or engine='spark' for full SQL") from exc


def stamps_request(table, where=None, region=None, *, id_column: str = "objectId", ra_column: str | None = None,
                   dec_column: str | None = None, extra_columns: list[str] | None = None, limit: int | None = None,
                   engine: str = "auto", version: int | None = None, catalog=None, spark=None, repo=None,
                   run: str | None = None, dataset_name: str = "stamp_targets") -> Table:
    """Select objects from a catalog table and return (and optionally store) the CutoutTask's object list."""
    from userbatch.errors import UserbatchError

    ra_col, dec_col = ra_column, dec_column
    rows: pd.DataFrame
    is_spark_df = hasattr(table, "sparkSession") and hasattr(table, "toPandas")
    if isinstance(table, pd.DataFrame | pa.Table) or is_spark_df:
        ra_col, dec_col = ra_col or "coord_ra", dec_col or "coord_dec"
        if region is not None and not is_spark_df:
            df = table.to_pandas() if isinstance(table, pa.Table) else table
            df = df[region.contains(df[ra_col].to_numpy(float), df[dec_col].to_numpy(float))]
        elif is_spark_df:
            sdf = table
            if region is not None:
                sdf = sdf.filter(region.condition(ra_col, dec_col))
            if where is not None:
                sdf = sdf.filter(where)
            if limit is not None:
                sdf = sdf.limit(int(limit))
            df, where = sdf.toPandas(), None
        else:
            df = table.to_pandas() if isinstance(table, pa.Table) else table
        rows = _apply_where_pandas(df, where)
    else:
        from userbatch.tables.catalog import Catalog, TableEntry

        entry = table if isinstance(table, TableEntry) else (catalog or Catalog()).get(table)
        ra_col, dec_col = ra_col or entry.ra_column, dec_col or entry.dec_column
        if region is not None:
            from userbatch.ops.search import Search

            s = Search(entry, region, version=version, catalog=catalog)
            use_spark = engine == "spark" or (where is not None and not callable(where) and engine != "arrow")
            if use_spark:
                sdf = s.to_spark(spark)
                if where is not None:
                    sdf = sdf.filter(where)
                if limit is not None:
                    sdf = sdf.limit(int(limit))
                rows = sdf.toPandas()
            else:
                rows = _apply_where_pandas(s.to_pandas(engine="arrow" if engine == "auto" else engine), where)
        else:
            from userbatch.tables.read import read_table

            sdf = read_table(entry, version=version, spark=spark, catalog=catalog)
            if where is not None and not callable(where):
                sdf = sdf.filter(where)
            if limit is not None:
                sdf = sdf.limit(int(limit))
            rows = sdf.toPandas()
            if callable(where):
                rows = _apply_where_pandas(rows, where)
    for col in (id_column, ra_col, dec_col, *(extra_columns or [])):
        if col not in rows.columns:
            raise UserbatchError(f"the selected rows have no column {col!r}; they have {', '.join(rows.columns)}")
    if limit is not None:
        rows = rows.iloc[: int(limit)]
    if len(rows) > _MAX_TARGETS_DEFAULT and limit is None:
        raise UserbatchError(f"{len(rows)} objects selected; narrow the query or pass limit= (stamps are cut for "
                             f"every object on every overlapping image)")
    out = Table({"objectId": rows[id_column].to_numpy(np.int64), "coord_ra": rows[ra_col].to_numpy(float),
                 "coord_dec": rows[dec_col].to_numpy(float)})
    for col in extra_columns or []:
        out[col] = rows[col].to_numpy()
    log.info("stamps request: %d objects", len(out))
    if repo is not None:
        if not run:
            raise UserbatchError("give run= (a RUN collection name, e.g. u/<you>/targets) to store the targets")
        from userbatch.images.sim_repo import put_stamp_targets

        put_stamp_targets(repo, out, run=run, name=dataset_name)
    return out


def targets_data_query(repo, targets: Table, instrument: str = "UBSim", collections=None) -> str:
    """A ``pipetask -d`` expression restricted to the (visit, detector) pairs whose regions hold a target.

    Why: CutoutTask quanta without targets end as NoWorkFound, which is cheap but not free on a large repository.
    """
    from lsst.daf.butler import Butler

    butler = Butler.from_config(str(repo))
    pairs: set[tuple[int, int]] = set()
    for ra, dec in zip(np.asarray(targets["coord_ra"], float), np.asarray(targets["coord_dec"], float)):
        for did in butler.registry.queryDataIds(
                ["visit", "detector"], instrument=instrument,
                where="visit_detector_region.region OVERLAPS POINT(ra, dec)", bind={"ra": ra, "dec": dec}):
            pairs.add((int(did["visit"]), int(did["detector"])))
    if not pairs:
        return f"instrument='{instrument}' AND visit = -1"
    terms = " OR ".join(f"(visit = {v} AND detector = {d})" for v, d in sorted(pairs))
    return f"instrument='{instrument}' AND ({terms})"
