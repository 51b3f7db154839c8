"""Background jobs in the database: create, progress, list, cancel, and failing jobs left by dead processes."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.db.queries import (
    ConflictError,
    NotFoundError,
    _aware,
    _locked,
)
from backend.db.tables import (
    ACTIVE_JOB_STATES,
    FINISHED_JOB_STATES,
    JOB_KINDS,
    JOB_STATES,
    Job,
    utcnow,
)

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- jobs


def active_job(*, session: Session, project_id: int, kind: str) -> Job | None:
    """The queued or running job of this kind for the project, if any."""
    stmt = select(Job).where(Job.project_id == project_id, Job.kind == kind, Job.state.in_(ACTIVE_JOB_STATES))
    return session.scalars(stmt).first()


def create_job(
    *, session: Session, project_id: int, kind: str, trigger: str, progress: Mapping[str, Any] | None = None
) -> Job:
    """Queue a job. Raises ConflictError when one of this kind is already active for the project."""
    if kind not in JOB_KINDS:
        raise ValueError(f"job kind must be one of {JOB_KINDS}, got {kind!r}")
    existing = active_job(session=session, project_id=project_id, kind=kind)
    if existing is not None:
        raise ConflictError(f"project {project_id} already has a {existing.state} {kind} job {existing.id}")
    job = Job(
        id=uuid.uuid4().hex,
        project_id=project_id,
        kind=kind,
        trigger=trigger,
        state="queued",
        progress=dict(progress or {}),
    )
    try:
        with session.begin_nested():  # a concurrent creator hits the partial unique index
            session.add(job)
    except IntegrityError as exc:
        raise ConflictError(f"project {project_id} already has an active {kind} job") from exc
    return job


def get_job(*, session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(
    *,
    session: Session,
    project_id: int | None = None,
    kind: str | None = None,
    state: str | None = None,
    limit: int = 100,
) -> list[Job]:
    """Jobs, newest first."""
    stmt = select(Job)
    if project_id is not None:
        stmt = stmt.where(Job.project_id == project_id)
    if kind is not None:
        stmt = stmt.where(Job.kind == kind)
    if state is not None:
        stmt = stmt.where(Job.state == state)
    return list(session.scalars(stmt.order_by(Job.created_at.desc(), Job.id).limit(limit)))


def update_job(
    *,
    session: Session,
    job_id: str,
    state: str | None = None,
    progress: Mapping[str, Any] | None = None,
    result: Mapping[str, Any] | None = None,
    error: str | None = None,
) -> Job:
    """Record progress or a state change; every call is also a heartbeat.

    Going to running stamps `started_at`, this process's pid and host; a finished state stamps
    `finished_at`. A finished job cannot change state again (ConflictError).
    """
    job = session.scalars(_locked(session, select(Job).where(Job.id == job_id))).first()
    if job is None:
        raise NotFoundError(f"job {job_id!r} does not exist")
    now = utcnow()
    if state is not None and state != job.state:
        if state not in JOB_STATES:
            raise ValueError(f"job state must be one of {JOB_STATES}, got {state!r}")
        if job.state in FINISHED_JOB_STATES:
            raise ConflictError(f"job {job_id} already {job.state}; it cannot become {state}")
        job.state = state
        if state == "running":
            job.started_at, job.pid, job.host = now, os.getpid(), socket.gethostname()
        elif state in FINISHED_JOB_STATES:
            job.finished_at = now
    if progress is not None:
        job.progress = dict(progress)
    if result is not None:
        job.result = dict(result)
    if error is not None:
        job.error = error
    job.heartbeat_at = now
    session.flush()
    return job


def request_cancel(*, session: Session, job_id: str) -> Job:
    """Cancel a job: a queued one ends "cancelled" now; a running one gets `cancel_requested_at`.

    A running job stops at its next stored progress report (`backend.jobs.execution.ProgressReporter`),
    unless it has told that it is finishing (`progress["cancellable"]` false: a training run registering
    its version). Asking again for a running job keeps the first request's time.

    Raises:
        NotFoundError: no such job.
        ConflictError: the job already finished (the message names its state), or it is finishing.
    """
    job = session.scalars(_locked(session, select(Job).where(Job.id == job_id))).first()
    if job is None:
        raise NotFoundError(f"job {job_id!r} does not exist")
    if job.state in FINISHED_JOB_STATES:
        raise ConflictError(f"job {job_id} already {job.state}; there is nothing to cancel")
    if job.state == "running" and (job.progress or {}).get("cancellable") is False:
        raise ConflictError(f"job {job_id} is finishing ({job.progress.get('phase') or 'its last step'}) and "
                            "can no longer be cancelled")  # fmt: skip
    now = utcnow()
    job.cancel_requested_at = job.cancel_requested_at or now
    if job.state == "queued":
        job.state, job.finished_at = "cancelled", now
    session.flush()
    return job


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def fail_stale_jobs(
    *,
    session: Session,
    heartbeat_timeout_s: float = 600.0,
    queued_timeout_s: float | None = None,
    host: str | None = None,
    now: datetime | None = None,
) -> list[Job]:
    """Mark failed the running jobs whose process is gone (same host) or whose heartbeat is too old.

    Args:
        heartbeat_timeout_s: a running job silent for longer is failed, whatever its host.
        queued_timeout_s: also fail jobs queued for longer (None: leave queued jobs alone).
        host: this machine's name (default `socket.gethostname()`).
        now: the current time (for tests).
    """
    host = host or socket.gethostname()
    now = _aware(now, "now") if now is not None else utcnow()
    stale: list[Job] = []
    for job in session.scalars(_locked(session, select(Job).where(Job.state.in_(ACTIVE_JOB_STATES)))):
        last = job.heartbeat_at or job.started_at or job.created_at
        reason = None
        if job.state == "running":
            if job.host == host and job.pid is not None and not _pid_alive(job.pid):
                reason = f"process {job.pid} on {host} is gone (killed or crashed while running)"
            elif now - last > timedelta(seconds=heartbeat_timeout_s):
                reason = f"no heartbeat since {last.isoformat()} (> {heartbeat_timeout_s:.0f} s)"
        elif queued_timeout_s is not None and now - job.created_at > timedelta(seconds=queued_timeout_s):
            reason = f"queued since {job.created_at.isoformat()} and never started"
        if reason is not None:
            job.state, job.finished_at, job.error = "failed", now, f"marked failed: {reason}"
            logger.warning("job %s (%s, project %s) %s", job.id, job.kind, job.project_id, job.error)
            stale.append(job)
    session.flush()
    return stale
