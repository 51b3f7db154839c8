"""Crop geometry: box -> (centre, scale) -> affine maps between frame, crop and heatmap pixels.

Conventions are HRNet's "biased" ones that DCPose was trained with (the released DCPose code):
the affine is built from three points using only the box width, the crop centre is
(W/2, H/2) with no half-pixel correction, and heatmap coordinates are crop coordinates divided by
the stride (4). Keeping these exact is what lets official weights reproduce published numbers.

Sizes are written (W, H) throughout this module, as in the reference; arrays are (H, W, C).
Everything here is array math (numpy + cv2); the two torch helpers at the end turn crops into
network input and resample cached heatmaps from one crop geometry into another.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from annotation_io.skeletons import FLIP_PAIRS
from annotation_io.types import Box

logger = logging.getLogger(__name__)

Size = tuple[int, int]  # (W, H)
Space = Literal["crop", "heatmap"]
ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)

INPUT_SIZE: Size = (288, 384)
HEATMAP_SIZE: Size = (72, 96)
PIXEL_STD = 200.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_size(name: str, size: Sequence[int]) -> Size:
    if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
        raise ValueError(f"{name} must be two positive integers (W, H), got {tuple(size)}")
    return (int(size[0]), int(size[1]))


def _vector2(name: str, value: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.array(value, dtype=np.float64).reshape(-1)
    if arr.shape != (2,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be 2 finite numbers, got {value!r}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class CropGeometry:
    """Where one person crop sits in its frame (HRNet centre/scale parametrisation).

    Attributes:
        center: (2,) crop centre in frame pixels.
        scale: (2,) box size in units of `pixel_std` (w, h); only the width sets the zoom.
        rotation: degrees, about the centre (training augmentation; 0 at inference).
        input_size: crop size (W, H) in pixels fed to the network.
        heatmap_size: heatmap size (W, H) the network outputs.
        pixel_std: HRNet's normaliser of `scale` (200).
    """

    center: np.ndarray
    scale: np.ndarray
    rotation: float = 0.0
    input_size: Size = INPUT_SIZE
    heatmap_size: Size = HEATMAP_SIZE
    pixel_std: float = PIXEL_STD

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise fields once, here
        set_(self, "center", _vector2("CropGeometry.center", self.center))
        set_(self, "scale", _vector2("CropGeometry.scale", self.scale))
        if np.any(self.scale <= 0):
            raise ValueError(f"CropGeometry.scale must be positive, got {self.scale.tolist()}")
        if not math.isfinite(self.rotation):
            raise ValueError(f"CropGeometry.rotation must be finite, got {self.rotation}")
        set_(self, "rotation", float(self.rotation))
        set_(self, "input_size", _check_size("CropGeometry.input_size", self.input_size))
        set_(self, "heatmap_size", _check_size("CropGeometry.heatmap_size", self.heatmap_size))
        if not self.pixel_std > 0:
            raise ValueError(f"CropGeometry.pixel_std must be positive, got {self.pixel_std}")

    def _key(self) -> tuple:
        return (tuple(self.center), tuple(self.scale), self.rotation, self.input_size,
                self.heatmap_size, self.pixel_std)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CropGeometry) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @classmethod
    def from_box(cls, box: Box, **kwargs: float | Size) -> CropGeometry:
        """Same as `crop_geometry(box, **kwargs)`."""
        return crop_geometry(box, **kwargs)  # type: ignore[arg-type]

    @property
    def stride(self) -> tuple[float, float]:
        """Crop pixels per heatmap pixel along x and y (4, 4 for DCPose)."""
        return (self.input_size[0] / self.heatmap_size[0], self.input_size[1] / self.heatmap_size[1])

    @property
    def frame_per_heatmap_px(self) -> float:
        """Frame pixels per heatmap pixel, k = pixel_std * s_w / W_hm (§6); isotropic."""
        return self.pixel_std * float(self.scale[0]) / self.heatmap_size[0]

    def affine(self, space: Space = "crop", *, inv: bool = False) -> np.ndarray:
        """(2, 3) map frame -> `space` pixels (or back with `inv`); a fresh copy the caller may change."""
        return self._affine(space, inv).copy()

    def _affine(self, space: Space, inv: bool) -> np.ndarray:
        """The cached (2, 3) affine, read-only: solved once per geometry, space and direction."""
        if space not in ("crop", "heatmap"):
            raise ValueError(f"space must be 'crop' or 'heatmap', got {space!r}")
        # The cache lives in the instance dict, not in a field, so equality, hash, repr and `replace`
        # ignore it; the fields are frozen (read-only arrays), so an entry never goes stale.
        cache: dict[tuple[str, bool], np.ndarray] = self.__dict__.setdefault("_affines", {})
        key = (space, bool(inv))
        mat = cache.get(key)
        if mat is None:
            size = self.input_size if space == "crop" else self.heatmap_size
            mat = get_affine_transform(self.center, self.scale, self.rotation, size, inv=inv,
                                       pixel_std=self.pixel_std)
            mat.setflags(write=False)
            cache[key] = mat
        return mat

    def scaled(self, factor: float) -> CropGeometry:
        """Same centre, box size multiplied by `factor` (zooms out for factor > 1)."""
        return replace(self, scale=self.scale * float(factor))

    def rotated(self, degrees: float) -> CropGeometry:
        """Rotation set to `degrees`."""
        return replace(self, rotation=float(degrees))

    def flipped(self, image_width: int) -> CropGeometry:
        """The geometry in the horizontally flipped frame (HRNet: cx' = W - 1 - cx)."""
        cx, cy = self.center
        return replace(self, center=np.array([image_width - 1 - cx, cy]))


def box_to_center_scale(
    box: Box, *, aspect: float = 0.75, enlarge: float = 1.25, pixel_std: float = PIXEL_STD
) -> tuple[np.ndarray, np.ndarray]:
    """HRNet's box -> (centre, scale): grow the short side to aspect w/h, then enlarge.

    Args:
        box: person box in frame pixels.
        aspect: target width / height (288 / 384 = 0.75).
        enlarge: context factor applied after the aspect fix (1.25 in DCPose training and eval).
        pixel_std: normaliser of the scale.

    Returns:
        center (2,) in pixels and scale (2,) = (w, h) / pixel_std * enlarge.
    """
    values = (box.x, box.y, box.w, box.h)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"box has non-finite values: {box}")
    if box.w <= 0 and box.h <= 0:
        raise ValueError(f"box has no extent (w={box.w}, h={box.h}); cannot crop a person from it")
    if not (aspect > 0 and enlarge > 0 and pixel_std > 0):
        raise ValueError(
            f"aspect, enlarge and pixel_std must be positive, got {aspect}, {enlarge}, {pixel_std}"
        )
    w, h = max(box.w, 0.0), max(box.h, 0.0)
    center = np.array([box.x + box.w * 0.5, box.y + box.h * 0.5], dtype=np.float64)
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = h * aspect
    scale = np.array([w, h], dtype=np.float64) / pixel_std * enlarge
    return center, scale


