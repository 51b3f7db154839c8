"""Rough pose estimators behind one interface: person crops in, (N, 17, 96, 72) heatmaps out.

Every backbone satisfies `Backbone`: ``heatmaps(crops_bgr, geoms, frame_indices)`` takes uint8 BGR
crops cut by `model.transforms.crop_image` (384x288) and returns float32 CPU heatmaps in the crop's
heatmap geometry (crop pixels / 4). Real backbones look only at the pixels; the geometries and frame
indices are there for backbones that look up ground truth (`model.testing.simulated`, tests).

- `HRNetBackbone`: an `model.nets.hrnet.HRNet` on a device, batched, under ``torch.inference_mode``.
- `BlazePoseHeatmaps`: the offline default, `model.backbones.blazepose.BlazePoseBackbone` (mediapipe) adapted
  to the protocol; mediapipe is imported only when the first crop is processed.
- `build_backbone(name, checkpoint, device)`: the serving path's constructor.

``version`` identifies the weights (``"hrnet_w48:<sha1[:8]>"``) so that caches of heatmaps and model
version names change when the weights do.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch

from model.transforms import HEATMAP_SIZE, INPUT_SIZE, CropGeometry, to_input_tensor

if TYPE_CHECKING:
    from model.backbones.blazepose import BlazePoseBackbone
    from model.nets.hrnet import HRNet

logger = logging.getLogger(__name__)

__all__ = [
    "BACKBONE_NAMES",
    "Backbone",
    "BlazePoseHeatmaps",
    "HRNetBackbone",
    "build_backbone",
    "file_digest",
]

BACKBONE_NAMES = ("blazepose", "hrnet_w48", "hrnet_w32")
_HRNET_NAME = re.compile(r"hrnet_w(\d+)")
_NUM_JOINTS = 17


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


def _check_crops(crops_bgr: np.ndarray) -> np.ndarray:
    w, h = INPUT_SIZE
    if not isinstance(crops_bgr, np.ndarray) or crops_bgr.ndim != 4 or crops_bgr.shape[1:] != (h, w, 3):
        shape = getattr(crops_bgr, "shape", type(crops_bgr).__name__)
        raise ValueError(f"crops_bgr must be an (N, {h}, {w}, 3) array of BGR crops, got {shape}")
    if crops_bgr.dtype != np.uint8:
        raise ValueError(f"crops_bgr must be uint8, got {crops_bgr.dtype}")
    return crops_bgr


def _empty_heatmaps() -> torch.Tensor:
    w, h = HEATMAP_SIZE
    return torch.zeros((0, _NUM_JOINTS, h, w), dtype=torch.float32)


def file_digest(path: str | os.PathLike[str], length: int = 8) -> str:
    """First `length` hex digits of the SHA-1 of a file (identifies a weights file in version names)."""
    sha = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:length]


class HRNetBackbone:
    """An HRNet on a device, batched: crops -> normalised tensors -> heatmaps on the CPU.

    Args:
        net: the network; it is moved to `device` and put in eval mode.
        device: where it runs ("cpu", "cuda", "cuda:1", or a torch.device).
        batch_size: crops per forward pass.
        name: backbone name; defaults to "hrnet_w<width>".
        version: weights identifier; defaults to "<name>:random" (no checkpoint).
    """

    def __init__(
        self,
        net: HRNet,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        *,
        name: str | None = None,
        version: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.batch_size = int(batch_size)
        self.name = name or f"hrnet_w{getattr(net, 'width', '?')}"
        self.version = version or f"{self.name}:random"

    def heatmaps(
        self,
        crops_bgr: np.ndarray,
        geoms: Sequence[CropGeometry] | None = None,
        frame_indices: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """(N, 384, 288, 3) uint8 BGR crops -> (N, 17, 96, 72) float32 CPU heatmaps (geoms unused)."""
        crops = _check_crops(crops_bgr)
        if len(crops) == 0:
            return _empty_heatmaps()
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                x = to_input_tensor(crops[start : start + self.batch_size], device=self.device)
                outputs.append(self.net(x).to("cpu", torch.float32))
        return torch.cat(outputs)


class BlazePoseHeatmaps:
    """`model.backbones.blazepose.BlazePoseBackbone` behind the `Backbone` protocol (the offline default).

    The mediapipe graph is created on first use (so building a predictor stays cheap and
    `import model` never imports mediapipe) and shared with the person detector through `pose`.

    Args:
        min_detection_confidence: mediapipe's person-detector threshold.
        sigma: Gaussian sigma of the rendered heatmaps, in heatmap pixels.
    """

    name = "blazepose"
    # The pose model is the one bundled in mediapipe 0.10.21 (the only version that ships it).
    version = "blazepose"

    def __init__(self, *, min_detection_confidence: float = 0.5, sigma: float = 2.0) -> None:
        self.min_detection_confidence = float(min_detection_confidence)
        self.sigma = float(sigma)
        self._pose: BlazePoseBackbone | None = None
        self._lock = threading.Lock()

    @property
    def pose(self) -> BlazePoseBackbone:
        """The underlying mediapipe backbone (created on first access)."""
        with self._lock:
            if self._pose is None:
                from model.backbones.blazepose import BlazePoseBackbone  # lazy: imports mediapipe

                self._pose = BlazePoseBackbone(
                    min_detection_confidence=self.min_detection_confidence, sigma=self.sigma
                )
            return self._pose

    def heatmaps(
        self,
        crops_bgr: np.ndarray,
        geoms: Sequence[CropGeometry] | None = None,
        frame_indices: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """(N, 384, 288, 3) uint8 BGR crops -> (N, 17, 96, 72) float32 CPU heatmaps (geoms unused)."""
        crops = _check_crops(crops_bgr)
        if len(crops) == 0:
            return _empty_heatmaps()
        return self.pose.heatmaps(crops).to(torch.float32)

    def close(self) -> None:
        """Frees the mediapipe graph (it is re-created if the backbone is used again)."""
        with self._lock:
            if self._pose is not None:
                self._pose.close()
                self._pose = None


def build_backbone(
    name: str,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    *,
    batch_size: int = 32,
    allow_random: bool = False,
) -> Backbone:
    """The backbone called `name`, with its weights.

    Args:
        name: "blazepose" (bundled weights, no checkpoint), "hrnet_w48", "hrnet_w32" or "hrnet_w<width>".
        checkpoint: HRNet weights: a bare HRNet state dict, an official DCPose checkpoint (its
            ``rough_pose_estimation_net.*`` part) or our format holding a backbone.
        device: where an HRNet runs (BlazePose runs on the CPU through mediapipe).
        batch_size: crops per HRNet forward pass.
        allow_random: build an HRNet without a checkpoint (random weights: benchmarks and tests only).

    Returns:
        The backbone.

    Raises:
        ValueError: unknown name ("simulated" is built from ground truth by `model.testing.simulated`), a
            checkpoint given to BlazePose, or an HRNet without weights.
        FileNotFoundError: the checkpoint file does not exist.
        model.checkpoint.CheckpointMismatchError: the checkpoint does not fit the backbone (its
            message names the file and the mismatching keys).
    """
    if name == "blazepose":
        if checkpoint is not None:
            raise ValueError(
                f"the blazepose backbone uses the weights bundled with mediapipe; it takes no checkpoint "
                f"(got {checkpoint}). Pass a head checkpoint as the head, or use --backbone hrnet_w48."
            )
        return BlazePoseHeatmaps()
    match = _HRNET_NAME.fullmatch(name)
    if match is None:
        hint = " (the simulated backbone needs ground truth: model.testing.simulated.SimulatedBackbone)"
        raise ValueError(
            f"unknown backbone {name!r}; expected one of {', '.join(BACKBONE_NAMES)} or 'hrnet_w<width>'"
            + (hint if name == "simulated" else "")
        )
    from model.checkpoint import load_checkpoint
    from model.nets.hrnet import HRNet

    net = HRNet(width=int(match.group(1)), num_joints=_NUM_JOINTS)
    if checkpoint is None:
        if not allow_random:
            raise ValueError(
                f"backbone {name} needs weights: pass a checkpoint (an HRNet state dict or the official "
                "DCPose checkpoint PoseTrack17_DCPose.pth); none can be downloaded here"
            )
        logger.warning("backbone %s has random weights (benchmark/test use only)", name)
        return HRNetBackbone(net, device, batch_size, name=name)
    path = Path(checkpoint)
    load_checkpoint(path, net)  # CheckpointMismatchError names the file and the keys that do not fit
    version = f"{name}:{file_digest(path)}"
    logger.info("backbone %s loaded from %s", version, path)
    return HRNetBackbone(net, device, batch_size, name=name, version=version)
