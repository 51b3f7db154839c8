"""The work of one `Predictor.predict_video` call: box chains, crop batches, neighbours, output.

`model.pipeline.predictor` describes the pipeline (its module docstring, items 1-6) and keeps the public
facade (Predictor, load_head); this module holds the per-call state and steps:
carried box chains (`VideoJob.plan`), batched backbone passes through an LRU of heatmaps
(`VideoJob.heatmaps`), neighbour assembly with label-aware Gaussians (`VideoJob.predict_chunk`)
and the output Video (`assemble_output`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from annotation_io.skeletons import LABELLED_SLOTS, NUM_KEYPOINTS
from annotation_io.types import Box, Frame, Person, Video
from annotation_io.video import FrameReader
from model.backbones.base import Backbone
from model.heatmaps import TARGET_SIGMA, decode_to_frame, render_gaussians
from model.pipeline.boxes import TrackBox, box_from_keypoints, coast, pose_confidence, update_with_keypoints
from model.pipeline.config import InferConfig
from model.pipeline.follow import Follower
from model.pipeline.omissions import ONE_SIDE_REACH, left_out, off_frame
from model.pipeline.one_per_box import (
    MIN_FIT,
    MIN_SHARED,
    PAINT_WIDTH,
    apart,
    fit,
    paint_out,
    same_person,
    shared_poses,
)
from model.pipeline.propagation import (
    MAX_REACH,
    PROPAGATION_TRUST,
    Propagated,
    fuse_with_backbone,
    pace_label,
    propagate_people,
    sees_pose,
)
from model.pipeline.tracking import plan_boxes
from model.transforms import (
    CropGeometry,
    crop_geometry,
    crop_image,
    frame_to_heatmap,
    heatmap_to_heatmap_affine,
    warp_heatmaps,
)

logger = logging.getLogger(__name__)

__all__ = ["JobStages", "VideoJob", "assemble_output"]

_FRAME_MEMORY = 8  # decoded frames kept while cropping (passes are sorted by frame)
_GRAY_MEMORY = 64  # grey frames kept for label propagation
_Key = tuple[int, CropGeometry]  # a backbone pass: (frame index, crop geometry)


@dataclass(frozen=True)
class JobStages:
    """What a job runs: the backbone, the head's refine step (None: backbone only), the detector, options."""

    backbone: Backbone
    config: InferConfig
    detect: Callable[[np.ndarray], list[Box]]
    refine: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None


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
    return float(box_score * pose_confidence(scores))


