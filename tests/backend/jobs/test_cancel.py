"""Cancelling jobs (`POST /jobs/<id>/cancel`): queued ones at once, running ones at their next progress report.

On both job runners (worker threads, RQ on Redis) and both databases (SQLite, PostgreSQL); bulk
pre-annotation for real against a fake Label Studio. Cancelling a training run (in its child process) is
tested with the other real training runs, in tests/backend/test_training_flow.py.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from flask import Flask

from backend.app import create_app
from backend.context import BackendContext
from backend.db import jobs as db_jobs
from backend.db.queries import ConflictError
from backend.db.session import session_scope
from backend.jobs import child, execution, registry
from backend.jobs.execution import JobCancelled, ProgressReporter
from backend.jobs.worker import run_worker
from tests.backend.conftest import SynthVideo, drain
from tests.backend.jobs.test_runners import (  # noqa: F401 - fixtures
    FakeLabelStudio,
    fake_ls,
    job,
    ls_app,
    rq_context,
)

STARTED = threading.Event()  # the stepping job has stored its first progress
ASKED = threading.Event()  # the test has asked for the cancel
RELEASE = threading.Event()
RAN: list[str] = []  # ids of the jobs whose function was called
WENT_ON: list[str] = []  # ids of the jobs that went past the report after the cancel


def stepping_job(ctx: BackendContext, *, job_id: str, report: Any, **params: Any) -> dict:
    """A test job: reports step 1, waits until the test asked for the cancel, reports step 2, returns."""
    RAN.append(job_id)
    report(step=1)
    STARTED.set()
    assert ASKED.wait(20)
    report(step=2)  # raises JobCancelled here when the cancel reached the job
    WENT_ON.append(job_id)
    return {"steps": 2}


def holding_job(ctx: BackendContext, *, job_id: str, report: Any, **params: Any) -> dict:
    """A test job that holds its lane until RELEASE."""
    RAN.append(job_id)
    assert RELEASE.wait(20)
    return {}


@pytest.fixture(autouse=True)
def test_functions(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registers the test jobs; every report is stored (and so sees a cancel), not one a second."""
    for name in ("stepping_job", "holding_job"):
        monkeypatch.setitem(registry.JOB_FUNCTIONS, name, f"tests.backend.jobs.test_cancel:{name}")
    monkeypatch.setattr(execution, "PROGRESS_INTERVAL_S", 0.0)
    for event in (STARTED, ASKED, RELEASE):
        event.clear()
    RAN.clear()
    WENT_ON.clear()
    yield
    ASKED.set()  # never leave a worker thread waiting
    RELEASE.set()


def add_job(ctx: BackendContext, state: str, kind: str = "preannotate", project_id: int = 1) -> str:
    """A job row moved to `state` the way a runner moves it."""
    with session_scope(ctx.sessions) as session:
        job_id = db_jobs.create_job(session=session, project_id=project_id, kind=kind, trigger="api").id
        if state != "queued":
            db_jobs.update_job(session=session, job_id=job_id, state="running")
        if state not in ("queued", "running"):
            db_jobs.update_job(session=session, job_id=job_id, state=state)
    return job_id


def at(value: str) -> datetime:
    """A time from the API (ISO 8601)."""
    return datetime.fromisoformat(value)


# ----------------------------------------------------------------------------- worker threads


def test_a_queued_job_is_cancelled_at_once_and_never_starts(backend_app: Flask) -> None:
    ctx, client = backend_app.extensions["dcpose"], backend_app.test_client()
    holder = ctx.runner.submit("preannotate", 1, "holding_job")  # holds the lane: the next job waits
    waiting = ctx.runner.submit("preannotate", 2, "stepping_job")
    assert job(ctx, waiting).state == "queued"
    resp = client.post(f"/jobs/{waiting}/cancel")
    assert resp.status_code == 200, resp.json
    assert resp.json["state"] == "cancelled" and resp.json["cancel_requested_at"] == resp.json["finished_at"]
    assert resp.json["fraction"] == 1.0
    RELEASE.set()
    drain(backend_app)  # the runner took the cancelled job's item from its lane and did not run it
    assert RAN == [holder]
    row = job(ctx, waiting)
    assert (row.state, row.started_at, row.pid, row.result) == ("cancelled", None, None, {})
    again = client.post(f"/jobs/{waiting}/cancel")  # twice
    assert again.status_code == 409, again.json
    assert again.json["error"] == f"job {waiting} already cancelled; there is nothing to cancel"
    assert client.get("/jobs?state=cancelled").json["jobs"][0]["id"] == waiting
    fresh = ctx.runner.submit("preannotate", 2, "holding_job")  # the cancelled job is not active: a new one
    assert fresh != waiting
    drain(backend_app)


