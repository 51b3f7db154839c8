"""Tests for model.deblur: a steady smear read off real photographs, deconvolved where the frame shows it, sharp
and interlaced frames left alone, and the readers that use it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model.deblur import LONG, MIN_LENGTH, PATCH, DeblurredFrames, deblur, line_kernel, motion_blur, smear
from model.interlace import deinterlace
from tests.model.test_denoise import _Frames, _NoiseMeter, _stills, detector_frames

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# (length, angle): a pan sideways, a tilt, slanted shakes, and one long enough to be read at half size
SMEARS = [(19.0, 0.0), (15.0, 90.0), (12.0, 37.0), (24.0, 141.0), (44.0, 66.0)]


def _jpeg(image: np.ndarray, quality: int = 95) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)


def _turn(a: float, b: float) -> float:
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


def _error(image: np.ndarray, truth: np.ndarray, margin: int = 0) -> float:
    h, w = truth.shape[:2]
    inner = (slice(margin, h - margin), slice(margin, w - margin))
    return float(np.abs(image[inner].astype(float) - truth[inner].astype(float)).mean())


def test_the_kernel_is_a_line_of_the_length_and_angle_asked_for() -> None:
    for length, angle in SMEARS:
        kernel = line_kernel(length, angle)
        assert kernel.sum() == pytest.approx(1.0) and kernel.min() >= 0 and kernel.shape[0] % 2 == 1
        ys, xs = np.nonzero(kernel > 0.2 * kernel.max())
        centre = kernel.shape[0] // 2
        ends = np.hypot(xs - centre, ys - centre).max()
        assert ends == pytest.approx(length / 2, abs=1.5)
        spread = np.cov(np.stack([xs - centre, centre - ys]).astype(float))
        major = np.linalg.eigh(spread)[1][:, -1]  # the line's direction, y up
        assert _turn(np.degrees(np.arctan2(major[1], major[0])) % 180, angle) <= 2


@pytest.mark.parametrize(("length", "angle"), SMEARS)
def test_a_smear_s_length_and_direction_are_read_off_real_photographs(length: float, angle: float) -> None:
    for image in _stills():
        read = motion_blur(_jpeg(smear(image, length, angle)))
        assert read is not None, (length, angle)
        assert read.length == pytest.approx(length, abs=max(1.5, 0.04 * length)), read
        assert _turn(read.angle, angle) <= 3, read


def test_sharp_enlarged_compressed_and_interlaced_photographs_are_not_read_as_smeared() -> None:
    """Codec blocks dip at 8 pixels straight across and down (twice that enlarged), an interlaced frame's comb
    between its fields, a smear under `MIN_LENGTH` at twice its length: none is read as a smear."""
    for image in _stills():
        for frame in (image, _jpeg(image, 30), cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC),
                      cv2.resize(image, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)):
            assert motion_blur(frame) is None
            assert deblur(frame) is frame
        woven = image.copy()
        woven[1::2] = np.roll(image, 8, axis=1)[1::2]
        mended = deinterlace(_jpeg(woven))
        assert deblur(mended) is mended
    for image in _stills():  # a smear shorter than MIN_LENGTH also dips at 2 and 3 times its length: not taken
        for length in (4.0, 5.0):
            for angle in (0.0, 30.0, 100.0):
                assert motion_blur(_jpeg(smear(image, length, angle))) is None, (length, angle)
    small = np.zeros((PATCH - 1, 4 * PATCH, 3), np.uint8)
    grey = np.zeros((600, 800), np.uint8)
    floats = _stills()[0].astype(np.float32)
    assert motion_blur(small) is None and deblur(small) is small
    assert deblur(grey) is grey and deblur(floats) is floats  # not a uint8 BGR frame: nothing to do


@pytest.mark.parametrize(("length", "angle"), SMEARS)
def test_a_smeared_photograph_comes_back_close_to_the_sharp_one(length: float, angle: float) -> None:
    """PSNR against the sharp photograph rises (measured: 1.7-4.4 dB; the mean absolute error falls to
    0.61-0.87 of the smeared photograph's)."""
    for image in _stills():
        smeared = _jpeg(smear(image, length, angle))
        sharp = deblur(smeared)
        assert sharp.shape == image.shape and sharp.dtype == np.uint8
        assert cv2.PSNR(sharp, image) > cv2.PSNR(smeared, image) + 1.0, (length, angle)
        assert _error(sharp, image, int(length)) < 0.9 * _error(smeared, image, int(length)), (length, angle)


def test_a_pan_that_follows_a_runner_leaves_the_runner_sharp() -> None:
    """The camera follows a person: the background is smeared, the person is not. The background is
    deconvolved, the person's pixels are kept (deconvolving sharp pixels wrecks them)."""
    for image in _stills():
        h, w = image.shape[:2]
        panned = smear(image, 24.0, 0.0)
        runner = (slice(0, h), slice(2 * w // 3, w))  # the right third stayed sharp
        panned[runner] = image[runner]
        panned = _jpeg(panned)
        out = deblur(panned)
        assert out is not panned
        inner = (slice(0, h), slice(2 * w // 3 + PATCH // 2, w))  # half a patch from the seam
        assert _error(out[inner], panned[inner]) < 1.5
        background = (slice(0, h), slice(24, 2 * w // 3 - PATCH // 2))
        assert cv2.PSNR(out[background], image[background]) > cv2.PSNR(panned[background], image[background]) + 1.0


def test_a_long_smear_is_read_at_half_size() -> None:
    image = cv2.resize(_stills()[0], None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    smeared = _jpeg(smear(image, 2.4 * LONG, 20.0))
    read = motion_blur(smeared)
    assert read is not None and read.length == pytest.approx(2.4 * LONG, abs=3) and _turn(read.angle, 20) <= 3
    assert read.length > LONG > MIN_LENGTH
    assert _error(deblur(smeared), image, 80) < 0.7 * _error(smeared, image, 80)


def test_a_letterboxed_frame_keeps_its_bars() -> None:
    image = _stills()[1]
    h, w = image.shape[:2]
    bar = h // 6
    framed = np.zeros((h + 2 * bar, w, 3), np.uint8)
    framed[bar : bar + h] = _jpeg(smear(image, 19.0, 30.0))
    out = deblur(framed)
    assert out is not framed
    assert not out[:bar].any() and not out[bar + h :].any()  # black as they were: no ringing into them
    assert _error(out[bar : bar + h], image, 19) < 0.7 * _error(framed[bar : bar + h], image, 19)


def test_the_reader_hands_out_deblurred_frames_and_the_inner_reader_s_attributes() -> None:
    image = _stills()[2]
    smeared = _jpeg(smear(image, 19.0, 120.0))
    inner = _Frames([image, smeared])
    reader = DeblurredFrames(inner)
    assert (reader.num_frames, reader.width, reader.height, reader.concurrent_reads) == (
        2, image.shape[1], image.shape[0], True)
    assert reader.read(0) is image
    assert np.array_equal(reader.read(1), deblur(smeared)) and not np.array_equal(reader.read(1), smeared)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_predictor_s_detector_sees_the_deblurred_frame(enabled: bool) -> None:
    from model.pipeline.config import InferConfig

    smeared = _jpeg(smear(_stills()[3], 19.0, 75.0))
    seen = detector_frames(_NoiseMeter(), InferConfig(deblur=enabled), smeared)
    assert len(seen) == 1
    if enabled:
        assert np.array_equal(seen[0], deblur(smeared)) and not np.array_equal(seen[0], smeared)
    else:
        assert seen[0] is smeared


class _SharpnessMeter:
    """A backbone whose heatmaps are filled with the crop's sharpness (variance of its Laplacian / 1e4)."""

    name = version = "sharpness-meter"

    def heatmaps(self, crops_bgr: np.ndarray, geoms: object, frame_indices: object) -> torch.Tensor:
        levels = [cv2.Laplacian(cv2.cvtColor(c, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var() / 1e4 for c in crops_bgr]
        return torch.tensor(levels, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 17, 96, 72).contiguous()


def test_the_training_cache_computes_heatmaps_on_deblurred_frames() -> None:
    """The head learns on the frames the predictor reads: the cache's frames are deconvolved too, and its keys
    say so (entries a model directory kept from before are not taken)."""
    from annotation_io.types import Box
    from model.training.heatmap_cache import FRAMES_FILTERED, BackboneHeatmapCache
    from model.training.samples import TrainSample

    smeared = _jpeg(smear(_stills()[1], 19.0, 30.0))
    sample = TrainSample(video="v", frame=1, prev=0, next=2, margin=(1.0, 1.0), box=Box(100.0, 60.0, 160.0, 240.0),
                         keypoints=np.zeros((17, 3), np.float32))
    levels = {}
    for enabled in (True, False):
        cache = BackboneHeatmapCache(_SharpnessMeter(), {"v": _Frames([smeared] * 3)}, denoise=enabled)  # type: ignore[arg-type]
        assert cache.prefetch([sample]) == 3
        levels[enabled] = float(cache.triplet(sample)[0, 0, 0, 0])
    assert levels[True] > 2 * levels[False] > 0, levels
    assert "smear" in FRAMES_FILTERED


def test_the_synthetic_videos_smeared_frames_are_read_and_no_other() -> None:
    """`annotation_io.synth` smears some frames along a line of 5-13 px (its angle measured with y down): those of
    8 px or more are read with their length and line, and no sharp or defocused frame is read as smeared."""
    from annotation_io.synth import make_scene, render_video

    scene = make_scene(np.random.default_rng(3), frames=60, people=2, size=(640, 360))
    read = 0
    for (frame, _), spec in zip(render_video(scene), scene.blur, strict=True):
        found = motion_blur(frame)
        if spec is None or spec[0] != "motion":
            assert found is None, spec
        elif spec[1] >= 8:
            assert found is not None, spec
            assert found.length == pytest.approx(spec[1], abs=1.0), spec
            assert _turn(found.angle, 180 - spec[2]) <= np.degrees(np.arctan(1.0 / spec[1])), spec  # whole pixels
            read += 1
    assert read >= 4
