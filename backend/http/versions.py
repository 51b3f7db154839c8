"""Training and version routes (a Flask Blueprint), training triggers and the training timer.

Routes (registered by `backend.app.create_app`; `GET /versions` itself lives in app.py):

- ``POST /train {"project": 1[, "config": {"epochs": 5, ...}]}`` -> 202 ``{"job": id}``: queues a
  "train" job (`backend.services.finetune.run_training`); while one is queued or running for the project,
  the trigger coalesces into it and its id is returned.
- ``GET /versions/<name>``: the version with its metrics (training curve, held-out figures, gate
  verdict), config, training data summary and the path of its curve PNG.
- ``GET /versions/<name>/curve.png``: the training curve.
- ``POST /versions/<name>/promote``: serve this version in its scope by hand (promotion or
  rollback; to return a project to the model it had before its first fine-tuned version, promote
  "p<project>-v0"). 404 for an unknown version, 409 when it failed or its head file is missing.
  `/setup` reports the new serving version at once, and predictions switch to its head (the
  predictor cache is keyed by the head file).

Triggers: START_TRAINING (`backend.services.events`), ``POST /train``, and periodic ones:
`maybe_trigger_training` queues a job when at least TRAIN_MIN_CORRECTIONS corrections arrived since
the project's last training job; the `TrainingScheduler` thread (started with the app when
TRAIN_INTERVAL_S > 0, stopped with `app.extensions[SCHEDULER_KEY].stop()`) checks every project
every min(interval, 60 s), training on the count rule or, when the interval has passed since the
project's last job, on any new correction.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Blueprint, current_app, jsonify, request, send_file
from sqlalchemy import select

from backend.db import jobs as db_jobs
from backend.db import versions as db_versions
from backend.db.queries import ConflictError, NotFoundError, count_corrections_since
from backend.db.session import session_scope
from backend.db.tables import Correction, Job, ModelVersion, utcnow
from backend.services.finetune import JOB_KIND, FinetuneConfig, version_files
from backend.services.gate import remember_previous
from backend.services.prediction import serving_model

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

    from backend.jobs.runners import BackendContext

logger = logging.getLogger(__name__)

blueprint = Blueprint("training", __name__)
SCHEDULER_KEY = "dcpose_training_scheduler"
POLL_CAP_S = 60.0


def _ctx() -> BackendContext:
    return current_app.extensions["dcpose"]


def _error(status: int, message: str) -> ResponseReturnValue:
    return jsonify({"error": message}), status


# ----------------------------------------------------------------------------- triggers


def submit_training(ctx: BackendContext, project_id: int, *, trigger: str,
                    config: dict[str, Any] | None = None) -> str:  # fmt: skip
    """Queues a "train" job for the project, or returns the active one it coalesces into.

    Raises:
        RuntimeError: the service has no job runner.
        backend.jobs.runners.JobQueueError: the queue refused the job.
    """
    if ctx.runner is None:
        raise RuntimeError("this process has no job runner; training cannot be queued")
    params: dict[str, Any] = {"config": dict(config)} if config else {}
    return ctx.runner.submit(JOB_KIND, project_id, JOB_KIND, trigger=trigger, **params)  # the job gets project_id


def _last_training(session: Any, project_id: int) -> Job | None:
    jobs = db_jobs.list_jobs(session=session, project_id=project_id, kind=JOB_KIND, limit=1)
    return jobs[0] if jobs else None


def new_corrections(session: Any, project_id: int) -> tuple[int, Job | None]:
    """(corrections stored since the project's last training job started, that job)."""
    last = _last_training(session, project_id)
    return count_corrections_since(session=session, project_id=project_id, job=last), last


def maybe_trigger_training(ctx: BackendContext, project_id: int, *, interval_s: float = 0.0,
                           now: datetime | None = None) -> str | None:  # fmt: skip
    """Queues training when enough new corrections arrived (or the timer is due); returns the job id.

    Rules: at least TRAIN_MIN_CORRECTIONS corrections since the last training job ("corrections");
    or, with `interval_s` > 0, at least one new correction and `interval_s` seconds since the last
    job was created ("timer"). Nothing is queued while a job is active for the project.

    Raises:
        backend.jobs.runners.JobQueueError: the queue refused the job.
    """
    if ctx.runner is None:
        return None
    now = now or utcnow()
    with session_scope(ctx.sessions) as session:
        count, last = new_corrections(session, project_id)
        active = last is not None and last.state in ("queued", "running")
        last_created = last.created_at if last is not None else None
    if active or count == 0:
        return None
    if count >= ctx.settings.train_min_corrections:
        trigger = "corrections"
    elif interval_s > 0 and (last_created is None or now - last_created >= timedelta(seconds=interval_s)):
        trigger = "timer"
    else:
        return None
    job_id = submit_training(ctx, project_id, trigger=trigger)
    logger.info("project %s: %d new corrections -> training job %s (%s)", project_id, count, job_id, trigger)
    return job_id


class TrainingScheduler:
    """A daemon thread that runs `maybe_trigger_training` for every project with corrections.

    Args:
        ctx: the service context (its runner queues the jobs).
        interval_s: TRAIN_INTERVAL_S: the timer rule's period.
        poll_s: how often projects are checked (default: the interval, at most a minute, so that the
            corrections rule is seen soon); tests use short ones.
    """

    def __init__(self, ctx: BackendContext, *, interval_s: float, poll_s: float | None = None) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.ctx = ctx
        self.interval_s = float(interval_s)
        self.poll_s = float(poll_s if poll_s is not None else min(interval_s, POLL_CAP_S))
        self.triggered: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> list[str]:
        """One check of every project; returns the ids of the jobs it queued (or coalesced into)."""
        with session_scope(self.ctx.sessions) as session:
            projects = sorted(session.scalars(select(Correction.project_id).distinct()))
        queued = []
        for project_id in projects:
            job_id = maybe_trigger_training(self.ctx, project_id, interval_s=self.interval_s)
            if job_id is not None:
                queued.append(job_id)
        self.triggered.extend(queued)
        return queued

    def _run(self) -> None:
        from backend.jobs.runners import JobQueueError

        while not self._stop.wait(self.poll_s):
            try:
                self.tick()
            except JobQueueError as exc:  # the runner was stopped (the service is shutting down)
                logger.info("training timer ends: %s", exc)
                return
            except Exception:  # the timer must outlive one bad check (DB down, Redis away)
                logger.exception("training scheduler check failed")

    def start(self) -> TrainingScheduler:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dcpose-train-timer", daemon=True)
            self._thread.start()
            logger.info("training timer every %.0f s (checks every %.1f s)", self.interval_s, self.poll_s)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


@blueprint.record_once
def _start_scheduler(state: Any) -> None:
    ctx = state.app.extensions.get("dcpose")
    if ctx is not None and ctx.settings.train_interval_s > 0 and ctx.runner is not None:
        state.app.extensions[SCHEDULER_KEY] = TrainingScheduler(ctx, interval_s=ctx.settings.train_interval_s).start()


# ----------------------------------------------------------------------------- versions


def version_details(version: ModelVersion, model_dir: str | Path) -> dict[str, Any]:
    """A version row with its files, as JSON."""
    curve = version_files(model_dir, version.name)["curve"]
    head = Path(version.head_path) if version.head_path else None
    return {
        "name": version.name,
        "state": version.state,
        "project_id": version.project_id,
        "backbone": version.backbone,
        "parent": version.parent,
        "head_path": version.head_path,
        "head_exists": None if head is None else head.is_file(),
        "metrics": version.metrics,
        "config": version.config,
        "training_summary": version.training_summary,
        "curve_png": str(curve) if curve.is_file() else None,
        "created_at": version.created_at.isoformat() if version.created_at else None,
        "promoted_at": version.promoted_at.isoformat() if version.promoted_at else None,
    }


def serving_problem(version: ModelVersion) -> str | None:
    """Why a version cannot serve (it failed, or its head file is missing); None when it can."""
    if version.state == "failed":
        return f"model version {version.name!r} failed and has no usable weights"
    if version.head_path and not Path(version.head_path).is_file():
        return f"the head file of model version {version.name!r} is missing: {version.head_path}"
    return None


def promote_version(ctx: BackendContext, name: str) -> dict[str, Any]:
    """Serves `name` in its scope (one transaction); returns what changed.

    Before a project's first own version serves, the model that served it until then is registered
    as "p<project>-v0" (`backend.services.gate.remember_previous`), the target of a rollback.

    Raises:
        NotFoundError: no such version. ConflictError: it failed or its head file is missing.
    """
    with session_scope(ctx.sessions) as session:
        version = db_versions.get_model_version(session=session, name=name)
        project_id = None if version is None else version.project_id
    # Asked before the write transaction: SQLite allows one writer, and serving_model reads in its own.
    fallback = serving_model(ctx, project_id).name if project_id is not None else None
    with session_scope(ctx.sessions) as session:
        version = db_versions.get_model_version(session=session, name=name)
        if version is None:
            raise NotFoundError(f"model version {name!r} does not exist")
        problem = serving_problem(version)
        if problem is not None:
            raise ConflictError(problem)
        before = db_versions.serving_version(session=session, project_id=version.project_id)
        previous = before.name if before is not None else fallback
        if version.project_id is not None and fallback is not None and version.name != fallback:
            remember_previous(session, project_id=version.project_id, serving_name=fallback,
                              backbone_version=version.backbone)  # fmt: skip
        served = db_versions.set_serving(session=session, name=name)
        out = {"serving": served.name, "project_id": served.project_id, "previous": previous}
    logger.info("model version %s serves %s by hand (was %s)", name,
                f"project {out['project_id']}" if out["project_id"] is not None else "globally", previous)
    return out


# ----------------------------------------------------------------------------- routes


@blueprint.post("/train")
def train() -> ResponseReturnValue:
    from backend.jobs.runners import JobQueueError
    from backend.http.ls_model import RequestFormatError, parse_project_id

    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, 'expected a JSON object {"project": <Label Studio project id>}')
    try:
        project_id = parse_project_id(body.get("project"))
    except RequestFormatError as exc:
        return _error(400, str(exc))
    if project_id is None:
        return _error(400, "'project' (the Label Studio project id) is required")
    config = body.get("config")
    if config is not None:
        if not isinstance(config, dict):
            return _error(400, "'config' must be an object of training options")
        try:
            FinetuneConfig.from_mapping(config, source="config")
        except ValueError as exc:
            return _error(400, str(exc))
    try:
        job_id = submit_training(_ctx(), project_id, trigger="api", config=config)
    except (RuntimeError, JobQueueError) as exc:
        return _error(503, str(exc))
    return jsonify({"job": job_id}), 202


