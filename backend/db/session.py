"""Engines, sessions and migrations: make_engine(url), session_factory, session_scope, migrate.

SQLite (the default, a file in the data folder) is set up for one process with several threads and
a few processes: WAL journal (readers never block the writer), foreign keys on, a busy timeout, and
every transaction opened with ``BEGIN IMMEDIATE`` so that two writers queue on the busy timeout
instead of failing with "database is locked" when a read transaction upgrades to a write. That
serialises transactions, so keep them short (the webhook path writes a few rows). Within one
process, writers queue for that lock in `backend.db.sqlite_lock` (first come first served, event
processing after webhook intake); `read_scope` reads without it.

PostgreSQL goes through psycopg 3 (``postgresql+psycopg://user@host/db``); plain ``postgresql://``
and ``postgres://`` URLs are rewritten to that driver. A connection attempt gives up after
`PG_CONNECT_TIMEOUT_S` unless the URL says otherwise (``?connect_timeout=N``): a server that takes the
connection and never answers held start-up, and every request, for ever.

`open_database(url, pool_size=N)` is what a process starts with: the engine, its schema migrated, or one
`DatabaseSetupError` saying what is wrong (server unreachable, not a database file, a schema from a
newer version of the backend), with the URL's password masked. Its pool keeps `pool_size` connections
(`backend.context.pool_size`: one per thread that may hold one) plus SQLAlchemy's overflow of
`POOL_OVERFLOW`; a thread finding all of them taken waits up to 30 s (SQLAlchemy's pool_timeout) and
fails. `connection_limit(engine)` says how many connections PostgreSQL lets this login hold on its
database, for the start-up check that the pool's threads can all be served.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from backend.db import sqlite_lock
from backend.db.sqlite_lock import WriteLock
from backend.logs import mask_url_password

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10  # libpq's connect_timeout unless the URL sets one
# Serialises concurrent `migrate` calls on one PostgreSQL database (e.g. several gunicorn workers).
_PG_MIGRATION_LOCK = 7_303_201
_READ_ONLY = "dcpose_read_only"  # execution option of read_scope connections
POOL_OVERFLOW = 10  # connections opened beyond pool_size for a burst, then closed (SQLAlchemy's default)


class DatabaseSetupError(RuntimeError):
    """The database of DATABASE_URL cannot be opened or migrated; the message names the URL (password masked)
    and the problem."""


def default_sqlite_url(data_dir: str | Path) -> str:
    """The default database: ``sqlite:///<data_dir>/backend.db`` (the folder is created)."""
    folder = Path(data_dir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'backend.db'}"


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL, sending PostgreSQL to the psycopg 3 driver.

    Raises:
        ValueError: the URL cannot be parsed, names a database other than SQLite/PostgreSQL, or one
            this service cannot keep data in (in-memory SQLite, no PostgreSQL database name); the
            message shows the URL with its password masked.
    """
    shown = _masked(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ValueError(f"DATABASE_URL {shown!r} is not a database URL: {exc}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(
            f"DATABASE_URL uses {backend!r}; supported are sqlite:///PATH and postgresql+psycopg://USER@HOST/DB"
        )
    if backend == "sqlite" and (parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed.database)):
        raise ValueError(
            f"DATABASE_URL {shown!r} is an in-memory SQLite database: each connection would get its own, "
            "empty one, and nothing would be kept; give a file, sqlite:///PATH"
        )
    if backend == "postgresql" and not parsed.database:
        raise ValueError(f"DATABASE_URL {shown!r} names no database: postgresql+psycopg://USER@HOST/DB")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ValueError(f"DATABASE_URL {shown!r}: port {parsed.port} is out of range (1 to 65535)")
    return parsed


def _masked(url: str | URL) -> str:
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return mask_url_password(url) or ""


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
        if "connect_timeout" not in parsed.query:
            options["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S, **kwargs.pop("connect_args", {})}
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


def open_database(url: str | URL, *, migrate_schema: bool = True, pool_size: int | None = None) -> Engine:
    """The engine a process starts with: `make_engine(url)`, its schema migrated to head (`migrate`).

    Args:
        migrate_schema: False: the engine only, nothing connected to yet (a child of a process that migrated).
        pool_size: connections the pool keeps (it opens `POOL_OVERFLOW` more for bursts); None: SQLAlchemy's 5.

    Raises:
        ValueError: the URL itself cannot be used (`normalize_url`).
        DatabaseSetupError: the database cannot be reached or opened (an SQLite path that is a folder, in a
            folder that does not exist, or a file that is no database), or its schema comes from a newer
            version of the backend or cannot be migrated; the message shows the URL with its password masked.
    """
    parsed = normalize_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite" and not parsed.query.get("uri"):
        path = Path(str(parsed.database)).expanduser()  # a relative path is the working directory's, as sqlite3's
        if path.is_dir():
            raise DatabaseSetupError(f"DATABASE_URL {shown!r}: {path} is a folder, not a database file")
        if not path.parent.is_dir():
            raise DatabaseSetupError(f"DATABASE_URL {shown!r}: the folder {path.parent} does not exist")
    pool = {} if pool_size is None else {"pool_size": pool_size, "max_overflow": POOL_OVERFLOW}
    engine = make_engine(parsed, **pool)
    if not migrate_schema:
        return engine
    from alembic.util import CommandError

    step = ""
    try:
        revision = current_revision(engine)
        if revision is not None and not _known_revision(revision):
            raise DatabaseSetupError(
                f"DATABASE_URL {shown!r}: its schema is at revision {revision!r}, which this version of the "
                f"backend does not know (its newest is {head_revision()!r}): a newer version migrated it; run "
                "that version, or restore a backup of the database taken before"
            )
        step = "migrating its schema failed: "
        migrate(engine)
    except (SQLAlchemyError, CommandError) as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if parsed.password:
            reason = reason.replace(parsed.password, "***")
        if parsed.get_backend_name() == "sqlite" and "not a database" in reason:
            reason = f"{parsed.database} is not an SQLite database ({reason})"
        raise DatabaseSetupError(f"DATABASE_URL {shown!r}: {step}{reason}") from None
    except DatabaseSetupError:
        engine.dispose()
        raise
    return engine


@dataclass(frozen=True)
class ConnectionLimit:
    """The most connections one login may hold at once on a PostgreSQL database, and the limit that sets it."""

    connections: int
    source: str  # e.g. "the server's max_connections 100, less 3 reserved"


def connection_limit(engine: Engine) -> ConnectionLimit | None:
    """How many connections PostgreSQL lets this engine's login hold at once on its database: the least of
    the server's max_connections (less the slots reserved for superusers, for a login that is none), the
    database's CONNECTION LIMIT and the role's (neither binds a superuser). Connections of other clients
    count against the same limits; this is the most this process could ever get.

    Returns:
        The limit; None on SQLite, which has none.
    """
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as connection:
        row = connection.execute(text(
            "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,"
            " coalesce(current_setting('reserved_connections', true)::int, 0),"  # PostgreSQL 16+
            " r.rolsuper, r.rolconnlimit, d.datconnlimit, r.rolname, d.datname"
            " FROM pg_roles r, pg_database d WHERE r.rolname = session_user AND d.datname = current_database()"
        )).one()  # fmt: skip
    max_connections, superuser_reserved, reserved, superuser, role_limit, database_limit, role, database = row
    if superuser:
        return ConnectionLimit(max_connections, f"the server's max_connections {max_connections}")
    limits = [ConnectionLimit(max_connections - superuser_reserved - reserved,
                              f"the server's max_connections {max_connections}, less "
                              f"{superuser_reserved + reserved} reserved")]  # fmt: skip
    if database_limit >= 0:
        limits.append(
            ConnectionLimit(database_limit, f"database {database}'s CONNECTION LIMIT {database_limit}")
        )
    if role_limit >= 0:
        limits.append(ConnectionLimit(role_limit, f"role {role}'s CONNECTION LIMIT {role_limit}"))
    return min(limits, key=lambda limit: limit.connections)


def _known_revision(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory(str(MIGRATIONS_DIR)).get_revision(revision) is not None
    except CommandError:
        return False


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