def crop_geometry(
    box: Box,
    *,
    enlarge: float = 1.25,
    rotation: float = 0.0,
    input_size: Size = INPUT_SIZE,
    heatmap_size: Size = HEATMAP_SIZE,
    pixel_std: float = PIXEL_STD,
) -> CropGeometry:
    """The crop of `box`; the aspect is taken from `input_size` so the crop covers the box exactly."""
    w_in, h_in = _check_size("input_size", input_size)
    center, scale = box_to_center_scale(box, aspect=w_in / h_in, enlarge=enlarge, pixel_std=pixel_std)
    return CropGeometry(center, scale, rotation, (w_in, h_in), heatmap_size, pixel_std)


def _rotate(vec: np.ndarray, rad: float) -> np.ndarray:
    sn, cs = math.sin(rad), math.cos(rad)
    return np.array([vec[0] * cs - vec[1] * sn, vec[0] * sn + vec[1] * cs])


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The point completing a right angle at b, turned a quarter from (a - b)."""
    d = a - b
    return b + np.array([-d[1], d[0]])


def _affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) affine taking three src points onto three dst points, solved in float64."""
    lhs = np.hstack([src, np.ones((3, 1))])  # (3, 3)
    return np.linalg.solve(lhs, dst).T  # (2, 3)


