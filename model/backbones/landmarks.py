"""BlazePose's landmark model run directly on a region of interest: a known box always gets a pose.

``pose_landmark_full.tflite`` (bundled in mediapipe 0.10.21) takes a 256x256 RGB crop in [0, 1]; its
outputs, in model order (measured on 0.10.21):

0. (195,) = 39 x (x, y, z, visibility logit, presence logit), x/y in crop pixels. Landmarks 0-32 are
   BlazePose's body points; 33 and 34 are the alignment points (hip centre and a full-body scale
   point) from which mediapipe places the next frame's region; 35-38 are auxiliary.
1. (1,) pose presence, already a probability. 2. (65536,) segmentation logits. 3. (159744,) =
   64x64x39 heatmap logits (row, column, landmark; cell (r, c) lies at crop pixel (4c, 4r), like the
   landmarks). 4. (117,) world landmarks.

As in mediapipe's own pose graph (its heatmap refinement step: a 7x7 window, landmarks whose window
peaks below 0.5 are kept), each body landmark is moved to the sigmoid-weighted mean of the heatmap
cells around it. Measured on the real stills and the held-out images with their boxes given (538
limb joints): median error 3.89% -> 3.41% of the box diagonal, within PCKh@0.5 59.7% -> 61.7%. The
window's peak also weighs the joint's confidence (`PoseResult.confidence`).

A `Roi` is a rotated square (centre, side, rotation in radians, clockwise in image coordinates; the
crop's up axis is the image direction (sin r, -cos r)). `roi_landmarks` is the strategy for a known
person box, measured on the real stills with their boxes given (21 people, limb joints within 0.1 x
box diagonal): square of 1.25 x the box's long side, 1 pass 76.1%; plus one re-alignment pass on the
model's own alignment points (mediapipe's tracking step) 82.5%; plus two 83.8% (the default). Several
scales or rotations did not beat re-alignment. mediapipe's own pipeline runs a single-person detector
first and returns nothing when it rejects the crop; here the model always runs and an uncertain pose
just gets low confidences.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from annotation_io.types import Box
from model.backbones.tflite import TfliteGraph

__all__ = ["HEAD_TOP_FACTOR", "LandmarkModel", "PoseResult", "Roi", "box_fit", "check_landmark_model", "fuse_poses",
           "head_top", "head_top_from", "refine_from_heatmaps", "roi_landmarks", "up_rotation"]

LANDMARK_MODEL = "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"
CROP = 256  # landmark model input side
NUM_ALL = 39  # 33 body points + 6 auxiliary
NUM_BODY = 33
HIP_CENTRE, SCALE_POINT = 33, 34  # alignment points (mediapipe's pose_landmarks_to_roi)
HEATMAP_SIDE = 64  # heatmap cells per side
HEATMAP_STRIDE = CROP // HEATMAP_SIDE  # crop pixels per cell
REFINE_KERNEL, REFINE_MIN_CONFIDENCE = 7, 0.5  # mediapipe's pose graph: window side, least peak to refine
PEAK_SURE = 0.6  # a heatmap peak this high leaves a landmark's confidence as it is; lower ones scale it down
ROI_SCALE = 1.25  # mediapipe's ROI enlargement around the alignment square
MIN_CONFIDENCE = 1e-3  # confidences are floored: an uncertain joint is still returned
CORE_LANDMARKS = (0, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)  # nose, shoulders .. ankles
_REALIGN_LIMITS = (0.6, 2.5)  # a re-aligned ROI side stays within these x the box's long side
_EYES, _EARS, _MOUTH = (2, 5), (7, 8), (9, 10)  # BlazePose landmark pairs (left, right)
# head_top = head centre + HEAD_TOP_FACTOR * (eye centre - mouth centre). The eye line lies about halfway
# between chin and vertex, ~1.8 eye-to-mouth distances below the top of the skull (hair included). The
# head centre is the mean of eye centre and ear centre, which stays over the skull in profile views where
# the eyes move to the face's edge. The eye-mouth vector follows head tilt, so no "up" axis is assumed.
HEAD_TOP_FACTOR = 1.8
BODY_BOX_MARGIN = 0.05  # a body box grows by this x its long side (skin and clothes beyond the landmarks)


def head_top(xy: np.ndarray) -> np.ndarray:
    """(2,) the top of the head from BlazePose's (>= 11, 2) face landmarks (see HEAD_TOP_FACTOR)."""
    eyes, ears, mouth = (np.asarray(xy, float)[list(pair)].mean(axis=0) for pair in (_EYES, _EARS, _MOUTH))
    return head_top_from(eyes, ears, mouth)


