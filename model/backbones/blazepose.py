"""BlazePose (mediapipe 0.10.21, bundled model) as the offline rough pose estimator and last-resort detector.

No pretrained HRNet/DCPose weights can be fetched offline (measured on mediapipe 0.10.21), but mediapipe
0.10.21 ships BlazePose's ``pose_landmark_full.tflite``. `BlazePoseBackbone` runs it on each person crop
(HRNet geometry: 384x288, see `model.transforms`), maps its 33 landmarks to the 17 PoseTrack slots and
renders them as Gaussian heatmaps (96x72, crop/4), so the DCPose head can consume them exactly like HRNet
output. Whole-frame person detection lives in `model.backbones.detectors`.

Only ``model_complexity=1`` is used: complexities 0 and 2 download their model at run time
(measured on mediapipe 0.10.21), and nothing here may touch the network.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

import cv2
import numpy as np
import torch

from annotation_io.skeletons import NUM_KEYPOINTS, UNLABELLED_SLOTS
from model.heatmaps import render_gaussians

logger = logging.getLogger(__name__)

__all__ = [
    "HEAD_BOTTOM_FRACTION",
    "HEAD_TOP_FACTOR",
    "BlazePoseBackbone",
    "MediaPipeUnavailableError",
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
# head_top = head centre + HEAD_TOP_FACTOR * (eye centre - mouth centre). The eye line lies about halfway
# between chin and vertex, ~1.8 eye-to-mouth distances below the top of the skull (hair included). The
# head centre is the mean of eye centre and ear centre, which stays over the skull in profile views where
# the eyes move to the face's edge. The eye-mouth vector follows head tilt, so no "up" axis is assumed.
HEAD_TOP_FACTOR = 1.8


class MediaPipeUnavailableError(ImportError):
    """mediapipe 0.10.21 (with ``mp.solutions`` and its bundled pose model) cannot be used here."""


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
    eyes = pts[[_LEFT_EYE, _RIGHT_EYE]].mean(axis=0)
    ears = pts[[_LEFT_EAR, _RIGHT_EAR]].mean(axis=0)
    xy[_HEAD_BOTTOM] = mouth + HEAD_BOTTOM_FRACTION * (shoulders - mouth)
    conf[_HEAD_BOTTOM] = vis[[_MOUTH_LEFT, _MOUTH_RIGHT, _LEFT_SHOULDER, _RIGHT_SHOULDER]].mean()
    xy[_HEAD_TOP] = (eyes + ears) / 2.0 + HEAD_TOP_FACTOR * (eyes - mouth)
    face = [_NOSE, _LEFT_EYE, _RIGHT_EYE, _LEFT_EAR, _RIGHT_EAR, _MOUTH_LEFT, _MOUTH_RIGHT]
    conf[_HEAD_TOP] = vis[face].mean()
    return xy, conf


def _load_pose_solution(min_detection_confidence: float) -> Any:
    """Builds mediapipe's legacy Pose solution (full model, bundled, no download) or raises a clear error."""
    try:
        import mediapipe as mp  # lazy: keeps `import model` light
    except ImportError as exc:
        raise MediaPipeUnavailableError(
            "the BlazePose backbone needs mediapipe 0.10.21 (pip install 'mediapipe==0.10.21' 'numpy<2'); "
            f"importing it failed: {exc}"
        ) from exc
    solutions = getattr(mp, "solutions", None)
    if solutions is None or not hasattr(solutions, "pose"):
        raise MediaPipeUnavailableError(
            f"mediapipe {getattr(mp, '__version__', '?')} has no mp.solutions.pose (removed in 0.10.30); "
            "install mediapipe==0.10.21, the last version that bundles the BlazePose model"
        )
    # model_complexity=1 is the only bundled model; 0 and 2 are downloaded on first use.
    return solutions.pose.Pose(
        static_image_mode=True,
        model_complexity=1,
        smooth_landmarks=False,
        enable_segmentation=False,
        min_detection_confidence=min_detection_confidence,
    )


