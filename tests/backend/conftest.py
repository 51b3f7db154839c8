"""Database fixtures: every DB test runs on a SQLite file in tmp_path AND on PostgreSQL at 127.0.0.1:5432.

PostgreSQL: one fresh database with a random name per test session (migrated once, emptied before
each test, dropped at the end). Override the server with TEST_POSTGRES_URL (an admin URL, default
``postgresql://postgres@127.0.0.1:5432/postgres``). If the server is unreachable the PostgreSQL
variants fail in CI (CI=true) and are skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from backend.db.session import current_revision, head_revision, make_engine, migrate, session_factory
from backend.db.tables import Base

DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB_BACKENDS = ("sqlite", "postgresql")


def _pg_conninfo(url: str) -> str:
    """A libpq URI (what psycopg.connect takes) from a SQLAlchemy-style URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL for the DB tests is unavailable: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: PostgreSQL runs at 127.0.0.1:5432 on every machine, CI included)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh, migrated PostgreSQL database for this test session; dropped afterwards."""
    import psycopg

    admin_url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_PG_ADMIN_URL)
    try:
        admin = psycopg.connect(_pg_conninfo(admin_url), autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        _unavailable(f"cannot connect to {make_url(admin_url).render_as_string()}: {exc}")
    name = f"dcpose_test_{uuid.uuid4().hex[:12]}"
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        admin.close()
        _unavailable(f"cannot create a database: {exc}")
    url = (
        make_url(admin_url)
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(hide_password=False)
    )
    try:
        migrate(url)
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def _postgres_admin_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


def _empty_postgres(engine: Engine) -> None:
    if current_revision(engine) != head_revision():
        migrate(engine)  # a test downgraded the schema
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=DB_BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    """A migrated, empty database: a SQLite file in tmp_path, then PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{os.path.join(tmp_path, 'backend.db')}"
        migrate(url)
        return url
    _empty_postgres(request.getfixturevalue("_postgres_admin_engine"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_factory(db_engine: Engine) -> sessionmaker[Session]:
    return session_factory(db_engine)


@pytest.fixture
def db_session(db_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session on the test database; left uncommitted work is rolled back."""
    session = db_factory()
    yield session
    session.rollback()
    session.close()
