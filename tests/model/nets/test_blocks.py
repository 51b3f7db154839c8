"""Tests for model/nets/blocks.py: DCNv2 against a direct-loop reference, and the RSB blocks."""

from __future__ import annotations

import logging
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from model.nets import blocks
from model.nets.blocks import (
    ChainOfRSBBlocks,
    ConvBnRelu,
    ModulatedDeformConv,
    RSBBlock,
    deform_conv2d,
    deform_conv2d_grid_sample,
)
from model.testing.dcn_reference import deform_conv2d_reference

F64 = torch.float64


def _dcn_inputs(
    n: int,
    c: int,
    o: int,
    h: int,
    w: int,
    groups: int,
    k: int,
    stride: int,
    padding: int,
    dilation: int,
    offset_scale: float,
    seed: int = 0,
    dtype: torch.dtype = F64,
) -> dict:
    gen = torch.Generator().manual_seed(seed)
    ho = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    return {
        "x": torch.randn(n, c, h, w, generator=gen, dtype=dtype),
        "offset": offset_scale * torch.randn(n, 2 * groups * k * k, ho, wo, generator=gen, dtype=dtype),
        "weight": torch.randn(o, c, k, k, generator=gen, dtype=dtype),
        "bias": torch.randn(o, generator=gen, dtype=dtype),
        "mask": torch.rand(n, groups * k * k, ho, wo, generator=gen, dtype=dtype) * 2 - 0.5,  # raw, incl. < 0
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
    }


