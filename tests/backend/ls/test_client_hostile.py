"""LabelStudioClient against a real local HTTP server answering as a broken or hostile Label Studio would:
HTML instead of JSON, JSON of the wrong shape, endless bodies and pages, refusals, rate limits, silence,
redirects to other hosts, connections cut mid-body. Every case must end in one LabelStudioError naming the
endpoint, in bounded time and memory, without the token."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from backend.ls.client import LabelStudioClient, LabelStudioError, retry_wait
from tests.backend.ls.test_client import LEGACY, make_jwt

Route = Callable[["_Handler"], None]


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers from the server's `routes` (path -> function writing the answer); records each request."""

    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        self.server.seen.append((self.command, url.path, dict(self.headers), body))  # type: ignore[attr-defined]
        self.query = {k: v[0] for k, v in parse_qs(url.query).items()}
        route = self.server.routes.get(url.path)  # type: ignore[attr-defined]
        if route is None:
            self.answer(404, {"detail": "Not found."})
        else:
            route(self)

    do_GET = do_POST = do_PATCH = _serve

    def answer(self, status: int, body: Any, *, headers: dict[str, str] | None = None,
               content_type: str = "application/json") -> None:  # fmt: skip
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class FakeServer:
    """A threaded HTTP server on 127.0.0.1 with per-test routes."""

    def __init__(self) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.routes = {}  # type: ignore[attr-defined]
        self.httpd.seen = []  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def routes(self) -> dict[str, Route]:
        return self.httpd.routes  # type: ignore[attr-defined]

    @property
    def seen(self) -> list[tuple[str, str, dict[str, str], bytes]]:
        return self.httpd.seen  # type: ignore[attr-defined]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture
def other_host() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.close()


def client_for(server: FakeServer, key: str = LEGACY, **kwargs: Any) -> LabelStudioClient:
    return LabelStudioClient(server.url, key, backoff=0.0, **kwargs)


def _raises(call: Callable[[], Any], *patterns: str) -> LabelStudioError:
    """The LabelStudioError `call` raises; its message holds every pattern and never the token."""
    with pytest.raises(LabelStudioError) as err:
        call()
    message = str(err.value)
    for pattern in patterns:
        assert pattern in message, message
    assert LEGACY[:6] not in message and LEGACY[-6:] not in message, message
    return err.value


def test_a_login_page_or_deep_json_instead_of_json_is_named(server: FakeServer) -> None:
    """Before: the task listing raised a bare JSONDecodeError, JSON nested 100,000 deep a RecursionError."""
    page = b"<!DOCTYPE html><html><title>Label Studio - Log in</title></html>"
    server.routes["/api/tasks"] = lambda h: h.answer(200, page, content_type="text/html")
    server.routes["/api/projects/1"] = lambda h: h.answer(200, b"[" * 100_000)
    client = client_for(server)
    _raises(lambda: client.list_tasks(1), "GET /api/tasks: 200: the response is not JSON (text/html:", "Log in")
    _raises(lambda: client.get_project(1), "GET /api/projects/1: 200: the response is not JSON")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([{"id": 1}], "expected a JSON object, got list"),
        (None, "expected a JSON object, got null"),
        ({"title": "no id"}, "'id' is missing, not a Label Studio id"),
        ({"id": "7"}, "'id' is '7', not a Label Studio id"),
        ({"id": True}, "'id' is True"),
    ],
)
def test_objects_of_the_wrong_shape_are_refused(server: FakeServer, body: Any, expected: str) -> None:
    """Before: get_project returned a list or None (preannotate then died of an AttributeError)."""
    server.routes["/api/projects/1"] = lambda h: h.answer(200, body)
    _raises(lambda: client_for(server).get_project(1), "GET /api/projects/1: ", expected)


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ({"tasks": [{"id": 1}], "total": -5}, "'total' is -5, not a task count"),
        ({"tasks": [{"id": 1}], "total": "9"}, "'total' is '9'"),
        ({"tasks": [{"id": "1"}], "total": 1}, "task 0's 'id' is '1'"),
        ({"tasks": [{"data": {}}], "total": 1}, "task 0's 'id' is missing"),
        ([None, {"id": 2}], "task 0 is null, not a JSON object"),
    ],
)
def test_task_pages_of_the_wrong_shape_are_refused(server: FakeServer, page: Any, expected: str) -> None:
    """Before: a negative total ended the listing after its first page, string ids and null tasks were yielded."""
    server.routes["/api/tasks"] = lambda h: h.answer(200, page) if h.query["page"] == "1" else h.answer(404, {})
    _raises(lambda: client_for(server).list_tasks(1, page_size=1), "GET /api/tasks: ", expected)


