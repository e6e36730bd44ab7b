"""The session front: a Spark session with every catalog table the user may read registered as a SQL view.

``userbatch.session()`` is what notebooks, jobs and the CLI call: the bare session of :mod:`userbatch.engine`
(embedded ``local[*]``, a cluster, or Spark Connect) plus a view ``namespace.name`` per readable table (latest
version, or the version pinned in ``pins``), so ``spark.sql("SELECT ... FROM dp1.object")`` works everywhere. It
sits above the tables layer (it needs the catalog); the library below it uses :mod:`userbatch.engine` directly.
"""

from __future__ import annotations

from typing import Mapping

# the session helpers keep their old home here too (deep paths keep working)
from .engine import active_session, base_conf, default_parallelism, get_session, is_remote, require_classic  # noqa: F401
from .engine import spark_session
from .tables.views import register_catalog_views


def session(
    master: str | None = None,
    app_name: str = "userbatch",
    conf: Mapping[str, str] | None = None,
    pins: Mapping[str, int] | None = None,
    register_views: bool = True,
    remote: str | None = None,
):
    """Get (or create) the SparkSession and register the catalog's tables as SQL views.

    Parameters
    ----------
    master : str, optional
        Spark master URL; default ``SPARK_MASTER`` or ``local[*]``.
    app_name : str
        The application name Spark shows.
    conf : mapping, optional
        Extra Spark configuration over userbatch's defaults.
    pins : mapping, optional
        Table name to version: ``session(pins={"dp1.object": 3})`` makes ``dp1.object`` read version 3 for the
        whole session — the reproducible way to run a query again.
    register_views : bool
        Register the catalog's tables as views (off: a bare session).
    remote : str, optional
        ``sc://host:port`` (or ``SPARK_REMOTE``): a Spark Connect session to a server started with
        ``userbatch connect start``, with the same views.

    Returns
    -------
    pyspark.sql.SparkSession
    """
    spark = spark_session(master=master, app_name=app_name, conf=conf, remote=remote)
    if register_views:
        register_catalog_views(spark, pins=pins)
    return spark
