"""Training loss: the joint-wise MSE on target-weighted heatmaps (DCPose's JointMSELoss, §5.5)."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over joints of MSE(pred_k * w_k, target_k * w_k), each MSE a mean over B * H * W.

    As released (no 0.5 factor, unlike HRNet's); joints with weight 0 still count in the
    denominator, so the loss scale does not depend on how many joints are labelled.

    Args:
        pred: (B, K, H, W) predicted heatmaps.
        target: (B, K, H, W) target heatmaps (`model.heatmaps.encode`).
        weight: (B, K) or (B, K, 1) target weights.

    Returns:
        Scalar tensor.
    """
    if pred.ndim != 4 or pred.shape != target.shape:
        raise ValueError(
            f"pred and target must both be (B, K, H, W) with equal shapes, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    b, k = pred.shape[:2]
    if weight.shape not in ((b, k), (b, k, 1)):
        raise ValueError(f"weight must have shape ({b}, {k}) or ({b}, {k}, 1), got {tuple(weight.shape)}")
    w = weight.reshape(b, k, 1, 1).to(pred.dtype)
    per_joint = ((pred * w - target * w) ** 2).mean(dim=(0, 2, 3))  # (K,)
    return per_joint.mean()
