"""Tests of POST /webhook and backend.services.events: recording, dedup, ordering, corrections, metrics."""

from __future__ import annotations

import copy
import re
import statistics
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from annotation_io.label_studio import label_config
from backend.db import jobs as db_jobs
from backend.db.session import session_scope
from backend.db.tables import Annotation, Correction, Project, WebhookEvent
from tests.backend.conftest import SynthVideo, drain
from tests.backend.services.test_training import RELEASE, train_function  # noqa: F401  (pytest fixture)

CONFIG = label_config()
SECRET = "project-token-SECRET-0123456789"


def event(action: str, ann_id: int, task: dict, result: list, updated_at: str, **annotation: Any) -> dict:
    """A webhook payload shaped like Label Studio 1.23's (its webhook documentation, annotation events)."""
    body = {"id": ann_id, "result": result, "was_cancelled": False, "ground_truth": False, "lead_time": 4.2,
            "created_at": "2026-03-01T10:00:00.000000Z", "updated_at": updated_at, "task": task["id"],
            "project": 1, "completed_by": 1, "prediction": {}, **annotation}  # fmt: skip
    return {"action": action, "annotation": body, "task": {"id": task["id"], "data": task["data"], "project": 1},
            "project": {"id": 1, "title": "poses", "label_config": CONFIG, "token": SECRET,
                        "task_data_password": SECRET}}  # fmt: skip


def predict(client: FlaskClient, task: dict) -> dict:
    resp = client.post("/predict", json={"project": "1.1700000000", "label_config": CONFIG, "tasks": [task]})
    assert resp.status_code == 200, resp.json
    return resp.json["results"][0]


def corrected(result: list[dict], video: SynthVideo) -> tuple[list[dict], dict[str, int]]:
    """The prediction edited like an annotator: one joint dragged 10 px, one deleted, one redrawn 5 px
    away without parentID (a hand-drawn keypoint)."""
    items = copy.deepcopy(result)
    kps = [i for i in items if i["type"] == "keypointlabels" and i["parentID"].endswith("p0")]
    kps[0]["value"]["x"] += 10 / video.width * 100
    items.remove(kps[1])
    redrawn = kps[2]
    del redrawn["parentID"]
    redrawn["id"] = "hand-drawn"
    redrawn["value"]["y"] += 5 / video.height * 100
    return items, {"moved": 2, "deleted": 1}


def overall(client: FlaskClient, version: str) -> dict:
    metrics = client.get("/metrics?project=1").json
    return metrics["model_versions"][version]["overall"]


def test_created_annotation_is_compared_with_the_served_prediction(
    app_client: FlaskClient, backend_app: Flask, synth_video: SynthVideo
) -> None:
    task = synth_video.task(2)
    prediction = predict(app_client, task)
    result, _ = corrected(prediction["result"], synth_video)
    resp = app_client.post(
        "/webhook", json=event("ANNOTATION_CREATED", 11, task, result, "2026-03-01T10:00:05Z")
    )
    assert resp.status_code == 201 and resp.json["status"] == "queued"
    drain(backend_app)
    stats = overall(app_client, prediction["model_version"])
    placed = sum(1 for i in prediction["result"] if i["type"] == "keypointlabels")
    assert (stats["moved"], stats["deleted"], stats["added"], stats["kept"]) == (2, 1, 0, placed - 3)
    assert stats["moved_mean_px"] == pytest.approx(7.5, abs=1e-3)  # (10 + 5) / 2
    metrics = app_client.get("/metrics").json
    assert metrics["annotations_received"] == 1 and metrics["predictions_served"] == 1
    ctx = backend_app.extensions["dcpose"]
    with session_scope(ctx.sessions) as session:
        stored = session.scalars(select(WebhookEvent)).one()
        assert stored.status == "processed" and SECRET not in str(stored.payload)
        moved = session.scalars(select(Correction).where(Correction.kind == "moved")).all()
        assert sorted(round(c.distance_px, 3) for c in moved) == [5.0, 10.0]


