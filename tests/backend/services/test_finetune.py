"""Tests of backend.services.finetune (config, data from the DB, version files) and backend.http.versions (triggers, routes)."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from annotation_io.types import Box, Frame, Person, Video
from backend.jobs import runners as jobs
from backend.services.corrections import CorrectionRow
from backend.db import jobs as db_jobs
from backend.db import queries, versions
from backend.db.session import session_scope
from backend.db.tables import Job, utcnow
from backend.services.finetune import (
    FinetuneConfig,
    clean_json,
    fit_neighbours,
    gather_project_data,
    load_config,
    next_version_name,
    remove_stale_temporaries,
    safe_video_name,
    version_files,
    write_json_atomic,
)
from backend.jobs.runners import BackendContext, JobRunner, build_context
from backend.services.prediction import serving_model
from backend.settings import Settings
from backend.http.versions import SCHEDULER_KEY, TrainingScheduler, maybe_trigger_training

RELEASE = threading.Event()


def blocking_train(ctx: BackendContext, *, job_id: str, report: Any, project_id: int, **params: Any) -> dict:
    """A stand-in "train" job: waits for RELEASE, returns what it got."""
    report(phase="waiting")
    assert RELEASE.wait(10)
    return {"project_id": project_id, **params}


@pytest.fixture
def train_function(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registers the stand-in as the "train" job function (the real one is tested in test_training_flow)."""
    monkeypatch.setitem(jobs.JOB_FUNCTIONS, "train", "tests.backend.services.test_finetune:blocking_train")
    RELEASE.clear()
    yield
    RELEASE.set()


# ----------------------------------------------------------------------------- config


