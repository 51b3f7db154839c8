"""Tests of model.nets.yolo_pose: the graph built from a YOLO layer list, and the head's decoding."""

from __future__ import annotations

import pytest
import torch

from model.nets.yolo_pose import DFL, PoseHead, YoloPoseNet, YoloSpec

# A tiny YOLO11-pose: the layer types of yolo11n-pose.yaml, at a small width.
TINY_LAYERS = (
    (-1, 1, "Conv", (64, 3, 2)),  # 0: /2
    (-1, 1, "Conv", (128, 3, 2)),  # 1: /4
    (-1, 2, "C3k2", (128, False, 0.25)),  # 2
    (-1, 1, "Conv", (128, 3, 2)),  # 3: /8
    (-1, 2, "C3k2", (128, True)),  # 4
    (-1, 1, "Conv", (256, 3, 2)),  # 5: /16
    (-1, 1, "Conv", (512, 3, 2)),  # 6: /32
    (-1, 1, "SPPF", (512, 5)),  # 7
    (-1, 2, "C2PSA", (512,)),  # 8
    (-1, 1, "nn.Upsample", (None, 2, "nearest")),  # 9: /16
    ([-1, 5], 1, "Concat", (1,)),  # 10
    (-1, 2, "C3k2", (256, False)),  # 11
    ([4, 11, 8], 1, "Pose", ("nc", "kpt_shape")),  # 12
)


def tiny_spec() -> YoloSpec:
    return YoloSpec(TINY_LAYERS, depth=0.5, width=0.25, max_channels=1024)


def test_the_graph_runs_and_decodes_one_candidate_per_cell_of_every_level() -> None:
    net = YoloPoseNet(tiny_spec()).eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.inference_mode():
        out = net(x)
    cells = sum((64 // s) * (96 // s) for s in (8, 16, 32))
    assert out.boxes.shape == (2, cells, 4)
    assert out.scores.shape == (2, cells, 1)
    assert out.keypoints.shape == (2, cells, 17, 3)
    assert torch.isfinite(out.boxes).all() and torch.isfinite(out.keypoints).all()
    assert ((out.scores >= 0) & (out.scores <= 1)).all()
    assert (out.boxes[..., 2:] >= out.boxes[..., :2]).all()  # DFL distances are >= 0


def test_input_sides_must_be_multiples_of_the_largest_stride() -> None:
    net = YoloPoseNet(tiny_spec())
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.rand(1, 3, 64, 80))


def test_unknown_layer_types_are_named() -> None:
    with pytest.raises(ValueError, match="unsupported YOLO layer type 'Foo'"):
        YoloPoseNet(YoloSpec(((-1, 1, "Foo", (8,)),), 0.5, 0.25, 1024))


def test_dfl_is_the_expected_bin_of_the_softmax() -> None:
    dfl = DFL(16)
    logits = torch.full((1, 64, 3), -30.0)
    for side, bin_ in enumerate((0, 5, 15, 7)):
        logits[0, side * 16 + bin_, :] = 30.0  # one-hot: expectation = that bin
    assert torch.allclose(dfl(logits)[0, :, 0], torch.tensor([0.0, 5.0, 15.0, 7.0]), atol=1e-4)
    halves = torch.zeros(1, 64, 1)
    halves[0, 16 + 2] = halves[0, 16 + 4] = 30.0  # two equal bins: their midpoint
    assert dfl(halves)[0, 1, 0] == pytest.approx(3.0, abs=1e-4)


def test_head_decodes_boxes_around_cell_centres_and_keypoints_on_the_cell_grid() -> None:
    head = PoseHead([8], strides=[8.0]).eval()
    box_out, kpt_out = head.cv2[0][-1], head.cv4[0][-1]
    for conv in (box_out, kpt_out):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    bias = torch.full((64,), -30.0)
    for side, bin_ in enumerate((1, 2, 3, 4)):  # left, top, right, bottom distances in strides
        bias[side * 16 + bin_] = 30.0
    box_out.bias.data[:] = bias
    kpt_out.bias.data[0::3] = 0.25  # x offset: 2 x 0.25 = half a cell
    with torch.inference_mode():
        out = head([torch.rand(1, 8, 2, 3)])  # 2 x 3 cells, row-major
    cell = 4  # row 1, column 1
    cx, cy = (1 + 0.5) * 8, (1 + 0.5) * 8
    assert out.boxes[0, cell].tolist() == pytest.approx([cx - 8, cy - 16, cx + 24, cy + 32], abs=1e-3)
    kp = out.keypoints[0, cell]
    assert kp[:, 0].tolist() == pytest.approx([(2 * 0.25 + 1) * 8] * 17, abs=1e-4)
    assert kp[:, 1].tolist() == pytest.approx([1 * 8.0] * 17, abs=1e-4)
    assert kp[:, 2].tolist() == pytest.approx([0.5] * 17)  # sigmoid(0)
