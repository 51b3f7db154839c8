"""Head vs backbone speed, side by side in one run: the DCPose head before and after each CPU measure.

Variants of one head (same weights, same inputs), timed interleaved (round-robin over variants,
the fastest of ``repeats`` rounds counts, so a load spike on a shared machine hits every variant
alike), against HRNet-W48 timed in the same rounds:

- ``before``: torchvision's DCNv2 kernel, two convolutions per branch (offsets, masks), NCHW;
- ``pure DCNv2``: the pure-PyTorch DCNv2 (the ``impl="auto"`` rule on the CPU);
- ``+ fused offset/mask conv``: one 459-channel convolution per branch;
- ``+ flush denormals``: `torch.set_flush_denormal` (matters for an untrained head, whose
  activations shrink to ~1e-30 with the released N(0, 0.001) initialisation); this is how
  `model.pipeline.predictor.Predictor` runs the head on the CPU;
- ``+ channels_last``: head weights and activations in NHWC (oneDNN's native layout); used on
  CUDA only, measured here to decide whether the CPU should use it too.

Each variant is run on a trained-like head (variance-preserving weights) and on the released
initialisation (what an untrained head computes). The ratios are head ms / HRNet-W48 ms per item;
by FLOPs a head pass is 0.31 of an HRNet-W48 pass.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from model.bench.weights import variance_preserving_init
from model.nets.blocks import ModulatedDeformConv
from model.nets.dcpose import DCPose, PoseCorrectionNetwork, build_dcpose
from model.nets.hrnet import HRNet

logger = logging.getLogger(__name__)

__all__ = ["HeadSpeed", "format_head_speed", "run_head_speed"]

HEATMAP = (96, 72)
CROP = (384, 288)
FLOP_RATIO = 0.31  # 22.1 / 70.6 GFLOP (torch.utils.flop_counter), head pass / HRNet-W48 pass


@dataclass
class HeadSpeed:
    """ms per item of each variant and of HRNet-W48, measured in the same rounds.

    Attributes:
        batch: items per call.
        rounds: interleaved rounds (the fastest counts).
        backbone_ms: HRNet-W48 (NCHW, as the product runs it on the CPU).
        head_ms: variant name -> ms per person-frame.
        ratio: variant name -> head_ms / backbone_ms.
    """

    batch: int
    rounds: int
    backbone_ms: float
    head_ms: dict[str, float]
    ratio: dict[str, float]


def _set_variant(head: DCPose, *, impl: str, fused: bool) -> None:
    for module in head.modules():
        if isinstance(module, ModulatedDeformConv):
            module.impl = impl  # type: ignore[assignment]
        elif isinstance(module, PoseCorrectionNetwork):
            module.fuse_offset_mask = fused


def _variants(trained: nn.Module, released: nn.Module) -> dict[str, tuple[nn.Module, bool, bool]]:
    """name -> (head, channels_last input, flush denormals)."""
    out: dict[str, tuple[nn.Module, bool, bool]] = {}
    steps = [
        ("before (torchvision DCNv2, 2 convs, NCHW)", "torchvision", False, False, False),
        ("pure DCNv2", "pytorch", False, False, False),
        ("+ fused offset/mask conv", "pytorch", True, False, False),
        ("+ flush denormals (= the Predictor on CPU)", "pytorch", True, False, True),
        ("+ channels_last (not used on CPU)", "pytorch", True, True, True),
    ]
    for init_name, base in (("trained-like", trained), ("released init", released)):
        for name, impl, fused, cl, ftz in steps:
            head = copy.deepcopy(base)
            _set_variant(head, impl=impl, fused=fused)
            if cl:
                head = head.to(memory_format=torch.channels_last)
            out[f"{init_name}: {name}"] = (head, cl, ftz)
    return out


def run_head_speed(batch: int = 1, rounds: int = 3, num_joints: int = 17) -> HeadSpeed:
    """Times every variant and HRNet-W48 interleaved on the CPU; see the module docstring."""
    gen = torch.Generator().manual_seed(0)
    trained = build_dcpose(None, num_joints=num_joints)
    variance_preserving_init(trained, seed=1)
    torch.manual_seed(0)
    released = build_dcpose(None, num_joints=num_joints)
    variants = _variants(trained.eval(), released.eval())
    maps = [torch.rand(batch, num_joints, *HEATMAP, generator=gen) for _ in range(3)]
    margin = torch.ones(batch, 2)
    net = HRNet(width=48, num_joints=num_joints).eval()
    variance_preserving_init(net, seed=2)
    crops = torch.randn(batch, 3, *CROP, generator=gen)
    calls: dict[str, Callable[[], object]] = {"HRNet-W48": lambda: net(crops)}
    ftz: dict[str, bool] = {"HRNet-W48": False}
    for name, (head, _, flush) in variants.items():
        calls[name] = lambda head=head: head.refine(*maps, margin)
        ftz[name] = flush
    best = {name: float("inf") for name in calls}
    previous = torch.set_flush_denormal(False) and False
    try:
        with torch.inference_mode():
            for round_ in range(rounds + 1):  # round 0 warms up
                for name, call in calls.items():
                    torch.set_flush_denormal(ftz[name])
                    start = time.perf_counter()
                    call()
                    took = (time.perf_counter() - start) * 1e3 / batch
                    if round_:
                        best[name] = min(best[name], took)
                logger.info("head speed: round %d of %d done", round_, rounds)
    finally:
        torch.set_flush_denormal(previous)
    backbone = best.pop("HRNet-W48")
    return HeadSpeed(batch, rounds, round(backbone, 1), {k: round(v, 1) for k, v in best.items()},
                     {k: round(v / backbone, 3) for k, v in best.items()})


def format_head_speed(result: HeadSpeed) -> str:
    """Human-readable table of a `run_head_speed` result."""
    lines = [
        f"CPU head vs HRNet-W48, interleaved, fastest of {result.rounds} rounds, batch {result.batch} "
        f"(by FLOPs the ratio is {FLOP_RATIO}):",
        f"  {'HRNet-W48 backbone':<64} {result.backbone_ms:8.1f} ms/item",
    ]
    for name, ms in result.head_ms.items():
        lines.append(f"  {name:<64} {ms:8.1f} ms/item  ratio {result.ratio[name]:.2f}")
    return "\n".join(lines)
