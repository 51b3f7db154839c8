"""The heatmap codec shared by training and inference: encode joints, render Gaussians, decode peaks.

Conventions (the released DCPose code; HRNet's released "biased" ones):
- A heatmap pixel (x, y) is the sample at integer heatmap coordinates; heatmap = crop / stride
  (stride 4), with no half-pixel correction, matching `model.transforms`' affine maps.
- Training targets (`encode`) put an unnormalised Gaussian (peak 1, sigma 3) at the *integer*
  centre int(x / 4 + 0.5), truncated to a (6 sigma + 1)^2 window.
- Decoding takes the argmax and moves it a quarter pixel towards the larger neighbour
  (strictly inside the map only). An integer-centred target therefore decodes to within 0.5
  heatmap px of the true point, and a sub-pixel Gaussian (`render_gaussians`) to within 0.25.
Heatmap sizes are (W, H) in numpy-facing arguments, as in the reference, and (H, W) for the
torch renderer, as in tensor shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from model.transforms import CropGeometry, heatmap_to_frame

logger = logging.getLogger(__name__)

TARGET_SIGMA = 3.0  # sigma (heatmap px) of the training targets, DCPose's and HRNet's setting


def encode(
    joints_crop: np.ndarray,
    visible: np.ndarray,
    *,
    heatmap_size: tuple[int, int] = (72, 96),
    sigma: float = TARGET_SIGMA,
    stride: float = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Training targets for one person (§5.5).

    Args:
        joints_crop: (K, 2) joints in crop pixels (288 x 384 for DCPose).
        visible: (K,) visibility; any value > 0 (codes 1 and 2) counts as labelled.
        heatmap_size: (W, H) of the heatmaps.
        sigma: Gaussian sigma in heatmap pixels; the window reaches 3 sigma each side.
        stride: crop pixels per heatmap pixel.

    Returns:
        heatmaps (K, H, W) float32 with peak 1 at int(x / stride + 0.5), and weights (K,) float32:
        1 for labelled joints whose window touches the map, else 0 (and an all-zero heatmap).
    """
    joints = np.asarray(joints_crop, dtype=np.float64)
    vis = np.asarray(visible, dtype=np.float64).reshape(-1)
    if joints.ndim != 2 or joints.shape[1] != 2:
        raise ValueError(f"joints_crop must have shape (K, 2), got {joints.shape}")
    if vis.shape != (len(joints),):
        raise ValueError(f"visible must have shape ({len(joints)},), got {np.shape(visible)}")
    if not (sigma > 0 and stride > 0):
        raise ValueError(f"sigma and stride must be positive, got sigma={sigma}, stride={stride}")
    w, h = heatmap_size
    labelled = vis > 0
    bad = labelled & ~np.all(np.isfinite(joints), axis=1)
    if np.any(bad):
        raise ValueError(f"labelled joints {np.flatnonzero(bad).tolist()} have non-finite coordinates")
    radius = 3.0 * sigma
    # HRNet rounds with Python int(), i.e. truncation towards zero, not floor.
    mu = np.trunc(np.where(labelled[:, None], joints, 0.0) / stride + 0.5)  # (K, 2)
    # The window is the integer pixels within `radius` of mu along each axis; "fully outside"
    # means none of them lies on the map. (HRNet's bounds test differs only when the window ends
    # exactly one pixel left/above the map, where it keeps weight 1 on an empty target.)
    lo = np.ceil(mu - radius)
    hi = np.floor(mu + radius)
    touches = (hi[:, 0] >= 0) & (lo[:, 0] <= w - 1) & (hi[:, 1] >= 0) & (lo[:, 1] <= h - 1)
    weights = (labelled & touches).astype(np.float32)

    dx = np.arange(w, dtype=np.float64)[None, :] - mu[:, :1]  # (K, W)
    dy = np.arange(h, dtype=np.float64)[None, :] - mu[:, 1:]  # (K, H)
    gx = np.where(np.abs(dx) <= radius, np.exp(-(dx**2) / (2 * sigma**2)), 0.0)
    gy = np.where(np.abs(dy) <= radius, np.exp(-(dy**2) / (2 * sigma**2)), 0.0)
    heatmaps = gy[:, :, None] * gx[:, None, :] * weights[:, None, None]  # separable: (K, H, W)
    return heatmaps.astype(np.float32), weights


