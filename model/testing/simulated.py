"""A simulated backbone: ground-truth heatmaps corrupted the way real rough pose estimators err.

Benchmarks and tests only: it needs the ground truth of the video it
looks at, so it is never built by `model.backbones.factory.build_backbone` and never serves.

For each crop it finds the GT person of that frame whose box centre is nearest the crop centre,
maps that person's joints into the crop's heatmap geometry and renders Gaussians there
(`model.heatmaps.render_gaussians`), after these corruptions (all sizes in heatmap pixels):

- systematic per-joint offsets: a fixed bias per joint (same for every video, track and frame),
  `joint_bias_px` long on average, in the crop's own orientation; a trained head can learn it;
- jitter: independent Gaussian noise per (frame, track, joint);
- blur: estimated from the crop itself (variance of the Laplacian of the grey crop, measured at
  the frame's native resolution so that small, upsampled people do not look blurred); a blurred
  crop gives lower and wider peaks, more jitter, and drops joints;
- occlusion: a joint labelled occluded (v = 1) gets a weak, displaced peak, or is pulled to the
  same joint of the person in front of it (the occluder);
- left/right swaps: with `swap_prob` per (frame, track) the arms, the legs or both sides swap;
- uncertain joints (blurred or occluded) get wider, lower peaks (the scores that AP ranks by).

Every random draw comes from ``np.random.default_rng([seed, video, frame, track])``, so the output
is a deterministic function of (seed, video, frame index, track, crop geometry, crop pixels).

Which video a crop belongs to: the `Backbone` protocol passes crops, geometries and frame indices,
which do not name the video. A `SimulatedBackbone` is therefore *bound* to one video:
`sim.for_video(name)` returns a bound copy sharing the ground truth (built from a single video, it
is bound to that one already). Code that handles several videos through one backbone (the training
heatmap cache) binds through `bind_video`, which is a no-op for real backbones.
"""

from __future__ import annotations

import hashlib
import logging
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass

import cv2
import numpy as np
import torch

from annotation_io.skeletons import NUM_KEYPOINTS
from annotation_io.types import Box, Person, Video
from model.heatmaps import render_gaussians
from model.transforms import CropGeometry, frame_to_heatmap

logger = logging.getLogger(__name__)

__all__ = ["CropDraw", "SimulatedBackbone", "SimulationConfig", "blur_level"]

ARMS = ((5, 6), (7, 8), (9, 10))
LEGS = ((11, 12), (13, 14), (15, 16))
SWAP_KINDS = ("arms", "legs", "both")
_SIGMA_LEVELS = 4  # per-joint sigmas are rendered in this many quantised groups


