"""Tests of backend.http.versions: POST /train, version details and curves, manual promotion."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from backend.context import BackendContext
from backend.db import versions
from backend.db.session import session_scope
from backend.db.tables import Job
from backend.services import training
from backend.services.prediction import serving_model
from backend.services.version_files import version_files
from backend.settings import Settings
from tests.backend.conftest import SynthVideo
from tests.backend.services.test_training import RELEASE, train_function  # noqa: F401  (pytest fixture)


def test_post_train_validates_queues_and_coalesces(app_client: FlaskClient, backend_app: Flask,
                                                   train_function: None) -> None:  # fmt: skip
    for body, reason in ((None, "expected a JSON object"), ({}, "'project'"), ({"project": "x"}, "project must be"),
                         ({"project": 1, "config": [1]}, "'config' must be an object"),
                         ({"project": 1, "config": {"epoch": 1}}, r"unknown key\(s\) \['epoch'\]"),
                         ({"project": 1, "config": {"lr": 0}}, "'lr' must be a number above 0")):  # fmt: skip
        resp = (
            app_client.post("/train", json=body) if body is not None else app_client.post("/train", data="x")
        )
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


@pytest.mark.parametrize("option, value, bound", [
    ("epochs", 100_000_000, "from 1 to 10000"), ("epochs", 10_001, "from 1 to 10000"),
    ("batch_size", 10**9, "from 1 to 1024"), ("distance", 10**6, "from 1 to 100"),
    ("seed", -1, "from 0 to 4294967295"), ("seed", 2**64, "from 0 to 4294967295"),
    ("seed", "7", "an integer"),
    ("lr", 1e6, "at most 1"), ("augment", "no", "true or false"), ("amp", 1, "true or false"),
    ("device", "tpu", "cpu, cuda, cuda:N or auto"), ("device", 0, "cpu, cuda, cuda:N or auto"),
    ("device", "cuda:" + "9" * 20, "cpu, cuda, cuda:N or auto"),
])  # fmt: skip
def test_post_train_refuses_unbounded_options(app_client: FlaskClient, backend_app: Flask, train_function: None,
                                              option: str, value: object, bound: str) -> None:  # fmt: skip
    """On main, {"epochs": 100000000} was queued (a job that cannot be cancelled, running for years), as
    were a string seed, "augment": "no" (truthy) and "device": "tpu", which failed or misbehaved only in
    the job."""
    resp = app_client.post("/train", json={"project": 1, "config": {option: value}})
    assert resp.status_code == 400, resp.json
    assert f"'{option}' must be" in resp.json["error"] and bound in resp.json["error"], resp.json
    with session_scope(backend_app.extensions["dcpose"].sessions) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0, "nothing was queued"
    largest = {"epochs": 10_000, "batch_size": 1024, "distance": 100, "seed": 2**32 - 1, "lr": 1.0,
               "device": "cpu"}  # fmt: skip
    config = {option: largest.get(option, False)}
    assert app_client.post("/train", json={"project": 1, "config": config}).status_code == 202, config


def write_head(path: Path, *, backbone: str = "blazepose", version: str = "h", nan: bool = False) -> Path:
    """A DCPose head checkpoint (our format) trained for `backbone`; with `nan`, one weight is NaN."""
    import torch

    from model.checkpoint import FORMAT, save_checkpoint
    from model.nets.dcpose import build_dcpose

    head = build_dcpose(backbone=None)
    config = {"backbone": backbone, "num_joints": head.num_joints, "head": "dcpose"}
    if not nan:
        return save_checkpoint(path, head, model_config=config, version=version)
    state = head.state_dict()
    state["modulated_deform_conv_list.0.deform_conv.weight"].view(-1)[0] = float("nan")
    torch.save({"format": FORMAT, "model_config": config, "version": version, "state_dict": state, "extra": {}},
               path)  # as a writer before save_checkpoint refused NaN did, or a damaged disk  # fmt: skip
    return path


def make_version(ctx: BackendContext, name: str, *, project: int | None = 1, head: bool = True, curve: bool = True,
                 state: str = "candidate", backbone: str = "blazepose") -> Path:  # fmt: skip
    files = version_files(ctx.settings.model_dir, name)
    files["dir"].mkdir(parents=True)
    if head:
        write_head(files["head"], backbone=backbone, version=name)
    if curve:
        files["curve"].write_bytes(b"\x89PNG\r\n\x1a\nfake")
    with session_scope(ctx.sessions) as session:
        versions.create_model_version(session=session, name=name, backbone=backbone, project_id=project,
                                      head_path=str(files["head"]), state=state, metrics={"gate": {"promote": True}},
                                      training_summary={"labelled_frames": 4})  # fmt: skip
    return files["dir"]


def test_version_details_and_curve(app_client: FlaskClient, backend_app: Flask) -> None:
    ctx = backend_app.extensions["dcpose"]
    folder = make_version(ctx, "p1-v1")
    make_version(ctx, "p1-v2", curve=False)
    details = app_client.get("/versions/p1-v1").json
    assert details["name"] == "p1-v1" and details["state"] == "candidate" and details["head_exists"] is True
    assert (
        details["metrics"] == {"gate": {"promote": True}}
        and details["training_summary"]["labelled_frames"] == 4
    )
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
    assert app_client.post("/setup", json=setup).json["model_version"] == cold, (
        "refused promotions change nothing"
    )
    for name, previous in (("p1-v2", cold), ("p1-v1", "p1-v2"), ("p1-v2", "p1-v1"), ("p1-v0", "p1-v2"),
                           ("p1-v2", "p1-v0")):  # fmt: skip
        resp = app_client.post(f"/versions/{name}/promote")
        assert resp.status_code == 200 and resp.json == {
            "serving": name,
            "project_id": 1,
            "previous": previous,
        }
        assert app_client.post("/setup", json=setup).json["model_version"] == name
        head = serving_model(ctx, 1).spec.head
        assert head == (None if name == "p1-v0" else str(version_files(ctx.settings.model_dir, name)["head"]))
    assert app_client.post("/setup", json={"project": 2}).json["model_version"] == cold, (
        "other projects unchanged"
    )
    listed = app_client.get("/versions?project=1").json
    assert listed["serving"] == "p1-v2"
    states = {d["name"]: d["state"] for d in listed["details"]}
    assert (states["p1-v1"], states["p1-v0"]) == ("retired", "retired")
    v0 = app_client.get("/versions/p1-v0").json
    assert (v0["head_path"], v0["parent"], v0["training_summary"]) == (None, cold, {"baseline_of": cold})


def test_promotion_refuses_a_head_that_cannot_serve(app_client: FlaskClient, backend_app: Flask) -> None:
    """Before: only a missing head file was refused; a head with a NaN weight, a truncated file or a head
    trained on another backbone's heatmaps was promoted, and every /predict then failed (503), or
    predicted NaN."""
    ctx = backend_app.extensions["dcpose"]
    cold = serving_model(ctx, 1).name
    for name in ("p1-v1", "p1-v2", "p1-v3"):
        make_version(ctx, name)
    head = version_files(ctx.settings.model_dir, "p1-v1")["head"]
    write_head(head, nan=True)
    truncated = version_files(ctx.settings.model_dir, "p1-v2")["head"]
    truncated.write_bytes(truncated.read_bytes()[:1000])
    write_head(version_files(ctx.settings.model_dir, "p1-v3")["head"], backbone="hrnet_w48")
    for name, reason in (("p1-v1", "1 tensor(s) hold NaN or infinite values"),
                         ("p1-v2", "not a readable PyTorch checkpoint"),
                         ("p1-v3", "trained on hrnet_w48 heatmaps but the backbone is blazepose")):  # fmt: skip
        resp = app_client.post(f"/versions/{name}/promote")
        assert resp.status_code == 409, resp.json
        assert resp.json["error"].startswith(f"the head of model version '{name}' cannot serve: ")
        assert reason in resp.json["error"], resp.json
    assert serving_model(ctx, 1).name == cold, "nothing was promoted"
    with session_scope(ctx.sessions) as session:
        assert versions.get_model_version(session=session, name="p1-v0") is None


def test_a_promotion_by_hand_waits_for_the_gate_promoting_at_the_same_time(backend_app: Flask,
                                                                           db_url: str) -> None:  # fmt: skip
    """Before, on PostgreSQL: both transactions found no "p1-v0" and no serving row of the other's; the
    second failed on the unique index (IntegrityError: a 500 for POST /versions/<name>/promote, a failed
    job for the gate)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite's write transactions are exclusive (BEGIN IMMEDIATE): promotions cannot overlap")
    ctx = backend_app.extensions["dcpose"]
    make_version(ctx, "p1-v1")
    make_version(ctx, "p1-v2")
    cold = serving_model(ctx, 1).name
    outcome: dict[str, Any] = {}

    def by_hand() -> None:
        try:
            outcome["answer"] = training.promote_version(ctx, "p1-v2")
        except Exception as exc:  # reported below
            outcome["error"] = exc

    waiting = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND wait_event_type = 'Lock'")  # fmt: skip
    with session_scope(ctx.sessions) as session:  # the gate promotes p1-v1, its transaction still open
        verdict = versions.apply_gate_verdict(session=session, candidate="p1-v1", project_id=1, promote=True,
                                              judged_against=cold, gate={"reason": "better"}, holdout={},
                                              baseline_holdout={}, backbone_version="blazepose")  # fmt: skip
        assert verdict == "promoted"
        thread = threading.Thread(target=by_hand)
        thread.start()
        with ctx.sessions() as observer:
            while not observer.execute(waiting).scalar() and thread.is_alive():  # until it waits for the gate
                observer.rollback()
    thread.join()
    assert "error" not in outcome, repr(outcome.get("error"))
    assert outcome["answer"] == {"serving": "p1-v2", "project_id": 1, "previous": "p1-v1"}
    with session_scope(ctx.sessions) as session:
        states = {v.name: v.state for v in versions.list_versions(session=session, project_id=1)}
    assert states == {"p1-v0": "retired", "p1-v1": "retired", "p1-v2": "serving"}


