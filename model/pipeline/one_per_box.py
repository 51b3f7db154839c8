"""One person per box: a box whose crop gave the pose of another person of its frame.

A box drawn around a person standing behind another, or a small person beside a bigger one, holds both of
them, and a single-person backbone answers with the more salient one: both boxes then get one pose (COCO
000000197388: the small skier behind another got the front skier's joints, 0 of 12 limb joints right;
OCHuman 003896: the footballer behind got the player in front). `same_person` and `shared_poses` find
such boxes, `paint_out` paints a person over (black, as the crops' borders) so that a crop can be run again
on whoever else stands in it, `apart` tells whether the pose found then is clearly someone else's, and `fit`
how well it fits its box. The pipeline step
that uses them is `model.pipeline.video_job.VideoJob._one_person_per_box` (`InferConfig.one_per_box`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from annotation_io.skeletons import SKELETON_1BASED
from annotation_io.types import Box
from model.pipeline.boxes import box_from_keypoints, pose_gap

__all__ = ["APART_GAP", "MIN_FIT", "MIN_SHARED", "PAINT_SCORE", "PAINT_WIDTH", "SAME_GAP", "apart", "fit",
           "paint_out", "same_person", "shared_poses"]

SAME_GAP = 0.1  # two poses whose sure joints lie this x the smaller box diagonal apart (median) are one person
APART_GAP = 0.15  # ... and two whose placed joints lie this far apart are two (in between: unclear)
MIN_SHARED = 6  # ... with at least this many labelled joints sure in both
PAINT_WIDTH = 0.05  # width of the painted limbs, x the owner's box diagonal
MIN_FIT = 0.4  # a painted crop's pose must fit its box this well (`fit`) to be taken: a person filling it
PAINT_SCORE = 0.1  # joints scoring this or more are painted (a person seen in two boxes often scores low)
_LIMBS = tuple((a - 1, b - 1) for a, b in SKELETON_1BASED)
_TORSO = (5, 6, 12, 11)  # shoulders and hips (0-based), filled
_FAR = 1 << 20  # drawing coordinates are clipped to this many pixels either way


def same_person(kps_a: np.ndarray, scores_a: np.ndarray, box_a: Box,
                kps_b: np.ndarray, scores_b: np.ndarray, box_b: Box) -> bool:  # fmt: skip
    """Whether two poses (K, 2+) with scores (K,) are one person's: at least `MIN_SHARED` labelled joints sure
    in both (`model.pipeline.boxes.MIN_SCORE`), lying within `SAME_GAP` x the smaller box diagonal of each
    other (median)."""
    sure, gap = pose_gap(kps_a, scores_a, box_a, kps_b, scores_b, box_b)
    return sure >= MIN_SHARED and gap <= SAME_GAP


def apart(kps_a: np.ndarray, scores_a: np.ndarray, box_a: Box,
          kps_b: np.ndarray, scores_b: np.ndarray, box_b: Box) -> bool:  # fmt: skip
    """Whether two poses (K, 2+) with scores (K,) are clearly two people's: at least `MIN_SHARED` labelled
    joints placed in both (scoring `PAINT_SCORE` or more), lying `APART_GAP` x the smaller box diagonal or
    farther from each other (median). A crop run again with a person painted out often still holds that
    person's unpainted parts (hands, feet, hair), weakly: its joints then lie near theirs, unsure."""
    placed, gap = pose_gap(kps_a, scores_a, box_a, kps_b, scores_b, box_b, min_score=PAINT_SCORE)
    return placed >= MIN_SHARED and math.isfinite(gap) and gap >= APART_GAP


def fit(kps: np.ndarray, scores: np.ndarray, box: Box) -> float:
    """How well a pose (K, 2+) fits a person box: the IoU of the box around its joints scoring `PAINT_SCORE` or
    more (`box_from_keypoints`) with `box`; 0 with fewer than two such joints."""
    try:
        joints = box_from_keypoints(kps, scores, min_score=PAINT_SCORE)
    except ValueError:
        return 0.0
    return joints.iou(box)


def shared_poses(kps: list[np.ndarray], scores: list[np.ndarray], boxes: list[Box]) -> list[tuple[int, int]]:
    """(i, j), i < j, for the poses that are one person's (`same_person`); each index is in one pair at most."""
    pairs: list[tuple[int, int]] = []
    taken: set[int] = set()
    for i in range(len(kps)):
        for j in range(i + 1, len(kps)):
            if i not in taken and j not in taken and same_person(kps[i], scores[i], boxes[i],
                                                                 kps[j], scores[j], boxes[j]):
                pairs.append((i, j))
                taken.update((i, j))
    return pairs


def paint_out(image: np.ndarray, kps: np.ndarray, scores: np.ndarray, width: float) -> np.ndarray:
    """A copy of `image` with the pose (K, 2+) painted black: limbs `width` px wide between its joints scoring
    `PAINT_SCORE` or more, a disc at each such joint, the torso filled where its four corners are."""
    out = np.array(image, copy=True)
    xy = np.asarray(kps, np.float64)[:, :2]
    sure = np.asarray(scores) >= PAINT_SCORE
    w = max(int(round(width)), 1)
    colour = (0,) * (out.shape[2] if out.ndim == 3 else 1)
    for a, b in _LIMBS:
        if sure[a] and sure[b]:
            cv2.line(out, _pt(xy[a]), _pt(xy[b]), colour, w, cv2.LINE_AA)
    for j in np.flatnonzero(sure):
        cv2.circle(out, _pt(xy[j]), max(int(round(0.6 * w)), 1), colour, -1, cv2.LINE_AA)
    if sure[list(_TORSO)].all():
        cv2.fillPoly(out, [np.array([_pt(xy[j]) for j in _TORSO], np.int32)], colour, cv2.LINE_AA)
    return out


def _pt(p: np.ndarray) -> tuple[int, int]:
    """A point for cv2's drawing, kept within its int32 coordinates (a joint far off the frame draws nothing)."""
    x, y = np.clip(np.round(p[:2]), -_FAR, _FAR)
    return int(x), int(y)
