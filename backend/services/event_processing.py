"""Processing recorded webhook events in batches: read, prepare, then one short write transaction.

`process_events` (a lane's batch, `backend.jobs.runners`) takes the events in chunks of
CHUNK_EVENTS, each in three steps:

1. read, in one read-only transaction (`backend.db.session.read_scope`: on SQLite it neither takes
   nor waits for the write lock): the events, the tombstones of their annotations, stored label
   configs, the projects of their tasks and each task's latest prediction;
2. prepare, outside any transaction (most of the work): the LS result becomes persons
   (`results_to_persons`), compared joint by joint with the task's latest prediction
   (`backend.services.corrections.compare`). An event whose content cannot be used fails here;
3. write, in one transaction that only runs statements (on SQLite behind waiting webhooks:
   `backend.db.sqlite_lock.background_writes`): projects, videos, tasks (one executemany), each
   annotation state (kept only when strictly newer than a live stored one; the statement says
   whether it was), the corrections of the annotations that changed (one DELETE, one executemany
   INSERT) and the events' statuses (one executemany UPDATE).

When the write step fails on content (a value the database refuses, such as a string longer than
its column on PostgreSQL), the chunk is rolled back and its events are processed one at a time, so
that only the bad one fails; a database that cannot be reached fails the batch (the events stay
"received" and are requeued at the next start).

Events of one annotation are handled in the order given, and repeats are no-ops: an event found
processed is left alone, an annotation state only moves forward in `updated_at`, and a deleted
annotation stays deleted. After the batch, deletes that overtook a create in another worker are
applied (tombstones are recorded at intake, so one of the two always sees the other), and training
is considered once per project (`backend.services.training.maybe_trigger_training`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.orm import Session

from annotation_io.errors import AnnotationFormatError
from annotation_io.label_studio import LabelConfig, default_config, parse_task, region_ids, results_to_persons
from annotation_io.types import Person
from backend.db import event_batches as db_batches
from backend.db import queries
from backend.db.event_batches import AnnotationCorrections, LatestPrediction, TaskRow
from backend.db.persons import persons_from_json, persons_to_json
from backend.db.session import read_scope, session_scope
from backend.db.sqlite_lock import background_writes
from backend.jobs.registry import JobQueueError
from backend.services import training
from backend.services.corrections import compare
from backend.services.events import ANNOTATION_ACTIONS, parsed_config
from backend.services.prediction import region_id_prefix

if TYPE_CHECKING:
    from backend.context import BackendContext

logger = logging.getLogger(__name__)

CHUNK_EVENTS = 64  # events read, prepared and written together (a lane's batch is EVENT_BATCH, 50)
CONTENT_ERRORS = (AnnotationFormatError, ValueError, LookupError)  # bad payload content, missing rows


@dataclass
class _Read:
    """What step 1 read for a chunk."""

    events: dict[int, Row[Any]]
    tombstoned: set[int]
    configs: dict[int, str | None]
    task_projects: dict[int, int]
    predictions: dict[int, LatestPrediction]


@dataclass
class _Work:
    """One event of a chunk, prepared (step 2) for the write (step 3)."""

    event_id: int
    action: str
    project_id: int
    status: str = "processed"
    error: str | None = None
    project: tuple[int, str | None, str | None] | None = None  # (id, title, label config) to store
    task: TaskRow | None = None
    video: tuple[str, int] | None = None  # (LS video_id, nframes) of a frame task
    annotation: dict[str, Any] = field(default_factory=dict)  # write_annotation's arguments
    corrections: AnnotationCorrections | None = None
    deleted: list[int] = field(default_factory=list)

    def fail(self, exc: Exception) -> None:
        logger.warning("webhook event %s failed: %s", self.event_id, exc)
        self.status, self.error = "failed", str(exc)[:4000]


# ----------------------------------------------------------------------------- step 1: read


def _task_ref(payload: Mapping[str, Any]) -> dict[str, Any]:
    annotation = payload["annotation"]
    return payload["task"] if isinstance(payload.get("task"), dict) else {"id": annotation.get("task")}


def _read(ctx: BackendContext, event_ids: list[int]) -> _Read:
    with read_scope(ctx.engine) as conn:
        events = db_batches.load_events(conn, event_ids)
        todo = [e for e in events.values() if e.status == "received" and e.action in ANNOTATION_ACTIONS]
        task_ids, configless = set(), set()
        for e in todo:
            payload = e.payload or {}
            try:
                task_ids.add(int(_task_ref(payload)["id"]))
            except (LookupError, TypeError, ValueError):  # fails in step 2, with the reason
                pass
            project = payload.get("project")
            if not (isinstance(project, dict) and project.get("label_config")):
                configless.add(int(e.project_id or 0))
        annotation_ids = [e.annotation_id for e in todo if e.annotation_id is not None]
        return _Read(events, db_batches.tombstoned(conn, annotation_ids), db_batches.label_configs(conn, configless),
                     db_batches.task_projects(conn, task_ids), db_batches.latest_predictions(conn, task_ids))  # fmt: skip


# ----------------------------------------------------------------------------- step 2: prepare


def _prepare_annotation(work: _Work, payload: Mapping[str, Any], read: _Read) -> None:
    annotation = payload["annotation"]
    ann_id, project_id = int(annotation["id"]), work.project_id
    project = payload.get("project") if isinstance(payload.get("project"), dict) else {}
    xml = project.get("label_config") or read.configs.get(project_id)
    config = parsed_config(xml) if xml else default_config()
    task = _task_ref(payload)
    task_id = int(task["id"])
    stored = read.task_projects.setdefault(task_id, project_id)  # an earlier event of the chunk counts too
    if stored != project_id:
        raise queries.ConflictError(f"task {task_id} is stored under project {stored}, not {project_id}")
    work.project = (project_id, project.get("title"), project.get("label_config"))
    data = task.get("data") if isinstance(task.get("data"), dict) else None
    try:
        frame = parse_task(task) if "data" in task else None
    except AnnotationFormatError as exc:
        logger.info("annotation %s: task %s is not a frame task (%s)", ann_id, task_id, exc)
        frame = None
    if frame is not None:
        work.task = TaskRow(task_id, project_id, dict(task["data"]), frame.image, None, frame.frame_index)
        work.video = (frame.video_id, frame.nframes)
    else:
        work.task = TaskRow(task_id, project_id, data)
    persons, size = results_to_persons(annotation["result"], config, source=f"annotation {ann_id}", as_labels=True)
    cancelled = bool(annotation.get("was_cancelled"))
    completed_by = annotation.get("completed_by")
    work.annotation = {"annotation_id": ann_id, "task_id": task_id, "project_id": project_id,
                       "result": annotation["result"], "persons": persons_to_json(persons),
                       "ls_updated_at": queries.parse_ls_datetime(annotation["updated_at"]),
                       "completed_by": completed_by if isinstance(completed_by, int) else None,
                       "was_cancelled": cancelled}  # fmt: skip
    prediction = read.predictions.get(task_id)
    predicted = persons_from_json(prediction.persons, source=f"prediction {prediction.id}") if prediction else []
    _name_predicted_regions(predicted, task_id, size.width, size.height, config)
    rows = [] if cancelled else compare(predicted, persons)
    work.corrections = AnnotationCorrections(ann_id, task_id, project_id, rows,
                                             prediction.model_version if prediction else None,
                                             prediction.id if prediction else None)  # fmt: skip


def _name_predicted_regions(predicted: list[Person], task_id: int, width: int, height: int,
                            config: LabelConfig) -> None:  # fmt: skip
    """Gives the predicted persons the box ids they were served with, so that `compare` pairs each with the
    region the annotator edited (the same region, whatever its track id became)."""
    if not predicted or width <= 0 or height <= 0 or config.person_from_name is None:
        return  # an empty result has no size; keypoints-only persons have no box id to keep
    prefix = region_id_prefix(task_id)
    for person, rid in zip(predicted, region_ids(predicted, width, height, config, id_prefix=prefix), strict=True):
        person.region_id = rid


def _prepare(event: Row[Any], read: _Read) -> _Work:
    payload, project_id = event.payload or {}, int(event.project_id or 0)
    work = _Work(event.id, event.action, project_id)
    try:
        if event.action in ANNOTATION_ACTIONS:
            _prepare_annotation(work, payload, read)
        elif event.action == "ANNOTATIONS_DELETED":
            work.deleted = [int(e["id"] if isinstance(e, dict) else e) for e in payload.get("annotations") or []]
        elif event.action == "PROJECT_UPDATED":
            project = payload.get("project") or {}
            work.project = (project_id, project.get("title"), project.get("label_config") or None)
        else:
            work.status = "ignored"
    except CONTENT_ERRORS as exc:
        work.fail(exc)
    return work


# ----------------------------------------------------------------------------- step 3: write


def _write_rows(session: Session, works: list[_Work], tombstoned: set[int]) -> dict[int, int]:
    """Writes the prepared events in order; returns annotation id -> project id of those processed."""
    live = [w for w in works if w.status == "processed"]
    tasks = [(w, w.task) for w in live if w.task is not None]
    db_batches.ensure_projects(session, {w.project_id for w in live if w.project is not None})
    videos: dict[tuple[int, str, int], int] = {}
    rows: dict[int, TaskRow] = {}  # the last event's view of each task
    for w, task in tasks:
        if w.video is not None:
            key = (w.project_id, *w.video)
            if key not in videos:
                videos[key] = db_batches.upsert_video(session, w.project_id, *w.video)
            task = replace(task, video_id=videos[key])
        rows[task.id] = task
    db_batches.upsert_tasks(session, list(rows.values()))
    # Per annotation, the first event with the newest updated_at: the state sequential processing ends with.
    chosen: dict[int, _Work] = {}
    annotations: dict[int, int] = {}
    for w in live:
        if w.action in ANNOTATION_ACTIONS:
            ann_id = w.annotation["annotation_id"]
            if ann_id not in chosen or w.annotation["ls_updated_at"] > chosen[ann_id].annotation["ls_updated_at"]:
                chosen[ann_id] = w
            annotations[ann_id] = w.project_id
    written = db_batches.write_annotations(session, [w.annotation for w in chosen.values()])
    changed = {ann_id: chosen[ann_id].corrections for ann_id in written}
    applied: set[tuple[int, str | None, str | None]] = set()  # project states stored by this chunk
    for w in live:  # in order: project rows and deletes
        if w.project is not None and w.project not in applied:
            db_batches.update_project(session, w.project_id, w.project[1], w.project[2])
            if w.action not in ANNOTATION_ACTIONS:  # PROJECT_UPDATED: what was stored before may differ now
                applied.clear()
            applied.add(w.project)
        if w.deleted:
            marked = queries.mark_annotations_deleted(session=session, annotation_ids=w.deleted)
            logger.info("annotations %s deleted (%d newly marked)", w.deleted, len(marked))
    dead = sorted(a for a in changed if a in tombstoned)  # a delete overtook its create (later ones: below)
    if dead:
        queries.mark_annotations_deleted(session=session, annotation_ids=dead)
    db_batches.replace_corrections(session, [c for a, c in changed.items() if c is not None and a not in dead])
    db_batches.mark_events(session, {w.event_id: (w.status, w.error) for w in works})
    return annotations


def _write(ctx: BackendContext, works: list[_Work], tombstoned: set[int]) -> dict[int, int]:
    with background_writes(), session_scope(ctx.sessions) as session:
        return _write_rows(session, works, tombstoned)


def _content_error(exc: Exception) -> bool:
    """Whether a write failed on the content of an event, not on the database being unavailable."""
    if isinstance(exc, (DataError, IntegrityError)):
        return True  # a value the database refuses (e.g. a string beyond its column on PostgreSQL)
    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        return True  # a value the column type refused (e.g. NaN in JSON)
    return isinstance(exc, CONTENT_ERRORS)


# ----------------------------------------------------------------------------- the batch


def _process_chunk(ctx: BackendContext, event_ids: list[int], statuses: dict[int, str],
                   annotations: dict[int, int], *, alone: bool = False) -> None:  # fmt: skip
    read = _read(ctx, event_ids)
    works = []
    for event_id in event_ids:
        event = read.events.get(event_id)
        if event is None:
            logger.warning("webhook event %s does not exist", event_id)
            statuses[event_id] = "missing"
        elif event.status != "received":
            statuses[event_id] = event.status
        else:
            works.append(_prepare(event, read))
    if not works:
        return
    try:
        written = _write(ctx, works, read.tombstoned)
    except Exception as exc:
        if not _content_error(exc):
            raise
        if not alone:  # find the bad event: one at a time
            logger.info("a batch of %d webhook events failed (%s); processing them one by one", len(works), exc)
            for work in works:
                _process_chunk(ctx, [work.event_id], statuses, annotations, alone=True)
            return
        works[0].fail(getattr(exc, "orig", None) or exc)  # the driver's message, not the statement
        with background_writes(), session_scope(ctx.sessions) as session:
            db_batches.mark_events(session, {works[0].event_id: (works[0].status, works[0].error)})
        written = {}
    statuses.update((w.event_id, w.status) for w in works)
    annotations.update(written)
    logger.info("%d webhook events written (%s)", len(works),
                ", ".join(f"{s} {sum(w.status == s for w in works)}" for s in sorted({w.status for w in works})))  # fmt: skip


def process_events(ctx: BackendContext, *, event_ids: list[int]) -> dict[int, str]:
    """Processes recorded events in the order given (repeats are no-ops); see the module docstring.

    Returns:
        event id -> final status ("processed", "ignored", "failed" or "missing").
    """
    statuses: dict[int, str] = {}
    annotations: dict[int, int] = {}
    for start in range(0, len(event_ids), CHUNK_EVENTS):
        _process_chunk(ctx, list(event_ids[start : start + CHUNK_EVENTS]), statuses, annotations)
    if annotations:
        with read_scope(ctx.engine) as conn:
            dead = db_batches.tombstoned(conn, annotations)
        if dead:
            with background_writes(), session_scope(ctx.sessions) as session:
                queries.mark_annotations_deleted(session=session, annotation_ids=dead)
    for project_id in sorted(set(annotations.values())):
        try:
            training.maybe_trigger_training(ctx, project_id)
        except JobQueueError as exc:  # the events are stored; training waits for the next trigger
            logger.warning("training for project %s not queued: %s", project_id, exc)
    return statuses


def process_event(ctx: BackendContext, *, event_id: int) -> str:
    """Processes a recorded event once (a repeat call is a no-op); returns its final status."""
    return process_events(ctx, event_ids=[event_id])[event_id]
