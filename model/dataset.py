"""Training data of the DCPose head: samples, held-out split, backbone-heatmap cache, augmented batches.

A `TrainSample` is one human-checked person on one labelled frame t with its neighbour frames
(reference/dcpose.md §5.2, as `model.inference` picks them: p = max(t - d, 0), n = min(t + d, N - 1);
at the ends the current frame stands in with margin 1). Only frame t needs a label: the head is
supervised on t alone (§5.5). All three frames are cropped with t's box (the released design).

Heatmaps come from the frozen backbone. `BackboneHeatmapCache` computes them once per
(video, frame, box rounded to 0.1 px, backbone.version), in batches, in memory or as ``.npy``
files, so training epochs never run the backbone again.

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
import os
import tempfile
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from annotation_io.skeletons import FLIP_PAIRS, LABELLED_SLOTS, NUM_KEYPOINTS, UNLABELLED_SLOTS
from annotation_io.types import Box, Video
from model.backbones import Backbone
from model.heatmaps import encode
from model.simulated import bind_video
from model.transforms import (
    HEATMAP_SIZE,
    INPUT_SIZE,
    CropGeometry,
    crop_geometry,
    crop_image,
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
BOX_DECIMALS = 1  # boxes are rounded to 0.1 px before cropping and as cache keys
_FRAME_MEMORY = 8  # decoded frames kept per compute call
ProgressFn = Callable[[int, int], None]


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
    """(p, n, (margin_left, margin_right)) for frame t, as `model.inference` chooses them."""
    if distance < 1:
        raise ValueError(f"distance must be >= 1, got {distance}")
    if not 0 <= t < num_frames:
        raise ValueError(f"frame {t} is outside a video of {num_frames} frames")
    p, n = max(t - distance, 0), min(t + distance, num_frames - 1)
    return p, n, (float(t - p) or 1.0, float(n - t) or 1.0)


def round_box(box: Box) -> Box:
    """The box rounded to `BOX_DECIMALS` (what is cropped and what keys the cache)."""
    return Box(*(round(float(v), BOX_DECIMALS) for v in box.xywh))


def build_samples(videos: Mapping[str, Video], *, distance: int = 1) -> list[TrainSample]:
    """Samples from the human-checked poses of labelled frames (neighbours need no labels).

    A frame counts when it is marked labelled (`Frame.is_labeled`); a person counts when it is a
    human label (not a prediction) with at least one of the 15 PoseTrack joints placed. Its box is
    the labelled box, else the box of its joints grown by 10% per side (as `model.tracking` does
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


@dataclass(frozen=True)
class CropSize:
    """Crop and heatmap sizes, (W, H) each.

    The default is DCPose's 288x384 crop with 72x96 heatmaps, the only size the real backbones and
    `model.inference` use. Smaller sizes serve tests and experiments with the simulated backbone
    (the head is fully convolutional; its cost scales with the heatmap area).
    """

    input_size: tuple[int, int] = INPUT_SIZE
    heatmap_size: tuple[int, int] = HEATMAP_SIZE

    @property
    def label(self) -> str:
        return f"{self.input_size[0]}x{self.input_size[1]}-{self.heatmap_size[0]}x{self.heatmap_size[1]}"


DEFAULT_CROP = CropSize()


def sample_geometry(sample: TrainSample, crop: CropSize = DEFAULT_CROP) -> CropGeometry:
    """The un-augmented crop of a sample (its box, HRNet's 1.25 enlargement)."""
    return crop_geometry(sample.box, input_size=crop.input_size, heatmap_size=crop.heatmap_size)


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


# ------------------------------------------------------------------------------- backbone heatmaps


@dataclass(frozen=True)
class _Request:
    video: str
    frame: int
    geom: CropGeometry


def compute_heatmaps(
    backbone: Backbone,
    readers: Mapping[str, FrameReader],
    requests: Sequence[tuple[str, int, CropGeometry]],
    *,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Backbone heatmaps of (video, frame, crop geometry) requests, in batches per video.

    Each frame is read once per call (requests are grouped by video and sorted by frame); backbones
    that need the video's identity are bound with `model.simulated.bind_video`.

    Returns:
        (N, K, H, W) float32 CPU heatmaps in request order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    reqs = [_Request(v, int(f), g) for v, f, g in requests]
    missing = sorted({r.video for r in reqs} - set(readers))
    if missing:
        raise KeyError(f"no frame reader for video(s) {missing}; pass readers for every sample's video")
    out: list[torch.Tensor | None] = [None] * len(reqs)
    by_video: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(reqs):
        by_video[r.video].append(i)
    done = 0
    for video, idx in by_video.items():
        idx.sort(key=lambda i: reqs[i].frame)
        net = bind_video(backbone, video)
        frames: OrderedDict[int, np.ndarray] = OrderedDict()
        for start in range(0, len(idx), batch_size):
            group = idx[start : start + batch_size]
            crops = []
            for i in group:
                f = reqs[i].frame
                if f not in frames:
                    frames[f] = np.asarray(readers[video].read(f))
                    if len(frames) > _FRAME_MEMORY:
                        frames.popitem(last=False)
                crops.append(crop_image(frames[f], reqs[i].geom))
            hm = net.heatmaps(np.stack(crops), [reqs[i].geom for i in group], [reqs[i].frame for i in group])
            w, h = reqs[group[0]].geom.heatmap_size
            if tuple(hm.shape) != (len(group), NUM_KEYPOINTS, h, w):
                raise RuntimeError(f"backbone {backbone.name} returned {tuple(hm.shape)} for {len(group)} "
                                   f"crops; expected ({len(group)}, {NUM_KEYPOINTS}, {h}, {w})")
            for i, one in zip(group, hm.to("cpu", torch.float32)):
                out[i] = one
            done += len(group)
            if progress is not None:
                progress(done, len(reqs))
    if not reqs:
        return torch.zeros((0, NUM_KEYPOINTS, 96, 72))
    return torch.stack(out)  # type: ignore[arg-type]


CacheKey = tuple[str, int, tuple[float, float, float, float], str]


@dataclass
class BackboneHeatmapCache:
    """Backbone heatmaps (K, H, W) per (video, frame, rounded box, backbone.version), computed once.

    Args:
        backbone: the frozen backbone (its `version` is part of every key).
        readers: video name -> frame reader.
        directory: store ``.npy`` files here (survives restarts, shared by DDP ranks); None: memory.
        dtype: stored dtype (float16 halves memory: 235 kB per entry; heatmaps lie in [0, 1]).
        batch_size: crops per backbone call.
        crop: crop and heatmap sizes (one per cache).

    Attributes:
        backbone_calls: backbone.heatmaps calls made so far (tests count them).
        computed: entries computed so far.
    """

    backbone: Backbone
    readers: Mapping[str, FrameReader]
    directory: Path | None = None
    dtype: Any = np.float16
    batch_size: int = 32
    crop: CropSize = DEFAULT_CROP
    backbone_calls: int = 0
    computed: int = 0
    _memory: dict[CacheKey, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.directory is not None:
            self.directory = Path(self.directory)
            self.directory.mkdir(parents=True, exist_ok=True)

    def key(self, video: str, frame: int, box: Box) -> CacheKey:
        b = round_box(box)
        return (video, int(frame), (b.x, b.y, b.w, b.h), self.backbone.version)

    def _path(self, key: CacheKey) -> Path:
        assert self.directory is not None
        video, frame, (x, y, w, h), version = key
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in version)
        return self.directory / safe / self.crop.label / video / f"{frame:06d}_{x:g}_{y:g}_{w:g}_{h:g}.npy"

    def __contains__(self, key: CacheKey) -> bool:
        if key in self._memory:
            return True
        return self.directory is not None and self._path(key).is_file()

    def __len__(self) -> int:
        return len(self._memory)

    def _store(self, key: CacheKey, value: np.ndarray) -> None:
        if self.directory is None:
            self._memory[key] = value
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".hm.", suffix=".npy", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, value)
            os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _load(self, key: CacheKey) -> np.ndarray:
        if key in self._memory:
            return self._memory[key]
        if self.directory is not None:
            path = self._path(key)
            if path.is_file():
                return np.load(path)
        raise KeyError(f"heatmaps of {key[0]} frame {key[1]} box {key[2]} are not cached; call prefetch first")

    @staticmethod
    def sample_entries(sample: TrainSample) -> list[int]:
        """Frames whose crop (with the sample's box) a sample needs: t, p, n (unique)."""
        return list(dict.fromkeys((sample.frame, sample.prev, sample.next)))

    def prefetch(self, samples: Iterable[TrainSample], *, progress: ProgressFn | None = None) -> int:
        """Compute every entry the samples need that is not cached yet.

        Args:
            samples: the samples.
            progress: callable(done, total) over the entries computed in this call.

        Returns:
            The number of entries computed.
        """
        todo: dict[CacheKey, tuple[str, int, CropGeometry]] = {}
        for s in samples:
            geom = sample_geometry(s, self.crop)
            for f in self.sample_entries(s):
                key = self.key(s.video, f, s.box)
                if key not in todo and key not in self:
                    todo[key] = (s.video, f, geom)
        if not todo:
            return 0
        keys = list(todo)
        counter = CountingBackbone(self.backbone)
        hm = compute_heatmaps(counter, self.readers, [todo[k] for k in keys], batch_size=self.batch_size,
                              progress=progress)
        for key, one in zip(keys, hm.numpy()):
            self._store(key, one.astype(self.dtype))
        self.backbone_calls += counter.calls
        self.computed += len(keys)
        logger.info("cached %d backbone heatmaps (%s) in %d calls", len(keys), self.backbone.version,
                    counter.calls)
        return len(keys)

    def triplet(self, sample: TrainSample) -> torch.Tensor:
        """(3, K, H, W) float32 heatmaps of (t, p, n) cropped with the sample's box."""
        arrays = [self._load(self.key(sample.video, f, sample.box)) for f in (sample.frame, sample.prev, sample.next)]
        return torch.from_numpy(np.stack(arrays).astype(np.float32))


class CountingBackbone:
    """A backbone that counts its `heatmaps` calls (bindings to videos share the count)."""

    def __init__(self, backbone: Backbone, counter: list[int] | None = None) -> None:
        self._backbone = backbone
        self._counter = counter if counter is not None else [0]
        self.name = backbone.name
        self.version = backbone.version

    @property
    def calls(self) -> int:
        return self._counter[0]

    def for_video(self, video: str) -> CountingBackbone:
        return CountingBackbone(bind_video(self._backbone, video), self._counter)

    def heatmaps(
        self, crops_bgr: np.ndarray, geoms: Sequence[CropGeometry], frame_indices: Sequence[int]
    ) -> torch.Tensor:
        self._counter[0] += 1
        return self._backbone.heatmaps(crops_bgr, geoms, frame_indices)


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
