"""Test-only helpers for the backend: waiting for a job, a training timer that records its triggers."""

from __future__ import annotations

import time

from backend.context import BackendContext
from backend.db import jobs as db_jobs
from backend.db.queries import NotFoundError
from backend.db.session import session_scope
from backend.db.tables import Job
from backend.services.training import TrainingScheduler


def wait_for_job(ctx: BackendContext, job_id: str, *, timeout: float = 60.0, poll: float = 0.05) -> Job:
    """Polls a job row until it is finished; returns the row.

    Raises:
        TimeoutError: still active after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(ctx.sessions) as session:
            job = db_jobs.get_job(session=session, job_id=job_id)
            if job is None:
                raise NotFoundError(f"job {job_id!r} does not exist")
            if job.state not in ("queued", "running"):
                return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job.state} after {timeout:.0f} s")
        time.sleep(poll)


class RecordingScheduler(TrainingScheduler):
    """The training timer, remembering the ids of the jobs its checks queued (or coalesced into)."""

    def __init__(self, ctx: BackendContext, *, interval_s: float, poll_s: float | None = None) -> None:
        super().__init__(ctx, interval_s=interval_s, poll_s=poll_s)
        self.triggered: list[str] = []

    def tick(self) -> list[str]:
        queued = super().tick()
        self.triggered.extend(queued)
        return queued
