"""The BackendContext: settings, database, predictors, frames, LS access and job runner of one process.

`build_context(settings, runner=...)` makes it once per process (web app, RQ worker, CLI); requests
and jobs receive it as their first argument. It is the composition root and sits below the code
that uses it: it imports settings, `backend.db`, `backend.ls` and the predictor cache, never a job
runner or a service. The runner is built by a factory passed in (`backend.jobs.runners.runner_factory`)
and seen here only through the `JobRunner` protocol.
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

from backend.db.session import open_database, session_factory
from backend.db.tables import JobKind
from backend.ls.frames import FrameStore, LabelStudioAccess
from backend.ls.media import MediaPolicy
from backend.predictor_cache import PredictorCache, PredictorFactory
from backend.settings import Settings, SettingsError


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
        SettingsError: DATA_DIR, MODEL_DIR or FRAME_CACHE_DIR is not a folder that can be created and
            written to, or DEVICE names a CUDA device that is not there.
        DatabaseSetupError: DATABASE_URL's database cannot be opened or migrated (`open_database`).
    """
    _make_folders(settings)
    _check_device(settings.device)
    engine = open_database(settings.database_url, migrate_schema=migrate_db)
    access = LabelStudioAccess(settings.label_studio_url, settings.label_studio_api_key)
    ctx = BackendContext(settings, engine, session_factory(engine), PredictorCache(predictor_factory),
                         FrameStore(settings.frame_cache_dir, access, media_policy(settings),
                                    int(settings.frame_cache_mb * 1024 * 1024)), access)  # fmt: skip
    os.register_at_fork(after_in_child=functools.partial(_after_fork_in_child, weakref.ref(ctx)))
    if runner is not None:
        ctx.runner = runner(ctx)
    return ctx


def _make_folders(settings: Settings) -> None:
    """Creates the folders the service writes to, or names the one that cannot be (a file is in the way, no
    permission), before anything starts: otherwise a download or a training run fails much later."""
    folders = {"MODEL_DIR": settings.model_dir, "FRAME_CACHE_DIR": settings.frame_cache_dir}
    if settings.database_url.startswith("sqlite"):
        folders = {"DATA_DIR": settings.data_dir, **folders}
    for name, folder in folders.items():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise SettingsError(f"{name}={folder}: a file is in the way of this folder") from None
        except OSError as exc:
            raise SettingsError(f"{name}={folder}: the folder cannot be created: {exc.strerror}") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SettingsError(f"{name}={folder}: the folder is not writable by this user")


def _check_device(device: str) -> None:
    """A CUDA DEVICE must be there (a model built on it later would fail every prediction and training run)."""
    if not device.startswith("cuda"):
        return
    import torch  # lazy: only for a CUDA device

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        here = f"there are {count} CUDA device(s) here" if count else "CUDA is not available here"
        raise SettingsError(f"DEVICE={device}: {here}; use cpu or auto")


def _after_fork_in_child(ref: weakref.ref[BackendContext]) -> None:
    ctx = ref()
    if ctx is not None:
        ctx.after_fork()
