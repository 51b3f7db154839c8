"""Tests for model/nets/hrnet.py: official key names and shapes, parameter counts, forward shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.nets.hrnet import HighResolutionModule, HRNet, StageSpec, count_parameters, hrnet_w32, hrnet_w48

TINY_STAGES = (StageSpec(1, 2, 1), StageSpec(1, 3, 1), StageSpec(2, 4, 1))


def _tiny(num_joints: int = 5) -> HRNet:
    return HRNet(width=4, num_joints=num_joints, stages=TINY_STAGES, stem_width=8, layer1_blocks=1)


@pytest.fixture(scope="module")
def w48() -> HRNet:
    torch.manual_seed(0)
    return hrnet_w48()


@pytest.fixture(scope="module")
def w48_state(w48: HRNet) -> dict[str, torch.Tensor]:
    return w48.state_dict()


# (key, shape) pairs listed in the released DCPose code for the official HRNet-W48 backbone.
OFFICIAL_W48 = [
    ("conv1.weight", (64, 3, 3, 3)),
    ("bn1.weight", (64,)),
    ("bn1.running_var", (64,)),
    ("conv2.weight", (64, 64, 3, 3)),
    ("layer1.0.conv3.weight", (256, 64, 1, 1)),
    ("layer1.0.downsample.0.weight", (256, 64, 1, 1)),
    ("layer1.0.downsample.1.running_mean", (256,)),
    ("transition1.0.0.weight", (48, 256, 3, 3)),
    ("transition1.1.0.0.weight", (96, 256, 3, 3)),
    ("stage2.0.branches.1.0.conv1.weight", (96, 96, 3, 3)),
    ("stage2.0.branches.1.3.bn2.weight", (96,)),
    ("stage2.0.fuse_layers.0.1.0.weight", (48, 96, 1, 1)),
    ("stage2.0.fuse_layers.1.0.0.0.weight", (96, 48, 3, 3)),
    ("transition2.2.0.0.weight", (192, 96, 3, 3)),
    ("stage3.3.fuse_layers.2.0.1.0.weight", (192, 48, 3, 3)),
    ("transition3.3.0.0.weight", (384, 192, 3, 3)),
    ("stage4.2.branches.3.3.conv2.weight", (384, 384, 3, 3)),
    ("stage4.2.fuse_layers.0.3.0.weight", (48, 384, 1, 1)),
    ("final_layer.weight", (17, 48, 1, 1)),
    ("final_layer.bias", (17,)),
]


@pytest.mark.parametrize(("key", "shape"), OFFICIAL_W48)
def test_w48_has_official_key_and_shape(w48_state: dict[str, torch.Tensor], key: str, shape: tuple) -> None:
    assert key in w48_state
    assert tuple(w48_state[key].shape) == shape


def test_w48_structure_matches_official_layout(w48_state: dict[str, torch.Tensor]) -> None:
    keys = set(w48_state)
    # The last stage-4 module outputs only the highest resolution: fuse_layers.0 but no .1/.2/.3.
    assert any(k.startswith("stage4.2.fuse_layers.0.") for k in keys)
    assert not any(k.startswith("stage4.2.fuse_layers.1.") for k in keys)
    assert any(k.startswith("stage4.1.fuse_layers.3.") for k in keys)
    # Existing branches pass through transitions untouched (None entries carry no keys).
    untouched = ("transition2.0.", "transition2.1.", "transition3.0.", "transition3.1.", "transition3.2.")
    assert not any(k.startswith(untouched) for k in keys)
    # Module counts per stage: 1, 4, 3; 4 BasicBlocks per branch; 4 Bottlenecks in layer1.
    for stage, modules in (("stage2", 1), ("stage3", 4), ("stage4", 3)):
        assert {int(k.split(".")[1]) for k in keys if k.startswith(stage + ".")} == set(range(modules))
    assert {int(k.split(".")[4]) for k in keys if k.startswith("stage3.0.branches.2.")} == {0, 1, 2, 3}
    assert {int(k.split(".")[1]) for k in keys if k.startswith("layer1.")} == {0, 1, 2, 3}
    # Only the output conv has a bias: everything else is conv + BN.
    conv_biases = [
        k for k in keys if k.endswith(".bias") and w48_state[k.removesuffix(".bias") + ".weight"].dim() == 4
    ]
    assert conv_biases == ["final_layer.bias"]


def test_parameter_counts_match_hrnet_paper(w48: HRNet) -> None:
    # HRNet paper, COCO table: W32 28.5 M, W48 63.6 M parameters.
    assert count_parameters(w48) == pytest.approx(63.6e6, rel=2e-3)
    w32 = hrnet_w32(num_joints=15)
    assert count_parameters(w32) == pytest.approx(28.5e6, rel=2e-3)
    state = w32.state_dict()
    assert tuple(state["transition3.3.0.0.weight"].shape) == (256, 128, 3, 3)
    assert tuple(state["final_layer.weight"].shape) == (15, 32, 1, 1)


@pytest.mark.parametrize(("height", "width"), [(64, 64), (64, 48), (32, 24)])
def test_forward_shape_quarter_resolution(height: int, width: int) -> None:
    torch.manual_seed(0)
    net = _tiny().eval()
    with torch.inference_mode():
        out = net(torch.randn(2, 3, height, width))
    assert out.shape == (2, 5, height // 4, width // 4)
    assert torch.isfinite(out).all()


def test_default_width_small_builds_and_runs() -> None:
    torch.manual_seed(0)
    net = HRNet(width=8, num_joints=17).eval()
    with torch.inference_mode():
        out = net(torch.randn(1, 3, 64, 32))
    assert out.shape == (1, 17, 16, 8)


def test_eval_is_deterministic_and_batch_independent() -> None:
    torch.manual_seed(0)
    net = _tiny().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        a, b = net(x), net(x)
        single = net(x[1:2])
    assert torch.equal(a, b)
    torch.testing.assert_close(single, a[1:2], rtol=1e-5, atol=1e-6)


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    net = _tiny().train()
    net(torch.randn(2, 3, 32, 32)).square().mean().backward()
    no_grad = [
        name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
    ]
    assert no_grad == []


def test_fusion_matches_scale_factor_upsampling() -> None:
    """Size-based up-sampling equals the official nn.Upsample(scale 2**k) path on exact halvings."""
    torch.manual_seed(0)
    module = HighResolutionModule([4, 8, 16], num_blocks=1).eval()
    xs = [torch.randn(1, 4, 16, 12), torch.randn(1, 8, 8, 6), torch.randn(1, 16, 4, 3)]
    with torch.inference_mode():
        got = module(list(xs))
        branches = [b(x) for b, x in zip(module.branches, xs)]
        for i, paths in enumerate(module.fuse_layers):
            want = sum(x if p is None else p(x) for p, x in zip(paths, branches))
            torch.testing.assert_close(got[i], torch.relu(want))
    assert isinstance(module.fuse_layers[0][2][2], nn.Upsample)


def test_init_weights_follows_dcpose_recipe() -> None:
    torch.manual_seed(0)
    net = _tiny()
    net.init_weights(std=0.001)
    assert net.conv1.weight.std().item() == pytest.approx(0.001, rel=0.3)
    assert torch.count_nonzero(net.final_layer.bias) == 0
    assert torch.all(net.bn1.weight == 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width": 0}, "positive"),
        ({"num_joints": 0}, "positive"),
        ({"stages": (StageSpec(1, 2), StageSpec(1, 3))}, "three stages"),
        ({"stages": (StageSpec(1, 2), StageSpec(1, 4), StageSpec(1, 4))}, "2, 3 and 4 branches"),
    ],
)
def test_bad_construction_is_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HRNet(**kwargs)


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (3, 64, 64), (1, 3, 66, 64)])
def test_bad_input_is_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        _tiny()(torch.zeros(shape))
