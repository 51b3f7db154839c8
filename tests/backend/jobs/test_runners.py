"""Tests of backend.jobs: runners (threads, RQ on Redis), the worker, coalescing, start-up recovery, bulk pre-annotation."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask, jsonify, request
from sqlalchemy import select
from werkzeug.serving import make_server

from annotation_io.label_studio import label_config
from backend.app import create_app
from backend.context import BackendContext, build_context
from backend.db import jobs as db_jobs
from backend.db import queries
from backend.db.persons import persons_from_json
from backend.db.session import session_scope
from backend.db.tables import Job, Prediction, WebhookEvent, utcnow
from backend.jobs import registry, worker
from backend.jobs.runners import RQRunner, runner_factory
from backend.jobs.worker import run_worker
from backend.services import events as events_service
from backend.settings import Settings
from model.pipeline.config import with_propagation
from tests.backend.conftest import SynthVideo, drain, simulated_factory
from tests.backend.services.test_events import event
from tests.backend.services.test_prediction import gt_results

TOKEN = "fake-ls-legacy-token-0123456789"
RELEASE = threading.Event()
CALLED = threading.Event()


def blocking_job(ctx: BackendContext, *, job_id: str, report: Any, steps: int = 2, **params: Any) -> dict:
    """A test job: reports progress, waits for RELEASE, returns its params."""
    for step in range(steps):
        report(step=step + 1, steps=steps)
    assert RELEASE.wait(10)
    return {"steps": steps, **params}


def failing_job(ctx: BackendContext, *, job_id: str, report: Any, **params: Any) -> dict:
    report(step=1)
    raise RuntimeError("boom at step 1")


def diverging_job(ctx: BackendContext, *, job_id: str, report: Any, **params: Any) -> dict:
    report(step=1, loss=float("nan"), epoch_losses=[0.5, float("inf")])
    raise ValueError("training diverged at step 1")


def rejecting_job(ctx: BackendContext, *, job_id: str, report: Any, **params: Any) -> dict:
    return {"state": "rejected", "margin": -0.5}


def blocking_call(ctx: BackendContext, **params: Any) -> None:
    """A test call: sets CALLED, then waits for RELEASE (holds its lane)."""
    CALLED.set()
    assert RELEASE.wait(10)


@pytest.fixture(autouse=True)
def test_functions(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    functions = dict(registry.JOB_FUNCTIONS)
    for name in ("blocking_job", "failing_job", "diverging_job", "rejecting_job", "blocking_call"):
        functions[name] = f"tests.backend.jobs.test_runners:{name}"
    monkeypatch.setattr(registry, "JOB_FUNCTIONS", functions)
    RELEASE.clear()
    yield
    RELEASE.set()  # never leave a worker thread waiting


def job(ctx: BackendContext, job_id: str) -> Job:
    with session_scope(ctx.sessions) as session:
        found = db_jobs.get_job(session=session, job_id=job_id)
        assert found is not None
        return found


def test_thread_runner_runs_coalesces_and_records_outcomes(backend_app: Flask) -> None:
    ctx = backend_app.extensions["dcpose"]
    runner = ctx.runner
    first = runner.submit("preannotate", 1, "blocking_job", trigger="api", label="a")
    assert runner.submit("preannotate", 1, "blocking_job", trigger="timer", label="b") == first  # coalesced
    other = runner.submit("preannotate", 2, "blocking_job", label="c")
    assert other != first
    assert not runner.drain(0.2)  # still blocked
    # Progress is stored at most once a second: the second report waits for the end of the job.
    assert job(ctx, first).state == "running" and job(ctx, first).progress["step"] == 1
    RELEASE.set()
    assert runner.drain(10)
    done = job(ctx, first)
    assert (done.state, done.result, done.progress["params"]) == (
        "succeeded",
        {"steps": 2, "project_id": 1, "label": "a"},
        {"label": "a"},
    )
    assert done.progress["step"] == 2
    assert done.started_at <= done.finished_at and done.trigger == "api"
    assert runner.submit("preannotate", 1, "blocking_job", label="d") not in (first, other)  # a new run
    assert runner.drain(10)
    failed = runner.submit("train", 1, "failing_job")
    rejected = runner.submit("train", 2, "rejecting_job")
    assert runner.drain(10)
    assert (job(ctx, failed).state, job(ctx, failed).error) == ("failed", "RuntimeError: boom at step 1")
    assert job(ctx, failed).progress["step"] == 1
    assert (job(ctx, rejected).state, job(ctx, rejected).result["margin"]) == ("rejected", -0.5)
    with pytest.raises(ValueError, match="unknown job function 'nope'"):
        runner.submit("train", 1, "nope")
    listed = backend_app.test_client().get("/jobs?project=1&kind=preannotate").json["jobs"]
    assert [j["state"] for j in listed] == ["succeeded", "succeeded"] and listed[1]["id"] == first


def test_a_job_reporting_a_nan_loss_fails_with_its_own_error(backend_app: Flask) -> None:
    """Before: the NaN in the progress made the progress write fail (the JSON column refuses NaN), and
    then the failure record too: the job's error was lost (a training job's process exited with status 1)."""
    ctx = backend_app.extensions["dcpose"]
    job_id = ctx.runner.submit("train", 1, "diverging_job")
    assert ctx.runner.drain(10)
    done = job(ctx, job_id)
    assert (done.state, done.error) == ("failed", "ValueError: training diverged at step 1")
    assert (done.progress["step"], done.progress["loss"], done.progress["epoch_losses"]) == (1, None, [0.5, None])


def test_thread_runner_counts_the_events_waiting_in_its_lanes(backend_app: Flask) -> None:
    ctx = backend_app.extensions["dcpose"]
    assert ctx.settings.event_workers == 2 and ctx.runner.event_backlog() == 0
    CALLED.clear()
    ctx.runner.enqueue("blocking_call", order_key=0)  # holds lane events-0
    assert CALLED.wait(10)
    for annotation_id in (2, 4, 6):  # the same lane, behind it
        ctx.runner.enqueue(registry.PROCESS_EVENT, event_id=10**6 + annotation_id, order_key=annotation_id)
    assert ctx.runner.event_backlog() == 3
    RELEASE.set()
    assert ctx.runner.drain(10) and ctx.runner.event_backlog() == 0


def test_start_up_fails_stale_jobs_and_requeues_events(
    backend_settings: Settings, synth_video: SynthVideo
) -> None:
    ctx = build_context(backend_settings, runner=runner_factory(backend_settings),
                        predictor_factory=simulated_factory(synth_video))  # fmt: skip
    try:
        with session_scope(ctx.sessions) as session:
            queued = db_jobs.create_job(session=session, project_id=1, kind="preannotate", trigger="api").id
            running = db_jobs.create_job(session=session, project_id=1, kind="train", trigger="api")
            running.state, running.pid, running.host = "running", 2**22 + 12345, os.uname().nodename
            running.started_at = running.heartbeat_at = utcnow() - timedelta(seconds=5)
            running = running.id
            task = synth_video.task(1)
            payload = event("ANNOTATION_CREATED", 5, task, gt_results(synth_video, 1), "2026-05-01T00:00:00Z")
            from backend.db.events import event_dedup_key, record_event

            record_event(session=session, action="ANNOTATION_CREATED", dedup_key=event_dedup_key("x", [5]),
                         project_id=1, annotation_id=5, payload=payload)  # fmt: skip
        ctx.runner.start()  # what create_app does at start-up
        assert ctx.runner.drain(10)
        assert job(ctx, queued).state == job(ctx, running).state == "failed"
        assert "never started" in job(ctx, queued).error and "is gone" in job(ctx, running).error
        with session_scope(ctx.sessions) as session:
            assert session.scalars(select(WebhookEvent.status)).one() == "processed"
            assert queries.count_corrections_since(session=session, project_id=1) > 0
    finally:
        ctx.close()


# ----------------------------------------------------------------------------- RQ on Redis

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def rq_context(backend_settings: Settings, synth_video: SynthVideo) -> Iterator[BackendContext]:
    """A context whose runner is RQ on a private queue of the test Redis (skipped, or failed in CI, without it)."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis at {REDIS_URL} is unavailable in CI: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is unavailable: {exc}")
    settings = replace(backend_settings, redis_url=REDIS_URL)
    ctx = build_context(settings, predictor_factory=simulated_factory(synth_video))
    ctx.runner = RQRunner(ctx, REDIS_URL, queue_name=f"dcpose-test-{uuid.uuid4().hex[:8]}")
    yield ctx
    ctx.runner.queue.delete(delete_jobs=True)
    ctx.runner.connection.delete(ctx.runner.events_key)
    worker.set_worker_context(None)
    ctx.close()


