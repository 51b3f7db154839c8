"""Training: submit a "train" job, trigger it on new corrections or a timer, promote a version by hand.

Every way to start training goes through `submit_training`: START_TRAINING (`backend.services.events`),
``POST /train`` (`backend.http.versions`) and the periodic triggers. While a job is queued or
running for the project, a trigger coalesces into it and its id is returned. START_TRAINING and the
periodic triggers first check `training_readiness` (TRAIN_MIN_FRAMES labelled frames): a run on
fewer frames could not make a meaningful gate and is not started; ``POST /train`` is the operator's
explicit request and always queues.

Periodic triggers: `maybe_trigger_training` queues a job when at least TRAIN_MIN_CORRECTIONS
corrections arrived since the project's last training job; the `TrainingScheduler` thread (started
by `backend.app.create_app` when TRAIN_INTERVAL_S > 0) checks every project every
min(interval, 60 s), training on the count rule or, when the interval has passed since the
project's last job, on any new correction.

`promote_version` serves a version by hand (promotion or rollback; to return a project to the model
it had before its first fine-tuned version, promote "p<project>-v0").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, select

from backend.db import versions as db_versions
from backend.db.queries import ConflictError, NotFoundError, count_corrections_since
from backend.db.session import read_session, session_scope
from backend.db.tables import Correction, Job, ModelVersion, utcnow
from backend.jobs.registry import TRAIN, JobQueueError
from backend.services.finetune_config import FinetuneConfig
from backend.services.ls_sync import request_sync
from backend.services.prediction import serving_model
from backend.services.training_data import gather_project_data

if TYPE_CHECKING:
    from backend.context import BackendContext

logger = logging.getLogger(__name__)

POLL_CAP_S = 60.0
EXACT_COUNT_EVERY_S = 30.0  # a project's new corrections are counted exactly at least this often (_count_new)


class TrainingRequestError(ValueError):
    """A training request with bad options (names the option)."""


# ----------------------------------------------------------------------------- readiness


@dataclass(frozen=True)
class Readiness:
    """Whether a project has enough human-checked frames for a training run whose gate means something.

    Attributes:
        labelled_frames: frames with a live, not cancelled annotation holding at least one person.
        persons: people on those frames.
        min_frames: TRAIN_MIN_FRAMES.
    """

    labelled_frames: int
    persons: int
    min_frames: int

    @property
    def ready(self) -> bool:
        return self.labelled_frames >= self.min_frames

    @property
    def missing(self) -> int:
        """Labelled frames still needed."""
        return max(self.min_frames - self.labelled_frames, 0)

    def refusal(self) -> str:
        """The one-line reason a run is not started (and how many more labels it needs)."""
        return (f"Training not started: {self.labelled_frames} labelled frame(s) with people "
                f"({self.persons} people); a run needs at least {self.min_frames} so that its held-out "
                f"check means something. Submit {self.missing} more labelled frame(s), then press "
                "Start Training again.")  # fmt: skip


def training_readiness(ctx: BackendContext, project_id: int) -> Readiness:
    """Counts the project's labelled frames (with people) and persons against TRAIN_MIN_FRAMES."""
    with session_scope(ctx.sessions) as session:
        data = gather_project_data(session=session, project_id=project_id)
    frames = [f for v in data.videos.values() for f in v.frames if f.persons]
    return Readiness(len(frames), sum(len(f.persons) for f in frames), ctx.settings.train_min_frames)


def start_message(job_id: str, readiness: Readiness, serving: str, watch: str) -> str:
    """The one-line answer to "Start Training": job id, what happens, where to watch."""
    return (f"Training job {job_id} queued: fine-tunes the DCPose head on {readiness.labelled_frames} labelled "
            f"frame(s) ({readiness.persons} people), then scores it against {serving} on held-out frames and "
            f"serves it only if it wins. Watch it at {watch}.")  # fmt: skip


# ----------------------------------------------------------------------------- submit and trigger


