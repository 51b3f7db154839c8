"""backend.db.session: which database URLs are refused, and `open_database` naming what is wrong with a database."""

from __future__ import annotations

import socket
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from backend.db import session as db_session
from backend.db.session import DatabaseSetupError, make_engine, migrate, normalize_url, open_database

SECRET = "pw-s3cret"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("postgres://", "names no database"),
        (f"postgresql://app:{SECRET}@db:99999/ml", "port 99999 is out of range"),
        (f"postgresql://app:{SECRET}@db:abc/ml", "is not a database URL"),
    ],
)
def test_urls_that_cannot_keep_data_are_refused_without_their_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        normalize_url(url)
    assert SECRET not in str(caught.value)


def test_open_database_names_what_is_wrong_with_an_sqlite_file(tmp_path: Path) -> None:
    folder = tmp_path / "folder.db"
    folder.mkdir()
    (tmp_path / "random.db").write_bytes(bytes(range(256)) * 20)
    cases = {
        folder: "is a folder, not a database file",
        tmp_path / "random.db": "is not an SQLite database",
        tmp_path / "missing" / "backend.db": f"the folder {tmp_path / 'missing'} does not exist",
    }
    for path, message in cases.items():
        with pytest.raises(DatabaseSetupError, match=message):
            open_database(f"sqlite:///{path}")
    assert not (tmp_path / "missing").exists()


def test_open_database_refuses_a_schema_from_a_newer_version_and_keeps_foreign_tables(tmp_path: Path) -> None:
    newer = f"sqlite:///{tmp_path / 'newer.db'}"
    migrate(newer)
    engine = make_engine(newer)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(DatabaseSetupError, match="revision '9999', which this version of the backend does not know"):
        open_database(newer)
    # Another application's database with a table of the same name: refused, its rows untouched.
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO projects VALUES (1, 'theirs')")
    with pytest.raises(DatabaseSetupError, match="migrating its schema failed: table projects already exists"):
        open_database(f"sqlite:///{other}")
    with sqlite3.connect(other) as conn:
        assert conn.execute("SELECT * FROM projects").fetchall() == [(1, "theirs")]


def test_open_database_names_an_unreachable_postgresql_without_its_password() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DatabaseSetupError, match="Connection refused") as caught:
        open_database(f"postgresql://app:{SECRET}@127.0.0.1:{port}/ml")
    assert SECRET not in str(caught.value) and f"app:***@127.0.0.1:{port}/ml" in str(caught.value)


def test_a_postgresql_server_that_never_answers_is_given_up_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that takes the connection and says nothing held start-up and every request for ever."""
    monkeypatch.setattr(db_session, "PG_CONNECT_TIMEOUT_S", 2)  # libpq's smallest
    outcome: list[BaseException] = []

    def connect(engine_url: str) -> None:
        engine = make_engine(engine_url)
        try:
            engine.connect().close()
        except OperationalError as exc:
            outcome.append(exc)
        finally:
            engine.dispose()

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)  # accepts into its backlog, never answers
        thread = threading.Thread(target=connect, args=(f"postgresql://app@127.0.0.1:{silent.getsockname()[1]}/ml",),
                                  daemon=True)  # fmt: skip
        thread.start()
        thread.join(60)  # a guard against hanging the suite, not a measurement
    assert not thread.is_alive() and "timeout" in str(outcome[0])
