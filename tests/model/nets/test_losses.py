"""Tests for model.nets.losses.weighted_mse (DCPose's JointMSELoss with target weights)."""

from __future__ import annotations

import pytest
import torch

from model.nets.losses import weighted_mse


def test_weighted_mse_by_hand() -> None:
    # B=1, K=2, 1x2 maps. Joint 0: diffs (1, 3) with w=2 -> ((2)^2 + (6)^2) / 2 = 20. Joint 1: w=0 -> 0.
    pred = torch.tensor([[[[1.0, 3.0]], [[5.0, 5.0]]]])
    target = torch.zeros_like(pred)
    loss = weighted_mse(pred, target, torch.tensor([[2.0, 0.0]]))
    assert loss.item() == pytest.approx((20.0 + 0.0) / 2)


def test_weighted_mse_means_over_batch_pixels_then_joints() -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(3, 4, 5, 6, generator=g), torch.rand(3, 4, 5, 6, generator=g)
    weight = torch.tensor([[1.0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 0]])
    per_joint = []
    for k in range(4):
        sq = [((pred[b, k] - target[b, k]) * weight[b, k]) ** 2 for b in range(3)]
        per_joint.append(torch.stack(sq).mean())
    expected = torch.stack(per_joint).mean()
    torch.testing.assert_close(weighted_mse(pred, target, weight), expected)
    torch.testing.assert_close(weighted_mse(pred, target, weight[..., None]), expected)


def test_weighted_mse_gradient_ignores_zero_weight_joints() -> None:
    pred = torch.rand(2, 3, 4, 4, requires_grad=True)
    weighted_mse(pred, torch.zeros(2, 3, 4, 4), torch.tensor([[1.0, 0, 1], [1, 0, 1]])).backward()
    assert pred.grad is not None
    assert not pred.grad[:, 1].any() and pred.grad[:, 0].abs().sum() > 0


def test_weighted_mse_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="equal shapes"):
        weighted_mse(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 5), torch.ones(1, 2))
    with pytest.raises(ValueError, match="weight"):
        weighted_mse(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.ones(2))
