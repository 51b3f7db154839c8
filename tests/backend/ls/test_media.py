"""Tests of backend.ls.media and the frame store's use of it: only Label Studio's media, listed hosts and roots."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from flask.testing import FlaskClient

from backend.ls.frames import FrameStore, ImageUnavailableError, LabelStudioAccess
from backend.ls.media import REFUSED, MediaPolicy
from tests.backend.conftest import SynthVideo
from tests.backend.services.test_events import CONFIG

JPEG = cv2.imencode(".jpg", np.full((8, 8, 3), 90, np.uint8))[1].tobytes()


class _Host(http.server.BaseHTTPRequestHandler):
    redirect_to = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if "redirect" in self.path:
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
            self.end_headers()
            return
        body = JPEG if self.path.startswith("/ok.jpg") else JPEG + b"\0" * 4096
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def host() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Host)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_files_outside_the_roots_are_refused_without_a_hint(tmp_path: Path) -> None:
    """On main, /predict answered 'the 1577 bytes are not a decodable image' for file:///etc/passwd."""
    root = tmp_path / "frames"
    root.mkdir()
    store = FrameStore(tmp_path / "cache", LabelStudioAccess(), MediaPolicy(roots=(root,)))
    messages = set()
    for url in ("file:///etc/passwd", "/etc/passwd", "/etc/no-such-file", f"{root}/../secret.txt", "a.jpg",
                "ftp://127.0.0.1/a.jpg", "http://169.254.169.254/latest", "/api/projects", "gopher://x"):  # fmt: skip
        with pytest.raises(ImageUnavailableError) as err:
            store.image(url)
        messages.add(err.value.reason)
    assert messages == {REFUSED}
    (root / "a.jpg").write_bytes(JPEG)
    assert store.image(str(root / "a.jpg")).shape == (8, 8, 3)
    assert store.image(f"file://{root}/a.jpg").shape == (8, 8, 3)


def test_predict_with_a_system_file_reveals_nothing(app_client: FlaskClient, synth_video: SynthVideo) -> None:
    answers = set()
    for image in ("file:///etc/passwd", "/etc/passwd", "/etc/definitely-missing"):
        task = synth_video.task(1)
        task["data"]["image"] = image
        resp = app_client.post("/predict", json={"project": 1, "label_config": CONFIG, "tasks": [task]})
        assert resp.status_code == 422, resp.json
        answers.add(resp.json["error"].replace(image, "<url>"))
        assert "bytes" not in resp.json["error"]
    assert len(answers) == 1 and REFUSED in answers.pop()


def test_listed_hosts_only_without_redirects_and_capped(host: str, tmp_path: Path) -> None:
    policy = MediaPolicy(hosts=(host,), max_bytes=len(JPEG) + 100)
    store = FrameStore(tmp_path / "cache", LabelStudioAccess(), policy)
    assert store.image(f"http://{host}/ok.jpg").shape == (8, 8, 3)
    with pytest.raises(ImageUnavailableError, match="MAX_IMAGE_MB"):
        store.image(f"http://{host}/big.jpg")
    _Host.redirect_to = "http://169.254.169.254/latest/meta-data"
    with pytest.raises(ImageUnavailableError, match="redirects are not followed"):
        store.image(f"http://{host}/redirect.jpg")
    other = FrameStore(tmp_path / "c2", LabelStudioAccess(), MediaPolicy())
    with pytest.raises(ImageUnavailableError, match="MEDIA_HOSTS"):
        other.image(f"http://{host}/ok.jpg")


def test_label_studio_redirects_stay_on_allowed_hosts(host: str, tmp_path: Path) -> None:
    access = LabelStudioAccess(f"http://{host}", "token-0123456789abcdef")
    store = FrameStore(tmp_path / "cache", access, MediaPolicy())
    _Host.redirect_to = "http://169.254.169.254/latest/meta-data"
    with pytest.raises(ImageUnavailableError, match="redirected to a place"):
        store.image("/data/upload/redirect.jpg")
    _Host.redirect_to = f"http://{host}/ok.jpg"  # on LS's own host: followed
    assert store.image("/data/upload/redirect2.jpg").shape == (8, 8, 3)


def test_frame_cache_is_an_lru_with_a_size_cap(host: str, tmp_path: Path) -> None:
    store = FrameStore(tmp_path / "cache", LabelStudioAccess(), MediaPolicy(hosts=(host,)),
                       cache_bytes=3 * len(JPEG))  # fmt: skip
    urls = [f"http://{host}/ok.jpg?n={i}" for i in range(10)]
    for url in urls:
        store.image(url)
        store.image(urls[0])  # kept warm: never the least recently used
    files = list((tmp_path / "cache").glob("??/*"))
    assert len(files) <= 3 and store.cache_path(urls[0]).is_file()