def test_a_running_job_stops_at_its_next_progress_report(backend_app: Flask) -> None:
    ctx, client = backend_app.extensions["dcpose"], backend_app.test_client()
    job_id = ctx.runner.submit("preannotate", 1, "stepping_job", label="a")
    assert STARTED.wait(20)
    resp = client.post(f"/jobs/{job_id}/cancel")
    assert resp.status_code == 202, resp.json
    assert resp.json["state"] == "running" and resp.json["cancel_requested_at"] is not None
    twice = client.post(f"/jobs/{job_id}/cancel")  # asking again changes nothing
    assert twice.status_code == 202 and twice.json["cancel_requested_at"] == resp.json["cancel_requested_at"]
    with pytest.raises(ConflictError, match=f"job {job_id} is being cancelled"):  # no coalescing into it
        ctx.runner.submit("preannotate", 1, "stepping_job")
    ASKED.set()
    drain(backend_app)
    done = client.get(f"/jobs/{job_id}").json
    assert (done["state"], done["error"], done["result"]) == ("cancelled", None, {}), done
    assert done["progress"] == {"params": {"label": "a"}, "step": 2}, "the progress it reached is kept"
    assert WENT_ON == [] and at(done["finished_at"]) >= at(done["cancel_requested_at"])
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 409


def test_unknown_and_finished_jobs_cannot_be_cancelled(backend_app: Flask) -> None:
    ctx, client = backend_app.extensions["dcpose"], backend_app.test_client()
    missing = client.post("/jobs/0123abc/cancel")
    assert missing.status_code == 404 and missing.json == {"error": "job '0123abc' does not exist"}
    for n, state in enumerate(("succeeded", "failed", "rejected")):
        job_id = add_job(ctx, state, project_id=10 + n)
        resp = client.post(f"/jobs/{job_id}/cancel")
        assert resp.status_code == 409, resp.json
        assert resp.json["error"] == f"job {job_id} already {state}; there is nothing to cancel"
        row = job(ctx, job_id)
        assert row.state == state and row.cancel_requested_at is None
    assert client.get("/jobs/0123abc/cancel").status_code == 405  # POST only
    nul = client.post("/jobs/a%00b/cancel")
    assert nul.status_code == 400 and nul.json["error"] == "the URL path and query must not contain NUL (%00)"


def test_a_job_past_its_last_cancel_point_refuses_a_cancel(backend_app: Flask) -> None:
    """`commit_to_finish` (a training run about to register its version): a request made before it stops the job
    there; one made after it gets a 409 and the job runs to its end."""
    ctx, client = backend_app.extensions["dcpose"], backend_app.test_client()
    committed = add_job(ctx, "running", kind="train", project_id=1)
    report = ProgressReporter(ctx, committed, {"phase": "write"})
    report.commit_to_finish()
    resp = client.post(f"/jobs/{committed}/cancel")
    assert resp.status_code == 409 and resp.json["error"] == (
        f"job {committed} is finishing (write) and can no longer be cancelled"
    )
    report(phase="gate")
    report.flush()  # no JobCancelled: nothing was requested, and the job is committed
    assert job(ctx, committed).cancel_requested_at is None

    asked = add_job(ctx, "running", kind="train", project_id=2)
    assert client.post(f"/jobs/{asked}/cancel").status_code == 202
    report = ProgressReporter(ctx, asked, {"phase": "write"})
    with pytest.raises(JobCancelled, match="cancel requested at"):
        report.commit_to_finish()
    assert "cancellable" not in report.progress and "cancellable" not in job(ctx, asked).progress


def test_start_training_while_the_training_job_is_being_cancelled_says_so(app_client: Any,
                                                                           backend_app: Flask) -> None:  # fmt: skip
    ctx = backend_app.extensions["dcpose"]
    job_id = add_job(ctx, "running", kind="train", project_id=1)
    assert app_client.post(f"/jobs/{job_id}/cancel").status_code == 202
    resp = app_client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert resp.status_code == 200 and resp.json["status"] == "not_started", resp.json
    assert f"job {job_id} is being cancelled; ask again once it has stopped" in resp.json["message"]
    refused = app_client.post("/train", json={"project": 1})
    assert refused.status_code == 409 and "is being cancelled" in refused.json["error"]


