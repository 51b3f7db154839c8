"""Augmented head batches: one augmentation draw per sample, heatmaps from the cache or the backbone, targets.

Augmentation (DCPose's training setting: scale x clip(N(0,1) * 0.25 + 1, 0.75, 1.25), rotation
clip(N(0,1) * 30, -45, 45) with probability 0.6, horizontal flip with probability 0.5) is the same
for the three frames of a sample. Scale and rotation change the crop geometry: with cached heatmaps
they are applied in heatmap space (`warp_heatmaps` from the cached crop into the augmented one),
with the backbone in the loop the augmented crop is cut from the image. The flip is applied to
heatmaps in both cases (mirror x' = W - 1 - x and swap the left/right channels with
`skeletons.FLIP_PAIRS`): it is what a mirrored crop gives a well-trained backbone (HRNet's flip-test
premise), and it keeps backbones that look up ground truth by geometry usable.
Targets are `model.heatmaps.encode` (sigma `TARGET_SIGMA`) of the keypoints transformed the same
way; their weights are the labels' visibility (codes 1 and 2), 0 for the ears and for joints outside
the crop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from annotation_io.skeletons import FLIP_PAIRS, NUM_KEYPOINTS, UNLABELLED_SLOTS
from annotation_io.video import FrameReader
from model.backbones.base import Backbone
from model.heatmaps import TARGET_SIGMA, encode, render_gaussians
from model.training.heatmap_cache import (
    DEFAULT_CROP,
    BackboneHeatmapCache,
    CropSize,
    compute_heatmaps,
    sample_geometry,
)
from model.training.samples import TrainSample
from model.transforms import (
    CropGeometry,
    frame_to_heatmap,
    heatmap_to_heatmap_affine,
    inside_crop,
    warp_heatmaps,
)

logger = logging.getLogger(__name__)

__all__ = [
    "NO_AUGMENTATION",
    "Augmentation",
    "Batch",
    "augment_heatmaps",
    "draw_augmentation",
    "flip_heatmap_tensor",
    "make_batch",
    "make_targets",
    "target_keypoints",
]

# ------------------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augmentation:
    """One draw of the augmentation, shared by the three frames of a sample.

    Attributes:
        flip: mirror horizontally (heatmap x' = W - 1 - x, left/right channels swapped).
        scale: crop size factor (> 1 zooms out).
        rotation: degrees, about the crop centre.
    """

    flip: bool = False
    scale: float = 1.0
    rotation: float = 0.0

    @property
    def is_identity(self) -> bool:
        return not self.flip and self.scale == 1.0 and self.rotation == 0.0

    def geometry(self, geom: CropGeometry) -> CropGeometry:
        """The augmented crop (scale and rotation; the flip acts on heatmaps)."""
        out = geom.scaled(self.scale) if self.scale != 1.0 else geom
        return out.rotated(geom.rotation + self.rotation) if self.rotation != 0.0 else out


NO_AUGMENTATION = Augmentation()


def draw_augmentation(
    rng: np.random.Generator,
    *,
    flip_prob: float = 0.5,
    scale_factor: float = 0.25,
    rotation_factor: float = 30.0,
    rotation_prob: float = 0.6,
) -> Augmentation:
    """Random augmentation: scale clip(N*sf + 1, 1 - sf, 1 + sf), rotation clip(N*rf, -1.5rf, 1.5rf)."""
    scale = float(np.clip(rng.normal() * scale_factor + 1.0, 1.0 - scale_factor, 1.0 + scale_factor))
    rot_draw = rng.normal()
    rotation = float(np.clip(rot_draw * rotation_factor, -1.5 * rotation_factor, 1.5 * rotation_factor))
    rotate = rng.random() < rotation_prob
    flip = bool(rng.random() < flip_prob)
    return Augmentation(flip=flip, scale=scale, rotation=rotation if rotate else 0.0)


def _flip_perm(num_joints: int) -> list[int]:
    perm = list(range(num_joints))
    for a, b in FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return perm


def flip_heatmap_tensor(heatmaps: torch.Tensor) -> torch.Tensor:
    """(..., K, H, W) mirrored along W with the left/right channels swapped."""
    return torch.flip(heatmaps, dims=(-1,))[..., _flip_perm(heatmaps.shape[-3]), :, :]


def augment_heatmaps(heatmaps: torch.Tensor, geom: CropGeometry, aug: Augmentation) -> torch.Tensor:
    """Heatmaps (N, K, H, W) predicted on crop `geom`, resampled into the augmented crop (+ flip)."""
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (N, K, H, W), got {tuple(heatmaps.shape)}")
    out = heatmaps
    if aug.scale != 1.0 or aug.rotation != 0.0:
        affine = heatmap_to_heatmap_affine(geom, aug.geometry(geom))
        out = warp_heatmaps(out, np.repeat(affine[None], len(out), axis=0))
    return flip_heatmap_tensor(out) if aug.flip else out


def target_keypoints(
    keypoints: np.ndarray, geom: CropGeometry, aug: Augmentation = NO_AUGMENTATION
) -> tuple[np.ndarray, np.ndarray]:
    """Label keypoints in the augmented crop's heatmap pixels.

    Args:
        keypoints: (K, 3) x, y, v in frame pixels.
        geom: the sample's un-augmented crop.
        aug: the augmentation.

    Returns:
        xy (K, 2) heatmap pixels and visibility (K,) in {0, 1}: 0 for unlabelled joints, the ears
        and joints outside the augmented crop (§5.4).
    """
    kps = np.asarray(keypoints, dtype=np.float64)
    if kps.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints must have shape ({NUM_KEYPOINTS}, 3), got {kps.shape}")
    g = aug.geometry(geom)
    xy = frame_to_heatmap(kps[:, :2], g)
    sx, sy = g.stride
    vis = ((kps[:, 2] > 0) & inside_crop(xy * (sx, sy), g.input_size)).astype(np.float64)
    vis[list(UNLABELLED_SLOTS)] = 0.0
    if aug.flip:
        xy[:, 0] = g.heatmap_size[0] - 1 - xy[:, 0]
        perm = _flip_perm(NUM_KEYPOINTS)
        xy, vis = xy[perm], vis[perm]
    xy[vis == 0] = 0.0
    return xy, vis


def make_targets(xy: np.ndarray, vis: np.ndarray, geom: CropGeometry) -> tuple[np.ndarray, np.ndarray]:
    """`encode` targets (K, H, W) and weights (K,) from heatmap-pixel keypoints (ears weigh 0)."""
    sx, sy = geom.stride
    if not math.isclose(sx, sy):
        raise ValueError(f"heatmap stride must be isotropic, got {geom.stride}")
    target, weight = encode(xy * sx, vis, heatmap_size=geom.heatmap_size, sigma=TARGET_SIGMA, stride=sx)
    weight[list(UNLABELLED_SLOTS)] = 0.0
    return target, weight


# -------------------------------------------------------------------------------------------- batches


@dataclass
class Batch:
    """Head inputs and targets of B samples: heatmaps (B, K, H, W), margin (B, 2), weight (B, K)."""

    current: torch.Tensor
    previous: torch.Tensor
    next: torch.Tensor
    margin: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor

    def __len__(self) -> int:
        return int(self.current.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in
                       (self.current, self.previous, self.next, self.margin, self.target, self.weight)))


def make_batch(
    samples: Sequence[TrainSample],
    augs: Sequence[Augmentation] | None = None,
    *,
    cache: BackboneHeatmapCache | None = None,
    backbone: Backbone | None = None,
    readers: Mapping[str, FrameReader] | None = None,
    batch_size: int = 32,
    crop: CropSize | None = None,
    label_sides: Sequence[tuple[bool, bool]] | None = None,
    label_sigma: float | None = None,
) -> Batch:
    """Augmented head inputs and targets for `samples`.

    Heatmaps come from `cache` (warped into the augmented crops), or, without a cache, from
    `backbone` run on augmented crops read through `readers` (the backbone in the loop).

    Args:
        samples: B samples.
        augs: one augmentation per sample; None: no augmentation.
        cache: a prefetched heatmap cache.
        backbone: the backbone, when there is no cache.
        readers: frame readers, when there is no cache.
        batch_size: crops per backbone call in loop mode.
        crop: crop sizes; default: the cache's, else DCPose's.
        label_sides: per sample, (previous, next): feed that neighbour's human label instead of its
            backbone heatmaps (where the sample has one): Gaussians of peak 1 at the label's joints in
            the augmented crop, the backbone's channels kept for joints the label lacks, as the
            predictor feeds human and propagated poses. None: backbone heatmaps only.
        label_sigma: sigma (heatmap px) of those Gaussians; default the backbone's, else 3.
    """
    if not samples:
        raise ValueError("make_batch needs at least one sample")
    augs = list(augs) if augs is not None else [NO_AUGMENTATION] * len(samples)
    if len(augs) != len(samples):
        raise ValueError(f"got {len(augs)} augmentations for {len(samples)} samples")
    crop = crop or (cache.crop if cache is not None else DEFAULT_CROP)
    if cache is not None and cache.crop != crop:
        raise ValueError(f"the cache holds {cache.crop.label} crops, the batch asks for {crop.label}")
    geoms = [sample_geometry(s, crop) for s in samples]
    if cache is not None:
        triplets = []
        for s, g, a in zip(samples, geoms, augs):
            tri = cache.triplet(s)  # (3, K, H, W)
            triplets.append(tri if a.is_identity else augment_heatmaps(tri, g, a))
        hm = torch.stack(triplets)  # (B, 3, K, H, W)
    else:
        if backbone is None or readers is None:
            raise ValueError("make_batch needs a cache, or a backbone and frame readers")
        requests = [(s.video, f, a.geometry(g)) for s, g, a in zip(samples, geoms, augs)
                    for f in (s.frame, s.prev, s.next)]
        flat = compute_heatmaps(backbone, readers, requests, batch_size=batch_size)
        hm = flat.view(len(samples), 3, *flat.shape[1:])
        flips = torch.tensor([a.flip for a in augs])
        if flips.any():
            hm[flips] = flip_heatmap_tensor(hm[flips])
    targets, weights = [], []
    for s, g, a in zip(samples, geoms, augs):
        xy, vis = target_keypoints(s.keypoints, g, a)
        t, w = make_targets(xy, vis, g)
        targets.append(t)
        weights.append(w)
    if label_sides is not None:
        source = backbone if backbone is not None else (cache.backbone if cache is not None else None)
        sigma = label_sigma or float(getattr(source, "sigma", None) or TARGET_SIGMA)
        _feed_neighbour_labels(hm, samples, geoms, augs, label_sides, sigma)
    margin = torch.tensor([s.margin for s in samples], dtype=torch.float32)
    return Batch(hm[:, 0].contiguous(), hm[:, 1].contiguous(), hm[:, 2].contiguous(), margin,
                 torch.from_numpy(np.stack(targets)), torch.from_numpy(np.stack(weights)))


def _feed_neighbour_labels(hm: torch.Tensor, samples: Sequence[TrainSample], geoms: Sequence[CropGeometry],
                           augs: Sequence[Augmentation], sides: Sequence[tuple[bool, bool]], sigma: float) -> None:
    """Replaces, in place, the chosen neighbours' channels of `hm` (B, 3, K, H, W) by their labels' Gaussians."""
    if len(sides) != len(samples):
        raise ValueError(f"got {len(sides)} label_sides for {len(samples)} samples")
    for i, (s, g, a, (use_prev, use_next)) in enumerate(zip(samples, geoms, augs, sides)):
        for slot, use, kps in ((1, use_prev, s.prev_keypoints), (2, use_next, s.next_keypoints)):
            if not use or kps is None:
                continue
            xy, vis = target_keypoints(kps, g, a)
            placed = torch.from_numpy(vis > 0)
            gauss = render_gaussians(torch.from_numpy(xy)[None].float(), placed[None].float(),
                                     size=tuple(hm.shape[-2:]), sigma=sigma)[0]
            hm[i, slot] = torch.where(placed[:, None, None], gauss.to(hm.dtype), hm[i, slot])
