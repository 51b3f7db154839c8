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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from annotation_io.label_studio import task_data
from annotation_io.types import Video
from backend.db.session import current_revision, head_revision, make_engine, migrate, session_factory
from backend.db.tables import Base
from backend.settings import Settings

if TYPE_CHECKING:
    from model.pipeline.predictor import Predictor

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


def pg_admin() -> tuple[Any, str]:
    """An autocommit connection to the tests' PostgreSQL server (TEST_POSTGRES_URL) and that URL; skips the
    test, or fails it under CI, when the server cannot be reached."""
    import psycopg

    admin_url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_PG_ADMIN_URL)
    try:
        return psycopg.connect(_pg_conninfo(admin_url), autocommit=True, connect_timeout=3), admin_url
    except psycopg.Error as exc:
        _unavailable(f"cannot connect to {make_url(admin_url).render_as_string()}: {exc}")
        raise  # _unavailable skips or fails the test


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh, migrated PostgreSQL database for this test session; dropped afterwards."""
    import psycopg

    admin, admin_url = pg_admin()
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


# ----------------------------------------------------------------------------- Flask app fixtures
# (backend service: a synthetic video, a fast simulated predictor, the app on the test database)


@dataclass
class SynthVideo:
    """A synthetic video written to disk: frames as JPEG files and its full ground truth."""

    name: str
    gt: Video
    paths: list[Path]
    width: int
    height: int

    @property
    def num_frames(self) -> int:
        return len(self.paths)

    def task(self, frame: int, task_id: int | None = None, project: int = 1, **extra: object) -> dict:
        """An LS frame task (as /predict sends it) whose image is the local frame file."""
        data = task_data(str(self.paths[frame]), self.name, frame, self.num_frames)
        task_id = 100 + frame if task_id is None else task_id
        return {
            "id": task_id,
            "data": data,
            "project": project,
            "annotations": [],
            "predictions": [],
            **extra,
        }


@pytest.fixture(scope="session")
def synth_video(tmp_path_factory: pytest.TempPathFactory) -> SynthVideo:
    """6 frames, 2 people, 160x120 (about 20 ms to generate)."""
    from annotation_io.posetrack import load
    from annotation_io.synth import generate

    root = tmp_path_factory.mktemp("synth")
    (path,) = generate(root, videos=1, frames=6, people=2, seed=5, size=(160, 120))
    gt = load(path)
    paths = [root / "images" / gt.name / f"{t:06d}.jpg" for t in range(gt.num_frames)]
    return SynthVideo(gt.name, gt, paths, 160, 120)


class GTDetector:
    """Person detector stub: the ground-truth boxes of the frame it is shown (matched by pixels)."""

    def __init__(self, video: SynthVideo) -> None:
        import cv2

        gt = video.gt.frames
        self.frames = [
            (cv2.imread(str(p)), [q.box for q in gt[t].persons]) for t, p in enumerate(video.paths)
        ]
        self.calls = 0

    def __call__(self, image: np.ndarray) -> list:
        self.calls += 1
        for pixels, boxes in self.frames:
            if pixels.shape == image.shape and np.array_equal(pixels, image):
                return list(boxes)
        return []


class SimulatedFactory:
    """A predictor factory for `create_app`: a real Predictor over the simulated backbone (fast).

    A picklable object, not a closure: training jobs run in a spawned child process
    (`backend.jobs.child`), which receives the service's predictor factory.
    """

    def __init__(self, video: SynthVideo, calls: list | None = None) -> None:
        self.video, self.calls = video, calls

    def __call__(self, spec: object) -> Predictor:
        import torch

        from model.pipeline.predictor import Predictor
        from model.testing.simulated import SimulatedBackbone

        # Tiny tensors: one intra-op thread is ~10x faster than two on the 2-core test machines.
        torch.set_num_threads(1)
        if self.calls is not None:
            self.calls.append(spec)
        return Predictor(SimulatedBackbone(self.video.gt, seed=0), None, detector=GTDetector(self.video))


def simulated_factory(video: SynthVideo, calls: list | None = None) -> SimulatedFactory:
    """A predictor factory for `create_app`: a real Predictor over the simulated backbone (fast)."""
    import torch

    torch.set_num_threads(1)  # as SimulatedFactory.__call__, from the start
    return SimulatedFactory(video, calls)


@pytest.fixture
def backend_settings(db_url: str, tmp_path: Path, synth_video: SynthVideo) -> Settings:
    """Settings on the test database (SQLite file, then PostgreSQL) with caches in tmp_path.

    Automatic training (TRAIN_MIN_CORRECTIONS) is off here; tests of that trigger set it themselves.
    So is the minimum of labelled frames for a run (TRAIN_MIN_FRAMES); its tests set one.
    Task images may be read from the synthetic video's folder and tmp_path (MEDIA_ROOTS).
    """
    return Settings(data_dir=tmp_path / "data", database_url=db_url, frame_cache_dir=tmp_path / "frames",
                    model_dir=tmp_path / "models", train_min_corrections=10**9, train_min_frames=0,
                    media_roots=(synth_video.paths[0].parents[2], tmp_path))  # fmt: skip


@pytest.fixture
def backend_app(backend_settings: Settings, synth_video: SynthVideo) -> Iterator[Flask]:
    """The service app with the simulated predictor; its context is closed afterwards."""
    from backend.app import create_app

    app = create_app(backend_settings, predictor_factory=simulated_factory(synth_video))
    yield app
    app.extensions["dcpose"].close()


@pytest.fixture
def app_client(backend_app: Flask) -> FlaskClient:
    return backend_app.test_client()


def drain(app: Flask, timeout: float = 10.0) -> None:
    """Waits until the app's background work (webhook processing, jobs) is done."""
    assert app.extensions["dcpose"].runner.drain(timeout), "background work did not finish in time"
