"""Tests for model/testing/simulated.py: the GT-based backbone is deterministic, binds to videos and errs as configured."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from annotation_io.skeletons import NUM_KEYPOINTS
from annotation_io.types import Box, Frame, Person, Video
from model.backbones.base import bind_video
from model.heatmaps import decode
from model.testing.simulated import SimulatedBackbone, SimulationConfig, blur_level
from model.transforms import CropGeometry, crop_geometry, frame_to_heatmap

EXACT = SimulationConfig(
    joint_bias_px=0.0, jitter_px=0.0, swap_prob=0.0, drop_prob=0.0, blur_drop_prob=0.0,
    occluded_pull_prob=0.0, occluded_jitter_px=0.0, peak_spread=0.0,
)  # fmt: skip


def _figure(x0: float, y0: float, occluded: tuple[int, ...] = ()) -> np.ndarray:
    """(17, 3) stick figure in a 100 x 200 box at (x0, y0): left joints 40 px right of right ones."""
    rows = [
        (50, 20), (50, 40), (50, 5), (0, 0), (0, 0),  # nose, head_bottom, head_top, ears (absent)
        (70, 50), (30, 50), (78, 80), (22, 80), (85, 110), (15, 110),  # shoulders, elbows, wrists L/R
        (65, 110), (35, 110), (68, 150), (32, 150), (70, 190), (30, 190),  # hips, knees, ankles L/R
    ]  # fmt: skip
    kps = np.array([(x0 + x, y0 + y, 2.0) for x, y in rows])
    kps[3:5] = 0.0
    kps[list(occluded), 2] = 1.0
    return kps


def _video(name: str, frames: int, people: list[tuple[float, float]], occluded: tuple[int, ...] = ()) -> Video:
    out = []
    for t in range(frames):
        persons = [
            Person(_figure(x, y, occluded if k == 0 else ()), track_id=k, box=Box(x, y, 100, 200))
            for k, (x, y) in enumerate(people)
        ]
        out.append(Frame(t, persons, is_labeled=True))
    return Video(name, frames, out, width=640, height=480)


def _sharp_crops(n: int, seed: int = 0) -> np.ndarray:
    """Textured (sharp) crops: the simulated backbone reads blur off the pixels."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 384, 288, 3), dtype=np.uint8)


def _crops_for(video: Video, track: int = 0) -> tuple[list[CropGeometry], list[int], np.ndarray]:
    geoms, frames, gts = [], [], []
    for f in video.frames:
        p = f.person_by_track(track)
        g = crop_geometry(p.box)
        geoms.append(g)
        frames.append(f.index)
        gts.append(frame_to_heatmap(p.xy, g))
    return geoms, frames, np.stack(gts)


def test_same_inputs_same_heatmaps_and_batch_composition_does_not_matter() -> None:
    video = _video("a", 6, [(100, 100), (400, 150)])
    geoms, frames, _ = _crops_for(video)
    crops = _sharp_crops(6)
    sim = SimulatedBackbone(video, seed=3)
    full = sim.heatmaps(crops, geoms, frames)
    again = SimulatedBackbone(video, seed=3).heatmaps(crops, geoms, frames)
    assert full.shape == (6, NUM_KEYPOINTS, 96, 72) and full.dtype == torch.float32
    assert torch.equal(full, again)
    part = sim.heatmaps(crops[3:5], geoms[3:5], frames[3:5])
    assert torch.equal(part, full[3:5])
    other_seed = SimulatedBackbone(video, seed=4).heatmaps(crops, geoms, frames)
    assert not torch.equal(other_seed, full)
    assert sim.version != SimulatedBackbone(video, seed=4).version
    assert sim.version.startswith("simulated:3:")


def test_decoded_error_is_positive_but_bounded() -> None:
    video = _video("a", 60, [(100, 100)])
    geoms, frames, gt = _crops_for(video)
    sim = SimulatedBackbone(video, seed=0, config=SimulationConfig(swap_prob=0.0, drop_prob=0.0))
    xy, maxvals = decode(sim.heatmaps(_sharp_crops(60), geoms, frames))
    present = video.frames[0].persons[0].present
    err = np.linalg.norm(xy - gt, axis=-1)[:, present]
    assert (maxvals[:, present] > 0).all()
    # Bias 1.5 px on average plus 0.6 px jitter: clearly wrong, never far off.
    assert 0.5 < np.median(err) < 3.5
    assert err.max() < 8.0
    # The per-joint bias is systematic: the mean error vector per joint is the bias, not zero.
    mean_offset = (xy - gt)[:, present].mean(axis=0)
    np.testing.assert_allclose(mean_offset, sim.joint_bias[present], atol=0.5)
    assert not np.any(maxvals[:, [3, 4]] > 0)  # absent joints (the ears) get no peak


def test_exact_config_reproduces_ground_truth() -> None:
    video = _video("a", 3, [(100, 100)])
    geoms, frames, gt = _crops_for(video)
    xy, maxvals = decode(SimulatedBackbone(video, config=EXACT).heatmaps(_sharp_crops(3), geoms, frames))
    present = video.frames[0].persons[0].present
    assert np.abs(xy - gt)[:, present].max() <= 0.36  # argmax + quarter offset of a sub-pixel Gaussian
    np.testing.assert_allclose(maxvals[:, present], EXACT.peak, atol=0.05)