class VideoJob:
    """State of one predict_video call: slots, human poses and the heatmap cache.

    Args:
        stages: the backbone, the head's `refine` (None: backbone only), the detector and the InferConfig.
        video: the video predicted (frame size, num_frames).
        known: human labels so far, or None.
        reader: frame access.
        num_frames: frames that can be read (at most `video.num_frames`).
        first_track_id: the least id a person new to this job gets (above every id in `known` in any case).
        frame_offset: where the job's frame 0 lies in the whole video, when the job predicts one shot of it
            renumbered from 0 (`model.pipeline.shots`): the backbone is told the whole video's frame indices.
    """

    def __init__(self, stages: JobStages, video: Video, known: Video | None, reader: FrameReader,
                 num_frames: int, *, first_track_id: int = 0, frame_offset: int = 0) -> None:
        self.stages = stages
        self.frame_offset = frame_offset
        self.cfg = stages.config
        self.video, self.known, self.reader, self.num_frames = video, known, reader, num_frames
        self.first_track_id = first_track_id
        self.frame_size = (video.width, video.height) if video.width and video.height else None
        self.cache = _LRU(self.cfg.cache_size)
        self.images = _LRU(_FRAME_MEMORY)
        self.slots: dict[int, dict[int, _Slot]] = defaultdict(dict)
        self.own_keys: set[_Key] = set()  # passes with a track's own box: reused as neighbours
        self.human: dict[tuple[int, int], _Pose] = {}  # every human pose (anchors of carried chains)
        self.poses: dict[tuple[int, int], _Pose] = {}  # the ones label-aware refinement uses
        self.propagated: dict[tuple[int, int], Propagated] = {}  # (frame, track) -> carried human pose
        self.known_at: dict[int, set[int]] = defaultdict(set)  # frame -> tracks with a human or carried pose
        self.complete_at: dict[int, list[int]] = defaultdict(list)  # track -> its complete labels' frames, sorted
        self.grays = _LRU(_GRAY_MEMORY)
        self.counts: dict[tuple[int, Box], tuple[int, int]] = {}  # `Follower.counts` of the detected boxes
        self.passes = 0
        self.use_neighbours = stages.refine is not None
        backbone_sigma = getattr(stages.backbone, "sigma", None)
        self.sigma = self.cfg.label_sigma or (float(backbone_sigma) if backbone_sigma else TARGET_SIGMA)

    def run(self, requested: list[int], report: Callable[[int, int], None] | None = None,
            ) -> dict[int, list[Person]]:
        """Predicts `requested` chunk by chunk, after `plan(requested)`; frame -> persons.

        Args:
            requested: sorted frame indices, as given to `plan`.
            report: called with (frames done, frames requested) after each chunk.
        """
        persons: dict[int, list[Person]] = {}
        done = 0
        for chunk in self._chunks(requested):
            persons.update(self.predict_chunk(chunk))
            self.prune(before=chunk[-1] + 1 - self.cfg.distance)
            done += len(chunk)
            if report is not None:
                report(done, len(requested))
        return persons

    def _chunks(self, requested: list[int]) -> Iterator[list[int]]:
        """Consecutive requested frames holding about `batch_size` person crops (at least one frame)."""
        batch_size = self.cfg.batch_size
        chunk: list[int] = []
        items = 0
        for t in requested:
            chunk.append(t)
            items += len(self.slots.get(t, {}))
            if items >= batch_size or len(chunk) >= 4 * batch_size:
                yield chunk
                chunk, items = [], 0
        if chunk:
            yield chunk

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
            hm = self._backbone(group)
            self.passes += len(group)
            # Cloned: a view would pin its whole batch in memory for as long as the entry is cached.
            for key, one in zip(group, hm.to("cpu", torch.float32)):
                out[key] = one.clone()
                if key in self.own_keys:  # crops with a neighbour's box are used once: not kept
                    self.cache.put(key, out[key])
        return out

    def _backbone(self, group: list[_Key], crops: list[np.ndarray] | None = None) -> torch.Tensor:
        """(B, K, H, W) backbone heatmaps of one batch of passes (`crops`: their crops, default cut from the
        frames), shape-checked."""
        if crops is None:
            crops = [crop_image(self.image(f), g) for f, g in group]
        hm = self.stages.backbone.heatmaps(np.stack(crops), [g for _, g in group],
                                           [f + self.frame_offset for f, _ in group])
        w, h = group[0][1].heatmap_size
        if not isinstance(hm, torch.Tensor) or tuple(hm.shape[1:]) != (NUM_KEYPOINTS, h, w) \
                or hm.shape[0] != len(group):
            raise RuntimeError(f"backbone {self.stages.backbone.name} returned heatmaps of shape "
                               f"{tuple(getattr(hm, 'shape', ()))} for {len(group)} crops; expected "
                               f"({len(group)}, {NUM_KEYPOINTS}, {h}, {w})")
        return hm

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
        label_plan = plan_boxes(self.video, self.known, range(self.num_frames), first_id=self.first_track_id)
        detector = None
        if self.cfg.detect:
            detector = Follower(self._detect, self._poses, redetect_every=self.cfg.redetect_every,
                                min_confidence=self.cfg.follow_min_score, frame_size=self.frame_size)
        main = plan_boxes(self.video, self.known, requested, detector=detector, first_id=self.first_track_id)
        self.counts = detector.counts if detector is not None else {}
        if detector is not None and detector.detections:
            logger.info("%s: person detector run on %d frames, people followed on %d frame-boxes",
                        self.video.name, detector.detections, detector.followed)
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
        for f, tid in sorted(self.human):
            if self.human[(f, tid)].complete:
                self.complete_at[tid].append(f)
        chains = self._chains(label_plan, need)
        if self.cfg.propagate:
            self._propagate(need, chains)
        for f, other in (*self.human, *self.propagated):
            self.known_at[f].add(other)
        self._carry(label_plan, chains)

    def gray(self, index: int) -> np.ndarray:
        """The grey frame `index` (label propagation), cached."""
        img = self.grays.get_fresh(index)
        if img is None:
            img = cv2.cvtColor(self.image(index), cv2.COLOR_BGR2GRAY)
            self.grays.put(index, img)
        return img

    def _propagate(self, need: set[int], chains: list[list[Any]]) -> None:
        """Carries the human poses by optical flow to the needed frames where their track has a slot,
        and along the carried box chains (whose boxes then move with them, `_carry`)."""
        labels: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
        for (f, tid), pose in self.human.items():
            if pose.person.present.sum() >= 1:
                labels[tid][f] = pose.person.keypoints
        on_chain: dict[int, set[int]] = defaultdict(set)
        for tid, _, path in chains:
            on_chain[tid].update(path)
        targets = {tid: sorted(f for f in need | on_chain[tid]
                               if (tid in self.slots.get(f, {}) or f in on_chain[tid])
                               and not (self.human.get((f, tid)) and self.human[(f, tid)].complete))
                   for tid in labels}
        carried = propagate_people(self.gray, labels, targets, num_frames=self.num_frames)
        for tid, frames in carried.items():
            for f, prop in frames.items():
                self.propagated[(f, tid)] = prop

    def _detect(self, index: int) -> list[Box]:
        return self.stages.detect(self.image(index))

    def _poses(self, index: int, boxes: list[Box]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Backbone keypoints (K, 3) and scores (K,) in each box on frame `index` (following people)."""
        if not boxes:
            return []
        keys = [(index, crop_geometry(b)) for b in boxes]
        self.own_keys.update(keys)  # a detected box is its frame's own pass: kept for the prediction
        hm = self.heatmaps(keys)
        xy, maxvals = decode_to_frame(torch.stack([hm[key] for key in keys]), [g for _, g in keys])
        return [_keypoints(xy[j], maxvals[j]) for j in range(len(keys))]

    def _chains(self, label_plan: dict[int, list[TrackBox]], need: set[int]) -> list[list[Any]]:
        """[track, anchor frame, path frames] of each carried run holding a needed frame, path
        ordered outward from the label it is carried from, cut after the last needed frame."""
        carried: dict[int, list[int]] = defaultdict(list)
        for f in range(self.num_frames):
            for tb in label_plan[f]:
                if tb.source == "carried":
                    carried[tb.track_id].append(f)
        chains = []
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
        return chains

    def _carry(self, label_plan: dict[int, list[TrackBox]], chains: list[list[Any]]) -> None:
        """Runs carried tracks outward from their label, all chains one step per backbone call.

        Where the propagated human pose still holds on the next frame (`_flow_pose`), the box moves with
        it and the frame's pass is cropped there; elsewhere the pass is cropped on the previous box and
        the box moves with the backbone's joints, unless those are another person's (`_sees_another`:
        the box of a person hidden behind them would move onto them): then it keeps the pace of the
        track's labelled boxes (`_label_step`; it holds where one label gives no pace).
        """
        if not chains:
            return
        states = [self._anchor_state(label_plan, tid, anchor) for tid, anchor, _ in chains]
        paces = [self._label_step(label_plan, tid, anchor, path[0] - anchor) for tid, anchor, path in chains]
        flows: list[np.ndarray | None] = [self._flow_pose(anchor, tid) for tid, anchor, _ in chains]
        for k in range(max(len(path) for _, _, path in chains)):
            active = [i for i, (_, _, path) in enumerate(chains) if k < len(path) and states[i] is not None]
            if not active:
                break
            by_flow: dict[int, TrackBox | None] = {}
            for i in active:
                tid, _, path = chains[i]
                new_flow = self._flow_pose(path[k], tid)
                if flows[i] is not None and new_flow is not None:
                    by_flow[i] = update_with_keypoints(states[i][0], flows[i], new_flow, frame_size=self.frame_size)
                flows[i] = new_flow
            keys = [(chains[i][2][k], crop_geometry((by_flow.get(i) or states[i][0]).box)) for i in active]
            self.own_keys.update(keys)  # these become the carried frames' own passes
            hm = self.heatmaps(keys)
            xy, maxvals = decode_to_frame(torch.stack([hm[key] for key in keys]), [g for _, g in keys])
            for j, i in enumerate(active):
                tid, _, path = chains[i]
                track, prev_kps, prev_scores = states[i]
                kps, scores = _keypoints(xy[j], maxvals[j])
                coasting = False
                if i in by_flow:
                    moved = by_flow[i]
                elif self._sees_another(path[k], tid, kps, self.known_at.get(path[k], ())):
                    # The backbone there sees someone else: the hidden person keeps their pace, and so
                    # do the joints the next step is measured from.
                    moved, coasting = coast(track, paces[i], frame_size=self.frame_size), True
                    prev_kps = prev_kps.copy()
                    prev_kps[:, :2] += paces[i]
                else:
                    moved = update_with_keypoints(track, prev_kps, kps, prev_scores=prev_scores,
                                                  new_scores=scores, frame_size=self.frame_size)
                score = next(tb.score for tb in label_plan[path[k]] if tb.track_id == tid)
                out_box = moved.box if moved is not None else track.box
                self.add_slot(path[k], _Slot(tid, keys[j][1], out_box, "carried", score))
                states[i] = None if moved is None else ((moved, prev_kps, prev_scores) if coasting else (moved, kps, scores))

    def _sees_another(self, frame: int, tid: int, kps: np.ndarray, others: Iterable[int]) -> bool:
        """Whether backbone joints `kps` (K, 2+) on `frame` are another person's (of `others`): within
        CHECK_FRAC of their height of at least half of the joints their labels follow there (`_flow_pose`)."""
        for other in others:
            pose = self._flow_pose(frame, other) if other != tid else None
            if pose is not None and sees_pose(kps, pose, pose[:, 2] > 0):
                return True
        return False

    def _flow_pose(self, frame: int, tid: int) -> np.ndarray | None:
        """(K, 3) joints the flow follows on `frame` (the human label on a labelled frame), or None when
        fewer than 3 joints or a third of the carried ones are followed (the flow no longer holds)."""
        pose = self.human.get((frame, tid))
        if pose is not None:
            return pose.person.keypoints if pose.person.present.sum() >= 3 else None
        prop = self.propagated.get((frame, tid))
        if prop is None:
            return None
        strong = prop.strong
        if strong.sum() < max(3, (prop.conf > 0).sum() / 3):
            return None
        kps = np.zeros((len(prop.xy), 3))
        kps[strong, :2], kps[strong, 2] = prop.xy[strong], 2.0
        return kps

    def _label_step(self, plan: dict[int, list[TrackBox]], tid: int, anchor: int, direction: int) -> np.ndarray:
        """(2,) pixels per frame a chain going `direction` (+1 later, -1 earlier) from its `anchor` label
        moves: the motion of the track's box centre from the label on the other side that `pace_label`
        picks to the anchor's; zeros where the track has no such label."""
        boxes = {f: tb.box for f in plan if (tb := self._human_box(plan, f, tid)) is not None}
        other = pace_label(boxes, anchor, direction)
        if other is None:
            return np.zeros(2)
        return (np.array(boxes[anchor].center) - np.array(boxes[other].center)) / abs(anchor - other)

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
                    out[t].append(_human_person(pose, slot))
                else:
                    items.append((t, slot, pose))
        if not items:
            return out
        cur = [(t, slot.geom) for t, slot, _ in items]
        sides = [self._sides(t, slot) for t, slot, _ in items] if self.use_neighbours else []
        extra = [s.key for pair in sides for s in pair if s.key is not None]
        hm = self.heatmaps(cur + extra)
        hc = torch.stack([hm[key] for key in cur])
        if self.cfg.one_per_box:
            hc = self._one_person_per_box(items, hc)
        if self.use_neighbours:
            hp = self._side_heatmaps([s[0] for s in sides], hc, hm, cur)
            hn = self._side_heatmaps([s[1] for s in sides], hc, hm, cur)
            margin = torch.tensor([[s[0].margin, s[1].margin] for s in sides], dtype=torch.float32)
            assert self.stages.refine is not None  # use_neighbours implies a head
            result = self.stages.refine(hc, hp, hn, margin)
        else:
            result = hc
        xy, maxvals = decode_to_frame(result, [g for _, g in cur])
        # The backbone's own joints, which check whether it sees the person (a head fed the carried poses
        # as neighbours agrees with them by construction)
        own = xy if result is hc or not self.propagated else decode_to_frame(hc, [g for _, g in cur])[0]
        for j, (t, slot, pose) in enumerate(items):
            prop = self.propagated.get((t, slot.track_id))
            # a pass that sees another person (the carried box of someone hidden behind them) does not
            # see this one: their carried joints win there
            unseen = prop is not None and self._sees_another(t, slot.track_id, own[j], self.known_at.get(t, ()))
            person = _predicted_person(xy[j], maxvals[j], slot, pose, prop, own[j], unseen)
            if (counts := self.counts.get((t, slot.box))) is not None:  # the next request's `Follower.seed`
                person.extra["seen"], person.extra["unseen"] = counts
            if self.cfg.follow_omissions:
                self._leave_out(t, person, pose)
            self._leave_out_off_frame(t, person, pose)
            out[t].append(person)
        for persons in out.values():
            persons.sort(key=lambda p: p.track_id)
        return out

    def _one_person_per_box(self, items: list[tuple[int, _Slot, _Pose | None]],
                            hc: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """`hc` (B, K, H, W), the backbone heatmaps of `items`, where a box got the pose of another person of
        its frame (`model.pipeline.one_per_box`), its crop run again with that person painted out:

        - two boxes with one person's pose: of the two ways to share them (the first box keeps its pose and
          the second box's crop is run again with that pose painted out, or the other way round), the one
          whose poses fit their boxes best (`fit`, summed) is taken;
        - a box with the pose of a person labelled by hand there (6 joints or more): its crop is run again
          with the labelled pose painted out.

        Two boxes whose tracks both hold sure carried joints there (`_carried_sure`) are not run again: the
        carried labels tell the two apart (`fuse_with_backbone`, and `_sees_another` for a pass that sees the
        other). On bench-video's crossing walkers, labels every 8 frames, such runs were 8 of 46 passes and
        none was taken; without them the same figures on the real stills and held-out images as clips, and
        propagation's cost 1.21x -> 1.07x.

        A painted crop whose pose is not clearly another person's (`apart`), or fits its box less than
        `MIN_FIT`, cannot take part; where none can, the heatmaps stay as they were. Detected and followed
        boxes take part too: a person behind another can be boxed right while the pass in the box finds the
        other (a small skier behind a larger one, on the real stills filmed as clips). On the synthetic walks
        (1 and 3 walkers; detecting on every frame, every 10th, and asked frame by frame) that added no
        false person; an earlier version of this step that painted detections added one.
        """
        by_frame: dict[int, list[int]] = defaultdict(list)
        for j, (t, _, _) in enumerate(items):
            by_frame[t].append(j)
        xy, maxvals = decode_to_frame(hc, [slot.geom for _, slot, _ in items])
        poses = [_keypoints(xy[j], maxvals[j]) for j in range(len(items))]
        # Each choice: (item run again, the painted pose, its scores and box, how well the kept pose fits).
        groups: list[list[tuple[int, np.ndarray, np.ndarray, Box, float]]] = []
        paired: set[int] = set()
        for js in by_frame.values():
            boxes = [items[j][1].box for j in js]
            found = shared_poses([poses[j][0] for j in js], [poses[j][1] for j in js], boxes)
            for i, j in ((js[a], js[b]) for a, b in found):
                if all(self._carried_sure(items[k][0], items[k][1].track_id) for k in (i, j)):
                    continue  # the carried labels tell the two apart (`fuse_with_backbone`, `_sees_another`)
                paired.update((i, j))
                groups.append([(takes, *poses[keeps], items[keeps][1].box, fit(*poses[keeps], items[keeps][1].box))
                               for takes, keeps in ((j, i), (i, j))])
        labelled = self._labelled_people(set(by_frame))
        for j in (j for js in by_frame.values() for j in js if j not in paired):
            t, slot, _ = items[j]
            for tid, kps, scores, box in labelled.get(t, []):
                if tid != slot.track_id and same_person(*poses[j], slot.box, kps, scores, box):
                    groups.append([(j, kps, scores, box, 0.0)])
                    break
        if not groups:
            return hc
        runs = [run for group in groups for run in group]
        crops = []
        for k, kps, scores, box, _ in runs:
            width = PAINT_WIDTH * float(np.hypot(box.w, box.h))
            painted = paint_out(self.image(items[k][0]), kps, scores, width)
            crops.append(crop_image(painted, items[k][1].geom))
        keys = [(items[k][0], items[k][1].geom) for k, *_ in runs]
        again = self._backbone(keys, crops).to("cpu", torch.float32)
        self.passes += len(runs)
        new_xy, new_max = decode_to_frame(again, [g for _, g in keys])
        hc = hc.clone()
        m = 0
        for group in groups:
            best, choice = 0.0, None
            for k, kps, scores, box, kept_fit in group:
                found, own_box = _keypoints(new_xy[m], new_max[m]), items[k][1].box
                taken = fit(*found, own_box)
                # taken only where someone fills the box and is clearly not the painted person
                if taken >= MIN_FIT and kept_fit + taken > best and apart(*found, own_box, kps, scores, box):
                    best, choice = kept_fit + taken, m
                m += 1
            if choice is not None:
                k = runs[choice][0]
                hc[k] = again[choice]
                logger.debug("frame %d: track %d held another person's pose; run again with them painted out",
                             items[k][0], items[k][1].track_id)
        return hc

    def _carried_sure(self, frame: int, tid: int) -> bool:
        """Whether the track holds carried joints on `frame` that the fusion trusts (`PROPAGATION_TRUST`), at
        least `MIN_SHARED` of them."""
        prop = self.propagated.get((frame, tid))
        return prop is not None and int((prop.conf >= PROPAGATION_TRUST).sum()) >= MIN_SHARED

    def _labelled_people(self, frames: set[int]) -> dict[int, list[tuple[int, np.ndarray, np.ndarray, Box]]]:
        """frame -> (track id, joints, scores (1 where placed), box) of the people labelled by hand there with
        `MIN_SHARED` joints or more; the box is the track's box there, else the label's, else its joints'."""
        out: dict[int, list[tuple[int, np.ndarray, np.ndarray, Box]]] = defaultdict(list)
        for (f, tid), pose in self.human.items():
            person = pose.person
            if f not in frames or person.present.sum() < MIN_SHARED:
                continue
            slot = self.slots.get(f, {}).get(tid)
            try:
                box = slot.box if slot is not None else person.box or box_from_keypoints(person.keypoints)
            except ValueError:  # its joints all on one point
                continue
            out[f].append((tid, person.keypoints, person.present.astype(np.float64), box))
        return out

    def _leave_out(self, t: int, person: Person, pose: _Pose | None) -> None:
        """Removes the joints the track's nearest complete labels leave out (`model.pipeline.omissions`);
        joints a human placed on frame t or nearer by (a partial correction, carried here by the flow)
        stay; extra["left_out"] lists the joints removed."""
        frames = self.complete_at.get(person.track_id, [])
        before = [f for f in frames if t - MAX_REACH <= f < t][-1:]
        after = [f for f in frames if t < f <= t + MAX_REACH][:1]
        if not (before and after):  # one side: only next to that label (a joint hidden there may come out)
            before = [f for f in before if t - f <= ONE_SIDE_REACH]
            after = [f for f in after if f - t <= ONE_SIDE_REACH]
            if not before and not after:
                return
        w, h = self.frame_size or self.image(t).shape[1::-1]  # no decode where the video's size is known
        labels = [self.human[(f, person.track_id)].person.keypoints for f in before + after]
        drop = left_out(person.keypoints, labels, (w, h))
        drop[person.extra.get("propagated", [])] = False  # carried from a human placement nearer by
        _drop_joints(person, drop, pose, "left_out")

    def _leave_out_off_frame(self, t: int, person: Person, pose: _Pose | None) -> None:
        """Removes the predicted and carried joints beyond the frame's edge (`model.pipeline.omissions.off_frame`);
        joints a human placed stay; extra["off_frame"] lists the joints removed."""
        _drop_joints(person, off_frame(person.keypoints, self.frame_size or self.image(t).shape[1::-1]), pose,
                     "off_frame")

    def _sides(self, t: int, slot: _Slot) -> tuple[_Side, _Side]:
        pair = []
        for f, margin in _neighbours(t, self.cfg.distance, self.num_frames):
            side = _Side(f, margin)
            if f != t:
                side.pose = self.poses.get((f, slot.track_id)) or self._propagated_pose(f, slot.track_id)
                if side.pose is None or not side.pose.complete:
                    own = self.slots.get(f, {}).get(slot.track_id) if self.cfg.mode == "cached" else None
                    side.key = (f, own.geom if own is not None else slot.geom)
                    if own is not None and own.geom != slot.geom:
                        side.affine = heatmap_to_heatmap_affine(own.geom, slot.geom)
            pair.append(side)
        return pair[0], pair[1]

    def _propagated_pose(self, frame: int, track_id: int) -> _Pose | None:
        """A propagated pose as a partial label (its trusted joints) for a neighbour heatmap."""
        prop = self.propagated.get((frame, track_id)) if self.cfg.label_aware else None
        if prop is None or not (prop.conf >= PROPAGATION_TRUST).any():
            return None
        kps = np.zeros((NUM_KEYPOINTS, 3))
        taken = prop.conf >= PROPAGATION_TRUST
        kps[taken, :2], kps[taken, 2] = prop.xy[taken], 2.0
        return _Pose(Person(kps, track_id=track_id), complete=False)

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


def _drop_joints(person: Person, drop: np.ndarray, pose: _Pose | None, key: str) -> None:
    """Removes the `drop` joints of a predicted person, except those a human placed (`pose`), and lists
    them in extra[key]; extra["propagated"] no longer lists them, and the source stops naming propagation
    when no carried joint is left."""
    if pose is not None:
        drop = drop & ~pose.person.present
    if not drop.any():
        return
    person.keypoints[drop] = 0.0
    person.scores[drop] = 0.0
    person.extra[key] = [int(j) for j in np.flatnonzero(drop)]
    if "propagated" in person.extra:
        carried = [j for j in person.extra["propagated"] if not drop[j]]
        if carried:
            person.extra["propagated"] = carried
        else:
            del person.extra["propagated"]
            person.extra["source"] = person.extra["source"].replace("+propagated", "")


def _human_person(pose: _Pose, slot: _Slot) -> Person:
    """A complete human pose as written out: placed joints with v = 2 and score 1."""
    present = pose.person.present
    kps = np.zeros((NUM_KEYPOINTS, 3))
    kps[present, :2] = pose.person.xy[present]
    kps[present, 2] = 2.0
    return Person(kps, present.astype(np.float64), slot.track_id, slot.box, pose.person.head_box,
                  1.0, extra={"source": "human", "box_source": slot.source})


def _predicted_person(xy: np.ndarray, maxvals: np.ndarray, slot: _Slot, pose: _Pose | None,
                      prop: Propagated | None = None, backbone_xy: np.ndarray | None = None,
                      unseen: bool = False) -> Person:
    """A decoded person; propagated joints replace it where trusted (`fuse_with_backbone`, which checks
    `backbone_xy`, the backbone's own joints, where `xy` is a head's; every carried joint where the pass is
    `unseen`: it sees another person), a partial human pose's joints win."""
    kps, scores = _keypoints(xy, maxvals)
    source = "model"
    extra: dict[str, Any] = {}
    if prop is not None:
        fused_xy, fused_scores, taken = fuse_with_backbone(kps[:, :2], scores, prop, check_xy=backbone_xy,
                                                           unseen=unseen)
        if taken.any():
            kps[:, :2], scores = fused_xy, fused_scores
            kps[taken, 2] = 2.0
            source = "model+propagated"
            extra["propagated"] = [int(j) for j in np.flatnonzero(taken)]
    if pose is not None:  # a partial human pose: its joints win
        present = pose.person.present
        kps[present, :2], kps[present, 2], scores[present] = pose.person.xy[present], 2.0, 1.0
        source = "model+human" if source == "model" else "model+propagated+human"
    return Person(kps, scores, slot.track_id, slot.box, None, _person_score(scores, slot.score),
                  extra={"source": source, "box_source": slot.source, **extra})


def assemble_output(video: Video, requested: list[int], persons: dict[int, list[Person]]) -> Video:
    """A Video with one Frame per requested index holding its persons; the frames' metadata (labelled
    flag, file name, image id, extra) and the video's fields are copied from `video`; extra["propagated"]
    is True when some person holds propagated joints."""
    sources = video.frame_map()  # one pass: Video.frame(t) would scan the frames for every t
    frames = []
    for t in requested:
        src = sources.get(t)
        meta: dict[str, Any] = {}
        if src is not None:
            meta = {"is_labeled": src.is_labeled, "file_name": src.file_name, "image_id": src.image_id,
                    "extra": dict(src.extra)}
        frames.append(Frame(t, persons.get(t, []), **meta))
    extra = dict(video.extra)
    if any("propagated" in p.extra for ps in persons.values() for p in ps):
        extra["propagated"] = True
    return Video(video.name, video.num_frames, frames, fps=video.fps, source=video.source,
                 width=video.width, height=video.height, extra=extra)
