"""The RQ worker: `python -m backend worker` runs queue "dcpose" with this process's context.

Same as ``rq worker -u $REDIS_URL dcpose`` started with the service's environment (DATABASE_URL,
...): every queued item runs `rq_entry`, which builds the context once per worker process.
Training jobs run in a spawned child of the work horse, as in the web process (`backend.jobs.child`):
the same code path everywhere, also under `SimpleWorker` (no work horse) and `--burst` in tests.
"""

from __future__ import annotations

import threading
from typing import Any

from backend.context import BackendContext, build_context
from backend.jobs.child import run_item
from backend.jobs.registry import JobQueueError
from backend.jobs.runners import RQRunner, runner_factory
from backend.settings import Settings

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


def run_worker(ctx: BackendContext, *, burst: bool = False, fork: bool = True) -> None:
    """Runs an RQ worker on queue "dcpose" with `ctx` (blocks; `burst` stops when the queue is empty).

    Raises:
        JobQueueError: `ctx` has no RQ runner (REDIS_URL is not set).
    """
    from rq import SimpleWorker, Worker

    runner = ctx.runner
    if not isinstance(runner, RQRunner):
        raise JobQueueError("the RQ worker needs REDIS_URL (without it, jobs run inside the web process)")
    set_worker_context(ctx)
    runner.start()  # a worker started after a crash fails the jobs its dead predecessor left running
    worker_class = Worker if fork else SimpleWorker
    worker_class([runner.queue], connection=runner.connection).work(burst=burst)
