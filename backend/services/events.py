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
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from annotation_io.errors import AnnotationFormatError
from annotation_io.label_studio import (
    LabelConfig,
    default_config,
    parse_config,
    parse_task,
    results_to_persons,
)
from backend.db import events as db_events
from backend.db import queries
from backend.db.persons import persons_from_json
from backend.db.session import session_scope
from backend.db.tables import Project, WebhookEvent
from backend.jobs.registry import PROCESS_EVENT, JobQueueError
from backend.services import ls_sync, training
from backend.services.corrections import compare

if TYPE_CHECKING:
    from backend.context import BackendContext

logger = logging.getLogger(__name__)

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
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        raise WebhookPayloadError(f"{where} must be an integer id, got {value!r}")
    return value


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
        ids = [
            _int(e.get("id") if isinstance(e, dict) else e, f"annotations[{i}].id")
            for i, e in enumerate(entries)
        ]
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
        annotation = _object(payload, "annotation", action)
        if not isinstance(annotation.get("result"), list):
            raise WebhookPayloadError(f"{action}: annotation.result must be a list of regions")
        task = payload.get("task")
        _int(
            task.get("id") if isinstance(task, dict) else annotation.get("task"),
            "task.id (or annotation.task)",
        )
    elif action in ("PROJECT_UPDATED", "START_TRAINING"):
        _object(payload, "project", action)
    project_id = _project_id(payload, action)
    key, annotation_id = _dedup(action, payload, project_id)
    with session_scope(ctx.sessions) as session:
        event, new = db_events.record_event(session=session, action=action, dedup_key=key, project_id=project_id,
                                            annotation_id=annotation_id, payload=payload)  # fmt: skip
        event_id = event.id
    if not new:
        logger.info("webhook %s (project %s) is a repeat of event %s", action, project_id, event_id)
        return {"status": "duplicate", "event": event_id}, 200
    if action == "START_TRAINING":
        return _start_training(ctx, project_id, event_id, backend_url)
    ctx.require_runner("webhook processing").enqueue(PROCESS_EVENT, event_id=event_id)
    return {"status": "queued", "event": event_id}, 201


# ----------------------------------------------------------------------------- processing


def _config(session: Session, project_id: int, payload: Mapping[str, Any]) -> LabelConfig:
    project = payload.get("project")
    xml = project.get("label_config") if isinstance(project, dict) else None
    if not xml:
        stored = session.get(Project, project_id)
        xml = stored.label_config if stored is not None else None
    return parse_config(xml) if xml else default_config()


def _deleted_by_event(session: Session, project_id: int, annotation_id: int) -> bool:
    """Whether a recorded ANNOTATIONS_DELETED names the annotation (a delete overtaking its create)."""
    stmt = select(WebhookEvent.payload).where(WebhookEvent.action == "ANNOTATIONS_DELETED",
                                              WebhookEvent.project_id == project_id)  # fmt: skip
    for payload in session.scalars(stmt):
        for entry in (payload or {}).get("annotations") or []:
            if (entry.get("id") if isinstance(entry, dict) else entry) == annotation_id:
                return True
    return False


def _annotation(session: Session, project_id: int, payload: Mapping[str, Any]) -> str:
    annotation = payload["annotation"]
    ann_id = int(annotation["id"])
    task = payload.get("task") if isinstance(payload.get("task"), dict) else {"id": annotation.get("task")}
    task_id = int(task["id"])
    config = _config(session, project_id, payload)
    project = payload.get("project") if isinstance(payload.get("project"), dict) else {}
    queries.upsert_project(session=session, project_id=project_id, title=project.get("title"),
                           label_config=project.get("label_config"))  # fmt: skip
    try:
        frame = parse_task(task) if "data" in task else None
    except AnnotationFormatError as exc:
        logger.info("annotation %s: task %s is not a frame task (%s)", ann_id, task_id, exc)
        frame = None
    if frame is not None:
        queries.upsert_task(session=session, task_id=task_id, project_id=project_id, data=task["data"],
                            image=frame.image, video_key=frame.video_id, frame_index=frame.frame_index,
                            nframes=frame.nframes)  # fmt: skip
    else:
        queries.upsert_task(session=session, task_id=task_id, project_id=project_id,
                            data=task.get("data") if isinstance(task.get("data"), dict) else None)  # fmt: skip
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
    if _deleted_by_event(session, project_id, ann_id):
        queries.mark_annotations_deleted(session=session, annotation_ids=[ann_id])
        return "processed"
    prediction = queries.latest_prediction(session=session, task_id=task_id)
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


def _handle(session: Session, event: WebhookEvent) -> str:
    payload, project_id = event.payload or {}, int(event.project_id or 0)
    if event.action in ANNOTATION_ACTIONS:
        return _annotation(session, project_id, payload)
    if event.action == "ANNOTATIONS_DELETED":
        ids = [int(e["id"] if isinstance(e, dict) else e) for e in payload.get("annotations") or []]
        marked = queries.mark_annotations_deleted(session=session, annotation_ids=ids)
        logger.info("annotations %s deleted (%d newly marked)", ids, len(marked))
        return "processed"
    if event.action == "PROJECT_UPDATED":
        project = payload.get("project") or {}
        queries.upsert_project(session=session, project_id=project_id, title=project.get("title"),
                               label_config=project.get("label_config") or None)  # fmt: skip
        return "processed"
    return "ignored"


def process_event(ctx: BackendContext, *, event_id: int) -> str:
    """Processes a recorded event once (a repeat call is a no-op); returns its final status."""
    try:
        with session_scope(ctx.sessions) as session:
            event = session.get(WebhookEvent, event_id)
            if event is None:
                logger.warning("webhook event %s does not exist", event_id)
                return "missing"
            if event.status != "received":
                return event.status
            status = _handle(session, event)
            db_events.mark_event(session=session, event_id=event_id, status=status)
            action, project_id = event.action, event.project_id
    except (AnnotationFormatError, ValueError, LookupError) as exc:  # bad payload content, missing rows
        logger.warning("webhook event %s failed: %s", event_id, exc)
        with session_scope(ctx.sessions) as session:
            db_events.mark_event(session=session, event_id=event_id, status="failed", error=str(exc)[:4000])
        return "failed"
    if action in ANNOTATION_ACTIONS and status == "processed" and project_id is not None:
        try:
            training.maybe_trigger_training(ctx, project_id)
        except JobQueueError as exc:  # the event itself is stored; training waits for the next trigger
            logger.warning("training for project %s not queued: %s", project_id, exc)
    return status
