"""Building blocks of the DCPose head: modulated deformable convolution (DCNv2) and RSB blocks.

DCNv2 is pure PyTorch (one `F.grid_sample` call plus a matmul), with the offset/mask layout and
border rule of the kernel DCPose ships (mmdetection v1) and of `torchvision.ops.deform_conv2d`
(the released DCPose code):

- offset channel ``g*2*K + 2*k`` is the y shift and ``+1`` the x shift of kernel tap ``k``
  (``k = i*kw + j``) for deformable group ``g``; mask channel ``g*K + k``; input channels are split
  contiguously into the deformable groups;
- a bilinear sample at (y, x) is 0 when it lies outside (-1, H) x (-1, W); inside, corners that
  fall off the map contribute 0.

Which implementation ``impl="auto"`` picks is a measured rule (`torchvision_preferred`): on CUDA,
torchvision's kernel; on the CPU, the pure-PyTorch one, because torchvision's CPU kernel measured
slower for the head's five layers (``python -m model bench`` prints both side by side; on 2 EPYC
cores: forward 1.5-2.4x and forward+backward about 3.5x slower). Both stay tested against a
direct-loop reference (`model.testing.dcn_reference`). The RSB (Residual Steps Block, from RSN)
classes reproduce the released DCPose code exactly so that the released checkpoint loads with its own key names.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

DeformImpl = Literal["auto", "pytorch", "torchvision"]
IntPair = int | tuple[int, int]

# Resolved on first use: None = not tried yet, False = unavailable, else the torchvision op.
_torchvision_op: Callable[..., Tensor] | None | Literal[False] = None


def pair(value: IntPair, name: str) -> tuple[int, int]:
    """Returns ``(value, value)`` for an int, the pair itself for a 2-tuple."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _torchvision_deform_conv2d() -> Callable[..., Tensor] | None:
    """Returns `torchvision.ops.deform_conv2d` if torchvision imports, else None (logged once)."""
    global _torchvision_op
    if _torchvision_op is None:
        try:
            from torchvision.ops import deform_conv2d as op
        # Broad on purpose: the CUDA-only wheel raises RuntimeError (operator torchvision::nms does
        # not exist) at import, a missing package raises ImportError; either way we fall back.
        except Exception as exc:  # noqa: BLE001
            logger.info(
                "torchvision.ops.deform_conv2d unavailable (%s: %s); using the pure-PyTorch DCNv2",
                type(exc).__name__,
                exc,
            )
            _torchvision_op = False
        else:
            logger.info("torchvision.ops.deform_conv2d available (impl='auto' uses it on CUDA, the pure-PyTorch DCNv2 on CPU)")
            _torchvision_op = op
    return _torchvision_op or None


def torchvision_deform_conv2d_available() -> bool:
    """Whether `torchvision.ops.deform_conv2d` can be used here."""
    return _torchvision_deform_conv2d() is not None


