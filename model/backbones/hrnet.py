"""HRNet behind the `Backbone` protocol: batched crops on a device, heatmaps back on the CPU."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model.backbones.base import check_crops, empty_heatmaps
from model.nets.hrnet import HRNet
from model.nets.runtime import Precision, autocast, check_precision, place_module
from model.transforms import CropGeometry, to_input_tensor

__all__ = ["HRNetBackbone"]


class HRNetBackbone:
    """An HRNet on a device, batched: crops -> normalised tensors -> heatmaps on the CPU.

    Args:
        net: the network; it is moved to `device` and put in eval mode.
        device: where it runs ("cpu", "cuda", "cuda:1", or a torch.device).
        batch_size: crops per forward pass.
        name: backbone name; defaults to "hrnet_w<width>".
        version: weights identifier; defaults to "<name>:random" (no checkpoint).
        precision: "fp32", "bf16" or "fp16" (CUDA) autocast (`model.nets.runtime`); heatmaps come
            back as float32 either way.
    """

    def __init__(
        self,
        net: HRNet,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        *,
        name: str | None = None,
        version: str | None = None,
        precision: Precision = "fp32",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.precision = check_precision(precision, self.device)
        self.net = place_module(net, self.device)  # eval; channels_last on CUDA
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
        crops = check_crops(crops_bgr)
        if len(crops) == 0:
            return empty_heatmaps()
        outputs = []
        with torch.inference_mode(), autocast(self.device, self.precision):
            for start in range(0, len(crops), self.batch_size):
                x = to_input_tensor(crops[start : start + self.batch_size], device=self.device)
                outputs.append(self.net(x).to("cpu", torch.float32))
        return torch.cat(outputs)