def test_training_options_come_from_defaults_the_model_dir_file_and_the_job(tmp_path: Path) -> None:
    assert load_config(tmp_path) == FinetuneConfig()
    (tmp_path / "train_config.json").write_text(json.dumps({"epochs": 2, "lr": 0.001, "amp": True}))
    cfg = load_config(tmp_path, {"epochs": 3, "batch_size": 2})
    assert (cfg.epochs, cfg.lr, cfg.amp, cfg.batch_size, cfg.holdout_fraction) == (3, 0.001, True, 2, 0.2)
    (tmp_path / "train_config.json").write_text(json.dumps({"epoch": 2}))
    with pytest.raises(ValueError, match=r"train_config.json: unknown key\(s\) \['epoch'\]"):
        load_config(tmp_path)
    (tmp_path / "train_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_config(tmp_path)
    (tmp_path / "train_config.json").unlink()
    for bad, key in (({"epochs": 0}, "epochs"), ({"lr": -1}, "lr"), ({"holdout_fraction": 1.0}, "holdout_fraction"),
                     ({"batch_size": True}, "batch_size")):  # fmt: skip
        with pytest.raises(ValueError, match=f"job config: train config '{key}'"):
            load_config(tmp_path, bad)


def test_json_is_written_atomically_without_nan(tmp_path: Path) -> None:
    path = tmp_path / "v" / "metrics.json"
    write_json_atomic(path, clean_json({"a": [1.0, math.nan], "b": {"c": math.inf}}))
    assert json.loads(path.read_text()) == {"a": [1.0, None], "b": {"c": None}}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"], "no temporary file is left"
    with pytest.raises(ValueError):
        write_json_atomic(path, {"a": math.nan})
    assert json.loads(path.read_text())["a"] == [1.0, None], "a failed write leaves the old file"


# ----------------------------------------------------------------------------- data from the database


def labelled_person(shift: float, scores: bool = False) -> Person:
    p = Person(box=Box(10 + shift, 10, 40, 90), track_id=3)
    for j in (0, 1, 2, 5, 6, 11, 12):
        p.keypoints[j] = (20 + shift + j, 15 + 5 * j, 2)
    if scores:
        p.scores = np.full(17, 0.8)
        p.score = 0.9
    return p


def add_task(session: Session, task_id: int, frame: int, project: int = 1, video: str = "walk") -> None:
    queries.upsert_task(session=session, task_id=task_id, project_id=project, image=f"/frames/{video}/{frame}.jpg",
                        video_key=video, frame_index=frame, nframes=8)  # fmt: skip


def annotate(session: Session, ann_id: int, task_id: int, persons: list[Person], day: int, project: int = 1,
             cancelled: bool = False) -> Any:  # fmt: skip
    row, _ = queries.upsert_annotation(session=session, annotation_id=ann_id, task_id=task_id, project_id=project,
                                       result=[], persons=persons, was_cancelled=cancelled,
                                       ls_updated_at=utcnow().replace(day=day))  # fmt: skip
    return row


def test_project_data_are_the_newest_live_annotations_with_every_task_image(db_session: Session) -> None:
    for task_id, frame in ((10, 0), (11, 2), (12, 3), (13, 4), (14, 0)):
        add_task(db_session, task_id, frame)
    add_task(db_session, 20, 1, project=2, video="other")
    annotate(db_session, 1, 10, [labelled_person(0.0)], day=1)
    annotate(db_session, 2, 14, [labelled_person(5.0, scores=True), labelled_person(50.0)], day=2)  # frame 0, newer
    annotate(db_session, 3, 11, [labelled_person(1.0)], day=1)
    queries.mark_annotations_deleted(session=db_session, annotation_ids=[3])
    annotate(db_session, 4, 12, [labelled_person(2.0)], day=1, cancelled=True)
    annotate(db_session, 5, 20, [labelled_person(3.0)], day=1, project=2)
    row = annotate(db_session, 6, 13, [labelled_person(4.0)], day=3)
    queries.replace_corrections(session=db_session, annotation=row, rows=[CorrectionRow(0, "moved")] * 2)

    data = gather_project_data(session=db_session, project_id=1)
    walk = safe_video_name("walk")
    assert list(data.videos) == [walk] and data.images == {walk: {i: f"/frames/walk/{i}.jpg" for i in (0, 2, 3, 4)}}
    video = data.videos[walk]
    assert video.name == walk and video.extra == {"video_id": "walk"}
    assert video.num_frames == 8 and [f.index for f in video.frames] == [0, 4]
    assert all(f.is_labeled for f in video.frames) and sorted(data.annotations) == [2, 6]
    first = video.frame(0).persons
    assert len(first) == 2 and first[0].xy[0, 0] == pytest.approx(25.0), "the newest annotation of frame 0"
    assert all(p.scores is None and p.score is None for p in first), "human-checked: labels, not predictions"
    assert data.last_correction_id is not None
    summary = data.summary()
    assert (summary["labelled_frames"], summary["persons"], summary["frames_by_video"]) == (2, 3, {"walk": [0, 4]})
    assert gather_project_data(session=db_session, project_id=9).videos == {}


def test_video_names_are_safe_for_files_and_distinct() -> None:
    names = [safe_video_name(v) for v in ("walk", "../../etc", "cam 1/day 2", "cam_1_day_2", "", "a" * 300)]
    assert names[0].startswith("walk-") and len(set(names)) == len(names)
    assert all("/" not in n and not n.startswith(".") and len(n) <= 57 for n in names)
    assert safe_video_name("walk") == names[0], "stable: it keys the heatmap cache across runs"


def test_neighbours_without_a_task_image_are_replaced_by_the_current_frame() -> None:
    from model.training.samples import build_samples

    frames = [Frame(t, [labelled_person(float(t))], is_labeled=True) for t in (0, 3, 7)]
    samples = build_samples({"v": Video("v", 8, frames)})
    fitted = fit_neighbours(samples, {"v": {0: "a", 1: "b", 2: "c", 3: "d", 7: "e"}})
    got = [(s.frame, s.prev, s.next, s.margin) for s in fitted]
    assert got == [(0, 0, 1, (1.0, 1.0)), (3, 2, 3, (1.0, 1.0)), (7, 7, 7, (1.0, 1.0))]
    assert fitted[0] is samples[0], "samples whose neighbours are known are kept as they are"


def test_version_names_skip_taken_names_and_folders(db_session: Session, tmp_path: Path) -> None:
    assert next_version_name(db_session, tmp_path, 1) == "p1-v1"
    for name, project in (("p1-v1", 1), ("p1-v3", 1), ("p2-v7", 2), ("p1-vx", 1)):
        versions.create_model_version(session=db_session, name=name, backbone="b", project_id=project)
    version_files(tmp_path, "p1-v4")["dir"].mkdir(parents=True)  # left by a run killed after writing its files
    assert next_version_name(db_session, tmp_path, 1) == "p1-v5"
    assert next_version_name(db_session, tmp_path, 2) == "p2-v8"
    root = tmp_path / "versions"
    (root / ".tmp-deadjob").mkdir()
    (root / ".tmp-livejob").mkdir()
    assert remove_stale_temporaries(tmp_path, {"livejob"}) == 1
    assert sorted(p.name for p in root.iterdir()) == [".tmp-livejob", "p1-v4"]


# ----------------------------------------------------------------------------- triggers


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

    ctx = build_context(replace(backend_settings, train_min_corrections=3), runner="none")
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


def test_enough_new_corrections_queue_training_and_a_running_job_absorbs_more(trigger_ctx: BackendContext) -> None:
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


def test_the_timer_trains_on_any_new_correction_once_the_interval_passed(trigger_ctx: BackendContext,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = trigger_ctx
    add_corrections(ctx, 1, 1)
    first = maybe_trigger_training(ctx, 1, interval_s=3600)
    assert first is not None, "no job ever ran: the timer is due"
    finish(ctx, first, "rejected")
    add_corrections(ctx, 2, 1)
    assert maybe_trigger_training(ctx, 1, interval_s=3600) is None, "the last job is younger than the interval"
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
    scheduler = TrainingScheduler(ctx, interval_s=3600, poll_s=0.02).start()
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


def test_the_app_starts_the_timer_only_when_configured(backend_settings: Settings, train_function: None) -> None:
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


# ----------------------------------------------------------------------------- routes


def test_post_train_validates_queues_and_coalesces(app_client: FlaskClient, backend_app: Flask,
                                                   train_function: None) -> None:  # fmt: skip
    for body, reason in ((None, "expected a JSON object"), ({}, "'project'"), ({"project": "x"}, "project must be"),
                         ({"project": 1, "config": [1]}, "'config' must be an object"),
                         ({"project": 1, "config": {"epoch": 1}}, r"unknown key\(s\) \['epoch'\]"),
                         ({"project": 1, "config": {"lr": 0}}, "'lr' must be a positive number")):  # fmt: skip
        resp = app_client.post("/train", json=body) if body is not None else app_client.post("/train", data="x")
        assert resp.status_code == 400, (body, resp.json)
        assert reason in resp.json["error"] or __import__("re").search(reason, resp.json["error"])
    first = app_client.post("/train", json={"project": "1.1700000000", "config": {"epochs": 1}})
    assert first.status_code == 202
    job_id = first.json["job"]
    again = app_client.post("/train", json={"project": 1})
    assert (again.status_code, again.json) == (202, {"job": job_id}), "coalesced into the queued/running job"
    other = app_client.post("/train", json={"project": 2}).json["job"]
    assert other != job_id
    RELEASE.set()
    assert backend_app.extensions["dcpose"].runner.drain(10)
    done = app_client.get(f"/jobs/{job_id}").json
    assert (done["state"], done["kind"], done["trigger"]) == ("succeeded", "train", "api")
    assert done["result"] == {"project_id": 1, "config": {"epochs": 1}}


def make_version(ctx: BackendContext, name: str, *, project: int | None = 1, head: bool = True, curve: bool = True,
                 state: str = "candidate") -> Path:  # fmt: skip
    files = version_files(ctx.settings.model_dir, name)
    files["dir"].mkdir(parents=True)
    if head:
        files["head"].write_bytes(b"weights")
    if curve:
        files["curve"].write_bytes(b"\x89PNG\r\n\x1a\nfake")
    with session_scope(ctx.sessions) as session:
        versions.create_model_version(session=session, name=name, backbone="blazepose", project_id=project,
                                      head_path=str(files["head"]), state=state, metrics={"gate": {"promote": True}},
                                      training_summary={"labelled_frames": 4})  # fmt: skip
    return files["dir"]


def test_version_details_and_curve(app_client: FlaskClient, backend_app: Flask) -> None:
    ctx = backend_app.extensions["dcpose"]
    folder = make_version(ctx, "p1-v1")
    make_version(ctx, "p1-v2", curve=False)
    details = app_client.get("/versions/p1-v1").json
    assert details["name"] == "p1-v1" and details["state"] == "candidate" and details["head_exists"] is True
    assert details["metrics"] == {"gate": {"promote": True}} and details["training_summary"]["labelled_frames"] == 4
    assert details["curve_png"] == str(folder / "curve.png")
    png = app_client.get("/versions/p1-v1/curve.png")
    assert png.status_code == 200 and png.mimetype == "image/png" and png.data.startswith(b"\x89PNG")
    assert app_client.get("/versions/p1-v2/curve.png").status_code == 404
    assert app_client.get("/versions/p1-v2").json["curve_png"] is None
    for path in ("/versions/nope", "/versions/nope/curve.png"):
        resp = app_client.get(path)
        assert resp.status_code == 404 and "nope" in resp.json["error"]


def test_manual_promotion_and_rollback_switch_what_setup_reports_and_serves(
    app_client: FlaskClient, backend_app: Flask
) -> None:
    ctx = backend_app.extensions["dcpose"]
    setup = {"project": "1.1700000000", "schema": None}
    cold = app_client.post("/setup", json=setup).json["model_version"]
    make_version(ctx, "p1-v1")
    make_version(ctx, "p1-v2")
    make_version(ctx, "p1-v3", head=False)
    make_version(ctx, "p1-v4", state="failed")
    assert app_client.post("/versions/p1-v9/promote").status_code == 404
    missing = app_client.post("/versions/p1-v3/promote")
    assert missing.status_code == 409 and "head file" in missing.json["error"]
    assert app_client.post("/versions/p1-v4/promote").status_code == 409
    assert app_client.post("/setup", json=setup).json["model_version"] == cold, "refused promotions change nothing"
    for name, previous in (("p1-v2", cold), ("p1-v1", "p1-v2"), ("p1-v2", "p1-v1"), ("p1-v0", "p1-v2"),
                           ("p1-v2", "p1-v0")):  # fmt: skip
        resp = app_client.post(f"/versions/{name}/promote")
        assert resp.status_code == 200 and resp.json == {"serving": name, "project_id": 1, "previous": previous}
        assert app_client.post("/setup", json=setup).json["model_version"] == name
        head = serving_model(ctx, 1).spec.head
        assert head == (None if name == "p1-v0" else str(version_files(ctx.settings.model_dir, name)["head"]))
    assert app_client.post("/setup", json={"project": 2}).json["model_version"] == cold, "other projects unchanged"
    listed = app_client.get("/versions?project=1").json
    assert listed["serving"] == "p1-v2"
    states = {d["name"]: d["state"] for d in listed["details"]}
    assert (states["p1-v1"], states["p1-v0"]) == ("retired", "retired")
    v0 = app_client.get("/versions/p1-v0").json
    assert (v0["head_path"], v0["parent"], v0["training_summary"]) == (None, cold, {"baseline_of": cold})


def test_training_starts_from_the_serving_head_else_the_released_one_else_the_init(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import torch

    from backend.services.finetune import _initial_head
    from model.checkpoint import save_checkpoint
    from model.nets.dcpose import build_dcpose

    def marked(net: Any, value: float) -> Any:
        with torch.no_grad():
            net.diff_temporal_fuse.layers[0].conv_bn_relu1.bn.bias.fill_(value)
        return net

    def mark(net: Any) -> float:
        return float(net.diff_temporal_fuse.layers[0].conv_bn_relu1.bn.bias[0].detach())

    official = tmp_path / "official.pth"  # the released file's layout: {"state_dict": backbone + head}, tiny HRNet
    torch.save({"state_dict": marked(build_dcpose(backbone="hrnet_w8"), 0.25).state_dict()}, official)
    serving_head = tmp_path / "p1-v1.pt"
    save_checkpoint(serving_head, marked(build_dcpose(backbone=None), 0.75), version="p1-v1",
                    model_config={"backbone": "hrnet_w8", "num_joints": 17})  # fmt: skip

    def start(head: Path | None, checkpoint: Path | None, backbone: str = "hrnet_w8") -> tuple[float, str]:
        ctx = SimpleNamespace(settings=SimpleNamespace(backbone_checkpoint=checkpoint))
        serving = SimpleNamespace(name="p1-v1" if head else "cold", spec=SimpleNamespace(head=str(head) if head else None))
        net, source = _initial_head(ctx, serving, backbone)
        return mark(net), source

    assert start(serving_head, official) == (0.75, "p1-v1")
    assert start(None, official) == (0.25, "released:official.pth")
    assert start(None, None) == (0.0, "released-init")
    assert start(serving_head, None, backbone="blazepose") == (0.0, "released-init"), "a head of another backbone"
