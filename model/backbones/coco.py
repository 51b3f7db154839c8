"""COCO-17 keypoints (the order of COCO-trained pose models) in the 17 PoseTrack slots.

COCO's order: nose, eyes (left, right), ears (left, right), then shoulders .. ankles (left, right), the
same as PoseTrack's from slot 5 on. `posetrack_from_coco` fills PoseTrack's head_bottom and head_top
from the face points; `FLIP_ORDER` swaps left and right (a horizontally flipped image's joints).
"""

from __future__ import annotations

import numpy as np

from annotation_io.skeletons import NUM_KEYPOINTS, UNLABELLED_SLOTS
from model.backbones.blazepose import head_bottom
from model.backbones.landmarks import MIN_CONFIDENCE, head_top_from  # the floor of BlazePose's confidences

__all__ = ["FLIP_ORDER", "posetrack_from_coco"]

_NOSE, _EYES, _EARS, _SHOULDERS = 0, (1, 2), (3, 4), (5, 6)
# mouth = nose + MOUTH_FROM_NOSE x (nose - eye centre): COCO has no mouth point. Median over 20 faces of
# the real stills in BlazePose's landmarks (which have both) 0.50; anthropometric tables give ~0.45.
MOUTH_FROM_NOSE = 0.5
# COCO index of each joint's mirror image: left and right swap, the nose stays.
FLIP_ORDER = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)


def posetrack_from_coco(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO-17 keypoints (17, 3: x, y, visibility) -> PoseTrack 17-slot xy (17, 2) and conf (17,).

    Nose and shoulders .. ankles keep their place (the two orders agree there, the ears too, whose
    confidence PoseTrack's unlabelled slots get as 0). head_bottom and head_top come from the
    BlazePose helpers (`model.backbones.blazepose.head_bottom`, `model.backbones.landmarks.head_top_from`)
    with the mouth estimated from nose and eyes (MOUTH_FROM_NOSE); their confidence is the mean of
    their sources'.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape != (NUM_KEYPOINTS, 3) or not np.isfinite(kp).all():
        raise ValueError(f"COCO keypoints must be a finite (17, 3) array, got shape {kp.shape}")
    xy, vis = kp[:, :2].copy(), np.clip(kp[:, 2], MIN_CONFIDENCE, 1.0)
    conf = vis.copy()
    eyes, ears = xy[list(_EYES)].mean(axis=0), xy[list(_EARS)].mean(axis=0)
    shoulders = xy[list(_SHOULDERS)].mean(axis=0)
    mouth = xy[_NOSE] + MOUTH_FROM_NOSE * (xy[_NOSE] - eyes)
    xy[1] = head_bottom(mouth, shoulders)
    conf[1] = vis[[_NOSE, *_EYES, *_SHOULDERS]].mean()
    xy[2] = head_top_from(eyes, ears, mouth)
    conf[2] = vis[[_NOSE, *_EYES, *_EARS]].mean()
    conf[list(UNLABELLED_SLOTS)] = 0.0
    return xy, conf
