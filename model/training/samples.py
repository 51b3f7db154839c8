"""Training data of the DCPose head: samples, held-out split, backbone-heatmap cache, augmented batches.

A `TrainSample` is one human-checked person on one labelled frame t with its neighbour frames
(reference/dcpose.md §5.2, as `model.pipeline.predictor` picks them: p = max(t - d, 0), n = min(t + d, N - 1);
at the ends the current frame stands in with margin 1). Only frame t needs a label: the head is
supervised on t alone (§5.5). All three frames are cropped with t's box (the released design).

Heatmaps come from the frozen backbone. `BackboneHeatmapCache` computes them once per
(video, frame, box rounded to 0.1 px, backbone.version), in batches, in memory or as ``.npy``
files, so training epochs never run the backbone again. It lives in `model.training.heatmap_cache` with
`compute_heatmaps`, `CountingBackbone` and the crop primitives it keys on (`CropSize`,
`DEFAULT_CROP`, `round_box`, `sample_geometry`); all are re-exported here.

Augmentation (§5.4, ranges as in the task: scale x clip(N(0,1) * 0.25 + 1, 0.75, 1.25), rotation
clip(N(0,1) * 30, -45, 45) with probability 0.6, horizontal flip with probability 0.5) is the same
for the three frames of a sample. Scale and rotation change the crop geometry: with cached heatmaps
they are applied in heatmap space (`warp_heatmaps` from the cached crop into the augmented one),
with the backbone in the loop the augmented crop is cut from the image. The flip is applied to
heatmaps in both cases (mirror x' = W - 1 - x and swap the left/right channels with
`skeletons.FLIP_PAIRS`): it is what a mirrored crop gives a well-trained backbone (HRNet's flip-test
premise), and it keeps the simulated backbone, which looks up ground truth by geometry, usable.
Targets are `model.heatmaps.encode` (sigma 3) of the keypoints transformed the same way; their
weights are the labels' visibility (codes 1 and 2), 0 for the ears and for joints outside the crop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from annotation_io.skeletons import FLIP_PAIRS, LABELLED_SLOTS, NUM_KEYPOINTS, UNLABELLED_SLOTS
from annotation_io.types import Box, Video
from model.backbones.base import Backbone
from model.training.heatmap_cache import BOX_DECIMALS as BOX_DECIMALS  # re-exported: public here before the split
from model.training.heatmap_cache import (
    DEFAULT_CROP,
    BackboneHeatmapCache,
    CountingBackbone,
    CropSize,
    compute_heatmaps,
    round_box,
    sample_geometry,
)
from model.training.heatmap_cache import CacheKey as CacheKey
from model.training.heatmap_cache import ProgressFn as ProgressFn
from model.heatmaps import encode
from model.transforms import (
    CropGeometry,
    frame_to_heatmap,
    heatmap_to_heatmap_affine,
    inside_crop,
    warp_heatmaps,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CROP",
    "NO_AUGMENTATION",
    "Augmentation",
    "BackboneHeatmapCache",
    "Batch",
    "CountingBackbone",
    "CropSize",
    "FrameReader",
    "TrainSample",
    "augment_heatmaps",
    "build_samples",
    "compute_heatmaps",
    "draw_augmentation",
    "make_batch",
    "make_targets",
    "neighbour_frames",
    "sample_geometry",
    "split_holdout",
    "target_keypoints",
]

TARGET_SIGMA = 3.0  # §5.5


class FrameReader(Protocol):
    """Random access to frames (`annotation_io.video.FrameSource` satisfies it)."""

    num_frames: int

    def read(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 BGR frame."""
        ...


# --------------------------------------------------------------------------------------------- samples


@dataclass(frozen=True, eq=False)
class TrainSample:
    """One human-checked person on one frame, with its neighbour frames.

    Attributes:
        video: video name (key of the readers).
        frame: labelled frame t.
        prev: previous frame p (t itself at the start of the video).
        next: next frame n (t itself at the end).
        margin: (margin_left, margin_right) = (t - p, n - t), 1 where the current frame stands in.
        box: person box on frame t (rounded to 0.1 px), which crops all three frames.
        keypoints: (17, 3) x, y, v labels in frame pixels.
        track_id: the person's track, where known.
    """

    video: str
    frame: int
    prev: int
    next: int
    margin: tuple[float, float]
    box: Box
    keypoints: np.ndarray
    track_id: int | None = None

    @property
    def key(self) -> tuple[str, int, int | None, tuple[float, ...]]:
        """Identity of the sample: (video, frame, track, box)."""
        return (self.video, self.frame, self.track_id, tuple(self.box.xywh))