def test_other_lists_of_the_wrong_shape_are_refused(server: FakeServer) -> None:
    """Before: import ids "a" raised a bare ValueError; a storage listing that was no list read as no storage
    (the importer then created another one), a storage without id raised KeyError in the importer."""
    server.routes["/api/projects/1/import"] = lambda h: h.answer(201, {"task_count": 2, "task_ids": ["a", "b"]})
    server.routes["/api/storages/localfiles"] = lambda h: h.answer(200, {"detail": "moved"})
    client = client_for(server)
    _raises(lambda: client.import_tasks(1, [{"data": {}}] * 2), "a returned task id is 'a'")
    _raises(lambda: client.list_local_storages(1), "expected a list of storages, got dict")
    server.routes["/api/storages/localfiles"] = lambda h: h.answer(200, [{"path": "/frames"}])
    _raises(lambda: client.list_local_storages(1), "storage 0's 'id' is missing")


@pytest.mark.parametrize("shape", ["list", "dict"])
def test_the_same_page_again_and_again_stops_with_an_error(server: FakeServer, shape: str) -> None:
    """Before: every page was yielded again (here until the server gives up at page 50; a real loop never ends)."""

    def pages(h: _Handler) -> None:
        if int(h.query["page"]) > 50:
            h.answer(404, {"detail": "Invalid page."})
            return
        tasks = [{"id": i, "data": {}} for i in (1, 2)]
        h.answer(200, tasks if shape == "list" else {"tasks": tasks, "total": 10**9})

    server.routes["/api/tasks"] = pages
    _raises(lambda: client_for(server).list_tasks(1, page_size=2), "page 2 lists only tasks of earlier pages")
    assert len(server.seen) == 2


def test_overlapping_pages_yield_each_task_once(server: FakeServer) -> None:
    pages = {1: [1, 2], 2: [2, 3], 3: [4]}
    server.routes["/api/tasks"] = lambda h: h.answer(200, [{"id": i} for i in pages[int(h.query["page"])]])
    assert [t["id"] for t in client_for(server).list_tasks(1, page_size=2)] == [1, 2, 3, 4]


class _Endless(http.server.BaseHTTPRequestHandler):
    """A JSON list of 64 MB without a length (or one declaring 200 MB, sending a few bytes and closing)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path.startswith("/api/projects/2"):
            self.send_header("Content-Length", str(200 * 2**20))
            self.end_headers()
            self.wfile.write(b'{"id": 2, "pad": "')
            self.close_connection = True
            return
        self.send_header("Connection", "close")  # no length: the body ends when the connection does
        self.end_headers()
        self.wfile.write(b"[")
        try:
            for _ in range(1000):  # 64 MB: the client must hang up long before
                self.wfile.write(b"0," * 32768)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A local HTTP server answering with `handler`, in a thread, while the block runs; yields its URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_huge_body_is_not_read_whole() -> None:
    """Before: a body was read whole whatever its size (a 200 MB declared length, an endless stream)."""
    with _serving(_Endless) as url:
        client = LabelStudioClient(url, LEGACY, retries=0)
        _raises(lambda: client.get_project(2), "GET /api/projects/2: 200: the response is larger than 128 MB")
        small = LabelStudioClient(url, LEGACY, retries=0, max_body_bytes=2**20)
        _raises(lambda: small.get_project(1), "GET /api/projects/1: 200: the response is larger than 1 MB")


def test_a_refused_token_is_named_and_never_shown_even_cut(server: FakeServer) -> None:
    """LS may echo the token. Before: its reason was cut at 500 characters before the token was masked, so a
    token straddling the cut showed its start; the same for a non-JSON body cut at 200."""
    padding = "x" * 480  # the cut at 500 characters falls inside the token
    server.routes["/api/projects/1"] = lambda h: h.answer(401, {"detail": f"{padding} {h.headers['Authorization']}"})
    server.routes["/api/projects/2"] = lambda h: h.answer(200, f"{'y' * 180} {h.headers['Authorization']}".encode(),
                                                          content_type="text/plain")  # fmt: skip
    server.routes["/api/projects/3"] = lambda h: h.answer(403, {"detail": "You do not have permission."})
    client = client_for(server)
    _raises(lambda: client.get_project(1), "GET /api/projects/1: 401:", "was refused")
    _raises(lambda: client.get_project(2), "GET /api/projects/2: 200: the response is not JSON")
    _raises(lambda: client.get_project(3), "403: You do not have permission. (the token's user may not do this)")


def test_429_and_5xx_are_retried_within_bounds(server: FakeServer) -> None:
    """Before: a 429 or a 503 failed the call at once, even one LS asked to retry after 0 s."""
    answers: list[tuple[int, dict[str, str]]] = []

    def flaky(h: _Handler) -> None:
        status, headers = answers.pop(0) if answers else (200, {})
        h.answer(status, {"id": 1} if status == 200 else {"detail": "slow down"}, headers=headers)

    server.routes["/api/projects/1"] = server.routes["/api/predictions"] = flaky
    client = client_for(server, retries=3, max_wait=0.05)
    answers[:] = [(429, {"Retry-After": str(10**9)}), (503, {}), (429, {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"})]
    assert client.get_project(1) == {"id": 1}
    assert len(server.seen) == 4
    answers[:] = [(503, {})] * 10  # retries are bounded: 1 + 3 attempts
    _raises(lambda: client.get_project(1), "GET /api/projects/1: 503: slow down")
    assert len(server.seen) == 8
    answers[:] = [(429, {"Retry-After": "0"})]  # a POST was not processed on a 429: retried
    assert client.create_prediction(1, [])["id"] == 1
    answers[:] = [(503, {})]  # ...but not on a 503: LS may have stored it
    _raises(lambda: client.create_prediction(1, []), "POST /api/predictions: 503")
    assert len(server.seen) == 11


def test_retry_after_is_capped_and_read_in_both_forms() -> None:
    def wait(value: str) -> float:
        resp = requests.Response()
        resp.headers["Retry-After"] = value
        return retry_wait(resp, 1.5, 60.0)

    assert wait("7") == 7.0 and wait(str(10**9)) == wait("9" * 5000) == 60.0
    assert wait("Fri, 31 Dec 9999 23:59:59 GMT") == 60.0 and wait("Thu, 01 Jan 1970 00:00:00 GMT") == 0.0
    assert wait("soon") == wait("") == wait("-5") == 1.5


class _Silent(http.server.BaseHTTPRequestHandler):
    """Accepts, then sends its status line and a header byte every 0.2 s (for up to a minute), or nothing."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(300):
                self.wfile.write(b"X")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_that_never_completes_its_answer_is_cut_at_the_deadline() -> None:
    """Before: a socket timeout bounded one read only: headers dripping a byte at a time held the call a minute."""
    with _serving(_Silent) as url:
        client = LabelStudioClient(url, LEGACY, retries=1, backoff=0.0, timeout=5, deadline=1.0)
        _raises(lambda: client.get_project(1), "GET /api/projects/1: no complete answer from http://127.0.0.1:",
                "within 1 s")  # fmt: skip


