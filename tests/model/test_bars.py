"""Tests for model.bars: black bars around real photographs found and trimmed, dark scenes left whole, soft bars
(a blurred copy of the picture, flat bars of any colour) found where two of them mirror each other, and the
predictor's detectors and noise filter looking at the picture inside the bars."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from annotation_io.types import Box
from model.backbones.movenet_weights import DEFAULT_WEIGHTS
from model.bars import DARK, MIN_BAR, MIN_PICTURE, picture_area
from model.denoise import NOISE_FLOOR, denoise, noise_sigma
from scripts.barred_stills import soft_background

STILLS = Path(__file__).resolve().parents[1] / "assets" / "real-stills" / "images" / "val"  # four real photographs
JPEG_EDGE = 16  # a JPEG's 8x8 blocks ring into the bar beside the picture: the trim may stop this far out


def _stills() -> list[np.ndarray]:
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted(STILLS.glob("*/000000.jpg"))]
    assert len(images) == 4 and all(im is not None for im in images)
    return images


def _jpeg(frame: np.ndarray, quality: int = 80) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)


def _in_bars(image: np.ndarray, width: int, height: int, level: int | str = 0) -> tuple[np.ndarray, tuple[int, int]]:
    """`image` centred in a (height, width) frame of bars at `level` (or "blurred": over a blurred, dimmed copy of
    itself enlarged to fill the frame, as social media shows phone video), and where it lies (left, top)."""
    h, w = image.shape[:2]
    left, top = (width - w) // 2, (height - h) // 2
    if level == "blurred":
        frame = soft_background(image, width, height)
    else:
        frame = np.full((height, width, 3), level, np.uint8)
    frame[top : top + h, left : left + w] = image
    return frame, (left, top)


def _portrait(image: np.ndarray) -> np.ndarray:
    """A 9:16 strip of the photograph, as a phone films it."""
    h, w = image.shape[:2]
    side = int(h * 9 / 16)
    return np.ascontiguousarray(image[:, (w - side) // 2 : (w - side) // 2 + side])


def _assert_picture(area: tuple[int, int, int, int] | None, frame: np.ndarray, image: np.ndarray,
                    at: tuple[int, int]) -> None:  # fmt: skip
    """The area holds all of the picture, and of each bar all but the JPEG's ringing beside the picture."""
    assert area is not None
    (x0, y0, x1, y1), (left, top), (h, w) = area, at, image.shape[:2]
    right, bottom = frame.shape[1] - left - w, frame.shape[0] - top - h
    for trimmed, bar in ((x0, left), (y0, top), (frame.shape[1] - x1, right), (frame.shape[0] - y1, bottom)):
        assert max(bar - JPEG_EDGE, 0) <= trimmed <= bar, (area, at, frame.shape)


@pytest.mark.parametrize("layout", ["pillarbox", "letterbox", "portrait", "limited range", "one side"])
def test_bars_around_a_photograph_are_trimmed_to_the_picture(layout: str) -> None:
    for image in _stills():
        h, w = image.shape[:2]
        if layout == "pillarbox":  # 4:3 and 3:2 photographs in a 16:9 frame
            frame, at = _in_bars(image, int(h * 16 / 9), h)
        elif layout == "letterbox":  # a wide picture in a taller frame
            frame, at = _in_bars(image, w, int(w * 3 / 4) + 60)
        elif layout == "portrait":  # a phone's portrait video shown in 16:9
            image = _portrait(image)
            frame, at = _in_bars(image, int(h * 16 / 9), h)
        elif layout == "limited range":  # black coded at 16, not decoded to 0
            frame, at = _in_bars(image, int(h * 16 / 9), h, level=16)
        else:  # a bar on the left only (a screen recording's sidebar)
            frame = np.zeros((h, w + 80, 3), np.uint8)
            frame[:, 80:] = image
            at = (80, 0)
        frame = _jpeg(frame)
        _assert_picture(picture_area(frame), frame, image, at)
        _assert_picture(picture_area(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)), frame, image, at)  # grey frames too


def test_frames_without_bars_are_left_whole() -> None:
    for image in _stills():
        assert picture_area(image) is None
        assert picture_area((image * 0.25).astype(np.uint8)) is None  # a dark shot of the same scene
        assert picture_area(_in_bars(image, image.shape[1] + 10, image.shape[0])[0]) is None  # a scaler's 5 px edge
    assert picture_area(np.zeros((360, 640, 3), np.uint8)) is None  # black: no picture to keep
    assert picture_area(np.full((360, 640, 3), 128, np.uint8)) is None
    assert picture_area(np.zeros((3, 640, 3), np.uint8)) is None
    small = _stills()[0][:60, :60]
    assert 60 < MIN_PICTURE * 640
    assert picture_area(_in_bars(small, 640, 60)[0]) is None  # most of the frame dark: left whole
    assert MIN_BAR * 640 > 5