def submit_training(ctx: BackendContext, project_id: int, *, trigger: str,
                    config: Mapping[str, Any] | None = None) -> str:  # fmt: skip
    """Queues a "train" job for the project, or returns the active one it coalesces into.

    Args:
        trigger: who asked ("START_TRAINING", "api", "corrections", "timer").
        config: training options overriding MODEL_DIR/train_config.json (`FinetuneConfig` keys).

    Raises:
        TrainingRequestError: `config` is not an object of valid training options.
        backend.context.NoRunnerError: the service has no job runner.
        backend.jobs.registry.JobQueueError: the queue refused the job.
        ConflictError: the project's active training job is being cancelled.
    """
    if config is not None:
        if not isinstance(config, Mapping):
            raise TrainingRequestError("'config' must be an object of training options")
        try:
            FinetuneConfig.from_mapping(config, source="config")
        except ValueError as exc:
            raise TrainingRequestError(str(exc)) from None
    runner = ctx.require_runner("training")
    params: dict[str, Any] = {"config": dict(config)} if config else {}
    return runner.submit(TRAIN, project_id, trigger=trigger, **params)  # the job gets project_id


# Built once: they run after every batch of webhook events.
_LAST_JOB = (select(Job.id, Job.state, Job.started_at, Job.created_at)
             .where(Job.project_id == bindparam("project_id"), Job.kind == TRAIN)
             .order_by(Job.created_at.desc(), Job.id).limit(1))  # fmt: skip
_NEWER = select(func.count()).where(Correction.project_id == bindparam("project_id"), Correction.id > bindparam("mark"))
_TOP = select(func.max(Correction.id)).where(Correction.project_id == bindparam("project_id"))


@dataclass(frozen=True)
class CorrectionTally:
    """A project's exact count of new corrections, and the highest correction id when it was taken.

    Attributes:
        since: (id, start) of the last training job then: the count's origin.
        mark: the project's highest correction id at the count.
        count: corrections after the job's start (of live annotations) at the count.
        at: `time.monotonic()` of the count.
    """

    since: tuple[str | None, datetime | None]
    mark: int
    count: int
    at: float


def _count_new(ctx: BackendContext, session: Any, project_id: int, last: Any, *, exact: bool) -> int:
    """The project's corrections since `last` started: exact, or a bound below TRAIN_MIN_CORRECTIONS.

    Counting exactly joins every correction since the last job with its annotation, after every
    batch of webhook events. Instead, the exact count is remembered with the highest correction id
    then (`ctx.correction_tallies`); later, that count plus the rows with a higher id (an index
    range) bounds the exact count from above, as rows since only add, or are replaced or deleted.
    Only a bound reaching the threshold is checked by an exact count. Rows committed late under a
    lower id (concurrent writers on PostgreSQL) are caught by the exact count every
    EXACT_COUNT_EVERY_S.
    """
    since = (last.id, last.started_at or last.created_at) if last is not None else (None, None)
    tally = ctx.correction_tallies.get(project_id)
    if not exact and tally is not None and tally.since == since and time.monotonic() - tally.at < EXACT_COUNT_EVERY_S:
        bound = tally.count + int(session.scalar(_NEWER, {"project_id": project_id, "mark": tally.mark}) or 0)
        if bound < ctx.settings.train_min_corrections:
            return bound
    mark = session.scalar(_TOP, {"project_id": project_id})
    count = count_corrections_since(session=session, project_id=project_id, since=since[1])
    ctx.correction_tallies[project_id] = CorrectionTally(since, int(mark or 0), count, time.monotonic())
    return count


def maybe_trigger_training(ctx: BackendContext, project_id: int, *, interval_s: float = 0.0,
                           now: datetime | None = None) -> str | None:  # fmt: skip
    """Queues training when enough new corrections arrived (or the timer is due); returns the job id.

    Rules: at least TRAIN_MIN_CORRECTIONS corrections since the last training job ("corrections");
    or, with `interval_s` > 0, at least one new correction and `interval_s` seconds since the last
    job was created ("timer"). Nothing is queued while a job is active for the project, nor by a
    process without a job runner. Cheap when nothing is due (`_count_new`): it runs after every
    batch of webhook events.

    Raises:
        backend.jobs.registry.JobQueueError: the queue refused the job.
    """
    if ctx.runner is None:
        return None
    now = now or utcnow()
    with read_session(ctx.sessions) as session:
        last = session.execute(_LAST_JOB, {"project_id": project_id}).first()
        if last is not None and last.state in ("queued", "running"):
            return None
        count = _count_new(ctx, session, project_id, last, exact=interval_s > 0)
        last_created = last.created_at if last is not None else None
    if count == 0:
        return None
    if count >= ctx.settings.train_min_corrections:
        trigger = "corrections"
    elif interval_s > 0 and (last_created is None or now - last_created >= timedelta(seconds=interval_s)):
        trigger = "timer"
    else:
        return None
    readiness = training_readiness(ctx, project_id)
    if not readiness.ready:
        logger.info("project %s: %d new corrections, %s", project_id, count, readiness.refusal())
        return None
    try:
        job_id = submit_training(ctx, project_id, trigger=trigger)
    except ConflictError as exc:  # a job started meanwhile and is being cancelled: the next check decides
        logger.info("project %s: %d new corrections, training not queued: %s", project_id, count, exc)
        return None
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
        return queued

    def _run(self) -> None:
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


