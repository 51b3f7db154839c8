"""Job runners: queue jobs and calls, in-process (`ThreadRunner`) or on Redis (`RQRunner`).

Two kinds of background work go through a `JobRunner`:
- jobs (`submit`): rows in the `jobs` table with state and progress, at most one active per
  (project, kind): a trigger arriving while one is queued or running coalesces into it (one arriving
  while it is being cancelled is refused); a cancelled job's item is skipped when its turn comes;
- calls (`enqueue`): untracked functions such as processing a recorded webhook event (the event
  row carries its own status).

`ThreadRunner` (default) runs them in this process: one worker thread per lane (each job kind, and
EVENT_WORKERS lanes of webhook events), so a long bulk pre-annotation never delays webhook
processing. Events go to the lane of their annotation id (`order_key`), so one annotation's events
are processed in order; a lane merges up to EVENT_BATCH queued events into one `process_events`
call (one transaction). `RQRunner` (when REDIS_URL is set) puts jobs on the RQ queue "dcpose" and
webhook event ids on the Redis list "dcpose:events" (an RQ job per event would cost a forked work horse
each); `python -m backend worker` (`backend.jobs.worker`) runs the jobs and takes the events in batches.
Several workers may run: events of one annotation are idempotent by `updated_at`, and deletes are found
through tombstones whatever the order.

What runs is named in `backend.jobs.registry`; training jobs run in a child process (`backend.jobs.child`). `runner_factory(settings, mode)` is what
`backend.context.build_context` is given to build a runner.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Literal

from sqlalchemy import select

from backend.context import BackendContext, RunnerFactory
from backend.db import jobs as db_jobs
from backend.db.queries import ConflictError
from backend.db.session import session_scope
from backend.db.tables import JobKind, WebhookEvent
from backend.jobs.child import run_item
from backend.jobs.execution import Item
from backend.jobs.registry import PROCESS_EVENT, PROCESS_EVENTS, JobQueueError, resolve
from backend.settings import Settings

logger = logging.getLogger(__name__)

QUEUE_NAME = "dcpose"
RQ_JOB_TIMEOUT_S = 24 * 3600
EVENT_LANE = "events"
RQ_ENTRY = "backend.jobs.worker.rq_entry"  # named: RQ imports it in the worker
RunnerMode = Literal["thread", "rq", "none"]


class JobRunner(ABC):
    """Queues jobs and calls; see the module docstring."""

    mode = "abstract"

    def __init__(self, ctx: BackendContext) -> None:
        self.ctx = ctx

    def submit(self, kind: JobKind, project_id: int, function: str | None = None, *, trigger: str = "api",
               **params: Any) -> str:  # fmt: skip
        """Queues a job, or returns the active job of this (project, kind) that it coalesces into.

        Args:
            function: the registered function to run; default the kind's own.

        Raises:
            ValueError: an unknown function or kind. JobQueueError: the queue refused it.
            ConflictError: the active job is being cancelled (coalescing into it would drop this request).
        """
        fn_name = function or kind
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
                if active.cancel_requested_at is not None:
                    raise ConflictError(f"project {project_id}'s {kind} job {active.id} is being cancelled; ask "
                                        f"again once it has stopped (GET /jobs/{active.id})")  # fmt: skip
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

    def enqueue(self, function: str, *, lane: str = EVENT_LANE, order_key: int | None = None,
                **params: Any) -> None:  # fmt: skip
        """Queues an untracked call; calls with the same `order_key` on a lane run in order."""
        resolve(function)
        if lane == EVENT_LANE and self.ctx.settings.event_workers > 1:
            lane = f"{EVENT_LANE}-{(order_key or 0) % self.ctx.settings.event_workers}"
        self._dispatch(lane, ("call", function, None, dict(params)))

    def start(self) -> None:
        """Start-up housekeeping: fail jobs left by dead processes, requeue unprocessed events."""
        with session_scope(self.ctx.sessions) as session:
            # In-process queues die with their process: a job still queued at start-up never runs.
            stale = db_jobs.fail_stale_jobs(
                session=session, queued_timeout_s=0 if self.mode == "thread" else None
            )
            pending = list(session.execute(select(WebhookEvent.id, WebhookEvent.annotation_id)
                                           .where(WebhookEvent.status == "received")
                                           .order_by(WebhookEvent.id)))  # fmt: skip
        if stale:
            logger.warning("%d stale job(s) marked failed at start-up", len(stale))
        for event_id, annotation_id in pending:
            self.enqueue(PROCESS_EVENT, event_id=event_id, order_key=annotation_id)
        if pending:
            logger.info("%d unprocessed webhook event(s) requeued", len(pending))

    @abstractmethod
    def _dispatch(self, lane: str, item: Item) -> None: ...

    def drain(self, timeout: float = 30.0) -> bool:
        """Waits until everything queued here is done (in-process only); False on timeout."""
        return True

    def event_backlog(self) -> int:
        """Webhook events queued and not yet taken for processing (as last seen by this process)."""
        return 0

    def stop(self, timeout: float = 5.0) -> None:
        """Stops accepting work and ends the workers."""

    def after_fork(self) -> None:
        """Called in a forked child process."""


class ThreadRunner(JobRunner):
    """In-process: one FIFO queue and daemon thread per lane, created on first use."""

    mode = "thread"

    def __init__(self, ctx: BackendContext) -> None:
        super().__init__(ctx)
        self._lanes: dict[str, tuple[queue.Queue[Item | None], threading.Thread]] = {}
        self._lock = threading.Lock()
        self._stopped = False

    def _dispatch(self, lane: str, item: Item) -> None:
        with self._lock:
            if self._stopped:
                raise JobQueueError("the job runner is stopped")
            if lane not in self._lanes:
                q: queue.Queue[Item | None] = queue.Queue()
                thread = threading.Thread(target=self._work, args=(q,), name=f"dcpose-{lane}", daemon=True)
                self._lanes[lane] = (q, thread)
                thread.start()
            self._lanes[lane][0].put(item)

    def _work(self, q: queue.Queue[Item | None]) -> None:
        while True:
            items = self._take(q)
            try:
                for item in self._merge(items):
                    if item is None:
                        return
                    run_item(self.ctx, item)
            finally:
                for _ in items:
                    q.task_done()

    def _take(self, q: queue.Queue[Item | None]) -> list[Item | None]:
        """The next item, plus the PROCESS_EVENT calls queued right behind it (up to EVENT_BATCH)."""
        items = [q.get()]
        while _is_event(items[-1]) and len(items) < self.ctx.settings.event_batch:
            try:
                items.append(q.get_nowait())
            except queue.Empty:
                break
        return items

    @staticmethod
    def _merge(items: list[Item | None]) -> list[Item | None]:
        """Consecutive PROCESS_EVENT calls become one PROCESS_EVENTS call (one transaction), order kept."""
        events = [item[3]["event_id"] for item in items if _is_event(item)]  # type: ignore[index]
        if len(events) < 2:
            return items
        rest = [item for item in items if not _is_event(item)]
        return [("call", PROCESS_EVENTS, None, {"event_ids": events}), *rest]

    def drain(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = any(q.unfinished_tasks for q, _ in self._lanes.values())
            if not busy:
                return True
            time.sleep(0.005)
        return False

    def event_backlog(self) -> int:
        with self._lock:
            return sum(q.qsize() for lane, (q, _) in self._lanes.items() if lane.startswith(EVENT_LANE))

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


def _is_event(item: Item | None) -> bool:
    return item is not None and item[0] == "call" and item[1] == PROCESS_EVENT


class RQRunner(JobRunner):
    """RQ on Redis: jobs go to queue "dcpose", webhook event ids to the list "dcpose:events" (run
    `python -m backend worker` beside it)."""

    mode = "rq"

    def __init__(self, ctx: BackendContext, redis_url: str, queue_name: str = QUEUE_NAME) -> None:
        super().__init__(ctx)
        from redis import Redis
        from rq import Queue

        self.connection = Redis.from_url(redis_url)
        self.queue = Queue(queue_name, connection=self.connection)
        self.events_key = f"{queue_name}:events"
        self._events_seen = 0  # the list's length after this process's last push

    def _dispatch(self, lane: str, item: Item) -> None:
        from redis.exceptions import RedisError

        kind, fn_name, job_id, params = item
        try:
            if _is_event(item):
                self._events_seen = int(self.connection.rpush(self.events_key, int(params["event_id"])))
                return
            self.queue.enqueue(RQ_ENTRY, kind, fn_name, job_id, params, job_id=job_id,
                               job_timeout=RQ_JOB_TIMEOUT_S, result_ttl=3600, failure_ttl=7 * 24 * 3600,
                               description=f"{fn_name} {job_id or ''}".strip())  # fmt: skip
        except RedisError as exc:
            raise JobQueueError(
                f"Redis queue {self.queue.name!r} refused the {kind}: {type(exc).__name__}: {exc}"
            ) from exc

    def take_events(self, limit: int, block_s: float) -> list[int]:
        """Up to `limit` queued event ids, oldest first, waiting up to `block_s` for the first."""
        first = self.connection.blpop([self.events_key], timeout=block_s)
        if first is None:
            return []
        rest = self.connection.lpop(self.events_key, limit - 1) if limit > 1 else None
        return [int(first[1]), *(int(v) for v in rest or [])]

    def return_events(self, event_ids: list[int]) -> None:
        """Puts taken event ids back at the head of the list, in their order (their batch failed)."""
        if event_ids:
            self.connection.lpush(self.events_key, *reversed(event_ids))

    def queued_events(self) -> int:
        return int(self.connection.llen(self.events_key))

    def event_backlog(self) -> int:
        return self._events_seen  # no round trip: each push tells the length


def runner_factory(settings: Settings, mode: RunnerMode | None = None) -> RunnerFactory | None:
    """What builds the runner of `backend.context.build_context`; None for mode "none".

    Args:
        mode: "thread", "rq" or "none"; default "rq" when REDIS_URL is set, else "thread".

    Raises:
        ValueError: an unknown mode, or "rq" without REDIS_URL.
    """
    mode = mode or ("rq" if settings.redis_url else "thread")
    if mode == "rq":
        redis_url = settings.redis_url
        if not redis_url:
            raise ValueError("the RQ runner needs REDIS_URL")
        return lambda ctx: RQRunner(ctx, redis_url)
    if mode == "thread":
        return ThreadRunner
    if mode == "none":
        return None
    raise ValueError(f"runner must be 'thread', 'rq' or 'none', got {mode!r}")
