"""Tests for model.interlace: the combing test, the combed blocks' second field interpolated, and the readers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from annotation_io.synth import Scene, make_scene, render_video
from annotation_io.types import Box, Frame, Video
from annotation_io.video import open_video
from model.bench.real import _Still
from model.interlace import (
    BLOCK,
    COMBED,
    DeinterlacedFrames,
    align_fields,
    comb_map,
    deinterlace,
    field_motion,
)
from model.transforms import CropGeometry
from tests.model.test_denoise import detector_frames

STILLS = Path(__file__).resolve().parents[1] / "assets" / "real-stills"  # four real photographs
SIZE = (320, 256)  # (W, H): 10 x 8 blocks


def _stills() -> list[np.ndarray]:
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted((STILLS / "images" / "val").glob("*/000000.jpg"))]
    assert len(images) == 4 and all(im is not None for im in images)
    return images


def _weave(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """One interlaced frame: `top`'s even rows and `bottom`'s odd rows (the second field, a field period on)."""
    out = top.copy()
    out[1::2] = bottom[1::2]
    return out


def _pan(image: np.ndarray, shift: int) -> np.ndarray:
    """`image` woven with itself moved `shift` px to the right (a camera panning between the fields)."""
    return _weave(image, np.roll(image, shift, axis=1))


def _walk(frames: int = 6, seed: int = 3) -> tuple[list[np.ndarray], list[Box]]:
    """A rendered walker over a still, textured background, unblurred: frames and the walker's box on each."""
    scene = make_scene(np.random.default_rng(seed), frames=frames, people=1, size=SIZE)
    scene = Scene(scene.size, scene.background, scene.walkers, (None,) * frames)
    out = list(render_video(scene))
    assert all(len(people) == 1 for _, people in out)
    return [f for f, _ in out], [people[0].box for _, people in out]  # type: ignore[misc]


