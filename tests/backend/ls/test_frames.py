"""Task images as cameras, tools and mistakes leave them, through /predict on a real server with the real
BlazePose model: panoramas, EXIF-rotated photos, a named pipe."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
import requests
from werkzeug.serving import make_server

from annotation_io.label_studio import label_config, task_data
from backend.app import create_app
from backend.settings import Settings

CONFIG = label_config()
# one skier, 640x425
PHOTO = Path(__file__).resolve().parents[2] / "assets/real-stills/images/val/coco_000000000785/000000.jpg"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(URL, the folder task images may be read from) of the service with its default model (BlazePose)."""
    root = tmp_path_factory.mktemp("frames")
    images = root / "images"
    images.mkdir()
    settings = Settings(data_dir=root / "data", database_url=f"sqlite:///{root / 'backend.db'}",
                        frame_cache_dir=root / "cache", media_roots=(images,))  # fmt: skip
    app = create_app(settings)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{http.port}", images
    finally:
        http.shutdown()
        http.server_close()
        app.extensions["dcpose"].close()


def _predict(url: str, image: Path, task_id: int, timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
    """/predict of one task showing `image` (a one-frame video of its own)."""
    data = task_data(str(image), image.stem, 0, 1)
    task = {"id": task_id, "data": data, "annotations": [], "predictions": []}
    body = {"project": 1, "label_config": CONFIG, "tasks": [task]}
    resp = requests.post(f"{url}/predict", json=body, timeout=timeout)
    return resp.status_code, resp.json()


def test_panoramas_too_thin_for_the_person_detector_get_an_empty_prediction(
    server: tuple[str, Path],
) -> None:
    """Before: HTTP 500: HOG scaled a 20000x10 image to 800x0 and cv2.resize raised ("!dsize.empty()")."""
    url, images = server
    for task_id, (width, height) in enumerate([(20000, 10), (10, 20000), (20000, 3)], start=1):
        path = images / f"strip_{width}x{height}.png"
        PIL.Image.new("RGB", (width, height), (90, 90, 90)).save(path)
        status, body = _predict(url, path, task_id)
        assert status == 200, body
        (answer,) = body["results"]
        assert answer["result"] == [] and "no person found" in answer["meta"]["reason"], answer


def test_an_exif_rotated_photo_is_predicted_where_label_studio_shows_the_person(
    server: tuple[str, Path],
) -> None:
    """A JPEG stored sideways with EXIF orientation 6 or 8 is shown upright by Label Studio (the browser
    applies the orientation): the keypoints' percentages and original_width/height are the upright photo's."""
    url, images = server
    upright = PIL.Image.open(PHOTO)
    upright.save(images / "upright.jpg", quality=95)
    for orientation, turn in ((6, PIL.Image.Transpose.ROTATE_90), (8, PIL.Image.Transpose.ROTATE_270)):
        exif = PIL.Image.Exif()
        exif[0x0112] = orientation
        upright.transpose(turn).save(images / f"exif{orientation}.jpg", quality=95, exif=exif.tobytes())
    points = {}
    for task_id, name in enumerate(("upright", "exif6", "exif8"), start=10):
        status, body = _predict(url, images / f"{name}.jpg", task_id)
        assert status == 200, body
        items = [i for i in body["results"][0]["result"] if i["type"] == "keypointlabels"]
        assert items and {(i["original_width"], i["original_height"]) for i in items} == {(640, 425)}, name
        points[name] = {i["value"]["keypointlabels"][0]: (i["value"]["x"], i["value"]["y"]) for i in items}
    nose = points["upright"]["nose"]
    assert 47 < nose[0] < 66 and 9 < nose[1] < 31, nose  # on the skier's face (percent of 640x425)
    for name in ("exif6", "exif8"):
        assert points[name].keys() == points["upright"].keys(), name
        ref = points["upright"]
        moved = max(np.hypot(x - ref[k][0], y - ref[k][1]) for k, (x, y) in points[name].items())
        assert moved < 1.5, (name, moved)  # percent of the image: re-encoding the JPEG moves a joint a little


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_under_media_roots_is_refused_at_once(server: tuple[str, Path]) -> None:
    """Before: reading it waited for a writer: the request never came back (its thread held for ever)."""
    url, images = server
    pipe = images / "pipe.jpg"
    os.mkfifo(pipe)
    try:
        status, body = _predict(url, pipe, 30, timeout=10)
        assert status == 422 and "not a regular file" in body["error"], body
    finally:
        try:  # a reader still waiting (the old code) gets its writer, and with it an end of file
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
