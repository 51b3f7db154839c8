"""`build_context` at start-up: MODEL_DIR's subfolders, the database pool sized for the threads that use it,
a PostgreSQL login allowed too few connections, and the DEVICE check (shared with the command lines)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
from sqlalchemy import make_url, text

from backend.app import create_app
from backend.context import build_context
from backend.db.session import read_scope
from backend.db.tables import JOB_KINDS
from backend.settings import MAX_EVENT_WORKERS, Settings, SettingsError
from tests.backend.conftest import _pg_conninfo, pg_admin


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(**{"data_dir": tmp_path / "data", "model_dir": tmp_path / "models",
                       "frame_cache_dir": tmp_path / "frames", **values})  # fmt: skip


# ----------------------------------------------------------------------------- MODEL_DIR's subfolders


@pytest.mark.parametrize("sub", ["versions", "cache"])
def test_a_file_in_place_of_a_model_dir_subfolder_is_refused_at_start_up(tmp_path: Path, sub: str) -> None:
    """A new version is written into MODEL_DIR/versions only after its whole training run; a file in its place
    used to fail there, hours in. The heatmap cache's folder is checked the same way."""
    models = tmp_path / "models"
    models.mkdir()
    (models / sub).write_text("not a folder")
    with pytest.raises(SettingsError) as caught:
        build_context(_settings(tmp_path))
    assert str(caught.value) == f"MODEL_DIR={models}: a file is in the way of its folder {models / sub}"


def test_model_dir_subfolders_are_made_at_start_up(tmp_path: Path) -> None:
    ctx = build_context(_settings(tmp_path))
    ctx.close()
    assert (tmp_path / "models" / "versions").is_dir() and (tmp_path / "models" / "cache").is_dir()


# ----------------------------------------------------------------------------- the pool


def test_the_pool_serves_every_event_worker_job_thread_and_request_thread_at_once(db_url: str,
                                                                                  tmp_path: Path) -> None:  # fmt: skip
    """With EVENT_WORKERS at its most, every thread that may hold a connection gets one at the same time: the
    event workers, one thread per job kind, the training timer and THREADS=24 request threads (59 in all, more
    than a pool sized for gunicorn's default 8 holds with its overflow). SQLAlchemy's default pool (5 + 10
    overflow) made the 16th wait 30 s and fail with a pool timeout."""
    app = create_app(_settings(tmp_path, database_url=db_url, event_workers=MAX_EVENT_WORKERS, threads=24))
    ctx = app.extensions["dcpose"]
    threads = MAX_EVENT_WORKERS + len(JOB_KINDS) + 1 + 24
    try:
        with ExitStack() as held:
            for _ in range(threads):
                connection = held.enter_context(read_scope(ctx.engine))  # SQLite: one writer, many readers
                assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        ctx.close()


# ----------------------------------------------------------------------------- PostgreSQL's connection limits


@pytest.fixture
def limited_postgres() -> Iterator[tuple[str, str, str]]:
    """A login role and a database it owns (not a superuser, so CONNECTION LIMITs bind it); both dropped after.

    Yields:
        (admin libpq URL, role name, the role's SQLAlchemy URL to the database).
    """
    admin, admin_url = pg_admin()
    name = f"dcpose_limit_{uuid.uuid4().hex[:12]}"
    try:
        admin.execute(f'CREATE ROLE "{name}" LOGIN')
        admin.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
        url = make_url(admin_url).set(
            drivername="postgresql+psycopg", username=name, password=None, database=name
        )
        yield _pg_conninfo(admin_url), name, url.render_as_string(hide_password=False)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        admin.close()


@pytest.mark.parametrize("holder", ["ROLE", "DATABASE"])
def test_a_postgres_login_allowed_too_few_connections_is_refused_naming_event_workers(
        limited_postgres: tuple[str, str, str], tmp_path: Path, holder: str) -> None:  # fmt: skip
    """8 connections allowed: 4 event workers fit (with 2 job threads, the timer and a request), 8 do not; the
    error says which limit and what EVENT_WORKERS fits. Before, the service started and its event workers
    waited on each other (or PostgreSQL refused their connections) under load."""
    import psycopg

    admin_url, name, url = limited_postgres
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER {holder} "{name}" CONNECTION LIMIT 8')
    with pytest.raises(SettingsError) as caught:
        build_context(_settings(tmp_path, database_url=url, event_workers=8))
    which = "role" if holder == "ROLE" else "database"
    assert str(caught.value) == (
        f"EVENT_WORKERS=8: this process needs {8 + len(JOB_KINDS) + 2} database connections at once (8 event "
        f"workers, {len(JOB_KINDS)} job threads, the training timer, a request), but {which} {name}'s CONNECTION "
        f"LIMIT 8 lets it hold 8; set EVENT_WORKERS to {8 - len(JOB_KINDS) - 2} or less, or raise that limit"
    )
    build_context(_settings(tmp_path, database_url=url, event_workers=8 - len(JOB_KINDS) - 2)).close()


# ----------------------------------------------------------------------------- DEVICE


def test_a_cuda_device_that_is_not_here_is_refused_in_the_settings_words(tmp_path: Path) -> None:
    """The check is `model.device.check_device_present`, as for the command lines' --device; the message names
    DEVICE and says what to use instead."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    here = f"there are {count} CUDA device(s) here" if count else "CUDA is not available here"
    with pytest.raises(SettingsError) as caught:
        build_context(_settings(tmp_path, device=f"cuda:{count}"))
    assert str(caught.value) == f"DEVICE=cuda:{count}: {here}; use cpu or auto"
    build_context(_settings(tmp_path, device="auto")).close()
