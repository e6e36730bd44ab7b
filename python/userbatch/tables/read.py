"""Reading tables: a catalog table as a Spark DataFrame at a version or a time.

The snapshot machinery (resolve a version to files, prune by sky position, Spark or pyarrow over the files) is in
:mod:`.snapshots`; its names are re-exported here, where callers have always found them.
"""

from __future__ import annotations

from ..engine import get_session
from ..errors import ColumnNotFound
from .catalog import Catalog, TableEntry
from .snapshots import (  # noqa: F401 - re-exported: the deep paths keep working
    index_filter_sql,
    margin_snapshot,
    path_pixel,
    plain_snapshot,
    prune,
    resolve,
    to_arrow,
    to_spark,
)


def read_table(
    name: str | TableEntry,
    version: int | None = None,
    timestamp=None,
    *,
    spark=None,
    catalog: Catalog | None = None,
    columns: list[str] | None = None,
):
    """A catalog table as a Spark DataFrame, at its latest version, a version, or a timestamp.

    Parameters
    ----------
    name : str or TableEntry
        A catalog table name (``"dp1.object"``) or its entry.
    version : int, optional
        Delta version to read; by default the latest (in a facility run, the version its inputs are pinned to).
    timestamp : datetime or str, optional
        Read the table as of this time (its latest commit at or before it; ISO string or datetime) instead of a
        version. Only Delta tables keep history.
    spark : pyspark.sql.SparkSession, optional
        The session to read with; by default the running session, or a new bare one.
    catalog : Catalog, optional
        The catalog ``name`` is looked up in; by default ``Catalog()`` for the current user.
    columns : list of str, optional
        Columns to select; by default all.

    Returns
    -------
    pyspark.sql.DataFrame
        The table's rows at that version (lazy).
    """
    entry = name if isinstance(name, TableEntry) else (catalog or Catalog()).get(name)
    snap = resolve(entry, version=version, timestamp=timestamp)
    spark = spark or get_session()
    if columns:
        missing = [c for c in columns if c not in snap.schema.names]
        if missing:
            raise ColumnNotFound(f"{entry.name} has no column(s) {', '.join(missing)}; "
                                 f"it has {', '.join(snap.schema.names)}")
    return to_spark(spark, snap, columns)