def test_rq_runner_queues_on_redis_and_the_worker_runs_jobs_and_events(
    rq_context: BackendContext, synth_video: SynthVideo
) -> None:
    ctx = rq_context
    RELEASE.set()
    job_id = ctx.runner.submit("preannotate", 1, "blocking_job", steps=3)
    assert ctx.runner.submit("preannotate", 1, "blocking_job") == job_id  # coalesced while queued
    assert ctx.runner.queue.count == 1 and job(ctx, job_id).state == "queued"
    app = create_app(context=ctx, start_runner=False)  # webhooks go to the same queue
    payload = event(
        "ANNOTATION_CREATED", 8, synth_video.task(2), gt_results(synth_video, 2), "2026-05-02T00:00:00Z"
    )
    assert app.test_client().post("/webhook", json=payload).status_code == 201
    assert (ctx.runner.queue.count, ctx.runner.queued_events()) == (1, 1)  # events are not RQ jobs
    run_worker(ctx, burst=True, fork=False)  # `python -m backend worker --burst`, without forking
    assert (ctx.runner.queue.count, ctx.runner.queued_events()) == (0, 0)
    assert (job(ctx, job_id).state, job(ctx, job_id).result) == ("succeeded", {"steps": 3, "project_id": 1})
    with session_scope(ctx.sessions) as session:
        assert session.scalars(select(WebhookEvent.status)).one() == "processed"


