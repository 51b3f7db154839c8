"""SQL statements per processed annotation webhook event, counted with a SQLAlchemy listener (a bound, not a time)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from backend.db import events as db_events
from backend.db.session import session_scope
from backend.db.tables import Correction, WebhookEvent
from backend.services import event_processing
from tests.backend.conftest import SynthVideo
from tests.backend.services.test_events import corrected, event, predict

EVENTS_PER_TASK = 4
# Measured in one batch of 24: SQLite 1.0 statement per event, PostgreSQL 0.9 (7.7 and 7.5 before
# the batch was read, prepared and written in bulk: one statement per kind of row for the whole
# batch; 44.8 and 18.9 before the per-batch caches); the bound leaves a little room.
MAX_STATEMENTS_PER_EVENT = 2


@contextmanager
def counted(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement the engine executes meanwhile (executemany counts once)."""
    seen: list[str] = []

    def listener(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    sa_event.listen(engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        sa_event.remove(engine, "before_cursor_execute", listener)


def _record(backend_app: Flask, payloads: list[dict]) -> list[int]:
    ctx = backend_app.extensions["dcpose"]
    ids = []
    with session_scope(ctx.sessions) as session:
        for payload in payloads:
            ann = payload["annotation"]
            key = db_events.event_dedup_key(payload["action"], [ann["id"]], ann["updated_at"])
            event_id, _ = db_events.record_event(session=session, action=payload["action"], dedup_key=key,
                                                 project_id=1, annotation_id=ann["id"], payload=payload)  # fmt: skip
            ids.append(event_id)
    return ids


def test_annotation_events_cost_a_bounded_number_of_statements(
    app_client: FlaskClient, backend_app: Flask, synth_video: SynthVideo
) -> None:
    payloads = []
    for frame in range(synth_video.num_frames):
        task = synth_video.task(frame)
        edited, _ = corrected(predict(app_client, task)["result"], synth_video)
        for k in range(EVENTS_PER_TASK):  # a create, then updates: each one replaces the corrections
            action = "ANNOTATION_CREATED" if k == 0 else "ANNOTATION_UPDATED"
            payloads.append(event(action, 500 + frame, task, edited, f"2026-03-01T10:00:0{k}Z"))
    ids = _record(backend_app, payloads)
    ctx = backend_app.extensions["dcpose"]
    with counted(ctx.engine) as statements:
        statuses = event_processing.process_events(ctx, event_ids=ids)
    assert set(statuses.values()) == {"processed"}
    per_event = len(statements) / len(ids)
    print(f"{len(statements)} statements for {len(ids)} events: {per_event:.1f} per event")
    assert per_event <= MAX_STATEMENTS_PER_EVENT, "\n".join(statements[:40])
    with session_scope(ctx.sessions) as session:
        assert session.scalar(select(func.count()).select_from(Correction)) > 0
        done = session.scalars(select(WebhookEvent.status)).all()
        assert done == ["processed"] * len(ids)