def get_affine_transform(
    center: Sequence[float] | np.ndarray,
    scale: Sequence[float] | np.ndarray,
    rot: float,
    output_size: Size,
    *,
    inv: bool = False,
    shift: Sequence[float] = (0.0, 0.0),
    pixel_std: float = PIXEL_STD,
) -> np.ndarray:
    """HRNet's 3-point affine from the frame into an `output_size` (W, H) crop.

    The box centre goes to (W/2, H/2); the point half a box width above it (rotated by `rot`
    degrees) goes to half an output width above; the third point completes a right angle. Only
    the box width enters, so the zoom is isotropic. Solved in float64 (HRNet goes through float32
    `cv2.getAffineTransform`; results agree to ~1e-4 px).

    Args:
        center: (2,) centre in frame pixels.
        scale: (2,) box size / pixel_std.
        rot: rotation in degrees.
        output_size: (W, H) of the crop or heatmap.
        inv: return the inverse map (output -> frame).
        shift: centre shift as a fraction of the box size.
        pixel_std: normaliser of `scale`.

    Returns:
        (2, 3) float64 matrix for `cv2.warpAffine` / `apply_affine`.
    """
    center_ = _vector2("center", center)
    scale_px = _vector2("scale", scale) * pixel_std
    out_w, out_h = _check_size("output_size", output_size)
    if scale_px[0] <= 0:
        raise ValueError(f"scale width must be positive, got {scale_px[0] / pixel_std}")
    src0 = center_ + scale_px * _vector2("shift", shift)
    src1 = src0 + _rotate(np.array([0.0, -0.5 * scale_px[0]]), math.radians(rot))
    dst0 = np.array([out_w * 0.5, out_h * 0.5])
    dst1 = dst0 + np.array([0.0, -0.5 * out_w])
    src = np.stack([src0, src1, _third_point(src0, src1)])
    dst = np.stack([dst0, dst1, _third_point(dst0, dst1)])
    return _affine_from_points(dst, src) if inv else _affine_from_points(src, dst)


def apply_affine(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Map (..., 2) points through a (2, 3) affine; returns float64 of the same shape."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 0 or pts.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {pts.shape}")
    mat = np.asarray(affine, dtype=np.float64)
    if mat.shape != (2, 3):
        raise ValueError(f"affine must have shape (2, 3), got {mat.shape}")
    return pts @ mat[:, :2].T + mat[:, 2]


def compose_affines(second: np.ndarray, first: np.ndarray) -> np.ndarray:
    """(2, 3) affine equal to applying `first`, then `second`."""
    a = np.vstack([np.asarray(second, np.float64), [0.0, 0.0, 1.0]])
    b = np.vstack([np.asarray(first, np.float64), [0.0, 0.0, 1.0]])
    return (a @ b)[:2]


def frame_to_crop(points: np.ndarray, geom: CropGeometry) -> np.ndarray:
    """(..., 2) frame pixels -> crop pixels (input_size)."""
    return apply_affine(points, geom._affine("crop", False))


def crop_to_frame(points: np.ndarray, geom: CropGeometry) -> np.ndarray:
    """(..., 2) crop pixels -> frame pixels."""
    return apply_affine(points, geom._affine("crop", True))


def frame_to_heatmap(points: np.ndarray, geom: CropGeometry) -> np.ndarray:
    """(..., 2) frame pixels -> heatmap pixels (heatmap_size)."""
    return apply_affine(points, geom._affine("heatmap", False))


def heatmap_to_frame(points: np.ndarray, geom: CropGeometry) -> np.ndarray:
    """(..., 2) heatmap pixels -> frame pixels; at rotation 0, x = cx + (x_hm - W_hm/2) * k (§6)."""
    return apply_affine(points, geom._affine("heatmap", True))


def heatmap_to_heatmap_affine(src: CropGeometry, dst: CropGeometry) -> np.ndarray:
    """(2, 3) map from `src`'s heatmap pixels to `dst`'s heatmap pixels (through the frame)."""
    return compose_affines(dst._affine("heatmap", False), src._affine("heatmap", True))


