"""BlazePose (mediapipe 0.10.21, bundled landmark model) as the offline rough pose estimator, on known boxes.

No pretrained HRNet/DCPose weights can be fetched offline, but mediapipe 0.10.21 ships BlazePose's
``pose_landmark_full.tflite``. `BlazePoseBackbone` runs it on each person crop (HRNet geometry: 384x288,
see `model.transforms`) through `model.backbones.landmarks` (the model on the box, no detector gate),
maps its 33 landmarks to the 17 PoseTrack slots (`posetrack_from_blazepose`) and renders them as
Gaussian heatmaps (96x72, crop/4), so the DCPose head consumes them exactly like HRNet output.
Whole-frame person detection lives in `model.backbones.detectors`.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

import numpy as np
import torch

from annotation_io.skeletons import NUM_KEYPOINTS, UNLABELLED_SLOTS
from annotation_io.types import Box
from annotation_io.video import MIN_FRAME_SIDE
from model.backbones.base import crop_heatmaps
from model.backbones.landmarks import head_top
from model.backbones.tflite import MediaPipeUnavailableError

logger = logging.getLogger(__name__)

__all__ = [
    "HEAD_BOTTOM_FRACTION",
    "BlazePoseBackbone",
    "MediaPipeUnavailableError",
    "head_bottom",
    "posetrack_from_blazepose",
]

NUM_LANDMARKS = 33  # BlazePose topology

# BlazePose-33 landmark indices used here (mediapipe PoseLandmark enum). BlazePose "left" is the
# person's left, the same convention as PoseTrack, so limbs map left->left without a swap.
_NOSE, _LEFT_EYE, _RIGHT_EYE, _LEFT_EAR, _RIGHT_EAR, _MOUTH_LEFT, _MOUTH_RIGHT = 0, 2, 5, 7, 8, 9, 10
_LEFT_SHOULDER, _RIGHT_SHOULDER = 11, 12

# 17-slot PoseTrack index -> BlazePose index for the joints taken as they are.
DIRECT_MAP: dict[int, int] = {
    0: _NOSE, 3: _LEFT_EAR, 4: _RIGHT_EAR, 5: _LEFT_SHOULDER, 6: _RIGHT_SHOULDER,
    7: 13, 8: 14, 9: 15, 10: 16,  # elbows, wrists (left, right)
    11: 23, 12: 24, 13: 25, 14: 26, 15: 27, 16: 28,  # hips, knees, ankles (left, right)
}
_HEAD_BOTTOM, _HEAD_TOP = 1, 2
# PoseTrack never labels the ears (UNLABELLED_SLOTS): their position is kept, their confidence is 0.
_ZERO_CONF_SLOTS = UNLABELLED_SLOTS

# head_bottom = mouth + HEAD_BOTTOM_FRACTION * (shoulder centre - mouth). PoseTrack's head_bottom is MPII's
# "upper neck", just below the chin. In adults the mouth-to-shoulder-line distance is ~15-18 cm and the
# upper neck sits ~6 cm below the mouth, i.e. ~0.35 of the way; checked on skimage's astronaut (chin ~y172,
# mouth y151, shoulder line y249 -> y185, just under the chin).
HEAD_BOTTOM_FRACTION = 0.35


def head_bottom(mouth: np.ndarray, shoulders: np.ndarray) -> np.ndarray:
    """(2,) PoseTrack's head_bottom (upper neck) from the mouth and shoulder centres (HEAD_BOTTOM_FRACTION)."""
    return mouth + HEAD_BOTTOM_FRACTION * (shoulders - mouth)


