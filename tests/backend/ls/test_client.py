"""LabelStudioClient: auth, secrecy, paging, retries, errors, downloads; then against a real LS (slow)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests
from requests.adapters import BaseAdapter

from annotation_io.label_studio import label_config, parse_config, persons_to_results
from annotation_io.types import Box, Person
from backend.ls.client import (
    REASON_CHARS,
    LabelStudioClient,
    LabelStudioError,
    jwt_claims,
    mask_secret,
    token_kind,
)
from tests.backend import ls_server
from tests.backend.ls_server import LabelStudioServer, label_studio  # noqa: F401  (pytest fixture)

BASE = "http://ls.test:8080"
LEGACY = "0123456789abcdef0123456789abcdef01234567"


def make_jwt(claims: dict[str, Any]) -> str:
    """An (unsigned-looking) JWT with the given payload, as LS's token shape."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


# ----------------------------------------------------------------------------- in-process transport

Handler = Callable[[requests.PreparedRequest], tuple[int, Any]]


class FakeTransport(BaseAdapter):
    """A requests adapter answering from a handler: (status, JSON body or bytes); records requests."""

    def __init__(self, handler: Handler, fail_first: int = 0) -> None:
        super().__init__()
        self.handler = handler
        self.fail_first = fail_first
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.requests.append(request)
        if self.fail_first > 0:
            self.fail_first -= 1
            raise requests.ConnectionError("connection refused (fake)")
        status, body = self.handler(request)
        resp = requests.Response()
        resp.status_code = status
        resp.request = request
        resp.url = request.url or ""
        if isinstance(body, bytes):
            resp._content = body
            resp.headers["content-type"] = "application/octet-stream"
        else:
            resp._content = json.dumps(body).encode()
            resp.headers["content-type"] = "application/json"
        resp._content_consumed = True  # read, as requests leaves a response after reading its body
        return resp

    def close(self) -> None:
        pass


def fake_client(
    handler: Handler, key: str = LEGACY, fail_first: int = 0, **kwargs: Any
) -> tuple[LabelStudioClient, FakeTransport]:
    transport = FakeTransport(handler, fail_first)
    session = requests.Session()
    session.mount("http://", transport)
    return LabelStudioClient(BASE, key, session=session, backoff=0.0, **kwargs), transport


def query(request: requests.PreparedRequest) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(request.url or "").query).items()}


# ----------------------------------------------------------------------------- fast tests


def test_token_kind_detects_jwt_shape() -> None:
    assert token_kind(LEGACY) == "legacy"
    assert token_kind(make_jwt({"token_type": "refresh", "exp": 1})) == "personal"
    assert token_kind("abc.def.ghi") == "legacy"  # three parts, but not base64 JSON
    assert jwt_claims(make_jwt({"exp": 42}))["exp"] == 42


def test_bad_construction_is_refused() -> None:
    with pytest.raises(ValueError, match="http://host:port"):
        LabelStudioClient("localhost:8080", LEGACY)
    with pytest.raises(ValueError, match="LABEL_STUDIO_API_KEY"):
        LabelStudioClient(BASE, "  ")


def test_legacy_token_header_and_secret_never_shown() -> None:
    def handler(req: requests.PreparedRequest) -> tuple[int, Any]:
        if req.url.endswith("/whoami"):
            return 200, {"id": 1, "email": "a@b"}
        # A server that echoes the credentials it got must not leak them through our error.
        return 403, {"detail": f"forbidden for {req.headers['Authorization']}"}

    client, transport = fake_client(handler)
    assert client.whoami()["id"] == 1
    assert transport.requests[0].headers["Authorization"] == f"Token {LEGACY}"
    assert LEGACY not in repr(client) and LEGACY not in str(client)
    with pytest.raises(LabelStudioError) as err:
        client.get_project(3)
    assert err.value.status == 403 and "/api/projects/3" in str(err.value)
    assert LEGACY not in str(err.value) and LEGACY not in err.value.reason
    assert mask_secret(LEGACY) in str(err.value)
    # Not even a prefix or the length (issue 11: "token FAKE...(27 chars)" reached the DB, log and /jobs).
    assert LEGACY[:4] not in str(err.value) and "chars" not in str(err.value), str(err.value)
    assert LEGACY[:4] not in repr(client) and mask_secret(LEGACY) == "***"


