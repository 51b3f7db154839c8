"""Tests of model.pipeline.propagation: labels carried by optical flow on rendered video, fusion, the predictor's use."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from annotation_io.skeletons import NUM_KEYPOINTS
from annotation_io.types import Box, Frame, Person, Video
from model.heatmaps import render_gaussians
from model.pipeline.config import InferConfig, with_propagation
from model.pipeline.predictor import Predictor
from model.pipeline.propagation import Propagated, fuse_chains, fuse_with_backbone, propagate, track_chain
from model.transforms import HEATMAP_SIZE, frame_to_heatmap

SIZE = (320, 240)  # (W, H)
# Joints on a person-like sprite (x, y within the 60x140 sprite): head, shoulders, elbows, hips, knees, feet.
SPRITE_JOINTS = np.array([[30, 12], [30, 30], [30, 8], [22, 14], [38, 14], [15, 38], [45, 38], [12, 60],
                          [48, 60], [10, 80], [50, 80], [22, 78], [38, 78], [20, 105], [40, 105], [18, 132],
                          [42, 132]], float)


def path(t: int) -> np.ndarray:
    """The sprite's top-left corner on frame t: 1.5 px/frame right, a slow vertical wave (sub-pixel)."""
    return np.array([60.0 + 1.5 * t, 50.0 + 6.0 * np.sin(t / 6.0)])


