"""Tests for the status page (`GET /`, backend.http.status and backend.services.status), server-rendered."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from backend.services.status import job_fraction
from scripts.bench_status_page import seed


def test_job_fraction_follows_the_training_phases() -> None:
    assert job_fraction("train", "queued", {}) == 0.0
    assert job_fraction("train", "running", {"phase": "cache", "done": 5, "total": 10}) == 0.05
    half = {"phase": "train", "epoch": 3, "epochs": 4, "step": 2, "steps_per_epoch": 4}  # 2 epochs + 2 steps of 16
    assert job_fraction("train", "running", half) == 0.1 + 0.8 * 10 / 16
    assert job_fraction("train", "running", {"phase": "gate"}) > job_fraction("train", "running", half)
    assert job_fraction("preannotate", "running", {"tasks_done": 3, "tasks_total": 12}) == 0.25
    assert job_fraction("train", "rejected", {"phase": "train"}) == 1.0


def test_status_page_lists_versions_jobs_and_acceptance(backend_app: Flask, app_client: FlaskClient) -> None:
    seed(backend_app.extensions["dcpose"], versions=3, jobs=5, annotations=4)
    page = app_client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert re.search(r'<th>project 1</th><td class="serving" data-scope="project 1">p1-v3</td>', text), text[:2000]
    assert [m for m in re.findall(r'<tr class="version" data-name="([^"]+)"', text)] == ["p1-v3", "p1-v2", "p1-v1"]
    assert "61.50" in text and "candidate beats serving by 0.3" in text  # held-out mAP and gate reason of p1-v3
    assert 'class="promote" data-name="p1-v1"' in text and 'data-name="p1-v3" data-project' not in text
    rows = re.findall(r'<tr class="job" data-id="(job\d+)">.*?<progress max="1" value="([\d.]+)">', text, re.S)
    assert len(rows) == 5 and rows[0] == ("job000004", str(0.1 + 0.8 * 10 / 40)), rows  # the running one
    assert text.count("<svg") == 2 and "Acceptance per model version" in text and "kept: " in text
    jobs = app_client.get("/jobs").json["jobs"]
    assert {j["id"]: j["fraction"] for j in jobs}["job000004"] == round(0.1 + 0.8 * 10 / 40, 4)
