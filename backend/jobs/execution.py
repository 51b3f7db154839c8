"""Running one queued item: a job (state and progress in its `jobs` row) or an untracked call."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from annotation_io.jsonio import finite_json
from backend.context import BackendContext
from backend.db import jobs as db_jobs
from backend.db.queries import ConflictError, NotFoundError
from backend.db.session import session_scope
from backend.db.tables import JobKind
from backend.jobs.registry import resolve

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0
Item = tuple[str, str, str | None, dict[str, Any]]  # ("job" | "call", function name, job_id, params)


class JobCancelled(BaseException):
    """The job was asked to stop (``POST /jobs/<id>/cancel``); raised at a stored progress report.

    A BaseException, as `asyncio.CancelledError` is: the `except Exception` of a job's own code (logging a
    failed prediction, skipping a task) must not take it for a failure; `execute_job` catches it.
    """


class ProgressReporter:
    """`report(**progress)`: stores a job's progress (at most every `interval` s; `flush` forces it).

    Every store is also where a running job learns that it was cancelled: a cancel request on its row
    (`backend.db.jobs.request_cancel`) makes the store raise `JobCancelled`, until `commit_to_finish`.
    """

    def __init__(self, ctx: BackendContext, job_id: str, base: Mapping[str, Any] | None = None,
                 interval: float | None = None) -> None:  # fmt: skip
        self.ctx, self.job_id = ctx, job_id
        self.interval = PROGRESS_INTERVAL_S if interval is None else interval
        self.progress: dict[str, Any] = dict(base or {})
        self.cancellable = True
        self._last = 0.0

    def __call__(self, **progress: Any) -> None:
        # NaN -> None: a diverging run reports a NaN loss, which the JSON column refuses (the failure
        # handler then could not record the job's error either, and the job process died of it).
        self.progress.update(finite_json(progress, "progress"))
        if time.monotonic() - self._last >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Stores the progress now.

        Raises:
            JobCancelled: the job's cancel was requested (and `commit_to_finish` was not called); the
                progress is then left to `execute_job`, which stores it with the state "cancelled".
        """
        with session_scope(self.ctx.sessions) as session:
            job = db_jobs.update_job(session=session, job_id=self.job_id, progress=self.progress)
            if self.cancellable and job.cancel_requested_at is not None:  # raised inside: nothing is stored
                raise JobCancelled(f"cancel requested at {job.cancel_requested_at.isoformat()}")
        self._last = time.monotonic()

    def commit_to_finish(self) -> None:
        """The job's last point of cancellation: a request made before it stops the job here; after it,
        requests are refused (409) and the job runs to its end (a training run registering its version).

        Raises:
            JobCancelled: the job's cancel was requested before this call.
        """
        self.progress["cancellable"] = False
        try:
            self.flush()  # one transaction: either the request was there (raised), or `cancellable` is stored
        except JobCancelled:
            del self.progress["cancellable"]
            raise
        self.cancellable = False


def execute_job(ctx: BackendContext, job_id: str, fn_name: str, params: Mapping[str, Any]) -> None:
    """Runs a queued job: running -> succeeded | failed | cancelled (| rejected when the result says so).

    A job cancelled while queued is not run (its row is already "cancelled").
    """
    try:
        with session_scope(ctx.sessions) as session:
            job = db_jobs.update_job(session=session, job_id=job_id, state="running")
            base, project_id = dict(job.progress or {}), job.project_id
    except (ConflictError, NotFoundError) as exc:  # cancelled or failed as stale meanwhile, or gone
        logger.info("job %s not run: %s", job_id, exc)
        return
    report = ProgressReporter(ctx, job_id, base)
    start = time.perf_counter()
    try:
        result = dict(
            resolve(fn_name)(ctx, job_id=job_id, report=report, project_id=project_id, **params) or {}
        )
    except JobCancelled as exc:
        with session_scope(ctx.sessions) as session:
            db_jobs.update_job(session=session, job_id=job_id, state="cancelled", progress=report.progress)
        logger.info(
            "job %s (%s) cancelled after %.1f s (%s)", job_id, fn_name, time.perf_counter() - start, exc
        )
        return
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


def is_queued(ctx: BackendContext, job_id: str) -> bool:
    """Whether the job is still waiting to run (not cancelled, failed as stale, or gone meanwhile)."""
    with session_scope(ctx.sessions) as session:
        job = db_jobs.get_job(session=session, job_id=job_id)
        return job is not None and job.state == "queued"


def call(ctx: BackendContext, fn_name: str, params: Mapping[str, Any]) -> None:
    """Runs an untracked function (its failures are logged; it records its own status)."""
    try:
        resolve(fn_name)(ctx, **params)
    except Exception:  # a worker must survive any one call
        logger.exception("background call %s(%s) failed", fn_name, dict(params))


def run_item(ctx: BackendContext, item: Item) -> None:
    """Runs a queued job or call (what the worker threads and the RQ worker execute)."""
    kind, fn_name, job_id, params = item
    if kind == "job" and job_id is not None:
        execute_job(ctx, job_id, fn_name, params)
    else:
        call(ctx, fn_name, params)


def run_job_now(
    ctx: BackendContext, kind: JobKind, project_id: int, *, trigger: str = "cli", **params: Any
) -> str:
    """Creates a job row and runs the kind's function in the calling thread (CLI); returns the job id.

    Raises:
        ConflictError: the project already has an active job of this kind.
    """
    resolve(kind)
    with session_scope(ctx.sessions) as session:
        job = db_jobs.create_job(session=session, project_id=project_id, kind=kind, trigger=trigger,
                                 progress={"params": params})  # fmt: skip
        job_id = job.id
    execute_job(ctx, job_id, kind, params)
    return job_id
