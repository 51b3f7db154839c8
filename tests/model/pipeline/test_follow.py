"""Follower: the full detector runs every N frames, when a followed pose gets unsure, and never between."""

from __future__ import annotations

import numpy as np
import pytest

from annotation_io.types import Box
from model.pipeline.follow import Follower

K = 17


def _walker(frame: int) -> Box:
    return Box(10.0 + 3 * frame, 20.0, 40.0, 80.0)


def _pose_in(box: Box) -> np.ndarray:
    """Joints spread over a box, moving with it."""
    kps = np.zeros((K, 3))
    kps[:, 0] = box.x + box.w * np.linspace(0.2, 0.8, K)
    kps[:, 1] = box.y + box.h * np.linspace(0.1, 0.9, K)
    kps[:, 2] = 2.0
    return kps


def _follower(unsure: set[int], every: int = 5) -> tuple[Follower, list[int]]:
    calls: list[int] = []

    def detect(frame: int) -> list[Box]:
        calls.append(frame)
        return [_walker(frame)]

    def pose(frame: int, boxes: list[Box]) -> list[tuple[np.ndarray, np.ndarray]]:
        score = 0.1 if frame in unsure else 0.9
        return [(_pose_in(_walker(frame)), np.full(K, score)) for _ in boxes]

    return Follower(detect, pose, redetect_every=every, min_confidence=0.3, frame_size=(400, 200)), calls


def test_detector_every_n_frames_and_the_box_follows_the_joints() -> None:
    follower, calls = _follower(set())
    for f in range(12):
        (box,) = follower(f)
        assert box.iou(_walker(f)) > 0.9
    assert calls == [0, 5, 10]


def test_an_unsure_pose_drops_the_person_and_calls_the_detector() -> None:
    follower, calls = _follower({3})
    boxes = [follower(f) for f in range(7)]
    assert calls == [0, 3]  # frame 3: the followed pose is unsure; the detector finds the walker again
    assert all(len(b) == 1 for b in boxes)


def test_a_jump_between_frames_detects_again_and_bad_settings_raise() -> None:
    follower, calls = _follower(set())
    follower(0)
    follower(1)
    follower(4)
    assert calls == [0, 4]
    with pytest.raises(ValueError, match="redetect_every"):
        Follower(lambda f: [], lambda f, b: [], redetect_every=0, min_confidence=0.3)
