"""The bare Spark session: one place that decides how userbatch talks to Spark, below the tables layer.

:func:`spark_session` gives the embedded default (``local[*]``) or a cluster (``master=`` / ``SPARK_MASTER``), or
a Spark Connect session (``remote=`` / ``SPARK_REMOTE``), with the settings every job needs: the venv's Python on
the workers, Arrow transfers, shuffle partitions sized to the cores, quiet logs, UTC, and scratch space under the
facility home. It knows nothing of the catalog: :func:`userbatch.session` (in :mod:`userbatch.spark`, above the
tables layer) adds the catalog's tables as SQL views. Library code that needs *a* session and has none calls
:func:`get_session` — the running one, or a bare new one.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Mapping

from .config import settings
from .errors import UserbatchError

log = logging.getLogger(__name__)

def base_conf(master: str) -> dict[str, str]:
    """The configuration every session gets (spark-submit's own settings win in a submitted driver).

    Parameters
    ----------
    master : str
        The Spark master; ``local[...]`` sizes the shuffle to this machine's cores.

    Returns
    -------
    dict of str to str
        Spark configuration keys and values.
    """
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
        "spark.ui.enabled": "true" if s.spark.ui else "false",
        "spark.driver.memory": s.spark.driver_memory,
        "spark.driver.extraJavaOptions": "-Dlog4j2.level=error",
        "spark.python.worker.reuse": "true",
    }
    return conf


def spark_session(
    master: str | None = None,
    app_name: str = "userbatch",
    conf: Mapping[str, str] | None = None,
    remote: str | None = None,
):
    """Get (or create) a SparkSession configured for userbatch, without the catalog's views.

    Parameters
    ----------
    master : str, optional
        Spark master URL; default ``SPARK_MASTER`` or ``local[*]``.
    app_name : str
        The application name Spark shows.
    conf : mapping, optional
        Extra Spark configuration, over the defaults of :func:`base_conf`.
    remote : str, optional
        ``sc://host:port`` (or ``SPARK_REMOTE``) for a Spark Connect session; operations that need the JVM of a
        classic session (``sparkContext``, RDDs, broadcast variables) raise
        :class:`~userbatch.errors.UserbatchError` there.

    Returns
    -------
    pyspark.sql.SparkSession
    """
    s = settings().spark
    remote = remote or (None if master else s.remote)
    if remote:
        return _remote_session(remote, app_name, conf)
    os.environ.update(PYSPARK_PYTHON=sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    master = master or s.master or "local[*]"
    builder = SparkSession.builder.master(master).appName(app_name)
    base = base_conf(master)
    if s.submitted:  # launched by spark-submit: what it was given (driver memory, app name, any --conf) stands
        from pyspark import SparkConf

        given = SparkConf()  # spark-submit's settings, from the JVM it started
        base = {k: v for k, v in base.items() if not given.contains(k)}
        for key in ("spark.driver.memory", "spark.driver.extraJavaOptions"):
            base.pop(key, None)
    for key, value in {**base, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(s.log_level)
    return spark


def get_session():
    """The running session, or a bare new one: what library code calls when it was given no session."""
    return active_session() or spark_session()


#: Session-level settings of the factory that a Connect client may set (the others are the server's, fixed at its
#: start by ``userbatch connect start`` from the same :func:`base_conf`).
_REMOTE_CONF = ("spark.sql.session.timeZone", "spark.sql.parquet.outputTimestampType",
                "spark.sql.execution.arrow.pyspark.enabled")


def _remote_session(remote: str, app_name: str, conf):
    from pyspark.sql import SparkSession

    if not remote.startswith("sc://"):
        raise UserbatchError(f"a Spark Connect URL starts with sc://; got {remote!r}")
    try:
        spark = SparkSession.builder.remote(remote).appName(app_name).getOrCreate()
    except ImportError as exc:
        raise UserbatchError(f"Spark Connect client packages are missing ({exc}); pip install 'pyspark[connect]'") \
            from exc
    base = base_conf("local")
    settings_ = {**{k: base[k] for k in _REMOTE_CONF}, **(conf or {})}
    for key, value in settings_.items():
        try:
            spark.conf.set(key, value)
        except Exception as exc:  # noqa: BLE001 - a static conf cannot change per session: the server's stands
            log.debug("remote session: %s not set (%s)", key, exc)
    return spark


def is_remote(spark) -> bool:
    """True for a Spark Connect session (no JVM here: no sparkContext, RDDs or broadcast variables).

    Note: creating a Connect session switches PySpark in this whole process to Connect mode
    (``SPARK_CONNECT_MODE_ENABLED``); keep classic and Connect sessions in separate processes."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def require_classic(spark, what: str) -> None:
    """Raise a clear error where an operation needs a classic (JVM) session and ``spark`` is a Connect one."""
    if spark is not None and is_remote(spark):
        raise UserbatchError(f"{what} needs a classic session (it uses the SparkContext); this is a Spark Connect "
                             "session: run it in a job (userbatch submit / spark-submit) or with "
                             "userbatch.session(master=...)")


def default_parallelism(spark) -> int:
    """``sparkContext.defaultParallelism`` on a classic session; on Spark Connect (no SparkContext) the server's
    ``spark.default.parallelism`` (``userbatch connect start`` sets it to the cores it runs on), else the cores of
    a ``local[N]`` master — the number of tasks to plan for."""
    if not is_remote(spark):
        return int(spark.sparkContext.defaultParallelism)

    def conf(key):
        try:
            return spark.conf.get(key, None)
        except Exception:  # noqa: BLE001 - not readable from this client
            return None

    value = conf("spark.default.parallelism")
    if value:
        return max(1, int(value))
    master = conf("spark.master") or ""
    if master.startswith("local[") and master[6:-1].isdigit():
        return int(master[6:-1])
    return os.cpu_count() or 2


def active_session():
    """The running session, or None; library code uses it instead of starting Spark just to look."""
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()
