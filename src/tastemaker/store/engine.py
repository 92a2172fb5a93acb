"""Engines by URL scheme, SQLite settings, and migrations to the current schema."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from tastemaker.errors import ConfigError, StoreError

__all__ = ["DEFAULT_URL", "make_engine", "migrate"]

DEFAULT_URL = "sqlite:///tastemaker.db"
MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 727_165_001  # any constant; serialises concurrent start-ups on PostgreSQL
_migrating = threading.Lock()  # alembic's context is module-global: one migration per process at a time


def make_engine(url: str) -> Engine:
    """An engine for ``sqlite:///path`` (WAL, full sync) or ``postgresql://...`` (psycopg 3)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"store URL {url!r} is not a database URL; use sqlite:///PATH or postgresql://...") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed.database)
    if backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")  # the one driver we ship and test
        return create_engine(parsed, pool_pre_ping=True, future=True)
    raise ConfigError(f"unsupported store URL scheme {parsed.drivername!r}; use sqlite:///PATH or postgresql://...")


def _sqlite_engine(database: str | None) -> Engine:
    if not database or database == ":memory:":
        # One in-memory database cannot be shared safely by a server's threads; a temp file can.
        raise ConfigError("in-memory SQLite is not supported; use a file, e.g. sqlite:///tmp/tastemaker.db")
    try:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder for the SQLite store {database!r}: {exc}") from exc
    engine = create_engine(f"sqlite:///{database}", connect_args={"timeout": 30.0, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # pysqlite's own transaction handling defers BEGIN; take it over so a batch is one transaction.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # an acknowledged batch survives power loss, not just a crash
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        # Five B-trees take every event; SQLite's 2 MiB default cache thrashes on their random keys, and
        # checkpointing every 4 MiB of WAL adds fsyncs. 64 MiB and 40 MiB measured best (BENCHMARKS.md).
        cur.execute("PRAGMA cache_size=-65536")
        cur.execute("PRAGMA wal_autocheckpoint=10000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        # Writers ask for BEGIN IMMEDIATE: they take the write lock up front (waiting busy_timeout)
        # instead of failing when a read-then-write transaction cannot upgrade its lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("writer") else "BEGIN")

    return engine


def migrate(engine: Engine) -> None:
    """Bring the database to the newest schema revision (no-op when it is current)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with _migrating, engine.connect().execution_options(writer=True) as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except SQLAlchemyError as exc:
        raise StoreError(f"could not migrate the store at {engine.url!r}: {exc.__class__.__name__}: {exc}") from exc
    except CommandError as exc:  # e.g. a database migrated by a newer tastemaker
        raise StoreError(f"the store at {engine.url!r} has a schema this version cannot use: {exc}") from exc