def test_error_reason_includes_validation_errors_and_is_truncated() -> None:
    long = "x" * (REASON_CHARS * 3)
    answers = {
        "/api/projects": (
            400,
            {"detail": "Validation error", "validation_errors": {"label_config": ["bad tag"]}},
        ),
        "/api/projects/1": (500, {"detail": long}),
    }
    client, _ = fake_client(lambda req: answers[urlsplit(req.url).path])
    with pytest.raises(LabelStudioError, match="label_config.*bad tag") as err:
        client.create_project("t", "<View/>")
    assert err.value.status == 400
    with pytest.raises(LabelStudioError) as err:
        client.get_project(1)
    assert len(err.value.reason) <= REASON_CHARS + 1 and err.value.reason.endswith("…")


class PatServer:
    """Fake LS issuing access tokens for one personal access token; the access lifetime is set per test."""

    def __init__(self, refresh: str, lifetime: float) -> None:
        self.refresh, self.lifetime, self.issued, self.revoked = refresh, lifetime, [], set()

    def __call__(self, req: requests.PreparedRequest) -> tuple[int, Any]:
        if urlsplit(req.url).path == "/api/token/refresh/":
            if json.loads(req.body)["refresh"] != self.refresh:
                return 401, {"detail": "Token is invalid or expired", "code": "token_not_valid"}
            token = make_jwt(
                {"token_type": "access", "exp": time.time() + self.lifetime, "n": len(self.issued)}
            )
            self.issued.append(token)
            return 200, {"access": token}
        auth = req.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.issued or auth[7:] in self.revoked:
            return 401, {"detail": "Given token not valid for any token type"}
        return 200, {"id": 7}


def test_personal_token_refresh_flow() -> None:
    pat = make_jwt({"token_type": "refresh", "exp": time.time() + 10**6})
    server = PatServer(pat, lifetime=3600)
    client, transport = fake_client(server, key=pat)
    assert client.kind == "personal"
    assert client.whoami()["id"] == 7 and client.whoami()["id"] == 7
    assert len(server.issued) == 1  # one access token serves both calls
    assert transport.requests[1].headers["Authorization"] == f"Bearer {server.issued[0]}"
    # The server revokes the access token: the client refreshes once on the 401 and goes on.
    server.revoked.add(server.issued[0])
    assert client.whoami()["id"] == 7
    assert len(server.issued) == 2
    assert pat not in repr(client)


def test_personal_token_refreshed_before_expiry() -> None:
    pat = make_jwt({"token_type": "refresh"})
    server = PatServer(pat, lifetime=5)  # expires within the refresh margin: renewed on every call
    client, _ = fake_client(server, key=pat)
    for _ in range(3):
        client.whoami()
    assert len(server.issued) == 3


def test_refused_personal_token_gives_clear_error_without_token() -> None:
    pat = make_jwt({"token_type": "refresh", "user": "x"})
    client, _ = fake_client(PatServer("another-token", 60), key=pat)
    with pytest.raises(LabelStudioError, match="personal access token .* was refused") as err:
        client.whoami()
    assert err.value.status == 401 and pat not in str(err.value)


@pytest.mark.parametrize("shape", ["dict", "list"])
def test_list_tasks_pages_through_both_shapes(shape: str) -> None:
    tasks = [{"id": i, "data": {}} for i in range(1, 6)]

    def handler(req: requests.PreparedRequest) -> tuple[int, Any]:
        q = query(req)
        page, size = int(q["page"]), int(q["page_size"])
        assert q["project"] == "4" and q["fields"] == "all"
        chunk = tasks[(page - 1) * size : page * size]
        if not chunk:
            return 404, {"detail": "Invalid page."}
        return 200, {"tasks": chunk, "total": len(tasks)} if shape == "dict" else chunk

    client, transport = fake_client(handler)
    assert [t["id"] for t in client.list_tasks(4, page_size=2)] == [1, 2, 3, 4, 5]
    assert len(transport.requests) == 3
    assert [t["id"] for t in client.list_tasks(4, page_size=5)] == [
        1,
        2,
        3,
        4,
        5,
    ]  # full page, then stop or 404


