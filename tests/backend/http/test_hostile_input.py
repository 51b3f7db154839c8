"""Regression tests for issue 11's catalogue of hostile input: each case once failed on main (500, unbounded work,
stored garbage or an event accepted and failed later); each must now get a 4xx naming the problem."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from backend.db.session import session_scope
from backend.db.tables import Annotation, Correction, DeletedAnnotation, Task, VideoRecord, WebhookEvent
from tests.backend.conftest import SynthVideo, drain
from tests.backend.services.test_events import CONFIG, event
from tests.backend.services.test_prediction import gt_results
from tests.backend.services.test_training import RELEASE, train_function  # noqa: F401  (pytest fixture)

BIG = 2**40  # beyond PostgreSQL's INTEGER, within 64 bits
ROUTES_WITH_PROJECT = ("/setup", "/predict", "/train", "/preannotate")


def post_raw(client: FlaskClient, path: str, text: str) -> Any:
    return client.post(path, data=text, content_type="application/json")


def rows(app: Flask, table: type) -> int:
    with session_scope(app.extensions["dcpose"].sessions) as session:
        return int(session.scalar(select(func.count()).select_from(table)))


def test_huge_nframes_is_refused_before_any_work(app_client: FlaskClient, backend_app: Flask,
                                                synth_video: SynthVideo) -> None:  # fmt: skip
    task = synth_video.task(0)
    task["data"]["nframes"] = 2**40  # on main: a set over every frame number, 15 GB and no answer
    resp = app_client.post("/predict", json={"project": 1, "label_config": CONFIG, "tasks": [task]})
    assert resp.status_code == 400 and "MAX_VIDEO_FRAMES" in resp.json["error"]
    assert "nframes" in resp.json["error"] and rows(backend_app, VideoRecord) == 0


def test_too_many_tasks_in_one_predict(app_client: FlaskClient, backend_app: Flask, synth_video: SynthVideo) -> None:
    limit = backend_app.extensions["dcpose"].settings.max_predict_tasks
    tasks = [synth_video.task(0, task_id=i + 1) for i in range(limit + 1)]
    resp = app_client.post("/predict", json={"project": 1, "label_config": CONFIG, "tasks": tasks})
    assert resp.status_code == 400 and "MAX_PREDICT_TASKS" in resp.json["error"]


def test_annotation_with_hundreds_of_persons_is_refused_at_intake(app_client: FlaskClient, backend_app: Flask,
                                                                 synth_video: SynthVideo) -> None:  # fmt: skip
    base = gt_results(synth_video, 0)
    result = []
    for copy_no in range(60):  # 120 persons, like the 667-box annotation that made /predict take 44 s
        for item in base:
            clone = json.loads(json.dumps(item))
            clone["id"] = f"c{copy_no}_{clone['id']}"
            if "parentID" in clone:
                clone["parentID"] = f"c{copy_no}_{clone['parentID']}"
            result.append(clone)
    resp = app_client.post("/webhook", json=event("ANNOTATION_CREATED", 7, synth_video.task(0), result,
                                                  "2026-03-01T10:00:00Z"))  # fmt: skip
    assert resp.status_code == 400 and "MAX_PERSONS_PER_ANNOTATION" in resp.json["error"]
    assert rows(backend_app, WebhookEvent) == 0 and rows(backend_app, Annotation) == 0


def test_task_carrying_too_many_keypoints_is_refused(app_client: FlaskClient, backend_app: Flask,
                                                    synth_video: SynthVideo) -> None:  # fmt: skip
    settings = backend_app.extensions["dcpose"].settings
    task = synth_video.task(0)
    keypoints = [i for i in gt_results(synth_video, 0) if i["type"] == "keypointlabels"]
    per_annotation = keypoints * (settings.max_keypoints_per_annotation // len(keypoints))
    task["annotations"] = [{"result": per_annotation} for _ in range(3)]
    resp = app_client.post("/predict", json={"project": 1, "label_config": CONFIG, "tasks": [task]})
    assert resp.status_code == 400 and "MAX_KEYPOINTS_PER_TASK" in resp.json["error"]


@pytest.mark.parametrize("field, value", [("x", -50.0), ("x", 250.0), ("y", 1e12)])
def test_keypoints_outside_the_image_are_not_stored_as_corrections(app_client: FlaskClient, backend_app: Flask,
                                                                   synth_video: SynthVideo, field: str,
                                                                   value: float) -> None:  # fmt: skip
    result = gt_results(synth_video, 1)
    next(i for i in result if i["type"] == "keypointlabels")["value"][field] = value
    resp = app_client.post("/webhook", json=event("ANNOTATION_CREATED", 8, synth_video.task(1), result,
                                                  "2026-03-01T10:00:00Z"))  # fmt: skip
    assert resp.status_code == 400 and "outside the image" in resp.json["error"], resp.json
    assert "COORDINATE_TOLERANCE_PCT" in resp.json["error"]
    drain(backend_app)
    assert rows(backend_app, Correction) == 0 and rows(backend_app, WebhookEvent) == 0


def test_keypoint_within_the_tolerance_is_accepted(app_client: FlaskClient, backend_app: Flask,
                                                  synth_video: SynthVideo) -> None:  # fmt: skip
    result = gt_results(synth_video, 1)
    next(i for i in result if i["type"] == "keypointlabels")["value"]["x"] = 100.5
    resp = app_client.post("/webhook", json=event("ANNOTATION_CREATED", 9, synth_video.task(1), result,
                                                  "2026-03-01T10:00:00Z"))  # fmt: skip
    assert resp.status_code == 201, resp.json


@pytest.mark.parametrize("path", ["/setup", "/predict", "/webhook", "/train", "/preannotate", "/versions"])
@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_json_is_refused(app_client: FlaskClient, path: str, depth: int) -> None:
    resp = post_raw(app_client, path, '{"project": 1, "x": ' + "[" * depth + "]" * depth + "}")
    assert resp.status_code == 400 and "MAX_JSON_DEPTH" in resp.json["error"], resp.json


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_in_a_webhook_are_refused(app_client: FlaskClient, backend_app: Flask,
                                                    synth_video: SynthVideo, constant: str) -> None:  # fmt: skip
    result = gt_results(synth_video, 2)
    text = json.dumps(event("ANNOTATION_CREATED", 12, synth_video.task(2), result, "2026-03-01T10:00:00Z"))
    text = text.replace('"lead_time": 4.2', f'"lead_time": {constant}')
    resp = post_raw(app_client, "/webhook", text)
    assert resp.status_code == 400 and "finite" in resp.json["error"]
    assert rows(backend_app, WebhookEvent) == 0


@pytest.mark.parametrize("value", [2**63, 2**64, -(2**63) - 1, 0, -3, "²", "٣", "1²", True, 1.5])
@pytest.mark.parametrize("path", ROUTES_WITH_PROJECT)
def test_ids_outside_64_bit_or_not_ascii_digits_get_400(app_client: FlaskClient, synth_video: SynthVideo,
                                                       path: str, value: Any) -> None:  # fmt: skip
    body: dict[str, Any] = {"project": value, "label_config": CONFIG}
    if path == "/predict":
        body["tasks"] = [synth_video.task(0)]
    resp = app_client.post(path, json=body)
    assert resp.status_code == 400 and "project" in resp.json["error"], (value, resp.json)


@pytest.mark.parametrize("query", ["/metrics?project=", "/jobs?project=", "/jobs?limit=", "/versions?project="])
@pytest.mark.parametrize("value", [str(2**63), str(2**64), "²", "-1", "0"])
def test_query_ids_outside_64_bit_get_400(app_client: FlaskClient, query: str, value: str) -> None:
    resp = app_client.get(query + value)
    assert resp.status_code == 400 and "must be a positive integer" in resp.json["error"], resp.json


@pytest.mark.parametrize("where", ["annotation.id", "task.id", "project.id", "annotation.completed_by",
                                   "annotations[0].id"])  # fmt: skip
@pytest.mark.parametrize("value", [2**63, 2**64, "²", 0])
def test_webhook_ids_outside_64_bit_are_refused_at_intake(app_client: FlaskClient, backend_app: Flask,
                                                         synth_video: SynthVideo, where: str,
                                                         value: Any) -> None:  # fmt: skip
    if where == "annotation.completed_by" and isinstance(value, str):
        value = 2**64  # a non-integer completed_by (LS may send the user object) is not an id and is ignored
    task = synth_video.task(0)
    payload = event("ANNOTATION_CREATED", 5, task, [], "2026-03-01T10:00:00Z")
    if where == "annotations[0].id":
        payload = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": value}], "project": {"id": 1}}
    else:
        holder, key = where.split(".")
        payload[holder][key] = value
    resp = app_client.post("/webhook", json=payload)
    assert resp.status_code == 400 and where.split(".")[0].rstrip("[0]") in resp.json["error"], resp.json
    assert rows(backend_app, WebhookEvent) == 0


def test_64_bit_ids_work_on_both_databases(app_client: FlaskClient, backend_app: Flask,
                                          synth_video: SynthVideo) -> None:  # fmt: skip
    """On main, PostgreSQL answered 500 ("integer out of range") from 2**31 up while SQLite worked."""
    assert app_client.post("/setup", json={"project": BIG, "schema": CONFIG}).status_code == 200
    task = synth_video.task(3, task_id=BIG + 3, project=BIG)
    resp = app_client.post("/predict", json={"project": f"{BIG}.1700000000", "label_config": CONFIG, "tasks": [task]})
    assert resp.status_code == 200, resp.json
    payload = event("ANNOTATION_CREATED", BIG + 5, task, gt_results(synth_video, 3), "2026-03-01T10:00:00Z",
                    completed_by=BIG)  # fmt: skip
    payload["project"]["id"] = payload["task"]["project"] = payload["annotation"]["project"] = BIG
    assert app_client.post("/webhook", json=payload).status_code == 201
    deleted = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": BIG + 6}], "project": {"id": BIG}}
    assert app_client.post("/webhook", json=deleted).status_code == 201
    drain(backend_app)
    for query in (f"/metrics?project={BIG}", f"/jobs?project={BIG}", f"/versions?project={BIG}"):
        assert app_client.get(query).status_code == 200, query
    with session_scope(backend_app.extensions["dcpose"].sessions) as session:
        assert session.get(Annotation, BIG + 5).completed_by == BIG and session.get(Task, BIG + 3) is not None
        assert session.get(DeletedAnnotation, BIG + 6).project_id == BIG
        assert {e.status for e in session.scalars(select(WebhookEvent))} == {"processed"}


def test_a_delete_overtaking_its_create_is_found_by_id(app_client: FlaskClient, backend_app: Flask,
                                                      synth_video: SynthVideo) -> None:  # fmt: skip
    """Tombstones replace the scan of every stored delete payload (`events._deleted_by_event` on main)."""
    many = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": i} for i in range(1000, 3000)],
            "project": {"id": 1}}  # fmt: skip
    assert app_client.post("/webhook", json=many).status_code == 201
    task = synth_video.task(4)
    created = event("ANNOTATION_CREATED", 2500, task, gt_results(synth_video, 4), "2026-03-01T10:00:00Z")
    assert app_client.post("/webhook", json=created).status_code == 201
    drain(backend_app)
    with session_scope(backend_app.extensions["dcpose"].sessions) as session:
        assert session.get(Annotation, 2500).deleted
        assert session.scalar(select(func.count()).select_from(DeletedAnnotation)) == 2000


@pytest.mark.parametrize("field, value", [("width", 0.0), ("height", 0)])  # negative: a flipped box, read as drawn
@pytest.mark.parametrize("with_keypoints", [False, True])
def test_a_person_box_without_area_is_refused_not_dropped(app_client: FlaskClient, backend_app: Flask,
                                                          synth_video: SynthVideo, field: str, value: float,
                                                          with_keypoints: bool) -> None:  # fmt: skip
    """On main, /predict answered 200 with an empty result and "its human labels hold no person" (boxes only),
    or predicted around the box (with keypoints), and the webhook stored the box with its zero or negative
    extent as a human label."""
    result = [i for i in gt_results(synth_video, 1) if with_keypoints or i["type"] != "keypointlabels"]
    box = next(i for i in result if i["type"] == "rectanglelabels")
    box["value"][field] = value
    task = synth_video.task(1, annotations=[{"id": 5, "result": result}])
    resp = app_client.post("/predict", json={"project": 1, "label_config": CONFIG, "tasks": [task]})
    assert resp.status_code == 400, resp.json
    assert f"value.{field} is {value}: a person box needs an area" in resp.json["error"], resp.json
    assert f"region id {box['id']!r}" in resp.json["error"] and "task 101" in resp.json["error"]
    resp = app_client.post("/webhook", json=event("ANNOTATION_CREATED", 10, synth_video.task(1), result,
                                                  "2026-03-01T10:00:00Z"))  # fmt: skip
    assert resp.status_code == 400 and f"value.{field} is {value}: a person" in resp.json["error"], resp.json
    assert f"region id {box['id']!r}" in resp.json["error"]
    drain(backend_app)
    assert rows(backend_app, WebhookEvent) == 0 and rows(backend_app, Annotation) == 0


@pytest.mark.parametrize("key", ["annotations", "drafts"])
def test_a_result_that_is_not_a_list_is_refused_not_ignored(app_client: FlaskClient, synth_video: SynthVideo,
                                                            key: str) -> None:  # fmt: skip
    """On main, an annotation whose result was an object was skipped: /predict answered 200 as if the frame
    had no human labels."""
    regions = {item["id"]: item for item in gt_results(synth_video, 1)}
    task = synth_video.task(1, **{key: [{"id": 5, "result": []}, {"id": 6, "result": regions}]})
    resp = app_client.post("/predict", json={"project": 1, "label_config": CONFIG, "tasks": [task]})
    assert resp.status_code == 400, resp.json
    assert resp.json["error"] == f"task 101: {key}[1].result: must be a list of region objects, got dict"
    task = synth_video.task(1, **{key: {"result": list(regions.values())}})
    resp = app_client.post("/predict", json={"project": 1, "label_config": CONFIG, "tasks": [task]})
    assert resp.status_code == 400 and resp.json["error"] == f"task 101: {key}: must be a list, got dict"
    resp = app_client.post("/webhook", json=event("ANNOTATION_CREATED", 11, synth_video.task(1), regions,
                                                  "2026-03-01T10:00:00Z"))  # fmt: skip
    assert resp.status_code == 400 and "annotation.result must be a list" in resp.json["error"], resp.json


def _with_lone_surrogate(body: dict[str, Any], marker: str) -> str:
    """`body` as JSON text with `marker` (a string value or key in it) spelled as a lone UTF-16 surrogate."""
    text = json.dumps(body)
    assert text.count(marker) == 1, marker
    return text.replace(marker, "\\ud800")


@pytest.mark.parametrize("path, where", [
    ("/predict", "tasks[0].data.video_id"),
    ("/predict", "a key in tasks[0].data"),
    ("/setup", "schema"),
    ("/webhook", "task.data.image"),
    ("/webhook", "annotation.result[0].from_name"),
    ("/train", "a key in config"),
    ("/preannotate", "video_id"),
])  # fmt: skip
def test_a_lone_surrogate_in_a_string_gets_400_naming_its_place(app_client: FlaskClient, backend_app: Flask,
                                                                synth_video: SynthVideo, path: str,
                                                                where: str) -> None:  # fmt: skip
    """JSON may spell a lone UTF-16 surrogate ("\\ud800"); it parses, but no UTF-8 encoder takes it. On main,
    /predict and /setup answered 500 (UnicodeEncodeError while storing the task or the config), the webhook
    was acknowledged with 201 and its event failed in the background (the annotation was never stored), and
    /train and /preannotate queued jobs carrying it."""
    task = synth_video.task(1)
    task["data"].update(video_id="VIDEO-MARK", extra="KEY-MARK")
    result = gt_results(synth_video, 1)
    result[0]["from_name"] = "FROM-MARK"
    bodies: dict[str, dict[str, Any]] = {
        "/predict": {"project": 1, "label_config": CONFIG, "tasks": [task]},
        "/setup": {"project": 1, "schema": "SCHEMA-MARK"},
        "/webhook": event("ANNOTATION_CREATED", 15, dict(task, data=dict(task["data"], image="IMAGE-MARK")), result,
                          "2026-03-01T10:00:00Z"),
        "/train": {"project": 1, "config": {"KEY-MARK": 1}},
        "/preannotate": {"project": 1, "video_id": "VIDEO-MARK"},
    }
    marker = {"tasks[0].data.video_id": "VIDEO-MARK", "a key in tasks[0].data": "extra", "schema": "SCHEMA-MARK",
              "task.data.image": "IMAGE-MARK", "annotation.result[0].from_name": "FROM-MARK",
              "a key in config": "KEY-MARK", "video_id": "VIDEO-MARK"}[where]  # fmt: skip
    resp = post_raw(app_client, path, _with_lone_surrogate(bodies[path], marker))
    assert resp.status_code == 400, resp.json
    assert resp.json["error"].startswith(f"{where}: strings must be valid Unicode"), resp.json
    drain(backend_app)
    assert rows(backend_app, WebhookEvent) == 0 and rows(backend_app, Task) == 0
    assert app_client.get("/jobs").json["jobs"] == []


def test_surrogate_pairs_are_valid_unicode(app_client: FlaskClient, backend_app: Flask,
                                           synth_video: SynthVideo) -> None:  # fmt: skip
    """A pair ("\\ud83d\\ude00", one character) is text like any other, in every encoding JSON allows."""
    payload = {"action": "PROJECT_UPDATED", "project": {"id": 1, "title": "poses TITLE", "label_config": CONFIG}}
    text = json.dumps(payload).replace("TITLE", "\\ud83d\\ude00")
    assert post_raw(app_client, "/webhook", text).status_code == 201
    resp = app_client.post("/webhook", data=json.dumps(payload).encode("utf-16"), content_type="application/json")
    assert resp.status_code == 201, resp.json  # another event: its title differs
    spoiled = _with_lone_surrogate(payload, "TITLE").encode("utf-16")  # the escape is no ASCII byte sequence here
    resp = app_client.post("/webhook", data=spoiled, content_type="application/json")
    assert resp.status_code == 400 and resp.json["error"].startswith("project.title: strings must be valid Unicode")
    drain(backend_app)
    with session_scope(backend_app.extensions["dcpose"].sessions) as session:
        assert {e.status for e in session.scalars(select(WebhookEvent))} == {"processed"}


@pytest.mark.parametrize("title", [{"en": "poses"}, ["poses"], 7, True])
def test_a_project_title_that_is_not_a_string_is_refused_at_intake(app_client: FlaskClient, backend_app: Flask,
                                                                   title: Any) -> None:  # fmt: skip
    """On main, PROJECT_UPDATED with a non-string title was acknowledged (201); processing then raised
    (TypeError "unhashable type: 'dict'" for an object) and the event stayed "received" for ever, taking the
    other events of its batch with it, or stored the number as the title."""
    payload = {"action": "PROJECT_UPDATED", "project": {"id": 1, "title": title, "label_config": CONFIG}}
    resp = app_client.post("/webhook", json=payload)
    assert resp.status_code == 400, resp.json
    assert resp.json["error"] == f"project.title must be a string, got {type(title).__name__}"
    assert rows(backend_app, WebhookEvent) == 0
    payload["project"]["title"] = None  # absent or null: the title is left as it is
    assert app_client.post("/webhook", json=payload).status_code == 201
    drain(backend_app)
    with session_scope(backend_app.extensions["dcpose"].sessions) as session:
        assert [e.status for e in session.scalars(select(WebhookEvent))] == ["processed"]


def test_a_bulk_delete_records_its_tombstones_in_one_statement(app_client: FlaskClient,
                                                               backend_app: Flask) -> None:  # fmt: skip
    """Label Studio's Data Manager deletes many annotations in one ANNOTATIONS_DELETED. On main, the tombstones
    went in as one INSERT of 1,000 VALUES rows per thousand ids, each compiled anew (0.4 s apiece): 100,000
    ids kept the webhook (and, on SQLite, the write lock) for 22 s on SQLite and 35 s on PostgreSQL."""
    from tests.backend.services.test_event_statements import counted

    ids = list(range(1, 5001))
    payload = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": i} for i in ids], "project": {"id": 1}}
    with counted(backend_app.extensions["dcpose"].engine) as seen:
        assert app_client.post("/webhook", json=payload).status_code == 201
    inserts = [s for s in seen if s.lstrip().upper().startswith("INSERT INTO DELETED_ANNOTATIONS")]
    assert len(inserts) == 1, len(inserts)
    with session_scope(backend_app.extensions["dcpose"].sessions) as session:
        stored = session.scalars(select(DeletedAnnotation.annotation_id).order_by(DeletedAnnotation.annotation_id))
        assert list(stored) == ids


@pytest.mark.parametrize("path, where", [("/predict", "tasks[0].data.video_id"), ("/webhook", "project.title"),
                                         ("/setup", "a key in the body")])  # fmt: skip
def test_nul_in_a_string_gets_400_naming_its_place(app_client: FlaskClient, backend_app: Flask,
                                                   synth_video: SynthVideo, path: str, where: str) -> None:  # fmt: skip
    """PostgreSQL text holds no NUL. On main, /predict answered 500 there (DataError storing the video key),
    and PROJECT_UPDATED was acknowledged with 201 and its event failed in the background."""
    task = synth_video.task(1)
    task["data"]["video_id"] = "MARK"
    bodies: dict[str, dict[str, Any]] = {
        "/predict": {"project": 1, "label_config": CONFIG, "tasks": [task]},
        "/webhook": {"action": "PROJECT_UPDATED", "project": {"id": 1, "title": "MARK", "label_config": CONFIG}},
        "/setup": {"project": 1, "schema": CONFIG, "MARK": 1},
    }
    resp = post_raw(app_client, path, json.dumps(bodies[path]).replace("MARK", "v\\u0000"))
    assert resp.status_code == 400, resp.json
    assert resp.json["error"].startswith(f"{where}: strings must not contain NUL"), resp.json
    drain(backend_app)
    assert rows(backend_app, WebhookEvent) == 0 and rows(backend_app, Task) == 0


@pytest.mark.parametrize("method, url", [("GET", "/jobs?state=%00"), ("GET", "/jobs?kind=train%00"),
                                         ("GET", "/jobs/a%00b"), ("GET", "/versions/p1-v1%00"),
                                         ("GET", "/versions/p1-v1%00/curve.png"),
                                         ("POST", "/versions/p1-v1%00/promote"), ("GET", "/metrics?x%00=1")])  # fmt: skip
def test_nul_in_the_url_gets_400(app_client: FlaskClient, method: str, url: str) -> None:
    """On main, PostgreSQL answered 500 (DataError: text holds no NUL) for job and version lookups and filters."""
    resp = app_client.open(url, method=method)
    assert resp.status_code == 400, resp.json
    assert resp.json["error"] == "the URL path and query must not contain NUL (%00)"


@pytest.mark.parametrize("size", [10_001, 30_000])
def test_a_chunked_body_beyond_the_limit_gets_413_not_a_truncated_read(app_client: FlaskClient, backend_app: Flask,
                                                                        size: int) -> None:  # fmt: skip
    """A chunked body has no Content-Length to check up front. On main, Werkzeug's read stopped at
    MAX_REQUEST_MB without a word: the first MAX_REQUEST_MB of a well-formed body were parsed and refused as
    "malformed JSON: Unterminated string ..." (or, ended by blanks, taken as the whole body)."""
    backend_app.config["MAX_CONTENT_LENGTH"] = 10_000  # MAX_REQUEST_MB, in bytes
    payload = {"action": "PROJECT_UPDATED", "project": {"id": 1, "title": "", "label_config": CONFIG}}
    text = json.dumps(payload)
    text = text.replace('"title": ""', '"title": "' + "x" * (size - len(text)) + '"')
    assert len(text) == size

    def chunked(body: str) -> Any:
        return app_client.post("/webhook", input_stream=io.BytesIO(body.encode()), content_type="application/json",
                               headers={"Transfer-Encoding": "chunked"},
                               environ_overrides={"wsgi.input_terminated": True})  # as the servers set it  # fmt: skip

    resp = chunked(text)
    assert resp.status_code == 413, resp.json
    assert resp.json["error"] == "the request body is larger than MAX_REQUEST_MB (0.00953674 MB)"
    resp = app_client.post("/webhook", data=text, content_type="application/json")  # with Content-Length
    assert resp.status_code == 413 and "MAX_REQUEST_MB" in resp.json["error"], resp.json
    assert rows(backend_app, WebhookEvent) == 0
    resp = chunked(json.dumps({"action": "PROJECT_UPDATED", "project": {"id": 1, "title": "short"}}))
    assert resp.status_code == 201, resp.json


def test_a_password_in_setups_hostname_stays_out_of_answers_and_logs(app_client: FlaskClient, backend_app: Flask,
                                                                     synth_video: SynthVideo,
                                                                     caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """On main, /predict answered (and logged) "cannot reach http://admin:<password>@127.0.0.1:9 ..." when the
    Label Studio URL learnt from /setup carried user-info, and the background sync logged it too."""
    secret = "host-PASSWORD-42"
    setup = {"project": 1, "schema": CONFIG, "hostname": f"http://admin:{secret}@127.0.0.1:9", "access_token": "t"}
    assert app_client.post("/setup", json=setup).status_code == 200
    task = synth_video.task(1)
    task["data"]["image"] = "/data/local-files/?d=frames/000001.jpg"  # Label Studio's media: fetched from it
    resp = app_client.post("/predict", json={"project": 1, "label_config": CONFIG, "tasks": [task]})
    assert resp.status_code == 422 and "cannot reach http://admin:***@127.0.0.1:9" in resp.json["error"], resp.json
    drain(backend_app)
    assert secret not in resp.get_data(as_text=True)
    assert "admin:***@127.0.0.1:9" in caplog.text and secret not in caplog.text


@pytest.mark.parametrize("field, value, error", [
    ("tasks", list(range(1, 1002)), "'tasks': 1001 task ids exceed MAX_PREDICT_TASKS=1000; pre-annotate a whole "
                                    "video ('video_id') or project instead"),
    ("video_id", "v" * 513, "'video_id' is 513 characters long; at most 512"),
])  # fmt: skip
def test_preannotate_parameters_are_bounded(app_client: FlaskClient, field: str, value: Any, error: str) -> None:
    """The job keeps its parameters, and /jobs and the status page show them. On main, 2,000,000 task ids were
    taken (202, 7 s): 17 MB in the job row, sent again with every GET /jobs (the status page polls it)."""
    setup = {"project": 1, "schema": CONFIG, "hostname": "http://127.0.0.1:9", "access_token": "t"}
    assert app_client.post("/setup", json=setup).status_code == 200  # Label Studio known: jobs may be queued
    resp = app_client.post("/preannotate", json={"project": 1, field: value})
    assert resp.status_code == 400 and resp.json["error"] == error, resp.json
    assert app_client.get("/jobs").json["jobs"] == []


@pytest.mark.parametrize("action", ["PROJECT_UPDATED", "ANNOTATION_CREATED"])
@pytest.mark.parametrize("title, error", [("t" * 513, "project.title is 513 characters long; at most 512"),
                                          ({"en": "poses"}, "project.title must be a string, got dict")])  # fmt: skip
def test_a_stored_project_title_is_checked_at_intake(app_client: FlaskClient, backend_app: Flask,
                                                     synth_video: SynthVideo, action: str, title: Any,
                                                     error: str) -> None:  # fmt: skip
    """Both actions store the project's title (VARCHAR(512) on PostgreSQL). On main, they were acknowledged
    (201); on PostgreSQL a long title failed the event ("value too long"), and an object failed the batch
    on any database (TypeError), leaving its events "received"."""
    if action == "PROJECT_UPDATED":
        payload: dict[str, Any] = {"action": action, "project": {"id": 1, "title": title, "label_config": CONFIG}}
    else:
        payload = event(action, 16, synth_video.task(1), gt_results(synth_video, 1), "2026-03-01T10:00:00Z")
        payload["project"]["title"] = title
    resp = app_client.post("/webhook", json=payload)
    assert resp.status_code == 400 and resp.json["error"] == error, resp.json
    assert rows(backend_app, WebhookEvent) == 0


@pytest.mark.parametrize("video_id", ["v" * 513, int("9" * 513)], ids=["string", "number"])
def test_a_video_id_beyond_its_column_is_refused_at_intake(app_client: FlaskClient, backend_app: Flask,
                                                           synth_video: SynthVideo, video_id: Any) -> None:  # fmt: skip
    """Videos are keyed by `data.video_id` (VARCHAR(512) on PostgreSQL). On main, PostgreSQL answered /predict
    with 500 ("value too long") and acknowledged the webhook, whose event then failed: the annotation was lost.
    A 513-digit number is beyond float range, and refused as such before its length is looked at."""
    task = synth_video.task(1)
    task["data"]["video_id"] = video_id
    number = "numbers must be within float range (about 1.8e308), got a 513-digit integer"
    resp = app_client.post("/predict", json={"project": 1, "label_config": CONFIG, "tasks": [task]})
    assert resp.status_code == 400, resp.json
    too_long = "tasks[0].data.video_id is 513 characters long; at most 512"
    assert resp.json["error"] == (too_long if isinstance(video_id, str) else number)
    payload = event("ANNOTATION_CREATED", 17, task, gt_results(synth_video, 1), "2026-03-01T10:00:00Z")
    resp = app_client.post("/webhook", json=payload)
    assert resp.status_code == 400, resp.json
    too_long = "task.data.video_id is 513 characters long; at most 512"
    assert resp.json["error"] == (too_long if isinstance(video_id, str) else number)
    drain(backend_app)
    assert rows(backend_app, WebhookEvent) == 0 and rows(backend_app, Task) == 0


@pytest.mark.parametrize("hostname", ["http://[::1", "http://admin:host-PASSWORD-42@127.0.0.1:99999",
                                      "http://admin:host-PASSWORD-42/@127.0.0.1"])  # fmt: skip
def test_an_unparsable_setup_hostname_gets_400_and_is_not_echoed(app_client: FlaskClient, backend_app: Flask,
                                                                 hostname: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """On main, /setup answered 500 (ValueError "Invalid IPv6 URL" from urlsplit in LabelStudioAccess.learn) for
    "http://[::1"; a port out of range or a typo'd password ("user:pw/@host") was learnt as Label Studio's URL and
    failed every later download."""
    resp = app_client.post("/setup", json={"project": 1, "schema": CONFIG, "hostname": hostname, "access_token": "t"})
    assert resp.status_code == 400, resp.json
    assert resp.json["error"].startswith("'hostname' must be Label Studio's URL, like http://localhost:8080")
    assert "PASSWORD" not in resp.get_data(as_text=True) and "PASSWORD" not in caplog.text
    assert backend_app.extensions["dcpose"].ls.url is None, "nothing learnt"
    resp = app_client.post("/setup", json={"project": 1, "schema": CONFIG, "hostname": 9})
    assert resp.status_code == 400 and resp.json["error"] == "'hostname' must be Label Studio's URL string, got int"
    resp = app_client.post("/setup", json={"project": 1, "schema": CONFIG, "access_token": ["PASSWORD"]})
    assert resp.status_code == 400, resp.json
    assert resp.json["error"] == "'access_token' must be Label Studio's token string, got list"
    ok = app_client.post("/setup", json={"project": 1, "schema": CONFIG, "hostname": "http://[::1]:8080"})
    assert ok.status_code == 200 and backend_app.extensions["dcpose"].ls.url == "http://[::1]:8080"


@pytest.mark.parametrize("body", [{"project": "x", "schema": CONFIG}, {"project": 1, "schema": "<View/>"}])
def test_a_refused_setup_leaves_label_studio_s_address_and_token_as_they_were(app_client: FlaskClient,
                                                                              backend_app: Flask, body: dict) -> None:  # fmt: skip
    """On main, /setup took the hostname and token before it looked at the project and the config: a /setup
    refused for its project still pointed every later download at the new address."""
    resp = app_client.post("/setup", json={**body, "hostname": "http://127.0.0.1:9", "access_token": "new-token"})
    assert resp.status_code == 400, resp.json
    assert backend_app.extensions["dcpose"].ls.url is None, "nothing learnt"


@pytest.mark.parametrize("path, text, key", [
    ("/setup", '{"project": 1, "project": 2, "schema": ""}', "project"),
    ("/webhook", '{"action": "PROJECT_UPDATED", "project": {"id": 1, "title": "a", "title": "b"}}', "title"),
    ("/train", '{"project": 1, "config": {"epochs": 1, "epochs": 10000}}', "epochs"),
])  # fmt: skip
def test_a_key_given_twice_in_a_body_gets_400(app_client: FlaskClient, backend_app: Flask, path: str, text: str,
                                              key: str) -> None:  # fmt: skip
    """JSON parsers disagree on which of two equal keys counts (Python's the last, others the first). On main the
    last one silently won: a body checked by a proxy as {"epochs": 1} trained for 10000 epochs here."""
    resp = post_raw(app_client, path, text)
    assert resp.status_code == 400, resp.json
    assert resp.json["error"] == f"duplicate key {key!r} in a JSON object; each key may appear once"
    assert rows(backend_app, WebhookEvent) == 0 and app_client.get("/jobs").json["jobs"] == []


@pytest.mark.parametrize("value", ["1.x", "1.", "1.2.3", "1.٣"])
def test_a_project_reference_whose_timestamp_is_not_digits_gets_400(app_client: FlaskClient, value: str) -> None:
    """Label Studio sends "<id>.<created_at unix>". On main anything after the first dot was dropped unread:
    "1.x" and "1.2.3" were taken as project 1."""
    resp = app_client.post("/setup", json={"project": value, "schema": CONFIG})
    assert resp.status_code == 400 and resp.json["error"].startswith("project must be an id"), resp.json
    resp = app_client.get("/jobs", query_string={"project": value})
    assert resp.status_code == 400 and "must be a positive integer" in resp.json["error"], resp.json
    assert app_client.post("/setup", json={"project": "1.1700000000", "schema": CONFIG}).status_code == 200


@pytest.mark.parametrize("query, error", [
    ("kind=trian", "query parameter kind='trian' must be one of train, preannotate"),
    ("state=runing", "query parameter state='runing' must be one of queued, running, succeeded, failed, rejected, "
                     "cancelled"),
])  # fmt: skip
def test_an_unknown_job_kind_or_state_filter_gets_400(app_client: FlaskClient, backend_app: Flask,
                                                      train_function: None, query: str, error: str) -> None:  # fmt: skip
    """On main, a typo in the filter answered 200 with an empty list, as if no job had run."""
    job_id = app_client.post("/train", json={"project": 1}).json["job"]
    resp = app_client.get(f"/jobs?{query}")
    assert resp.status_code == 400 and resp.json["error"] == error, resp.json
    assert [j["id"] for j in app_client.get("/jobs?kind=train").json["jobs"]] == [job_id]
    assert app_client.get("/jobs?kind=preannotate&state=").json["jobs"] == []  # empty: no filter
    RELEASE.set()
    assert backend_app.extensions["dcpose"].runner.drain(10)


@pytest.mark.parametrize("body, error", [
    ({"force": "false"}, "'force' must be true or false, got 'false'"),
    ({"force": 1}, "'force' must be true or false, got 1"),
    ({"video_id": ""}, "'video_id' must not be empty; leave it out to pre-annotate the whole project"),
])  # fmt: skip
def test_preannotate_force_and_video_id_are_checked(app_client: FlaskClient, body: dict[str, Any], error: str) -> None:
    """On main, "force": "false" was truthy (every task predicted again and pushed anew), and "video_id": "" queued a
    job that matched no task and succeeded having done nothing."""
    setup = {"project": 1, "schema": CONFIG, "hostname": "http://127.0.0.1:9", "access_token": "t"}
    assert app_client.post("/setup", json=setup).status_code == 200  # Label Studio known: jobs may be queued
    resp = app_client.post("/preannotate", json={"project": 1, **body})
    assert resp.status_code == 400 and resp.json["error"] == error, resp.json
    assert app_client.get("/jobs").json["jobs"] == []


@pytest.mark.parametrize("value", ["false", 0, "no"])
def test_a_was_cancelled_that_is_not_a_boolean_is_refused_at_intake(app_client: FlaskClient, backend_app: Flask,
                                                                    synth_video: SynthVideo, value: Any) -> None:  # fmt: skip
    """On main, any truthy was_cancelled ("false", "no") marked the annotation cancelled: acknowledged 201, its
    corrections dropped and its frame left out of training, without a word."""
    task = synth_video.task(1)
    payload = event("ANNOTATION_CREATED", 18, task, gt_results(synth_video, 1), "2026-03-01T10:00:00Z",
                    was_cancelled=value)  # fmt: skip
    resp = app_client.post("/webhook", json=payload)
    assert resp.status_code == 400, resp.json
    assert resp.json["error"] == f"annotation.was_cancelled must be true or false, got {value!r}"
    assert rows(backend_app, WebhookEvent) == 0
    payload["annotation"]["was_cancelled"] = False
    assert app_client.post("/webhook", json=payload).status_code == 201
    drain(backend_app)
    with session_scope(backend_app.extensions["dcpose"].sessions) as session:
        assert session.get(Annotation, 18).was_cancelled is False
        assert session.scalar(select(func.count()).select_from(Correction)) > 0


@pytest.mark.parametrize("action", ["PROJECT_UPDATED", "ANNOTATION_CREATED"])
@pytest.mark.parametrize("config", [{}, 0, False, []])
def test_a_label_config_that_is_not_text_is_refused_at_intake(app_client: FlaskClient, backend_app: Flask,
                                                              synth_video: SynthVideo, action: str,
                                                              config: Any) -> None:  # fmt: skip
    """On main, an empty object or list, 0 or false as project.label_config was taken for "no config sent" and
    acknowledged (201); a non-empty list or object was refused. Absent, null and "" still mean "no config sent"."""
    if action == "PROJECT_UPDATED":
        payload: dict[str, Any] = {"action": action, "project": {"id": 1, "title": "t", "label_config": config}}
    else:
        payload = event(action, 19, synth_video.task(1), gt_results(synth_video, 1), "2026-03-01T10:00:00Z")
        payload["project"]["label_config"] = config
    resp = app_client.post("/webhook", json=payload)
    assert resp.status_code == 400, resp.json
    assert resp.json["error"] == f"project.label_config must be the labelling config XML, got {type(config).__name__}"
    assert rows(backend_app, WebhookEvent) == 0
    payload["project"]["label_config"] = ""
    assert app_client.post("/webhook", json=payload).status_code == 201


def _many_persons(video: SynthVideo, copies: int) -> list[dict[str, Any]]:
    """Frame 1's labels repeated `copies` times under fresh region ids (2 people each)."""
    result = []
    for copy_no in range(copies):
        for item in gt_results(video, 1):
            clone = json.loads(json.dumps(item))
            clone["id"] = f"c{copy_no}_{clone['id']}"
            if "parentID" in clone:
                clone["parentID"] = f"c{copy_no}_{clone['parentID']}"
            result.append(clone)
    return result


@pytest.mark.parametrize("where", ["drafts", "context"])
def test_drafts_and_the_interactive_context_are_held_to_the_limits(app_client: FlaskClient, synth_video: SynthVideo,
                                                                   where: str) -> None:  # fmt: skip
    """A task's newest draft, or /predict's `params.context.result`, is read as its human labels. On main only
    annotations and predictions were checked: 600 boxes in a draft or the context were served (200, 1.5 s; 4,000
    boxes took 27 s), and a keypoint at x=1e9 % was taken as a human label."""
    outside = gt_results(synth_video, 1)
    outside[0]["value"]["x"] = 1e9
    for result, error in ((_many_persons(synth_video, 300), "person boxes: 600 exceeds MAX_PERSONS_PER_ANNOTATION=100"),
                          (outside, "[0].value.x=1000000000.0 is outside the image")):  # fmt: skip
        task = synth_video.task(1)
        body: dict[str, Any] = {"project": 1, "label_config": CONFIG, "tasks": [task]}
        if where == "drafts":
            task["drafts"] = [{"id": 3, "result": result}]
        else:
            body["params"] = {"context": {"result": result}}
        resp = app_client.post("/predict", json=body)
        assert resp.status_code == 400, resp.json
        prefix = "tasks[0].drafts[0].result" if where == "drafts" else "params.context.result"
        assert resp.json["error"].startswith(prefix) and error in resp.json["error"], resp.json


@pytest.mark.parametrize("path, where", [("/predict", "score"), ("/predict", "fps"), ("/webhook", "score"),
                                         ("/webhook", "fps"), ("/webhook", "track"), ("/train", "lr")])  # fmt: skip
def test_integers_beyond_float_range_are_refused(app_client: FlaskClient, backend_app: Flask,
                                                 synth_video: SynthVideo, path: str, where: str) -> None:  # fmt: skip
    """JSON integers have no size limit; 1e999 was refused (it overflows to infinity) but 1 followed by 400 zeros
    was taken. On main, /predict and /train answered 500 (OverflowError converting it to float: a region's score,
    data.fps, lr), and the webhook was acknowledged (201) and its event failed in the background: the annotation was
    lost (data.fps; a track id: "Python int too large to convert to SQLite INTEGER")."""
    task = synth_video.task(1)
    result = gt_results(synth_video, 1)
    marker = '"BIG"'
    if where == "score":
        result[0]["score"] = "BIG"
    elif where == "fps":
        task["data"]["fps"] = "BIG"
    elif where == "track":
        next(i for i in result if i["type"] == "textarea")["value"]["text"] = ["BIG"]
    bodies = {
        "/predict": {"project": 1, "label_config": CONFIG,
                     "tasks": [dict(task, annotations=[{"id": 3, "result": result}])]},
        "/webhook": event("ANNOTATION_CREATED", 20, task, result, "2026-03-01T10:00:00Z"),
        "/train": {"project": 1, "config": {"lr": "BIG"}},
    }
    resp = post_raw(app_client, path, json.dumps(bodies[path]).replace(marker, "1" + "0" * 400))
    assert resp.status_code == 400, resp.json
    assert resp.json["error"] == "numbers must be within float range (about 1.8e308), got a 401-digit integer"
    drain(backend_app)
    assert rows(backend_app, WebhookEvent) == 0 and app_client.get("/jobs").json["jobs"] == []


@pytest.mark.parametrize("track", ["3000000000", 2**31, -(2**31) - 1, 2**63])
def test_a_track_id_beyond_its_column_is_refused_at_intake(app_client: FlaskClient, backend_app: Flask,
                                                           synth_video: SynthVideo, track: Any) -> None:  # fmt: skip
    """A correction keeps the person's track id (INTEGER: 32-bit on PostgreSQL). On main, a webhook whose track id
    was 3000000000 was acknowledged (201) and its event failed ("out of range for type integer"): the annotation
    was lost; on SQLite from 2**63 on. /predict took it as a human label and carried it into its prediction."""
    task = synth_video.task(1)
    result = gt_results(synth_video, 1)
    box = next(i for i in result if i["type"] == "textarea")
    box["value"]["text"] = [track]
    error = (f"track id {int(track)} of person box {box['id']!r} is outside -2**31 to 2**31-1, the range a track "
             "id is stored in")  # fmt: skip
    resp = app_client.post("/webhook", json=event("ANNOTATION_CREATED", 21, task, result, "2026-03-01T10:00:00Z"))
    assert resp.status_code == 400 and resp.json["error"] == f"annotation 21: {error}", resp.json
    task["annotations"] = [{"id": 21, "result": result}]
    resp = app_client.post("/predict", json={"project": 1, "label_config": CONFIG, "tasks": [task]})
    assert resp.status_code == 400 and resp.json["error"] == f"task 101: {error}", resp.json
    box["value"]["text"] = [str(2**31 - 1)]  # the largest that is stored
    resp = app_client.post("/webhook", json=event("ANNOTATION_CREATED", 21, task, result, "2026-03-01T10:00:00Z"))
    assert resp.status_code == 201, resp.json
    drain(backend_app)
    with session_scope(backend_app.extensions["dcpose"].sessions) as session:
        assert [e.status for e in session.scalars(select(WebhookEvent))] == ["processed"]


def test_a_label_with_the_largest_track_id_leaves_predictions_of_its_video_working(
    app_client: FlaskClient, backend_app: Flask, synth_video: SynthVideo
) -> None:
    """2**31-1 is the largest track id stored, and accepted at intake. New people's ids lie above every known
    one: from 2**31. On main every /predict of the video got a 500 on PostgreSQL ("integer out of range" from
    taking the video's ids) once an annotation held that id; a new person would have been sent id 2**31,
    which the webhook then refuses."""
    result = gt_results(synth_video, 1)
    box = next(i for i in result if i["type"] == "textarea")
    box["value"]["text"] = [str(2**31 - 1)]
    one = [i for i in result if box["id"] in (i["id"], i.get("parentID"))]  # one person of two
    resp = app_client.post("/webhook", json=event("ANNOTATION_CREATED", 21, synth_video.task(1), one,
                                                  "2026-03-01T10:00:00Z"))  # fmt: skip
    assert resp.status_code == 201, resp.json
    drain(backend_app)
    resp = app_client.post("/predict", json={"project": 1, "label_config": CONFIG, "tasks": [synth_video.task(3)]})
    assert resp.status_code == 200, resp.json
    tracks = [i["value"]["text"] for i in resp.json["results"][0]["result"] if i["type"] == "textarea"]
    assert tracks == [[str(2**31 - 1)]]


def test_a_task_sent_twice_in_one_predict_gets_400(app_client: FlaskClient, backend_app: Flask,
                                                   synth_video: SynthVideo) -> None:  # fmt: skip
    """The answers are matched to the tasks by id. On main two tasks with id 101 (frames 1 and 4) both got the
    prediction of frame 4, with a 200, and the task row was stored as the last."""
    tasks = [synth_video.task(1), synth_video.task(4, task_id=101)]
    resp = app_client.post("/predict", json={"project": 1, "label_config": CONFIG, "tasks": tasks})
    assert resp.status_code == 400, resp.json
    assert resp.json["error"] == "tasks[1].id 101 is the id of tasks[0] too; send each task once"
    assert rows(backend_app, Task) == 0


def test_large_label_configs_are_not_kept_in_memory(app_client: FlaskClient, backend_app: Flask) -> None:
    """Every webhook carries the project's labelling config, parsed once per distinct config. On main the parsed
    configs were cached by their text (functools.lru_cache, 64 entries): each distinct config stayed in memory for
    good, up to 64 x MAX_REQUEST_MB (2 GB); 12 configs of 20 MB took the service from 740 to 1141 MB."""
    import gc
    import tracemalloc
    import uuid

    head, _, tail = CONFIG.rpartition("</View>")
    run = uuid.uuid4().hex  # configs no earlier test (or database variant) has sent
    app_client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1, "label_config": CONFIG}})
    drain(backend_app)
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(5):
            config = f"{head}<!-- {run} {i} {'x' * 2_000_000} --></View>{tail}"
            payload = {"action": "PROJECT_UPDATED", "project": {"id": 1, "title": f"t{i}", "label_config": config}}
            assert app_client.post("/webhook", json=payload).status_code == 201
        del config, payload
        drain(backend_app)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 4_000_000, f"{held / 1e6:.1f} MB still held after 5 configs of 2 MB"
