"""The facility database: one SQLAlchemy engine per URL (SQLite file by default, PostgreSQL when deployed).

The schema is owned by Alembic migrations (``userbatch/migrations``), applied when an engine is first made, under
a lock so that several processes starting at once do not race. :func:`transaction` is the one way to change state
that must not interleave with another writer (the quota ledger): it takes the database's write lock first —
``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on PostgreSQL — so check-then-insert is atomic.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Session

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
#: Advisory-lock keys (PostgreSQL): the ledger, and schema migrations.
LEDGER_LOCK = 7_710_001
MIGRATION_LOCK = 7_710_002


class Base(DeclarativeBase):
    """Declarative base shared by every facility table (catalog, users, quotas, runs, ...)."""


def is_sqlite(engine_or_url) -> bool:
    url = engine_or_url if isinstance(engine_or_url, str) else str(engine_or_url.url)
    return url.startswith("sqlite")


@functools.lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """Create (once per URL) an engine and bring its schema to the newest migration.

    SQLite gets WAL and a busy timeout so that concurrent writer processes queue instead of failing, and begins
    transactions itself so that :func:`transaction` can ask for ``BEGIN IMMEDIATE``.
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            dbapi_conn.isolation_level = None  # pysqlite must not BEGIN on its own: we do, below
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - trivial
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("ub_write_lock")
                                 else "BEGIN")
    else:
        engine = create_engine(url, pool_pre_ping=True)
    migrate(engine)
    return engine


def _alembic_config(conn: Connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(None)
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine) -> None:
    """Upgrade the schema to head (a no-op when it is there). A database made before migrations existed (the
    catalog table only) is stamped at the first revision and upgraded from there."""
    head = head_revision()
    if current_revision(engine) == head:
        return
    from alembic import command

    with _migration_lock(engine):
        with engine.connect() as conn:
            conn = conn.execution_options(ub_write_lock=True)
            with conn.begin():
                if not is_sqlite(engine):
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
                insp = inspect(conn)
                cfg = _alembic_config(conn)
                if not insp.has_table("alembic_version") and insp.has_table("ub_tables"):
                    command.stamp(cfg, "0001")
                command.upgrade(cfg, "head")
    log.info("facility database %s at schema %s", engine.url.render_as_string(hide_password=True), head)


@contextlib.contextmanager
def _migration_lock(engine: Engine):
    """SQLite: a file lock beside the database (DDL and Alembic's version table in one transaction is not enough
    when two processes both find the database empty)."""
    if not is_sqlite(engine):
        yield
        return
    path = Path(str(engine.url.database) + ".migrate.lock")
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def transaction(engine: Engine, lock: bool = False) -> Iterator[Session]:
    """A session in one transaction, committed on success and rolled back on error.

    ``lock=True`` serialises it against every other locked transaction on the same database (the ledger's
    check-then-reserve): SQLite's write lock is taken at BEGIN, PostgreSQL takes an advisory lock first.
    """
    with engine.connect() as conn:
        if lock:
            conn = conn.execution_options(ub_write_lock=True)
        with conn.begin():
            if lock and not is_sqlite(engine):
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LEDGER_LOCK})
            with Session(bind=conn, expire_on_commit=False) as session:
                yield session
                session.flush()
