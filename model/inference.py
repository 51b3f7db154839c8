"""Predictor: a video and the human labels known so far in, keypoints for every person-frame out.

Pipeline of one `Predictor.predict_video` call (issue 4 items 1-7, reference/dcpose.md §5.2-§6):

1. Boxes and track ids come from `model.tracking.plan_boxes` (human > interpolated > carried >
   detected). Carried boxes are moved frame by frame outward from their label: frame f is cropped
   with the box of frame f-1 (f+1 going backwards), the backbone heatmaps of that crop are decoded,
   and `update_with_keypoints` moves the box with the joint motion for the next frame. The carry uses
   backbone keypoints (the head's output for f needs f+1's pass, whose crop needs f's box).
2. Neighbours as released: p = max(t - d, 0), n = min(t + d, N - 1) with d = `InferConfig.distance`;
   at the ends the current frame stands in with margin 1, otherwise the margins are the real deltas
   (the head weighs the previous frame right / (left + right)).
3. ``exact`` mode crops p, t and n with t's box (the released design: up to 3 backbone passes per
   person-frame). ``cached`` mode runs each (frame, track) crop once, keeps it in an LRU, and
   resamples it into the current crop's heatmap geometry (`heatmap_to_heatmap_affine` +
   `warp_heatmaps`) when it serves as a neighbour; a neighbour frame where the track has no box is
   cropped with t's box instead. Passes are keyed by (frame, crop geometry), so identical crops are
   never run twice in either mode.
4. Label-aware (`InferConfig.label_aware`): a neighbour holding a human pose of the same track gets
   Gaussians (peak 1) at the human joints, in t's heatmap geometry, instead of backbone heatmaps. A
   complete pose (its frame is marked labelled, or all 15 PoseTrack joints are placed) replaces the
   whole heatmap (absent joints are zeros, no backbone pass); a partial pose replaces only its
   joints' channels. Sigma: the backbone's own rendering sigma where it has one (BlazePose: 2),
   else 3, the sigma of the training targets that HRNet learns to reproduce. A current frame with a
   complete human pose is returned as is (its placed joints with v = 2 and score 1, as predictions
   are written; extra["source"] = "human"); on a partial one the placed joints overwrite the
   prediction (extra["source"] = "model+human"). With label_aware off, labels only provide boxes.
5. The head refines (hc, hp, hn, margin); without a head (cold start) the current backbone heatmaps
   are decoded directly and no neighbour is computed. Decoding is `decode_to_frame`; keypoint score
   = peak value clipped to [0, 1], v = 2 where the peak is > 0 (else 0 and x = y = 0); person score =
   box score x mean of the best 10 of the 15 PoseTrack joint scores.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from annotation_io.skeletons import LABELLED_SLOTS, NUM_KEYPOINTS
from annotation_io.types import Box, Frame, Person, Video
from model.backbones import Backbone, BlazePoseHeatmaps, build_backbone, file_digest
from model.dcpose import DCPose
from model.heatmaps import decode_to_frame, render_gaussians
from model.tracking import TrackBox, plan_boxes, update_with_keypoints
from model.transforms import (
    CropGeometry,
    crop_geometry,
    crop_image,
    frame_to_heatmap,
    heatmap_to_heatmap_affine,
    warp_heatmaps,
)

logger = logging.getLogger(__name__)

__all__ = ["FrameReader", "InferConfig", "Predictor", "load_head"]

Mode = Literal["cached", "exact"]
PersonDetector = Callable[[np.ndarray], list[Box]]
TOP_JOINTS = 10  # person score: mean of the best 10 of the 15 labelled joints (robust to occlusion)
TARGET_SIGMA = 3.0  # sigma of the training targets (dcpose.md §5.5)
_FRAME_MEMORY = 8  # decoded frames kept while cropping (passes are sorted by frame)
_Key = tuple[int, CropGeometry]  # a backbone pass: (frame index, crop geometry)


class FrameReader(Protocol):
    """Random access to frames (`annotation_io.video.FrameSource` satisfies it)."""

    num_frames: int

    def read(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 BGR frame."""
        ...


