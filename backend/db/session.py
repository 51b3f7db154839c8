"""Engines, sessions and migrations: make_engine(url), session_factory, session_scope, migrate.

SQLite (the default, a file in the data folder) is set up for one process with several threads and
a few processes: WAL journal (readers never block the writer), foreign keys on, a busy timeout, and
every transaction opened with ``BEGIN IMMEDIATE`` so that two writers queue on the busy timeout
instead of failing with "database is locked" when a read transaction upgrades to a write. That
serialises transactions, so keep them short (the webhook path writes a few rows). Within one
process, writers queue for that lock in `backend.db.sqlite_lock` (first come first served, event
processing after webhook intake); `read_scope` reads without it.

PostgreSQL goes through psycopg 3 (``postgresql+psycopg://user@host/db``); plain ``postgresql://``
and ``postgres://`` URLs are rewritten to that driver.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from backend.db import sqlite_lock
from backend.db.sqlite_lock import WriteLock

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Serialises concurrent `migrate` calls on one PostgreSQL database (e.g. several gunicorn workers).
_PG_MIGRATION_LOCK = 7_303_201
_READ_ONLY = "dcpose_read_only"  # execution option of read_scope connections


def default_sqlite_url(data_dir: str | Path) -> str:
    """The default database: ``sqlite:///<data_dir>/backend.db`` (the folder is created)."""
    folder = Path(data_dir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'backend.db'}"


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL, sending PostgreSQL to the psycopg 3 driver.

    Raises:
        ValueError: the URL cannot be parsed or names a database other than SQLite/PostgreSQL.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ValueError(f"DATABASE_URL {str(url)!r} is not a database URL: {exc}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(
            f"DATABASE_URL uses {parsed.get_backend_name()!r}; supported are sqlite:///PATH and "
            "postgresql+psycopg://USER@HOST/DB"
        )
    return parsed


def _sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # Take BEGIN out of the sqlite3 module's hands (see _sqlite_begin) and set the pragmas that
    # must hold on every connection.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")  # a no-op ("memory") for in-memory databases
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL, much faster
    finally:
        cursor.close()


def _sqlite_begin(lock: WriteLock) -> Callable[[Connection], None]:
    def begin(connection: Connection) -> None:
        # IMMEDIATE takes the write lock at BEGIN, waiting up to busy_timeout; a deferred BEGIN that
        # later writes can fail at once with SQLITE_BUSY when another writer committed meanwhile.
        # A read_scope reads only: a deferred BEGIN, which neither takes nor waits for that lock.
        if connection.get_execution_options().get(_READ_ONLY):
            connection.exec_driver_sql("BEGIN")
            return
        dbapi_connection = connection.connection.dbapi_connection
        taken = lock.acquire(dbapi_connection)  # this process's writers queue here, not in SQLite's busy handler
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            if taken:
                lock.release(dbapi_connection)
            raise

    return begin


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Create an engine for SQLite or PostgreSQL with the settings this service relies on.

    Args:
        url: SQLAlchemy URL (``sqlite:///path.db``, ``postgresql+psycopg://...``).
        **kwargs: passed to `sqlalchemy.create_engine` (e.g. ``echo=True``).

    Returns:
        The engine. JSON columns refuse NaN/inf on both backends (PostgreSQL's json type does).
    """
    parsed = normalize_url(url)
    options: dict[str, Any] = {"json_serializer": functools.partial(json.dumps, allow_nan=False)}
    if parsed.get_backend_name() == "sqlite":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        options["connect_args"] = connect_args
    else:
        options["pool_pre_ping"] = True
    options.update(kwargs)
    engine = create_engine(parsed, **options)
    if parsed.get_backend_name() == "sqlite":
        lock = WriteLock(SQLITE_BUSY_TIMEOUT_MS / 1000)
        sqlite_lock.install(engine, lock)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin(lock))
    logger.debug("database engine for %s", parsed.render_as_string(hide_password=True))
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory; objects stay readable after commit (``expire_on_commit=False``)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit when the block ends normally, roll back (and re-raise) otherwise."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def read_scope(engine: Engine) -> Iterator[Connection]:
    """One read-only transaction on a Core connection (rolled back at the end).

    On SQLite it begins DEFERRED: it neither takes nor waits for the write lock, and sees the last
    commit (WAL). Statements that write in it may fail with "database is locked"; use `session_scope`."""
    with engine.connect() as connection:
        connection.execution_options(**{_READ_ONLY: True})
        transaction = connection.begin()
        try:
            yield connection
        finally:
            transaction.rollback()


@contextmanager
def read_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """`read_scope` for ORM reads: a session whose transaction is read-only (rolled back at the end)."""
    session = factory()
    try:
        session.connection(execution_options={_READ_ONLY: True})
        yield session
    finally:
        session.rollback()
        session.close()


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config  # lazy: only migrations need alembic

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _run_alembic(engine: Engine, action: str, revision: str) -> None:
    from alembic import command

    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        getattr(command, action)(_alembic_config(connection), revision)


def migrate(url_or_engine: str | URL | Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (``alembic upgrade head`` by default), in one transaction.

    Safe to call at every start-up: an up-to-date database is left as it is, and concurrent callers
    on PostgreSQL wait for each other (advisory lock; SQLite's BEGIN IMMEDIATE does the same).
    """
    engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
    try:
        _run_alembic(engine, "upgrade", revision)
        logger.info("database schema at %s (%s)", revision, engine.dialect.name)
    finally:
        if engine is not url_or_engine:
            engine.dispose()


def downgrade(url_or_engine: str | URL | Engine, revision: str = "base") -> None:
    """Take the schema down to `revision` (``base`` drops every table); for tests and rollbacks."""
    engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
    try:
        _run_alembic(engine, "downgrade", revision)
    finally:
        if engine is not url_or_engine:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """The newest revision among the migration scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration scripts found in {MIGRATIONS_DIR}")
    return head
