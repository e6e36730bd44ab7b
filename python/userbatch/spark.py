"""The Spark session factory: one place that decides how userbatch talks to Spark.

``session()`` gives the embedded default (``local[*]``) or a cluster (``master=`` / ``SPARK_MASTER``), with the
settings every job needs: the venv's Python on the workers, Arrow transfers, shuffle partitions sized to the
cores, quiet logs, UTC, and scratch space under the facility home. It then registers every catalog table the user
may read as a SQL view ``namespace.name`` (latest version, or the version pinned in ``pins``), so
``spark.sql("SELECT ... FROM dp1.object")`` works in notebooks, jobs and the CLI alike.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Mapping

from .config import settings

log = logging.getLogger(__name__)

#: Default driver memory for the embedded session (the driver *is* the executor in local mode).
DEFAULT_DRIVER_MEMORY = "6g"


def _base_conf(master: str) -> dict[str, str]:
    s = settings()
    cores = os.cpu_count() or 2
    local = master.startswith("local")
    conf = {
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
        "spark.sql.shuffle.partitions": str(max(4, 2 * cores) if local else 200),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.warehouse.dir": str(s.spark_dir / "warehouse"),
        "spark.local.dir": str(s.spark_dir / "tmp"),
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": os.environ.get("USERBATCH_SPARK_UI", "false"),
        "spark.driver.memory": os.environ.get("USERBATCH_DRIVER_MEMORY", DEFAULT_DRIVER_MEMORY),
        "spark.driver.extraJavaOptions": "-Dlog4j2.level=error",
        "spark.python.worker.reuse": "true",
    }
    return conf


def session(
    master: str | None = None,
    app_name: str = "userbatch",
    conf: Mapping[str, str] | None = None,
    pins: Mapping[str, int] | None = None,
    register_views: bool = True,
):
    """Get (or create) the SparkSession and register the catalog's tables as SQL views.

    ``pins`` maps table names to versions: ``session(pins={"dp1.object": 3})`` makes ``dp1.object`` read
    version 3 for the whole session — the reproducible way to run a query again.
    """
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    submitted = bool(os.environ.get("PYSPARK_GATEWAY_PORT"))  # launched by spark-submit: its JVM is configured
    master = master or os.environ.get("SPARK_MASTER") or "local[*]"
    builder = SparkSession.builder.master(master).appName(app_name)
    base = _base_conf(master)
    if submitted:  # what spark-submit was given (driver memory, app name, event log) stands
        for key in ("spark.driver.memory", "spark.driver.extraJavaOptions"):
            base.pop(key)
    for key, value in {**base, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("USERBATCH_SPARK_LOG_LEVEL", "ERROR"))
    if register_views:
        from .tables.views import register_catalog_views

        register_catalog_views(spark, pins=pins)
    return spark


def active_session():
    """The running session, or None; library code uses it instead of starting Spark just to look."""
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()
