"""Label Studio webhooks: validate, record (deduplicated), queue; then process in the background.

Label Studio sends project webhooks synchronously inside the annotator's submit, with a short
timeout and no retry. `receive` therefore only validates the
payload, records the event (`backend.db.events.record_event`, deduplicated, secrets stripped) and
queues `process_event`; it answers in a few milliseconds. Processing is idempotent:

- ANNOTATION_CREATED / ANNOTATION_UPDATED: the result becomes persons (`results_to_persons`:
  keypoints without parentID join the box that holds them), `upsert_annotation` keeps only a
  strictly newer `updated_at`, and, when the row changed, `backend.services.corrections.compare` against the
  latest prediction served for the task replaces the annotation's corrections;
- ANNOTATIONS_DELETED (plural, as LS sends it): the annotations are marked deleted;
- PROJECT_UPDATED: the project row (title, labelling config) is refreshed;
- START_TRAINING (carries only the project): when the project has TRAIN_MIN_FRAMES labelled frames,
  queues a "train" job through `backend.services.training.submit_training`, as ``POST /train`` does
  (later triggers coalesce into it); else starts nothing. Either way the answer carries a one-line
  `message` (job id, what happens, where to watch; or why not and how many more labelled frames
  are needed), also shown as the ML backend card's title in Label Studio. The answer names the job
  `job_id`, not `job`: with `job`, Label Studio would poll a `/job_status` route; our job state is
  at `GET /jobs/<id>`.
After an annotation event is processed, training is queued when TRAIN_MIN_CORRECTIONS new
corrections have arrived since the last run (`backend.services.training.maybe_trigger_training`).

Other Label Studio actions are acknowledged and ignored; unknown ones are refused.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from annotation_io.errors import AnnotationFormatError
from annotation_io.label_studio import (
    LabelConfig,
    default_config,
    parse_config,
    results_to_persons,
)
from backend.db import events as db_events
from backend.db import queries
from backend.db.persons import persons_from_json
from backend.db.session import session_scope
from backend.db.tables import Project, WebhookEvent
from backend.jobs.registry import PROCESS_EVENT, JobQueueError
from backend.limits import LimitError, Limits, check_frame_fields, check_result, parse_id
from backend.services import ls_sync, training
from backend.services.corrections import compare
from backend.services.event_batch import Batch, latest_prediction, load_events, upsert_project_task

if TYPE_CHECKING:
    from backend.context import BackendContext

logger = logging.getLogger(__name__)

CHUNK_EVENTS = 64  # events read (and their tombstones looked up) with one statement each
BATCH_BUDGET_S = 0.05  # one processing transaction (SQLite) lasts about this long, then commits
ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
HANDLED_ACTIONS = (*ANNOTATION_ACTIONS, "ANNOTATIONS_DELETED", "START_TRAINING", "PROJECT_UPDATED")
# Label Studio's other webhook actions (label_studio/webhooks/models.py): acknowledged, not used.
IGNORED_ACTIONS = (
    "PROJECT_CREATED", "PROJECT_DELETED", "TASKS_CREATED", "TASKS_DELETED", "ANNOTATIONS_CREATED",
    "LABEL_LINK_CREATED", "LABEL_LINK_UPDATED", "LABEL_LINK_DELETED", "REVIEW_CREATED", "REVIEW_UPDATED",
    "REVIEWS_DELETED", "TASK_ASSIGNEE_CHANGED",
)  # fmt: skip


class WebhookPayloadError(ValueError):
    """A webhook payload that cannot be handled (missing field, wrong type, unknown action)."""


def _int(value: Any, where: str) -> int:
    try:
        return parse_id(value, where)
    except LimitError as exc:
        raise WebhookPayloadError(str(exc)) from None


def _object(payload: Mapping[str, Any], key: str, action: str) -> dict[str, Any]:
    value = payload.get(key)
    if not isinstance(value, dict):
        raise WebhookPayloadError(f"{action} needs an object '{key}', got {type(value).__name__}")
    return value


def _project_id(payload: Mapping[str, Any], action: str) -> int:
    project = payload.get("project")
    if isinstance(project, dict):
        return _int(project.get("id"), "project.id")
    if project is not None:
        return _int(project, "project")
    for key in ("annotation", "task"):
        if isinstance(payload.get(key), dict) and payload[key].get("project") is not None:
            return _int(payload[key]["project"], f"{key}.project")
    raise WebhookPayloadError(f"{action} payload has no project (expected 'project': {{'id': ...}})")


def _deleted_ids(payload: Mapping[str, Any]) -> list[int]:
    entries = payload.get("annotations") or []
    return [_int(e.get("id") if isinstance(e, dict) else e, f"annotations[{i}].id") for i, e in enumerate(entries)]


def _dedup(action: str, payload: Mapping[str, Any], project_id: int) -> tuple[str, int | None]:
    """(dedup key, annotation id) of a validated event."""
    if action in ANNOTATION_ACTIONS:
        annotation = payload["annotation"]
        updated = annotation.get("updated_at")
        if not isinstance(updated, str):
            raise WebhookPayloadError(f"annotation.updated_at must be an ISO timestamp, got {updated!r}")
        try:
            queries.parse_ls_datetime(updated)
        except ValueError as exc:
            raise WebhookPayloadError(f"annotation.updated_at: {exc}") from None
        ann_id = _int(annotation.get("id"), "annotation.id")
        return db_events.event_dedup_key(action, [ann_id], updated), ann_id
    if action == "ANNOTATIONS_DELETED":
        entries = payload.get("annotations")
        if not isinstance(entries, list) or not entries:
            raise WebhookPayloadError(
                "ANNOTATIONS_DELETED needs a non-empty list 'annotations' of {'id': ...}"
            )
        ids = _deleted_ids(payload)
        return db_events.event_dedup_key(action, ids, None, extra=str(project_id)), ids[0] if len(
            ids
        ) == 1 else None
    if action == "PROJECT_UPDATED":
        project = payload["project"]
        stamp = project.get("updated_at")
        extra = (
            f"{project_id}:{stamp}"
            if stamp
            else f"{project_id}:{project.get('title')}:{project.get('label_config')}"
        )
        return db_events.event_dedup_key(action, [], None, extra=extra), None
    return db_events.event_dedup_key(action, [], None, extra=uuid.uuid4().hex), None  # each click counts


def _label_config(xml: Any) -> LabelConfig:
    if not isinstance(xml, str):
        raise WebhookPayloadError(f"project.label_config must be the labelling config XML, got {type(xml).__name__}")
    return parse_config(xml)  # ConfigError (a 400) names what the config lacks


def _check_annotation(limits: Limits, session: Session, payload: Mapping[str, Any], action: str,
                      project_id: int) -> None:  # fmt: skip
    """Refuses at intake what processing would fail on: limits, coordinates, ids, unreadable regions.

    Raises:
        WebhookPayloadError | LimitError | AnnotationFormatError: the first problem found.
    """
    annotation = payload["annotation"]
    task = payload.get("task")
    _int(task.get("id") if isinstance(task, dict) else annotation.get("task"), "task.id (or annotation.task)")
    completed_by = annotation.get("completed_by")
    if isinstance(completed_by, int) and not isinstance(completed_by, bool):
        _int(completed_by, "annotation.completed_by")
    if isinstance(task, dict) and isinstance(task.get("data"), dict):
        check_frame_fields(task["data"], limits, "task.data")
    check_result(annotation["result"], limits, "annotation.result")
    project = payload.get("project")
    xml = project.get("label_config") if isinstance(project, dict) else None
    config = _label_config(xml) if xml else _config(session, project_id, payload)
    results_to_persons(annotation["result"], config, source=f"annotation {annotation.get('id')}", as_labels=True)


def _start_training(ctx: BackendContext, project_id: int, event_id: int,
                    backend_url: str | None) -> tuple[dict[str, Any], int]:  # fmt: skip
    """START_TRAINING: queues a run when the project has enough labels; answers with a one-line message.

    Label Studio 1.23's dialog prints only `Response: {}`, so the message is also posted as the title
    of the project's ML backend card (`backend.services.ls_sync`) and the job shows on the status page.
    """
    readiness = training.training_readiness(ctx, project_id)
    if not readiness.ready:
        body: dict[str, Any] = {"status": "not_started", "message": readiness.refusal(), "event": event_id,
                                "labelled_frames": readiness.labelled_frames, "persons": readiness.persons,
                                "min_frames": readiness.min_frames, "missing_frames": readiness.missing}  # fmt: skip
        status = 200
    else:
        job_id = training.submit_training(ctx, project_id, trigger="START_TRAINING")
        watch = f"{backend_url}/ (status page) or {backend_url}/jobs/{job_id}" if backend_url else \
            f"this backend's status page (/) or GET /jobs/{job_id}"  # fmt: skip
        serving = training.serving_model(ctx, project_id).name
        message = training.start_message(job_id, readiness, serving, watch)
        body, status = {"status": "queued", "job_id": job_id, "event": event_id, "message": message}, 201
    with session_scope(ctx.sessions) as session:
        db_events.mark_event(session=session, event_id=event_id, status="processed")
    logger.info("project %s: START_TRAINING: %s", project_id, body["message"])
    ls_sync.request_sync(ctx, project_id, note=body["message"], backend_url=backend_url)
    return body, status


def receive(ctx: BackendContext, payload: Any, *, backend_url: str | None = None) -> tuple[dict[str, Any], int]:
    """Validates, records and queues one webhook; returns (response body, HTTP status).

    Args:
        backend_url: this service as Label Studio reached it (named in START_TRAINING's message).

    Raises:
        WebhookPayloadError: not an object, no or unknown action, or a missing/mistyped field.
    """
    if not isinstance(payload, dict):
        raise WebhookPayloadError(f"a webhook body must be a JSON object, got {type(payload).__name__}")
    action = payload.get("action")
    if not isinstance(action, str) or not action:
        raise WebhookPayloadError("the webhook has no 'action'")
    if action in IGNORED_ACTIONS:
        logger.debug("webhook %s ignored", action)
        return {"status": "ignored", "action": action}, 200
    if action not in HANDLED_ACTIONS:
        raise WebhookPayloadError(f"unknown action {action!r}; handled: {', '.join(HANDLED_ACTIONS)}")
    if action in ANNOTATION_ACTIONS:
        if not isinstance(_object(payload, "annotation", action).get("result"), list):
            raise WebhookPayloadError(f"{action}: annotation.result must be a list of regions")
    elif action in ("PROJECT_UPDATED", "START_TRAINING"):
        _object(payload, "project", action)
    project_id = _project_id(payload, action)
    key, annotation_id = _dedup(action, payload, project_id)
    if action == "PROJECT_UPDATED" and payload["project"].get("label_config"):
        _label_config(payload["project"]["label_config"])
    with ctx.intake.recording(), session_scope(ctx.sessions) as session:
        if action in ANNOTATION_ACTIONS:  # refused here, in the recording transaction, or never
            _check_annotation(ctx.settings.limits, session, payload, action, project_id)
        event, new = db_events.record_event(session=session, action=action, dedup_key=key, project_id=project_id,
                                            annotation_id=annotation_id, payload=payload)  # fmt: skip
        event_id = event.id
        if new and action == "ANNOTATIONS_DELETED":  # indexed at intake: a later create finds it by id
            db_events.record_tombstones(session=session, project_id=project_id, annotation_ids=_deleted_ids(payload))
    if not new:
        logger.info("webhook %s (project %s) is a repeat of event %s", action, project_id, event_id)
        return {"status": "duplicate", "event": event_id}, 200
    if action == "START_TRAINING":
        return _start_training(ctx, project_id, event_id, backend_url)
    ctx.require_runner("webhook processing").enqueue(PROCESS_EVENT, event_id=event_id, order_key=annotation_id)
    return {"status": "queued", "event": event_id}, 201


# ----------------------------------------------------------------------------- processing


def _config(session: Session, project_id: int, payload: Mapping[str, Any], batch: Batch | None = None) -> LabelConfig:
    project = payload.get("project")
    xml = project.get("label_config") if isinstance(project, dict) else None
    if not xml:
        stored = session.get(Project, project_id)
        xml = stored.label_config if stored is not None else None
    if not xml:
        return default_config()
    if batch is None:
        return parse_config(xml)
    if xml not in batch.configs:
        batch.configs[xml] = parse_config(xml)
    return batch.configs[xml]


def _annotation(session: Session, batch: Batch, project_id: int, payload: Mapping[str, Any]) -> str:
    annotation = payload["annotation"]
    ann_id = int(annotation["id"])
    config = _config(session, project_id, payload, batch)
    task_id = upsert_project_task(session, batch, project_id, ann_id, payload)
    persons, _ = results_to_persons(
        annotation["result"], config, source=f"annotation {ann_id}", as_labels=True
    )
    cancelled = bool(annotation.get("was_cancelled"))
    completed_by = annotation.get("completed_by")
    row, changed = queries.upsert_annotation(
        session=session, annotation_id=ann_id, task_id=task_id, project_id=project_id, result=annotation["result"],
        persons=persons, ls_updated_at=queries.parse_ls_datetime(annotation["updated_at"]),
        completed_by=completed_by if isinstance(completed_by, int) else None, was_cancelled=cancelled,
    )  # fmt: skip
    if not changed:
        return "processed"
    if ann_id in batch.tombstoned:  # a delete overtook its create (later ones: process_events)
        queries.mark_annotations_deleted(session=session, annotation_ids=[ann_id])
        return "processed"
    prediction = latest_prediction(session, batch, task_id)
    predicted = (
        persons_from_json(prediction.persons, source=f"prediction {prediction.id}") if prediction else []
    )
    rows = [] if cancelled else compare(predicted, persons)
    queries.replace_corrections(session=session, annotation=row, rows=rows,
                                model_version=prediction.model_version if prediction else None,
                                prediction_id=prediction.id if prediction else None)  # fmt: skip
    logger.info("annotation %s (task %s): %d persons, %d correction rows vs %s", ann_id, task_id, len(persons),
                len(rows), prediction.model_version if prediction else "no prediction")  # fmt: skip
    return "processed"


def _handle(session: Session, batch: Batch, event: WebhookEvent) -> str:
    payload, project_id = event.payload or {}, int(event.project_id or 0)
    if event.action in ANNOTATION_ACTIONS:
        return _annotation(session, batch, project_id, payload)
    if event.action == "ANNOTATIONS_DELETED":
        ids = [int(e["id"] if isinstance(e, dict) else e) for e in payload.get("annotations") or []]
        marked = queries.mark_annotations_deleted(session=session, annotation_ids=ids)
        logger.info("annotations %s deleted (%d newly marked)", ids, len(marked))
        return "processed"
    if event.action == "PROJECT_UPDATED":
        project = payload.get("project") or {}
        queries.upsert_project(session=session, project_id=project_id, title=project.get("title"),
                               label_config=project.get("label_config") or None)  # fmt: skip
        batch.applied = {k for k in batch.applied if k[0] != "project"}  # the batch's view of it changed
        return "processed"
    return "ignored"


def _process_one(session: Session, batch: Batch, event: WebhookEvent) -> str:
    """Handles one event under a savepoint: bad content marks it failed without undoing the batch."""
    try:
        with session.begin_nested():
            status = _handle(session, batch, event)
            db_events.mark_event(session=session, event_id=event.id, status=status)
        return status
    except (AnnotationFormatError, ValueError, LookupError) as exc:  # bad payload content, missing rows
        batch.clear()
        logger.warning("webhook event %s failed: %s", event.id, exc)
        db_events.mark_event(session=session, event_id=event.id, status="failed", error=str(exc)[:4000])
        return "failed"


def process_events(ctx: BackendContext, *, event_ids: list[int]) -> dict[int, str]:
    """Processes recorded events in one transaction, in the order given (repeats are no-ops).

    One short transaction per batch instead of one per event; after it, deletes that overtook a
    create in another worker are applied (tombstones are recorded at intake, so one of the two
    always sees the other), and training is considered once per project.

    Returns:
        event id -> final status ("processed", "ignored", "failed" or "missing").
    """
    statuses: dict[int, str] = {}
    annotations: dict[int, int] = {}
    pending = list(event_ids)
    while pending:
        _process_chunk(ctx, pending, statuses, annotations)
    if annotations:
        with session_scope(ctx.sessions) as session:
            dead = db_events.tombstoned(session=session, annotation_ids=list(annotations))
            if dead:
                queries.mark_annotations_deleted(session=session, annotation_ids=dead)
    for project_id in sorted(set(annotations.values())):
        try:
            training.maybe_trigger_training(ctx, project_id)
        except JobQueueError as exc:  # the events are stored; training waits for the next trigger
            logger.warning("training for project %s not queued: %s", project_id, exc)
    return statuses


def _process_chunk(ctx: BackendContext, pending: list[int], statuses: dict[int, str],
                   annotations: dict[int, int]) -> None:  # fmt: skip
    """Processes events off the front of `pending` in one transaction.

    On SQLite the transaction lasts about BATCH_BUDGET_S: the budget keeps its one write lock short,
    so that webhook intake never waits long for it. PostgreSQL takes the whole batch at once (row
    locks only; fewer round trips and commits).
    """
    sqlite = ctx.engine.dialect.name == "sqlite"
    if sqlite:  # webhooks being recorded go first (one write lock); PostgreSQL locks rows, nobody waits
        ctx.intake.wait_idle(BATCH_BUDGET_S)
    started = time.monotonic()
    with session_scope(ctx.sessions) as session:
        budget = BATCH_BUDGET_S if sqlite else math.inf
        batch = Batch()
        loaded: dict[int, WebhookEvent | None] = {}
        while pending and time.monotonic() - started < budget:
            if pending[0] not in loaded:
                load_events(session, batch, pending[:CHUNK_EVENTS], loaded)
            event_id = pending.pop(0)
            event = loaded.get(event_id)
            if event is None:
                logger.warning("webhook event %s does not exist", event_id)
                statuses[event_id] = "missing"
                continue
            if event.status != "received":
                statuses[event_id] = event.status
                continue
            statuses[event_id] = status = _process_one(session, batch, event)
            if event.action in ANNOTATION_ACTIONS and status == "processed" and event.annotation_id is not None:
                annotations[event.annotation_id] = int(event.project_id or 0)


def process_event(ctx: BackendContext, *, event_id: int) -> str:
    """Processes a recorded event once (a repeat call is a no-op); returns its final status."""
    return process_events(ctx, event_ids=[event_id])[event_id]