class BlazePoseBackbone:
    """BlazePose on person crops, exposed with the HRNet backbone's interface (crops in, heatmaps out).

    One mediapipe ``Pose`` graph lives per instance; calls are serialised with a lock because mediapipe
    graphs are not thread-safe. Use as a context manager or call `close` to free the graph.

    Each crop is padded left/right with mid-grey to a 384x384 square before it is fed to mediapipe (its
    detector letterboxes to a square anyway). If no person is found, the crop is retried with its exact
    black pixels (the out-of-frame border that `crop_image` leaves) turned grey too. Measured on 36 jittered
    crops of three photographs (astronaut, camera man, Grace Hopper, plain and mirrored): crop as is 31/36
    found; grey square 30/36 with the best agreement with full-frame BlazePose (mean joint error 0.11
    shoulder widths vs 0.17); grey square then grey-filled retry 35/36 (0.12).

    Args:
        min_detection_confidence: mediapipe's person-detector threshold.
        sigma: Gaussian sigma of the rendered heatmaps, in heatmap pixels.
    """

    name = "blazepose"
    heatmap_size: tuple[int, int] = (96, 72)  # (H, W)
    input_size: tuple[int, int] = (384, 288)  # (H, W), crop pixels
    pad_value = 128

    def __init__(self, *, min_detection_confidence: float = 0.5, sigma: float = 2.0) -> None:
        if not 0.0 <= min_detection_confidence <= 1.0:
            raise ValueError(f"min_detection_confidence must be in [0, 1], got {min_detection_confidence}")
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.sigma = float(sigma)
        self._lock = threading.Lock()
        self._pose: Any = _load_pose_solution(min_detection_confidence)

    def close(self) -> None:
        """Frees the mediapipe graph; the backbone cannot be used afterwards."""
        with self._lock:
            if self._pose is not None:
                self._pose.close()
                self._pose = None

    def __enter__(self) -> BlazePoseBackbone:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def landmarks(self, image_bgr: np.ndarray) -> np.ndarray | None:
        """Runs BlazePose once on a BGR image of any size.

        Args:
            image_bgr: (H, W, 3) uint8, BGR as OpenCV reads it.

        Returns:
            (33, 3) x, y in pixels of `image_bgr` and visibility, or None when no person is found.
        """
        check_image(image_bgr, "image_bgr")
        rgb = np.ascontiguousarray(image_bgr[..., ::-1])  # mediapipe expects RGB
        with self._lock:
            if self._pose is None:
                raise RuntimeError("BlazePoseBackbone is closed")
            result = self._pose.process(rgb)
        if result.pose_landmarks is None:
            return None
        h, w = image_bgr.shape[:2]
        return np.array([(p.x * w, p.y * h, p.visibility) for p in result.pose_landmarks.landmark])

    def _crop_landmarks(self, crop: np.ndarray) -> np.ndarray | None:
        """BlazePose on one crop, grey-squared, with the black-border retry; landmarks in crop pixels."""
        h, w = crop.shape[:2]
        for attempt in range(2):
            image = crop
            if attempt == 1:
                image = crop.copy()
                image[(crop == 0).all(axis=-1)] = self.pad_value
            side = max(h, w)
            left, top = (side - w) // 2, (side - h) // 2
            square = cv2.copyMakeBorder(
                image, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT,
                value=(self.pad_value,) * 3,
            )
            found = self.landmarks(square)
            if found is not None:
                found[:, 0] -= left
                found[:, 1] -= top
                return found
        return None

    def keypoints(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The 17 PoseTrack joints per crop, before rendering.

        Args:
            crops_bgr: (N, 384, 288, 3) uint8 BGR crops (`model.transforms.crop_image`).

        Returns:
            xy (N, 17, 2) crop pixels and conf (N, 17) in [0, 1]; both zero for crops with no person.
        """
        crops = _check_crops(crops_bgr, self.input_size)
        xy = np.zeros((len(crops), NUM_KEYPOINTS, 2), dtype=np.float64)
        conf = np.zeros((len(crops), NUM_KEYPOINTS), dtype=np.float64)
        for i, crop in enumerate(crops):
            found = self._crop_landmarks(crop)
            if found is None:
                logger.debug("BlazePose found no person in crop %d of %d", i, len(crops))
                continue
            xy[i], conf[i] = posetrack_from_blazepose(found)
        return xy, conf

    def heatmaps(self, crops_bgr: np.ndarray) -> torch.Tensor:
        """Rough-pose heatmaps for the DCPose head.

        Args:
            crops_bgr: (N, 384, 288, 3) uint8 BGR crops.

        Returns:
            (N, 17, 96, 72) float32 CPU tensor: a Gaussian at each joint (crop pixels / 4), peak =
            the joint's confidence; all zeros for crops with no person.
        """
        xy, conf = self.keypoints(crops_bgr)
        stride = self.input_size[0] / self.heatmap_size[0]
        out = render_gaussians(
            torch.from_numpy(xy / stride).float(),
            torch.from_numpy(conf).float(),
            size=self.heatmap_size,
            sigma=self.sigma,
        )
        return out.float()


def check_image(image: np.ndarray, what: str) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"{what} must be an (H, W, 3) BGR array, got {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got {image.dtype}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"{what} is too small: {image.shape}")


def _check_crops(crops: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    expected = (input_size[0], input_size[1], 3)
    if not isinstance(crops, np.ndarray) or crops.ndim != 4 or tuple(crops.shape[1:]) != expected:
        shape = getattr(crops, "shape", type(crops).__name__)
        raise ValueError(f"crops_bgr must have shape (N, {expected[0]}, {expected[1]}, 3), got {shape}")
    if crops.dtype != np.uint8:
        raise ValueError(f"crops_bgr must be uint8 BGR crops, got dtype {crops.dtype}")
    return crops
