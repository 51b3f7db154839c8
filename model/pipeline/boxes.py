"""Person boxes of the pipeline: `TrackBox`, boxes from keypoints, boxes carried with the joints' motion."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import numpy as np

from annotation_io.skeletons import LABELLED_SLOTS
from annotation_io.types import Box

logger = logging.getLogger(__name__)

__all__ = ["MIN_SCORE", "TOP_JOINTS", "BoxSource", "TrackBox", "box_from_keypoints", "box_in_frame",
           "carry_with_keypoints", "coast", "overlap_of_smaller", "pose_confidence", "pose_gap",
           "update_with_keypoints"]

BoxSource = Literal["human", "interpolated", "carried", "detected"]
KEYPOINT_MARGIN = 0.06  # joint box grows by this x its long side per side (fit on synthetic GT boxes)
MIN_SCORE = 0.3  # joints below this confidence do not move or size boxes
TOP_JOINTS = 10  # a pose's confidence: mean of the best 10 of the 15 labelled joints (robust to occlusion)
MIN_VISIBLE = 0.25  # a box with less of its area inside the frame has left it
_SCALE_LIMITS = (0.67, 1.5)  # most a box may grow or shrink in one carry step


def pose_confidence(scores: np.ndarray) -> float:
    """A pose's confidence: the mean of its best `TOP_JOINTS` labelled-joint scores."""
    top = np.sort(np.asarray(scores, dtype=float)[list(LABELLED_SLOTS)])[::-1][:TOP_JOINTS]
    return float(top.mean())


def pose_gap(kps_a: np.ndarray, scores_a: np.ndarray, box_a: Box,
             kps_b: np.ndarray, scores_b: np.ndarray, box_b: Box, *, min_score: float = MIN_SCORE,
             ) -> tuple[int, float]:  # fmt: skip
    """How far apart two poses lie: (the labelled joints sure in both, scoring >= `min_score`; their median
    distance / the smaller box diagonal, inf when there are none or a box has no size)."""
    idx = list(LABELLED_SLOTS)
    sure = (np.asarray(scores_a)[idx] >= min_score) & (np.asarray(scores_b)[idx] >= min_score)
    diagonal = min(float(np.hypot(box_a.w, box_a.h)), float(np.hypot(box_b.w, box_b.h)))
    if not sure.any() or diagonal <= 0:
        return int(sure.sum()), float("inf")
    d = np.linalg.norm(np.asarray(kps_a)[idx, :2] - np.asarray(kps_b)[idx, :2], axis=1)[sure]
    return int(sure.sum()), float(np.median(d)) / diagonal


@dataclass(frozen=True)
class TrackBox:
    """A person box to crop on one frame, with its track id, where it came from and its score."""

    track_id: int
    box: Box
    source: BoxSource
    score: float


def box_from_keypoints(
    kps: np.ndarray,
    scores: np.ndarray | None = None,
    *,
    margin: float = KEYPOINT_MARGIN,
    min_score: float = MIN_SCORE,
) -> Box:
    """Person box around the present (and, with scores, confident) joints.

    Each side grows by `margin` x the joint box's longer side: hands, feet, hair and limb
    thickness reach past joint centres by a fraction of body size, not of the joint box's own
    width (a side-on walker's joints can be ten times taller than wide).

    Args:
        kps: (K, 3) x, y, v; joints with v > 0 count.
        scores: (K,) confidences; joints below `min_score` are left out. None: v alone decides.
        margin: growth per side, as a fraction of the joint box's longer side.
        min_score: least confidence of a joint that counts.

    Raises:
        ValueError: bad shapes, or fewer than two distinct joints to box.
    """
    kps = _keypoints(kps, "kps")
    use = _usable(kps, scores, min_score, "scores")
    box = Box.from_points(kps[use, :2])
    if box is None or use.sum() < 2 or max(box.w, box.h) <= 0:
        raise ValueError(
            f"box_from_keypoints needs at least 2 distinct joints with v > 0 and "
            f"score >= {min_score}; got {int(use.sum())}"
        )
    pad = margin * max(box.w, box.h)
    x1, y1, x2, y2 = box.xyxy
    return Box.from_xyxy(x1 - pad, y1 - pad, x2 + pad, y2 + pad)


