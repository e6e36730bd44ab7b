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
    """A catalog table as a Spark DataFrame, at its latest version, a version, or a timestamp."""
    entry = name if isinstance(name, TableEntry) else (catalog or Catalog()).get(name)
    snap = resolve(entry, version=version, timestamp=timestamp)
    spark = spark or get_session()
    if columns:
        missing = [c for c in columns if c not in snap.schema.names]
        if missing:
            raise ColumnNotFound(f"{entry.name} has no column(s) {', '.join(missing)}; it has {', '.join(snap.schema.names)}")
    return to_spark(spark, snap, columns)
