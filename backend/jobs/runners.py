"""Background work: a JobRunner (in-process threads or RQ on Redis) and job execution.

Two kinds of background work go through a `JobRunner`:
- jobs (`submit`): rows in the `jobs` table with state and progress, at most one active per
  (project, kind): a trigger arriving while one is queued or running coalesces into it;
- calls (`enqueue`): untracked functions such as processing a recorded webhook event (the event
  row carries its own status).

`ThreadRunner` (default) runs them in this process: one worker thread per lane (events, each job
kind), so a long bulk pre-annotation never delays webhook processing; `RQRunner` (when REDIS_URL
is set) puts them on the RQ queue "dcpose", executed by a worker process::

    python -m backend worker          # same as: rq worker -u $REDIS_URL dcpose
                                      # (with the service's environment: DATABASE_URL, ...)

Run one worker for the queue when event order matters (events of one annotation are idempotent
by `updated_at`, but a delete overtaken by its create is only caught by a check on recorded events).

Functions are named, not passed, so that RQ can find them: `JOB_FUNCTIONS` maps a name to
"module:function"; a function takes (ctx, *, job_id, report, project_id, **params) and returns a JSON-able
result dict. START_TRAINING, `POST /train` and the correction-count trigger submit a "train" job
(`backend.services.finetune.run_training`); `POST /preannotate` and the CLI a "preannotate" job
(`backend.services.preannotate.run_preannotate`).

`BackendContext` and `build_context` live in `backend.context`, the bulk pre-annotation job in
`backend.services.preannotate`; both are re-exported here.
"""

from __future__ import annotations

import importlib
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select

from backend.context import BackendContext, build_context
from backend.db import jobs as db_jobs
from backend.db.queries import ConflictError, NotFoundError
from backend.db.session import session_scope
from backend.db.tables import WebhookEvent
from backend.services.preannotate import PREANNOTATE_CHUNK as PREANNOTATE_CHUNK  # re-exported (moved)
from backend.services.preannotate import run_preannotate as run_preannotate  # re-exported (moved)
from backend.settings import Settings

logger = logging.getLogger(__name__)

QUEUE_NAME = "dcpose"
RQ_JOB_TIMEOUT_S = 24 * 3600
PROGRESS_INTERVAL_S = 1.0
EVENT_LANE = "events"
JOB_FUNCTIONS: dict[str, str] = {
    "preannotate": "backend.services.preannotate:run_preannotate",
    "process_event": "backend.services.events:process_event",
    "train": "backend.services.finetune:run_training",
}
JobFunction = Callable[..., Mapping[str, Any] | None]


class JobQueueError(RuntimeError):
    """The job queue (Redis) cannot take the job."""


def resolve(fn_name: str) -> JobFunction:
    """The function registered under `fn_name`.

    Raises:
        ValueError: no such name.
    """
    target = JOB_FUNCTIONS.get(fn_name)
    if target is None:
        raise ValueError(f"unknown job function {fn_name!r}; registered: {', '.join(sorted(JOB_FUNCTIONS))}")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


# ----------------------------------------------------------------------------- execution


class ProgressReporter:
    """`report(**progress)`: stores a job's progress (at most every `interval` s; `flush` forces it)."""

    def __init__(self, ctx: BackendContext, job_id: str, base: Mapping[str, Any] | None = None,
                 interval: float = PROGRESS_INTERVAL_S) -> None:  # fmt: skip
        self.ctx, self.job_id, self.interval = ctx, job_id, interval
        self.progress: dict[str, Any] = dict(base or {})
        self._last = 0.0

    def __call__(self, **progress: Any) -> None:
        self.progress.update(progress)
        if time.monotonic() - self._last >= self.interval:
            self.flush()

    def flush(self) -> None:
        with session_scope(self.ctx.sessions) as session:
            db_jobs.update_job(session=session, job_id=self.job_id, progress=self.progress)
        self._last = time.monotonic()


def execute_job(ctx: BackendContext, job_id: str, fn_name: str, params: Mapping[str, Any]) -> None:
    """Runs a queued job: running -> succeeded | failed (| rejected when the result says so)."""
    try:
        with session_scope(ctx.sessions) as session:
            job = db_jobs.update_job(session=session, job_id=job_id, state="running")
            base, project_id = dict(job.progress or {}), job.project_id
    except (ConflictError, NotFoundError) as exc:  # failed as stale meanwhile, or gone
        logger.warning("job %s not run: %s", job_id, exc)
        return
    report = ProgressReporter(ctx, job_id, base)
    start = time.perf_counter()
    try:
        result = dict(
            resolve(fn_name)(ctx, job_id=job_id, report=report, project_id=project_id, **params) or {}
        )
    except Exception as exc:  # the job boundary: whatever broke, the job must end failed, with its reason
        logger.exception("job %s (%s) failed", job_id, fn_name)
        with session_scope(ctx.sessions) as session:
            db_jobs.update_job(session=session, job_id=job_id, state="failed", progress=report.progress,
                               error=f"{type(exc).__name__}: {exc}"[:4000])  # fmt: skip
        return
    state = "rejected" if result.get("state") == "rejected" else "succeeded"
    with session_scope(ctx.sessions) as session:
        db_jobs.update_job(
            session=session, job_id=job_id, state=state, progress=report.progress, result=result
        )
    logger.info("job %s (%s) %s in %.1f s", job_id, fn_name, state, time.perf_counter() - start)