def neighbour_frames(t: int, distance: int, num_frames: int) -> tuple[int, int, tuple[float, float]]:
    """(p, n, (margin_left, margin_right)) for frame t, as `model.pipeline.predictor` chooses them."""
    if distance < 1:
        raise ValueError(f"distance must be >= 1, got {distance}")
    if not 0 <= t < num_frames:
        raise ValueError(f"frame {t} is outside a video of {num_frames} frames")
    p, n = max(t - distance, 0), min(t + distance, num_frames - 1)
    return p, n, (float(t - p) or 1.0, float(n - t) or 1.0)


def build_samples(videos: Mapping[str, Video], *, distance: int = 1) -> list[TrainSample]:
    """Samples from the human-checked poses of labelled frames (neighbours need no labels).

    A frame counts when it is marked labelled (`Frame.is_labeled`); a person counts when it is a
    human label (not a prediction) with at least one of the 15 PoseTrack joints placed. Its box is
    the labelled box, else the box of its joints grown by 10% per side (as `model.pipeline.tracking` does
    roughly); persons without either are skipped.

    Args:
        videos: name -> Video with labels; `num_frames` bounds the neighbours.
        distance: neighbour distance d (1 as released).

    Returns:
        Samples in (video name, frame, person order).
    """
    samples = []
    for name in sorted(videos):
        video = videos[name]
        if video.num_frames < 1:
            raise ValueError(f"video {name!r} has num_frames={video.num_frames}; cannot pick neighbours")
        for frame in video.labeled_frames():
            for person in frame.persons:
                if person.is_prediction or not person.present[list(LABELLED_SLOTS)].any():
                    continue
                box = person.box
                if box is None:
                    tight = person.keypoint_box()
                    box = tight.expand(1.2) if tight is not None else None
                if box is None or box.w <= 0 or box.h <= 0:
                    logger.debug("%s frame %d: person without a usable box skipped", name, frame.index)
                    continue
                p, n, margin = neighbour_frames(frame.index, distance, video.num_frames)
                kps = person.keypoints.copy()
                kps[list(UNLABELLED_SLOTS)] = 0.0
                samples.append(
                    TrainSample(name, frame.index, p, n, margin, round_box(box), kps, person.track_id)
                )
    logger.info("built %d training samples from %d videos", len(samples), len(videos))
    return samples


def split_holdout(
    samples: Sequence[TrainSample], *, fraction: float = 0.2, seed: int = 0, distance: int = 1
) -> tuple[list[TrainSample], list[TrainSample]]:
    """Deterministic (train, holdout) split: by video, or by a frame range when there is one video.

    With several videos, round(fraction x videos) of them (at least 1, at most all but one) are held
    out, chosen by `seed` from the sorted names. With one video, a contiguous range of about
    `fraction` of its labelled frames is held out, its position chosen by `seed`; training samples
    whose neighbours reach into that range (within `distance`) are dropped, so no held-out frame is
    ever seen in training.

    Returns:
        (train, holdout), each in the input order; disjoint.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    samples = list(samples)
    if fraction == 0.0 or not samples:
        return samples, []
    rng = np.random.default_rng([seed, 0x401D])
    names = sorted({s.video for s in samples})
    if len(names) > 1:
        count = min(max(1, round(fraction * len(names))), len(names) - 1)
        held = set(rng.permutation(names)[:count].tolist())
        return [s for s in samples if s.video not in held], [s for s in samples if s.video in held]
    frames = sorted({s.frame for s in samples})
    if len(frames) < 2:
        raise ValueError(
            f"cannot hold out frames of video {names[0]!r}: it has {len(frames)} labelled frame(s); "
            "label more frames or use fraction=0"
        )
    count = min(max(1, round(fraction * len(frames))), len(frames) - 1)
    start = int(rng.integers(0, len(frames) - count + 1))
    lo, hi = frames[start], frames[start + count - 1]
    holdout = [s for s in samples if lo <= s.frame <= hi]
    train = [s for s in samples if s.frame + distance < lo or s.frame - distance > hi]
    dropped = len(samples) - len(holdout) - len(train)
    logger.info("held out frames %d..%d of %s (%d samples); %d training samples next to them dropped",
                lo, hi, names[0], len(holdout), dropped)
    return train, holdout


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
    margin = torch.tensor([s.margin for s in samples], dtype=torch.float32)
    return Batch(hm[:, 0].contiguous(), hm[:, 1].contiguous(), hm[:, 2].contiguous(), margin,
                 torch.from_numpy(np.stack(targets)), torch.from_numpy(np.stack(weights)))
