"""Tests for model.denoise: the noise estimate, the filter on grainy frames only, and the readers that use it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from annotation_io.types import Box, Frame, Video
from model.backbones.movenet_weights import DEFAULT_WEIGHTS
from model.bench.real import _Still
from model.denoise import MIN_STRENGTH, NOISE_FLOOR, DenoisedFrames, denoise, noise_sigma
from model.transforms import CropGeometry

STILLS = Path(__file__).resolve().parents[1] / "assets" / "real-stills" / "images" / "val"  # four real photographs
LUMINANCE = float(np.sqrt(0.299**2 + 0.587**2 + 0.114**2))  # per-channel noise -> noise of BGR2GRAY


def _stills() -> list[np.ndarray]:
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted(STILLS.glob("*/000000.jpg"))]
    assert len(images) == 4 and all(im is not None for im in images)
    return images


def _grainy(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, image.shape)
    return np.clip(image.astype(np.float64) + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("sigma", [4.0, 10.0, 20.0])
def test_the_noise_of_a_flat_frame_is_read_in_grey_levels(sigma: float) -> None:
    frame = _grainy(np.full((240, 320, 3), 128, np.uint8), sigma)
    assert noise_sigma(frame) == pytest.approx(sigma * LUMINANCE, rel=0.1)
    assert noise_sigma(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)) == pytest.approx(sigma * LUMINANCE, rel=0.1)


def test_a_large_frame_is_read_in_bands_of_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    import model.denoise

    large = _grainy(np.full((1600, 2400, 3), 128, np.uint8), 10.0)
    assert large.shape[0] * large.shape[1] > model.denoise.ESTIMATE_PIXELS
    assert noise_sigma(large) == pytest.approx(10.0 * LUMINANCE, rel=0.1)
    large[:800, :1200] = cv2.resize(_stills()[1], (1200, 800))  # a photograph in one quarter, grain elsewhere
    banded = noise_sigma(large)
    monkeypatch.setattr(model.denoise, "ESTIMATE_PIXELS", large.shape[0] * large.shape[1])
    assert banded == pytest.approx(noise_sigma(large), rel=0.05)  # the whole frame read
    assert noise_sigma(np.zeros((3, 4000, 3), np.uint8)) == 0.0


def test_edges_and_texture_are_not_read_as_noise() -> None:
    for image in _stills():  # people, grass, crowds, snow, an old film photograph: none is filtered
        assert noise_sigma(image) < NOISE_FLOOR + MIN_STRENGTH
        assert noise_sigma(_grainy(image, 20.0)) > NOISE_FLOOR + 5  # the same with grain
    ramp = np.tile(np.linspace(0, 255, 320, dtype=np.float32), (240, 1)).astype(np.uint8)
    assert noise_sigma(ramp) < 0.5
    assert noise_sigma(np.zeros((2, 5, 3), np.uint8)) == 0.0  # too small to filter


def test_clean_frames_are_handed_back_as_they_are() -> None:
    for image in _stills():
        assert denoise(image) is image
    grey = np.full((40, 40), 128, np.uint8)
    assert denoise(grey) is grey  # not a BGR frame: nothing to do
    floats = _grainy(np.full((40, 40, 3), 128, np.uint8), 20.0).astype(np.float32)
    assert denoise(floats) is floats
    # Grain just under the floor plus the least strength is left alone; a little more is filtered.
    flat = np.full((240, 320, 3), 128, np.uint8)
    below = _grainy(flat, (NOISE_FLOOR + 0.5 * MIN_STRENGTH) / LUMINANCE)
    above = _grainy(flat, (NOISE_FLOOR + 3 * MIN_STRENGTH) / LUMINANCE)
    assert denoise(below) is below
    assert denoise(above) is not above


@pytest.mark.parametrize(("sigma", "gain_db"), [(10.0, 0.4), (20.0, 2.0)])
def test_grainy_frames_come_back_closer_to_the_clean_photograph(sigma: float, gain_db: float) -> None:
    """PSNR against the clean photograph rises (measured: 0.6-5.4 dB at sigma 10, where the filter is mild and
    fine texture such as COCO 196141's snow gains least; 2.5-7.6 dB at 20)."""
    for seed, image in enumerate(_stills()):
        grainy = _grainy(image, sigma, seed)
        clean = denoise(grainy)
        assert clean.shape == image.shape and clean.dtype == np.uint8
        before, after = cv2.PSNR(grainy, image), cv2.PSNR(clean, image)
        assert after > before + gain_db, (seed, before, after)
        assert noise_sigma(clean) < noise_sigma(grainy)


class _Frames:
    """Frames of one video in memory, as a reader of image files hands them out."""

    concurrent_reads = True

    def __init__(self, frames: Sequence[np.ndarray]) -> None:
        self.frames, self.num_frames = list(frames), len(frames)
        self.height, self.width = frames[0].shape[:2]
        self.reads = 0

    def read(self, index: int) -> np.ndarray:
        self.reads += 1
        return self.frames[index]


def test_the_reader_hands_out_filtered_frames_and_the_inner_reader_s_attributes() -> None:
    image = _stills()[0]
    inner = _Frames([image, _grainy(image, 20.0)])
    reader = DenoisedFrames(inner)
    assert (reader.num_frames, reader.width, reader.height, reader.concurrent_reads) == (
        2, image.shape[1], image.shape[0], True)
    assert reader.read(0) is image
    assert np.array_equal(reader.read(1), denoise(inner.frames[1]))
    assert noise_sigma(reader.read(1)) < noise_sigma(inner.frames[1]) - 5
    assert inner.reads == 3
    with pytest.raises(AttributeError):
        reader.no_such_attribute  # noqa: B018


class _NoiseMeter:
    """A backbone whose heatmaps are filled with the noise estimate of the crop it was given."""

    name = version = "noise-meter"

    def heatmaps(self, crops_bgr: np.ndarray, geoms: Sequence[CropGeometry], frame_indices: Sequence[int]) -> torch.Tensor:
        levels = [noise_sigma(crop) / 100.0 for crop in crops_bgr]
        return torch.tensor(levels, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 17, 96, 72).contiguous()


def detector_frames(backbone: object, config: object, image: np.ndarray) -> list[np.ndarray]:
    """The frames the predictor's person detector is given when it predicts `image` as a one-frame video with
    `backbone` and `config` (an InferConfig); the detector finds nobody."""
    from model.pipeline.predictor import Predictor

    seen: list[np.ndarray] = []

    def detector(frame: np.ndarray) -> list[Box]:
        seen.append(frame)
        return []

    video = Video("one", 1, [Frame(0, [])], width=image.shape[1], height=image.shape[0])
    predictor = Predictor(backbone, None, config=config, detector=detector)  # type: ignore[arg-type]
    assert predictor.predict_video(video, reader=_Still(image)).frames[0].persons == []
    return seen


@pytest.mark.parametrize("enabled", [True, False])
def test_the_predictor_s_detector_sees_the_filtered_frame(enabled: bool) -> None:
    from model.pipeline.config import InferConfig

    grainy = _grainy(_stills()[1], 20.0)
    seen = detector_frames(_NoiseMeter(), InferConfig(denoise=enabled), grainy)
    assert len(seen) == 1
    if enabled:
        assert np.array_equal(seen[0], denoise(grainy)) and not np.array_equal(seen[0], grainy)
    else:
        assert seen[0] is grainy


def test_the_training_cache_computes_heatmaps_on_the_filtered_frames() -> None:
    from model.training.heatmap_cache import BackboneHeatmapCache, sample_geometry
    from model.training.samples import TrainSample
    from model.transforms import crop_image

    grainy = _grainy(_stills()[1], 20.0)
    sample = TrainSample(video="v", frame=1, prev=0, next=2, margin=(1.0, 1.0), box=Box(100.0, 60.0, 160.0, 240.0),
                         keypoints=np.zeros((17, 3), np.float32))
    geom = sample_geometry(sample, BackboneHeatmapCache(_NoiseMeter(), {}).crop)  # type: ignore[arg-type]
    for enabled, frame in ((True, denoise(grainy)), (False, grainy)):
        cache = BackboneHeatmapCache(_NoiseMeter(), {"v": _Frames([grainy] * 3)}, denoise=enabled)  # type: ignore[arg-type]
        assert cache.prefetch([sample]) == 3
        level = float(cache.triplet(sample)[0, 0, 0, 0]) * 100.0
        assert level == pytest.approx(noise_sigma(crop_image(frame, geom)), abs=0.05), enabled  # float16 entries
    assert noise_sigma(crop_image(grainy, geom)) > 1.5 * noise_sigma(crop_image(denoise(grainy), geom))


def test_a_cache_directory_never_serves_unfiltered_heatmaps_for_filtered_frames(tmp_path: Path) -> None:
    """A model directory kept across an upgrade holds entries computed on the frames as decoded (before the filter,
    or with ``denoise=False``): the filtered cache computes its own, and each cache keeps reading its own."""
    from model.training.heatmap_cache import BackboneHeatmapCache
    from model.training.samples import TrainSample

    grainy = _grainy(_stills()[1], 20.0)
    sample = TrainSample(video="v", frame=1, prev=0, next=2, margin=(1.0, 1.0), box=Box(100.0, 60.0, 160.0, 240.0),
                         keypoints=np.zeros((17, 3), np.float32))
    readers = {"v": _Frames([grainy] * 3)}
    raw = BackboneHeatmapCache(_NoiseMeter(), readers, directory=tmp_path, denoise=False)  # type: ignore[arg-type]
    assert raw.prefetch([sample]) == 3
    filtered = BackboneHeatmapCache(_NoiseMeter(), readers, directory=tmp_path)  # type: ignore[arg-type]
    assert filtered.key("v", 1, sample.box) not in filtered
    assert filtered.prefetch([sample]) == 3
    raw_level, filtered_level = float(raw.triplet(sample)[0, 0, 0, 0]), float(filtered.triplet(sample)[0, 0, 0, 0])
    assert raw_level > 1.5 * filtered_level > 0
    again = BackboneHeatmapCache(_NoiseMeter(), readers, directory=tmp_path)  # type: ignore[arg-type]
    assert again.prefetch([sample]) == 0 and float(again.triplet(sample)[0, 0, 0, 0]) == filtered_level


GRAINY = Path(__file__).resolve().parents[1] / "assets" / "real-stills-grainy"  # two footballers (its README)


@pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason=f"{DEFAULT_WEIGHTS} not fetched (make movenet)")
@pytest.mark.parametrize("seed", [0, 1])
def test_a_person_grain_hid_from_the_detector_is_found(seed: int) -> None:
    """Measured over 4 noise seeds: 0 of the 24 limb joints placed without the filter, 11-12 with it. (CenterNet's
    boxes, `InferConfig.box_people`, find one of the two men through the grain unfiltered, 10 joints; left out
    here, as this is the filter's test.)"""
    from model.bench.real import load_stills
    from model.bench.real_score import score_frame
    from model.pipeline.config import InferConfig
    from model.pipeline.predictor import Predictor

    [(gt, image)] = load_stills(GRAINY)
    grainy = _grainy(image, 20.0, seed)
    placed = {}
    for enabled in (True, False):
        predictor = Predictor.create("movenet", config=InferConfig(denoise=enabled, box_people=False))
        try:
            video = Video(gt.name, 1, [Frame(0, [])], width=image.shape[1], height=image.shape[0])
            out = predictor.predict_video(video, reader=_Still(grainy))
        finally:
            predictor.close()
        placed[enabled] = score_frame(gt.frames[0], out.frames[0]).joints_ok
    assert placed[True] >= 10 and placed[True] >= placed[False] + 8, placed