def test_left_right_swaps_happen_at_the_configured_rate() -> None:
    n, rate = 300, 0.25
    video = _video("a", n, [(100, 100)])
    geoms, frames, gt = _crops_for(video)
    cfg = SimulationConfig(joint_bias_px=0.0, jitter_px=0.3, swap_prob=rate, drop_prob=0.0, blur_drop_prob=0.0)
    sim = SimulatedBackbone(video, seed=1, config=cfg)
    crops = np.broadcast_to(_sharp_crops(1, seed=1), (n, 384, 288, 3))  # one texture, n frames
    xy, _ = decode(sim.heatmaps(crops, geoms, frames))
    arms = np.linalg.norm(xy[:, 9] - gt[:, 10], axis=-1) < 2  # left wrist where the right one is
    legs = np.linalg.norm(xy[:, 15] - gt[:, 16], axis=-1) < 2  # left ankle where the right one is
    swapped = arms | legs
    assert abs(swapped.mean() - rate) < 0.08  # 3.2 binomial standard deviations
    # Arms and legs swap separately too ("arms", "legs" or "both").
    assert (arms & ~legs).any() and (legs & ~arms).any() and (arms & legs).any()
    draws = sim.draws(crops[:50], geoms[:50], frames[:50])
    np.testing.assert_array_equal([d.swap is not None for d in draws], swapped[:50])


def test_blurred_crop_gives_lower_peaks_and_more_misses() -> None:
    n = 40
    video = _video("a", n, [(100, 100)])
    geoms, frames, _ = _crops_for(video)
    sharp = _sharp_crops(n)
    blurred = np.stack([cv2.GaussianBlur(c, (0, 0), 4.0) for c in sharp])
    assert blur_level(sharp[0], geoms[0]) == 0.0 and blur_level(blurred[0], geoms[0]) == 1.0
    sim = SimulatedBackbone(video, seed=0)
    _, peak_sharp = decode(sim.heatmaps(sharp, geoms, frames))
    _, peak_blur = decode(sim.heatmaps(blurred, geoms, frames))
    present = video.frames[0].persons[0].present
    assert np.median(peak_blur[:, present]) < 0.7 * np.median(peak_sharp[:, present])
    miss_sharp = (peak_sharp[:, present] <= 0).mean()
    miss_blur = (peak_blur[:, present] <= 0).mean()
    assert miss_blur > miss_sharp + 0.15


def test_occluded_joints_are_weak_or_pulled_to_the_occluder() -> None:
    occluded = (9, 13)  # left wrist, left knee of person 0; person 1 stands in front, 20 px right
    video = _video("a", 30, [(100, 100), (120, 100)], occluded=occluded)
    geoms, frames, gt = _crops_for(video, track=0)
    crops = _sharp_crops(30)
    weak = SimulatedBackbone(video, seed=0, config=SimulationConfig(swap_prob=0.0, drop_prob=0.0))
    _, peaks = decode(weak.heatmaps(crops, geoms, frames))
    assert np.median(peaks[:, list(occluded)]) < 0.6 * np.median(peaks[:, [10, 14]])

    pull = SimulatedBackbone(video, seed=0, config=replace(EXACT, occluded_pull_prob=1.0))
    xy, _ = decode(pull.heatmaps(crops, geoms, frames))
    occluder = np.stack([frame_to_heatmap(f.person_by_track(1).xy, g) for f, g in zip(video.frames, geoms)])
    for j in occluded:
        assert np.abs(xy[:, j] - occluder[:, j]).max() < 0.5  # on the front person's joint
    assert np.abs(xy[:, 10] - gt[:, 10]).max() < 0.5  # visible joints stay put


def test_crop_renders_the_person_nearest_its_centre() -> None:
    video = _video("a", 1, [(100, 100), (400, 150)])
    g1 = crop_geometry(video.frames[0].persons[1].box)
    xy, _ = decode(SimulatedBackbone(video, config=EXACT).heatmaps(_sharp_crops(1), [g1], [0]))
    gt1 = frame_to_heatmap(video.frames[0].persons[1].xy, g1)
    assert np.abs(xy[0, 5] - gt1[5]).max() < 0.5
    far = CropGeometry(np.array([1000.0, 1000.0]), g1.scale)  # nobody near: empty heatmaps
    assert not SimulatedBackbone(video).heatmaps(_sharp_crops(1), [far], [0]).any()
    assert not SimulatedBackbone(video).heatmaps(_sharp_crops(1), [g1], [5]).any()  # frame without GT


def test_binding_to_a_video() -> None:
    a, b = _video("a", 2, [(100, 100)]), _video("b", 2, [(300, 100)])
    sim = SimulatedBackbone({"a": a, "b": b}, seed=0, config=EXACT)
    geoms, frames, _ = _crops_for(b)
    with pytest.raises(ValueError, match="for_video"):
        sim.heatmaps(_sharp_crops(2), geoms, frames)
    with pytest.raises(KeyError, match="'c'"):
        sim.for_video("c")
    bound = bind_video(sim, "b")
    assert bound.video_name == "b" and sim.video_name is None and bound.version == sim.version
    _, maxvals = decode(bound.heatmaps(_sharp_crops(2), geoms, frames))
    assert (maxvals[:, 5] > 0).all()
    assert not bind_video(sim, "a").heatmaps(_sharp_crops(2), geoms, frames).any()  # nobody there in "a"
    real = object()
    assert bind_video(real, "a") is real


def test_bad_input_is_refused_with_a_clear_message() -> None:
    video = _video("a", 2, [(100, 100)])
    geoms, frames, _ = _crops_for(video)
    sim = SimulatedBackbone(video)
    with pytest.raises(ValueError, match="2 crops, 1 geometries"):
        sim.heatmaps(_sharp_crops(2), geoms[:1], frames)
    with pytest.raises(ValueError, match="uint8"):
        sim.heatmaps(_sharp_crops(2).astype(np.float32), geoms, frames)
    with pytest.raises(ValueError, match="swap_prob"):
        SimulationConfig(swap_prob=1.5)
    with pytest.raises(ValueError, match="at least one"):
        SimulatedBackbone({})