def _events(ctx: BackendContext) -> list[tuple[int, str]]:
    """(id, status) of the stored webhook events, in order."""
    with session_scope(ctx.sessions) as session:
        return [tuple(row) for row in session.execute(select(WebhookEvent.id, WebhookEvent.status)
                                                      .order_by(WebhookEvent.id))]  # fmt: skip


def _statuses(ctx: BackendContext) -> list[str]:
    return [status for _, status in _events(ctx)]


def test_rq_events_are_taken_in_batches_and_a_failed_batch_goes_back(
    rq_context: BackendContext, synth_video: SynthVideo
) -> None:
    ctx = rq_context
    client = create_app(context=ctx, start_runner=False).test_client()
    for n in range(5):
        payload = event("ANNOTATION_CREATED", 20 + n, synth_video.task(n % 4),
                        gt_results(synth_video, n % 4), "2026-05-02T00:00:00Z")  # fmt: skip
        assert client.post("/webhook", json=payload).status_code == 201
    assert ctx.runner.queued_events() == 5
    # A worker whose database is unreachable takes a batch, fails it and puts it back, in order.
    down = replace(ctx.settings, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    broken = build_context(down, migrate_db=False)
    try:
        broken_consumer = worker.EventConsumer(broken, ctx.runner)
        broken_consumer.stopping.set()  # no retry pause
        assert broken_consumer.step(block_s=0.1) == 5
    finally:
        broken.close()
    assert ctx.runner.queued_events() == 5 and _statuses(ctx) == ["received"] * 5
    ids = [event_id for event_id, _ in _events(ctx)]
    assert ctx.runner.take_events(2, block_s=0.1) == ids[:2]  # oldest first
    ctx.runner.return_events(ids[:2])
    assert ctx.runner.take_events(10, block_s=0.1) == ids
    ctx.runner.return_events(ids)
    assert worker.EventConsumer(ctx, ctx.runner).drain() == 5 and _statuses(ctx) == ["processed"] * 5


def test_rq_worker_threads_process_events_as_they_come(rq_context: BackendContext, synth_video: SynthVideo) -> None:
    ctx = rq_context
    client = create_app(context=ctx, start_runner=False).test_client()
    consumer = worker.EventConsumer(ctx, ctx.runner)
    threads = consumer.start_threads(2)
    try:
        for n in range(6):
            payload = event("ANNOTATION_CREATED", 40 + n, synth_video.task(n % 4),
                            gt_results(synth_video, n % 4), "2026-05-02T00:00:00Z")  # fmt: skip
            assert client.post("/webhook", json=payload).status_code == 201
        deadline = time.monotonic() + 30
        while _statuses(ctx) != ["processed"] * 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        consumer.stopping.set()
        for thread in threads:
            thread.join(10)
    assert _statuses(ctx) == ["processed"] * 6 and ctx.runner.queued_events() == 0
    assert not any(thread.is_alive() for thread in threads)


def test_webhook_answers_are_held_back_while_the_backlog_exceeds_event_backlog(
    rq_context: BackendContext, synth_video: SynthVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = rq_context
    ctx.settings = replace(ctx.settings, event_backlog=2)
    holds: list[float] = []
    monkeypatch.setattr(events_service, "time", SimpleNamespace(sleep=holds.append))
    client = create_app(context=ctx, start_runner=False).test_client()

    def post(n: int) -> None:
        payload = event("ANNOTATION_CREATED", 60 + n, synth_video.task(n % 4), gt_results(synth_video, n % 4),
                        "2026-05-02T00:00:00Z")  # fmt: skip
        assert client.post("/webhook", json=payload).status_code == 201

    for n in range(5):
        post(n)
    assert ctx.runner.event_backlog() == ctx.runner.queued_events() == 5
    assert holds == [pytest.approx(0.15), pytest.approx(0.3), pytest.approx(0.3)]  # backlog 3, 4, 5
    assert worker.EventConsumer(ctx, ctx.runner).drain() == 5
    post(5)  # processing caught up: answered at once
    assert len(holds) == 3 and ctx.runner.event_backlog() == 1


def test_hold_rises_from_the_threshold_to_its_cap() -> None:
    hold = events_service.hold_seconds
    assert [hold(b, 500) for b in (0, 500, 750, 1000, 10**6)] == [0.0, 0.0, 0.15, 0.3, 0.3]
    assert hold(10**6, 0) == 0.0  # EVENT_BACKLOG=0: never


def test_rq_worker_needs_redis(backend_settings: Settings) -> None:
    ctx = build_context(backend_settings, runner=runner_factory(backend_settings, "thread"))
    try:
        with pytest.raises(registry.JobQueueError, match="REDIS_URL"):
            run_worker(ctx, burst=True)
    finally:
        ctx.close()


# ----------------------------------------------------------------------------- bulk pre-annotation


@dataclass
class FakeLabelStudio:
    """The few Label Studio endpoints bulk pre-annotation uses, with legacy-token auth."""

    url: str
    tasks: list[dict]
    pushed: list[dict] = field(default_factory=list)
    refused: set[int] = field(default_factory=set)  # tasks whose predictions it refuses, as for a deleted task
    ml_backends: list[dict] = field(default_factory=list)
    patched: list[str] = field(default_factory=list)
    on_push: Callable[[dict], None] | None = None  # called with each accepted prediction, before the answer


def _fake_ls(tasks: list[dict], config: str) -> tuple[Flask, FakeLabelStudio]:
    app = Flask("fake-ls")
    state = FakeLabelStudio("", tasks)

    @app.before_request
    def _auth() -> Any:
        if request.headers.get("Authorization") != f"Token {TOKEN}":
            return jsonify(detail="Invalid token."), 401
        return None

    @app.get("/api/projects/<int:pid>")
    def project(pid: int) -> Any:
        return {"id": pid, "title": "poses", "label_config": config}

    @app.get("/api/tasks")
    def list_tasks() -> Any:
        page, size = int(request.args["page"]), int(request.args["page_size"])
        return {"tasks": state.tasks[(page - 1) * size : page * size], "total": len(state.tasks)}

    @app.post("/api/predictions")
    def create_prediction() -> Any:
        task = request.get_json()["task"]
        if task in state.refused:  # LS 1.23's answer for a task deleted meanwhile
            return {"validation_errors": {"task": [f'Invalid pk "{task}" - object does not exist.']}}, 400
        state.pushed.append(request.get_json())
        if state.on_push is not None:
            state.on_push(request.get_json())
        return {"id": len(state.pushed), **request.get_json()}, 201

    @app.get("/api/ml")
    def ml_backends() -> Any:
        return jsonify(state.ml_backends)

    @app.patch("/api/<path:path>")
    def patch(path: str) -> Any:
        state.patched.append(path)
        return {"id": 1}

    return app, state


@pytest.fixture
def fake_ls(synth_video: SynthVideo) -> Iterator[FakeLabelStudio]:
    tasks = [synth_video.task(t) for t in range(synth_video.num_frames)]
    tasks[1]["annotations"] = [
        {"id": 1, "result": gt_results(synth_video, 1), "updated_at": "2026-05-01T00:00:00Z"}
    ]
    tasks.append({"id": 900, "data": {"text": "not a frame"}, "annotations": [], "predictions": []})
    app, state = _fake_ls(tasks, label_config())
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.port}"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def ls_app(backend_settings: Settings, synth_video: SynthVideo, fake_ls: FakeLabelStudio) -> Iterator[Flask]:
    settings = replace(backend_settings, label_studio_url=fake_ls.url, label_studio_api_key=TOKEN)
    app = create_app(settings, predictor_factory=simulated_factory(synth_video))
    yield app
    app.extensions["dcpose"].close()


def test_preannotate_pushes_a_projects_predictions_in_frame_order(
    ls_app: Flask, fake_ls: FakeLabelStudio, synth_video: SynthVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("backend.services.preannotate.PREANNOTATE_CHUNK", 2)  # several predict_video calls per video
    client = ls_app.test_client()
    version = client.get("/health").json["model_version"]
    fake_ls.tasks[4]["predictions"] = [{"id": 3, "model_version": version, "result": []}]  # already done
    # ...and so is a task whose prediction holds labels carried from frame 1 (cold start: "+prop").
    fake_ls.tasks[0]["predictions"] = [{"id": 4, "model_version": with_propagation(version), "result": []}]
    resp = client.post("/preannotate", json={"project": 1})
    assert resp.status_code == 202
    drain(ls_app)
    done = client.get(f"/jobs/{resp.json['job']}").json
    assert done["state"] == "succeeded", done
    expected = [100 + t for t in range(synth_video.num_frames) if t not in (0, 4)]
    assert done["result"] == {"model_version": version, "videos": 1, "tasks": len(expected), "pushed": len(expected),
                              "failed": 0, "skipped": {"not_frame_task": 1, "already_predicted": 2}}  # fmt: skip
    assert done["progress"]["tasks_done"] == done["progress"]["tasks_total"] == len(expected)
    assert [p["task"] for p in fake_ls.pushed] == expected
    assert all(p["result"] and 0 < p["score"] <= 1 for p in fake_ls.pushed)
    # Frames next to the labelled frame 1 say that they hold carried labels, as /predict does; the rest do not.
    versions = {p["task"]: p["model_version"] for p in fake_ls.pushed}
    assert versions[102] == with_propagation(version) != version
    assert set(versions.values()) <= {version, with_propagation(version)}
    for task in fake_ls.tasks:  # the pushed predictions are now in the task list: nothing is redone
        task.setdefault("predictions", []).extend(p for p in fake_ls.pushed if p["task"] == task["id"])
    again = client.post("/preannotate", json={"project": 1})
    drain(ls_app)
    assert client.get(f"/jobs/{again.json['job']}").json["result"]["tasks"] == 0
    with session_scope(ls_app.extensions["dcpose"].sessions) as session:
        rows = {p.task_id: p for p in session.scalars(select(Prediction))}
        assert sorted(rows) == expected
        # The annotation on frame 1 (read from the task list) gave frame 2 its boxes and track ids.
        frame2 = persons_from_json(rows[102].persons)
        assert {p.extra["box_source"] for p in frame2} <= {"carried", "interpolated"}
        assert sorted(p.track_id for p in frame2) == sorted(
            p.track_id for p in synth_video.gt.frames[1].persons
        )
    only = client.post("/preannotate", json={"project": 1, "video_id": "another", "force": True})
    drain(ls_app)
    assert client.get(f"/jobs/{only.json['job']}").json["result"]["tasks"] == 0


def test_preannotate_goes_on_past_a_task_label_studio_refuses(ls_app: Flask, fake_ls: FakeLabelStudio,
                                                              synth_video: SynthVideo) -> None:  # fmt: skip
    """A task deleted while the job runs gets a 400 for its prediction. Before: that ended the whole job, and the
    predictions of every later task were never pushed."""
    fake_ls.refused.add(102)
    client = ls_app.test_client()
    resp = client.post("/preannotate", json={"project": 1})
    drain(ls_app)
    done = client.get(f"/jobs/{resp.json['job']}").json
    assert done["state"] == "succeeded", done
    expected = [100 + t for t in range(synth_video.num_frames) if t != 2]
    assert (done["result"]["pushed"], done["result"]["failed"]) == (len(expected), 1)
    assert [p["task"] for p in fake_ls.pushed] == expected


@pytest.mark.parametrize("backend_id", [None, "2/../../projects/1", 2.0])
def test_a_note_is_not_posted_to_an_ml_backend_without_an_id(ls_app: Flask, fake_ls: FakeLabelStudio,
                                                             backend_id: Any) -> None:  # fmt: skip
    """Before: a card without "id" raised KeyError in the sync job; a string id was put in the PATCH path as it
    was ("/api/ml/2/../../projects/1")."""
    from backend.ls.client import LabelStudioError
    from backend.services import ls_sync

    card = {"url": "http://backend:9090", "title": "DCPose: ready", **({} if backend_id is None else {"id": backend_id})}
    fake_ls.ml_backends[:] = [card]
    with pytest.raises(LabelStudioError, match="GET /api/ml: an ML backend's 'id' is"):
        ls_sync.post_note(ls_app.extensions["dcpose"], 1, "trained")
    assert fake_ls.patched == []
    assert ls_sync.sync_project(ls_app.extensions["dcpose"], project_id=1, note="trained") == "unavailable"


def test_preannotate_cli(monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path, fake_ls: FakeLabelStudio,
                         synth_video: SynthVideo, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from backend import predictor_cache
    from backend.__main__ import main

    for name, value in {"DATABASE_URL": db_url, "DATA_DIR": str(tmp_path), "LABEL_STUDIO_URL": fake_ls.url,
                        "LABEL_STUDIO_API_KEY": TOKEN, "MEDIA_ROOTS": str(synth_video.paths[0].parents[2])}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(predictor_cache, "default_factory", simulated_factory(synth_video))
    assert main(["preannotate", "--project", "1", "--task", "103", "--task", "104"]) == 0
    out = capsys.readouterr().out
    assert "succeeded" in out and "'pushed': 2" in out
    assert [p["task"] for p in fake_ls.pushed] == [103, 104]
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "wrong-token-0123456789abcdef")
    assert main(["preannotate", "--project", "1"]) == 1
    out = capsys.readouterr().out
    assert "failed: LabelStudioError" in out and "401" in out and "wrong-token" not in out