def test_repeats_and_late_events_leave_one_state(
    app_client: FlaskClient, backend_app: Flask, synth_video: SynthVideo
) -> None:
    task = synth_video.task(3)
    prediction = predict(app_client, task)
    edited, _ = corrected(prediction["result"], synth_video)
    first = event("ANNOTATION_CREATED", 21, task, edited, "2026-03-01T10:00:00Z")
    assert app_client.post("/webhook", json=first).status_code == 201
    again = app_client.post("/webhook", json=first)
    assert again.status_code == 200 and again.json["status"] == "duplicate"
    update = event(
        "ANNOTATION_UPDATED", 21, task, prediction["result"], "2026-03-01T10:05:00Z"
    )  # accepted as is
    late = event("ANNOTATION_UPDATED", 21, task, edited, "2026-03-01T10:02:00Z")  # older, delivered last
    for payload in (update, late):
        assert app_client.post("/webhook", json=payload).status_code == 201
    drain(backend_app)
    stats = overall(app_client, prediction["model_version"])
    assert stats["moved"] == stats["deleted"] == 0 and stats["kept"] == stats["predicted"] > 0
    ctx = backend_app.extensions["dcpose"]
    with session_scope(ctx.sessions) as session:
        (row,) = session.scalars(select(Annotation)).all()
        assert row.ls_updated_at.isoformat().startswith("2026-03-01T10:05:00")
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 3
        assert session.scalar(select(func.count()).select_from(Correction)) == stats["predicted"]


def test_deletes_mark_annotations_and_survive_reordering(
    app_client: FlaskClient, backend_app: Flask, synth_video: SynthVideo
) -> None:
    task = synth_video.task(1)
    prediction = predict(app_client, task)
    created = event("ANNOTATION_CREATED", 31, task, prediction["result"], "2026-03-01T11:00:00Z")
    assert app_client.post("/webhook", json=created).status_code == 201
    drain(backend_app)
    assert app_client.get("/metrics").json["annotations_received"] == 1
    deleted = {
        "action": "ANNOTATIONS_DELETED",
        "annotations": [{"id": 31}],
        "project": {"id": 1, "token": SECRET},
    }
    assert app_client.post("/webhook", json=deleted).status_code == 201
    # A delete that overtook its create (several RQ workers): the create must not revive it.
    early_delete = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 32}], "project": {"id": 1}}
    assert app_client.post("/webhook", json=early_delete).status_code == 201
    drain(backend_app)
    late_create = event("ANNOTATION_CREATED", 32, task, prediction["result"], "2026-03-01T11:01:00Z")
    revive = event("ANNOTATION_UPDATED", 31, task, prediction["result"], "2026-03-01T11:09:00Z")
    for payload in (late_create, revive):
        assert app_client.post("/webhook", json=payload).status_code == 201
    drain(backend_app)
    ctx = backend_app.extensions["dcpose"]
    with session_scope(ctx.sessions) as session:
        rows = {a.id: a for a in session.scalars(select(Annotation))}
        assert rows[31].deleted and rows[31].deleted_at is not None and rows[32].deleted
        statuses = [e.status for e in session.scalars(select(WebhookEvent).order_by(WebhookEvent.id))]
        assert statuses == ["processed"] * 5
    metrics = app_client.get("/metrics").json
    assert metrics["annotations_received"] == 0
    assert metrics["model_versions"][prediction["model_version"]]["overall"]["predicted"] == 0