def torchvision_preferred(device: torch.device, dtype: torch.dtype) -> bool:
    """The measured rule of ``impl="auto"``: torchvision's kernel on CUDA, the pure-PyTorch one on CPU.

    On the CPU torchvision's kernel is slower for the PCN layers (see the module docstring) and
    has no bfloat16/float16 path; on CUDA its kernel takes float16/32/64 and bfloat16 is run in
    float32 by `deform_conv2d` (autocast does the same).
    """
    return device.type == "cuda" and dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_deform_args(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    mask: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int, int]:
    """Validates shapes; returns (offset groups G, output height Ho, output width Wo)."""
    if x.dim() != 4 or weight.dim() != 4 or offset.dim() != 4:
        raise ValueError(
            f"x, offset and weight must be 4-D, got x {tuple(x.shape)}, "
            f"offset {tuple(offset.shape)}, weight {tuple(weight.shape)}"
        )
    n, c, h, w = x.shape
    o, cw, kh, kw = weight.shape
    if cw != c:
        raise ValueError(
            f"weight {tuple(weight.shape)} expects {cw} input channels but x has {c} "
            "(only groups=1 is supported)"
        )
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"invalid stride {stride}, padding {padding} or dilation {dilation}")
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(
            f"input {h}x{w} is too small for kernel {kh}x{kw} with padding {padding}, dilation {dilation}"
        )
    k = kh * kw
    if offset.shape[1] % (2 * k) != 0 or offset.shape[1] == 0:
        raise ValueError(f"offset has {offset.shape[1]} channels; expected 2*groups*{k} (y, x per tap)")
    groups = offset.shape[1] // (2 * k)
    if c % groups != 0:
        raise ValueError(f"{groups} deformable groups do not divide {c} input channels")
    if tuple(offset.shape) != (n, 2 * groups * k, ho, wo):
        raise ValueError(f"offset shape {tuple(offset.shape)} != expected {(n, 2 * groups * k, ho, wo)}")
    if mask is not None and tuple(mask.shape) != (n, groups * k, ho, wo):
        raise ValueError(f"mask shape {tuple(mask.shape)} != expected {(n, groups * k, ho, wo)}")
    if bias is not None and tuple(bias.shape) != (o,):
        raise ValueError(f"bias shape {tuple(bias.shape)} != expected {(o,)}")
    return groups, ho, wo


