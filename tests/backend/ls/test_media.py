"""Tests of backend.ls.media and the frame store's use of it: only Label Studio's media, listed hosts and roots."""

from __future__ import annotations

import http.server
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
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
        if self.path.startswith("/error-page.jpg"):  # a proxy's error page, labelled as the image asked for
            body = b"<!DOCTYPE html>\n<html><body><h1>502 Bad Gateway</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
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
                "ftp://127.0.0.1/a.jpg", "http://169.254.169.254/latest", "/api/projects", "gopher://x",
                "/data/upload/../../api/projects", "/data/upload/%2e%2e/%2E%2E/api/projects"):  # fmt: skip
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


def test_a_task_image_that_is_a_link_loop_gets_422(app_client: FlaskClient, synth_video: SynthVideo,
                                                    tmp_path: Path) -> None:  # fmt: skip
    """Before: Path.resolve() raised RuntimeError ("Symlink loop from ...") out of /predict: HTTP 500."""
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    status, body = _predict_image(app_client, synth_video, str(loop))
    assert status == 422 and REFUSED in body["error"], body


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


def _png(width: int, height: int, rows: int | None = None) -> bytes:
    """A grey PNG of zeros declaring `width` x `height` (only `rows` rows stored: the header is what counts)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    idat = b"".join(packer.compress(row) for _ in range(height if rows is None else rows)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _predict_image(client: FlaskClient, synth_video: SynthVideo, image: str) -> tuple[int, dict]:
    task = synth_video.task(1)
    task["data"]["image"] = image
    resp = client.post("/predict", json={"project": 1, "label_config": CONFIG, "tasks": [task]})
    return resp.status_code, resp.json


def test_decompression_bombs_are_refused_from_their_header(app_client: FlaskClient, synth_video: SynthVideo,
                                                           tmp_path: Path) -> None:  # fmt: skip
    """On main, a 1 KB PNG declaring 100000x100000 got a 500 (cv2.error), and a 0.9 MB one declaring
    30000x30000 was decoded: 4.5 GB of server memory and 30 s for one /predict."""
    (tmp_path / "64mp.png").write_bytes(_png(8000, 8000))  # 64 KB on disk, 192 MB decoded
    (tmp_path / "10gp.png").write_bytes(_png(100_000, 100_000, rows=4))
    status, body = _predict_image(app_client, synth_video, str(tmp_path / "64mp.png"))
    assert status == 422 and "8000x8000 pixels is more than MAX_IMAGE_MEGAPIXELS (50)" in body["error"], body
    status, body = _predict_image(app_client, synth_video, str(tmp_path / "10gp.png"))
    assert status == 422 and "decompression bomb" in body["error"], body
    store = FrameStore(
        tmp_path / "cache", LabelStudioAccess(), MediaPolicy(roots=(tmp_path,), max_pixels=70_000_000)
    )
    assert store.image(str(tmp_path / "64mp.png")).shape == (8000, 8000, 3)  # the cap is MAX_IMAGE_MEGAPIXELS


def test_images_under_two_pixels_a_side_are_refused(app_client: FlaskClient, synth_video: SynthVideo,
                                                    tmp_path: Path) -> None:  # fmt: skip
    """On main, a 1x1 or 500x1 task image reached the person detector: HTTP 500 "frame_bgr is too small"."""
    for height, width in ((1, 1), (1, 500), (500, 1)):
        path = tmp_path / f"{width}x{height}.png"
        cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))
        status, body = _predict_image(app_client, synth_video, str(path))
        assert status == 422 and f"{width}x{height} pixels is too small" in body["error"], body


@pytest.mark.parametrize(
    "image", ["http://[::1/a.jpg", "http://user:secret@host:99999/a.jpg", "http://h:x/a.jpg"]
)
def test_unparsable_urls_get_422_and_are_not_echoed(app_client: FlaskClient, synth_video: SynthVideo,
                                                    image: str) -> None:  # fmt: skip
    """On main, `safe_url` raised on these (invalid IPv6, port out of range): HTTP 500."""
    status, body = _predict_image(app_client, synth_video, image)
    assert status == 422 and REFUSED in body["error"], body
    assert "secret" not in str(body)


class _Drip(http.server.BaseHTTPRequestHandler):
    """Sends a large image's headers, then a byte now and then, until the client hangs up."""

    cut_short = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        try:
            for _ in range(600):  # 60 s at most
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            _Drip.cut_short.set()

    def log_message(self, *args: object) -> None:
        pass


