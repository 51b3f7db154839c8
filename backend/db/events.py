"""Received webhook events: dedup keys, secret stripping, recording, status, and deleted-annotation tombstones."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Connection, Text, bindparam, cast, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from backend.db.queries import NotFoundError, _insert
from backend.db.tables import (
    EVENT_STATUSES,
    DeletedAnnotation,
    WebhookEvent,
    utcnow,
)

logger = logging.getLogger(__name__)

SECRET_KEYS = frozenset(
    {"token", "task_data_password", "access_token", "refresh_token", "password", "api_key"}
)
PROJECT_KEYS_KEPT = ("id", "title", "label_config", "created_at", "updated_at")
_SECRET_KEY = re.compile("|".join(rf'"{re.escape(k)}"\s*:' for k in sorted(SECRET_KEYS)))
_PROJECT_OBJECT = re.compile(r'"project"\s*:\s*\{')
_RECORD: dict[str, Any] = {}


# ----------------------------------------------------------------------------- webhook events


def event_dedup_key(
    action: str,
    annotation_ids: Iterable[int] = (),
    updated_at: str | datetime | None = None,
    extra: str | None = None,
) -> str:
    """sha256 hex of the action, the sorted annotation ids and the LS `updated_at` (plus `extra`)."""
    when = updated_at.astimezone(UTC).isoformat() if isinstance(updated_at, datetime) else updated_at
    text = json.dumps([action, sorted(int(i) for i in annotation_ids), when, extra])
    return hashlib.sha256(text.encode()).hexdigest()


def sanitize_payload(payload: Any) -> Any:
    """A copy without secrets (project token, task_data_password, ...); `project` cut to a few fields."""
    if isinstance(payload, Mapping):
        out = {}
        for key, value in payload.items():
            if key in SECRET_KEYS:
                continue
            if key == "project" and isinstance(value, Mapping):
                value = {k: value[k] for k in PROJECT_KEYS_KEPT if k in value}
            out[key] = sanitize_payload(value)
        return out
    if isinstance(payload, list):
        return [sanitize_payload(v) for v in payload]
    return payload


def payload_json(payload: Mapping[str, Any]) -> str:
    """The JSON text stored for a received payload: `sanitize_payload`'s, encoded once.

    Most payloads name no secret, and no project object but the top one, which is cut first: their
    text is checked for those keys (regular expressions over the encoded text, not a walk over every
    value) and kept; only a payload that has one is sanitised in full and encoded again.

    Raises:
        ValueError: NaN or infinity (JSON has neither).
    """
    top = {k: v for k, v in payload.items() if k not in SECRET_KEYS}
    if isinstance(top.get("project"), Mapping):
        top["project"] = {k: top["project"][k] for k in PROJECT_KEYS_KEPT if k in top["project"]}
    text = json.dumps(top, allow_nan=False)
    projects = 1 if isinstance(top.get("project"), Mapping) else 0  # the one cut above
    if _SECRET_KEY.search(text) or len(_PROJECT_OBJECT.findall(text)) > projects:
        text = json.dumps(sanitize_payload(payload), allow_nan=False)
    return text


def _record(dialect: str) -> Any:
    """INSERT of an event unless its dedup key is stored, RETURNING the id; built once per dialect.

    The payload is bound as the JSON text of `payload_json` (encoded once, not again by the column type)."""
    if dialect not in _RECORD:
        table = WebhookEvent.__table__
        names = ("action", "dedup_key", "project_id", "annotation_id", "status", "received_at")
        values: dict[str, Any] = {n: bindparam(n, type_=table.c[n].type) for n in names}
        text_param = bindparam("payload", type_=Text())
        values["payload"] = cast(text_param, JSON) if dialect == "postgresql" else text_param
        insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert_(table).values(values).on_conflict_do_nothing(index_elements=["dedup_key"])
        _RECORD[dialect] = stmt.returning(table.c.id)
    return _RECORD[dialect]


def record_event(
    *,
    session: Session,
    action: str,
    dedup_key: str,
    project_id: int | None = None,
    annotation_id: int | None = None,
    payload: Mapping[str, Any] | None = None,
) -> tuple[int, bool]:
    """Store a received webhook once (without secrets). Returns its id and whether it is new (False: a repeat)."""
    params = {"action": action, "dedup_key": dedup_key, "project_id": project_id, "annotation_id": annotation_id,
              "payload": payload_json(payload or {}), "status": "received", "received_at": utcnow()}  # fmt: skip
    inserted = session.execute(_record(session.get_bind().dialect.name), params).scalar()
    if inserted is not None:
        return int(inserted), True
    stored = session.scalar(select(WebhookEvent.id).where(WebhookEvent.dedup_key == dedup_key))
    if stored is None:  # cannot happen: the conflict was on this key
        raise NotFoundError(f"webhook event with dedup key {dedup_key} vanished")
    return int(stored), False


def mark_event(*, session: Session, event_id: int, status: str, error: str | None = None) -> WebhookEvent:
    """Record how an event was handled (processed, ignored or failed)."""
    if status not in EVENT_STATUSES:
        raise ValueError(f"event status must be one of {EVENT_STATUSES}, got {status!r}")
    event = session.get(WebhookEvent, event_id)
    if event is None:
        raise NotFoundError(f"webhook event {event_id} does not exist")
    event.status, event.error, event.processed_at = status, error, utcnow()
    session.flush()
    return event


def record_tombstones(*, session: Session, project_id: int | None, annotation_ids: Iterable[int]) -> int:
    """Remembers deleted annotation ids (repeats are no-ops); returns how many ids were given."""
    now = utcnow()
    rows = [{"annotation_id": i, "project_id": project_id, "deleted_at": now} for i in sorted(set(annotation_ids))]
    if rows:  # one statement, compiled once and executed for every row: a bulk delete of 100,000 stays fast
        stmt = _insert(session, DeletedAnnotation).on_conflict_do_nothing(index_elements=["annotation_id"])
        session.connection().execute(stmt, rows)
    return len(rows)


def is_tombstoned(*, session: Session, annotation_id: int) -> bool:
    """Whether a delete of the annotation was received (a primary-key lookup, whatever the history)."""
    return session.get(DeletedAnnotation, annotation_id) is not None


def tombstoned(*, session: Session | Connection, annotation_ids: Iterable[int]) -> list[int]:
    """The ids among `annotation_ids` that a received delete named."""
    ids = sorted(set(annotation_ids))
    found: list[int] = []
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        stmt = select(DeletedAnnotation.annotation_id).where(DeletedAnnotation.annotation_id.in_(chunk))
        found.extend(session.scalars(stmt))
    return found
