"""HRNet backbone (the DCPose "rough pose estimator") in the standard top-down pose layout.

The module and parameter names follow the public HRNet pose layout (stem ``conv1/bn1/conv2/bn2``,
``layer1``, ``transition1..3``, ``stage2..4`` made of high-resolution modules with ``branches`` and
``fuse_layers``, ``final_layer``) so that official checkpoints (HRNet pose weights, PoseWarper's
``pretrained_coco_model.pth``, DCPose's ``rough_pose_estimation_net.*`` after stripping the prefix) load
one to one with ``strict=True``. See the released DCPose code for the key names and shapes.

Shapes: input ``(B, 3, H, W)`` normalised RGB crops; output ``(B, K, H/4, W/4)`` raw heatmaps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "HRNET_STAGES",
    "BasicBlock",
    "Bottleneck",
    "HRNet",
    "HighResolutionModule",
    "StageSpec",
    "count_parameters",
    "hrnet_w32",
    "hrnet_w48",
]


@dataclass(frozen=True)
class StageSpec:
    """One HRNet stage: ``num_modules`` high-resolution modules over ``num_branches`` resolutions.

    Attributes:
        num_modules: how many fuse-exchange modules the stage repeats.
        num_branches: parallel resolutions; branch ``b`` has ``width * 2**b`` channels at stride ``4 * 2**b``.
        num_blocks: BasicBlocks per branch in each module.
    """

    num_modules: int
    num_branches: int
    num_blocks: int = 4


# Stages 2, 3 and 4 of the standard pose HRNet (HRNet paper, Table 1; W32 and W48 share them).
HRNET_STAGES: tuple[StageSpec, ...] = (StageSpec(1, 2), StageSpec(4, 3), StageSpec(3, 4))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or projected) shortcut; expansion 1."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) conv-BN layers with a shortcut; used by ``layer1``."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def _conv_bn(
    in_channels: int, out_channels: int, kernel: int, stride: int = 1, relu: bool = False
) -> nn.Sequential:
    """Bias-free conv + BN (+ ReLU) as an ``nn.Sequential`` (official keys ``.0.weight``, ``.1.*``)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _block_chain(
    in_channels: int, channels: int, num_blocks: int, block: type[BasicBlock | Bottleneck]
) -> nn.Sequential:
    """``num_blocks`` residual blocks; the first projects its shortcut when the width changes."""
    out_channels = channels * block.expansion
    downsample = _conv_bn(in_channels, out_channels, 1) if in_channels != out_channels else None
    blocks = [block(in_channels, channels, downsample=downsample)]
    blocks += [block(out_channels, channels) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks followed by all-to-all fusion by summation (HRNet §3).

    Fusion from branch ``j`` into ``i``: ``j > i`` is a 1x1 conv + BN + nearest up-sampling by ``2**(j-i)``;
    ``j < i`` is ``i-j`` strided 3x3 conv + BN steps (ReLU after all but the last). With
    ``multi_scale_output=False`` only the highest-resolution output is built (``fuse_layers.0`` only).
    """

    def __init__(self, widths: list[int], num_blocks: int, multi_scale_output: bool = True):
        super().__init__()
        self.widths = list(widths)
        self.branches = nn.ModuleList(_block_chain(w, w, num_blocks, BasicBlock) for w in widths)
        num_outputs = len(widths) if multi_scale_output else 1
        self.fuse_layers = (
            nn.ModuleList()
            if len(widths) == 1
            else nn.ModuleList(
                nn.ModuleList(self._fuse_path(j, i) for j in range(len(widths))) for i in range(num_outputs)
            )
        )
        self.relu = nn.ReLU(inplace=True)

    def _fuse_path(self, src: int, dst: int) -> nn.Module | None:
        """The module carrying branch ``src`` to the resolution and width of branch ``dst``."""
        w = self.widths
        if src == dst:
            return None
        if src > dst:
            return nn.Sequential(
                nn.Conv2d(w[src], w[dst], 1, bias=False),
                nn.BatchNorm2d(w[dst]),
                nn.Upsample(scale_factor=2 ** (src - dst), mode="nearest"),
            )
        steps = dst - src
        return nn.Sequential(
            *(
                _conv_bn(w[src], w[dst] if k == steps - 1 else w[src], 3, stride=2, relu=k != steps - 1)
                for k in range(steps)
            )
        )

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        if len(self.fuse_layers) == 0:
            return xs
        fused = []
        for dst, paths in enumerate(self.fuse_layers):
            size = xs[dst].shape[-2:]
            y = xs[dst]
            for src, (path, x) in enumerate(zip(paths, xs, strict=True)):
                if src == dst:
                    continue
                if src > dst:
                    # Up-sample to the exact size of the target branch rather than by 2**(src-dst): identical
                    # for inputs that are multiples of 32, and still defined for e.g. 64x48 crops, where
                    # odd sizes round up on the way down.
                    upsample: nn.Upsample = path[-1]
                    y = y + nn.functional.interpolate(path[:-1](x), size=size, mode=upsample.mode)
                else:
                    y = y + path(x)
            fused.append(self.relu(y))
        return fused


class HRNet(nn.Module):
    """HRNet pose network (Sun et al., CVPR 2019): 1/4-resolution heatmaps from a normalised RGB crop.

    Args:
        width: channels of the highest-resolution branch (W in HRNet-W32/W48); branch ``b`` has
            ``width * 2**b`` channels. Tiny widths (4, 8) are fine for tests.
        num_joints: heatmap channels of ``final_layer``.
        stages: stage 2..4 layout (defaults to the standard pose HRNet).
        stem_width: channels of the two stride-2 stem convs (64 in official weights).
        layer1_blocks: Bottlenecks in ``layer1`` (4 in official weights); its output is ``4 * stem_width``.
    """

    def __init__(
        self,
        width: int = 48,
        num_joints: int = 17,
        *,
        stages: tuple[StageSpec, ...] = HRNET_STAGES,
        stem_width: int = 64,
        layer1_blocks: int = 4,
    ) -> None:
        super().__init__()
        if width < 1 or num_joints < 1 or stem_width < 1 or layer1_blocks < 1:
            raise ValueError(
                f"HRNet needs positive sizes, got width={width}, num_joints={num_joints}, "
                f"stem_width={stem_width}, layer1_blocks={layer1_blocks}"
            )
        if len(stages) != 3 or any(s.num_branches != i + 2 for i, s in enumerate(stages)):
            raise ValueError(
                "HRNet expects three stages (stage2..4) with 2, 3 and 4 branches, got "
                f"{[s.num_branches for s in stages]}"
            )
        self.width = width
        self.num_joints = num_joints
        self.conv1 = nn.Conv2d(3, stem_width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.conv2 = nn.Conv2d(stem_width, stem_width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _block_chain(stem_width, stem_width, layer1_blocks, Bottleneck)

        previous = [stem_width * Bottleneck.expansion]
        for index, spec in enumerate(stages, start=2):
            widths = [width * 2**b for b in range(spec.num_branches)]
            setattr(self, f"transition{index - 1}", self._transition(previous, widths))
            last_stage = index == len(stages) + 1
            modules = [
                HighResolutionModule(
                    widths, spec.num_blocks, multi_scale_output=not (last_stage and m == spec.num_modules - 1)
                )
                for m in range(spec.num_modules)
            ]
            setattr(self, f"stage{index}", nn.Sequential(*modules))
            previous = widths
        self.final_layer = nn.Conv2d(width, num_joints, 1)

    @staticmethod
    def _transition(previous: list[int], widths: list[int]) -> nn.ModuleList:
        """Adapt existing branches (3x3 conv if the width changes) and spawn new lower-resolution ones."""
        layers: list[nn.Module | None] = []
        for i, w in enumerate(widths):
            if i < len(previous):
                layers.append(_conv_bn(previous[i], w, 3, relu=True) if previous[i] != w else None)
            else:
                # A new branch comes from the lowest existing one through (i - len(previous) + 1) s2 convs.
                steps = i - len(previous) + 1
                src = previous[-1]
                layers.append(
                    nn.Sequential(
                        *(
                            _conv_bn(src, w if k == steps - 1 else src, 3, stride=2, relu=True)
                            for k in range(steps)
                        )
                    )
                )
        return nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        """Heatmaps for a batch of crops.

        Args:
            x: ``(B, 3, H, W)`` crops; H and W multiples of 4 (official sizes are multiples of 32).

        Returns:
            ``(B, K, H/4, W/4)`` heatmaps, no activation.
        """
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(
                f"HRNet expects input of shape (B, 3, H, W) with H and W multiples of 4, got {tuple(x.shape)}"
            )
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for index in (2, 3, 4):
            transition: nn.ModuleList = getattr(self, f"transition{index - 1}")
            # New branches start from the lowest-resolution output of the previous stage.
            xs = [
                (xs[min(i, len(xs) - 1)] if t is None else t(xs[min(i, len(xs) - 1)]))
                for i, t in enumerate(transition)
            ]
            xs = getattr(self, f"stage{index}")(xs)
        return self.final_layer(xs[0])

    def init_weights(self, std: float = 0.001) -> None:
        """HRNet/DCPose initialisation: conv weights ~ N(0, std), conv biases 0, BN weight 1 and bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def hrnet_w48(num_joints: int = 17) -> HRNet:
    """HRNet-W48, the DCPose / PoseWarper backbone (63.6 M parameters)."""
    return HRNet(width=48, num_joints=num_joints)


def hrnet_w32(num_joints: int = 17) -> HRNet:
    """HRNet-W32 (28.5 M parameters)."""
    return HRNet(width=32, num_joints=num_joints)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``module`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