def _sampling_grid(
    off: Tensor,
    kernel: tuple[int, int],
    size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """`F.grid_sample` grid (N*G, K*Ho, Wo, 2) of every tap from offsets (N, G, K, 2, Ho, Wo).

    Tap (i, j) at output (r, s) samples pixel y = r*stride - pad + i*dilation + dy (x alike).
    align_corners=False maps pixel p to (2p + 1)/size - 1 (valid for size 1 too); with zero padding
    grid_sample then applies exactly the kernel's rule: corners off the map contribute 0, so a
    sample at or beyond -1 / size is 0. The offset-free part is one small (K, Ho, Wo) table per
    axis, so the per-sample work is one multiply-add per coordinate.
    """
    n, groups, k, _, ho, wo = off.shape
    (kh, kw), (h, w) = kernel, size
    opts = {"dtype": off.dtype, "device": off.device}
    tap_y = (torch.arange(kh, **opts) * dilation[0]).repeat_interleave(kw).view(k, 1, 1)
    tap_x = (torch.arange(kw, **opts) * dilation[1]).repeat(kh).view(k, 1, 1)
    base_y = (torch.arange(ho, **opts) * stride[0] - padding[0]).view(1, ho, 1)
    base_x = (torch.arange(wo, **opts) * stride[1] - padding[1]).view(1, 1, wo)
    fixed_y = (2 * (tap_y + base_y) + 1) / h - 1  # (K, Ho, 1)
    fixed_x = (2 * (tap_x + base_x) + 1) / w - 1  # (K, 1, Wo)
    grid_x = torch.add(fixed_x, off[:, :, :, 1], alpha=2 / w)  # (N, G, K, Ho, Wo)
    grid_y = torch.add(fixed_y, off[:, :, :, 0], alpha=2 / h)
    return torch.stack((grid_x, grid_y), dim=-1).view(n * groups, k * ho, wo, 2)


def deform_conv2d_grid_sample(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Pure-PyTorch DCNv2: all bilinear samples in one `F.grid_sample`, then one matmul.

    Args: as `deform_conv2d`. Returns (N, O, Ho, Wo). Gradients come from autograd.
    """
    stride, padding, dilation = (
        pair(stride, "stride"),
        pair(padding, "padding"),
        pair(dilation, "dilation"),
    )
    groups, ho, wo = check_deform_args(x, offset, weight, bias, mask, stride, padding, dilation)
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    k = kh * kw
    grid = _sampling_grid(offset.reshape(n, groups, k, 2, ho, wo), (kh, kw), (h, w), stride, padding, dilation)
    cols = F.grid_sample(
        x.reshape(n * groups, c // groups, h, w),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (N*G, C/G, K*Ho, Wo)
    cols = cols.view(n, groups, c // groups, k, ho, wo)
    if mask is not None:
        cols = cols * mask.reshape(n, groups, 1, k, ho, wo)
    # Channel-major then tap, the same order as weight.view(O, C*K).
    out = torch.matmul(weight.reshape(o, c * k), cols.reshape(n, c * k, ho * wo)).view(n, o, ho, wo)
    return out if bias is None else out + bias.view(1, o, 1, 1)


def deform_conv2d(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Tensor | None = None,
    impl: DeformImpl = "auto",
) -> Tensor:
    """Modulated deformable convolution (DCNv2), layout of DCPose's kernel and torchvision.

    Args:
        x: Input (N, C, H, W).
        offset: (N, 2*G*kh*kw, Ho, Wo); per group and tap first dy then dx, in pixels.
        weight: (O, C, kh, kw) (convolution groups = 1).
        bias: Optional (O,).
        stride: Convolution stride.
        padding: Zero padding.
        dilation: Kernel dilation.
        mask: Optional modulation (N, G*kh*kw, Ho, Wo), used as given (no sigmoid); None means 1.
        impl: "auto" follows `torchvision_preferred` (torchvision on CUDA where it imports, the
            pure-PyTorch one on the CPU); "pytorch" / "torchvision" force one (the latter raises
            RuntimeError if unavailable).

    Returns:
        (N, O, Ho, Wo).
    """
    if impl not in ("auto", "pytorch", "torchvision"):
        raise ValueError(f"impl must be 'auto', 'pytorch' or 'torchvision', got {impl!r}")
    op = None if impl == "pytorch" else _torchvision_deform_conv2d()
    if impl == "auto" and op is not None and not torchvision_preferred(x.device, x.dtype):
        op = None
    if impl == "torchvision" and op is None:
        raise RuntimeError(
            "impl='torchvision' requested but torchvision.ops.deform_conv2d cannot be "
            "imported here; use impl='auto' or 'pytorch'"
        )
    if op is None:
        return deform_conv2d_grid_sample(
            x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask
        )
    pairs = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    check_deform_args(x, offset, weight, bias, mask, *pairs)
    if x.dtype == torch.bfloat16:  # torchvision's kernels have no bfloat16 path: run it in float32
        out = op(*(None if t is None else t.float() for t in (x, offset, weight, bias)), stride=pairs[0],
                 padding=pairs[1], dilation=pairs[2], mask=None if mask is None else mask.float())
        return out.to(torch.bfloat16)
    return op(x, offset, weight, bias, stride=pairs[0], padding=pairs[1], dilation=pairs[2], mask=mask)


class ModulatedDeformConv(nn.Module):
    """DCNv2 layer: ``forward(x, offset, mask)`` with externally predicted offsets and masks.

    Parameters are `weight` (out, in, k, k) and `bias` (out,), as in DCPose's checkpoint.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        dilation: int = 1,
        deformable_groups: int = 1,
        bias: bool = True,
        stride: int = 1,
    ) -> None:
        super().__init__()
        if in_channels % deformable_groups != 0:
            raise ValueError(f"deformable_groups={deformable_groups} must divide in_channels={in_channels}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.deformable_groups = deformable_groups
        self.impl: DeformImpl = "auto"  # which DCNv2 runs (see `deform_conv2d`); benchmarks set it
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(+-1/sqrt(fan_in)) weight and zero bias (the mmdet default)."""
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size**2)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def init_identity(self) -> None:
        """DCPose's identity filler: w[c, c, centre] = 1 for c < min(in, out), bias 0 (§2.4)."""
        with torch.no_grad():
            self.weight.zero_()
            centre = self.kernel_size // 2
            for ch in range(min(self.in_channels, self.out_channels)):
                self.weight[ch, ch, centre, centre] = 1.0
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None) -> Tensor:
        """x: (B, C, H, W); offset: (B, 2*G*k*k, Ho, Wo); mask: (B, G*k*k, Ho, Wo), no sigmoid."""
        expected = 2 * self.deformable_groups * self.kernel_size**2
        if offset.dim() != 4 or offset.shape[1] != expected:
            raise ValueError(
                f"offset must have {expected} channels (2 * {self.deformable_groups} groups * "
                f"{self.kernel_size}x{self.kernel_size} taps), got shape {tuple(offset.shape)}"
            )
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
            impl=self.impl,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, "
            f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}"
        )