def test_a_training_job_cancelled_while_queued_gets_no_process(backend_app: Flask,
                                                               caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    ctx = backend_app.extensions["dcpose"]
    job_id = add_job(ctx, "queued", kind="train")
    assert backend_app.test_client().post(f"/jobs/{job_id}/cancel").status_code == 200
    with caplog.at_level(logging.INFO, logger="backend.jobs.child"):
        child.run_item(ctx, ("job", "train", job_id, {}))  # what a runner does when it reaches the item
    assert f"job {job_id} (train) not run: no longer queued" in caplog.messages
    assert not any("runs in process" in m for m in caplog.messages)
    assert job(ctx, job_id).state == "cancelled"


def test_the_status_page_offers_cancel_for_active_jobs_only(backend_app: Flask) -> None:
    ctx, client = backend_app.extensions["dcpose"], backend_app.test_client()
    queued, running = add_job(ctx, "queued", project_id=1), add_job(ctx, "running", project_id=2)
    add_job(ctx, "succeeded", project_id=3)
    client.post(f"/jobs/{add_job(ctx, 'queued', project_id=4)}/cancel")
    text = client.get("/").get_data(as_text=True)
    for job_id in (queued, running):
        assert f'<button class="cancel" data-id="{job_id}"' in text and f"/jobs/{job_id}/cancel" in text
    assert text.count('<button class="cancel"') == 2, "none for the finished and the cancelled job"
    assert '<td class="state cancelled">cancelled</td>' in text


# ----------------------------------------------------------------------------- RQ on Redis


def api_client(ctx: BackendContext) -> Any:
    """A test client of the service on `ctx` (its runner is the test's RQ runner, not started)."""
    return create_app(context=ctx, start_runner=False).test_client()


def test_rq_a_queued_job_cancelled_never_starts(rq_context: BackendContext) -> None:
    ctx = rq_context
    client = api_client(ctx)
    job_id = ctx.runner.submit("preannotate", 1, "stepping_job")
    assert ctx.runner.queue.count == 1
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
    run_worker(ctx, burst=True, fork=False)  # the worker takes the item and leaves the job alone
    assert ctx.runner.queue.count == 0 and RAN == []
    assert (job(ctx, job_id).state, job(ctx, job_id).started_at) == ("cancelled", None)


def test_rq_a_running_job_stops_at_its_next_progress_report(rq_context: BackendContext) -> None:
    ctx = rq_context
    client = api_client(ctx)
    job_id = ctx.runner.submit("preannotate", 1, "stepping_job")
    answers: list[Any] = []

    def cancel_once_started() -> None:  # the operator, while the worker runs the job
        assert STARTED.wait(20)
        answers.append(client.post(f"/jobs/{job_id}/cancel"))
        ASKED.set()

    operator = threading.Thread(target=cancel_once_started, daemon=True)
    operator.start()
    run_worker(ctx, burst=True, fork=False)  # in the main thread: RQ installs signal handlers
    operator.join(20)
    assert [a.status_code for a in answers] == [202], [a.json for a in answers]
    row = job(ctx, job_id)
    assert (row.state, row.progress["step"], WENT_ON) == ("cancelled", 2, [])


# ----------------------------------------------------------------------------- bulk pre-annotation, for real


def test_cancelled_preannotation_stops_and_keeps_what_it_pushed(ls_app: Flask, fake_ls: FakeLabelStudio,
                                                                synth_video: SynthVideo) -> None:  # fmt: skip
    client = ls_app.test_client()
    answers: list[Any] = []

    def cancel_after_the_first_push(prediction: dict) -> None:  # the operator, while Label Studio answers
        if len(fake_ls.pushed) == 1:
            (running,) = ls_app.test_client().get("/jobs?kind=preannotate&state=running").json["jobs"]
            answers.append(ls_app.test_client().post(f"/jobs/{running['id']}/cancel"))

    fake_ls.on_push = cancel_after_the_first_push
    job_id = client.post("/preannotate", json={"project": 1}).json["job"]
    drain(ls_app)
    assert [a.status_code for a in answers] == [202]
    done = client.get(f"/jobs/{job_id}").json
    assert done["state"] == "cancelled" and done["error"] is None, done
    assert [p["task"] for p in fake_ls.pushed] == [100], "it stopped at the report after its first push"
    progress = done["progress"]
    assert (progress["tasks_done"], progress["pushed"], progress["failed"]) == (1, 1, 0)
    assert progress["tasks_total"] == synth_video.num_frames
    fake_ls.on_push = None
    again = client.post("/preannotate", json={"project": 1}).json["job"]  # a new job, not the cancelled one
    drain(ls_app)
    assert again != job_id and client.get(f"/jobs/{again}").json["state"] == "succeeded"
    assert fake_ls.pushed[0]["task"] == 100, "what the cancelled job pushed stays"
