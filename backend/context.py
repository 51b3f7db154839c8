"""The BackendContext: settings, database, predictors, frames, LS access and job runner of one process.

`build_context(settings)` makes it once per process (web app, RQ worker, CLI); requests and jobs
receive it as their first argument. The job runners themselves live in `backend.jobs.runners`, which
re-exports `BackendContext` and `build_context` (their historical home).
"""

from __future__ import annotations

import functools
import os
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend.db.session import make_engine, migrate, session_factory
from backend.ls.frames import FrameStore, LabelStudioAccess
from backend.services.predictor_cache import PredictorCache, PredictorFactory
from backend.settings import Settings

if TYPE_CHECKING:
    from backend.jobs.runners import JobRunner


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
    pid: int = field(default_factory=os.getpid)

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


def build_context(settings: Settings, *, predictor_factory: PredictorFactory | None = None,
                  migrate_db: bool = True, runner: str | None = None) -> BackendContext:  # fmt: skip
    """Engine (schema migrated), predictor cache, frame store and job runner for `settings`.

    Args:
        runner: "thread", "rq" or "none"; default "rq" when REDIS_URL is set, else "thread".
            The runner is created but not started (`JobRunner.start`).
    """
    from backend.jobs.runners import RQRunner, ThreadRunner  # backend.jobs.runners imports this module

    if settings.database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    if migrate_db:
        migrate(engine)
    access = LabelStudioAccess(settings.label_studio_url, settings.label_studio_api_key)
    ctx = BackendContext(settings, engine, session_factory(engine), PredictorCache(predictor_factory),
                         FrameStore(settings.frame_cache_dir, access), access)  # fmt: skip
    os.register_at_fork(after_in_child=functools.partial(_after_fork_in_child, weakref.ref(ctx)))
    kind = runner or ("rq" if settings.redis_url else "thread")
    if kind == "rq":
        if not settings.redis_url:
            raise ValueError("the RQ runner needs REDIS_URL")
        ctx.runner = RQRunner(ctx, settings.redis_url)
    elif kind == "thread":
        ctx.runner = ThreadRunner(ctx)
    elif kind != "none":
        raise ValueError(f"runner must be 'thread', 'rq' or 'none', got {kind!r}")
    return ctx


def _after_fork_in_child(ref: weakref.ref[BackendContext]) -> None:
    ctx = ref()
    if ctx is not None:
        ctx.after_fork()
