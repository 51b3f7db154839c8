"""The BackendContext: settings, database, predictors, frames, LS access and job runner of one process.

`build_context(settings, runner=...)` makes it once per process (web app, RQ worker, CLI); requests
and jobs receive it as their first argument. It is the composition root and sits below the code
that uses it: it imports settings, `backend.db`, `backend.ls` and the predictor cache, never a job
runner or a service. The runner is built by a factory passed in (`backend.jobs.runners.runner_factory`)
and seen here only through the `JobRunner` protocol.

Before anything runs, `build_context` refuses what would otherwise fail much later: a folder it cannot
write (MODEL_DIR's `versions/` included, where a training run's result is written last), a CUDA DEVICE
that is not there, and a PostgreSQL login that may hold fewer connections than the EVENT_WORKERS and job
threads need at once. The pool keeps a connection for each thread that may hold one (`pool_size`).
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend.db.session import ConnectionLimit, connection_limit, open_database, session_factory
from backend.db.tables import JOB_KINDS, JobKind
from backend.ls.frames import FrameStore, LabelStudioAccess
from backend.ls.media import MediaPolicy
from backend.predictor_cache import PredictorCache, PredictorFactory
from backend.settings import Settings, SettingsError
from model.device import DeviceUnavailableError, check_device_present

# MODEL_DIR's subfolders, created and checked at start-up with it.
VERSIONS_DIR = "versions"  # trained versions, one folder each (`backend.services.version_files`)
HEATMAP_CACHE_DIR = "cache"  # backbone heatmaps of labelled frames, kept between training runs


class NoRunnerError(RuntimeError):
    """This process has no job runner, so background work cannot be queued (an HTTP 503)."""


class JobRunner(Protocol):
    """What requests and services use of a job runner (`backend.jobs.runners.JobRunner`)."""

    mode: str

    def submit(self, kind: JobKind, project_id: int, function: str | None = None, *, trigger: str = "api",
               **params: Any) -> str: ...  # fmt: skip

    def enqueue(self, function: str, *, lane: str = ..., order_key: int | None = None,
                **params: Any) -> None: ...  # fmt: skip

    def start(self) -> None: ...

    def drain(self, timeout: float = 30.0) -> bool: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def after_fork(self) -> None: ...


RunnerFactory = Callable[["BackendContext"], JobRunner]


@dataclass
class BackendContext:
    """Everything a request or a job needs; built once per process by `build_context`."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    predictors: PredictorCache
    frames: FrameStore
    ls: LabelStudioAccess
    runner: JobRunner | None = None
    # project -> the model_version Label Studio was last seen or set to hold (backend.services.ls_sync)
    ls_versions: dict[int, str] = field(default_factory=dict)
    # project -> its last exact count of new corrections (backend.services.training.CorrectionTally)
    correction_tallies: dict[int, Any] = field(default_factory=dict)
    pid: int = field(default_factory=os.getpid)

    def require_runner(self, purpose: str) -> JobRunner:
        """The job runner.

        Raises:
            NoRunnerError: this process has none (names `purpose`, what could not be queued).
        """
        if self.runner is None:
            raise NoRunnerError(f"this process has no job runner; {purpose} cannot be queued")
        return self.runner

    def after_fork(self) -> None:
        """In a forked child (gunicorn --preload worker, RQ work horse): drop the parent's pooled DB
        connections and its worker threads, which did not come along."""
        if self.pid != os.getpid():
            self.engine.dispose(close=False)
            if self.runner is not None:
                self.runner.after_fork()
            self.pid = os.getpid()

    def close(self) -> None:
        """Stops the runner, closes predictors, clients and the engine."""
        if self.runner is not None:
            self.runner.stop()
        self.predictors.close()
        self.ls.close()
        self.engine.dispose()


def media_policy(settings: Settings) -> MediaPolicy:
    """Where task images may come from and how large they may be: MEDIA_HOSTS, MEDIA_ROOTS, MAX_IMAGE_MB,
    MAX_IMAGE_MEGAPIXELS (`backend.ls.media`)."""
    return MediaPolicy(hosts=tuple(h.lower() for h in settings.media_hosts), roots=tuple(settings.media_roots),
                       max_bytes=int(settings.max_image_mb * 1024 * 1024),
                       max_pixels=int(settings.max_image_megapixels * 1_000_000))  # fmt: skip


