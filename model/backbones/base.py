"""The Backbone protocol: person crops in, (N, 17, 96, 72) heatmaps out; the per-video hook; shared checks.

Every backbone satisfies `Backbone`: ``heatmaps(crops_bgr, geoms, frame_indices)`` takes uint8 BGR
crops cut by `model.transforms.crop_image` (384x288) and returns float32 CPU heatmaps in the crop's
heatmap geometry (crop pixels / 4). Real backbones look only at the pixels; the geometries and frame
indices are there for backbones that look up ground truth (test support). ``version`` identifies the
weights (``"hrnet_w48:<sha1[:8]>"``) so that caches of heatmaps and model version names change when
the weights do. A backbone that needs to know which video its crops come from has
``for_video(name)``; `bind_video` is the one place that calls it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from model.heatmaps import render_gaussians
from model.transforms import HEATMAP_SIZE, INPUT_SIZE, CropGeometry

logger = logging.getLogger(__name__)

__all__ = ["NUM_JOINTS", "Backbone", "bind_video", "check_crops", "crop_heatmaps", "empty_heatmaps", "file_digest"]

NUM_JOINTS = 17


@runtime_checkable
class Backbone(Protocol):
    """A rough pose estimator as the predictor and the trainer see it.

    Attributes:
        name: kind of backbone ("blazepose", "hrnet_w48", "simulated", ...).
        version: identifies the weights, e.g. "hrnet_w48:1a2b3c4d".
    """

    name: str
    version: str

    def heatmaps(
        self, crops_bgr: np.ndarray, geoms: Sequence[CropGeometry], frame_indices: Sequence[int]
    ) -> torch.Tensor:
        """(N, 384, 288, 3) uint8 BGR crops -> (N, 17, 96, 72) float32 CPU heatmaps."""
        ...


def bind_video(backbone: Any, video: str) -> Any:
    """The per-video hook: the backbone to use for crops of `video` (`backbone.for_video(video)` where it has one).

    Real backbones look only at pixels and are returned unchanged.
    """
    bind = getattr(backbone, "for_video", None)
    return bind(video) if callable(bind) else backbone


def check_crops(crops_bgr: np.ndarray) -> np.ndarray:
    w, h = INPUT_SIZE
    if not isinstance(crops_bgr, np.ndarray) or crops_bgr.ndim != 4 or crops_bgr.shape[1:] != (h, w, 3):
        shape = getattr(crops_bgr, "shape", type(crops_bgr).__name__)
        raise ValueError(f"crops_bgr must be an (N, {h}, {w}, 3) array of BGR crops, got {shape}")
    if crops_bgr.dtype != np.uint8:
        raise ValueError(f"crops_bgr must be uint8, got {crops_bgr.dtype}")
    return crops_bgr


def empty_heatmaps() -> torch.Tensor:
    w, h = HEATMAP_SIZE
    return torch.zeros((0, NUM_JOINTS, h, w), dtype=torch.float32)


def crop_heatmaps(xy: np.ndarray, conf: np.ndarray, sigma: float) -> torch.Tensor:
    """Keypoint backbones' output: (N, 17, 2) joints in crop pixels and (N, 17) confidences ->
    (N, 17, 96, 72) float32 heatmaps, a Gaussian at each joint (crop pixels / 4) whose peak is its confidence."""
    w, h = HEATMAP_SIZE
    stride = INPUT_SIZE[1] / h
    return render_gaussians(torch.from_numpy(xy / stride).float(), torch.from_numpy(conf).float(),
                            size=(h, w), sigma=sigma).float()  # fmt: skip


def file_digest(path: str | os.PathLike[str], length: int = 8) -> str:
    """First `length` hex digits of the SHA-1 of a file (identifies a weights file in version names)."""
    sha = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:length]


