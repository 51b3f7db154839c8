"""Tests of backend.http.versions: POST /train, version details and curves, manual promotion."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from backend.context import BackendContext
from backend.db import versions
from backend.db.session import session_scope
from backend.db.tables import Job
from backend.services.prediction import serving_model
from backend.services.version_files import version_files
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
