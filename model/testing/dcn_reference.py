"""A direct-loop float64 DCNv2, the independent reference the fast implementations are tested against."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from model.nets.blocks import IntPair, check_deform_args, pair

__all__ = ["deform_conv2d_reference"]


def _bilinear_reference(img: np.ndarray, y: float, x: float) -> float:
    """Bilinear sample of a 2-D map with the DCN border rule (see module docstring)."""
    h, w = img.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    total = 0.0
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * float(img[yy, xx])
    return total


def deform_conv2d_reference(
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
    """Direct-loop float64 DCNv2 (numpy, scalar bilinear), the independent reference of the tests; slow.

    Args: as `deform_conv2d`. Returns a float64 (N, O, Ho, Wo) tensor on the CPU.
    """
    stride, padding, dilation = (
        pair(stride, "stride"),
        pair(padding, "padding"),
        pair(dilation, "dilation"),
    )
    groups, ho, wo = check_deform_args(x, offset, weight, bias, mask, stride, padding, dilation)
    xs, offs, ws = (t.detach().cpu().double().numpy() for t in (x, offset, weight))
    ms = None if mask is None else mask.detach().cpu().double().numpy()
    n, c, _, _ = xs.shape
    o, _, kh, kw = ws.shape
    per_group = c // groups
    out = np.zeros((n, o, ho, wo))
    for b in range(n):
        for r in range(ho):
            for s in range(wo):
                column = np.zeros((c, kh, kw))
                for ch in range(c):
                    g = ch // per_group
                    for i in range(kh):
                        for j in range(kw):
                            tap = i * kw + j
                            dy = offs[b, g * 2 * kh * kw + 2 * tap, r, s]
                            dx = offs[b, g * 2 * kh * kw + 2 * tap + 1, r, s]
                            y = r * stride[0] - padding[0] + i * dilation[0] + dy
                            xx = s * stride[1] - padding[1] + j * dilation[1] + dx
                            m = 1.0 if ms is None else ms[b, g * kh * kw + tap, r, s]
                            column[ch, i, j] = m * _bilinear_reference(xs[b, ch], y, xx)
                out[b, :, r, s] = np.tensordot(ws, column, axes=([1, 2, 3], [0, 1, 2]))
    if bias is not None:
        out += bias.detach().cpu().double().numpy()[None, :, None, None]
    return torch.from_numpy(out)