@blueprint.get("/versions/<name>")
def version(name: str) -> ResponseReturnValue:
    ctx = _ctx()
    with session_scope(ctx.sessions) as session:
        row = db_versions.get_model_version(session=session, name=name)
        if row is None:
            return _error(404, f"no model version {name!r}")
        return jsonify(version_details(row, ctx.settings.model_dir))


@blueprint.get("/versions/<name>/curve.png")
def curve(name: str) -> ResponseReturnValue:
    ctx = _ctx()
    with session_scope(ctx.sessions) as session:
        known = db_versions.get_model_version(session=session, name=name) is not None
    path = version_files(ctx.settings.model_dir, name)["curve"]
    if not known or not path.is_file():
        return _error(404, f"model version {name!r} has no training curve")
    return send_file(path.resolve(), mimetype="image/png", max_age=0)


@blueprint.post("/versions/<name>/promote")
def promote(name: str) -> ResponseReturnValue:
    try:
        return jsonify(promote_version(_ctx(), name))
    except NotFoundError as exc:
        return _error(404, str(exc))
    except ConflictError as exc:
        return _error(409, str(exc))


def wait_for_job(ctx: BackendContext, job_id: str, *, timeout: float = 60.0, poll: float = 0.05) -> Job:
    """Polls a job row until it is finished (for CLIs and tests); returns the row.

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