def head_top_from(eyes: np.ndarray, ears: np.ndarray, mouth: np.ndarray) -> np.ndarray:
    """(2,) the top of the head from the eye, ear and mouth centres (see HEAD_TOP_FACTOR)."""
    return (eyes + ears) / 2.0 + HEAD_TOP_FACTOR * (eyes - mouth)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def up_rotation(up: Sequence[float]) -> float:
    """The rotation (radians) that turns the image direction `up` into the crop's up axis."""
    dx, dy = float(up[0]), float(up[1])
    return 0.0 if dx == 0.0 and dy == 0.0 else math.atan2(dx, -dy)


@dataclass(frozen=True)
class Roi:
    """A rotated square of a frame: centre (cx, cy), side `size` px, `rotation` radians."""

    cx: float
    cy: float
    size: float
    rotation: float = 0.0

    @classmethod
    def from_box(cls, box: Box, scale: float = ROI_SCALE, rotation: float = 0.0) -> Roi:
        """The square around a box: side = `scale` x its long side, same centre."""
        return cls(box.x + box.w / 2.0, box.y + box.h / 2.0, max(box.w, box.h) * scale, rotation)

    @classmethod
    def from_alignment(cls, centre: Sequence[float], scale_point: Sequence[float],
                       scale: float = ROI_SCALE) -> Roi:
        """BlazePose's ROI from two alignment points: side 2|scale_point - centre| x `scale`, centre->point up."""
        c, d = np.asarray(centre, float), np.asarray(scale_point, float) - np.asarray(centre, float)
        return cls(float(c[0]), float(c[1]), 2.0 * float(np.hypot(*d)) * scale, up_rotation(d))

    @property
    def valid(self) -> bool:
        return bool(np.isfinite([self.cx, self.cy, self.size, self.rotation]).all() and self.size >= 8)

    def to_crop(self, side: int = CROP) -> np.ndarray:
        """(2, 3) affine: frame pixels -> pixels of a side x side crop of this ROI."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        a = (side / self.size) * np.array([[c, s], [-s, c]])  # rows: the crop's x and y axes
        return np.hstack([a, (side / 2.0 - a @ np.array([self.cx, self.cy]))[:, None]])

    def to_frame(self, pts: np.ndarray, side: int = CROP) -> np.ndarray:
        """(N, 2) crop pixels of a side x side crop -> frame pixels."""
        inv = cv2.invertAffineTransform(self.to_crop(side))
        return np.asarray(pts, float) @ inv[:, :2].T + inv[:, 2]


@dataclass(frozen=True)
class PoseResult:
    """One landmark pass on one ROI, in frame pixels.

    Attributes:
        xy: (39, 2) landmarks in frame pixels.
        visibility: (39,) probability that the landmark is visible.
        presence: (39,) probability that the landmark lies inside the crop.
        score: the model's pose presence in [0, 1].
        roi: the ROI it ran on.
        heatmap_peak: (39,) how sure the model's heatmap is of each landmark's place (`refine_from_heatmaps`),
            or None where the heatmaps were not read.
    """

    xy: np.ndarray
    visibility: np.ndarray
    presence: np.ndarray
    score: float
    roi: Roi
    heatmap_peak: np.ndarray | None = None

    def confidence(self) -> np.ndarray:
        """(39,) visibility x presence x pose score, floored at 1e-3 (never "nothing").

        Where the heatmaps were read, it is also scaled by min(1, heatmap peak / 0.6): the peak says how
        sure the model is of *where* a joint is, which visibility does not; a joint whose heatmap peaks at
        0.6 or more keeps its confidence. Measured on the real stills with their boxes given: poseval AP
        51.4 -> 58.0, the joints unchanged. Geometry (`box`, `body_box`) uses visibility x presence alone.
        """
        conf = self.visibility * self.presence * self.score
        if self.heatmap_peak is not None:
            conf = conf * np.minimum(1.0, self.heatmap_peak / PEAK_SURE)
        return np.clip(conf, MIN_CONFIDENCE, 1.0)

    def landmarks(self) -> np.ndarray:
        """(33, 3) body landmarks: x, y (frame pixels) and confidence."""
        return np.hstack([self.xy[:NUM_BODY], self.confidence()[:NUM_BODY, None]])

    def box(self, min_conf: float = 0.3, margin: float = 0.08) -> Box:
        """Tight box of the confident core landmarks (all of them when fewer than 3), grown by `margin`."""
        idx = np.asarray(CORE_LANDMARKS)
        use = idx[self.visibility[idx] * self.presence[idx] >= min_conf]
        pts = self.xy[use if len(use) >= 3 else idx]
        (x1, y1), (x2, y2) = pts.min(0), pts.max(0)
        pad = margin * max(x2 - x1, y2 - y1)
        return Box.from_xyxy(x1 - pad, y1 - pad, x2 + pad, y2 + pad)

    def body_box(self, min_conf: float = 0.3, margin: float = BODY_BOX_MARGIN) -> Box:
        """The person box an annotator would draw: the extent of the confident body landmarks (hands and
        feet included) and the top of the head, grown by `margin` x its long side.

        `box` (core joints only) is what `box_fit` compares with a given box; this one is the box of a
        person found without one. Measured on the real stills with the detector (limb joints within
        0.1 x box diagonal): core joints + 8% 72.2%, this box 78.6% (margin 0: 74.4%).
        """
        conf = self.visibility[:NUM_BODY] * self.presence[:NUM_BODY]
        use = np.flatnonzero(conf >= min_conf)
        pts = self.xy[use if len(use) >= 3 else np.arange(NUM_BODY)]
        pts = np.vstack([pts, head_top(self.xy)[None]])
        (x1, y1), (x2, y2) = pts.min(0), pts.max(0)
        pad = margin * max(x2 - x1, y2 - y1)
        return Box.from_xyxy(x1 - pad, y1 - pad, x2 + pad, y2 + pad)

    def next_roi(self) -> Roi:
        """mediapipe's ROI for the next pass or frame, from alignment landmarks 33 and 34."""
        return Roi.from_alignment(self.xy[HIP_CENTRE], self.xy[SCALE_POINT])


