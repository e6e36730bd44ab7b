"""SQL views over catalog tables, so ``spark.sql("... FROM dp1.object")`` reads a committed snapshot.

A view's text names exactly the files of the snapshot (a Hadoop glob ``root/{f1,f2,...}``): Spark then never lists
the table directory, where uncommitted or removed files may sit. A persistent view in Spark's in-memory catalog
gives the ``namespace.name`` form that temporary views cannot have.
"""

from __future__ import annotations

import logging
import re
from typing import Mapping

from ..errors import UserbatchError
from .catalog import Catalog, TableEntry
from .read import resolve

log = logging.getLogger(__name__)

_GLOB_SPECIAL = re.compile(r"([{}\[\]*?,\\])")


def _glob_escape(text: str) -> str:
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def view_sql(entry: TableEntry, version: int | None = None) -> str:
    return _view_sql_and_version(entry, version)[0]


def _view_sql_and_version(entry: TableEntry, version: int | None) -> tuple[str, int]:
    snap = resolve(entry, version=version, record=False)
    if snap.files.num_rows == 0:
        cols = ", ".join(f"CAST(NULL AS {sql_type}) AS `{name}`" for name, sql_type in _spark_fields(snap.schema))
        return f"CREATE OR REPLACE VIEW {entry.name} AS SELECT {cols or '1 AS `_empty`'} WHERE false", snap.version
    root = _glob_escape(snap.location.rstrip("/"))
    rels = ",".join(_glob_escape(p) for p in snap.files.column("path").to_pylist())
    glob = f"{root}/{{{rels}}}"
    return f"CREATE OR REPLACE VIEW {entry.name} AS SELECT * FROM parquet.`{glob}`", snap.version


def _spark_fields(schema) -> list[tuple[str, str]]:
    """(name, Spark SQL type) of each column, for the typed empty view of a table without files."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return [(f.name, f.dataType.simpleString()) for f in from_arrow_schema(schema)]


def register_view(spark, entry: TableEntry, version: int | None = None) -> int:
    """Register ``entry`` as the view ``namespace.name``; returns the version it reads (-1 without history)."""
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {entry.namespace}")
    text, snap_version = _view_sql_and_version(entry, version)
    spark.sql(text)
    return snap_version


def register_catalog_views(spark, pins: Mapping[str, int] | None = None,
                           catalog: Catalog | None = None) -> dict[str, int]:
    """Register every table the user can read; tables that cannot be opened are logged and skipped. Returns
    ``{table: version}`` of what the views read (a facility run records it as the catalog it saw)."""
    catalog = catalog or Catalog()
    pins = dict(pins or {})
    registered: dict[str, int] = {}
    for entry in catalog.list():
        pinned = pins.pop(entry.name, None)
        try:
            registered[entry.name] = register_view(spark, entry, pinned)
        except UserbatchError as exc:
            if pinned is not None:  # the user asked for this version: say so instead of reading another
                raise
            log.warning("table %s not registered as a view: %s", entry.name, exc)
    if pins:
        raise UserbatchError(f"pinned table(s) not in the catalog: {', '.join(sorted(pins))}")
    return registered