def test_project_updates_training_and_other_actions(app_client: FlaskClient, backend_app: Flask) -> None:
    config = label_config(track=None)
    payload = {"action": "PROJECT_UPDATED", "project": {"id": 4, "title": "renamed", "label_config": config,
                                                        "updated_at": "2026-03-02T00:00:00Z", "token": SECRET}}  # fmt: skip
    assert app_client.post("/webhook", json=payload).status_code == 201
    assert app_client.post("/webhook", json=payload).json["status"] == "duplicate"
    drain(backend_app)
    job_ids = []
    for _ in range(2):  # each click of "Start Training" is its own event; the second coalesces
        resp = app_client.post(
            "/webhook", json={"action": "START_TRAINING", "project": {"id": 4, "token": SECRET}}
        )
        # `job_id`, not `job`: with `job` Label Studio would poll a /job_status route
        assert resp.status_code == 201 and resp.json["status"] == "queued" and "job" not in resp.json
        job_ids.append(resp.json["job_id"])
    ctx = backend_app.extensions["dcpose"]
    with session_scope(ctx.sessions) as session:
        job = db_jobs.get_job(session=session, job_id=job_ids[0])
        assert job is not None and job.kind == "train" and job.trigger == "START_TRAINING"
        assert job_ids[1] == job_ids[0] or job.state in ("succeeded", "failed", "rejected")
    ignored = app_client.post(
        "/webhook", json={"action": "TASKS_CREATED", "tasks": [{"id": 1}], "project": {"id": 4}}
    )
    assert ignored.status_code == 200 and ignored.json == {"status": "ignored", "action": "TASKS_CREATED"}
    with session_scope(ctx.sessions) as session:
        project = session.get(Project, 4)
        assert (project.title, project.label_config) == ("renamed", config)
        events = session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)).all()
        assert [(e.action, e.status) for e in events] == [
            ("PROJECT_UPDATED", "processed"), ("START_TRAINING", "processed"), ("START_TRAINING", "processed")]  # fmt: skip


BAD_WEBHOOKS = [
    ("not json", "malformed JSON"),
    ([1, 2], "expected a JSON object"),
    ({"project": {"id": 1}}, "no 'action'"),
    ({"action": "ANNOTATION_EXPLODED", "project": {"id": 1}}, "unknown action 'ANNOTATION_EXPLODED'"),
    ({"action": "ANNOTATION_CREATED", "project": {"id": 1}}, "needs an object 'annotation'"),
    (
        {"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "result": "x"}},
        "annotation.result must be a list",
    ),
    (
        {
            "action": "ANNOTATION_UPDATED",
            "annotation": {"id": 1, "task": 3, "result": [], "updated_at": "yesterday"},
            "project": {"id": 1},
        },
        "annotation.updated_at",
    ),
    (
        {
            "action": "ANNOTATION_CREATED",
            "annotation": {"id": 1, "result": [], "updated_at": "2026-01-01T00:00:00Z"},
            "project": {"id": 1},
        },
        "task.id",
    ),
    (
        {"action": "ANNOTATIONS_DELETED", "annotations": [], "project": {"id": 1}},
        "non-empty list 'annotations'",
    ),
    (
        {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": "x"}], "project": {"id": 1}},
        r"annotations\[0\].id",
    ),
    ({"action": "START_TRAINING"}, "needs an object 'project'"),
    ({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 3}]}, "has no project"),
]


def test_bad_webhooks_get_400_with_the_reason(app_client: FlaskClient, backend_app: Flask) -> None:
    for body, reason in BAD_WEBHOOKS:
        resp = (app_client.post("/webhook", data=body, content_type="application/json") if isinstance(body, str)
                else app_client.post("/webhook", json=body))  # fmt: skip
        assert resp.status_code == 400 and resp.is_json, (body, resp.status_code)
        assert re.search(reason, resp.json["error"]), (reason, resp.json)
    with session_scope(backend_app.extensions["dcpose"].sessions) as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0