def test_unexpected_task_list_shape_is_an_error() -> None:
    client, _ = fake_client(lambda req: (200, {"results": []}))
    with pytest.raises(LabelStudioError, match="unexpected response shape"):
        client.list_tasks(1)


def test_a_password_in_the_label_studio_url_is_never_shown() -> None:
    """LABEL_STUDIO_URL (or /setup's hostname) may carry user-info, e.g. behind a proxy's basic auth. On main,
    "cannot reach http://admin:<password>@host" went into errors, the log and /predict's answer."""
    secret = "url-PASSWORD-42"
    transport = FakeTransport(lambda req: (200, {}), fail_first=10)
    session = requests.Session()
    session.mount("http://", transport)
    client = LabelStudioClient(f"http://admin:{secret}@ls.test:8080", LEGACY, session=session, backoff=0.0,
                               retries=1)  # fmt: skip
    with pytest.raises(LabelStudioError) as err:
        client.get_project(1)
    assert str(err.value) == "GET /api/projects/1: cannot reach http://admin:***@ls.test:8080 after 2 attempt(s): " \
                             "ConnectionError"  # fmt: skip
    assert secret not in repr(client) and "admin:***@ls.test:8080" in repr(client)
    with pytest.raises(ValueError) as bad:
        LabelStudioClient(f"ftp://admin:{secret}@ls.test", LEGACY)
    assert secret not in str(bad.value)


def test_get_is_retried_on_connection_errors_but_post_is_not() -> None:
    client, transport = fake_client(lambda req: (200, {"id": 1}), fail_first=2, retries=3)
    assert client.get_task(1) == {"id": 1}
    assert len(transport.requests) == 3
    client, transport = fake_client(lambda req: (201, {"id": 1}), fail_first=1, retries=3)
    with pytest.raises(LabelStudioError, match="cannot reach http://ls.test:8080") as err:
        client.create_prediction(1, [], 0.5, "v1")
    assert len(transport.requests) == 1 and err.value.status is None
    client, transport = fake_client(lambda req: (200, {}), fail_first=10, retries=2)
    with pytest.raises(LabelStudioError, match="after 3 attempt"):
        client.whoami()


def test_import_tasks_returns_ids_and_checks_them() -> None:
    bodies: list[Any] = []

    def handler(req: requests.PreparedRequest) -> tuple[int, Any]:
        bodies.append(json.loads(req.body))
        assert query(req)["return_task_ids"] == "true"
        n = len(bodies[-1])
        return 201, {"task_count": n, "task_ids": list(range(10, 10 + n)) if n < 3 else []}

    client, _ = fake_client(handler)
    assert client.import_tasks(2, [{"data": {"a": 1}}, {"data": {"a": 2}}]) == [10, 11]
    assert bodies[0][1] == {"data": {"a": 2}}
    with pytest.raises(LabelStudioError, match="3 task"):
        client.import_tasks(2, [{"data": {}}] * 3)
    assert client.import_tasks(2, []) == []


def test_download_resolves_urls_and_sends_auth_only_to_ls(tmp_path: Path) -> None:
    def handler(req: requests.PreparedRequest) -> tuple[int, Any]:
        if urlsplit(req.url).path.endswith("missing.jpg"):
            return 404, {"detail": "Not found"}
        return 200, req.url.encode()

    client, transport = fake_client(handler)
    assert (
        client.download("/data/local-files/?d=frames/v/000001.jpg")
        == f"{BASE}/data/local-files/?d=frames/v/000001.jpg".encode()
    )
    assert transport.requests[-1].headers["Authorization"] == f"Token {LEGACY}"
    assert client.download(f"{BASE}/data/upload/1/a.jpg") == f"{BASE}/data/upload/1/a.jpg".encode()
    assert "Authorization" in transport.requests[-1].headers
    assert client.download("http://elsewhere.test/a.jpg") == b"http://elsewhere.test/a.jpg"
    assert "Authorization" not in transport.requests[-1].headers
    image = tmp_path / "frame.jpg"
    image.write_bytes(b"\xff\xd8pixels")
    n = len(transport.requests)
    assert client.download(str(image)) == b"\xff\xd8pixels"
    assert client.download(image) == b"\xff\xd8pixels"
    assert client.download(image.as_uri()) == b"\xff\xd8pixels"
    assert len(transport.requests) == n  # local files never touch the network
    with pytest.raises(FileNotFoundError, match="nothere.jpg"):
        client.download(tmp_path / "nothere.jpg")
    with pytest.raises(LabelStudioError, match="404"):
        client.download("/data/upload/missing.jpg")
    with pytest.raises(ValueError, match="ftp"):
        client.download("ftp://host/a.jpg")