def test_predict_names_the_serving_version_whose_head_file_is_gone(backend_settings: Settings,
                                                                   synth_video: SynthVideo) -> None:  # fmt: skip
    """Before: every /predict answered 503 "model PredictorSpec(backbone='simulated', checkpoint=None,
    head='...') cannot be loaded", naming neither the version nor what to do."""
    from backend.app import create_app
    from tests.backend.head_factory import head_factory
    from tests.backend.services.test_events import CONFIG

    app = create_app(backend_settings, predictor_factory=head_factory(synth_video))
    ctx = app.extensions["dcpose"]
    try:
        make_version(ctx, "p1-v1", backbone="simulated")
        head = version_files(ctx.settings.model_dir, "p1-v1")["head"]
        client = app.test_client()
        assert client.post("/versions/p1-v1/promote").status_code == 200
        head.unlink()  # removed by hand while it serves (its predictor not loaded yet, as after a restart)
        body = {"project": "1.1700000000", "label_config": CONFIG, "tasks": [synth_video.task(1)]}
        resp = client.post("/predict", json=body)
        assert resp.status_code == 503, resp.json
        assert resp.json["error"] == (f"serving model version 'p1-v1' cannot be loaded: checkpoint file not found: "
                                      f"{head}; promote a version whose head loads "
                                      "(POST /versions/<name>/promote)")  # fmt: skip
        assert client.post("/versions/p1-v0/promote").status_code == 200  # back to the model served before
        assert client.post("/predict", json=body).status_code == 200
    finally:
        ctx.close()