def test_unusable_annotation_content_is_refused_at_intake(app_client: FlaskClient, backend_app: Flask,
                                                          synth_video: SynthVideo) -> None:  # fmt: skip
    task = synth_video.task(0)
    bad = [{"id": "k", "from_name": "kp", "to_name": "image", "type": "keypointlabels", "original_width": 160,
            "original_height": 120, "value": {"x": 3, "y": 4, "width": 1, "keypointlabels": ["tail"]}}]  # fmt: skip
    cancelled = event("ANNOTATION_CREATED", 42, task, [], "2026-03-01T12:00:00Z", was_cancelled=True)
    refused = app_client.post("/webhook", json=event("ANNOTATION_CREATED", 41, task, bad, "2026-03-01T12:00:00Z"))
    assert refused.status_code == 400 and "unknown joint label 'tail'" in refused.json["error"]
    assert app_client.post("/webhook", json=cancelled).status_code == 201
    drain(backend_app)
    with session_scope(backend_app.extensions["dcpose"].sessions) as session:
        (only,) = session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)).all()
        assert only.status == "processed"
        skipped = session.get(Annotation, 42)
        assert skipped.was_cancelled and session.scalar(select(func.count()).select_from(Correction)) == 0


def test_annotations_without_a_prediction_count_as_added(app_client: FlaskClient, backend_app: Flask,
                                                         synth_video: SynthVideo) -> None:  # fmt: skip
    from tests.backend.services.test_prediction import gt_results

    task = synth_video.task(4)
    payload = event("ANNOTATION_CREATED", 51, task, gt_results(synth_video, 4), "2026-03-01T13:00:00Z")
    assert app_client.post("/webhook", json=payload).status_code == 201
    drain(backend_app)
    stats = app_client.get("/metrics").json["model_versions"]["(none)"]["overall"]
    placed = sum(int(p.present.sum()) for p in synth_video.gt.frames[4].persons)
    assert stats["added"] == placed and stats["predicted"] == 0


def test_webhook_answers_fast(app_client: FlaskClient, backend_app: Flask, synth_video: SynthVideo) -> None:
    """Loose bound (LS waits 1 s); scripts/bench_backend.py measures the real figures."""
    task = synth_video.task(5)
    times = []
    for i in range(20):
        payload = event("ANNOTATION_CREATED", 60 + i, task, [], f"2026-03-01T14:00:{i:02d}Z")
        start = time.perf_counter()
        assert app_client.post("/webhook", json=payload).status_code == 201
        times.append(time.perf_counter() - start)
    drain(backend_app)
    assert statistics.median(times) < 0.05, times


def test_enough_corrections_from_webhooks_queue_training(backend_settings: Any, synth_video: SynthVideo) -> None:
    """TRAIN_MIN_CORRECTIONS is checked after each processed annotation event (no timer needed)."""
    from dataclasses import replace

    from backend.app import create_app
    from tests.backend.conftest import simulated_factory

    app = create_app(replace(backend_settings, train_min_corrections=5),
                     predictor_factory=simulated_factory(synth_video))  # fmt: skip
    try:
        client = app.test_client()
        task = synth_video.task(2)
        result, _ = corrected(predict(client, task)["result"], synth_video)
        client.post("/webhook", json=event("ANNOTATION_CREATED", 11, task, result, "2026-03-01T10:00:05Z"))
        drain(app, timeout=60)
        ctx = app.extensions["dcpose"]
        with session_scope(ctx.sessions) as session:
            train = db_jobs.list_jobs(session=session, project_id=1, kind="train")
        assert [j.trigger for j in train] == ["corrections"], "the correction count queues one training job"
    finally:
        app.extensions["dcpose"].close()


