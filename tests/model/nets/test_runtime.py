"""Tests for model/nets/runtime.py: precision names, autocast, module placement, denormals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.backbones.hrnet import HRNetBackbone
from model.nets.hrnet import HRNet
from model.nets.runtime import autocast, check_precision, flush_denormals, place_module
from model.pipeline.config import InferConfig


def test_precision_names_are_checked() -> None:
    assert check_precision("bf16", "cpu") == "bf16"
    assert check_precision("fp16", "cuda:0") == "fp16"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        check_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="fp32, bf16, fp16"):
        check_precision("half", "cpu")
    with pytest.raises(ValueError, match="InferConfig.precision"):
        InferConfig(precision="float8")


def test_autocast_switches_matmul_dtype_only_when_asked() -> None:
    a = torch.randn(4, 4)
    with autocast("cpu", "fp32"):
        assert (a @ a).dtype == torch.float32
    with autocast("cpu", "bf16"):
        assert (a @ a).dtype == torch.bfloat16


def test_place_module_is_eval_and_nchw_on_cpu() -> None:
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).train()
    placed = place_module(conv, "cpu")
    assert not placed.training
    assert placed[0].weight.is_contiguous()  # channels_last is for CUDA only


def test_bf16_backbone_heatmaps_are_float32_and_close_to_fp32() -> None:
    torch.manual_seed(0)
    net = HRNet(width=4, num_joints=17, stem_width=8, layer1_blocks=1)
    crops = np.random.default_rng(0).integers(0, 256, (2, 384, 288, 3), dtype=np.uint8)
    fp32 = HRNetBackbone(net, "cpu", 2).heatmaps(crops)
    bf16 = HRNetBackbone(net, "cpu", 2, precision="bf16").heatmaps(crops)
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape == (2, 17, 96, 72)
    assert not torch.equal(bf16, fp32)  # it really ran in bfloat16
    torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=0.05 * fp32.abs().max().item())


def test_flush_denormals_zeroes_subnormals() -> None:
    torch.set_flush_denormal(False)  # an earlier Predictor in this process may have turned it on
    tiny = torch.tensor([1e-40], dtype=torch.float32)  # subnormal (float32 normals start at 1.18e-38)
    assert tiny.item() > 0.0
    try:
        if not flush_denormals():
            pytest.skip("this CPU cannot flush denormals")
        assert (tiny * 1.0).item() == 0.0
    finally:
        torch.set_flush_denormal(False)
    assert (tiny * 1.0).item() > 0.0