def test_a_redirect_to_another_host_is_not_followed(server: FakeServer, other_host: FakeServer) -> None:
    """Before: the redirect was followed (requests drops the Authorization header there, but a 307 on the token
    refresh sent the personal access token itself, in the body, to the other host)."""
    other_host.routes["/api/projects/1"] = lambda h: h.answer(200, {"id": 1})
    other_host.routes["/api/token/refresh/"] = lambda h: h.answer(200, {"access": make_jwt({"exp": 2 * 10**9})})
    elsewhere = f"{other_host.url}/api/projects/1"
    server.routes["/api/projects/1"] = lambda h: h.answer(302, {}, headers={"Location": elsewhere})
    server.routes["/api/token/refresh/"] = lambda h: h.answer(
        307, {}, headers={"Location": f"{other_host.url}/api/token/refresh/"})  # fmt: skip
    server.routes["/api/projects/5"] = lambda h: h.answer(301, {}, headers={"Location": "/api/projects/5/"})
    server.routes["/api/projects/5/"] = lambda h: h.answer(200, {"id": 5})
    _raises(lambda: client_for(server).get_project(1), f"302: redirected to {other_host.url}, another host")
    pat = make_jwt({"token_type": "refresh", "exp": 2 * 10**9})
    error = _raises(lambda: client_for(server, key=pat).get_project(1), "POST /api/token/refresh/: 307")
    assert pat not in str(error) and other_host.seen == []
    assert client_for(server).get_project(5) == {"id": 5}  # on Label Studio's own host: followed


class _Cut(http.server.BaseHTTPRequestHandler):
    """Declares 1000 bytes, sends 20, closes."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        self.server.hits += 1  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b'{"id": 1, "title": "')
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def test_a_connection_cut_mid_body_is_retried_then_named() -> None:
    """Before: a bare requests ChunkedEncodingError escaped, never retried."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Cut)
    httpd.hits = 0  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        client = LabelStudioClient(f"http://127.0.0.1:{httpd.server_port}", LEGACY, retries=2, backoff=0.0)
        _raises(lambda: client.get_project(1), "GET /api/projects/1: the answer from http://127.0.0.1:",
                "broke off after 3 attempt(s)")  # fmt: skip
        assert httpd.hits == 3  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()