def test_start_training_needs_labelled_frames_and_answers_one_line(
    backend_settings: Any, synth_video: SynthVideo, train_function: None
) -> None:
    """Too few labelled frames: nothing starts, the answer says how many more; then a job and its message."""
    from dataclasses import replace

    from backend.app import create_app
    from tests.backend.conftest import simulated_factory
    from tests.backend.services.test_prediction import gt_results

    app = create_app(replace(backend_settings, train_min_frames=3), predictor_factory=simulated_factory(synth_video))
    ctx = app.extensions["dcpose"]
    try:
        client = app.test_client()
        for frame in (0, 1):
            task = synth_video.task(frame)
            client.post("/webhook", json=event("ANNOTATION_CREATED", 70 + frame, task, gt_results(synth_video, frame),
                                               f"2026-03-01T10:00:0{frame}Z"))  # fmt: skip
        drain(app, timeout=60)
        refused = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
        assert refused.status_code == 200, refused.json
        body = refused.json
        people = sum(len(synth_video.gt.frames[f].persons) for f in (0, 1))
        assert (body["status"], body["labelled_frames"], body["persons"], body["missing_frames"]) == (
            "not_started", 2, people, 1)  # fmt: skip
        assert "\n" not in body["message"] and "Submit 1 more labelled frame(s)" in body["message"], body
        with session_scope(ctx.sessions) as session:
            assert db_jobs.list_jobs(session=session, project_id=1, kind="train") == []
        task = synth_video.task(2)
        client.post("/webhook", json=event("ANNOTATION_CREATED", 72, task, gt_results(synth_video, 2),
                                           "2026-03-01T10:00:03Z"))  # fmt: skip
        drain(app, timeout=60)
        queued = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
        assert queued.status_code == 201 and queued.json["status"] == "queued", queued.json
        message, job_id = queued.json["message"], queued.json["job_id"]
        assert "\n" not in message and f"Training job {job_id} queued" in message, message
        assert "3 labelled frame(s)" in message and f"/jobs/{job_id}" in message and "status page" in message
        with session_scope(ctx.sessions) as session:
            (job,) = db_jobs.list_jobs(session=session, project_id=1, kind="train")
            assert (job.id, job.trigger) == (job_id, "START_TRAINING")
    finally:
        RELEASE.set()  # the stand-in training job ends
        drain(app, timeout=30)
        ctx.close()


# ----------------------------------------------------------------------------- annotation semantics: odd but real


def _region(video: SynthVideo, rid: str, kind: str, value: dict, from_name: str, **extra: Any) -> dict:
    return {"id": rid, "from_name": from_name, "to_name": "image", "type": kind, "original_width": video.width,
            "original_height": video.height, "image_rotation": 0, "value": value, **extra}  # fmt: skip


def _kp(video: SynthVideo, rid: str, labels: list[str], x: float, y: float, from_name: str = "kp", **extra: Any) -> dict:
    return _region(video, rid, "keypointlabels", {"x": x, "y": y, "width": 0.6, "keypointlabels": labels}, from_name,
                   **extra)  # fmt: skip


def _stored_joints(app: Flask, annotation_id: int) -> list[tuple[int, str]]:
    with session_scope(app.extensions["dcpose"].sessions) as session:
        rows = session.scalars(select(Correction).where(Correction.annotation_id == annotation_id)).all()
        return sorted((c.joint, c.kind) for c in rows)


