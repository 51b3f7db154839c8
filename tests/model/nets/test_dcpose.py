"""Tests for model/nets/dcpose.py: released key layout, parameter counts, refine/forward, training behaviour."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from model.nets.blocks import ModulatedDeformConv
from model.nets.dcpose import (
    DCPose,
    PoseCorrectionNetwork,
    build_dcpose,
    residual_fusion_input,
    temporal_merger_input,
    temporal_weights,
)
from model.nets.hrnet import HRNet

KEYS_FILE = Path(__file__).parents[1] / "data" / "dcpose_head_keys.txt"
HEAD_PARAMS = 1_603_053


def _expected_head_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for line in KEYS_FILE.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape = line.split()
        shapes[key] = () if shape == "-" else tuple(int(v) for v in shape.split(","))
    return shapes


class _StandInBackbone(nn.Module):
    """Two stride-2 conv+BN+ReLU and a 1x1 head: (B, 3, H, W) -> (B, 17, H/4, W/4), like HRNet but cheap."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, 2, 1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 17, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _tiny_dcpose(hrnet: bool = False) -> DCPose:
    """DCPose for fast CPU tests (64x48 crops -> 16x12 heatmaps): a narrow HRNet or a stand-in."""
    torch.manual_seed(0)
    backbone = HRNet(width=4, num_joints=17, stem_width=8, layer1_blocks=1) if hrnet else _StandInBackbone()
    return DCPose(backbone)


def _crops(b: int = 2, seed: int = 1) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, 3, 64, 48, generator=gen) for _ in range(3))