# ----------------------------------------------------------------------------- the harness itself


def fake_executable(path: Path, script: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return path


def test_harness_reports_a_server_that_dies_with_its_log(tmp_path: Path) -> None:
    exe = fake_executable(tmp_path / "bin" / "label-studio", 'echo "OperationalError: boom"; exit 3')
    with pytest.raises(RuntimeError, match="exited with 3") as err:
        ls_server.start_label_studio(exe, tmp_path, tmp_path)
    assert "OperationalError: boom" in str(err.value)


def test_harness_kills_its_process_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pid_file}; echo starting; wait"
    exe = fake_executable(tmp_path / "bin" / "label-studio", script)
    monkeypatch.setattr(ls_server, "START_TIMEOUT_S", 1.0)
    with pytest.raises(RuntimeError, match="was not up .* after 1 s") as err:
        ls_server.start_label_studio(exe, tmp_path, tmp_path)
    assert "starting" in str(err.value)
    stat = Path(f"/proc/{int(pid_file.read_text())}/stat")
    time.sleep(0.2)
    # The grandchild went with the group: gone, or a zombie waiting for init to reap it.
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_harness_reuses_an_installed_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    exe = fake_executable(venv / "bin" / "label-studio", "exit 1")
    fake_executable(venv / "bin" / "python", f"echo {ls_server.LS_VERSION}")
    assert ls_server.ensure_label_studio(venv) == exe  # no install attempted
    fake_executable(venv / "bin" / "python", "echo 1.20.0")
    assert ls_server._installed_version(exe) == "1.20.0"


# ----------------------------------------------------------------------------- real Label Studio


def _person(x: float, y: float, track: int) -> Person:
    kp = np.zeros((17, 3))
    kp[[0, 5, 6, 11, 12]] = [
        [x, y, 2],
        [x - 10, y + 20, 2],
        [x + 10, y + 20, 2],
        [x - 8, y + 50, 2],
        [x + 8, y + 50, 2],
    ]
    return Person(keypoints=kp, track_id=track, box=Box(x - 15, y - 10, 30, 70))


@pytest.fixture(scope="module")
def ls_project(label_studio: LabelStudioServer) -> tuple[LabelStudioClient, int, list[int]]:  # noqa: F811
    client = label_studio.client()
    project = client.create_project("client tests", label_config())
    tasks = [
        {
            "data": {
                "image": f"/data/local-files/?d=none/{i}.jpg",
                "video_id": "v",
                "frame_index": i,
                "nframes": 5,
            }
        }
        for i in range(5)
    ]
    return client, int(project["id"]), client.import_tasks(project["id"], tasks)


@pytest.mark.slow
def test_real_whoami_project_and_tasks(
    label_studio: LabelStudioServer, ls_project: tuple
) -> None:
    client, project, ids = ls_project
    assert client.whoami()["email"] == label_studio.username
    config = parse_config(client.get_project(project)["label_config"])
    assert config.keypoint_from_name == "kp" and len(config.joint_labels) == 15
    assert len(ids) == 5 and len(set(ids)) == 5
    paged = client.list_tasks(project, page_size=2)  # 3 pages, the last one short
    assert sorted(t["id"] for t in paged) == sorted(ids)
    assert client.get_task(ids[3])["data"]["frame_index"] == 3


@pytest.mark.slow
def test_real_annotation_lifecycle_and_export(ls_project: tuple) -> None:
    client, project, ids = ls_project
    first = persons_to_results([_person(100, 80, 1)], 320, 240)
    second = persons_to_results([_person(140, 90, 1), _person(60, 60, 2)], 320, 240)
    ann = client.create_annotation(ids[0], first, lead_time=3.5)
    assert len(ann["result"]) == len(first)
    updated = client.update_annotation(ann["id"], second)
    assert len(updated["result"]) == len(second)
    exported = {t["id"]: t for t in client.export(project)}
    assert [len(a["result"]) for a in exported[ids[0]]["annotations"]] == [len(second)]
    client.delete_annotation(ann["id"])
    assert client.get_task(ids[0])["annotations"] == []
    with pytest.raises(LabelStudioError) as err:
        client.delete_annotation(ann["id"])
    assert err.value.status == 404