def test_a_correction_lands_on_the_joint_its_label_names(app_client: FlaskClient, backend_app: Flask,
                                                         synth_video: SynthVideo) -> None:  # fmt: skip
    # Label Studio's YOLO keypoint config numbers labels in COCO order (left_shoulder model_index="5").
    # Was: the left shoulder was stored as LS_JOINTS[5], the left elbow (joint 7); the stock "Left Eye"
    # label refused the whole annotation ("unknown joint label").
    xml = ('<View><Image name="image" value="$image"/><KeyPointLabels name="kp" toName="image">'
           '<Label value="nose" model_index="0"/><Label value="Left Eye" model_index="1"/>'
           '<Label value="left_shoulder" model_index="5"/><Label value="right_shoulder" model_index="6"/>'
           "</KeyPointLabels></View>")  # fmt: skip
    setup = app_client.post("/setup", json={"project": 1, "schema": xml})
    assert setup.status_code == 200 and setup.json["unmapped_labels"] == ["Left Eye"], setup.json
    # Two KeyPointLabels naming joints: was served from the first, the other's labels silently ignored.
    split = xml.replace('<Label value="right_shoulder" model_index="6"/>',
                        '</KeyPointLabels><KeyPointLabels name="kp_right" toName="image"><Label value="right_shoulder"/>')  # fmt: skip
    refused = app_client.post("/setup", json={"project": 1, "schema": split})
    assert refused.status_code == 400 and "2 <KeyPointLabels> name joints: 'kp'" in refused.json["error"]
    result = [_kp(synth_video, "a", ["left_shoulder"], 40, 40), _kp(synth_video, "b", ["Left Eye"], 41, 20),
              _kp(synth_video, "c", ["nose"], 42, 15)]  # fmt: skip
    payload = event("ANNOTATION_CREATED", 61, synth_video.task(5), result, "2026-03-02T10:00:00Z")
    payload["project"]["label_config"] = xml
    resp = app_client.post("/webhook", json=payload)
    assert resp.status_code == 201, resp.json
    drain(backend_app)
    assert _stored_joints(backend_app, 61) == [(0, "added"), (5, "added")]  # nose, left_shoulder


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # was a 500 (ValueError): "²".isdigit() is true, int("²") fails
        (lambda r: r[-1]["value"].update(text=["²"]), "track id '²' is not an integer"),
        # were: the first label / text won without a word
        (lambda r: r[1]["value"].update(keypointlabels=["nose", "left_knee"]), "value.keypointlabels has 2 labels"),
        (lambda r: r[-1]["value"].update(text=["3", "7"]), "track id has 2 different values ['3', '7']: keep one"),
        # was: a keypoint of another image read as a joint of this one
        (lambda r: r[1].update(to_name="thumb"), "result[1]: unknown to_name 'thumb' (expected 'image')"),
    ],
)  # fmt: skip
def test_ambiguous_regions_are_refused_at_the_webhook(app_client: FlaskClient, backend_app: Flask,
                                                      synth_video: SynthVideo, change, message: str) -> None:  # fmt: skip
    box = {"x": 10, "y": 10, "width": 50, "height": 60, "rotation": 0}
    result = [_region(synth_video, "B", "rectanglelabels", {**box, "rectanglelabels": ["person"]}, "person"),
              _kp(synth_video, "k", ["nose"], 20, 20, parentID="B"),
              _region(synth_video, "B", "textarea", {**box, "text": ["1"]}, "track_id")]  # fmt: skip
    change(result)
    resp = app_client.post("/webhook", json=event("ANNOTATION_CREATED", 71, synth_video.task(0), result,
                                                  "2026-03-02T11:00:00Z"))  # fmt: skip
    assert resp.status_code == 400 and message in resp.json["error"], resp.json
    assert "annotation 71" in resp.json["error"]


def test_rotated_flipped_and_ignore_boxes_are_read_as_drawn(app_client: FlaskClient, backend_app: Flask,
                                                            synth_video: SynthVideo) -> None:  # fmt: skip
    # Was: a box turned with LS's rotation handle, or a second label of the person control (an ignore
    # region), refused the whole annotation: all its corrections lost (LS does not resend webhooks).
    xml = label_config().replace('<Label value="person" background="#00aa00" />',
                                 '<Label value="person" background="#00aa00" /><Label value="ignore" />')  # fmt: skip
    assert "ignore" in xml
    rotated = {"x": 10, "y": 10, "width": 30, "height": 60, "rotation": 5, "rectanglelabels": ["person"]}
    flipped = {"x": 95, "y": 90, "width": -30, "height": -60, "rotation": 0, "rectanglelabels": ["person"]}
    ignore = {"x": 70, "y": 5, "width": 10, "height": 10, "rotation": 0, "rectanglelabels": ["ignore"]}
    result = [_region(synth_video, "R", "rectanglelabels", rotated, "person"),
              _region(synth_video, "F", "rectanglelabels", flipped, "person"),
              _region(synth_video, "I", "rectanglelabels", ignore, "person"),
              _kp(synth_video, "r0", ["nose"], 20, 20, parentID="R"),
              _kp(synth_video, "f0", ["nose"], 80, 60)]  # no parentID: inside the flipped box  # fmt: skip
    payload = event("ANNOTATION_CREATED", 81, synth_video.task(1), result, "2026-03-02T12:00:00Z")
    payload["project"]["label_config"] = xml
    resp = app_client.post("/webhook", json=payload)
    assert resp.status_code == 201, resp.json
    drain(backend_app)
    with session_scope(backend_app.extensions["dcpose"].sessions) as session:
        row = session.get(Annotation, 81)
        boxes = {p["region_id"]: p["box"] for p in row.persons}
    assert set(boxes) == {"R", "F"}
    w, h = synth_video.width, synth_video.height
    assert boxes["F"] == pytest.approx([0.65 * w, 0.3 * h, 0.3 * w, 0.6 * h])
    assert _stored_joints(backend_app, 81) == [(0, "added"), (0, "added")]