def start_scheduler(ctx: BackendContext) -> TrainingScheduler | None:
    """The started training timer when TRAIN_INTERVAL_S > 0 and the process has a runner; else None."""
    if ctx.settings.train_interval_s > 0 and ctx.runner is not None:
        return TrainingScheduler(ctx, interval_s=ctx.settings.train_interval_s).start()
    return None


# ----------------------------------------------------------------------------- promote


def serving_problem(version: ModelVersion) -> str | None:
    """Why a version cannot serve (it failed, or its head file is missing); None when it can."""
    if version.state == "failed":
        return f"model version {version.name!r} failed and has no usable weights"
    if version.head_path and not Path(version.head_path).is_file():
        return f"the head file of model version {version.name!r} is missing: {version.head_path}"
    return None


def head_problem(name: str, head_path: str | None, backbone: str) -> str | None:
    """Why a version's head file cannot serve: it does not load as a head of its backbone (damaged, NaN
    weights, another backbone's); None when it loads or there is none (`serving_problem` covers a missing
    file). Loaded as serving would load it, so that a head that cannot predict is never promoted."""
    if not head_path or not Path(head_path).is_file():
        return None
    from model.pipeline.predictor import load_head

    try:
        load_head(head_path, backbone.split(":")[0])
    except (OSError, ValueError) as exc:  # model.checkpoint.CheckpointError is a ValueError
        return f"the head of model version {name!r} cannot serve: {exc}"
    return None


def promote_version(ctx: BackendContext, name: str) -> dict[str, Any]:
    """Serves `name` in its scope (one transaction); returns what changed.

    Before a project's first own version serves, the model that served it until then is registered
    as "p<project>-v0" (`backend.db.versions.remember_previous`), the target of a rollback.
    `/setup` reports the new serving version at once, and predictions switch to its head (the
    predictor cache is keyed by the head file).

    Raises:
        NotFoundError: no such version. ConflictError: it failed, or its head file is missing or does
        not load (damaged, NaN weights, trained for another backbone).
    """
    with session_scope(ctx.sessions) as session:
        version = db_versions.get_model_version(session=session, name=name)
        project_id = None if version is None else version.project_id
        head = None if version is None else (version.head_path, version.backbone)
    # Asked before the write transaction: SQLite allows one writer, and serving_model reads in its own.
    fallback = serving_model(ctx, project_id).name if project_id is not None else None
    problem = head_problem(name, *head) if head is not None else None  # seconds of torch: outside the writes
    if problem is not None:
        raise ConflictError(problem)
    with session_scope(ctx.sessions) as session:
        db_versions.lock_serving_scope(session=session, project_id=project_id)
        version = db_versions.get_model_version(session=session, name=name)
        if version is None:
            raise NotFoundError(f"model version {name!r} does not exist")
        problem = serving_problem(version)
        if problem is not None:
            raise ConflictError(problem)
        before = db_versions.serving_version(session=session, project_id=version.project_id)
        previous = before.name if before is not None else fallback
        if version.project_id is not None and fallback is not None and version.name != fallback:
            db_versions.remember_previous(session=session, project_id=version.project_id, serving_name=fallback,
                                          backbone_version=version.backbone)  # fmt: skip
        served = db_versions.set_serving(session=session, name=name)
        out = {"serving": served.name, "project_id": served.project_id, "previous": previous}
    request_sync(ctx, out["project_id"], note=f"{name} serves now (by hand; was {previous})")
    logger.info("model version %s serves %s by hand (was %s)", name,
                f"project {out['project_id']}" if out["project_id"] is not None else "globally", previous)  # fmt: skip
    return out
