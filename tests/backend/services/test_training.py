"""Tests of backend.services.training: submitting, the correction-count and timer triggers, the scheduler."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from backend.app import SCHEDULER_KEY
from backend.context import BackendContext, NoRunnerError, build_context
from backend.db import jobs as db_jobs
from backend.db import queries
from backend.db.session import session_scope
from backend.db.tables import Job, utcnow
from backend.jobs import registry
from backend.jobs.runners import JobRunner
from backend.services import training
from backend.services.corrections import CorrectionRow
from backend.services.training import TrainingScheduler, maybe_trigger_training
from backend.settings import Settings
from tests.backend.services.test_training_data import add_task, annotate, labelled_person
from tests.backend.support import RecordingScheduler

RELEASE = threading.Event()


def blocking_train(ctx: BackendContext, *, job_id: str, report: Any, project_id: int, **params: Any) -> dict:
    """A stand-in "train" job: waits for RELEASE, returns what it got."""
    report(phase="waiting")
    assert RELEASE.wait(10)
    return {"project_id": project_id, **params}


@pytest.fixture
def train_function(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registers the stand-in as the "train" job function (the real one is tested in test_training_flow)."""
    monkeypatch.setitem(
        registry.JOB_FUNCTIONS, "train", "tests.backend.services.test_training:blocking_train"
    )
    RELEASE.clear()
    yield
    RELEASE.set()


class RecordingRunner(JobRunner):
    """Real submit (rows, coalescing) with nothing executed: the dispatched items are recorded."""

    mode = "test"

    def __init__(self, ctx: BackendContext) -> None:
        super().__init__(ctx)
        self.items: list[Any] = []

    def _dispatch(self, lane: str, item: Any) -> None:
        self.items.append((lane, item))


@pytest.fixture
def trigger_ctx(backend_settings: Settings, train_function: None) -> Iterator[BackendContext]:
    from dataclasses import replace

    ctx = build_context(replace(backend_settings, train_min_corrections=3))
    ctx.runner = RecordingRunner(ctx)
    yield ctx
    ctx.close()


def add_corrections(ctx: BackendContext, ann_id: int, count: int) -> None:
    with session_scope(ctx.sessions) as session:
        add_task(session, 100 + ann_id, ann_id)
        row = annotate(session, ann_id, 100 + ann_id, [labelled_person(0.0)], day=1)
        queries.replace_corrections(session=session, annotation=row, rows=[CorrectionRow(0, "moved")] * count)


def finish(ctx: BackendContext, job_id: str, state: str = "succeeded") -> Job:
    with session_scope(ctx.sessions) as session:
        db_jobs.update_job(session=session, job_id=job_id, state="running")
        return db_jobs.update_job(session=session, job_id=job_id, state=state)


def test_enough_new_corrections_queue_training_and_a_running_job_absorbs_more(
    trigger_ctx: BackendContext,
) -> None:
    ctx = trigger_ctx
    assert maybe_trigger_training(ctx, 1) is None, "no correction yet"
    add_corrections(ctx, 1, 2)
    assert maybe_trigger_training(ctx, 1) is None, "2 < TRAIN_MIN_CORRECTIONS = 3"
    add_corrections(ctx, 2, 1)
    job_id = maybe_trigger_training(ctx, 1)
    assert job_id is not None and len(ctx.runner.items) == 1
    lane, (kind, fn, queued_id, params) = ctx.runner.items[0]
    assert (lane, kind, fn, queued_id, params) == ("train", "job", "train", job_id, {})
    with session_scope(ctx.sessions) as session:
        row = db_jobs.get_job(session=session, job_id=job_id)
        assert (row.kind, row.trigger, row.state) == ("train", "corrections", "queued")
    add_corrections(ctx, 3, 5)
    assert maybe_trigger_training(ctx, 1) is None, "a queued job is already there"
    finish(ctx, job_id)
    assert maybe_trigger_training(ctx, 1) is None, "corrections before the job started do not count again"
    add_corrections(ctx, 4, 3)
    assert maybe_trigger_training(ctx, 1) not in (None, job_id)


def test_replaced_and_deleted_corrections_do_not_count_however_often_they_were_written(
    trigger_ctx: BackendContext,
) -> None:
    """The cheap count after each batch bounds the exact one from above (rows only add up); the exact
    count decides: an annotation updated again and again holds its corrections once."""
    ctx = trigger_ctx
    for _ in range(4):  # 2 live rows, 8 written: the bound passes TRAIN_MIN_CORRECTIONS = 3, the count not
        add_corrections(ctx, 1, 2)
        assert maybe_trigger_training(ctx, 1) is None
    add_corrections(ctx, 2, 2)
    with session_scope(ctx.sessions) as session:
        queries.mark_annotations_deleted(session=session, annotation_ids=[2])
    assert maybe_trigger_training(ctx, 1) is None, "a deleted annotation's corrections do not count"
    add_corrections(ctx, 3, 1)
    assert maybe_trigger_training(ctx, 1) is not None, "2 + 1 live corrections reach the threshold"