def inside_crop(points_crop: np.ndarray, size: Size = INPUT_SIZE) -> np.ndarray:
    """(...,) bool: crop points with 0 <= x < W and 0 <= y < H (others get visibility 0, §5.4)."""
    pts = np.asarray(points_crop, dtype=np.float64)
    w, h = _check_size("size", size)
    return (pts[..., 0] >= 0) & (pts[..., 0] < w) & (pts[..., 1] >= 0) & (pts[..., 1] < h)


def crop_image(image: np.ndarray, geom: CropGeometry) -> np.ndarray:
    """Warp `image` (H, W[, C]) into the (H_in, W_in[, C]) crop: bilinear, black outside (§5.3)."""
    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"image must be a non-empty (H, W) or (H, W, C) array, got shape {img.shape}")
    out = cv2.warpAffine(img, geom._affine("crop", False), geom.input_size, flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape(out.shape[:2] + img.shape[2:])  # cv2 drops a trailing 1-channel axis


def square_view_rgb(frame_bgr: np.ndarray, scale: float, offset: tuple[float, float], side: int) -> np.ndarray:
    """A detector's square input: (side, side, 3) RGB where frame pixel (x, y) lands at scale x (x, y) + offset,
    black beyond the frame; area-averaged where it shrinks the frame."""
    m = np.array([[scale, 0.0, offset[0]], [0.0, scale, offset[1]]])
    img = cv2.warpAffine(frame_bgr, m, (side, side), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return np.ascontiguousarray(img[..., ::-1])


def crop_frames(frames: Sequence[np.ndarray], geom: CropGeometry) -> np.ndarray:
    """Crop each frame with the same geometry (DCPose crops t-1, t, t+1 with t's box). (N, H, W, C)."""
    if len(frames) == 0:
        raise ValueError("crop_frames needs at least one frame")
    return np.stack([crop_image(f, geom) for f in frames])


def _check_pairs(flip_pairs: Sequence[tuple[int, int]], num: int) -> None:
    for a, b in flip_pairs:
        if not (0 <= a < num and 0 <= b < num):
            raise ValueError(f"flip pair ({a}, {b}) is out of range for {num} joints")


def flip_image(image: np.ndarray) -> np.ndarray:
    """Horizontal mirror of an (H, W[, C]) image (contiguous copy)."""
    return np.ascontiguousarray(np.asarray(image)[:, ::-1])


def flip_keypoints(
    keypoints: np.ndarray, image_width: int, flip_pairs: Sequence[tuple[int, int]] = FLIP_PAIRS
) -> np.ndarray:
    """Mirror (K, 2) or (K, 3) keypoints: x' = W - 1 - x, left/right slots swapped.

    With a visibility column, absent joints (v == 0) get x = y = 0, as HRNet does.
    """
    kp = np.array(keypoints, dtype=np.float64)
    if kp.ndim != 2 or kp.shape[1] not in (2, 3):
        raise ValueError(f"keypoints must have shape (K, 2) or (K, 3), got {kp.shape}")
    _check_pairs(flip_pairs, len(kp))
    kp[:, 0] = image_width - 1 - kp[:, 0]
    for a, b in flip_pairs:
        kp[[a, b]] = kp[[b, a]]
    if kp.shape[1] == 3:
        kp[kp[:, 2] == 0, :2] = 0.0
    return kp


def flip_heatmaps(
    heatmaps: ArrayOrTensor, flip_pairs: Sequence[tuple[int, int]] = FLIP_PAIRS, *, shift: bool = False
) -> ArrayOrTensor:
    """Undo a flip on (..., K, H, W) heatmaps predicted for a mirrored crop (flip test).

    Args:
        heatmaps: numpy array or tensor.
        flip_pairs: left/right channel pairs to swap.
        shift: move the result one pixel right (HRNet's SHIFT_HEATMAP), which compensates the
            W - 1 - x flip of the biased crop; off by default (DCPose evaluates without flip test).
    """
    if heatmaps.ndim < 3:
        raise ValueError(f"heatmaps must have shape (..., K, H, W), got {tuple(heatmaps.shape)}")
    _check_pairs(flip_pairs, heatmaps.shape[-3])
    perm = list(range(heatmaps.shape[-3]))
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    if isinstance(heatmaps, torch.Tensor):
        out = torch.flip(heatmaps, dims=(-1,))[..., perm, :, :]
        if shift:
            out = torch.cat([torch.zeros_like(out[..., :1]), out[..., :-1]], dim=-1)  # col 0 gets 0
        return out
    out_np = np.flip(np.asarray(heatmaps), axis=-1)[..., perm, :, :]
    if shift:
        out_np = np.concatenate([np.zeros_like(out_np[..., :1]), out_np[..., :-1]], axis=-1)
    return np.ascontiguousarray(out_np)


def to_input_tensor(
    crops_bgr: np.ndarray | Sequence[np.ndarray], *, device: torch.device | str | None = None
) -> torch.Tensor:
    """(N, H, W, 3) uint8 BGR crops -> (N, 3, H, W) float32 RGB, /255, ImageNet-normalised (§5.3)."""
    arr = np.stack(list(crops_bgr)) if not isinstance(crops_bgr, np.ndarray) else crops_bgr
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"crops must have shape (N, H, W, 3), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise TypeError(f"crops must be uint8 BGR images (0..255), got dtype {arr.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(arr[..., ::-1])).to(device)  # BGR -> RGB
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def warp_heatmaps(
    heatmaps: torch.Tensor, affines: torch.Tensor | np.ndarray, *, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Resample (B, K, H, W) heatmaps into another crop: out(p) = in(A^-1 p), bilinear, 0 outside.

    Pixel convention: heatmap pixel (x, y) is the sample at integer coordinates, the same integer
    grid that `encode`/`decode` use. `grid_sample(align_corners=True)` maps -1/+1 onto the centres
    of the first/last pixel, so normalising pixel coordinates by (W - 1) is exact for that grid
    (an integer translation moves values by whole pixels, identity returns the input).

    Args:
        heatmaps: (B, K, H, W) source heatmaps.
        affines: (B, 2, 3) maps from source heatmap pixels to destination heatmap pixels
            (`heatmap_to_heatmap_affine(src, dst)`).
        size: destination (H, W); defaults to the source size.

    Returns:
        (B, K, H_out, W_out) heatmaps in the destination geometry.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must have shape (B, K, H, W), got {tuple(heatmaps.shape)}")
    b, _, h_in, w_in = heatmaps.shape
    if h_in < 2 or w_in < 2:
        raise ValueError(f"heatmaps must be at least 2x2, got {h_in}x{w_in}")
    aff = torch.as_tensor(affines, dtype=torch.float64, device=heatmaps.device)
    if aff.shape != (b, 2, 3):
        raise ValueError(f"affines must have shape ({b}, 2, 3), got {tuple(aff.shape)}")
    h_out, w_out = size if size is not None else (h_in, w_in)
    # Inverse of [M | t] is [M^-1 | -M^-1 t]: each output pixel looks up its source location.
    m_inv = torch.linalg.inv(aff[:, :, :2])  # (B, 2, 2)
    t_inv = -(m_inv @ aff[:, :, 2:])  # (B, 2, 1)
    ys, xs = torch.meshgrid(
        torch.arange(h_out, dtype=torch.float64, device=heatmaps.device),
        torch.arange(w_out, dtype=torch.float64, device=heatmaps.device),
        indexing="ij",
    )
    dst = torch.stack([xs, ys], dim=-1).reshape(1, -1, 2)  # (1, H*W, 2)
    src = dst @ m_inv.transpose(1, 2) + t_inv.transpose(1, 2)  # (B, H*W, 2)
    norm = torch.tensor([w_in - 1, h_in - 1], dtype=torch.float64, device=heatmaps.device)
    grid = (src / norm * 2.0 - 1.0).reshape(b, h_out, w_out, 2).to(heatmaps.dtype)
    return F.grid_sample(heatmaps, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