def build_context(settings: Settings, *, runner: RunnerFactory | None = None,
                  predictor_factory: PredictorFactory | None = None, migrate_db: bool = True) -> BackendContext:  # fmt: skip
    """Engine (schema migrated), predictor cache, frame store and job runner for `settings`.

    Args:
        runner: builds the job runner from the context (`backend.jobs.runners.runner_factory`);
            None: no runner (CLI jobs run in the foreground). The runner is created, not started.
        predictor_factory: builds predictors (tests inject fast ones); default
            `model.pipeline.predictor.Predictor.create` through the predictor cache.

    Raises:
        SettingsError: DATA_DIR, MODEL_DIR (or its `versions`, `cache` subfolders) or FRAME_CACHE_DIR is not
            a folder that can be created and written to, DEVICE names a CUDA device that is not there, or
            PostgreSQL lets this login hold fewer connections than EVENT_WORKERS and the job threads need.
        DatabaseSetupError: DATABASE_URL's database cannot be opened or migrated (`open_database`).
    """
    _make_folders(settings)
    _check_device(settings.device)
    engine = open_database(settings.database_url, migrate_schema=migrate_db, pool_size=pool_size(settings))
    if migrate_db:  # the process that opens the database checks it; its job children need no second look
        try:
            _check_connection_limit(settings, connection_limit(engine))
        except BaseException:
            engine.dispose()
            raise
    access = LabelStudioAccess(settings.label_studio_url, settings.label_studio_api_key)
    ctx = BackendContext(settings, engine, session_factory(engine), PredictorCache(predictor_factory),
                         FrameStore(settings.frame_cache_dir, access, media_policy(settings),
                                    int(settings.frame_cache_mb * 1024 * 1024)), access)  # fmt: skip
    os.register_at_fork(after_in_child=functools.partial(_after_fork_in_child, weakref.ref(ctx)))
    if runner is not None:
        ctx.runner = runner(ctx)
    return ctx


def pool_size(settings: Settings) -> int:
    """Database connections the pool keeps for the threads of one process that may each hold one at once:
    EVENT_WORKERS event threads, one thread per job kind, the training timer and THREADS request threads
    (gunicorn's ``--threads``; more concurrent requests, as under the threaded development server, use
    the pool's overflow, `backend.db.session.POOL_OVERFLOW`)."""
    return settings.event_workers + len(JOB_KINDS) + 1 + settings.threads


def _make_folders(settings: Settings) -> None:
    """Creates the folders the service writes to, or names the one that cannot be (a file is in the way, no
    permission), before anything starts: otherwise a download or a training run fails much later (a new
    version is written into MODEL_DIR/versions only once its training is done)."""
    models = settings.model_dir
    folders = [  # (setting, its value, a folder to create)
        ("MODEL_DIR", models, models),
        ("MODEL_DIR", models, models / VERSIONS_DIR),
        ("MODEL_DIR", models, models / HEATMAP_CACHE_DIR),
        ("FRAME_CACHE_DIR", settings.frame_cache_dir, settings.frame_cache_dir),
    ]
    if settings.database_url.startswith("sqlite"):
        folders.insert(0, ("DATA_DIR", settings.data_dir, settings.data_dir))
    for name, value, folder in folders:
        which = "this folder" if folder == value else f"its folder {folder}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise SettingsError(f"{name}={value}: a file is in the way of {which}") from None
        except OSError as exc:
            raise SettingsError(f"{name}={value}: {which} cannot be created: {exc.strerror}") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SettingsError(f"{name}={value}: {which} is not writable by this user")


def _check_device(device: str) -> None:
    """A CUDA DEVICE must be there (a model built on it later would fail every prediction and training run)."""
    try:
        check_device_present(device)
    except DeviceUnavailableError as exc:
        raise SettingsError(f"DEVICE={exc}; use cpu or auto") from None


def _check_connection_limit(settings: Settings, limit: ConnectionLimit | None) -> None:
    """The database lets this process hold a connection for every event worker and job thread, and one
    request: otherwise those threads wait on each other and time out (PostgreSQL refuses the rest)."""
    if limit is None:
        return
    others = len(JOB_KINDS) + 1 + 1  # the job threads, the training timer, one request
    needed = settings.event_workers + others
    if needed <= limit.connections:
        return
    advice = (f"set EVENT_WORKERS to {limit.connections - others} or less, or raise that limit"
              if limit.connections - others >= 1 else "raise that limit")  # fmt: skip
    raise SettingsError(
        f"EVENT_WORKERS={settings.event_workers}: this process needs {needed} database connections at once "
        f"({settings.event_workers} event workers, {len(JOB_KINDS)} job threads, the training timer, a request), "
        f"but {limit.source} lets it hold {limit.connections}; {advice}"
    )


def _after_fork_in_child(ref: weakref.ref[BackendContext]) -> None:
    ctx = ref()
    if ctx is not None:
        ctx.after_fork()
