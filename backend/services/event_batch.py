"""One webhook-processing transaction's memory (`Batch`): rows written and read once, not once per event."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from annotation_io.errors import AnnotationFormatError
from annotation_io.label_studio import LabelConfig, parse_task
from backend.db import events as db_events
from backend.db import queries
from backend.db.tables import Prediction, WebhookEvent

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """What one processing transaction already wrote or read, so that repeats cost no SQL statement.

    Holding the rows keeps them in the session's identity map (it references rows weakly), so
    `session.get` of a project or task seen earlier in the batch is answered without a query.
    Cleared when an event's savepoint rolls back (its rows may be gone).
    """

    rows: list[Any] = field(default_factory=list)
    applied: set[tuple[Any, ...]] = field(default_factory=set)
    configs: dict[str, LabelConfig] = field(default_factory=dict)
    predictions: dict[int, Prediction | None] = field(default_factory=dict)
    tombstoned: set[int] = field(default_factory=set)

    def clear(self) -> None:
        """Forgets the rows written (a savepoint rolled back); what was read stays valid."""
        self.rows.clear()
        self.applied.clear()


def upsert_project_task(session: Session, batch: Batch, project_id: int, ann_id: int,
                        payload: Mapping[str, Any]) -> int:  # fmt: skip
    """Upserts the event's project and task rows unless this batch already wrote the same; returns the task id."""
    annotation = payload["annotation"]
    task = payload.get("task") if isinstance(payload.get("task"), dict) else {"id": annotation.get("task")}
    task_id = int(task["id"])
    project = payload.get("project") if isinstance(payload.get("project"), dict) else {}
    key: tuple[Any, ...] = ("project", project_id, project.get("title"), project.get("label_config"))
    if key not in batch.applied:
        batch.rows.append(queries.upsert_project(session=session, project_id=project_id, title=project.get("title"),
                                                 label_config=project.get("label_config")))  # fmt: skip
        batch.applied.add(key)
    data = task.get("data") if isinstance(task.get("data"), dict) else None
    key = ("task", task_id, project_id, json.dumps(data, sort_keys=True, default=str))
    if key in batch.applied:
        return task_id
    try:
        frame = parse_task(task) if "data" in task else None
    except AnnotationFormatError as exc:
        logger.info("annotation %s: task %s is not a frame task (%s)", ann_id, task_id, exc)
        frame = None
    if frame is not None:
        row = queries.upsert_task(session=session, task_id=task_id, project_id=project_id, data=task["data"],
                                  image=frame.image, video_key=frame.video_id, frame_index=frame.frame_index,
                                  nframes=frame.nframes)  # fmt: skip
    else:
        row = queries.upsert_task(session=session, task_id=task_id, project_id=project_id, data=data)
    batch.rows.append(row)
    batch.applied.add(key)
    return task_id


def latest_prediction(session: Session, batch: Batch, task_id: int) -> Prediction | None:
    """The task's latest prediction, read once per batch."""
    if task_id not in batch.predictions:
        batch.predictions[task_id] = queries.latest_prediction(session=session, task_id=task_id)
    return batch.predictions[task_id]


def load_events(session: Session, batch: Batch, event_ids: list[int], loaded: dict[int, WebhookEvent | None]) -> None:
    """Reads the events (one statement) and the tombstones of their annotations (one more) into the batch."""
    stmt = select(WebhookEvent).where(WebhookEvent.id.in_(event_ids)).execution_options(populate_existing=True)
    events = {e.id: e for e in session.scalars(stmt)}
    loaded.update({i: events.get(i) for i in event_ids})
    batch.rows.extend(events.values())
    annotation_ids = [e.annotation_id for e in events.values() if e.annotation_id is not None]
    if annotation_ids:
        batch.tombstoned.update(db_events.tombstoned(session=session, annotation_ids=annotation_ids))