def refine_from_heatmaps(xy: np.ndarray, heatmap_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Body landmarks moved to the heatmap's local centre of mass (mediapipe's refinement step).

    Args:
        xy: (>= 33, 2) landmarks in crop pixels.
        heatmap_logits: (64, 64, >= 33) heatmap logits (row, column, landmark).

    Returns:
        xy: a copy of `xy` in which each body landmark (0-32) whose 7x7 window of cells around it peaks
            at a probability of at least 0.5 is the probability-weighted mean of that window's cell
            positions; the others, and landmarks outside the heatmap, are unchanged.
        peak: (len(xy),) the peak probability of each body landmark's window (0 outside the heatmap),
            1 for the auxiliary points.
    """
    out = np.array(xy, dtype=np.float64)
    peak = np.ones(len(out))
    half = REFINE_KERNEL // 2
    for j in range(NUM_BODY):
        col, row = np.floor(out[j] / HEATMAP_STRIDE)
        if not (0 <= col < HEATMAP_SIDE and 0 <= row < HEATMAP_SIDE):
            peak[j] = 0.0  # also NaN
            continue
        r0, c0 = max(int(row) - half, 0), max(int(col) - half, 0)
        window = _sigmoid(heatmap_logits[r0 : int(row) + half + 1, c0 : int(col) + half + 1, j])
        peak[j], total = window.max(), window.sum()
        if peak[j] < REFINE_MIN_CONFIDENCE or total <= 0:
            continue
        rows, cols = np.indices(window.shape)
        out[j] = HEATMAP_STRIDE * np.array([((cols + c0) * window).sum(), ((rows + r0) * window).sum()]) / total
    return out, peak


class LandmarkModel:
    """``pose_landmark_full.tflite`` (or another BlazePose landmark model) on ROIs of BGR images (parts
    outside the image are black).

    Args:
        refine: move body landmarks to their heatmap's local centre of mass and weigh their confidence by
            the heatmap's peak (`refine_from_heatmaps`, `PoseResult.confidence`).
        model_path: a BlazePose landmark model with the bundled one's inputs and outputs (e.g.
            ``pose_landmark_heavy.tflite``): an absolute path, or one relative to the mediapipe package's
            folder. Default: the bundled ``pose_landmark_full.tflite``. `check_landmark_model` says whether
            a file is one.
    """

    def __init__(self, *, refine: bool = True, model_path: str | None = None) -> None:
        self.model_path = LANDMARK_MODEL if model_path is None else str(model_path)
        self._graph = TfliteGraph(self.model_path, (CROP, CROP), (0.0, 1.0), 5)
        self.refine = refine
        self.calls = 0

    def close(self) -> None:
        self._graph.close()

    def run(self, image_bgr: np.ndarray, roi: Roi) -> PoseResult:
        """One pass on `roi` of a BGR image; everything mapped back to image pixels."""
        crop = cv2.warpAffine(image_bgr, roi.to_crop(), (CROP, CROP), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        raw, flag, _, heatmaps, *_ = self._graph.run(np.ascontiguousarray(crop[..., ::-1]))
        self.calls += 1
        lm = raw.reshape(NUM_ALL, 5).astype(np.float64)
        xy, peak = lm[:, :2], None
        if self.refine:
            xy, peak = refine_from_heatmaps(xy, heatmaps.reshape(HEATMAP_SIDE, HEATMAP_SIDE, NUM_ALL))
        return PoseResult(roi.to_frame(xy), _sigmoid(lm[:, 3]), _sigmoid(lm[:, 4]), float(flag[0]), roi, peak)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ax1, ay1, ax2, ay2 = a.xyxy
    bx1, by1, bx2, by2 = b.xyxy
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def box_fit(pose: PoseResult, box: Box) -> float:
    """How well a pose belongs to a person box: pose score x IoU(its landmark box, the box).

    The IoU picks the box's person when a crop holds several people (one person per box).
    """
    return pose.score * box_iou(pose.box(), box)


def check_landmark_model(path: str) -> None:
    """Raises ValueError naming `path` unless it is a BlazePose landmark model that runs here (one pass on
    a black crop gives the bundled model's five outputs, of its sizes).

    Raises:
        MediaPipeUnavailableError: mediapipe cannot be imported.
    """
    sizes = (NUM_ALL * 5, 1, CROP * CROP, HEATMAP_SIDE * HEATMAP_SIDE * NUM_ALL, NUM_ALL * 3)
    what = f"{path} is not a BlazePose landmark model (such as pose_landmark_heavy.tflite)"
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    with open(path, "rb") as f:
        if f.read(8)[4:8] != b"TFL3":  # the FlatBuffer identifier of every .tflite file
            raise ValueError(f"{what}: not a TFLite file")
    def reason(exc: Exception) -> str:  # mediapipe's last line names the failing check (tensor sizes, ...)
        return ((str(exc).strip().splitlines() or [type(exc).__name__])[-1])[:200]

    try:
        model = LandmarkModel(model_path=os.path.abspath(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise ValueError(f"{what}: {reason(exc)}") from exc
    try:
        outputs = model._graph.run(np.zeros((CROP, CROP, 3), np.uint8))
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{what}: {reason(exc)}") from exc
    finally:
        try:
            model.close()
        except (RuntimeError, ValueError):  # a graph that failed to run may fail to close too
            pass
    got = tuple(len(o) for o in outputs)
    if got != sizes:
        raise ValueError(f"{what}: its outputs have sizes {got}, expected {sizes}")


def fuse_poses(first: PoseResult, second: PoseResult) -> PoseResult:
    """Two landmark models' passes on one ROI as one pose: each landmark the mean of the two weighted by
    their confidences; visibility, presence, pose score and heatmap peaks averaged; `first`'s ROI."""
    a, b = first.confidence()[:, None], second.confidence()[:, None]
    xy = (a * first.xy + b * second.xy) / (a + b)  # confidences are floored: never 0 / 0
    peak = None
    if first.heatmap_peak is not None and second.heatmap_peak is not None:
        peak = (first.heatmap_peak + second.heatmap_peak) / 2.0
    return PoseResult(xy, (first.visibility + second.visibility) / 2.0, (first.presence + second.presence) / 2.0,
                      (first.score + second.score) / 2.0, first.roi, peak)  # fmt: skip


def roi_landmarks(model: LandmarkModel, image_bgr: np.ndarray, box: Box, *, realign: int = 2,
                  prev: PoseResult | None = None, second: LandmarkModel | None = None) -> PoseResult:  # fmt: skip
    """The pose of the person in a known box; never gated by a detector.

    Candidates: the square of 1.25 x the box's long side (rotated like `prev`'s alignment points when
    the track's previous pose is given), then `realign` passes on the ROI each pass's alignment
    points give (side kept within 0.6-2.5 x the box's long side). The candidate that fits the box
    best (`box_fit`) wins. With a `second` model, it also runs once on the winner's ROI and the two
    poses are fused (`fuse_poses`).

    Args:
        model: the landmark model.
        image_bgr: (H, W, 3) uint8 image.
        box: the person box in image pixels.
        realign: re-alignment passes.
        prev: the track's pose on the previous frame, or None.
        second: a second landmark model (e.g. BlazePose's heavy one), or None.
    """
    rotation = prev.next_roi().rotation if prev is not None and prev.next_roi().valid else 0.0
    pose = model.run(image_bgr, Roi.from_box(box, ROI_SCALE, rotation))
    candidates = [pose]
    long_side = max(box.w, box.h)
    for _ in range(realign):
        nxt = pose.next_roi()
        if not nxt.valid:
            break
        side = float(np.clip(nxt.size, _REALIGN_LIMITS[0] * long_side, _REALIGN_LIMITS[1] * long_side))
        pose = model.run(image_bgr, Roi(nxt.cx, nxt.cy, side, nxt.rotation))
        candidates.append(pose)
    best = max(candidates, key=lambda p: box_fit(p, box))
    return best if second is None else fuse_poses(best, second.run(image_bgr, best.roi))