def test_a_host_dripping_bytes_is_cut_off_at_the_download_deadline(tmp_path: Path) -> None:
    """On main, chunks of 64 KB were awaited whole: a byte every 0.1 s held /predict past LS's timeout."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        store = FrameStore(tmp_path / "cache", LabelStudioAccess(), MediaPolicy(hosts=(host,), timeout_s=1.0))
        with pytest.raises(ImageUnavailableError, match="download took longer than 1 s"):
            store.image(f"http://{host}/slow.jpg")
        assert _Drip.cut_short.wait(30), "the download went on after its deadline"
    finally:
        server.shutdown()
        server.server_close()


class _Flood(http.server.BaseHTTPRequestHandler):
    """Poses as Label Studio (or a media host): a 64 MB image or error page with no Content-Length, or a
    body cut short; records how much of each flood it got to send."""

    sent: dict[str, int] = {}
    done = threading.Semaphore(0)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.endswith("cut.jpg"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(JPEG[:10])
            return
        self.send_response(404 if "missing" in self.path else 200)
        self.end_headers()
        _Flood.sent[self.path] = 0
        try:
            for _ in range(64):
                self.wfile.write(b"\0" * (1024 * 1024))
                _Flood.sent[self.path] += 1024 * 1024
        except OSError:  # the client hung up
            pass
        finally:
            _Flood.done.release()

    def log_message(self, *args: object) -> None:
        pass


def test_label_studio_downloads_are_capped_while_they_arrive(tmp_path: Path) -> None:
    """On main, an image from Label Studio was read whole (64 MB here, any size there) before MAX_IMAGE_MB
    was checked, and so was an error page; a body cut short from a MEDIA_HOSTS host got a 500."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flood)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    policy = MediaPolicy(max_bytes=1024 * 1024)
    try:
        access = LabelStudioAccess(f"http://{host}", "token-0123456789abcdef")
        store = FrameStore(tmp_path / "cache", access, policy)
        with pytest.raises(ImageUnavailableError, match="larger than MAX_IMAGE_MB"):
            store.image("/data/upload/huge.jpg")
        with pytest.raises(ImageUnavailableError, match="HTTP 404"):
            store.image(f"http://{host}/data/upload/missing.jpg")
        for _ in range(2):
            assert _Flood.done.acquire(timeout=30), "the server is still sending"
        assert _Flood.sent["/data/upload/huge.jpg"] < 16 * 1024 * 1024, _Flood.sent
        assert _Flood.sent["/data/upload/missing.jpg"] < 16 * 1024 * 1024, _Flood.sent
        with pytest.raises(ImageUnavailableError, match="broke off"):
            store.image("/data/upload/cut.jpg")
        media = FrameStore(tmp_path / "c2", LabelStudioAccess(), MediaPolicy(hosts=(host,)))
        with pytest.raises(ImageUnavailableError, match="broke off"):
            media.image(f"http://{host}/cut.jpg")
        assert not list((tmp_path / "cache").glob("??/*")), "nothing was cached"
    finally:
        server.shutdown()
        server.server_close()


class _SlowHeaders(http.server.BaseHTTPRequestHandler):
    """Sends a status line, then one header byte every 0.1 s, until the client hangs up."""

    cut_short = threading.Semaphore(0)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(600):  # 60 s at most
                self.wfile.write(b"a")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            _SlowHeaders.cut_short.release()

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_dripping_its_headers_is_cut_off_at_the_download_deadline(tmp_path: Path) -> None:
    """On main, the deadline was checked only between body chunks and requests' timeout bounds each read: a
    server sending a header byte every 0.1 s held a download from a listed host, and one from Label Studio
    (twice, with its retry), for as long as it kept sending (hours; 20 s and 60 s for 20 s of drip)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHeaders)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        listed = FrameStore(tmp_path / "c1", LabelStudioAccess(), MediaPolicy(hosts=(host,), timeout_s=1.0))
        access = LabelStudioAccess(f"http://{host}", "token-0123456789abcdef")
        label_studio = FrameStore(tmp_path / "c2", access, MediaPolicy(timeout_s=1.0))
        for store, url in ((listed, f"http://{host}/slow.jpg"), (label_studio, "/data/upload/slow.jpg")):
            start = time.monotonic()
            with pytest.raises(ImageUnavailableError, match="download took longer than 1 s"):
                store.image(url)
            assert time.monotonic() - start < 5, url
            assert _SlowHeaders.cut_short.acquire(timeout=30), f"{url}: the server is still sending"
        assert not list(tmp_path.glob("c?/??/*")), "nothing was cached"
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_loop_is_named_as_one(host: str, tmp_path: Path) -> None:
    """On main, a Label Studio URL redirecting to itself got "redirected to a place task images may not come
    from", a place task images may come from."""
    access = LabelStudioAccess(f"http://{host}", "token-0123456789abcdef")
    store = FrameStore(tmp_path / "cache", access, MediaPolicy())
    _Host.redirect_to = "/data/upload/redirect.jpg"
    with pytest.raises(ImageUnavailableError, match=r"more than 3 redirects \(a redirect loop\?\)"):
        store.image("/data/upload/redirect.jpg")