def call(ctx: BackendContext, fn_name: str, params: Mapping[str, Any]) -> None:
    """Runs an untracked function (its failures are logged; it records its own status)."""
    try:
        resolve(fn_name)(ctx, **params)
    except Exception:  # a worker must survive any one call
        logger.exception("background call %s(%s) failed", fn_name, dict(params))


def run_job_now(ctx: BackendContext, kind: str, project_id: int, fn_name: str, *, trigger: str = "cli",
                **params: Any) -> str:  # fmt: skip
    """Creates a job row and runs it in the calling thread (CLI); returns the job id.

    Raises:
        ConflictError: the project already has an active job of this kind.
    """
    resolve(fn_name)
    with session_scope(ctx.sessions) as session:
        job = db_jobs.create_job(session=session, project_id=project_id, kind=kind, trigger=trigger,
                                 progress={"params": params})  # fmt: skip
        job_id = job.id
    execute_job(ctx, job_id, fn_name, params)
    return job_id


# ----------------------------------------------------------------------------- runners


_Item = tuple[str, str, str | None, dict[str, Any]]  # ("job" | "call", fn_name, job_id, params)


class JobRunner(ABC):
    """Queues jobs and calls; see the module docstring."""

    mode = "abstract"

    def __init__(self, ctx: BackendContext) -> None:
        self.ctx = ctx

    def submit(self, kind: str, project_id: int, fn_name: str, *, trigger: str = "api", **params: Any) -> str:
        """Queues a job, or returns the active job of this (project, kind) that it coalesces into.

        Raises:
            ValueError: an unknown function or kind. JobQueueError: the queue refused it.
        """
        resolve(fn_name)
        with session_scope(self.ctx.sessions) as session:
            active = db_jobs.active_job(session=session, project_id=project_id, kind=kind)
            if active is None:
                try:
                    job = db_jobs.create_job(session=session, project_id=project_id, kind=kind, trigger=trigger,
                                             progress={"params": params})  # fmt: skip
                except ConflictError:  # a concurrent submit won the race
                    active = db_jobs.active_job(session=session, project_id=project_id, kind=kind)
                    if active is None:
                        raise
            if active is not None:
                logger.info("%s trigger (%s) for project %s coalesced into job %s", kind, trigger, project_id,
                            active.id)  # fmt: skip
                return active.id
            job_id = job.id
        try:
            self._dispatch(kind, ("job", fn_name, job_id, dict(params)))
        except JobQueueError as exc:
            with session_scope(self.ctx.sessions) as session:
                db_jobs.update_job(session=session, job_id=job_id, state="failed", error=str(exc))
            raise
        logger.info("job %s queued: %s for project %s (%s)", job_id, kind, project_id, trigger)
        return job_id

    def enqueue(self, fn_name: str, *, lane: str = EVENT_LANE, **params: Any) -> None:
        """Queues an untracked call."""
        resolve(fn_name)
        self._dispatch(lane, ("call", fn_name, None, dict(params)))

    def start(self) -> None:
        """Start-up housekeeping: fail jobs left by dead processes, requeue unprocessed events."""
        with session_scope(self.ctx.sessions) as session:
            # In-process queues die with their process: a job still queued at start-up never runs.
            stale = db_jobs.fail_stale_jobs(
                session=session, queued_timeout_s=0 if self.mode == "thread" else None
            )
            pending = list(session.scalars(select(WebhookEvent.id).where(WebhookEvent.status == "received")
                                           .order_by(WebhookEvent.id)))  # fmt: skip
        if stale:
            logger.warning("%d stale job(s) marked failed at start-up", len(stale))
        for event_id in pending:
            self.enqueue("process_event", event_id=event_id)
        if pending:
            logger.info("%d unprocessed webhook event(s) requeued", len(pending))

    @abstractmethod
    def _dispatch(self, lane: str, item: _Item) -> None: ...

    def drain(self, timeout: float = 30.0) -> bool:
        """Waits until everything queued here is done (in-process only); False on timeout."""
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stops accepting work and ends the workers."""

    def after_fork(self) -> None:
        """Called in a forked child process."""


def _run_item(ctx: BackendContext, item: _Item) -> None:
    kind, fn_name, job_id, params = item
    if kind == "job" and job_id is not None:
        execute_job(ctx, job_id, fn_name, params)
    else:
        call(ctx, fn_name, params)


class ThreadRunner(JobRunner):
    """In-process: one FIFO queue and daemon thread per lane, created on first use."""

    mode = "thread"

    def __init__(self, ctx: BackendContext) -> None:
        super().__init__(ctx)
        self._lanes: dict[str, tuple[queue.Queue[_Item | None], threading.Thread]] = {}
        self._lock = threading.Lock()
        self._stopped = False

    def _dispatch(self, lane: str, item: _Item) -> None:
        with self._lock:
            if self._stopped:
                raise JobQueueError("the job runner is stopped")
            if lane not in self._lanes:
                q: queue.Queue[_Item | None] = queue.Queue()
                thread = threading.Thread(target=self._work, args=(q,), name=f"dcpose-{lane}", daemon=True)
                self._lanes[lane] = (q, thread)
                thread.start()
            self._lanes[lane][0].put(item)

    def _work(self, q: queue.Queue[_Item | None]) -> None:
        while True:
            item = q.get()
            try:
                if item is None:
                    return
                _run_item(self.ctx, item)
            finally:
                q.task_done()

    def drain(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = any(q.unfinished_tasks for q, _ in self._lanes.values())
            if not busy:
                return True
            time.sleep(0.005)
        return False

    def after_fork(self) -> None:
        # Threads do not survive fork(): the child starts its own lanes on first use.
        self._lanes = {}
        self._lock = threading.Lock()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopped = True
            lanes = list(self._lanes.values())
        for q, _ in lanes:
            q.put(None)
        for _, thread in lanes:
            thread.join(timeout)


class RQRunner(JobRunner):
    """RQ on Redis: everything goes to queue "dcpose" (see the module docstring for the worker)."""

    mode = "rq"

    def __init__(self, ctx: BackendContext, redis_url: str, queue_name: str = QUEUE_NAME) -> None:
        super().__init__(ctx)
        from redis import Redis
        from rq import Queue

        self.connection = Redis.from_url(redis_url)
        self.queue = Queue(queue_name, connection=self.connection)

    def _dispatch(self, lane: str, item: _Item) -> None:
        from redis.exceptions import RedisError

        kind, fn_name, job_id, params = item
        try:
            self.queue.enqueue("backend.jobs.runners.rq_entry", kind, fn_name, job_id, params, job_id=job_id,
                               job_timeout=RQ_JOB_TIMEOUT_S, result_ttl=3600, failure_ttl=7 * 24 * 3600,
                               description=f"{fn_name} {job_id or ''}".strip())  # fmt: skip
        except RedisError as exc:
            raise JobQueueError(
                f"Redis queue {self.queue.name!r} refused the job: {type(exc).__name__}: {exc}"
            ) from exc


_worker_context: BackendContext | None = None
_worker_lock = threading.Lock()


def set_worker_context(ctx: BackendContext | None) -> None:
    """The context RQ jobs of this process use (`python -m backend worker` and tests set it)."""
    global _worker_context
    with _worker_lock:
        _worker_context = ctx


def worker_context() -> BackendContext:
    """This worker process's context: the one set, else built once from the environment."""
    global _worker_context
    with _worker_lock:
        if _worker_context is None:
            settings = Settings.from_env()
            _worker_context = build_context(settings, runner="rq" if settings.redis_url else "none")
        _worker_context.after_fork()
        return _worker_context


def rq_entry(kind: str, fn_name: str, job_id: str | None, params: dict[str, Any]) -> None:
    """What the RQ worker executes for every queued item."""
    _run_item(worker_context(), (kind, fn_name, job_id, params))


def run_worker(ctx: BackendContext, *, burst: bool = False, fork: bool = True) -> None:
    """Runs an RQ worker on queue "dcpose" with `ctx` (blocks; `burst` stops when the queue is empty)."""
    from rq import SimpleWorker, Worker

    runner = ctx.runner
    if getattr(runner, "mode", None) != "rq":
        raise JobQueueError("the RQ worker needs REDIS_URL (without it, jobs run inside the web process)")
    assert isinstance(runner, RQRunner)
    set_worker_context(ctx)
    runner.start()  # a worker started after a crash fails the jobs its dead predecessor left running
    worker_class = Worker if fork else SimpleWorker
    worker_class([runner.queue], connection=runner.connection).work(burst=burst)
