"""The RQ worker: `python -m backend worker` runs queue "dcpose" and the webhook events, with this process's context.

Jobs: like ``rq worker -u $REDIS_URL dcpose`` started with the service's environment (DATABASE_URL,
...): every queued item runs `rq_entry`, which builds the context once per worker process. Training
jobs run in a spawned child of the work horse, as in the web process (`backend.jobs.child`): the same
code path everywhere, also under `SimpleWorker` (no work horse) and `--burst` in tests.

Webhook events: EVENT_WORKERS threads of the worker (`EventConsumer`) take the event ids the web
process pushed on "dcpose:events", up to EVENT_BATCH at a time, and process each batch in one
`process_events` call, as the web process's own threads do without Redis. A batch that fails (the
database is down) goes back to the head of the list; one cut short by the worker's death stays
"received" in the database and is queued again when a web process or a worker starts.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from backend.context import BackendContext, build_context
from backend.jobs.child import run_item
from backend.jobs.registry import JobQueueError
from backend.jobs.runners import RQRunner, runner_factory
from backend.services.event_processing import process_events
from backend.settings import Settings

logger = logging.getLogger(__name__)

RETRY_S = 2.0  # pause after a batch failed on the database or Redis
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
            _worker_context = build_context(
                settings, runner=runner_factory(settings, "rq" if settings.redis_url else "none")
            )
        _worker_context.after_fork()
        return _worker_context


def rq_entry(kind: str, fn_name: str, job_id: str | None, params: dict[str, Any]) -> None:
    """What the RQ worker executes for every queued item."""
    run_item(worker_context(), (kind, fn_name, job_id, params))


class EventConsumer:
    """Processes the webhook events queued on Redis in batches (see the module docstring)."""

    def __init__(self, ctx: BackendContext, runner: RQRunner) -> None:
        self.ctx, self.runner = ctx, runner
        self.stopping = threading.Event()

    def step(self, block_s: float) -> int:
        """Takes and processes one batch (waiting up to `block_s` for it); returns its size (0: none)."""
        from redis.exceptions import RedisError
        from sqlalchemy.exc import SQLAlchemyError

        event_ids = self.runner.take_events(self.ctx.settings.event_batch, block_s)
        if event_ids:
            try:
                process_events(self.ctx, event_ids=event_ids)
            except (SQLAlchemyError, RedisError):
                logger.exception("a batch of %d webhook events failed; it is queued again", len(event_ids))
                self.runner.return_events(event_ids)
                self.stopping.wait(RETRY_S)
        return len(event_ids)

    def drain(self) -> int:
        """Processes queued events until none is left (burst mode); returns how many were taken."""
        total = 0
        while batch := self.step(block_s=0.01):
            total += batch
        return total

    def run(self) -> None:
        """Processes events until `stopping` is set (a worker thread's loop)."""
        from redis.exceptions import RedisError

        while not self.stopping.is_set():
            try:
                self.step(block_s=1.0)
            except RedisError:  # Redis went away: wait for it, as the RQ worker does
                logger.exception("taking webhook events from Redis failed")
                self.stopping.wait(RETRY_S)
            except Exception:  # the thread must survive any one batch; its events stay "received"
                logger.exception("processing a batch of webhook events failed")
                self.stopping.wait(RETRY_S)

    def start_threads(self, count: int) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.run, name=f"dcpose-events-{n}", daemon=True) for n in range(count)]
        for thread in threads:
            thread.start()
        return threads


def run_worker(ctx: BackendContext, *, burst: bool = False, fork: bool = True) -> None:
    """Runs an RQ worker on queue "dcpose" and the event threads with `ctx` (blocks).

    Args:
        burst: process the events queued now, run the jobs queued now, then the events those queued,
            and return (no threads).
        fork: run each job in a forked work horse (RQ's `Worker`), else in this process (`SimpleWorker`).

    Raises:
        JobQueueError: `ctx` has no RQ runner (REDIS_URL is not set).
    """
    from rq import SimpleWorker, Worker

    runner = ctx.runner
    if not isinstance(runner, RQRunner):
        raise JobQueueError("the RQ worker needs REDIS_URL (without it, jobs run inside the web process)")
    set_worker_context(ctx)
    runner.start()  # a worker started after a crash fails the jobs its dead predecessor left running
    consumer = EventConsumer(ctx, runner)
    worker_class = Worker if fork else SimpleWorker
    worker = worker_class([runner.queue], connection=runner.connection)
    if burst:
        consumer.drain()
        worker.work(burst=True)
        consumer.drain()
        return
    threads = consumer.start_threads(max(1, ctx.settings.event_workers))
    try:
        worker.work()
    finally:
        consumer.stopping.set()
        deadline = time.monotonic() + 30.0  # the batches in hand finish; what is left stays "received"
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