def carry_with_keypoints(
    prev_box: Box,
    prev_kps: np.ndarray,
    new_kps: np.ndarray,
    *,
    prev_scores: np.ndarray | None = None,
    new_scores: np.ndarray | None = None,
    min_score: float = MIN_SCORE,
) -> Box:
    """Moves and scales a box with the motion of the joints seen on both frames.

    The joints present (and confident) on both frames give the motion: scale = median ratio of
    pairwise joint distances (3+ joints, clamped to [0.67, 1.5]), then translation = per-axis
    median of new - scale x old over the joints. Medians keep a few wrong joints from dragging
    the box. With no joint in common the box stays where it was.

    Args:
        prev_box: the box on the earlier frame.
        prev_kps: (K, 3) joints on the earlier frame, new_kps: on the new frame (v > 0 = present).
        prev_scores, new_scores: (K,) confidences, or None to use v alone.
        min_score: least confidence of a joint that counts.
    """
    prev_kps, new_kps = _keypoints(prev_kps, "prev_kps"), _keypoints(new_kps, "new_kps")
    if prev_kps.shape != new_kps.shape:
        raise ValueError(f"prev_kps {prev_kps.shape} and new_kps {new_kps.shape} differ in shape")
    common = _usable(prev_kps, prev_scores, min_score, "prev_scores")
    common &= _usable(new_kps, new_scores, min_score, "new_scores")
    if not common.any():
        logger.debug("no joint seen on both frames: box %s stays", prev_box.xywh)
        return prev_box
    p, q = prev_kps[common, :2], new_kps[common, :2]
    scale = 1.0
    if len(p) >= 3:
        pairs = np.array(list(combinations(range(len(p)), 2)))
        d_prev = np.linalg.norm(p[pairs[:, 0]] - p[pairs[:, 1]], axis=1)
        d_new = np.linalg.norm(q[pairs[:, 0]] - q[pairs[:, 1]], axis=1)
        ok = d_prev > 1.0  # pixel; shorter pairs give noisy ratios
        if ok.any():
            scale = float(np.clip(np.median(d_new[ok] / d_prev[ok]), *_SCALE_LIMITS))
    shift = np.median(q - scale * p, axis=0)  # each joint's vote for the translation
    corners = scale * np.array(prev_box.xyxy).reshape(2, 2) + shift
    return Box.from_xyxy(*corners.ravel())


def update_with_keypoints(
    track: TrackBox,
    prev_kps: np.ndarray,
    new_kps: np.ndarray,
    *,
    prev_scores: np.ndarray | None = None,
    new_scores: np.ndarray | None = None,
    frame_size: tuple[int, int] | None = None,
    min_score: float = MIN_SCORE,
) -> TrackBox | None:
    """Carries a track's box onto the next frame with `carry_with_keypoints`.

    Args:
        track: the track's box on the frame of `prev_kps`.
        prev_kps, new_kps, prev_scores, new_scores, min_score: as in `carry_with_keypoints`.
        frame_size: (W, H); when given the box is clipped to the frame, and a box with less than
            a quarter of its area inside means the track has left the frame.

    Returns:
        The "carried" box with the same id and score, or None when the track left the frame.
    """
    box = carry_with_keypoints(
        track.box, prev_kps, new_kps, prev_scores=prev_scores, new_scores=new_scores, min_score=min_score
    )
    return _carried(track, box, frame_size)


def coast(track: TrackBox, step: np.ndarray, *, frame_size: tuple[int, int] | None = None) -> TrackBox | None:
    """Moves a track's box by `step` (dx, dy) pixels onto the next frame: a person nobody sees there
    keeps walking (a tracker's constant-velocity step).

    Returns:
        The "carried" box with the same id and score, or None when it left the frame (`frame_size` as
        in `update_with_keypoints`).
    """
    dx, dy = (float(v) for v in np.asarray(step, dtype=np.float64).reshape(2))
    return _carried(track, Box(track.box.x + dx, track.box.y + dy, track.box.w, track.box.h), frame_size)


def _carried(track: TrackBox, box: Box, frame_size: tuple[int, int] | None) -> TrackBox | None:
    if frame_size is not None:
        if not box_in_frame(box, *frame_size):
            return None
        box = box.clip(*frame_size)
    return TrackBox(track.track_id, box, "carried", track.score)


def box_in_frame(box: Box, width: int, height: int, *, min_visible: float = MIN_VISIBLE) -> bool:
    """Whether at least `min_visible` of the box's area lies inside a width x height frame."""
    return box.area > 0 and box.clip(width, height).area >= min_visible * box.area


def _keypoints(kps: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(kps, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must be (K, 3) x, y, v, got shape {arr.shape}")
    return arr


def _usable(kps: np.ndarray, scores: np.ndarray | None, min_score: float, name: str) -> np.ndarray:
    """(K,) bool: joints with v > 0, finite x, y and (with scores) score >= min_score."""
    use = (kps[:, 2] > 0) & np.isfinite(kps[:, :2]).all(axis=1)
    if scores is not None:
        sc = np.asarray(scores, dtype=np.float64)
        if sc.shape != (len(kps),):
            raise ValueError(f"{name} must have shape ({len(kps)},), got {sc.shape}")
        use &= sc >= min_score
    return use


def overlap_of_smaller(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area."""
    ax1, ay1, ax2, ay2 = a.xyxy
    bx1, by1, bx2, by2 = b.xyxy
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    smaller = min(a.area, b.area)
    return inter / smaller if smaller > 0 else 0.0
