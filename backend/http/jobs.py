"""Background-job routes (a Blueprint): /preannotate, /jobs, /jobs/<id>, /jobs/<id>/cancel, and /metrics.

``POST /preannotate {"project": 1[, "video_id": "v", "tasks": [ids], "force": false]}`` -> 202
``{"job": id}``: a background job pushing predictions for a whole project or video to Label Studio
(`backend.services.preannotate`). ``GET /jobs[?project=&kind=&state=&limit=]`` and
``GET /jobs/<id>``: job rows with state and progress. ``POST /jobs/<id>/cancel``: a queued job
ends "cancelled" at once (200), a running one is asked to stop at its next progress report (202;
`backend.db.jobs.request_cancel`); 409 for a finished job, 404 for an unknown one.
``GET /metrics[?project=]``: acceptance statistics of the predictions (`backend.db.metrics`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import Blueprint, request

from backend.db import jobs as db_jobs
from backend.db.metrics import acceptance_metrics
from backend.db.session import session_scope
from backend.db.tables import JOB_KINDS, JOB_STATES, Job
from backend.http.errors import ApiError
from backend.http.inputs import current_context, json_body, query_int, required_project
from backend.limits import LimitError, check_length, parse_id
from backend.services import preannotate as preannotate_service
from backend.services.status import job_fraction

logger = logging.getLogger(__name__)
blueprint = Blueprint("jobs", __name__)


def iso(value: datetime | None) -> str | None:
    """A datetime as ISO 8601, or None."""
    return value.isoformat() if value is not None else None


def job_json(job: Job) -> dict[str, Any]:
    """A job row as JSON."""
    return {"id": job.id, "project_id": job.project_id, "kind": job.kind, "state": job.state,
            "trigger": job.trigger, "progress": job.progress, "result": job.result, "error": job.error,
            "fraction": round(job_fraction(job.kind, job.state, job.progress), 4),
            "created_at": iso(job.created_at), "started_at": iso(job.started_at),
            "finished_at": iso(job.finished_at), "heartbeat_at": iso(job.heartbeat_at),
            "cancel_requested_at": iso(job.cancel_requested_at)}  # fmt: skip


def _task_ids(tasks: Any) -> list[int] | None:
    if tasks is None:
        return None
    if not isinstance(tasks, list) or not tasks:
        raise ApiError(400, "'tasks' must be a non-empty list of task ids (or tasks with 'id')")
    limit = current_context().settings.max_predict_tasks  # the ids travel with the job: /jobs shows them
    if len(tasks) > limit:
        raise ApiError(400, f"'tasks': {len(tasks)} task ids exceed MAX_PREDICT_TASKS={limit}; pre-annotate a "
                            "whole video ('video_id') or project instead")  # fmt: skip
    try:
        return [parse_id(t.get("id") if isinstance(t, dict) else t, f"tasks[{i}]") for i, t in enumerate(tasks)]
    except LimitError as exc:
        raise ApiError(400, f"'tasks' must hold integer task ids: {exc}") from None


def _force(value: Any) -> bool:
    """`force`: true or false (absent or null: false). A string such as "false" is refused, not taken as true."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"'force' must be true or false, got {value!r:.40}")
    return value


@blueprint.post("/preannotate")
def preannotate() -> Any:
    body = json_body()
    project_id = required_project(body)
    video_id = body.get("video_id")
    if video_id is not None and (isinstance(video_id, bool) or not isinstance(video_id, (str, int))):
        raise ApiError(400, f"'video_id' must be a string, got {video_id!r}")
    if video_id == "":  # no frame task has an empty video id: the job would match nothing
        raise ApiError(400, "'video_id' must not be empty; leave it out to pre-annotate the whole project")
    if video_id is not None:
        check_length(str(video_id), "'video_id'")  # it travels with the job: /jobs shows it
    job_id = preannotate_service.submit_preannotate(
        current_context(), project_id, trigger="api", video_id=None if video_id is None else str(video_id),
        task_ids=_task_ids(body.get("tasks")), force=_force(body.get("force")),
    )  # fmt: skip
    return {"job": job_id}, 202


def _choice(name: str, allowed: tuple[str, ...]) -> str | None:
    """A query parameter that must be one of `allowed` (absent or empty: None): a typo is refused, not
    answered with an empty list."""
    value = request.args.get(name)
    if value is None or value == "":
        return None
    if value not in allowed:
        raise ApiError(400, f"query parameter {name}={value[:40]!r} must be one of {', '.join(allowed)}")
    return value


@blueprint.get("/jobs")
def list_jobs() -> Any:
    limit = query_int("limit") or 100
    with session_scope(current_context().sessions) as session:
        rows = db_jobs.list_jobs(session=session, project_id=query_int("project"), kind=_choice("kind", JOB_KINDS),
                                 state=_choice("state", JOB_STATES), limit=max(1, min(limit, 1000)))  # fmt: skip
        return {"jobs": [job_json(j) for j in rows]}


@blueprint.get("/jobs/<job_id>")
def get_job(job_id: str) -> Any:
    with session_scope(current_context().sessions) as session:
        job = db_jobs.get_job(session=session, job_id=job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r}")
        return job_json(job)


@blueprint.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Any:
    """200 with the job, now "cancelled", when it was queued; 202 with the job, still running, when it was
    running (it stops at its next progress report: poll ``GET /jobs/<id>``)."""
    with session_scope(current_context().sessions) as session:
        job = db_jobs.request_cancel(session=session, job_id=job_id)
        body = job_json(job)
    logger.info("job %s (%s, project %s): %s", job_id, body["kind"], body["project_id"],
                "cancelled while queued" if body["state"] == "cancelled" else "cancel requested while running")  # fmt: skip
    return body, 200 if body["state"] == "cancelled" else 202


@blueprint.get("/metrics")
def metrics() -> Any:
    with session_scope(current_context().sessions) as session:
        return acceptance_metrics(session=session, project_id=query_int("project"))
