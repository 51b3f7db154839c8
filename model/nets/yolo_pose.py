"""YOLO11-pose (Ultralytics' multi-person pose detector), our own PyTorch implementation of its graph.

The network is described by the ``yaml`` dict stored in its checkpoint: a list of layers
``[from, repeats, type, args]`` (backbone, then head), scaled by (depth, width, max channels) of the
model's scale ("n": 0.5, 0.25, 1024). Parameter names follow the checkpoint (``model.<i>.cv1.conv.weight``,
...), so its state dict loads strictly. Parts (YOLO11 architecture):

- `Conv`: Conv2d (no bias, padding k // 2) + BatchNorm2d (eps 1e-3) + SiLU (or no activation).
- `Bottleneck`: two 3x3 Convs with hidden width ``e x c2``, plus the input when the widths agree.
- `C3k`: CSP block: cv1 -> n Bottlenecks (e = 1), cv2 beside it, cv3 fuses the two.
- `C3k2`: cv1 splits into two halves; each of n blocks (Bottleneck, or C3k of 2 Bottlenecks) takes the
  last output; cv2 fuses all of them (CSP with "fast" chunking).
- `SPPF`: cv1, three chained 5x5 max-pools (stride 1), cv2 on the concatenation of the four maps.
- `C2PSA`: cv1 splits into halves; one half goes through PSABlocks (multi-head self-attention over all
  positions with a depthwise 3x3 positional term on the values, then a 2-Conv feed-forward, both
  residual); cv2 fuses the halves.
- `PoseHead` (``Pose``): per level (strides 8, 16, 32) a box branch (cv2: 4 x reg_max DFL bins), a
  class branch (cv3, depthwise-separable) and a keypoint branch (cv4: K x 3). Decoding: box side =
  expectation of the softmax over reg_max bins (DFL), left/top/right/bottom distances from the anchor
  (cell centre) times the stride; keypoint = (2 x raw + cell index) x stride, visibility = sigmoid;
  class score = sigmoid.

Input: (B, 3, H, W) RGB in [0, 1], H and W multiples of 32. This module imports nothing else of the
project.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["PoseOutput", "YoloPoseNet", "YoloSpec"]

BN_EPS = 1e-3


@dataclass(frozen=True)
class YoloSpec:
    """What builds the network: the checkpoint's layer lists and the head's settings.

    Attributes:
        layers: ``[from, repeats, type, args]`` rows, backbone then head (the checkpoint's ``yaml``).
        depth, width, max_channels: the scale's multipliers (``yaml["scales"][scale]``).
        num_classes: classes of the detector (1: person).
        kpt_shape: (K, 3): joints and values per joint (x, y, visibility).
        reg_max: DFL bins per box side.
        strides: output strides of the head's levels.
    """

    layers: tuple[tuple[Any, int, str, tuple[Any, ...]], ...]
    depth: float
    width: float
    max_channels: int
    num_classes: int = 1
    kpt_shape: tuple[int, int] = (17, 3)
    reg_max: int = 16
    strides: tuple[float, ...] = (8.0, 16.0, 32.0)


@dataclass(frozen=True)
class PoseOutput:
    """Decoded candidates over all anchors A, in input pixels.

    Attributes:
        boxes: (B, A, 4) x1, y1, x2, y2.
        scores: (B, A, C) class probabilities.
        keypoints: (B, A, K, 3) x, y and visibility probability.
    """

    boxes: Tensor
    scores: Tensor
    keypoints: Tensor


def _width(channels: list[int], src: int) -> int:
    """The width of layer `src`'s output (-1: the previous layer); channels[0] is the input's."""
    return channels[src] if src < 0 else channels[src + 1]


def _divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + SiLU (Identity when `act` is False)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS)
        self.act: nn.Module = nn.SiLU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two 3x3 Convs (hidden width e x c2), residual when c1 == c2 and `shortcut`."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 3)
        self.cv2 = Conv(hidden, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3k(nn.Module):
    """CSP block: n Bottlenecks (e = 1) on cv1's branch, cv2's branch beside it, fused by cv3."""

    def __init__(self, c1: int, c2: int, n: int = 2, shortcut: bool = True, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1)
        self.cv2 = Conv(c1, hidden, 1)
        self.cv3 = Conv(2 * hidden, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, e=1.0) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class C3k2(nn.Module):
    """cv1 -> two halves; n blocks chained on the last half; cv2 fuses every intermediate map."""

    def __init__(
        self, c1: int, c2: int, n: int = 1, c3k: bool = False, e: float = 0.5, shortcut: bool = True
    ) -> None:
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(
            C3k(self.c, self.c, 2, shortcut) if c3k else Bottleneck(self.c, self.c, shortcut)
            for _ in range(n)
        )

    def forward(self, x: Tensor) -> Tensor:
        ys = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            ys.append(block(ys[-1]))
        return self.cv2(torch.cat(ys, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained k x k max-pools, concatenated with their input."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1)
        self.cv2 = Conv(4 * hidden, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: Tensor) -> Tensor:
        ys = [self.cv1(x)]
        for _ in range(3):
            ys.append(self.m(ys[-1]))
        return self.cv2(torch.cat(ys, 1))


class Attention(nn.Module):
    """Multi-head self-attention over the H x W positions; keys/queries are `attn_ratio` x head width."""

    def __init__(self, dim: int, num_heads: int, attn_ratio: float = 0.5) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim**-0.5
        self.qkv = Conv(dim, dim + 2 * self.key_dim * num_heads, 1, act=False)
        self.proj = Conv(dim, dim, 1, act=False)
        self.pe = Conv(dim, dim, 3, g=dim, act=False)  # depthwise positional term on the values

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, h * w)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.head_dim], dim=2)  # (B, nh, d, N)
        attn = ((q.transpose(-2, -1) @ k) * self.scale).softmax(dim=-1)  # (B, nh, N, N)
        out = (v @ attn.transpose(-2, -1)).view(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
        return self.proj(out)


class PSABlock(nn.Module):
    """Residual attention, then a residual 2-Conv feed-forward (width x 2)."""

    def __init__(self, c: int, num_heads: int, attn_ratio: float = 0.5) -> None:
        super().__init__()
        self.attn = Attention(c, num_heads, attn_ratio)
        self.ffn = nn.Sequential(Conv(c, 2 * c, 1), Conv(2 * c, c, 1, act=False))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)
        return x + self.ffn(x)


class C2PSA(nn.Module):
    """cv1 -> two halves; n PSABlocks (a head per 64 channels) on the second; cv2 fuses them."""

    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5) -> None:
        super().__init__()
        if c1 != c2:
            raise ValueError(f"C2PSA keeps its width, got {c1} -> {c2}")
        self.c = int(c1 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv(2 * self.c, c1, 1)
        self.m = nn.Sequential(*(PSABlock(self.c, num_heads=self.c // 64) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        return self.cv2(torch.cat((a, self.m(b)), 1))


class Concat(nn.Module):
    """Concatenates its inputs along the channels."""

    def forward(self, xs: list[Tensor]) -> Tensor:
        return torch.cat(xs, 1)


class DFL(nn.Module):
    """Distribution focal loss integral: a fixed 1x1 conv holding the bin values 0 .. reg_max - 1."""

    def __init__(self, reg_max: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float32).view(1, reg_max, 1, 1)
        self.reg_max = reg_max

    def forward(self, x: Tensor) -> Tensor:
        """(B, 4 x reg_max, A) bin logits -> (B, 4, A) expected distances (in strides)."""
        b, _, a = x.shape
        prob = x.view(b, 4, self.reg_max, a).softmax(2)
        return (prob * self.conv.weight.view(1, 1, self.reg_max, 1)).sum(2)


class PoseHead(nn.Module):
    """Box (cv2, DFL), class (cv3) and keypoint (cv4) branches per level; decodes to input pixels."""

    def __init__(
        self,
        channels: Sequence[int],
        strides: Sequence[float],
        num_classes: int = 1,
        kpt_shape: tuple[int, int] = (17, 3),
        reg_max: int = 16,
    ) -> None:
        super().__init__()
        if len(channels) != len(strides):
            raise ValueError(f"{len(channels)} head inputs but {len(strides)} strides")
        self.kpt_shape, self.reg_max, self.num_classes = tuple(kpt_shape), reg_max, num_classes
        nk = kpt_shape[0] * kpt_shape[1]
        c2 = max(16, channels[0] // 4, 4 * reg_max)
        c3 = max(channels[0], min(num_classes, 100))
        c4 = max(channels[0] // 4, nk)
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for x in channels
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(
                nn.Sequential(Conv(x, x, 3, g=x), Conv(x, c3, 1)),
                nn.Sequential(Conv(c3, c3, 3, g=c3), Conv(c3, c3, 1)),
                nn.Conv2d(c3, num_classes, 1),
            )
            for x in channels
        )
        self.cv4 = nn.ModuleList(
            nn.Sequential(Conv(x, c4, 3), Conv(c4, c4, 3), nn.Conv2d(c4, nk, 1)) for x in channels
        )
        self.dfl = DFL(reg_max)
        self.strides = tuple(float(s) for s in strides)

    def _anchors(self, feats: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """(A, 2) cell indices (x, y) and (A, 1) strides, level by level, row-major."""
        cells, strides = [], []
        for feat, stride in zip(feats, self.strides):
            h, w = feat.shape[-2:]
            ys, xs = torch.meshgrid(
                torch.arange(h, device=feat.device), torch.arange(w, device=feat.device), indexing="ij"
            )
            cells.append(torch.stack((xs, ys), -1).view(-1, 2))
            strides.append(torch.full((h * w, 1), stride, device=feat.device))
        return torch.cat(cells).to(feats[0].dtype), torch.cat(strides).to(feats[0].dtype)

    def forward(self, feats: list[Tensor]) -> PoseOutput:
        b = feats[0].shape[0]
        k, ndim = self.kpt_shape
        box = torch.cat([m(x).flatten(2) for m, x in zip(self.cv2, feats)], 2)  # (B, 4 x reg_max, A)
        cls = torch.cat([m(x).flatten(2) for m, x in zip(self.cv3, feats)], 2)  # (B, C, A)
        kpt = torch.cat([m(x).flatten(2) for m, x in zip(self.cv4, feats)], 2).view(b, k, ndim, -1)
        cells, strides = self._anchors(feats)
        centre = (cells + 0.5).T  # (2, A), in cells
        dist = self.dfl(box)  # (B, 4, A): left, top, right, bottom
        boxes = torch.cat((centre - dist[:, :2], centre + dist[:, 2:]), 1) * strides.T  # (B, 4, A)
        xy = (kpt[:, :, :2] * 2.0 + cells.T) * strides.T  # (B, K, 2, A)
        vis = kpt[:, :, 2:3].sigmoid()
        keypoints = torch.cat((xy, vis), 2).permute(0, 3, 1, 2)  # (B, A, K, 3)
        return PoseOutput(boxes.transpose(1, 2), cls.sigmoid().transpose(1, 2), keypoints)


class YoloPoseNet(nn.Module):
    """The YOLO11-pose graph of a `YoloSpec`: (B, 3, H, W) RGB in [0, 1] -> `PoseOutput`."""

    def __init__(self, spec: YoloSpec) -> None:
        super().__init__()
        self.spec = spec
        layers, sources, channels = [], [], [3]
        for i, (src, repeats, kind, args) in enumerate(spec.layers):
            sources.append(src)
            layer, out = self._layer(spec, kind, args, repeats, src, channels, i)
            layers.append(layer)
            channels.append(out)
        self.model = nn.ModuleList(layers)
        self.sources = sources
        # Outputs later layers read (besides the previous one).
        self._keep = {s for src in sources if isinstance(src, list) for s in src if s != -1}

    @staticmethod
    def _layer(
        spec: YoloSpec,
        kind: str,
        args: tuple[Any, ...],
        repeats: int,
        src: Any,
        channels: list[int],
        index: int,
    ) -> tuple[nn.Module, int]:
        """One layer and its output width; `channels` holds the input (3) then every layer's width."""
        n = max(round(repeats * spec.depth), 1) if repeats > 1 else repeats
        c1 = _width(channels, src) if isinstance(src, int) else 0
        if kind in ("Conv", "C3k2", "SPPF", "C2PSA"):
            c2 = _divisible(min(int(args[0]), spec.max_channels) * spec.width)
            if kind == "Conv":
                return Conv(c1, c2, int(args[1]), int(args[2]) if len(args) > 2 else 1), c2
            if kind == "C3k2":
                c3k = bool(args[1]) if len(args) > 1 else False
                e = float(args[2]) if len(args) > 2 else 0.5
                return C3k2(c1, c2, n, c3k, e), c2
            if kind == "SPPF":
                return SPPF(c1, c2, int(args[1]) if len(args) > 1 else 5), c2
            return C2PSA(c1, c2, n), c2
        if kind == "nn.Upsample":
            return nn.Upsample(scale_factor=float(args[1]), mode=str(args[2])), c1
        if kind == "Concat":
            return Concat(), sum(_width(channels, s) for s in src)
        if kind == "Pose":
            ins = [_width(channels, s) for s in src]
            return PoseHead(ins, spec.strides, spec.num_classes, spec.kpt_shape, spec.reg_max), 0
        raise ValueError(f"layer {index}: unsupported YOLO layer type {kind!r}")

    def forward(self, x: Tensor) -> PoseOutput:
        """x: (B, 3, H, W) RGB in [0, 1], H and W multiples of the largest stride."""
        multiple = int(max(self.spec.strides))
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % multiple or x.shape[3] % multiple:
            raise ValueError(
                f"input must be (B, 3, H, W) with H, W multiples of {multiple}, got {tuple(x.shape)}"
            )
        outputs: dict[int, Tensor] = {}
        for i, (layer, src) in enumerate(zip(self.model, self.sources)):
            if isinstance(src, list):
                inputs = [x if s == -1 else outputs[s] for s in src]
                if isinstance(layer, PoseHead):
                    return layer(inputs)
                x = layer(inputs)
            else:
                x = layer(x)
            if i in self._keep:
                outputs[i] = x
        raise ValueError("the network has no Pose layer")