@pytest.mark.slow
def test_real_prediction_is_stored(ls_project: tuple) -> None:
    client, _, ids = ls_project
    result = persons_to_results([_person(100, 80, 3)], 320, 240)
    client.create_prediction(ids[1], result, 0.75, "test-v1")
    preds = client.get_task(ids[1])["predictions"]
    assert (
        len(preds) == 1
        and preds[0]["model_version"] == "test-v1"
        and preds[0]["score"] == pytest.approx(0.75)
    )
    assert len(preds[0]["result"]) == len(result)


@pytest.mark.slow
def test_real_bad_token_is_a_401_without_the_token(label_studio: LabelStudioServer) -> None:  # noqa: F811
    wrong = "not-the-right-token-0123456789"
    with LabelStudioClient(label_studio.url, wrong) as client, pytest.raises(LabelStudioError) as err:
        client.whoami()
    assert err.value.status == 401 and wrong not in str(err.value)


@pytest.mark.slow
def test_real_personal_access_token(label_studio: LabelStudioServer) -> None:  # noqa: F811
    # LS 1.23.2 hands out one personal access token per user (POST again gives 409).
    pat = label_studio.client().request("POST", "/api/token/")["token"]
    with LabelStudioClient(label_studio.url, pat) as client:
        assert client.kind == "personal"
        assert client.whoami()["email"] == label_studio.username
        client._access = make_jwt(
            {"token_type": "access", "exp": time.time() + 3600}
        )  # forged: LS answers 401
        assert client.whoami()["email"] == label_studio.username  # refreshed once on the 401
    forged = make_jwt({"token_type": "refresh", "exp": time.time() + 3600, "user_id": "1"})
    with LabelStudioClient(label_studio.url, forged) as client:
        with pytest.raises(LabelStudioError, match="refused") as err:
            client.whoami()
    assert err.value.status == 401 and forged not in str(err.value)


@pytest.mark.slow
def test_real_local_files_download(label_studio: LabelStudioServer, ls_project: tuple) -> None:  # noqa: F811
    client, project, _ = ls_project
    folder = label_studio.document_root / "client-test"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    url = "/data/local-files/?d=client-test/a.jpg"
    with pytest.raises(LabelStudioError):  # no storage covers the folder yet: LS refuses to serve it
        client.download(url)
    storage = client.create_local_storage(project, folder)
    assert any(s["id"] == storage["id"] for s in client.list_local_storages(project))
    assert client.download(url) == b"\xff\xd8 not really a jpeg"
    assert len(client.list_tasks(project)) == 5  # creating the storage did not sync files into tasks


@pytest.fixture()
def stub_backend() -> Iterator[str]:
    """A minimal ML backend (health/setup/predict) on a free port, served from a thread."""
    from flask import Flask, request
    from werkzeug.serving import make_server

    app = Flask("stub")
    result = persons_to_results([_person(50, 50, 1)], 320, 240)

    @app.get("/health")
    def health() -> dict:
        return {"status": "UP"}

    @app.post("/setup")
    def setup() -> dict:
        return {"model_version": "stub-1"}

    @app.post("/predict")
    def predict() -> dict:
        tasks = request.get_json()["tasks"]
        return {"results": [{"result": result, "score": 0.5, "model_version": "stub-1"} for _ in tasks]}

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.mark.slow
def test_real_ml_backend_and_retrieve_predictions_action(ls_project: tuple, stub_backend: str) -> None:
    client, project, ids = ls_project
    ml = client.add_ml_backend(project, stub_backend, "stub")
    assert ml["url"] == stub_backend
    client.dm_action(project, "retrieve_tasks_predictions", ids[2:4])
    # Listing does not trigger predictions (opening a task with GET /api/tasks/{id} would).
    counts = {t["id"]: t["total_predictions"] for t in client.list_tasks(project, fields="task_only")}
    assert [counts[i] for i in ids[2:]] == [1, 1, 0]
    for task_id in ids[2:4]:
        assert [p["model_version"] for p in client.get_task(task_id)["predictions"]] == ["stub-1"]
