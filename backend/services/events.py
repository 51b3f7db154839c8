"""Label Studio webhooks: validate, record (deduplicated), queue; processing is `event_processing`.

Label Studio sends project webhooks synchronously inside the annotator's submit, with a short
timeout and no retry. `receive` therefore only validates the payload (refusing at intake, with a
4xx, what processing could not use), records the event (`backend.db.events.record_event`,
deduplicated, secrets stripped, committed before the answer) and queues `process_event`; it
answers in a few milliseconds. When processing falls behind (more than EVENT_BACKLOG events queued),
the answer is held back, by up to MAX_HOLD_S at twice that backlog (`hold_seconds`), well inside
Label Studio's timeout: a sender that waits for each answer then slows to what processing keeps up
with, and the backlog (how far corrections and training triggers lag) stays bounded. Processing
(`backend.services.event_processing`, in batches) is idempotent:

- ANNOTATION_CREATED / ANNOTATION_UPDATED: the result becomes persons (`results_to_persons`:
  keypoints without parentID join the box that holds them), the annotation keeps only a strictly
  newer `updated_at`, and, when the row changed, `backend.services.corrections.compare` against
  the latest prediction served for the task replaces the annotation's corrections;
- ANNOTATIONS_DELETED (plural, as LS sends it): the annotations are marked deleted (their ids are
  recorded as tombstones at intake, so a create arriving later finds them);
- PROJECT_UPDATED: the project row (title, labelling config) is refreshed;
- START_TRAINING (carries only the project): when the project has TRAIN_MIN_FRAMES labelled frames,
  queues a "train" job through `backend.services.training.submit_training`, as ``POST /train`` does
  (later triggers coalesce into it); else, or while the project's training job is being cancelled,
  starts nothing. Either way the answer carries a one-line `message` (job id, what happens, where to
  watch; or why not, e.g. how many more labelled frames are needed), also shown as the ML backend
  card's title in Label Studio. The answer names the job `job_id`, not `job`: with `job`, Label
  Studio would poll a `/job_status` route; our job state is at `GET /jobs/<id>`.
After annotation events are processed, training is queued when TRAIN_MIN_CORRECTIONS new
corrections have arrived since the last run (`backend.services.training.maybe_trigger_training`).

Other Label Studio actions are acknowledged and ignored; unknown ones are refused.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from annotation_io.label_studio import LabelConfig, default_config, parse_config, results_to_persons
from backend.db import events as db_events
from backend.db import queries
from backend.db.event_batches import label_configs
from backend.db.queries import ConflictError
from backend.db.session import read_scope, session_scope
from backend.jobs.registry import PROCESS_EVENT
from backend.limits import (
    LimitError,
    check_frame_fields,
    check_length,
    check_result,
    check_track_ids,
    parse_id,
)
from backend.services import ls_sync, training

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


MAX_HOLD_S = 0.3  # the longest an answer is held back (Label Studio waits about 1 s)


def hold_seconds(backlog: int, threshold: int) -> float:
    """How long to hold an answer back with `backlog` events queued: 0 up to `threshold` (0 = never),
    rising linearly to MAX_HOLD_S at twice `threshold`."""
    if threshold <= 0 or backlog <= threshold:
        return 0.0
    return MAX_HOLD_S * min(1.0, (backlog - threshold) / threshold)


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


def _check_title(project: Any) -> None:
    title = project.get("title") if isinstance(project, dict) else None
    if title is not None and not isinstance(title, str):
        raise WebhookPayloadError(f"project.title must be a string, got {type(title).__name__}")
    if title is not None:
        check_length(title, "project.title")


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


CONFIG_CACHE_SIZE = 64  # parsed labelling configs kept (a few KB each), least recently used dropped
_CONFIGS: OrderedDict[bytes, LabelConfig] = OrderedDict()
_CONFIGS_LOCK = threading.Lock()


def parsed_config(xml: str) -> LabelConfig:
    """`parse_config`, once per distinct config in this process (a project's arrives with every webhook).

    Kept by the config's SHA-256, not its text: an lru_cache keyed by the text held every config it had
    seen, and 64 configs of MAX_REQUEST_MB (32 MB) each stayed in memory (2 GB) for good.

    Raises:
        ConfigError: invalid XML or a missing control (a 400 naming what the config lacks).
    """
    key = hashlib.sha256(xml.encode("utf-8", "surrogatepass")).digest()
    with _CONFIGS_LOCK:
        config = _CONFIGS.get(key)
        if config is not None:
            _CONFIGS.move_to_end(key)
            return config
    config = parse_config(xml)  # outside the lock: a large config takes a while
    with _CONFIGS_LOCK:
        _CONFIGS[key] = config
        while len(_CONFIGS) > CONFIG_CACHE_SIZE:
            _CONFIGS.popitem(last=False)
    return config


def _has_config(xml: Any) -> bool:
    """Whether a payload's `project.label_config` is given: absent, null and "" are not; anything else is
    (and `_label_config` refuses what is not XML text, such as {} or 0, instead of ignoring it)."""
    return xml is not None and xml != ""


def _label_config(xml: Any) -> LabelConfig:
    if not isinstance(xml, str):
        raise WebhookPayloadError(f"project.label_config must be the labelling config XML, got {type(xml).__name__}")
    return parsed_config(xml)


def _stored_config(ctx: BackendContext, project_id: int) -> LabelConfig:
    with read_scope(ctx.engine) as conn:
        xml = label_configs(conn, [project_id]).get(project_id)
    return parsed_config(xml) if xml else default_config()


def _check_annotation(ctx: BackendContext, payload: Mapping[str, Any], project_id: int) -> None:
    """Refuses at intake what processing would fail on: limits, coordinates, ids, unreadable regions.

    Runs before the recording transaction (on SQLite nothing waits for the write lock meanwhile).

    Raises:
        WebhookPayloadError | LimitError | AnnotationFormatError: the first problem found.
    """
    limits = ctx.settings.limits
    annotation = payload["annotation"]
    task = payload.get("task")
    _int(task.get("id") if isinstance(task, dict) else annotation.get("task"), "task.id (or annotation.task)")
    completed_by = annotation.get("completed_by")
    if isinstance(completed_by, int) and not isinstance(completed_by, bool):
        _int(completed_by, "annotation.completed_by")
    cancelled = annotation.get("was_cancelled")
    if cancelled is not None and not isinstance(cancelled, bool):  # "false" would count as cancelled
        raise WebhookPayloadError(f"annotation.was_cancelled must be true or false, got {cancelled!r:.40}")
    if isinstance(task, dict) and isinstance(task.get("data"), dict):
        check_frame_fields(task["data"], limits, "task.data")
    check_result(annotation["result"], limits, "annotation.result")
    project = payload.get("project")
    xml = project.get("label_config") if isinstance(project, dict) else None
    config = _label_config(xml) if _has_config(xml) else _stored_config(ctx, project_id)
    source = f"annotation {annotation.get('id')}"
    persons, _ = results_to_persons(annotation["result"], config, source=source, as_labels=True)
    check_track_ids(persons, source)


def _start_training(ctx: BackendContext, project_id: int, event_id: int,
                    backend_url: str | None) -> tuple[dict[str, Any], int]:  # fmt: skip
    """START_TRAINING: queues a run when the project has enough labels; answers with a one-line message.

    Label Studio 1.23's dialog prints only `Response: {}`, so the message is also posted as the title
    of the project's ML backend card (`backend.services.ls_sync`) and the job shows on the status page.
    """
    readiness = training.training_readiness(ctx, project_id)
    job_id = refusal = None
    if readiness.ready:
        try:
            job_id = training.submit_training(ctx, project_id, trigger="START_TRAINING")
        except ConflictError as exc:  # the project's training job is being cancelled
            refusal = f"Training not started: {exc}."
    if job_id is None:
        body: dict[str, Any] = {"status": "not_started", "message": refusal or readiness.refusal(), "event": event_id,
                                "labelled_frames": readiness.labelled_frames, "persons": readiness.persons,
                                "min_frames": readiness.min_frames, "missing_frames": readiness.missing}  # fmt: skip
        status = 200
    else:
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
    if action in (*ANNOTATION_ACTIONS, "PROJECT_UPDATED"):  # their project's title is stored
        _check_title(payload.get("project"))
    key, annotation_id = _dedup(action, payload, project_id)
    if action == "PROJECT_UPDATED" and _has_config(payload["project"].get("label_config")):
        _label_config(payload["project"]["label_config"])
    if action in ANNOTATION_ACTIONS:  # refused here, or never
        _check_annotation(ctx, payload, project_id)
    with session_scope(ctx.sessions) as session:  # durable before the answer (201 or 200)
        event_id, new = db_events.record_event(session=session, action=action, dedup_key=key, project_id=project_id,
                                               annotation_id=annotation_id, payload=payload)  # fmt: skip
        if new and action == "ANNOTATIONS_DELETED":  # indexed at intake: a later create finds it by id
            db_events.record_tombstones(session=session, project_id=project_id, annotation_ids=_deleted_ids(payload))
    if not new:
        logger.info("webhook %s (project %s) is a repeat of event %s", action, project_id, event_id)
        return {"status": "duplicate", "event": event_id}, 200
    if action == "START_TRAINING":
        return _start_training(ctx, project_id, event_id, backend_url)
    runner = ctx.require_runner("webhook processing")
    runner.enqueue(PROCESS_EVENT, event_id=event_id, order_key=annotation_id)
    hold = hold_seconds(runner.event_backlog(), ctx.settings.event_backlog)
    if hold:
        time.sleep(hold)  # the event is stored and queued; only the answer waits
    return {"status": "queued", "event": event_id}, 201