def _sample_positions(a: dict, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All sampling positions (y, x) the DCN uses, to prove a case really leaves the map."""
    n, _, ho, wo = a["offset"].shape
    off = a["offset"].view(n, -1, k * k, 2, ho, wo)
    ty = (torch.arange(k, dtype=F64) * a["dilation"]).repeat_interleave(k).view(1, 1, -1, 1, 1)
    tx = (torch.arange(k, dtype=F64) * a["dilation"]).repeat(k).view(1, 1, -1, 1, 1)
    by = (torch.arange(ho, dtype=F64) * a["stride"] - a["padding"]).view(1, 1, 1, -1, 1)
    bx = (torch.arange(wo, dtype=F64) * a["stride"] - a["padding"]).view(1, 1, 1, 1, -1)
    return ty + by + off[:, :, :, 0], tx + bx + off[:, :, :, 1]


CASES = [  # n, c, o, h, w, groups, k, stride, padding, dilation
    (2, 4, 3, 7, 6, 1, 3, 1, 1, 1),
    (1, 6, 5, 9, 8, 3, 3, 1, 2, 2),
    (1, 17, 17, 6, 5, 17, 3, 1, 3, 3),  # DCPose layout: one group per joint channel
    (1, 4, 2, 8, 7, 2, 3, 2, 1, 1),  # stride 2
    (1, 3, 2, 5, 5, 1, 1, 1, 0, 1),  # 1x1 kernel
]


@pytest.mark.parametrize("case", CASES)
def test_grid_sample_dcn_matches_loop_reference(case: tuple[int, ...]) -> None:
    n, c, o, h, w, groups, k, stride, padding, dilation = case
    a = _dcn_inputs(n, c, o, h, w, groups, k, stride, padding, dilation, offset_scale=2.5)
    ys, xs = _sample_positions(a, k)
    outside = (ys <= -1) | (ys >= h) | (xs <= -1) | (xs >= w)
    partial = (
        ((ys > -1) & (ys < 0))
        | ((xs > -1) & (xs < 0))
        | ((ys > h - 1) & (ys < h))
        | ((xs > w - 1) & (xs < w))
    )
    assert outside.any() and partial.any(), "case must exercise both border rules"
    expected = deform_conv2d_reference(**a)
    got = deform_conv2d_grid_sample(**a)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(deform_conv2d(**a), expected, rtol=0, atol=1e-12)  # dispatcher, any path


def test_border_rule_by_hand() -> None:
    # 1x1 kernel, weight 1: output = bilinear sample of x at (r + dy, s + dx).
    x = torch.tensor([[[[2.0, 4.0], [6.0, 8.0]]]], dtype=F64)
    weight = torch.ones(1, 1, 1, 1, dtype=F64)

    def sample(dy: float, dx: float) -> float:
        offset = torch.zeros(1, 2, 2, 2, dtype=F64)
        offset[0, 0, 0, 0], offset[0, 1, 0, 0] = dy, dx
        return deform_conv2d(x, offset, weight, impl="pytorch")[0, 0, 0, 0].item()

    assert sample(0.0, 0.0) == pytest.approx(2.0)
    assert sample(0.5, 0.5) == pytest.approx(5.0)  # mean of the four pixels
    assert sample(-0.5, 0.0) == pytest.approx(1.0)  # half of pixel (0, 0), the other corner is off the map
    assert sample(-1.0, 0.0) == 0.0  # at -1: outside
    assert sample(1.5, 1.0) == pytest.approx(4.0)  # y between row 1 and 2 (off): 0.5 * x[1, 1]
    assert sample(2.0, 0.0) == 0.0  # y == H: outside


@pytest.mark.parametrize("dilation,padding,stride", [(1, 1, 1), (3, 3, 1), (2, 1, 2)])
def test_zero_offset_unit_mask_equals_conv2d(dilation: int, padding: int, stride: int) -> None:
    a = _dcn_inputs(2, 5, 4, 11, 9, 1, 3, stride, padding, dilation, offset_scale=0.0)
    expected = F.conv2d(a["x"], a["weight"], a["bias"], stride=stride, padding=padding, dilation=dilation)
    got = deform_conv2d(
        a["x"],
        torch.zeros_like(a["offset"]),
        a["weight"],
        a["bias"],
        stride=stride,
        padding=padding,
        dilation=dilation,
        mask=torch.ones_like(a["mask"]),
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    got32 = deform_conv2d(
        a["x"].float(),
        torch.zeros_like(a["offset"]).float(),
        a["weight"].float(),
        a["bias"].float(),
        stride=stride,
        padding=padding,
        dilation=dilation,
    )  # mask None
    torch.testing.assert_close(got32, expected.float(), rtol=1e-4, atol=1e-4)


def test_gradcheck_small() -> None:
    a = _dcn_inputs(1, 4, 2, 4, 3, 2, 3, 1, 2, 2, offset_scale=1.5, seed=3)
    tensors = {key: a[key].clone().requires_grad_(True) for key in ("x", "offset", "weight", "bias", "mask")}

    def fn(x, offset, weight, bias, mask):
        return deform_conv2d_grid_sample(x, offset, weight, bias, stride=1, padding=2, dilation=2, mask=mask)

    assert torch.autograd.gradcheck(fn, tuple(tensors.values()), eps=1e-6, atol=1e-7, fast_mode=True)


@pytest.mark.slow
def test_gradcheck_full_jacobian() -> None:
    a = _dcn_inputs(1, 3, 2, 5, 4, 3, 3, 1, 1, 1, offset_scale=1.5, seed=4)
    tensors = tuple(a[key].clone().requires_grad_(True) for key in ("x", "offset", "weight", "bias", "mask"))

    def fn(x, offset, weight, bias, mask):
        return deform_conv2d_grid_sample(x, offset, weight, bias, padding=1, mask=mask)

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-7)


def test_torchvision_imports_here() -> None:
    # requirements.txt pins torch 2.14.1 + torchvision 0.29.1 together: the parity tests below must
    # run, so a torchvision that does not import is a failure here, never a skip.
    import torchvision.ops

    assert blocks.torchvision_deform_conv2d_available()
    assert blocks._torchvision_deform_conv2d() is torchvision.ops.deform_conv2d


def test_torchvision_parity_small_cases() -> None:
    for case in CASES:
        n, c, o, h, w, groups, k, stride, padding, dilation = case
        a = _dcn_inputs(n, c, o, h, w, groups, k, stride, padding, dilation, offset_scale=2.5)
        torch.testing.assert_close(
            deform_conv2d(**a, impl="torchvision"), deform_conv2d(**a, impl="pytorch"), rtol=0, atol=1e-10
        )


PCN_DILATIONS = (3, 6, 9, 12, 15)  # the five DCPose PCN layers: 17 channels, 17 offset groups, masks
TOLERANCES = {F64: {"rtol": 0.0, "atol": 1e-10}, torch.float32: {"rtol": 1e-4, "atol": 1e-4}}
GRAD_NAMES = ("x", "offset", "weight", "bias", "mask")


def _pcn_inputs(dilation: int, dtype: torch.dtype) -> dict:
    """One PCN layer on a small map (13x11, so every dilation reaches past the borders)."""
    return _dcn_inputs(1, 17, 17, 13, 11, 17, 3, 1, dilation, dilation, offset_scale=3.0, seed=dilation,
                       dtype=dtype)


def _forward_and_grads(a: dict, impl: str, cotangent: torch.Tensor) -> tuple[torch.Tensor, list]:
    leaves = {name: a[name].clone().requires_grad_(True) for name in GRAD_NAMES}
    out = deform_conv2d(**{**a, **leaves}, impl=impl)
    grads = torch.autograd.grad((out * cotangent).sum(), list(leaves.values()))
    return out.detach(), list(grads)


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("dilation", PCN_DILATIONS)
def test_torchvision_pure_and_loop_reference_agree(dilation: int, dtype: torch.dtype) -> None:
    a = _pcn_inputs(dilation, dtype)
    ys, xs = _sample_positions({**a, "offset": a["offset"].double()}, 3)
    assert ((ys <= -1) | (ys >= 13) | (xs <= -1) | (xs >= 11)).any(), "samples must leave the map"
    assert (a["mask"] < 0).any(), "raw masks (no sigmoid) include negative values"
    cotangent = torch.randn(a["x"].shape, generator=torch.Generator().manual_seed(7), dtype=dtype)
    out_tv, grads_tv = _forward_and_grads(a, "torchvision", cotangent)
    out_pt, grads_pt = _forward_and_grads(a, "pytorch", cotangent)
    reference = deform_conv2d_reference(**a).to(dtype)
    torch.testing.assert_close(out_tv, reference, **TOLERANCES[dtype])
    torch.testing.assert_close(out_pt, reference, **TOLERANCES[dtype])
    for name, g_tv, g_pt in zip(GRAD_NAMES, grads_tv, grads_pt, strict=True):
        assert g_tv.abs().sum() > 0, f"{name}: empty gradient"
        torch.testing.assert_close(g_tv, g_pt, **TOLERANCES[dtype], msg=lambda m, n=name: f"grad {n}: {m}")


@pytest.mark.parametrize("dilation", PCN_DILATIONS)
def test_gradients_match_finite_differences_of_the_loop_reference(dilation: int) -> None:
    # Directional derivative of <reference(p), cotangent> along a random direction v, by central
    # differences of the direct-loop reference, against sum(grad * v) of both implementations.
    a = _pcn_inputs(dilation, F64)
    gen = torch.Generator().manual_seed(100 + dilation)
    cotangent = torch.randn(a["x"].shape, generator=gen, dtype=F64)
    direction = {name: torch.randn(a[name].shape, generator=gen, dtype=F64) for name in GRAD_NAMES}
    eps = 1e-6

    def value(sign: float) -> float:
        moved = {name: a[name] + sign * eps * direction[name] for name in GRAD_NAMES}
        return float((deform_conv2d_reference(**{**a, **moved}) * cotangent).sum())

    numeric = (value(1.0) - value(-1.0)) / (2 * eps)
    for impl in ("torchvision", "pytorch"):
        _, grads = _forward_and_grads(a, impl, cotangent)
        analytic = float(sum((g * direction[name]).sum() for name, g in zip(GRAD_NAMES, grads, strict=True)))
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-6), impl


def test_fast_path_lookup_logs_once_and_auto_always_works(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(blocks, "_torchvision_op", None)
    a = _dcn_inputs(1, 2, 2, 4, 4, 1, 3, 1, 1, 1, offset_scale=1.0)
    with caplog.at_level(logging.INFO, logger="model.nets.blocks"):
        first = deform_conv2d(**a)
        second = deform_conv2d(**a)
    assert torch.equal(first, second)
    assert len([r for r in caplog.records if "deform_conv2d" in r.getMessage()]) == 1
    if not blocks.torchvision_deform_conv2d_available():
        with pytest.raises(RuntimeError, match="torchvision"):
            deform_conv2d(**a, impl="torchvision")


def test_fast_path_is_used_when_torchvision_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []

    def fake_op(x, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=None):
        calls.append({"stride": stride, "padding": padding, "dilation": dilation, "mask": mask is not None})
        return deform_conv2d_grid_sample(
            x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask
        )

    fake_ops = types.ModuleType("torchvision.ops")
    fake_ops.deform_conv2d = fake_op  # type: ignore[attr-defined]
    fake_tv = types.ModuleType("torchvision")
    fake_tv.ops = fake_ops  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", fake_tv)
    monkeypatch.setitem(sys.modules, "torchvision.ops", fake_ops)
    monkeypatch.setattr(blocks, "_torchvision_op", None)
    a = _dcn_inputs(1, 4, 2, 6, 5, 2, 3, 1, 2, 2, offset_scale=1.0)
    monkeypatch.setattr(blocks, "torchvision_preferred", lambda device, dtype: True)  # as on CUDA
    out = deform_conv2d(**a)
    assert calls == [{"stride": (1, 1), "padding": (2, 2), "dilation": (2, 2), "mask": True}]
    torch.testing.assert_close(out, deform_conv2d(**a, impl="pytorch"))
    assert len(calls) == 1  # impl="pytorch" bypasses the fast path
    with pytest.raises(ValueError, match="mask shape"):  # inputs are still validated on the fast path
        deform_conv2d(**{**a, "mask": a["mask"][:, :3]})
    bf16 = {key: value.to(torch.bfloat16) if isinstance(value, torch.Tensor) else value for key, value in a.items()}
    assert deform_conv2d(**bf16).dtype == torch.bfloat16  # run in float32 by the op, returned as given
    monkeypatch.setattr(blocks, "torchvision_preferred", lambda device, dtype: False)  # as on the CPU
    deform_conv2d(**a)
    assert len(calls) == 2
    deform_conv2d(**a, impl="torchvision")
    assert len(calls) == 3


def test_auto_rule_is_torchvision_on_cuda_and_pure_on_cpu() -> None:
    # Measured (`python -m model bench`): torchvision's CPU kernel is slower than the pure one.
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert not any(blocks.torchvision_preferred(cpu, dt) for dt in (torch.float32, F64, torch.bfloat16))
    assert all(blocks.torchvision_preferred(cuda, dt) for dt in (torch.float32, F64, torch.float16, torch.bfloat16))


def test_bad_shapes_are_named() -> None:
    a = _dcn_inputs(1, 4, 2, 6, 6, 2, 3, 1, 1, 1, offset_scale=1.0)
    with pytest.raises(ValueError, match="offset has 35 channels"):
        deform_conv2d(a["x"], a["offset"][:, :35], a["weight"], padding=1)
    with pytest.raises(ValueError, match="mask shape"):
        deform_conv2d(a["x"], a["offset"], a["weight"], padding=1, mask=a["mask"][:, :9])
    with pytest.raises(ValueError, match="input channels"):
        deform_conv2d(a["x"], a["offset"], a["weight"][:, :3], padding=1)
    with pytest.raises(ValueError, match="offset shape"):
        deform_conv2d(a["x"], a["offset"], a["weight"])  # padding 0: output is 4x4, offset is 6x6
    with pytest.raises(ValueError, match="deformable groups"):
        deform_conv2d(a["x"][:, :3], a["offset"], a["weight"][:, :3], padding=1)
    with pytest.raises(ValueError, match="impl"):
        deform_conv2d(**a, impl="cuda")  # type: ignore[arg-type]


def test_modulated_deform_conv_module() -> None:
    dcn = ModulatedDeformConv(17, 17, 3, padding=6, dilation=6, deformable_groups=17)
    assert {k: tuple(v.shape) for k, v in dcn.state_dict().items()} == {
        "weight": (17, 17, 3, 3),
        "bias": (17,),
    }
    dcn.init_identity()
    x = torch.randn(2, 17, 10, 8)
    out = dcn(x, torch.zeros(2, 2 * 17 * 9, 10, 8), torch.ones(2, 17 * 9, 10, 8))
    torch.testing.assert_close(out, x)  # identity filler, no motion: output = input
    half = dcn(x, torch.zeros(2, 2 * 17 * 9, 10, 8), torch.full((2, 17 * 9, 10, 8), 0.5))
    torch.testing.assert_close(half, 0.5 * x)  # raw mask scales, no sigmoid
    with pytest.raises(ValueError, match="deformable_groups"):
        ModulatedDeformConv(17, 17, 3, deformable_groups=4)
    with pytest.raises(ValueError, match="306 channels"):
        dcn(x, torch.zeros(2, 18, 10, 8), None)  # one offset group instead of 17


def test_conv_bn_relu_flag_and_names() -> None:
    x = torch.randn(2, 3, 5, 5)
    with_relu, without = ConvBnRelu(3, 4, 3, padding=1), ConvBnRelu(3, 4, 3, padding=1, relu=False)
    assert with_relu.conv.bias is not None
    assert (with_relu(x) >= 0).all() and (without(x) < 0).any()
    assert sorted(k.split(".")[0] for k in with_relu.state_dict()) == ["bn"] * 5 + ["conv"] * 2


@pytest.mark.parametrize(
    "in_planes,planes,branch", [(68, 34, 27), (34, 34, 13), (51, 17, 20), (51, 64, 20), (64, 64, 26)]
)
def test_rsb_branch_widths(in_planes: int, planes: int, branch: int) -> None:
    block = RSBBlock(in_planes, planes, downsample=in_planes != planes)
    assert block.branch_channels == branch
    assert block.conv_bn_relu1.conv.weight.shape == (4 * branch, in_planes, 1, 1)
    assert block.conv_bn_relu2_4_4.conv.weight.shape == (branch, branch, 3, 3)
    assert block.conv_bn_relu3.conv.weight.shape == (planes, 4 * branch, 1, 1)
    assert block.conv_bn_relu3.relu is False
    assert (block.downsample is None) == (in_planes == planes)
    assert block(torch.randn(2, in_planes, 6, 5)).shape == (2, planes, 6, 5)


def test_rsb_receptive_field_shows_the_residual_steps() -> None:
    # The longest path is 2_1_1 -> 2_2_1 -> 2_3_1 -> 2_4_1 -> 2_4_2 -> 2_4_3 -> 2_4_4: seven 3x3 convs,
    # so one output pixel sees exactly a 15x15 input window.
    torch.manual_seed(0)
    block = RSBBlock(16, 16, downsample=False).double().eval()
    x = torch.randn(1, 16, 21, 21, dtype=F64, requires_grad=True)
    block(x)[0, :, 10, 10].sum().backward()
    support = x.grad.abs().sum(dim=(0, 1)) > 0
    rows, cols = torch.nonzero(support, as_tuple=True)
    assert (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()) == (3, 17, 3, 17)


def test_rsb_residual_and_chain() -> None:
    block = RSBBlock(8, 8, downsample=False).eval()
    with torch.no_grad():
        block.conv_bn_relu3.conv.weight.zero_()
        block.conv_bn_relu3.conv.bias.zero_()
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(block(x), F.relu(x))  # zero step output: relu(identity)
    with pytest.raises(ValueError, match="downsample"):
        RSBBlock(8, 16, downsample=False)
    chain = ChainOfRSBBlocks(68, 34, 2)
    assert (
        len(chain.layers) == 2
        and chain.layers[0].downsample is not None
        and chain.layers[1].downsample is None
    )
    assert chain.layers[1].branch_channels == 13
    assert chain(torch.randn(1, 68, 5, 4)).shape == (1, 34, 5, 4)
