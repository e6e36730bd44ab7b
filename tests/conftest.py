"""Shared fixtures: one SparkSession per test run, and a fresh facility (home, database, warehouse) per test.

Each test gets its own catalog database and warehouse, so catalogs and tables never leak between tests; the Spark
session is shared because starting the JVM costs seconds (its teardown fails the run if a test started another).
``db_url`` runs a test against SQLite and PostgreSQL (the latter only where a server answers on 127.0.0.1:5432;
elsewhere that case is skipped with the reason). ``facility`` is a facility for user X under a config.

Tiers, by marker: ``make check`` runs ``-m "not slow and not cluster and not heavy"`` (minutes, one Spark session,
every new test included unless marked), ``make test`` everything (CI).

Hypothesis profiles: ``ci`` (the default, and ``make test``) is derandomised — the same examples every run, no
example database, no deadline — so the suite never turns red by chance; ``dev`` (``make check``, or
``HYPOTHESIS_PROFILE=dev`` / ``--hypothesis-profile=dev``) explores new random examples each run and keeps the
failures it finds in .hypothesis/ (not in git) to replay them first. A failure prints its seed and a
``@reproduce_failure`` blob; put the example in an ``@example(...)`` on the test when fixing it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from pathlib import Path

# One OpenMP / BLAS thread per process (unless the environment says otherwise), set before numpy, scikit-learn or
# a Spark JVM loads, so this process, the notebook kernels and the spark-submits it starts all inherit it. On the
# suite's 2 shared cores every test process already runs beside Spark's own threads; a 2-thread OpenMP team then
# spin-waits for a descheduled thread (a 100-iteration HistGradientBoosting fit measured 7-26 s instead of 1.4 s).
# No assertion depends on it (results are compared within one run); Spark gives its Python workers
# OMP_NUM_THREADS=spark.task.cpus (1) in any case.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import hypothesis  # noqa: E402 - after the thread settings above
import pytest  # noqa: E402

with contextlib.suppress(ImportError):  # threadpoolctl comes with scikit-learn (the ml extra)
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(os.environ["OMP_NUM_THREADS"]))  # numpy's BLAS: a pytest plugin loaded it before this file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

# Runs execute as their owners' OS accounts (userbatch.facility.accounts): the facility homes and warehouses the
# tests make must be passable (o+x) by those accounts, as a deployment's are. pytest makes its directories 0700.
if os.geteuid() == 0:
    import stat as _stat

    from _pytest.tmpdir import TempPathFactory

    _mktemp = TempPathFactory.mktemp

    def _passable_mktemp(self, basename, numbered=True):
        path = _mktemp(self, basename, numbered)
        for p in (path, *path.parents):
            if p == Path("/") or p.stat().st_mode & _stat.S_IXOTH:
                break
            p.chmod(p.stat().st_mode | _stat.S_IXOTH)
        return path

    TempPathFactory.mktemp = _passable_mktemp

PG_ADMIN_URL = os.environ.get("USERBATCH_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")

# A loaded 2-core machine runs an example many times slower than an idle one: no deadline in either profile.
hypothesis.settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.register_profile("dev", deadline=None, print_blob=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

def pytest_configure(config):
    # "slow" (multi-process: spark-submit runs, servers, kernels, kill and concurrency) is in pyproject.toml
    config.addinivalue_line("markers", "cluster: starts a Spark cluster (standalone master and workers, dev cluster)")
    config.addinivalue_line("markers", "heavy: in-process Spark work too large for the fast tier (make test runs it)")
    config.addinivalue_line("markers", "slurm: against the local Slurm (.services/slurm; skipped, with the reason, "
                                       "where its daemons cannot start)")


@pytest.fixture(scope="session")
def session_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("ubhome")
    os.environ["USERBATCH_HOME"] = str(home)
    os.environ["USERBATCH_USER"] = "tester"
    os.environ.pop("USERBATCH_DB_URL", None)
    os.environ.pop("USERBATCH_WAREHOUSE", None)
    os.environ.pop("USERBATCH_GROUPS", None)
    return home


@pytest.fixture(scope="session")
def spark(session_home):
    import userbatch

    session = userbatch.session(master="local[2]", app_name="userbatch-tests", register_views=False,
                                conf={"spark.sql.shuffle.partitions": "4", "spark.driver.memory": "3g"})
    yield session
    from pyspark import SparkContext

    # every in-process test shares this one session (userbatch.session() finds it); none may stop or replace it
    active = SparkContext._active_spark_context
    session.stop()
    assert active is session.sparkContext, f"a test replaced the shared SparkContext ({active!r})"


@pytest.fixture
def ub_env(session_home, tmp_path, monkeypatch):
    """A fresh facility for one test: its own SQLite catalog and warehouse under tmp_path."""
    monkeypatch.setenv("USERBATCH_DB_URL", f"sqlite:///{tmp_path / 'facility.db'}")
    monkeypatch.setenv("USERBATCH_WAREHOUSE", str(tmp_path / "warehouse"))
    monkeypatch.setenv("USERBATCH_USER", "tester")
    monkeypatch.delenv("USERBATCH_GROUPS", raising=False)
    return tmp_path


@pytest.fixture
def facility(ub_env):
    """A facility for user X under a config, for one test: ``fx = facility(CONFIG)``, then ``fx.fac("alice")``
    (see helpers.facility_under). It lives in the test's tmp_path, on the database the ``db_url`` fixture chose
    when the test asks for that (SQLite and PostgreSQL), else on SQLite."""
    from helpers import facility_under

    with contextlib.ExitStack() as stack:
        yield lambda config=None, **kwargs: stack.enter_context(
            facility_under(ub_env, config, db_url=os.environ["USERBATCH_DB_URL"], **kwargs))


def _postgres_available() -> str | None:
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        return f"no PostgreSQL at {PG_ADMIN_URL}: {exc.__class__.__name__}"


@pytest.fixture(scope="session")
def pg_database():
    """A throw-away PostgreSQL database for this test run (dropped at the end)."""
    reason = _postgres_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI installs PostgreSQL; its absence there is a failure, not a skip
        pytest.skip(reason)
    import sqlalchemy as sa

    name = f"ub_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    yield url
    from userbatch.tables.db import engine_for

    engine_for(url).dispose()
    engine_for.cache_clear()
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, ub_env, monkeypatch):
    """The facility database URL, once per backend; the catalog tables start empty in each test."""
    if request.param == "sqlite":
        url = f"sqlite:///{ub_env / 'facility.db'}"
    else:
        url = request.getfixturevalue("pg_database")

        from userbatch.tables.db import Base, engine_for

        engine = engine_for(url)
        with engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
    monkeypatch.setenv("USERBATCH_DB_URL", url)
    return url
