"""Tests of backend.services.event_processing: one batch ends where one event at a time ends, on both databases."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from backend.context import BackendContext
from backend.db import events as db_events
from backend.db import queries
from backend.db.session import session_scope
from backend.db.tables import Annotation, Correction, WebhookEvent, utcnow
from backend.services import event_processing
from tests.backend.conftest import SynthVideo
from tests.backend.services.test_events import corrected, event, predict


def record(ctx: BackendContext, payloads: list[dict[str, Any]]) -> list[int]:
    """Records the webhooks as intake does (tombstones included), without queueing them."""
    ids = []
    with session_scope(ctx.sessions) as session:
        for i, payload in enumerate(payloads):
            action = payload["action"]
            if action == "ANNOTATIONS_DELETED":
                deleted = [a["id"] for a in payload["annotations"]]
                key = db_events.event_dedup_key(action, deleted, None, extra=f"1:{i}")
                db_events.record_tombstones(session=session, project_id=1, annotation_ids=deleted)
                annotation_id = deleted[0]
            else:
                annotation = payload["annotation"]
                key = db_events.event_dedup_key(action, [annotation["id"]], annotation["updated_at"], extra=str(i))
                annotation_id = annotation["id"]
            event_id, new = db_events.record_event(session=session, action=action, dedup_key=key,
                                                   project_id=payload["task"]["project"] if "task" in payload else 1,
                                                   annotation_id=annotation_id, payload=payload)  # fmt: skip
            assert new
            ids.append(event_id)
    return ids


def stored(ctx: BackendContext, annotation_id: int) -> tuple[Annotation, list[tuple]]:
    """The annotation row and its corrections (joint, kind, positions), in a stable order."""
    with session_scope(ctx.sessions) as session:
        row = session.get(Annotation, annotation_id)
        rows = session.scalars(select(Correction).where(Correction.annotation_id == annotation_id)).all()
        corrections = sorted((c.track_id, c.joint, c.kind, c.pred_x, c.final_x, c.distance_px) for c in rows)
        return row, corrections


def test_one_batch_ends_where_one_event_at_a_time_ends(
    app_client: FlaskClient, backend_app: Flask, synth_video: SynthVideo
) -> None:
    """Updates out of order and two states with one timestamp (the first wins), batched and not."""
    ctx = backend_app.extensions["dcpose"]
    task = synth_video.task(2)
    prediction = predict(app_client, task)
    edited, _ = corrected(prediction["result"], synth_video)
    cancelled = {"was_cancelled": True}

    def history(ann_id: int) -> list[dict]:
        return [event("ANNOTATION_CREATED", ann_id, task, edited, "2026-03-01T10:00:00Z"),
                event("ANNOTATION_UPDATED", ann_id, task, prediction["result"], "2026-03-01T10:02:00Z"),
                event("ANNOTATION_UPDATED", ann_id, task, edited, "2026-03-01T10:01:00Z"),  # late, older
                event("ANNOTATION_UPDATED", ann_id, task, edited, "2026-03-01T10:02:00Z", **cancelled)]  # a tie

    batched = record(ctx, history(71))
    assert set(event_processing.process_events(ctx, event_ids=batched).values()) == {"processed"}
    for event_id in record(ctx, history(72)):
        assert event_processing.process_events(ctx, event_ids=[event_id]) == {event_id: "processed"}
    (row_a, corrections_a), (row_b, corrections_b) = stored(ctx, 71), stored(ctx, 72)
    assert row_a.ls_updated_at == row_b.ls_updated_at and row_a.result == row_b.result == prediction["result"]
    assert not row_a.was_cancelled and not row_b.was_cancelled, "a second state with the same time is not newer"
    assert corrections_a == corrections_b and {c[2] for c in corrections_a} == {"kept"}
    with session_scope(ctx.sessions) as session:
        before = session.scalars(select(Correction.id).where(Correction.annotation_id == 71)).all()
    again = event_processing.process_events(ctx, event_ids=batched)
    assert set(again.values()) == {"processed"}
    with session_scope(ctx.sessions) as session:  # a repeat is a no-op: the rows are not even replaced
        assert session.scalars(select(Correction.id).where(Correction.annotation_id == 71)).all() == before


def test_deletes_in_one_batch_win_whatever_their_place(
    app_client: FlaskClient, backend_app: Flask, synth_video: SynthVideo
) -> None:
    ctx = backend_app.extensions["dcpose"]
    task = synth_video.task(1)
    result = predict(app_client, task)["result"]
    delete_81 = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 81}], "project": {"id": 1}}
    delete_82 = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 82}], "project": {"id": 1}}
    ids = record(ctx, [event("ANNOTATION_CREATED", 81, task, result, "2026-03-01T11:00:00Z"), delete_81,
                       delete_82, event("ANNOTATION_CREATED", 82, task, result, "2026-03-01T11:00:00Z")])  # fmt: skip
    statuses = event_processing.process_events(ctx, event_ids=ids)
    assert list(statuses.values()) == ["processed"] * 4
    assert stored(ctx, 81)[0].deleted and stored(ctx, 82)[0].deleted


def test_a_task_claimed_by_two_projects_in_one_batch_fails_the_second(
    app_client: FlaskClient, backend_app: Flask, synth_video: SynthVideo
) -> None:
    ctx = backend_app.extensions["dcpose"]
    task = synth_video.task(3, task_id=900)
    result = predict(app_client, synth_video.task(3))["result"]
    other = copy.deepcopy(event("ANNOTATION_CREATED", 92, task, result, "2026-03-01T12:00:00Z"))
    other["task"]["project"] = other["annotation"]["project"] = other["project"]["id"] = 2
    ids = record(ctx, [event("ANNOTATION_CREATED", 91, task, result, "2026-03-01T12:00:00Z"), other])
    statuses = event_processing.process_events(ctx, event_ids=ids)
    assert statuses == {ids[0]: "processed", ids[1]: "failed"}
    with session_scope(ctx.sessions) as session:
        failed = session.get(WebhookEvent, ids[1])
        assert "task 900 is stored under project 1, not 2" in failed.error
        assert session.get(Annotation, 92) is None


def test_a_value_the_database_refuses_fails_only_its_event(
    app_client: FlaskClient, backend_app: Flask, synth_video: SynthVideo
) -> None:
    """PostgreSQL refuses a video key beyond its column (SQLite stores it): the batch is retried one by
    one and only that event fails, instead of the whole batch failing at every try."""
    ctx = backend_app.extensions["dcpose"]
    result = predict(app_client, synth_video.task(4))["result"]
    long_key = synth_video.task(4, task_id=950)
    long_key["data"]["video_id"] = "v" * 600
    ids = record(ctx, [event("ANNOTATION_CREATED", 101, synth_video.task(4), result, "2026-03-01T13:00:00Z"),
                       event("ANNOTATION_CREATED", 102, long_key, result, "2026-03-01T13:00:00Z"),
                       event("ANNOTATION_CREATED", 103, synth_video.task(5), result, "2026-03-01T13:00:00Z")])  # fmt: skip
    statuses = event_processing.process_events(ctx, event_ids=ids)
    postgres = ctx.engine.dialect.name == "postgresql"
    assert statuses == {ids[0]: "processed", ids[1]: "failed" if postgres else "processed", ids[2]: "processed"}
    assert stored(ctx, 101)[0] is not None and stored(ctx, 103)[0] is not None
    with session_scope(ctx.sessions) as session:
        error = session.get(WebhookEvent, ids[1]).error
        assert (error is not None and "too long" in error) if postgres else error is None


def test_corrections_written_in_bulk_keep_their_time(
    app_client: FlaskClient, backend_app: Flask, synth_video: SynthVideo
) -> None:
    """The bulk insert stores the timestamp as the ORM does: it reads back aware, and compares in SQL."""
    ctx = backend_app.extensions["dcpose"]
    task = synth_video.task(0)
    edited, _ = corrected(predict(app_client, task)["result"], synth_video)
    before = utcnow()
    ids = record(ctx, [event("ANNOTATION_CREATED", 111, task, edited, "2026-03-01T14:00:00Z")])
    event_processing.process_events(ctx, event_ids=ids)
    after = utcnow()
    with session_scope(ctx.sessions) as session:
        rows = session.scalars(select(Correction)).all()
        assert rows and all(before <= c.created_at <= after for c in rows)
        assert queries.count_corrections_since(session=session, project_id=1, since=before - timedelta(seconds=1)) \
            == len(rows)  # fmt: skip
        assert queries.count_corrections_since(session=session, project_id=1, since=after) == 0