class ConvBnRelu(nn.Module):
    """Conv2d (with bias) + BatchNorm2d + optional ReLU; RSN's ``conv_bn_relu`` (the released DCPose code)."""

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        relu: bool = True,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_planes, out_planes, kernel_size, stride=stride, padding=padding, groups=groups, bias=True
        )
        self.bn = nn.BatchNorm2d(out_planes)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class RSBBlock(nn.Module):
    """Residual Steps Block (RSN, used by DCPose's PRF/PTM/combiner; the released DCPose code).

    A 1x1 conv widens to 4 branches of ``in_planes*26//64`` channels; branch b runs b+1 3x3
    convs, each step adding the previous branch's output at the same depth; the four branch ends
    are fused by a 1x1 conv (no ReLU), added to the (optionally projected) input, then ReLU.
    """

    def __init__(self, in_planes: int, planes: int, downsample: bool) -> None:
        super().__init__()
        self.branch_channels = in_planes * 26 // 64
        if self.branch_channels < 1:
            raise ValueError(f"in_planes={in_planes} gives empty RSB branches (needs >= 3)")
        bc = self.branch_channels
        self.conv_bn_relu1 = ConvBnRelu(in_planes, 4 * bc, 1)
        for name in (
            "2_1_1",
            "2_2_1",
            "2_2_2",
            "2_3_1",
            "2_3_2",
            "2_3_3",
            "2_4_1",
            "2_4_2",
            "2_4_3",
            "2_4_4",
        ):
            setattr(self, f"conv_bn_relu{name}", ConvBnRelu(bc, bc, 3, padding=1))
        self.conv_bn_relu3 = ConvBnRelu(4 * bc, planes, 1, relu=False)
        self.downsample = ConvBnRelu(in_planes, planes, 1, relu=False) if downsample else None
        if not downsample and in_planes != planes:
            raise ValueError(f"RSBBlock({in_planes}, {planes}) needs downsample=True to change width")

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_planes, H, W) -> (B, planes, H, W)."""
        s0, s1, s2, s3 = torch.split(self.conv_bn_relu1(x), self.branch_channels, dim=1)
        o11 = self.conv_bn_relu2_1_1(s0)
        o21 = self.conv_bn_relu2_2_1(s1 + o11)
        o22 = self.conv_bn_relu2_2_2(o21)
        o31 = self.conv_bn_relu2_3_1(s2 + o21)
        o32 = self.conv_bn_relu2_3_2(o31 + o22)
        o33 = self.conv_bn_relu2_3_3(o32)
        o41 = self.conv_bn_relu2_4_1(s3 + o31)
        o42 = self.conv_bn_relu2_4_2(o41 + o32)
        o43 = self.conv_bn_relu2_4_3(o42 + o33)
        o44 = self.conv_bn_relu2_4_4(o43)
        out = self.conv_bn_relu3(torch.cat((o11, o22, o33, o44), dim=1))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ChainOfRSBBlocks(nn.Module):
    """``num_blocks`` RSB blocks; the first projects ``in_planes`` -> ``out_planes`` (with downsample)."""

    def __init__(self, in_planes: int, out_planes: int, num_blocks: int) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        blocks = [RSBBlock(in_planes, out_planes, downsample=True)]
        blocks += [RSBBlock(out_planes, out_planes, downsample=False) for _ in range(num_blocks - 1)]
        self.layers = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.layers:
            x = block(x)
        return x


__all__ = [
    "ChainOfRSBBlocks",
    "ConvBnRelu",
    "ModulatedDeformConv",
    "RSBBlock",
    "deform_conv2d",
    "deform_conv2d_grid_sample",
    "torchvision_deform_conv2d_available",
    "torchvision_preferred",
]