def _blocks_of(box: Box, grow: int = 0) -> tuple[slice, slice]:
    """The block rows and columns `box` touches, `grow` blocks more on each side."""
    return (slice(max(int(box.y) // BLOCK - grow, 0), int(box.y + box.h) // BLOCK + 1 + grow),
            slice(max(int(box.x) // BLOCK - grow, 0), int(box.x + box.w) // BLOCK + 1 + grow))


def test_progressive_photographs_and_video_frames_are_handed_back_as_they_are() -> None:
    frames = _stills()
    rendered, _ = _walk()
    frames += rendered
    for image in _stills():  # the same recompressed hard, and scaled (the real stills' sizes)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 15])
        assert ok
        frames += [cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.resize(image, None, fx=0.5, fy=0.5)]
    for frame in frames:
        assert comb_map(frame).max() <= COMBED
        assert deinterlace(frame) is frame


@pytest.mark.parametrize("shift", [2, 8])
def test_a_panning_camera_s_woven_frame_gets_its_top_field(shift: int) -> None:
    for image in _stills():
        woven = _pan(image, shift)
        assert comb_map(woven).max() > COMBED
        out = deinterlace(woven)
        assert np.array_equal(out[0::2], image[0::2])  # the top field kept
        assert comb_map(out).max() <= COMBED  # and the comb gone
        if shift >= 8:  # the odd rows now near the top field's (a shift of 2 px changes them about as a row does)
            error = np.abs(out.astype(np.int16) - image)[1::2].mean()
            assert error < 0.6 * np.abs(woven.astype(np.int16) - image)[1::2].mean()


def test_a_walker_s_blocks_are_combed_and_the_still_background_keeps_both_fields() -> None:
    """A person walking past a still camera: the comb runs along the person, and only there are rows changed.
    (Each field is a rendered frame and the next but one: a fast walker.)"""
    frames, boxes = _walk()
    for t in range(0, len(frames) - 2, 2):
        woven = _weave(frames[t], frames[t + 2])
        combed = comb_map(woven) > COMBED
        around = _union(boxes[t], boxes[t + 2])
        person = np.zeros_like(combed)
        person[_blocks_of(around)] = True
        assert combed[person].any() and not combed[~person].any(), t
        out = deinterlace(woven)
        near = np.zeros(combed.shape, bool)
        near[_blocks_of(around, grow=1)] = True
        changed = np.abs(out.astype(np.int16) - woven).max(axis=2) > 0
        assert not changed[~np.kron(near, np.ones((BLOCK, BLOCK), bool))].any()  # both fields' detail kept
        ys, xs = slice(int(around.y), int(around.y + around.h)), slice(int(around.x), int(around.x + around.w))
        before = np.abs(woven[ys, xs].astype(np.int16) - frames[t][ys, xs]).mean()
        after = np.abs(out[ys, xs].astype(np.int16) - frames[t][ys, xs]).mean()
        assert after < 0.6 * before and comb_map(out).max() <= COMBED, (t, before, after)


def _union(a: Box, b: Box) -> Box:
    return Box.from_xyxy(min(a.x, b.x), min(a.y, b.y), max(a.x + a.w, b.x + b.w), max(a.y + a.h, b.y + b.h))


def test_an_interlaced_video_file_is_read_deinterlaced(tmp_path: Path) -> None:
    """Woven frames written to a real video file and decoded by the product's reader."""
    frames, boxes = _walk(frames=10)
    woven = [_weave(frames[t], frames[t + 2]) for t in range(0, 8, 2)]
    path = tmp_path / "woven.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, SIZE)
    assert writer.isOpened()
    for frame in woven:
        writer.write(frame)
    writer.release()
    with open_video(path) as source:
        reader = DeinterlacedFrames(source)
        assert (reader.num_frames, reader.width, reader.height) == (4, *SIZE)
        for i in range(reader.num_frames):
            decoded, out = source.read(i), reader.read(i)
            assert comb_map(decoded).max() > COMBED and not np.array_equal(out, decoded)
            assert np.array_equal(out, deinterlace(decoded))
            box = _union(boxes[2 * i], boxes[2 * i + 2])
            ys, xs = slice(int(box.y), int(box.y + box.h)), slice(int(box.x), int(box.x + box.w))
            truth = frames[2 * i][ys, xs].astype(np.int16)
            assert np.abs(out[ys, xs] - truth).mean() < np.abs(decoded[ys, xs] - truth).mean()
        with pytest.raises(AttributeError):
            reader.no_such_attribute  # noqa: B018


@pytest.mark.parametrize("height", [255, 256])
def test_the_top_field_is_made_whole_to_the_frame_s_edges(height: int) -> None:
    """Vertical stripes whose second field holds other stripes (nothing to align): every odd row, the first and
    the last included, is interpolated back to the stripes exactly (the interpolation keeps what does not change
    down a column)."""
    rng = np.random.default_rng(0)
    image, other = (np.repeat(rng.integers(0, 256, (1, SIZE[0], 3)).astype(np.uint8), height, axis=0) for _ in range(2))
    woven = _weave(image, other)
    assert (comb_map(woven) > COMBED).all()
    out = deinterlace(woven)
    assert out.shape == image.shape and np.array_equal(out, image)


def _moved(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """`image` as the camera sees it after the picture moved (`dx`, `dy`) px (edges reflected)."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, image.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


@pytest.mark.parametrize(("dx", "dy"), [(8.0, 0.0), (-5.5, 0.0), (3.0, 2.0), (0.0, 4.0), (6.0, -3.0)])
def test_the_fields_motion_is_read_from_a_panning_or_tilting_camera_s_frame(dx: float, dy: float) -> None:
    for image in _stills():
        got = field_motion(_weave(image, _moved(image, dx, dy)))
        assert abs(got[0] - dx) < 0.4 and got[1] == dy, (got, dx, dy)  # half-pixel shifts read up to 1/3 px off
    assert field_motion(_stills()[0]) == pytest.approx((0.0, 0.0), abs=0.2)  # a progressive frame: no motion
    assert field_motion(_stills()[0][:3]) == (0.0, 0.0)


def _interpolated(woven: np.ndarray) -> np.ndarray:
    """Every odd row the mean of the rows above and below: the top field alone, made whole."""
    out = woven.copy()
    out[1:-1:2] = ((woven[0:-2:2].astype(np.uint16) + woven[2::2] + 1) >> 1).astype(np.uint8)
    return out


@pytest.mark.parametrize(("dx", "dy"), [(8.0, 0.0), (5.0, 2.0), (-11.0, -4.0)])
def test_a_panning_camera_s_woven_frame_keeps_both_fields_aligned(dx: float, dy: float) -> None:
    """The picture moved as one between the fields: the bottom field is moved back onto the top one, so the
    frame keeps both fields' detail instead of half its rows (nearer the photograph than interpolation)."""
    for image in _stills():
        woven = _weave(image, _moved(image, dx, dy))
        out = deinterlace(woven)
        assert np.array_equal(out[0::2], image[0::2]) and comb_map(out).max() <= COMBED
        inner = (slice(1, -BLOCK, 2), slice(BLOCK, -BLOCK))  # odd rows; the edges, moved out of the picture, aside
        error = np.abs(out.astype(np.int16) - image)[inner].mean()
        halved = np.abs(_interpolated(woven).astype(np.int16) - image)[inner].mean()
        assert error < 0.2 * halved, (error, halved)  # measured 0.00-0.11
        aligned = align_fields(woven, dx, dy)  # by the true shift, everywhere
        assert np.array_equal(aligned[0::2], woven[0::2])
        assert np.abs(aligned.astype(np.int16) - image)[inner].mean() < 0.2 * halved


def test_a_caption_standing_still_over_a_pan_keeps_both_fields() -> None:
    """A caption burnt into the picture while the camera pans: the pan is aligned, the caption's rows left as
    they are (aligning them would comb it), and the blocks that hold both are interpolated."""
    image = _stills()[1]
    height = image.shape[0]
    letters = np.random.default_rng(5).integers(0, 256, (1, 4 * BLOCK, 3)).astype(np.uint8)  # upright strokes
    caption = np.repeat(letters, 3 * BLOCK, axis=0)
    y0 = (height // BLOCK - 4) * BLOCK
    where = (slice(y0, y0 + 3 * BLOCK), slice(2 * BLOCK, 6 * BLOCK))  # 3 x 4 whole blocks
    top, bottom = image.copy(), _moved(image, 8.0, 0.0)
    top[where] = bottom[where] = caption
    woven = _weave(top, bottom)
    out = deinterlace(woven)
    # Its last row aside: where a block of it is interpolated, that row's below is the picture's.
    assert np.array_equal(out[where][:-1], caption[:-1])
    rest = np.ones(image.shape[:2], bool)
    rest[y0 - BLOCK : y0 + 4 * BLOCK, BLOCK : 7 * BLOCK] = False  # the caption and the blocks around it
    rest[:, -BLOCK:] = rest[:, :BLOCK] = False
    error = np.abs(out.astype(np.int16) - top).max(axis=2)[rest].mean()
    halved = np.abs(_interpolated(woven).astype(np.int16) - top).max(axis=2)[rest].mean()
    assert error < 0.6 * halved, (error, halved)


def test_frames_that_are_not_8_bit_colour_or_too_small_are_handed_back() -> None:
    woven = _pan(_stills()[0], 8)
    for frame in (cv2.cvtColor(woven, cv2.COLOR_BGR2GRAY), woven.astype(np.float32), woven[:4], woven[:, :1]):
        assert deinterlace(frame) is frame
    assert comb_map(woven[:4]).shape == (1, -(-woven.shape[1] // BLOCK)) and not comb_map(woven[:4]).any()


class _CombMeter:
    """A backbone whose heatmaps hold the share of the most combed block of the crop it was given."""

    name = version = "comb-meter"

    def heatmaps(self, crops_bgr: np.ndarray, geoms: Sequence[CropGeometry], frame_indices: Sequence[int]) -> torch.Tensor:
        levels = [float(comb_map(np.ascontiguousarray(crop)).max()) for crop in crops_bgr]
        return torch.tensor(levels, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 17, 96, 72).contiguous()


@pytest.mark.parametrize("enabled", [True, False])
def test_the_predictor_s_detector_sees_the_deinterlaced_frame(enabled: bool) -> None:
    from model.pipeline.config import InferConfig

    woven = _pan(_stills()[1], 8)
    seen = detector_frames(_CombMeter(), InferConfig(deinterlace=enabled, denoise=False, deblur=False), woven)
    assert len(seen) == 1
    if enabled:
        assert np.array_equal(seen[0], deinterlace(woven)) and not np.array_equal(seen[0], woven)
    else:
        assert seen[0] is woven


def test_the_training_cache_computes_heatmaps_on_deinterlaced_frames() -> None:
    from model.training.heatmap_cache import FRAMES_FILTERED, BackboneHeatmapCache
    from model.training.samples import TrainSample

    class _Frames:
        def __init__(self, frames: list[np.ndarray]) -> None:
            self.frames, self.num_frames = frames, len(frames)

        def read(self, index: int) -> np.ndarray:
            return self.frames[index]

    woven = _pan(_stills()[1], 8)
    sample = TrainSample(video="v", frame=1, prev=0, next=2, margin=(1.0, 1.0), box=Box(40.0, 30.0, 200.0, 260.0),
                         keypoints=np.zeros((17, 3), np.float32))
    levels = {}
    for enabled in (True, False):
        cache = BackboneHeatmapCache(_CombMeter(), {"v": _Frames([woven] * 3)}, denoise=enabled)  # type: ignore[arg-type]
        assert cache.prefetch([sample]) == 3
        levels[enabled] = float(cache.triplet(sample)[0, 0, 0, 0])
    assert levels[False] > COMBED >= levels[True], levels
    assert "comb" in FRAMES_FILTERED


def test_a_woven_photograph_s_people_are_posed_as_on_the_photograph() -> None:
    """The real stills with the annotated boxes given, each woven with itself moved 8 px (a camera panning),
    BlazePose (bundled): measured 96 of the 103 limb joints placed within 0.1 x box diagonal deinterlaced (the
    fields aligned; 93 with the combed blocks interpolated), 81 as decoded (MoveNet: 101, 98 and 95)."""
    from model.bench.real import box_only, load_stills
    from model.bench.real_score import score_frame
    from model.pipeline.config import InferConfig
    from model.pipeline.predictor import Predictor

    stills = load_stills(STILLS)
    placed = {}
    for enabled in (True, False):
        predictor = Predictor.create("blazepose", config=InferConfig(deinterlace=enabled))
        try:
            placed[enabled] = 0
            for gt, image in stills:
                video = Video(gt.name, 1, [Frame(0, [])], width=image.shape[1], height=image.shape[0])
                out = predictor.predict_video(video, box_only(gt), reader=_Still(_pan(image, 8)))
                placed[enabled] += score_frame(gt.frames[0], out.frames[0]).joints_ok
        finally:
            predictor.close()
    assert placed[True] >= placed[False] + 12, placed  # measured +15 (+12 interpolating alone)