def test_the_timer_trains_on_any_new_correction_once_the_interval_passed(
    trigger_ctx: BackendContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = trigger_ctx
    add_corrections(ctx, 1, 1)
    first = maybe_trigger_training(ctx, 1, interval_s=3600)
    assert first is not None, "no job ever ran: the timer is due"
    finish(ctx, first, "rejected")
    add_corrections(ctx, 2, 1)
    assert maybe_trigger_training(ctx, 1, interval_s=3600) is None, (
        "the last job is younger than the interval"
    )
    later = utcnow() + timedelta(hours=2)
    second = maybe_trigger_training(ctx, 1, interval_s=3600, now=later)
    assert second is not None and second != first
    with session_scope(ctx.sessions) as session:
        assert db_jobs.get_job(session=session, job_id=second).trigger == "timer"
    finish(ctx, second)


def test_the_scheduler_thread_checks_every_project_and_stops(trigger_ctx: BackendContext) -> None:
    ctx = trigger_ctx
    add_corrections(ctx, 1, 3)
    with session_scope(ctx.sessions) as session:
        add_task(session, 500, 0, project=2, video="b")
        row = annotate(session, 50, 500, [labelled_person(0.0)], day=1, project=2)
        queries.replace_corrections(session=session, annotation=row, rows=[CorrectionRow(0, "added")])
    scheduler = RecordingScheduler(ctx, interval_s=3600, poll_s=0.02).start()
    try:
        deadline = time.monotonic() + 10
        while len(scheduler.triggered) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        scheduler.stop()
    assert not scheduler.running
    with session_scope(ctx.sessions) as session:
        rows = db_jobs.list_jobs(session=session, kind="train")
        assert sorted((j.project_id, j.trigger) for j in rows) == [(1, "corrections"), (2, "timer")]
    with pytest.raises(ValueError, match="interval_s"):
        TrainingScheduler(ctx, interval_s=0)


def test_the_app_starts_the_timer_only_when_configured(
    backend_settings: Settings, train_function: None
) -> None:
    from dataclasses import replace

    from backend.app import create_app

    for interval, expected in ((0.0, False), (3600.0, True)):
        app = create_app(replace(backend_settings, train_interval_s=interval))
        try:
            scheduler = app.extensions.get(SCHEDULER_KEY)
            assert (scheduler is not None and scheduler.running) is expected
        finally:
            if scheduler is not None:
                scheduler.stop()
            app.extensions["dcpose"].close()


# ----------------------------------------------------------------------------- one way in, and no runner


def test_start_training_and_post_train_go_through_submit_training(
    app_client: FlaskClient, monkeypatch: pytest.MonkeyPatch, train_function: None
) -> None:
    calls: list[tuple[int, str, Any]] = []
    original = training.submit_training

    def spy(ctx: BackendContext, project_id: int, *, trigger: str, config: Any = None) -> str:
        calls.append((project_id, trigger, config))
        return original(ctx, project_id, trigger=trigger, config=config)

    monkeypatch.setattr(training, "submit_training", spy)
    webhook = app_client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1, "title": "p"}})
    assert webhook.status_code == 201, webhook.json
    api = app_client.post("/train", json={"project": 1, "config": {"epochs": 1}})
    assert api.status_code == 202, api.json
    assert calls == [(1, "START_TRAINING", None), (1, "api", {"epochs": 1})]
    assert api.json["job"] == webhook.json["job_id"], "both triggers queue the same kind: the second coalesces"


def test_without_a_job_runner_queueing_requests_answer_503_with_the_reason(
    backend_settings: Settings, synth_video: Any
) -> None:
    from backend.app import create_app
    from tests.backend.services.test_events import event
    from tests.backend.services.test_prediction import gt_results

    settings = replace(backend_settings, label_studio_url="http://127.0.0.1:9", label_studio_api_key="token")
    ctx = build_context(settings)  # no runner factory: no runner
    assert ctx.runner is None
    client = create_app(context=ctx).test_client()
    try:
        annotation = event("ANNOTATION_CREATED", 5, synth_video.task(1), gt_results(synth_video, 1),
                           "2026-05-01T00:00:00Z")  # fmt: skip
        requests = [("/train", {"project": 1}, "training"), ("/preannotate", {"project": 1}, "bulk pre-annotation"),
                    ("/webhook", {"action": "START_TRAINING", "project": {"id": 1}}, "training"),
                    ("/webhook", annotation, "webhook processing")]  # fmt: skip
        for path, body, what in requests:
            resp = client.post(path, json=body)
            assert resp.status_code == 503, (path, resp.status_code, resp.json)
            assert resp.json["error"] == f"this process has no job runner; {what} cannot be queued", resp.json
        with pytest.raises(NoRunnerError, match="training"):
            training.submit_training(ctx, 1, trigger="api")
    finally:
        ctx.close()
