"""Backbone-heatmap cache of head training: crop sizes, batched backbone calls, per-entry storage.

`compute_heatmaps` runs the frozen backbone on (video, frame, crop geometry) requests in batches,
reading each frame once per call. `BackboneHeatmapCache` computes the heatmaps a training sample
needs (frames t, p, n cropped with t's box) once per (video, frame, box rounded to 0.1 px,
backbone.version and its passes where it names them, frames filtered or not), in memory or as ``.npy``
files, so training epochs never run the backbone again.
`CountingBackbone` counts backbone calls (tests and `model.training.loop` report them). The crop primitives
the cache keys on (`CropSize`, `round_box`, `sample_geometry`) live here too.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from annotation_io.jsonio import atomic_open
from annotation_io.skeletons import NUM_KEYPOINTS
from annotation_io.types import Box
from annotation_io.video import FrameReader
from model.backbones.base import Backbone, bind_video
from model.deblur import DeblurredFrames
from model.denoise import DenoisedFrames
from model.interlace import DeinterlacedFrames
from model.training.samples import TrainSample, round_box
from model.transforms import HEATMAP_SIZE, INPUT_SIZE, CropGeometry, crop_geometry, crop_image

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CROP",
    "FRAMES_FILTERED",
    "FRAMES_RAW",
    "BackboneHeatmapCache",
    "CountingBackbone",
    "CropSize",
    "compute_heatmaps",
    "round_box",
    "sample_geometry",
]

_FRAME_MEMORY = 8  # decoded frames kept per compute call
# How the cached crops' frames were read, part of every key: through `model.interlace`, `model.denoise` and
# `model.deblur` (versioned: a change to a filter that changes its output gets a new name here; nlm2: a barred
# frame's noise read and filtered on its picture, `model.bars`; nlm3: soft bars, a blurred copy's or a flat
# colour's, left out too; comb1: interlaced frames' combed blocks given one field's rows first; comb2: the second
# field aligned onto the first where the picture moved as one; smear1: frames smeared by a steady motion
# deconvolved) or as decoded.
FRAMES_FILTERED, FRAMES_RAW = "comb2-denoised-nlm3-smear1", "raw"
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class CropSize:
    """Crop and heatmap sizes, (W, H) each.

    The default is DCPose's 288x384 crop with 72x96 heatmaps, the only size the real backbones and
    `model.pipeline.predictor` use. Smaller sizes serve tests and experiments with the simulated backbone
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
    that need the video's identity are bound with `model.backbones.base.bind_video`.

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
    """Backbone heatmaps (K, H, W) per (video, frame, rounded box, backbone.version, frames filtered or
    not), computed once.

    Args:
        backbone: the frozen backbone (its `version` is part of every key, and its `passes` where it has them:
            MoveNet's say whether lying people are turned upright, so entries cached before are not taken).
        readers: video name -> frame reader.
        directory: store ``.npy`` files here (survives restarts, shared by DDP ranks); None: memory.
        dtype: stored dtype (float16 halves memory: 235 kB per entry; heatmaps lie in [0, 1]).
        batch_size: crops per backbone call.
        crop: crop and heatmap sizes (one per cache).
        denoise: frames are read through `model.interlace.DeinterlacedFrames`, `model.denoise.DenoisedFrames`
            and `model.deblur.DeblurredFrames`, as the predictor reads them by default (`InferConfig.deinterlace`,
            `InferConfig.denoise`, `InferConfig.deblur`), so the head learns on the heatmaps it will be given. It is part of every
            key (`FRAMES_FILTERED` / `FRAMES_RAW`), so entries a cache directory kept from unfiltered frames
            (an earlier release, or ``denoise=False``) are never taken for filtered ones.

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
    denoise: bool = True
    backbone_calls: int = 0
    computed: int = 0
    _memory: dict[CacheKey, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.directory is not None:
            self.directory = Path(self.directory)
            self.directory.mkdir(parents=True, exist_ok=True)

    def key(self, video: str, frame: int, box: Box) -> CacheKey:
        b = round_box(box)
        frames = FRAMES_FILTERED if self.denoise else FRAMES_RAW
        passes = getattr(self.backbone, "passes", None)  # a backbone whose passes changed (MoveNet's turns)
        version = f"{self.backbone.version}+{passes}" if passes else self.backbone.version
        return (video, int(frame), (b.x, b.y, b.w, b.h), f"{version}+{frames}")

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
        # Atomic (a concurrent reader, another DDP rank, sees no torn file); not fsynced: a cache.
        with atomic_open(self._path(key), "wb", durable=False) as handle:
            np.save(handle, value)

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
        readers = ({name: DeblurredFrames(DenoisedFrames(DeinterlacedFrames(r))) for name, r in self.readers.items()}
                   if self.denoise else self.readers)
        hm = compute_heatmaps(counter, readers, [todo[k] for k in keys], batch_size=self.batch_size,
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