def test_a_dark_backdrop_is_not_a_bar() -> None:
    """A lit person on a stage's dark backdrop: the backdrop's rows and columns are all under `DARK`, as bars are,
    but not flat (here a crowd photograph at a twelfth of its brightness), and none of it is trimmed."""
    crowd, person = _stills()[3], _stills()[0]
    backdrop = (crowd.astype(np.float64) / 12).astype(np.uint8)
    assert backdrop.max() <= DARK
    frame = cv2.resize(backdrop, (1280, 720))
    h, w = person.shape[:2]
    frame[100 : 100 + h, 320 : 320 + w] = person
    frame = _jpeg(frame)
    dark = frame.max(axis=2) <= DARK
    assert dark[:, :300].mean() > 0.998 and dark[:90].mean() > 0.998  # dark enough to be taken for bars ...
    assert picture_area(frame) is None  # ... but not flat


def test_a_bar_ends_where_something_reaches_into_it() -> None:
    image = _stills()[1]
    h, w = image.shape[:2]
    frame, (left, _) = _in_bars(image, int(h * 16 / 9), h)
    frame[100:140, left - 30 : left] = 200  # a raised hand out of the picture
    area = picture_area(frame)
    assert area is not None and area[0] == left - 30


@pytest.mark.parametrize("layout", ["portrait, blurred", "tall, blurred", "pillarbox, white", "portrait, grey"])
def test_soft_bars_on_both_sides_are_trimmed_to_the_picture(layout: str) -> None:
    """A phone's portrait video shown in 16:9 over a blurred copy of itself, a landscape one in a 9:16 frame the
    same way, and bars of a flat colour other than black: the picture is found between two mirrored seams."""
    for image in _stills():
        h, w = image.shape[:2]
        if layout == "portrait, blurred":
            image = _portrait(image)
            frame, at = _in_bars(image, int(h * 16 / 9), h, "blurred")
        elif layout == "tall, blurred":
            frame, at = _in_bars(image, w, int(w * 16 / 9), "blurred")
        elif layout == "pillarbox, white":
            frame, at = _in_bars(image, int(h * 16 / 9), h, 235)
        else:
            image = _portrait(image)
            frame, at = _in_bars(image, int(h * 16 / 9), h, 90)
        frame = _jpeg(frame)
        _assert_picture(picture_area(frame), frame, image, at)