def render_gaussians(
    xy: torch.Tensor,
    weight: torch.Tensor,
    *,
    size: tuple[int, int] = (96, 72),
    sigma: float = TARGET_SIGMA,
    window: float | None = 3.0,
) -> torch.Tensor:
    """Batched Gaussians at sub-pixel heatmap coordinates (e.g. labels or BlazePose landmarks).

    Args:
        xy: (B, K, 2) centres in heatmap pixels.
        weight: (B, K) peak heights; joints with non-finite xy render as zeros.
        size: (H, W) of the output.
        sigma: standard deviation in heatmap pixels.
        window: truncate to |dx|, |dy| <= window * sigma (3, like `encode`); None keeps all.

    Returns:
        (B, K, H, W) heatmaps with the dtype of xy (float32 for integer xy), on xy's device.
    """
    if xy.ndim != 3 or xy.shape[-1] != 2:
        raise ValueError(f"xy must have shape (B, K, 2), got {tuple(xy.shape)}")
    if tuple(weight.shape) != tuple(xy.shape[:2]):
        raise ValueError(f"weight must have shape {tuple(xy.shape[:2])}, got {tuple(weight.shape)}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    h, w = size
    dtype = xy.dtype if xy.is_floating_point() else torch.float32
    xy = xy.to(dtype)
    finite = torch.isfinite(xy).all(dim=-1)  # (B, K)
    xy = torch.where(finite[..., None], xy, torch.zeros_like(xy))
    amp = torch.where(finite, weight.to(device=xy.device, dtype=dtype), torch.zeros((), dtype=dtype,
                                                                                     device=xy.device))
    dx = torch.arange(w, dtype=dtype, device=xy.device).view(1, 1, w) - xy[..., :1]  # (B, K, W)
    dy = torch.arange(h, dtype=dtype, device=xy.device).view(1, 1, h) - xy[..., 1:]  # (B, K, H)
    gx = torch.exp(-(dx**2) / (2 * sigma**2))
    gy = torch.exp(-(dy**2) / (2 * sigma**2))
    if window is not None:
        gx = gx * (dx.abs() <= window * sigma)
        gy = gy * (dy.abs() <= window * sigma)
    return (gy * amp[..., None])[..., :, None] * gx[..., None, :]  # one full-size product


def decode(heatmaps: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Argmax + quarter-pixel offset (§6), vectorised.

    Args:
        heatmaps: (B, K, H, W) numpy array or tensor (any device).

    Returns:
        coords (B, K, 2) float64 heatmap pixels (x, y), zeroed where maxval <= 0, and maxvals
        (B, K) float64, the raw peak values (can exceed 1 or be negative).
    """
    if isinstance(heatmaps, torch.Tensor):
        heatmaps = heatmaps.detach().to("cpu", torch.float32).numpy()
    hm = np.asarray(heatmaps)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must have shape (B, K, H, W), got {hm.shape}")
    b, k, h, w = hm.shape
    if h * w == 0:
        raise ValueError(f"heatmaps must be non-empty, got {hm.shape}")
    if not np.all(np.isfinite(hm)):
        raise ValueError("heatmaps contain NaN or inf; the model output is broken")
    flat = hm.reshape(b, k, h * w)
    idx = flat.argmax(axis=-1)  # (B, K)
    maxvals = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0].astype(np.float64)
    found = maxvals > 0
    px = np.where(found, idx % w, 0)
    py = np.where(found, idx // w, 0)
    coords = np.stack([px, py], axis=-1).astype(np.float64)

    # Quarter offset only strictly inside: 1 < px < W-1 and 1 < py < H-1 (as released).
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    pxc, pyc = np.clip(px, 1, w - 2), np.clip(py, 1, h - 2)

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return np.take_along_axis(flat, (yy * w + xx)[..., None], axis=-1)[..., 0]

    if w >= 3 and h >= 3:
        gx = np.sign(at(pyc, pxc + 1) - at(pyc, pxc - 1))
        gy = np.sign(at(pyc + 1, pxc) - at(pyc - 1, pxc))
        coords += 0.25 * np.stack([gx, gy], axis=-1) * inside[..., None]
    return coords, maxvals


def decode_to_frame(
    heatmaps: np.ndarray | torch.Tensor, geoms: Sequence[CropGeometry]
) -> tuple[np.ndarray, np.ndarray]:
    """`decode`, then map each sample's coordinates through its crop back to frame pixels.

    Args:
        heatmaps: (B, K, H, W); sample b was predicted on the crop `geoms[b]`.
        geoms: B crop geometries whose heatmap_size is (W, H).

    Returns:
        xy (B, K, 2) frame pixels and maxvals (B, K). Joints with maxval <= 0 map the heatmap
        origin (as released); filter them by maxval.
    """
    shape = tuple(heatmaps.shape)
    if len(shape) != 4:
        raise ValueError(f"heatmaps must have shape (B, K, H, W), got {shape}")
    if len(geoms) != shape[0]:
        raise ValueError(f"got {len(geoms)} crop geometries for a batch of {shape[0]} heatmaps")
    for i, g in enumerate(geoms):
        if g.heatmap_size != (shape[3], shape[2]):
            raise ValueError(
                f"geoms[{i}].heatmap_size is {g.heatmap_size} (W, H) but heatmaps are "
                f"{shape[3]}x{shape[2]} (W x H)"
            )
    coords, maxvals = decode(heatmaps)
    xy = np.stack([heatmap_to_frame(c, g) for c, g in zip(coords, geoms)]) if len(geoms) else coords
    return xy, maxvals