@dataclass(frozen=True)
class InferConfig:
    """How a Predictor runs.

    Attributes:
        mode: "cached" (one backbone pass per person-frame) or "exact" (released 3-crop design).
        label_aware: feed human poses of neighbour frames to the head and keep human poses.
        distance: neighbour frame distance d (t - d, t + d), 1 as released.
        batch_size: crops per backbone call and samples per head call.
        detect: run the person detector on frames no label reaches.
        label_sigma: sigma of the label Gaussians in heatmap pixels; None: the backbone's (see module).
        cache_size: backbone heatmaps kept for reuse (17x96x72 float32 = 470 kB each).
    """

    mode: Mode = "cached"
    label_aware: bool = True
    distance: int = 1
    batch_size: int = 32
    detect: bool = True
    label_sigma: float | None = None
    cache_size: int = 256

    def __post_init__(self) -> None:
        if self.mode not in ("cached", "exact"):
            raise ValueError(f"InferConfig.mode must be 'cached' or 'exact', got {self.mode!r}")
        for name in ("distance", "batch_size", "cache_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"InferConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.label_sigma is not None and not self.label_sigma > 0:
            raise ValueError(f"InferConfig.label_sigma must be positive, got {self.label_sigma}")


@dataclass(frozen=True)
class _Slot:
    """One person crop to predict: its track, crop geometry, output box, box source and score."""

    track_id: int
    geom: CropGeometry
    box: Box
    source: str
    score: float


@dataclass(frozen=True)
class _Pose:
    """A human pose of one track on one frame."""

    person: Person
    complete: bool


@dataclass
class _Side:
    """Where one neighbour heatmap of one item comes from."""

    frame: int
    margin: float
    key: _Key | None = None  # backbone pass, None: the current heatmap (stand-in) or labels only
    affine: np.ndarray | None = None  # resample the pass into the current geometry
    pose: _Pose | None = None  # label-aware replacement


class _LRU(OrderedDict):
    """Least-recently-used map with a fixed number of entries."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def get_fresh(self, key: Any) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


def _human_poses(known: Video | None, plan: dict[int, list[TrackBox]]) -> dict[tuple[int, int], _Pose]:
    """(frame, track id) -> human pose; untracked labels take the id the planner gave their box."""
    poses: dict[tuple[int, int], _Pose] = {}
    if known is None:
        return poses
    for frame in known.frames:
        humans = {b.box: b.track_id for b in plan.get(frame.index, []) if b.source == "human"}
        for person in frame.persons:
            if person.is_prediction or not person.present.any():
                continue
            tid = person.track_id
            if tid is None:
                tid = humans.get(person.box) if person.box is not None else None
                tid = tid if tid is not None else _match_keypoint_box(person, humans)
            if tid is None or (frame.index, int(tid)) in poses:
                continue
            complete = frame.is_labeled or bool(person.present[list(LABELLED_SLOTS)].all())
            poses[(frame.index, int(tid))] = _Pose(person, complete)
    return poses


def _match_keypoint_box(person: Person, humans: dict[Box, int]) -> int | None:
    from model.tracking import box_from_keypoints

    try:
        return humans.get(box_from_keypoints(person.keypoints))
    except ValueError:
        return None


def _neighbours(t: int, distance: int, num_frames: int) -> tuple[tuple[int, float], tuple[int, float]]:
    """((p, margin_left), (n, margin_right)); the current frame stands in (margin 1) at the ends."""
    p, n = max(t - distance, 0), min(t + distance, num_frames - 1)
    return (p, float(t - p) or 1.0), (n, float(n - t) or 1.0)


def _keypoints(xy: np.ndarray, maxvals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) frame xy and (K,) peaks -> (K, 3) x, y, v (2 where placed) and (K,) scores in [0, 1]."""
    placed = maxvals > 0
    kps = np.zeros((len(xy), 3))
    kps[placed, :2] = xy[placed]
    kps[placed, 2] = 2.0
    return kps, np.clip(maxvals, 0.0, 1.0)


def _person_score(scores: np.ndarray, box_score: float) -> float:
    top = np.sort(scores[list(LABELLED_SLOTS)])[::-1][:TOP_JOINTS]
    return float(box_score * top.mean())


class _VideoJob:
    """State of one predict_video call: slots, human poses and the heatmap cache."""

    def __init__(self, predictor: Predictor, video: Video, known: Video | None, reader: FrameReader,
                 num_frames: int) -> None:
        self.p = predictor
        self.cfg = predictor.config
        self.video, self.known, self.reader, self.num_frames = video, known, reader, num_frames
        self.frame_size = (video.width, video.height) if video.width and video.height else None
        self.cache = _LRU(self.cfg.cache_size)
        self.images = _LRU(_FRAME_MEMORY)
        self.slots: dict[int, dict[int, _Slot]] = defaultdict(dict)
        self.own_keys: set[_Key] = set()  # passes with a track's own box: reused as neighbours
        self.human: dict[tuple[int, int], _Pose] = {}  # every human pose (anchors of carried chains)
        self.poses: dict[tuple[int, int], _Pose] = {}  # the ones label-aware refinement uses
        self.passes = 0
        self.use_neighbours = predictor.head is not None
        backbone_sigma = getattr(predictor.backbone, "sigma", None)
        self.sigma = self.cfg.label_sigma or (float(backbone_sigma) if backbone_sigma else TARGET_SIGMA)

    # -- frames and backbone passes ------------------------------------------------------------------
    def image(self, index: int) -> np.ndarray:
        img = self.images.get_fresh(index)
        if img is None:
            img = np.asarray(self.reader.read(index))
            self.images.put(index, img)
        return img

    def heatmaps(self, keys: Iterable[_Key]) -> dict[_Key, torch.Tensor]:
        """Backbone heatmaps (K, H, W) of each pass, from the cache or computed in batches."""
        out: dict[_Key, torch.Tensor] = {}
        missing = []
        for key in dict.fromkeys(keys):
            hit = self.cache.get_fresh(key)
            if hit is None:
                missing.append(key)
            else:
                out[key] = hit
        missing.sort(key=lambda k: k[0])  # each frame is decoded once
        bs = self.cfg.batch_size
        for start in range(0, len(missing), bs):
            group = missing[start : start + bs]
            crops = np.stack([crop_image(self.image(f), g) for f, g in group])
            hm = self.p.backbone.heatmaps(crops, [g for _, g in group], [f for f, _ in group])
            w, h = group[0][1].heatmap_size
            if not isinstance(hm, torch.Tensor) or tuple(hm.shape[1:]) != (NUM_KEYPOINTS, h, w) \
                    or hm.shape[0] != len(group):
                raise RuntimeError(f"backbone {self.p.backbone.name} returned heatmaps of shape "
                                   f"{tuple(getattr(hm, 'shape', ()))} for {len(group)} crops; expected "
                                   f"({len(group)}, {NUM_KEYPOINTS}, {h}, {w})")
            self.passes += len(group)
            # Cloned: a view would pin its whole batch in memory for as long as the entry is cached.
            for key, one in zip(group, hm.to("cpu", torch.float32)):
                out[key] = one.clone()
                if key in self.own_keys:  # crops with a neighbour's box are used once: not kept
                    self.cache.put(key, out[key])
        return out

    def prune(self, before: int) -> None:
        """Drops cached passes of frames before `before` (frames are predicted in increasing order)."""
        for key in [k for k in self.cache if k[0] < before]:
            del self.cache[key]

    def add_slot(self, frame: int, slot: _Slot) -> None:
        self.slots[frame][slot.track_id] = slot
        self.own_keys.add((frame, slot.geom))

    # -- boxes -----------------------------------------------------------------------------------------
    def plan(self, requested: list[int]) -> None:
        """Slots for the requested frames (and their neighbours in cached mode), carried chains run."""
        label_plan = plan_boxes(self.video, self.known, range(self.num_frames))
        detector = self._detect if self.cfg.detect else None
        main = plan_boxes(self.video, self.known, requested, detector=detector)
        need = set(requested)
        if self.cfg.mode == "cached" and self.use_neighbours:
            for t in requested:
                need.update(f for f, _ in _neighbours(t, self.cfg.distance, self.num_frames))
        for f in need:
            for tb in main.get(f, label_plan[f]):
                if tb.source != "carried":
                    self.add_slot(f, _Slot(tb.track_id, crop_geometry(tb.box), tb.box, tb.source, tb.score))
        self.human = _human_poses(self.known, label_plan)
        self.poses = self.human if self.cfg.label_aware else {}
        self._carry(label_plan, need)

    def _detect(self, index: int) -> list[Box]:
        return self.p.detect(self.image(index))

    def _carry(self, label_plan: dict[int, list[TrackBox]], need: set[int]) -> None:
        """Runs carried tracks outward from their label, all chains one step per backbone call."""
        carried: dict[int, list[int]] = defaultdict(list)
        for f in range(self.num_frames):
            for tb in label_plan[f]:
                if tb.source == "carried":
                    carried[tb.track_id].append(f)
        chains = []  # [track, anchor frame, path frames]
        for tid, frames in carried.items():
            runs = np.split(np.array(frames), np.flatnonzero(np.diff(frames) != 1) + 1)
            for run in (list(map(int, r)) for r in runs):
                wanted = [i for i, f in enumerate(run) if f in need]
                if not wanted:
                    continue
                if self._human_box(label_plan, run[0] - 1, tid) is not None:
                    chains.append([tid, run[0] - 1, run[: wanted[-1] + 1]])
                elif self._human_box(label_plan, run[-1] + 1, tid) is not None:
                    chains.append([tid, run[-1] + 1, run[wanted[0]:][::-1]])
        if not chains:
            return
        states = [self._anchor_state(label_plan, tid, anchor) for tid, anchor, _ in chains]
        for k in range(max(len(path) for _, _, path in chains)):
            active = [i for i, (_, _, path) in enumerate(chains) if k < len(path) and states[i] is not None]
            if not active:
                break
            keys = [(chains[i][2][k], crop_geometry(states[i][0].box)) for i in active]
            self.own_keys.update(keys)  # these become the carried frames' own passes
            hm = self.heatmaps(keys)
            xy, maxvals = decode_to_frame(torch.stack([hm[key] for key in keys]), [g for _, g in keys])
            for j, i in enumerate(active):
                tid, _, path = chains[i]
                track, prev_kps, prev_scores = states[i]
                kps, scores = _keypoints(xy[j], maxvals[j])
                moved = update_with_keypoints(track, prev_kps, kps, prev_scores=prev_scores,
                                              new_scores=scores, frame_size=self.frame_size)
                score = next(tb.score for tb in label_plan[path[k]] if tb.track_id == tid)
                out_box = moved.box if moved is not None else track.box
                self.add_slot(path[k], _Slot(tid, keys[j][1], out_box, "carried", score))
                states[i] = None if moved is None else (moved, kps, scores)

    @staticmethod
    def _human_box(plan: dict[int, list[TrackBox]], frame: int, tid: int) -> TrackBox | None:
        return next((tb for tb in plan.get(frame, []) if tb.track_id == tid and tb.source == "human"), None)

    def _anchor_state(self, plan: dict[int, list[TrackBox]], tid: int,
                      anchor: int) -> tuple[TrackBox, np.ndarray, np.ndarray | None]:
        """The labelled box and joints a chain starts from (backbone joints if the label has < 2)."""
        tb = self._human_box(plan, anchor, tid)
        if tb is None:
            raise RuntimeError(f"carried track {tid} has no human box on its anchor frame {anchor}")
        pose = self.human.get((anchor, tid))
        if pose is not None and pose.person.present.sum() >= 2:
            return tb, pose.person.keypoints, None
        key = (anchor, crop_geometry(tb.box))
        xy, maxvals = decode_to_frame(self.heatmaps([key])[key][None], [key[1]])
        kps, scores = _keypoints(xy[0], maxvals[0])
        return tb, kps, scores

    # -- prediction ------------------------------------------------------------------------------------
    def predict_chunk(self, frames: Sequence[int]) -> dict[int, list[Person]]:
        """Persons of each frame in `frames` (one batch of backbone passes and head calls)."""
        out: dict[int, list[Person]] = {t: [] for t in frames}
        items: list[tuple[int, _Slot, _Pose | None]] = []
        for t in frames:
            for tid, slot in sorted(self.slots.get(t, {}).items()):
                pose = self.poses.get((t, tid))
                if pose is not None and pose.complete:
                    out[t].append(self._human_person(pose, slot))
                else:
                    items.append((t, slot, pose))
        if not items:
            return out
        cur = [(t, slot.geom) for t, slot, _ in items]
        sides = [self._sides(t, slot) for t, slot, _ in items] if self.use_neighbours else []
        extra = [s.key for pair in sides for s in pair if s.key is not None]
        hm = self.heatmaps(cur + extra)
        hc = torch.stack([hm[key] for key in cur])
        if self.use_neighbours:
            hp = self._side_heatmaps([s[0] for s in sides], hc, hm, cur)
            hn = self._side_heatmaps([s[1] for s in sides], hc, hm, cur)
            margin = torch.tensor([[s[0].margin, s[1].margin] for s in sides], dtype=torch.float32)
            result = self.p.refine(hc, hp, hn, margin)
        else:
            result = hc
        xy, maxvals = decode_to_frame(result, [g for _, g in cur])
        for j, (t, slot, pose) in enumerate(items):
            out[t].append(self._predicted_person(xy[j], maxvals[j], slot, pose))
        for persons in out.values():
            persons.sort(key=lambda p: p.track_id)
        return out

    def _sides(self, t: int, slot: _Slot) -> tuple[_Side, _Side]:
        pair = []
        for f, margin in _neighbours(t, self.cfg.distance, self.num_frames):
            side = _Side(f, margin)
            if f != t:
                side.pose = self.poses.get((f, slot.track_id))
                if side.pose is None or not side.pose.complete:
                    own = self.slots.get(f, {}).get(slot.track_id) if self.cfg.mode == "cached" else None
                    side.key = (f, own.geom if own is not None else slot.geom)
                    if own is not None and own.geom != slot.geom:
                        side.affine = heatmap_to_heatmap_affine(own.geom, slot.geom)
            pair.append(side)
        return pair[0], pair[1]

    def _side_heatmaps(self, sides: list[_Side], hc: torch.Tensor, hm: dict[_Key, torch.Tensor],
                       cur: list[_Key]) -> torch.Tensor:
        """(B, K, H, W) neighbour heatmaps: stand-in, cached/resampled or exact pass, then labels."""
        out = torch.stack([hm[s.key] if s.key is not None else
                           (torch.zeros_like(hc[i]) if s.pose is not None else hc[i])
                           for i, s in enumerate(sides)])
        warp = [i for i, s in enumerate(sides) if s.affine is not None]
        if warp:
            affines = np.stack([sides[i].affine for i in warp])
            out[warp] = warp_heatmaps(out[warp], affines)
        labelled = [i for i, s in enumerate(sides) if s.pose is not None]
        if labelled:
            kps = [sides[i].pose.person.keypoints for i in labelled]
            xy = np.stack([frame_to_heatmap(k[:, :2], cur[i][1]) for k, i in zip(kps, labelled)])
            present = torch.from_numpy(np.stack([k[:, 2] > 0 for k in kps]))
            h, w = hc.shape[-2:]
            gauss = render_gaussians(torch.from_numpy(xy).float(), present.float(), size=(h, w),
                                     sigma=self.sigma)
            # Partial poses keep the backbone channels of the joints the human did not place.
            keep = torch.stack([present[j] | sides[i].pose.complete for j, i in enumerate(labelled)])
            out[labelled] = torch.where(keep[:, :, None, None], gauss, out[labelled])
        return out

    @staticmethod
    def _human_person(pose: _Pose, slot: _Slot) -> Person:
        present = pose.person.present
        kps = np.zeros((NUM_KEYPOINTS, 3))
        kps[present, :2] = pose.person.xy[present]
        kps[present, 2] = 2.0
        return Person(kps, present.astype(np.float64), slot.track_id, slot.box, pose.person.head_box,
                      1.0, extra={"source": "human", "box_source": slot.source})

    @staticmethod
    def _predicted_person(xy: np.ndarray, maxvals: np.ndarray, slot: _Slot, pose: _Pose | None) -> Person:
        kps, scores = _keypoints(xy, maxvals)
        source = "model"
        if pose is not None:  # a partial human pose: its joints win
            present = pose.person.present
            kps[present, :2], kps[present, 2], scores[present] = pose.person.xy[present], 2.0, 1.0
            source = "model+human"
        return Person(kps, scores, slot.track_id, slot.box, None, _person_score(scores, slot.score),
                      extra={"source": source, "box_source": slot.source})


class Predictor:
    """Pre-annotates videos: boxes, tracks, backbone heatmaps, optional DCPose head, decoding.

    Args:
        backbone: the rough pose estimator.
        head: a trained DCPose head (only `refine` is used), or None for backbone-only output.
        device: where the head runs (the backbone has its own device).
        config: inference options.
        head_version: names the head's weights in `version`.
        detector: full-frame person detector (BGR frame -> boxes); None: BlazePose's `detect_people`
            (OpenCV HOG if mediapipe cannot be used), created on first use.
    """

    def __init__(self, backbone: Backbone, head: DCPose | None, *, device: str | torch.device = "cpu",
                 config: InferConfig = InferConfig(), head_version: str | None = None,
                 detector: PersonDetector | None = None) -> None:
        self.backbone = backbone
        self.device = torch.device(device)
        self.config = config
        self.head = None if head is None else head.to(self.device).eval()
        self.head_version = None if head is None else (head_version or "custom")
        self._detector = detector
        self._owned_pose: Any = None  # a BlazePose graph for detection when the backbone is not BlazePose
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        """Model version: "<backbone version>-backbone-only" or "<backbone version>+head-<head version>"."""
        if self.head is None:
            return f"{self.backbone.version}-backbone-only"
        return f"{self.backbone.version}+head-{self.head_version}"

    @classmethod
    def create(cls, backbone: str | Backbone = "blazepose", checkpoint: str | os.PathLike[str] | None = None,
               head: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu",
               config: InferConfig = InferConfig()) -> Predictor:
        """A predictor for a model version: a backbone (with weights) and an optional trained head.

        Args:
            backbone: "blazepose", "hrnet_w48", ... or a Backbone instance.
            checkpoint: HRNet weights (bare HRNet, official DCPose or ours); for an HRNet backbone it
                defaults to `head` when that is an official DCPose checkpoint holding the backbone.
            head: a head checkpoint (ours, whose model_config["backbone"] must name this backbone, or
                the official DCPose one); None: backbone-only (cold start). A head is never built
                with untrained weights.
            device: where HRNet and the head run.
            config: inference options.
        """
        if isinstance(backbone, str):
            if checkpoint is None and head is not None and backbone.startswith("hrnet"):
                from model.checkpoint import read_checkpoint_info

                if read_checkpoint_info(head).content == "dcpose":
                    checkpoint = head
            bb: Backbone = build_backbone(backbone, checkpoint, device, batch_size=config.batch_size)
        else:
            if checkpoint is not None:
                raise ValueError("checkpoint= applies to a backbone given by name, not to a Backbone instance")
            bb = backbone
        if head is None:
            return cls(bb, None, device=device, config=config)
        net, version = load_head(head, bb.name)
        return cls(bb, net, device=device, config=config, head_version=version)

    def detect(self, frame_bgr: np.ndarray) -> list[Box]:
        """Person boxes on a whole frame (the last-resort detector)."""
        if self._detector is not None:
            return self._detector(frame_bgr)
        from model.blazepose import MediaPipeUnavailableError, detect_people, hog_people

        try:
            pose = self.backbone.pose if isinstance(self.backbone, BlazePoseHeatmaps) else self._own_pose()
        except MediaPipeUnavailableError as exc:
            logger.warning("person detection falls back to OpenCV HOG: %s", exc)
            self._detector = hog_people
            return hog_people(frame_bgr)
        return detect_people(frame_bgr, backbone=pose)

    def _own_pose(self) -> Any:
        with self._lock:
            if self._owned_pose is None:
                from model.blazepose import BlazePoseBackbone

                self._owned_pose = BlazePoseBackbone()
            return self._owned_pose

    def close(self) -> None:
        """Frees mediapipe graphs held by the predictor."""
        if self._owned_pose is not None:
            self._owned_pose.close()
            self._owned_pose = None
        if isinstance(self.backbone, BlazePoseHeatmaps):
            self.backbone.close()

    def refine(self, hc: torch.Tensor, hp: torch.Tensor, hn: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
        """The head on (B, K, H, W) CPU heatmaps, in batches on the device; returns CPU float32."""
        assert self.head is not None
        outs = []
        bs = self.config.batch_size
        with torch.inference_mode():
            for s in range(0, len(hc), bs):
                args = [x[s : s + bs].to(self.device) for x in (hc, hp, hn, margin)]
                outs.append(self.head.refine(*args).to("cpu", torch.float32))
        return torch.cat(outs)

    def predict_video(self, video: Video, known: Video | None = None, *, frames: Iterable[int] | None = None,
                      reader: FrameReader | None = None,
                      progress: bool | Callable[[int, int], None] = False) -> Video:
        """Predicted persons for the requested frames of `video`.

        Args:
            video: the video (num_frames, size, source); its frames' file names and ids are kept.
            known: human labels so far (boxes and/or keypoints with track ids); None: none.
            frames: frame indices to predict; None: all.
            reader: frame access; default `annotation_io.video.open_video(video.source)`.
            progress: True for a tqdm bar, or a callable(done, total) called as frames finish.

        Returns:
            A Video with one Frame per requested index (sorted) holding the predicted persons.

        Raises:
            ValueError: a frame index outside the video, or no way to read the frames.
        """
        num_frames = video.num_frames
        requested = sorted(set(range(num_frames) if frames is None else (_index(f, video) for f in frames)))
        own_reader = reader is None
        if reader is None:
            if not video.source:
                raise ValueError(f"video {video.name!r} has no source; pass reader= to read its frames")
            from annotation_io.video import open_video

            reader = open_video(video.source)
        try:
            if reader.num_frames < num_frames:
                logger.warning("video %s: %d frames announced, %d readable", video.name, num_frames,
                               reader.num_frames)
                num_frames = reader.num_frames
                if requested and requested[-1] >= num_frames:
                    raise ValueError(f"frame {requested[-1]} cannot be read: the frames of video "
                                     f"{video.name!r} hold only {num_frames} images")
            return self._predict(video, known, requested, reader, num_frames, progress)
        finally:
            if own_reader and hasattr(reader, "close"):
                reader.close()

    def predict_frame(self, video: Video, index: int, known: Video | None = None,
                      reader: FrameReader | None = None) -> Frame:
        """Predicted persons of one frame; computes only what that frame needs.

        That is its crops and its neighbours' (and, for a carried box, the chain of frames back to
        the label it is carried from), so the result equals the same frame of `predict_video`
        wherever the boxes come from labels.
        """
        return self.predict_video(video, known, frames=[index], reader=reader).frames[0]

    def _predict(self, video: Video, known: Video | None, requested: list[int], reader: FrameReader,
                 num_frames: int, progress: bool | Callable[[int, int], None]) -> Video:
        if not (video.width and video.height) and getattr(reader, "width", None):
            video = replace(video, width=int(reader.width), height=int(reader.height))  # type: ignore[attr-defined]
        if not requested:
            return _output(video, requested, {}, num_frames)
        job = _VideoJob(self, video, known, reader, num_frames)
        job.plan(requested)
        bar, report = _progress(progress, len(requested), video.name)
        persons: dict[int, list[Person]] = {}
        done = 0
        try:
            for chunk in _chunks(requested, job, self.config.batch_size):
                persons.update(job.predict_chunk(chunk))
                job.prune(before=chunk[-1] + 1 - self.config.distance)
                done += len(chunk)
                report(done, len(requested))
        finally:
            if bar is not None:
                bar.close()
        count = sum(len(v) for v in persons.values())
        logger.info("%s: %d frames, %d persons, %d backbone passes (%s, %s)", video.name, len(requested),
                    count, job.passes, self.config.mode, self.version)
        return _output(video, requested, persons, num_frames)


def _index(value: Any, video: Video) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"frame indices must be integers, got {value!r}")
    if not 0 <= int(value) < video.num_frames:
        raise ValueError(f"frame {int(value)} is outside video {video.name!r}, which has {video.num_frames} "
                         f"frames (valid 0..{video.num_frames - 1})")
    return int(value)


def _chunks(requested: list[int], job: _VideoJob, batch_size: int) -> Iterable[list[int]]:
    """Consecutive requested frames holding about `batch_size` person crops (at least one frame)."""
    chunk: list[int] = []
    items = 0
    for t in requested:
        chunk.append(t)
        items += len(job.slots.get(t, {}))
        if items >= batch_size or len(chunk) >= 4 * batch_size:
            yield chunk
            chunk, items = [], 0
    if chunk:
        yield chunk


def _progress(progress: bool | Callable[[int, int], None], total: int,
              name: str) -> tuple[Any, Callable[[int, int], None]]:
    if callable(progress):
        return None, progress
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"predict {name}", unit="frame")
        return bar, lambda done, _total: bar.update(done - bar.n)
    return None, lambda done, _total: None