def test_captions_over_soft_bars_do_not_hide_them_and_a_person_standing_in_one_does() -> None:
    """Social media lays captions and a logo over the blurred bars: the bars are still found. A person standing
    in a bar (a real one, along most of its lines) makes it a part of the scene: nothing is trimmed."""
    stills = _stills()
    for image in stills:
        h, w = image.shape[:2]
        strip = _portrait(image)
        frame, at = _in_bars(strip, int(h * 16 / 9), h, "blurred")
        width = frame.shape[1]
        for i, text in enumerate(["@some_user #dance", "Follow for more!", "original sound"]):
            cv2.putText(frame, text, (int(0.02 * width), int(h * (0.6 + 0.12 * i))), cv2.FONT_HERSHEY_SIMPLEX,
                        width / 1400, (255, 255, 255), max(1, width // 600), cv2.LINE_AA)
        cv2.putText(frame, "NEWS 24", (int(0.75 * width), int(0.1 * h)), cv2.FONT_HERSHEY_DUPLEX, width / 900,
                    (255, 255, 255), max(2, width // 400), cv2.LINE_AA)
        _assert_picture(picture_area(_jpeg(frame)), frame, strip, at)
        person = cv2.resize(_portrait(stills[0]), (at[0] - 20, int(0.8 * h)))  # a skier, 0.8 of the height
        frame[h - person.shape[0] :, 10 : 10 + person.shape[1]] = person
        assert picture_area(_jpeg(frame)) is None


def _soft_sides(image: np.ndarray, blend: np.ndarray) -> np.ndarray:
    """The photograph blurred where `blend` (per column, 0..1) is 1, as a lens's shallow focus leaves the sides."""
    soft = cv2.GaussianBlur(image, (0, 0), 12)
    weight = np.broadcast_to(blend[None, :, None], image.shape)
    return (image * (1 - weight) + soft * weight).astype(np.uint8)


def test_soft_sides_without_two_mirrored_seams_are_left_whole() -> None:
    """Blurred sides that fade in (a shallow focus), a soft bar on one side only, and two of different widths:
    nothing is trimmed."""
    for image in _stills():
        h, w = image.shape[:2]
        ramp = np.clip(np.abs(np.arange(w) - w / 2) / (w / 2) * 2.5 - 1.0, 0.0, 1.0)  # sharp middle, soft sides
        assert picture_area(_jpeg(_soft_sides(image, ramp))) is None
        strip = _portrait(image)
        frame, (left, _) = _in_bars(strip, int(h * 16 / 9), h, "blurred")
        one_sided = frame.copy()
        one_sided[:, left + strip.shape[1] :] = cv2.resize(image, (frame.shape[1] - left - strip.shape[1], h))
        assert picture_area(_jpeg(one_sided)) is None
        uneven = np.ascontiguousarray(frame[:, 40:])  # the left bar 40 px narrower than the right
        assert picture_area(_jpeg(uneven)) is None


def test_grainy_bars_are_left_whole() -> None:
    """Bars that carry grain (an analogue capture) are not flat: nothing is trimmed, as before."""
    image = _stills()[0]
    frame, _ = _in_bars(image, int(image.shape[0] * 16 / 9), image.shape[0], level=12)
    grain = np.random.default_rng(0).normal(0.0, 4.0, frame.shape)
    assert picture_area(np.clip(frame + grain, 0, 255).astype(np.uint8)) is None


def _grainy(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, image.shape)
    return np.clip(image.astype(np.float64) + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("level", [0, "blurred"])
def test_grain_inside_bars_is_measured_and_filtered_on_the_picture(level: int | str) -> None:
    """A grainy portrait video in 16:9: two thirds of the frame is flat black or a blurred copy, which took the
    noise estimate's median to near 0 and left the grain in; on the picture it is read and filtered, the bars left
    as they were."""
    image = _grainy(_portrait(_stills()[2]), 15.0)
    frame, (left, top) = _in_bars(image, int(image.shape[0] * 16 / 9), image.shape[0], level)
    assert noise_sigma(frame) < NOISE_FLOOR  # the whole frame's estimate misses the grain
    assert denoise(frame, trim_bars=False) is frame
    clean = denoise(frame)
    picture = clean[top : top + image.shape[0], left : left + image.shape[1]]
    assert noise_sigma(picture) < noise_sigma(image) - 5
    right = left + image.shape[1]
    assert np.array_equal(clean[:, :left], frame[:, :left]) and np.array_equal(clean[:, right:], frame[:, right:])


def test_the_predictor_s_detectors_look_at_the_picture_and_answer_in_frame_pixels() -> None:
    from model.pipeline.config import InferConfig
    from model.pipeline.predictor import Predictor

    image = _stills()[0]
    frame, (left, top) = _in_bars(image, int(image.shape[0] * 16 / 9), image.shape[0])
    seen: list[np.ndarray] = []

    def detector(view: np.ndarray) -> list[Box]:
        seen.append(view)
        return [Box(10.0, 20.0, 30.0, 40.0)]

    for trim in (True, False):
        predictor = Predictor(None, None, config=InferConfig(trim_bars=trim), detector=detector)  # type: ignore[arg-type]
        boxes = predictor.detect(frame)
        if trim:
            assert np.array_equal(seen[-1], image) and seen[-1].flags.c_contiguous
            assert boxes == [Box(10.0 + left, 20.0 + top, 30.0, 40.0)]
        else:
            assert seen[-1] is frame and boxes == [Box(10.0, 20.0, 30.0, 40.0)]


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason=f"{DEFAULT_WEIGHTS} not fetched (make movenet)")
@pytest.mark.parametrize("level", [0, "blurred"])
def test_people_in_a_pillarboxed_portrait_video_are_found_as_in_the_picture_alone(level: int | str) -> None:
    """The real detectors (BlazePose's, MoveNet's centre heatmap, CenterNet's boxes) on a portrait strip of a
    photograph of several people, alone and shown in 16:9 (in black bars, or over a blurred copy of itself): the
    same people, at the same places in the frame."""
    from model.pipeline.predictor import Predictor

    image = _portrait(_stills()[3])
    frame, (left, top) = _in_bars(image, int(image.shape[0] * 16 / 9), image.shape[0], level)
    predictor = Predictor.create("movenet")
    try:
        alone = predictor.detect(image)
        barred = predictor.detect(frame)
    finally:
        predictor.close()
    assert len(alone) >= 2
    assert barred == [Box(b.x + left, b.y + top, b.w, b.h) for b in alone]
