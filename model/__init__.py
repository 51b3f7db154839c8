"""PyTorch side of the project: networks, checkpoints, backbones and the video Predictor.

Map of the package:
- `hrnet`, `blocks`, `dcpose`: HRNet backbone, RSB blocks + DCNv2, the DCPose temporal head.
- `transforms`, `heatmaps`: crop geometry and the heatmap codec shared by training and inference.
- `checkpoint`: save/load our checkpoints, official DCPose files and bare HRNet state dicts.
- `blazepose`: mediapipe BlazePose as the offline backbone and last-resort person detector.
- `backbones`: the Backbone protocol (crops -> heatmaps), HRNet and BlazePose adapters, build_backbone.
- `tracking`, `assignment`: person boxes and track ids (human, interpolated, carried, detected).
- `inference`: Predictor / InferConfig (the facade); `video_job`: one call's pipeline (boxes,
  neighbour frames, cached/exact modes, label-aware heatmaps, output assembly).
- `simulated`: a ground-truth backbone that errs like real ones (benchmarks and tests, never served).
- `dataset`, `heatmap_cache`, `losses`, `train`, `train_cli`: head training on cached backbone
  heatmaps (`python -m model.training.loop`).
- `predict`, `predict_input`, `render`: the prediction CLI (`python -m model.cli.predict`) and overlays.
- `bench`, `bench_video`: network and video-pipeline benchmarks.

The names below are re-exported lazily, so `import model` imports neither torch nor mediapipe.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.checkpoint import load_checkpoint, save_checkpoint
    from model.nets.dcpose import DCPose, build_dcpose
    from model.pipeline.predictor import InferConfig, Predictor

__all__ = ["DCPose", "InferConfig", "Predictor", "build_dcpose", "load_checkpoint", "save_checkpoint"]

_SOURCES = {
    "DCPose": "model.nets.dcpose",
    "build_dcpose": "model.nets.dcpose",
    "InferConfig": "model.pipeline.predictor",
    "Predictor": "model.pipeline.predictor",
    "load_checkpoint": "model.checkpoint",
    "save_checkpoint": "model.checkpoint",
}


def __getattr__(name: str) -> Any:
    """Imports a re-exported name on first use (PEP 562)."""
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