def test_gifs_svgs_and_error_pages_get_a_message_saying_what_they_are(
    app_client: FlaskClient, synth_video: SynthVideo, host: str, tmp_path: Path
) -> None:
    """On main, every one of these was "the N bytes are not a decodable image": a still GIF too (this cv2
    reads no GIF), though Label Studio shows it; an animated one said nothing of its frames."""
    still = np.full((96, 160, 3), 60, np.uint8)
    still[:24, :24] = (0, 0, 255)  # red corner, BGR
    upright = PIL.Image.fromarray(still[:, :, ::-1])
    upright.save(tmp_path / "still.gif")
    upright.save(tmp_path / "moving.gif", save_all=True, append_images=[upright.rotate(180)], duration=100)
    (tmp_path / "vector.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>')
    store = FrameStore(tmp_path / "cache", LabelStudioAccess(), MediaPolicy(roots=(tmp_path,), hosts=(host,)))
    image = store.image(str(tmp_path / "still.gif"))
    assert image.shape == (96, 160, 3) and image[5, 5].tolist() == [0, 0, 255] and image[50, 100, 2] == 60
    status, body = _predict_image(app_client, synth_video, str(tmp_path / "still.gif"))
    assert status == 200, body
    status, body = _predict_image(app_client, synth_video, str(tmp_path / "moving.gif"))
    assert status == 422 and "an animated GIF (2 frames)" in body["error"], body
    status, body = _predict_image(app_client, synth_video, str(tmp_path / "vector.svg"))
    assert status == 422 and "an SVG (vector) image" in body["error"], body
    with pytest.raises(
        ImageUnavailableError, match=r"not a decodable image: an HTML page \(an error or login"
    ):
        store.image(f"http://{host}/error-page.jpg")
    assert not list((tmp_path / "cache").glob("??/*")), "the error page was not cached"


def test_animated_webps_and_pngs_are_refused_like_animated_gifs(tmp_path: Path) -> None:
    """Before: cv2 read the first frame of an animated WebP or PNG (APNG) and keypoints were predicted on it,
    though Label Studio (a browser) shows the animation, as it does an animated GIF (refused)."""
    still = np.full((96, 160, 3), 60, np.uint8)
    still[:24, :24] = (0, 0, 255)  # red corner, BGR
    upright = PIL.Image.fromarray(still[:, :, ::-1])
    moving = (("moving.webp", "WebP"), ("moving.png", "PNG (APNG)"))
    for name, _ in moving:
        upright.save(
            tmp_path / name, save_all=True, append_images=[upright.rotate(180)], duration=100, lossless=True
        )
    upright.save(tmp_path / "still.webp", lossless=True)
    upright.save(tmp_path / "still.png", save_all=True)  # one frame: no animation chunks
    store = FrameStore(tmp_path / "cache", LabelStudioAccess(), MediaPolicy(roots=(tmp_path,)))
    for name, kind in moving:
        with pytest.raises(
            ImageUnavailableError, match=rf"an animated {re.escape(kind)} \(2 frames\): Label Studio"
        ):
            store.image(str(tmp_path / name))
    for name in ("still.webp", "still.png"):
        image = store.image(str(tmp_path / name))
        assert image.shape == (96, 160, 3) and image[5, 5].tolist() == [0, 0, 255], name