def posetrack_from_blazepose(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps BlazePose's 33 landmarks to the 17 PoseTrack slots.

    Args:
        landmarks: (33, 3) x, y (any pixel frame) and visibility of one person.

    Returns:
        xy (17, 2) in the same pixel frame and conf (17,) in [0, 1]. Direct joints keep the landmark's
        visibility; head_bottom and head_top get the mean visibility of their sources; ears get 0.

    Raises:
        ValueError: `landmarks` is not (33, 3) or holds non-finite values.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (NUM_LANDMARKS, 3):
        raise ValueError(f"BlazePose landmarks must have shape ({NUM_LANDMARKS}, 3), got {lm.shape}")
    if not np.isfinite(lm).all():
        raise ValueError("BlazePose landmarks contain NaN or infinite values")
    pts, vis = lm[:, :2], np.clip(lm[:, 2], 0.0, 1.0)
    xy = np.zeros((NUM_KEYPOINTS, 2), dtype=np.float64)
    conf = np.zeros(NUM_KEYPOINTS, dtype=np.float64)
    for slot, idx in DIRECT_MAP.items():
        xy[slot], conf[slot] = pts[idx], vis[idx]
    conf[list(_ZERO_CONF_SLOTS)] = 0.0

    mouth = pts[[_MOUTH_LEFT, _MOUTH_RIGHT]].mean(axis=0)
    shoulders = pts[[_LEFT_SHOULDER, _RIGHT_SHOULDER]].mean(axis=0)
    xy[_HEAD_BOTTOM] = head_bottom(mouth, shoulders)
    conf[_HEAD_BOTTOM] = vis[[_MOUTH_LEFT, _MOUTH_RIGHT, _LEFT_SHOULDER, _RIGHT_SHOULDER]].mean()
    xy[_HEAD_TOP] = head_top(pts)  # see model.backbones.landmarks.HEAD_TOP_FACTOR
    face = [_NOSE, _LEFT_EYE, _RIGHT_EYE, _LEFT_EAR, _RIGHT_EAR, _MOUTH_LEFT, _MOUTH_RIGHT]
    conf[_HEAD_TOP] = vis[face].mean()
    return xy, conf


class BlazePoseBackbone:
    """BlazePose's landmark model on person crops, with the HRNet backbone's interface (crops in, heatmaps out).

    Each crop (`model.transforms.crop_image`: the person box enlarged 1.25x to 3:4, 384x288) holds the
    box at its centre, so the landmark model runs on that box directly (`roi_landmarks`: the square of
    1.25 x the box's long side plus two re-alignment passes); mediapipe's single-person detector is
    never asked, so every crop gets a pose, with low confidences where the model is unsure. Measured
    on the real stills with their boxes given: 77% of limb joints within 0.1 x box diagonal through
    mediapipe's solution (detector gate, nothing on rejection), 83.8% with the ROI passes on frames.
    Calls are serialised by the graph's lock.

    With a second landmark model (`second_model`: BlazePose's heavy one, ``pose_landmark_heavy.tflite``,
    which `make heavy` fetches), the second model also runs once on the winning ROI and the two poses
    are fused per landmark by their confidences (`model.backbones.landmarks.fuse_poses`). Measured (limb
    joints within 0.1 x box diagonal, real stills / held-out images): boxes given 82.5% / 71.1% ->
    84.6% / 73.7%, detector 78.2% / 62.2% -> 80.3% / 64.5%. The heavy model instead of the bundled one:
    85.0% / 67.1% and 76.9% / 56.9%. One re-alignment before the heavy pass: 86.8% / 73.4% with the
    boxes, but 76.9% / 60.9% with the detector.

    Args:
        sigma: Gaussian sigma of the rendered heatmaps, in heatmap pixels.
        realign: re-alignment passes per crop.
        second_model: path of a second BlazePose landmark model, or None.

    Raises:
        MediaPipeUnavailableError: mediapipe 0.10.21 cannot be imported.
    """

    name = "blazepose"
    heatmap_size: tuple[int, int] = (96, 72)  # (H, W)
    input_size: tuple[int, int] = (384, 288)  # (H, W), crop pixels
    crop_enlarge = 1.25  # `model.transforms.crop_geometry`'s default: the crop is the box x 1.25

    def __init__(self, *, sigma: float = 2.0, realign: int = 2, second_model: str | None = None) -> None:
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        if realign < 0:
            raise ValueError(f"realign must be >= 0, got {realign}")
        from model.backbones.landmarks import LandmarkModel  # lazy: imports mediapipe

        self.sigma = float(sigma)
        self.realign = int(realign)
        self._lock = threading.Lock()
        self._model: Any = LandmarkModel()
        self._second: Any = None if second_model is None else LandmarkModel(model_path=second_model)

    @property
    def model(self) -> Any:
        """The `model.backbones.landmarks.LandmarkModel`."""
        with self._lock:
            if self._model is None:
                raise RuntimeError("BlazePoseBackbone is closed")
            return self._model

    def close(self) -> None:
        """Frees the mediapipe graph; the backbone cannot be used afterwards."""
        with self._lock:
            if self._model is not None:
                self._model.close()
                self._model = None
            if self._second is not None:
                self._second.close()
                self._second = None

    def __enter__(self) -> BlazePoseBackbone:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def landmarks_in_box(self, image_bgr: np.ndarray, box: Box, prev: Any = None) -> Any:
        """The `PoseResult` of the person in `box` of a BGR image of any size (always one)."""
        from model.backbones.landmarks import roi_landmarks

        check_image(image_bgr, "image_bgr")
        model = self.model
        return roi_landmarks(model, image_bgr, box, realign=self.realign, prev=prev, second=self._second)

    def crop_box(self) -> Box:
        """The person box inside a crop, in crop pixels (the crop is that box enlarged by 1.25)."""
        h, w = self.input_size
        bw, bh = w / self.crop_enlarge, h / self.crop_enlarge
        return Box((w - bw) / 2.0, (h - bh) / 2.0, bw, bh)

    def keypoints(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The 17 PoseTrack joints per crop, before rendering.

        Args:
            crops_bgr: (N, 384, 288, 3) uint8 BGR crops (`model.transforms.crop_image`).

        Returns:
            xy (N, 17, 2) crop pixels and conf (N, 17) in [0, 1] (low, never all zero, where unsure).
        """
        crops = _check_crops(crops_bgr, self.input_size)
        xy = np.zeros((len(crops), NUM_KEYPOINTS, 2), dtype=np.float64)
        conf = np.zeros((len(crops), NUM_KEYPOINTS), dtype=np.float64)
        box = self.crop_box()
        for i, crop in enumerate(crops):
            pose = self.landmarks_in_box(crop, box)
            xy[i], conf[i] = posetrack_from_blazepose(pose.landmarks())
        return xy, conf

    def heatmaps(self, crops_bgr: np.ndarray) -> torch.Tensor:
        """Rough-pose heatmaps for the DCPose head.

        Args:
            crops_bgr: (N, 384, 288, 3) uint8 BGR crops.

        Returns:
            (N, 17, 96, 72) float32 CPU tensor: a Gaussian at each joint (crop pixels / 4), peak =
            the joint's confidence.
        """
        return crop_heatmaps(*self.keypoints(crops_bgr), self.sigma)


def check_image(image: np.ndarray, what: str) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"{what} must be an (H, W, 3) BGR array, got {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got {image.dtype}")
    if image.shape[0] < MIN_FRAME_SIDE or image.shape[1] < MIN_FRAME_SIDE:
        raise ValueError(f"{what} is too small: {image.shape}")


def _check_crops(crops: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    expected = (input_size[0], input_size[1], 3)
    if not isinstance(crops, np.ndarray) or crops.ndim != 4 or tuple(crops.shape[1:]) != expected:
        shape = getattr(crops, "shape", type(crops).__name__)
        raise ValueError(f"crops_bgr must have shape (N, {expected[0]}, {expected[1]}, 3), got {shape}")
    if crops.dtype != np.uint8:
        raise ValueError(f"crops_bgr must be uint8 BGR crops, got dtype {crops.dtype}")
    return crops