@dataclass(frozen=True)
class SimulationConfig:
    """How strongly the simulated backbone errs (sizes in heatmap pixels, 1 px = 4 crop px).

    Attributes:
        sigma: Gaussian sigma of a confident joint (3: the training targets HRNet learns).
        peak: peak of a confident joint; each peak also varies by +-`peak_spread`.
        peak_spread: half-width of the uniform peak variation.
        joint_bias_px: mean length of the fixed per-joint offset.
        jitter_px: standard deviation of the per-(frame, track, joint) noise on sharp crops.
        swap_prob: probability per (frame, track) of a left/right swap (arms, legs or both).
        drop_prob: probability per joint of a miss on a sharp, unoccluded joint.
        blur_drop_prob: extra miss probability per joint on a fully blurred crop.
        blur_jitter_gain: jitter multiplier added at full blur (1 + gain * blur).
        blur_peak_loss: fraction of the peak lost at full blur.
        occluded_pull_prob: probability that an occluded joint lands on the occluder's same joint.
        occluded_peak: peak factor of an occluded joint that is not pulled.
        occluded_jitter_px: extra noise on an occluded joint.
        uncertain_sigma_gain: sigma multiplier added at full uncertainty (1 + gain * u).
        sharp_log_var: log10 Laplacian variance of a sharp crop (blur 0), calibrated on
            `annotation_io.synth` frames (sharp crops measure 1.7-2.3).
        blurry_log_var: log10 Laplacian variance of a blurred crop (blur 1; synth's motion and
            defocus blur measure 0.5-1.5).
        max_centre_distance: largest distance between the crop centre and a person's box centre,
            as a fraction of the crop width in frame pixels, for that person to be rendered.
    """

    sigma: float = 3.0
    peak: float = 0.85
    peak_spread: float = 0.1
    joint_bias_px: float = 1.5
    jitter_px: float = 0.6
    swap_prob: float = 0.08
    drop_prob: float = 0.02
    blur_drop_prob: float = 0.35
    blur_jitter_gain: float = 1.5
    blur_peak_loss: float = 0.5
    occluded_pull_prob: float = 0.3
    occluded_peak: float = 0.4
    occluded_jitter_px: float = 2.0
    uncertain_sigma_gain: float = 0.5
    sharp_log_var: float = 1.9
    blurry_log_var: float = 0.9
    max_centre_distance: float = 0.5

    def __post_init__(self) -> None:
        probs = ("swap_prob", "drop_prob", "blur_drop_prob", "occluded_pull_prob", "blur_peak_loss")
        for name in probs:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SimulationConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        positive = ("sigma", "peak", "max_centre_distance")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"SimulationConfig.{name} must be positive, got {getattr(self, name)}")
        non_negative = ("peak_spread", "joint_bias_px", "jitter_px", "blur_jitter_gain", "occluded_peak",
                        "occluded_jitter_px", "uncertain_sigma_gain")
        for name in non_negative:
            if not getattr(self, name) >= 0:
                raise ValueError(f"SimulationConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not self.sharp_log_var > self.blurry_log_var:
            raise ValueError(
                f"SimulationConfig.sharp_log_var ({self.sharp_log_var}) must exceed blurry_log_var "
                f"({self.blurry_log_var})"
            )


@dataclass(frozen=True)
class CropDraw:
    """What the simulation decided for one crop (returned by `SimulatedBackbone.draws`).

    Attributes:
        track_id: GT track rendered (None: no person near the crop, an empty heatmap).
        blur: blur level in [0, 1] estimated from the crop.
        swap: "arms", "legs", "both" or None.
        dropped: (K,) joints left out (misses).
        pulled: (K,) occluded joints moved to the occluder's joint.
        xy: (K, 2) rendered peak positions in heatmap pixels (NaN where nothing is rendered).
        peak: (K,) rendered peak heights (0 where nothing is rendered).
        sigma: (K,) Gaussian sigmas.
    """

    track_id: int | None
    blur: float
    swap: str | None
    dropped: np.ndarray
    pulled: np.ndarray
    xy: np.ndarray
    peak: np.ndarray
    sigma: np.ndarray


@dataclass(frozen=True)
class _Entry:
    """A GT person of one frame: its track code, keypoints and box."""

    track: int
    person: Person
    box: Box


def blur_level(crop_bgr: np.ndarray, geom: CropGeometry, config: SimulationConfig = SimulationConfig()) -> float:
    """Blur in [0, 1] from the variance of the Laplacian of one crop (0 sharp, 1 blurred).

    The crop is first shrunk to the frame's native resolution (crops of small people are upsampled,
    which would read as blur), and only pixels away from the black out-of-frame border count.
    """
    zoom = geom.input_size[0] / (float(geom.scale[0]) * geom.pixel_std)  # crop px per frame px
    img = crop_bgr
    if zoom > 1.0:
        img = cv2.resize(img, None, fx=1.0 / zoom, fy=1.0 / zoom, interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    lap = cv2.Laplacian(grey, cv2.CV_32F)
    valid = cv2.erode((img.max(axis=2) > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if valid.sum() < 25:
        return 1.0  # nothing of the frame in the crop: as good as blind
    log_var = math.log10(float(lap[valid].var()) + 1e-6)
    span = config.sharp_log_var - config.blurry_log_var
    return float(np.clip((config.sharp_log_var - log_var) / span, 0.0, 1.0))


def _video_code(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def _gt_digest(videos: Mapping[str, Video]) -> str:
    sha = hashlib.sha1()
    for name in sorted(videos):
        sha.update(name.encode("utf-8"))
        for frame in videos[name].frames:
            sha.update(frame.index.to_bytes(4, "little"))
            for person in frame.persons:
                sha.update(np.ascontiguousarray(person.keypoints, dtype=np.float64).tobytes())
                sha.update(str(person.track_id).encode("ascii"))
    return sha.hexdigest()[:8]


def _index_video(video: Video) -> dict[int, list[_Entry]]:
    """frame index -> GT persons with a box (given, else the joints' box) and a track code."""
    out: dict[int, list[_Entry]] = {}
    for frame in video.frames:
        entries = []
        for rank, person in enumerate(frame.persons):
            if person.is_prediction or not person.present.any():
                continue
            box = person.box if person.box is not None else person.keypoint_box()
            if box is None:
                continue
            # Untracked GT gets a code that cannot collide with real ids (>= 0).
            track = int(person.track_id) if person.track_id is not None else -1 - rank
            entries.append(_Entry(track, person, box))
        if entries:
            out[frame.index] = entries
    return out


class SimulatedBackbone:
    """Ground truth rendered as heatmaps and corrupted like a real backbone (see the module).

    Args:
        gt_videos: ground truth, one Video or a dict name -> Video (keypoints on every frame the
            crops will come from; a frame without GT gives empty heatmaps).
        seed: seed of every random draw.
        config: corruption strengths.
        video_name: the video crops come from; defaults to the only video when there is one.

    Attributes:
        name: "simulated".
        version: "simulated:<seed>:<digest of config and GT>", so heatmap caches keyed by version
            never mix simulations.
        video_name: the bound video (None when unbound).
    """

    name = "simulated"

    def __init__(
        self,
        gt_videos: Mapping[str, Video] | Video,
        *,
        seed: int = 0,
        config: SimulationConfig = SimulationConfig(),
        video_name: str | None = None,
    ) -> None:
        videos = {gt_videos.name: gt_videos} if isinstance(gt_videos, Video) else dict(gt_videos)
        if not videos:
            raise ValueError("SimulatedBackbone needs at least one ground-truth video")
        for key, video in videos.items():
            if not isinstance(video, Video):
                raise TypeError(f"gt_videos[{key!r}] must be an annotation_io Video, got {type(video).__name__}")
        if video_name is None and len(videos) == 1:
            video_name = next(iter(videos))
        if video_name is not None and video_name not in videos:
            raise KeyError(f"video {video_name!r} is not in the ground truth (have {sorted(videos)[:10]})")
        self.seed = int(seed)
        self.config = config
        self.video_name = video_name
        self._videos = videos
        self._index = {name: _index_video(v) for name, v in videos.items()}
        digest = hashlib.sha1(repr(astuple(config)).encode("ascii"))
        digest.update(_gt_digest(videos).encode("ascii"))
        self.version = f"simulated:{self.seed}:{digest.hexdigest()[:8]}"
        bias_rng = np.random.default_rng([self.seed, 0x5EED])
        angle = bias_rng.uniform(0.0, 2.0 * math.pi, NUM_KEYPOINTS)
        length = config.joint_bias_px * bias_rng.uniform(0.5, 1.5, NUM_KEYPOINTS)
        self.joint_bias = np.stack([np.cos(angle), np.sin(angle)], axis=1) * length[:, None]  # (K, 2)

    @property
    def videos(self) -> list[str]:
        """Names of the ground-truth videos."""
        return sorted(self._videos)

    def for_video(self, name: str) -> SimulatedBackbone:
        """A copy bound to video `name` (shares the ground truth; cheap)."""
        if name not in self._videos:
            raise KeyError(f"video {name!r} is not in the ground truth of this simulated backbone "
                           f"(have {sorted(self._videos)[:10]})")
        clone = object.__new__(SimulatedBackbone)
        clone.__dict__.update(self.__dict__)
        clone.video_name = name
        return clone

    # ------------------------------------------------------------------------------------ protocol

    def heatmaps(
        self, crops_bgr: np.ndarray, geoms: Sequence[CropGeometry], frame_indices: Sequence[int]
    ) -> torch.Tensor:
        """(N, H_in, W_in, 3) uint8 BGR crops -> (N, 17, H, W) float32 CPU heatmaps (H, W from geoms).

        Raises:
            ValueError: unbound with several videos, or lengths / shapes that do not agree.
        """
        draws = self.draws(crops_bgr, geoms, frame_indices)
        if not draws:
            return torch.zeros((0, NUM_KEYPOINTS, 96, 72), dtype=torch.float32)
        w, h = geoms[0].heatmap_size
        xy = torch.from_numpy(np.stack([d.xy for d in draws])).float()  # (N, K, 2)
        peak = torch.from_numpy(np.stack([d.peak for d in draws])).float()  # (N, K)
        sigma = np.stack([d.sigma for d in draws])  # (N, K)
        # render_gaussians takes one sigma: render per quantised sigma level and add (disjoint joints).
        lo, hi = self.config.sigma, self.config.sigma * (1.0 + self.config.uncertain_sigma_gain)
        levels = np.linspace(lo, hi, _SIGMA_LEVELS) if hi > lo else np.array([lo])
        level = np.abs(sigma[..., None] - levels).argmin(axis=-1)  # (N, K)
        out = torch.zeros((len(draws), NUM_KEYPOINTS, h, w), dtype=torch.float32)
        for i, s in enumerate(levels):
            mask = torch.from_numpy(level == i)
            if mask.any():
                out += render_gaussians(xy, peak * mask, size=(h, w), sigma=float(s))
        return out

    def draws(
        self, crops_bgr: np.ndarray, geoms: Sequence[CropGeometry], frame_indices: Sequence[int]
    ) -> list[CropDraw]:
        """The simulation's decisions for each crop (what `heatmaps` renders)."""
        if self.video_name is None:
            raise ValueError(
                f"this SimulatedBackbone holds {len(self._videos)} videos and is not bound to one; "
                "use backbone.for_video(name) (or model.testing.simulated.bind_video) before calling heatmaps()"
            )
        crops = np.asarray(crops_bgr)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise ValueError(f"crops_bgr must be (N, H, W, 3) uint8 BGR, got {crops.shape} {crops.dtype}")
        if not len(crops) == len(geoms) == len(frame_indices):
            raise ValueError(
                f"got {len(crops)} crops, {len(geoms)} geometries and {len(frame_indices)} frame indices; "
                "the simulated backbone needs one geometry and one frame index per crop"
            )
        sizes = {g.heatmap_size for g in geoms}
        if len(sizes) > 1:
            raise ValueError(f"all crops must share one heatmap size, got {sorted(sizes)}")
        index = self._index[self.video_name]
        return [self._draw(c, g, int(t), index.get(int(t), [])) for c, g, t in zip(crops, geoms, frame_indices)]

    # ----------------------------------------------------------------------------------- internals

    def _nearest(self, geom: CropGeometry, entries: list[_Entry]) -> _Entry | None:
        if not entries:
            return None
        cx, cy = geom.center
        dist = [math.hypot(e.box.center[0] - cx, e.box.center[1] - cy) for e in entries]
        best = int(np.argmin(dist))
        crop_width_px = float(geom.scale[0]) * geom.pixel_std
        return entries[best] if dist[best] <= self.config.max_centre_distance * crop_width_px else None

    def _occluder_joints(self, target: _Entry, entries: list[_Entry], joint: int) -> np.ndarray | None:
        """Frame xy of `joint` of the other person whose box holds the target's joint (nearest one)."""
        x, y = target.person.xy[joint]
        best, best_d = None, math.inf
        for e in entries:
            if e is target or not e.person.present[joint] or not e.box.contains(x, y):
                continue
            d = math.hypot(*(e.person.xy[joint] - (x, y)))
            if d < best_d:
                best, best_d = e.person.xy[joint], d
        return best

    def _draw(self, crop: np.ndarray, geom: CropGeometry, frame: int, entries: list[_Entry]) -> CropDraw:
        cfg = self.config
        k = NUM_KEYPOINTS
        blur = blur_level(crop, geom, cfg)
        target = self._nearest(geom, entries)
        nothing = np.zeros(k, dtype=bool)
        if target is None:
            return CropDraw(None, blur, None, nothing, nothing, np.full((k, 2), np.nan), np.zeros(k),
                            np.full(k, cfg.sigma))
        assert self.video_name is not None
        rng = np.random.default_rng([self.seed, _video_code(self.video_name), frame, target.track & 0xFFFFFFFF])
        # Draw everything up front, in a fixed order, so each decision's stream never shifts.
        swap_u, swap_kind = rng.random(), int(rng.integers(len(SWAP_KINDS)))
        jitter = rng.normal(size=(k, 2))
        occ_noise = rng.normal(size=(k, 2))
        drop_u, pull_u = rng.random(k), rng.random(k)
        peak_u = rng.uniform(-1.0, 1.0, k)

        kps = target.person.keypoints
        present = kps[:, 2] > 0
        occluded = kps[:, 2] == 1
        frame_xy = kps[:, :2].copy()
        pulled = np.zeros(k, dtype=bool)
        for j in np.flatnonzero(occluded & (pull_u < cfg.occluded_pull_prob)):
            other = self._occluder_joints(target, entries, int(j))
            if other is not None:
                frame_xy[j], pulled[j] = other, True
        xy = frame_to_heatmap(frame_xy, geom)  # (K, 2)

        unc = np.clip(np.maximum(blur, occluded & ~pulled), 0.0, 1.0)  # uncertainty per joint
        noise = cfg.jitter_px * (1.0 + cfg.blur_jitter_gain * blur)
        # The bias lives in the crop's own axes (a backbone errs in its upright input frame).
        xy = xy + self.joint_bias + noise * jitter
        xy = xy + (occluded & ~pulled)[:, None] * cfg.occluded_jitter_px * occ_noise
        peak = cfg.peak * (1.0 + cfg.peak_spread * peak_u) * (1.0 - cfg.blur_peak_loss * blur)
        peak = np.where(occluded & ~pulled, peak * cfg.occluded_peak, peak)
        sigma = cfg.sigma * (1.0 + cfg.uncertain_sigma_gain * unc)

        swap = SWAP_KINDS[swap_kind] if swap_u < cfg.swap_prob else None
        if swap is not None:
            pairs = {"arms": ARMS, "legs": LEGS, "both": ARMS + LEGS}[swap]
            perm = np.arange(k)
            for a, b in pairs:
                perm[a], perm[b] = b, a
            xy, present, peak, sigma, pulled = xy[perm], present[perm], peak[perm], sigma[perm], pulled[perm]
        dropped = present & (drop_u < cfg.drop_prob + cfg.blur_drop_prob * blur)
        shown = present & ~dropped
        xy = np.where(shown[:, None], xy, np.nan)
        peak = np.where(shown, peak, 0.0)
        return CropDraw(target.track, blur, swap, dropped, pulled, xy, peak, sigma)

    def __repr__(self) -> str:
        return f"SimulatedBackbone(version={self.version!r}, video={self.video_name!r}, videos={len(self._videos)})"