def _output(video: Video, requested: list[int], persons: dict[int, list[Person]], num_frames: int) -> Video:
    frames = []
    for t in requested:
        src = video.frame(t)
        meta: dict[str, Any] = {}
        if src is not None:
            meta = {"is_labeled": src.is_labeled, "file_name": src.file_name, "image_id": src.image_id,
                    "extra": dict(src.extra)}
        frames.append(Frame(t, persons.get(t, []), **meta))
    return Video(video.name, video.num_frames, frames, fps=video.fps, source=video.source,
                 width=video.width, height=video.height, extra=dict(video.extra))


def load_head(path: str | os.PathLike[str], backbone_name: str) -> tuple[DCPose, str]:
    """A trained DCPose head from our checkpoint or the official one, checked against the backbone.

    Returns:
        (head in eval mode, head version).

    Raises:
        ValueError: the file holds no head, or a head trained on another backbone's heatmaps.
        model.checkpoint.CheckpointMismatchError: the tensors do not fit.
    """
    from model.checkpoint import load_checkpoint, read_checkpoint_info
    from model.dcpose import DILATIONS, build_dcpose

    path = Path(path)
    info = read_checkpoint_info(path)
    if info.content not in ("dcpose", "head"):
        raise ValueError(f"{path}: holds {info.content} weights, not a DCPose head; pass backbone weights "
                         "as checkpoint= and a trained head as head=")
    num_joints, dilations = info.num_joints or NUM_KEYPOINTS, DILATIONS
    if info.kind == "ours":
        cfg = info.model_config or {}
        trained_on = cfg.get("backbone")
        if trained_on is None:
            raise ValueError(f"{path}: model_config has no 'backbone' field; cannot tell which backbone's "
                             "heatmaps the head was trained on")
        num_joints = int(cfg.get("num_joints", num_joints))
        dilations = tuple(cfg.get("dilations", DILATIONS))
        version = str(info.version)
    else:
        trained_on = f"hrnet_w{info.backbone_width or 48}"
        version = f"dcpose-official:{file_digest(path)}"
    if trained_on != backbone_name:
        raise ValueError(f"{path}: the head was trained on {trained_on} heatmaps but the backbone is "
                         f"{backbone_name}; use a head trained for {backbone_name}")
    head = build_dcpose(backbone=None, num_joints=num_joints, dilations=dilations)
    load_checkpoint(path, head)
    logger.info("head %s loaded from %s", version, path)
    return head.eval(), version