def test_swapped_track_ids_are_corrections_of_ids_not_of_joints(app_client: FlaskClient, backend_app: Flask,
                                                                synth_video: SynthVideo) -> None:  # fmt: skip
    # The annotator fixes an identity switch: swaps the two persons' track ids, moves no joint. Was: each
    # prediction was compared with the other person (same track id), every joint "moved".
    task = synth_video.task(2, task_id=140)
    prediction = predict(app_client, task)
    result = copy.deepcopy(prediction["result"])
    tracks = [r for r in result if r["type"] == "textarea"]
    assert len(tracks) == 2 and tracks[0]["value"]["text"] != tracks[1]["value"]["text"], tracks
    tracks[0]["value"]["text"], tracks[1]["value"]["text"] = tracks[1]["value"]["text"], tracks[0]["value"]["text"]
    resp = app_client.post("/webhook", json=event("ANNOTATION_CREATED", 91, task, result, "2026-03-02T13:00:00Z"))
    assert resp.status_code == 201, resp.json
    drain(backend_app)
    stats = overall(app_client, prediction["model_version"])
    placed = sum(1 for i in prediction["result"] if i["type"] == "keypointlabels")
    assert (stats["kept"], stats["moved"], stats["deleted"], stats["added"]) == (placed, 0, 0, 0), stats


def test_hidden_readonly_relations_and_extras_are_read_as_usual(app_client: FlaskClient, backend_app: Flask,
                                                               synth_video: SynthVideo) -> None:  # fmt: skip
    # Label Studio output beside the pose regions: a hidden box (eye icon), a read-only keypoint, a relation
    # (no from_name), a global TextArea comment and Choices; a ground-truth annotation. All counted as usual.
    xml = label_config().replace("</View>\n</View>", '</View><Choices name="q" toName="image"><Choice value="ok"/>'
                                 '</Choices><TextArea name="comment" toName="image"/></View>')  # fmt: skip
    assert "comment" in xml
    box = {"x": 10, "y": 10, "width": 50, "height": 60, "rotation": 0}
    result = [_region(synth_video, "B", "rectanglelabels", {**box, "rectanglelabels": ["person"]}, "person", hidden=True),
              _kp(synth_video, "k0", ["nose"], 20, 20, parentID="B", readonly=True),
              _kp(synth_video, "k1", ["left_knee"], 30, 50, parentID="B"),
              {"from_id": "k0", "to_id": "k1", "type": "relation", "direction": "right", "labels": []},
              {"id": "c", "from_name": "comment", "to_name": "image", "type": "textarea", "value": {"text": ["blurry"]}},
              {"id": "q", "from_name": "q", "to_name": "image", "type": "choices", "value": {"choices": ["ok"]}}]  # fmt: skip
    payload = event("ANNOTATION_CREATED", 95, synth_video.task(3, task_id=150), result, "2026-03-02T14:00:00Z",
                    ground_truth=True)  # fmt: skip
    payload["project"]["label_config"] = xml
    resp = app_client.post("/webhook", json=payload)
    assert resp.status_code == 201, resp.json
    drain(backend_app)
    assert _stored_joints(backend_app, 95) == [(0, "added"), (13, "added")]