def _perturb(model: nn.Module, seed: int = 5) -> None:
    """Random non-trivial weights (the released init makes most outputs ~0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


def test_head_keys_and_shapes_match_release() -> None:
    expected = _expected_head_shapes()
    assert len(expected) == 461
    got = {k: tuple(v.shape) for k, v in build_dcpose(backbone=None).state_dict().items()}
    assert got == expected


def test_full_model_keys_are_backbone_plus_flat_head() -> None:
    sd = build_dcpose("hrnet_w48").state_dict()
    backbone = {k: tuple(v.shape) for k, v in sd.items() if k.startswith("rough_pose_estimation_net.")}
    head = {k: tuple(v.shape) for k, v in sd.items() if not k.startswith("rough_pose_estimation_net.")}
    assert head == _expected_head_shapes()
    b = "rough_pose_estimation_net."
    for key, shape in [
        ("conv1.weight", (64, 3, 3, 3)),
        ("final_layer.weight", (17, 48, 1, 1)),
        ("final_layer.bias", (17,)),
        ("stage4.2.fuse_layers.0.3.0.weight", (48, 384, 1, 1)),
        ("transition3.3.0.0.weight", (384, 192, 3, 3)),
    ]:
        assert backbone[b + key] == shape
    assert not any("pose_correction" in k for k in sd)


def test_parameter_counts_and_frozen_backbone() -> None:
    model = build_dcpose("hrnet_w48")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == HEAD_PARAMS == sum(p.numel() for p in model.head_parameters())
    assert all(not p.requires_grad for p in model.backbone.parameters())
    split = {
        name: sum(p.numel() for p in part.parameters())
        for name, part in [
            ("prf", model.diff_temporal_fuse),
            ("ptm", model.support_temporal_fuse),
            ("combiner", model.pose_correction.offset_mask_combine_conv),
            ("offsets", model.pose_correction.offsets_list),
            ("masks", model.pose_correction.masks_list),
            ("dcn", model.pose_correction.modulated_deform_conv_list),
        ]
    }
    assert split == {
        "prf": 99_670,
        "ptm": 43_249,
        "combiner": 125_124,
        "offsets": 881_280,
        "masks": 440_640,
        "dcn": 13_090,
    }
    assert model.training and not model.backbone.training


def test_released_initialisation() -> None:
    model = build_dcpose(backbone=None)
    offsets = model.pose_correction.offsets_list[0][0].weight
    assert 0.0009 < offsets.std().item() < 0.0011 and abs(offsets.mean().item()) < 1e-4
    conv = model.diff_temporal_fuse.layers[0].conv_bn_relu1
    assert conv.conv.bias.abs().max() == 0 and torch.all(conv.bn.weight == 1) and torch.all(conv.bn.bias == 0)
    for unit in model.pose_correction.modulated_deform_conv_list:
        w = unit.deform_conv.weight
        assert (
            torch.equal(w[:, :, 1, 1], torch.eye(17))
            and w.sum() == 17
            and unit.deform_conv.bias.abs().max() == 0
        )


def test_state_dict_round_trip_strict() -> None:
    source = build_dcpose(backbone=None)
    _perturb(source)
    target = build_dcpose(backbone=None)
    target.load_state_dict(source.state_dict(), strict=True)
    for (name, p), q in zip(source.named_parameters(), target.parameters()):
        assert torch.equal(p, q), name
    wrapped = nn.Sequential(source).state_dict()  # nested under a prefix: keys stay flat below it
    assert "0.offsets_list.0.0.weight" in wrapped and not any("pose_correction" in k for k in wrapped)
    nn.Sequential(build_dcpose(backbone=None)).load_state_dict(wrapped, strict=True)
    sd = source.state_dict()
    sd.pop("masks_list.2.0.weight")
    with pytest.raises(RuntimeError, match="masks_list.2.0.weight"):
        target.load_state_dict(sd, strict=True)
    sd = source.state_dict()
    sd["offsets_list.5.0.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="Unexpected"):
        target.load_state_dict(sd, strict=True)


def test_temporal_weights_and_ptm_input() -> None:
    gen = torch.Generator().manual_seed(0)
    hc, hp, hn = (torch.randn(2, 17, 4, 3, generator=gen) for _ in range(3))
    margin = torch.tensor([[1.0, 3.0], [2.0, 2.0]])  # (p=1, n=3) and (2, 2)
    ptm = temporal_merger_input(hc, hp, hn, margin)
    assert ptm.shape == (2, 51, 4, 3)
    torch.testing.assert_close(ptm[0, 0::3], hc[0])
    torch.testing.assert_close(ptm[0, 1::3], 0.75 * hp[0])  # previous is closer: 3 / (1 + 3)
    torch.testing.assert_close(ptm[0, 2::3], 0.25 * hn[0])
    torch.testing.assert_close(ptm[1, 1::3], 0.5 * hp[1])
    torch.testing.assert_close(ptm[1, 2::3], 0.5 * hn[1])
    torch.testing.assert_close(
        temporal_merger_input(hc, hp, hn, None), temporal_merger_input(hc, hp, hn, torch.ones(2, 2))
    )
    w_prev, w_next = temporal_weights(margin, 2, hc)
    assert w_prev.flatten().tolist() == [0.75, 0.5] and w_next.flatten().tolist() == [0.25, 0.5]
    with pytest.raises(ValueError, match="margin"):
        temporal_merger_input(hc, hp, hn, torch.ones(2, 3))
    with pytest.raises(ValueError, match="positive sum"):
        temporal_merger_input(hc, hp, hn, torch.zeros(2, 2))


def test_prf_input_is_joint_major() -> None:
    gen = torch.Generator().manual_seed(1)
    hc, hp, hn = (torch.randn(1, 17, 3, 2, generator=gen) for _ in range(3))
    prf = residual_fusion_input(hc, hp, hn, torch.tensor([[1.0, 3.0]]))
    assert prf.shape == (1, 68, 3, 2)
    torch.testing.assert_close(prf[0, 4 * 5 + 0], hc[0, 5] - hp[0, 5])
    torch.testing.assert_close(prf[0, 4 * 5 + 1], 0.75 * (hc[0, 5] - hp[0, 5]))
    torch.testing.assert_close(prf[0, 4 * 5 + 2], hc[0, 5] - hn[0, 5])
    torch.testing.assert_close(prf[0, 4 * 5 + 3], 0.25 * (hc[0, 5] - hn[0, 5]))


def test_refine_full_size_shape_and_finite() -> None:
    torch.manual_seed(0)
    model = build_dcpose(backbone=None)
    _perturb(model)
    model.eval()
    hc, hp, hn = (torch.rand(1, 17, 96, 72) for _ in range(3))
    with torch.no_grad():
        out = model.refine(hc, hp, hn, torch.tensor([[1.0, 1.0]]))
    assert out.shape == (1, 17, 96, 72) and torch.isfinite(out).all() and out.abs().max() > 0


def test_pcn_is_mean_of_branches() -> None:
    torch.manual_seed(0)
    pcn = PoseCorrectionNetwork(17).eval()
    _perturb(pcn)
    motion, support = torch.randn(1, 34, 8, 6), torch.randn(1, 17, 8, 6)
    with torch.no_grad():
        feats = pcn.offset_mask_combine_conv(torch.cat((motion, support), 1))
        branches = [
            dcn(support, o(feats), m(feats))
            for o, m, dcn in zip(pcn.offsets_list, pcn.masks_list, pcn.modulated_deform_conv_list)
        ]
        torch.testing.assert_close(pcn(motion, support), torch.stack(branches).mean(0))
    assert [u.deform_conv.dilation for u in pcn.modulated_deform_conv_list] == [3, 6, 9, 12, 15]
    assert all(isinstance(u.deform_conv, ModulatedDeformConv) for u in pcn.modulated_deform_conv_list)


def test_fused_offset_mask_conv_and_channels_last_change_nothing() -> None:
    # The fused branch convolution (one 459-channel conv) and NHWC memory are speed measures only:
    # same outputs and same parameter gradients as the released two convolutions in NCHW.
    torch.manual_seed(0)
    pcn = PoseCorrectionNetwork(17).double()
    _perturb(pcn)
    gen = torch.Generator().manual_seed(2)
    motion, support = torch.randn(2, 34, 9, 7, generator=gen).double(), torch.randn(2, 17, 9, 7, generator=gen).double()

    def run(fused: bool, channels_last: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        pcn.fuse_offset_mask = fused
        net = pcn.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        out = net(motion, support)
        grads = torch.autograd.grad((out * out).sum(), list(net.parameters()))
        return out.detach(), list(grads)

    out_ref, grads_ref = run(False, False)
    for fused, channels_last in ((True, False), (True, True)):
        out, grads = run(fused, channels_last)
        torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-12)
        for g, g_ref in zip(grads, grads_ref, strict=True):
            torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-10)
    assert any(g.abs().sum() > 0 for g in grads_ref[-10:])  # the branch convs get gradients


def test_forward_is_one_backbone_pass_then_refine() -> None:
    model = _tiny_dcpose(hrnet=True)
    _perturb(model.pose_correction)
    model.eval()
    current, previous, nxt = _crops()
    margin = torch.tensor([[1.0, 2.0], [1.0, 1.0]])
    with torch.no_grad():
        out = model(current, previous, nxt, margin)
        bb = model.backbone
        expected = model.refine(bb(current), bb(previous), bb(nxt), margin)
    assert out.shape == (2, 17, 16, 12)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_two_eval_calls_are_identical() -> None:
    model = _tiny_dcpose()
    _perturb(model)
    model.eval()
    crops = _crops()
    with torch.no_grad():
        first = model(*crops, torch.tensor([[1.0, 3.0], [2.0, 1.0]]))
        second = model(*crops, torch.tensor([[1.0, 3.0], [2.0, 1.0]]))
    assert torch.equal(first, second) and first.abs().max() > 0


def test_build_with_tiny_hrnet_name() -> None:
    model = build_dcpose("hrnet_w4")
    assert isinstance(model.backbone, HRNet) and model.backbone.final_layer.weight.shape == (17, 4, 1, 1)


def test_backward_reaches_head_only_and_backbone_stats_stay() -> None:
    model = _tiny_dcpose()
    model.train()
    assert model.training and not model.backbone.training
    bb_buffers = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_bn = model.diff_temporal_fuse.layers[0].conv_bn_relu1.bn.running_mean.clone()
    optimizer = torch.optim.Adam(model.head_parameters(), lr=1e-3)
    current, previous, nxt = _crops()
    out = model(current, previous, nxt, torch.ones(2, 2))
    loss = ((out - torch.rand_like(out)) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("rough_pose_estimation_net."):
            assert p.grad is None, name
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            if not name.endswith("conv.bias"):  # conv biases before a train-mode BN get ~0 by design
                assert p.grad.abs().sum() > 0, name
    optimizer.step()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, bb_buffers[key]), key
    assert not torch.equal(model.diff_temporal_fuse.layers[0].conv_bn_relu1.bn.running_mean, head_bn)


def test_unfrozen_backbone_trains() -> None:
    model = _tiny_dcpose()
    model.freeze_backbone(False)
    model.train()
    assert model.backbone.training and all(p.requires_grad for p in model.backbone.parameters())
    out = model(*_crops(), None)
    out.sum().backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    model.freeze_backbone()
    assert not model.backbone.training and not any(p.requires_grad for p in model.backbone.parameters())


def test_bad_inputs_are_named() -> None:
    head = build_dcpose(backbone=None)
    with pytest.raises(RuntimeError, match="without a backbone"):
        head(*_crops(1), None)
    with pytest.raises(ValueError, match="channels"):
        head.refine(*(torch.zeros(1, 15, 8, 6) for _ in range(3)))
    with pytest.raises(ValueError, match="one shape"):
        head.refine(torch.zeros(1, 17, 8, 6), torch.zeros(1, 17, 8, 6), torch.zeros(1, 17, 8, 7))
    with pytest.raises(ValueError, match="crops"):
        _tiny_dcpose()(torch.zeros(1, 3, 64, 48), torch.zeros(2, 3, 64, 48), torch.zeros(1, 3, 64, 48))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_dcpose("resnet50")


@pytest.mark.slow
def test_released_checkpoint_loads_strict() -> None:
    path = os.environ.get("DCPOSE_CHECKPOINT", "")
    if not path or not Path(path).is_file():
        pytest.skip("set DCPOSE_CHECKPOINT to PoseTrack17_DCPose.pth (user-supplied, not downloadable here)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    state = blob.get("state_dict", blob)
    state = {k.replace("module.", "", 1) if k.startswith("module.") else k: v for k, v in state.items()}
    model = build_dcpose("hrnet_w48")
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        out = model(*(torch.zeros(1, 3, 384, 288) for _ in range(3)), torch.ones(1, 2))
    assert out.shape == (1, 17, 96, 72) and torch.isfinite(out).all()
