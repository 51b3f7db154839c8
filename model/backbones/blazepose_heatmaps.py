"""BlazePose behind the `Backbone` protocol (the offline default); mediapipe loads on first use."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from model.backbones.base import check_crops, empty_heatmaps, file_digest
from model.transforms import CropGeometry

if TYPE_CHECKING:
    from model.backbones.blazepose import BlazePoseBackbone

__all__ = ["BlazePoseHeatmaps"]


class BlazePoseHeatmaps:
    """`model.backbones.blazepose.BlazePoseBackbone` behind the `Backbone` protocol (the offline default).

    The mediapipe graph is created on first use (so building a predictor stays cheap and
    `import model` never imports mediapipe) and shared with the person detector through `pose`.

    Args:
        sigma: Gaussian sigma of the rendered heatmaps, in heatmap pixels.
        second_model: a second BlazePose landmark model fused with the bundled one on each box
            (``pose_landmark_heavy.tflite``; see `BlazePoseBackbone`), checked here; or None.

    Raises:
        ValueError: `second_model` is not a BlazePose landmark model (the message names the file).
    """

    name = "blazepose"

    def __init__(self, *, sigma: float = 2.0, second_model: str | os.PathLike[str] | None = None) -> None:
        self.sigma = float(sigma)
        self.second_model = None if second_model is None else os.path.abspath(second_model)
        # The pose model is the one bundled in mediapipe 0.10.21 (the only version that ships it); "2": run on
        # the box directly (no detector gate), so heatmap caches of the gated version are not reused.
        self.version = "blazepose2"
        if self.second_model is not None:
            from model.backbones.landmarks import check_landmark_model  # lazy: imports mediapipe

            check_landmark_model(self.second_model)
            self.version = f"blazepose2+{file_digest(self.second_model)}"
        self._pose: BlazePoseBackbone | None = None
        self._lock = threading.Lock()

    @property
    def pose(self) -> BlazePoseBackbone:
        """The underlying mediapipe backbone (created on first access)."""
        with self._lock:
            if self._pose is None:
                from model.backbones.blazepose import BlazePoseBackbone  # lazy: imports mediapipe

                self._pose = BlazePoseBackbone(sigma=self.sigma, second_model=self.second_model)
            return self._pose

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
        return self.pose.heatmaps(crops).to(torch.float32)

    def close(self) -> None:
        """Frees the mediapipe graph (it is re-created if the backbone is used again)."""
        with self._lock:
            if self._pose is not None:
                self._pose.close()
                self._pose = None