def render(num_frames: int = 17, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames of a textured person-like shape moving along `path` over a textured background, and GT joints."""
    rng = np.random.default_rng(seed)
    w, h = SIZE
    background = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2.0)
    sprite = cv2.GaussianBlur(rng.integers(0, 256, (140, 60, 3), dtype=np.uint8), (0, 0), 1.5)
    mask = np.zeros((140, 60), np.float32)
    cv2.ellipse(mask, (30, 15), (12, 14), 0, 0, 360, 1.0, -1)  # head
    cv2.rectangle(mask, (8, 28), (52, 85), 1.0, -1)  # torso and arms
    cv2.rectangle(mask, (14, 80), (46, 139), 1.0, -1)  # legs
    frames, gt = [], []
    for t in range(num_frames):
        x, y = path(t)
        m = np.float32([[1, 0, x], [0, 1, y]])
        layer = cv2.warpAffine(sprite, m, SIZE, flags=cv2.INTER_LINEAR).astype(np.float32)
        alpha = cv2.warpAffine(mask, m, SIZE, flags=cv2.INTER_LINEAR)[..., None]
        frames.append((alpha * layer + (1 - alpha) * background).round().astype(np.uint8))
        gt.append(SPRITE_JOINTS + [x, y])
    return frames, np.stack(gt)


@pytest.fixture(scope="module")
def video() -> tuple[list[np.ndarray], np.ndarray]:
    return render()


def _gray(frames: list[np.ndarray]):
    grays = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    return lambda i: grays[i]


def _label(gt: np.ndarray, t: int) -> np.ndarray:
    return np.hstack([gt[t], np.full((NUM_KEYPOINTS, 1), 2.0)])


def test_labels_are_carried_within_two_pixels(video) -> None:
    frames, gt = video
    labels = {0: _label(gt, 0), 8: _label(gt, 8), 16: _label(gt, 16)}
    targets = [t for t in range(17) if t not in labels]
    carried = propagate(_gray(frames), labels, targets, num_frames=len(frames))
    assert sorted(carried) == targets
    errors = np.stack([np.linalg.norm(carried[t].xy - gt[t], axis=1) for t in targets])
    conf = np.stack([carried[t].conf for t in targets])
    assert np.median(errors) < 1.0 and np.percentile(errors, 90) < 2.0, errors.max(axis=1)
    assert conf.min() > 0.5  # the flow is consistent everywhere here
    # Next to a label (one step) every joint is within 1.5 px (joints on the outline see the background too).
    for t in (1, 7, 9, 15):
        assert np.linalg.norm(carried[t].xy - gt[t], axis=1).max() < 1.5


def test_a_static_frame_pair_keeps_points_and_confidence_decays(video) -> None:
    frames, gt = video
    still = [frames[0]] * 4
    out = track_chain(_gray(still), 0, gt[0], np.ones(NUM_KEYPOINTS), [1, 3])
    np.testing.assert_allclose(out[3].xy, gt[0], atol=0.05)
    assert np.all(out[3].conf < out[1].conf) and np.all(out[1].conf <= 0.97 + 1e-9)
    # Unlabelled joints are never carried.
    conf = np.ones(NUM_KEYPOINTS)
    conf[4] = 0
    assert track_chain(_gray(still), 0, gt[0], conf, [2])[2].conf[4] == 0


def test_lost_points_get_zero_confidence_and_the_backbone_wins(video) -> None:
    frames, gt = video
    rng = np.random.default_rng(1)
    noise = [rng.integers(0, 256, frames[0].shape, dtype=np.uint8) for _ in range(3)]
    out = track_chain(_gray([frames[0], *noise]), 0, gt[0], np.ones(NUM_KEYPOINTS), [3])
    assert (out[3].conf < 0.3).mean() > 0.8  # pure noise: the forward-backward check fails
    backbone = gt[0] + 50.0
    xy, scores, taken = fuse_with_backbone(backbone, np.full(NUM_KEYPOINTS, 0.6), out[3])
    np.testing.assert_allclose(xy[~taken], backbone[~taken])
    assert np.all(scores[taken] == out[3].conf[taken])


def test_two_chains_that_disagree_lose_confidence() -> None:
    a = Propagated(np.zeros((2, 2)), np.array([0.9, 0.9]))
    b = Propagated(np.array([[0.5, 0.0], [30.0, 0.0]]), np.array([0.9, 0.9]))
    fused = fuse_chains(a, b)
    assert fused.conf[0] > 0.9 and fused.conf[1] < 0.01
    np.testing.assert_allclose(fused.xy[0], [0.25, 0.0])
    assert fuse_chains(a, None) is a and fuse_chains(None, None) is None


class _FlatBackbone:
    """A backbone that always answers the crop centre with score 0.5 (it sees nothing)."""

    name, version, sigma = "flat", "flat", 2.0

    def heatmaps(self, crops, geoms, frame_indices):
        centre = torch.tensor([[HEATMAP_SIZE[0] / 2, HEATMAP_SIZE[1] / 2]]).repeat(NUM_KEYPOINTS, 1)
        xy = centre[None].repeat(len(crops), 1, 1).float()
        return render_gaussians(xy, torch.full((len(crops), NUM_KEYPOINTS), 0.5), size=HEATMAP_SIZE[::-1],
                                sigma=2.0).float()


class _Frames:
    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames, self.num_frames = frames, len(frames)
        self.height, self.width = frames[0].shape[:2]

    def read(self, index: int) -> np.ndarray:
        return self.frames[index]


def _person(gt: np.ndarray, t: int) -> Person:
    box = Box.from_xyxy(*(path(t) - 5), *(path(t) + [65, 145]))
    return Person(_label(gt, t), track_id=0, box=box)


def test_predictor_carries_labels_to_a_frame_between_two_labelled_frames(video) -> None:
    frames, gt = video
    known = Video("v", len(frames), [Frame(t, [_person(gt, t)], is_labeled=True) for t in (0, 8)],
                  width=SIZE[0], height=SIZE[1])
    video_ = Video("v", len(frames), width=SIZE[0], height=SIZE[1])
    predictor = Predictor(_FlatBackbone(), None, detector=lambda frame: [])
    out = predictor.predict_video(video_, known, frames=[4], reader=_Frames(frames))
    (person,) = out.frame(4).persons
    assert person.extra["source"] == "model+propagated" and out.extra["propagated"] is True
    assert sorted(person.extra["propagated"]) == list(range(NUM_KEYPOINTS))
    assert np.linalg.norm(person.xy - gt[4], axis=1).max() < 2.0
    assert np.all(person.scores > 0.5) and np.all(person.scores <= 1.0)
    # Without propagation the same frame is the backbone's (the crop centre for every joint).
    off = Predictor(_FlatBackbone(), None, config=InferConfig(propagate=False), detector=lambda frame: [])
    plain = off.predict_video(video_, known, frames=[4], reader=_Frames(frames)).frame(4).persons[0]
    assert plain.extra["source"] == "model" and np.linalg.norm(plain.xy - gt[4], axis=1).mean() > 10
    assert "propagated" not in off.predict_video(video_, known, frames=[4], reader=_Frames(frames)).extra


def test_version_names_say_propagation() -> None:
    assert with_propagation("blazepose2-base") == "blazepose2+prop-base"
    assert with_propagation("blazepose2+prop-base") == "blazepose2+prop-base"
    assert with_propagation("p1-v3") == "p1-v3"  # registered versions keep their exact names


def test_heatmap_geometry_helper_is_consistent(video) -> None:
    # The propagated pose is rendered in the crop's heatmap geometry like a human label.
    _, gt = video
    from model.transforms import crop_geometry

    geom = crop_geometry(_person(gt, 4).box)
    hm = frame_to_heatmap(gt[4], geom)
    assert np.all((hm >= 0) & (hm < [HEATMAP_SIZE[0], HEATMAP_SIZE[1]]))


def test_a_box_only_label_is_trusted_and_filled_with_keypoints(video) -> None:
    frames, gt = video
    box = _person(gt, 4).box
    known = Video("v", len(frames), [Frame(4, [Person(track_id=7, box=box)], is_labeled=True)],
                  width=SIZE[0], height=SIZE[1])
    predictor = Predictor(_FlatBackbone(), None, detector=lambda frame: [])
    (person,) = predictor.predict_video(Video("v", len(frames), width=SIZE[0], height=SIZE[1]), known,
                                        frames=[4], reader=_Frames(frames)).frame(4).persons
    assert person.box == box and person.track_id == 7
    assert person.extra == {"source": "model", "box_source": "human"} and person.present.all()
    assert all(box.contains(x, y) for x, y in person.xy)
