"""Tests of backend.jobs.child that start no training (the training runs are in tests/backend/test_training_flow.py)."""

from __future__ import annotations

import multiprocessing
import signal

import pytest
from flask import Flask

from backend.db import jobs as db_jobs
from backend.db.session import session_scope
from backend.jobs import registry
from backend.jobs.child import EXIT_PARENT_GONE, ForwardingRunner, _ending
from tests.backend.conftest import drain


def test_only_the_training_function_runs_in_a_child_whatever_it_is_registered_as(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert registry.runs_in_child("train") and not registry.runs_in_child("preannotate")
    monkeypatch.setitem(registry.JOB_FUNCTIONS, "train", "tests.backend.services.test_training:blocking_train")
    assert not registry.runs_in_child("train"), "a stand-in registered as train runs in-process"


def test_a_job_process_that_cannot_start_fails_the_job_with_the_reason(backend_app: Flask) -> None:
    ctx = backend_app.extensions["dcpose"]
    ctx.predictors.factory = lambda spec: None  # a closure: it cannot be sent to a spawned process
    job_id = ctx.runner.submit("train", 1, trigger="api")
    drain(backend_app, timeout=30)
    with session_scope(ctx.sessions) as session:
        job = db_jobs.get_job(session=session, job_id=job_id)
        assert job is not None and job.state == "failed", (job.state if job else None)
        assert job.error.startswith("the job process could not be started:") and "pickle" in job.error, job.error


def test_how_a_job_process_ended_is_said_in_words() -> None:
    assert _ending(-signal.SIGKILL) == "was killed by signal SIGKILL (by hand, or by the kernel's OOM killer)"
    assert _ending(-signal.SIGSEGV) == "was killed by signal SIGSEGV"
    assert _ending(EXIT_PARENT_GONE) == "stopped because its parent process ended"
    assert _ending(1) == "exited with status 1"


def test_the_child_runner_sends_calls_to_the_parent_and_queues_no_job() -> None:
    receiver, sender = multiprocessing.Pipe(duplex=False)
    runner = ForwardingRunner(sender)
    runner.enqueue("sync_ls", lane="ls", project_id=1, note="training job j: p1-v1 serving")
    assert receiver.recv() == ("sync_ls", "ls", None, {"project_id": 1, "note": "training job j: p1-v1 serving"})
    with pytest.raises(registry.JobQueueError, match="cannot queue a train job"):
        runner.submit("train", 1)
