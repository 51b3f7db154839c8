"""Following detected people frame to frame: `Follower` runs the full person detector only every N frames."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from annotation_io.skeletons import LABELLED_SLOTS
from annotation_io.types import Box
from model.pipeline.boxes import (
    MIN_SCORE,
    TrackBox,
    box_from_keypoints,
    overlap_of_smaller,
    pose_confidence,
    pose_gap,
    update_with_keypoints,
)

logger = logging.getLogger(__name__)

__all__ = ["DUPLICATE_IOU", "REFIT_IOU", "REPLACE_IOU", "WHOLE_POSE", "Follower", "PoseFn", "Seed", "part_of",
           "pose_confidence", "refit_box", "same_pose"]

PoseFn = Callable[[int, list[Box]], list[tuple[np.ndarray, np.ndarray]]]  # (frame, boxes) -> (kps, scores) each
Seed = tuple[Box, np.ndarray, np.ndarray, int, int]  # box, keypoints, scores, found in a row, followed unseen in a row
DUPLICATE_IOU = 0.5  # two followed boxes overlapping this much hold the same person
REPLACE_IOU = 0.3  # a detection replaces the followed boxes it overlaps this much (a drifted box included)
MAX_MISSES = 1  # a followed person no detection confirms at this many re-detections in a row is dropped
MAX_UNSEEN = 15  # detecting on every frame, a person the detector misses is followed for at most this many frames
MIN_SEEN = 3  # ... once it has found them on this many frames in a row, each box on the last (DUPLICATE_IOU)
REFIT_IOU = 0.5  # a detected box overlapping the box of the whole pose found in it less than this is moved there
WHOLE_POSE = 0.8  # share of the labelled joints scoring >= MIN_SCORE that makes a pose whole (`refit_box`)
HEAD_SLOTS = (0, 1, 2, 5, 6)  # nose, head_bottom, head_top, shoulders: where a part and its person meet
PART_AREA = 0.5  # a part of a person (`part_of`) has a box under this x theirs ...
PART_INSIDE = 0.8  # ... with this share of it inside theirs ...
SAME_HEAD = 0.1  # ... and its head and shoulders within this x its box diagonal of theirs
SAME_POSE = 0.1  # two poses whose common sure joints lie within this x the smaller box diagonal are one person


@dataclass
class _Followed:
    """A person followed to the last frame seen: their box and the joints found in it."""

    box: Box
    kps: np.ndarray
    scores: np.ndarray
    confidence: float
    misses: int = 0  # re-detections in a row that did not find this person (detecting on every frame: frames)
    carried: bool = False  # followed from the previous frame (not detected on this one)
    seen: int = 1  # frames on which the detector found this person, each box on the last (following between)


class Follower:
    """A detector callable (frame index -> boxes) that follows people between full detections.

    On a frame next to the last one it was called for (either direction: `plan_boxes` walks a run
    backward when only its far side has labels), each person found there is carried with
    `update_with_keypoints`: the pose model runs on their previous box on the new frame and the box
    moves with the joints. The full detector runs on the first frame of a run, every `redetect_every`
    frames, and whenever a followed pose's confidence drops below `min_confidence` or two followed
    boxes meet on one person, by overlap or by holding one pose (`same_pose`); that person is then
    dropped (one who is still there is found again by the detector). A detected box that misses the
    whole, sure pose found in it is moved onto that pose (`refit_box`), and a person boxed by their
    head and shoulders alone is dropped (`part_of`).
    Detections replace followed boxes that overlap them (IoU >= `REPLACE_IOU`), except a detection of
    only a followed person's head and shoulders (`part_of`), which goes while they stay (on a 3-person
    synthetic walk, a walker crossing another was replaced by such a box and missing on 5 of 7 frames);
    a followed person no detection confirms at `MAX_MISSES` re-detections in a row is dropped (a box
    that drifted off its person would otherwise become a false person: 7 on a 3-person synthetic walk
    with 2); `plan_boxes` fills such a detector gap inside a track by interpolation. New people appear
    at re-detection. Track ids are given by `plan_boxes` (IoU with the previous frame's boxes), which
    carried boxes match by construction.

    With `redetect_every` 1 (the default) the detector runs on every frame, and a person of the previous
    frame whom no detection covers is followed onto the frame as above, once the detector has found them
    on `MIN_SEEN` frames in a row (a stray hit is not followed) and for at most `MAX_UNSEEN` frames in a
    row; duplicates and parts go as above, detections first. Those boxes are listed in `unseen`:
    `plan_boxes` replaces the ones that lie between two detections of their track by the interpolation,
    which fits better, and keeps the others, where the detector has lost someone who is still there (a
    person cut by the frame's edge, seen by a panning camera). `counts` keeps, for each box returned,
    how many frames in a row the detector found that person and how many they have been followed unseen;
    stored with a prediction, they let the next one-frame request carry on (`seed`).

    Args:
        detect: frame index -> person boxes (the full detector).
        pose: (frame, boxes) -> (K, 3) keypoints and (K,) scores in frame pixels, one pair per box.
        redetect_every: full detection at most this many frames apart (1: every frame, no following).
        min_confidence: least `pose_confidence` of a followed person.
        frame_size: (W, H); a followed box that leaves the frame ends that person.
    """

    def __init__(self, detect: Callable[[int], list[Box]], pose: PoseFn, *, redetect_every: int,
                 min_confidence: float, frame_size: tuple[int, int] | None = None) -> None:
        if redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1, got {redetect_every}")
        self.detect, self.pose = detect, pose
        self.redetect_every, self.min_confidence, self.frame_size = redetect_every, min_confidence, frame_size
        self.people: list[_Followed] = []
        self.last: int | None = None
        self.since_detect = 0
        self.detections = 0  # full detector runs
        self.followed = 0  # boxes carried
        self.refits = 0  # detected boxes moved onto the pose found in them
        self.unseen: set[tuple[int, Box]] = set()  # (frame, box) of people followed where the detector missed them
        # detecting on every frame: (frame, box) -> (frames found in a row, frames followed unseen in a row)
        self.counts: dict[tuple[int, Box], tuple[int, int]] = {}

    def __call__(self, frame: int) -> list[Box]:
        adjacent = self.last is not None and abs(frame - self.last) == 1
        if self.redetect_every == 1:
            return self._detect_and_follow_missed(frame, adjacent)
        carried, lost = self._carry(frame, self.people) if adjacent else ([], False)
        distinct = _without_duplicates(carried)
        lost |= len(distinct) < len(carried)  # two followed boxes met on one person: look again
        carried = distinct
        self.last = frame
        self.since_detect += 1
        if not adjacent or lost or self.since_detect >= self.redetect_every:
            carried = self._with_detections(frame, carried)
            self.since_detect = 0
        self.people = _without_duplicates(carried)
        return [p.box for p in self.people]

    def _detect_and_follow_missed(self, frame: int, adjacent: bool) -> list[Box]:
        """The detector on `frame`, plus the people of the last frame it misses, followed onto `frame`
        (at most `MAX_UNSEEN` frames in a row; one whose pose is lost or met by another's is dropped)."""
        self.last = frame
        found = self._detections(frame)
        prev = self.people if adjacent else []
        for i, d in enumerate(found):
            before = [p.seen for p in prev if p.box.iou(d.box) >= DUPLICATE_IOU]  # the same box, steadily
            found[i] = replace(d, seen=1 + max(before, default=0))
        missed = [p for p in prev if p.seen >= MIN_SEEN and p.misses < MAX_UNSEEN
                  and all(p.box.iou(d.box) < REPLACE_IOU for d in found)]
        carried, _ = self._carry(frame, missed)
        self.people = _without_duplicates(found + [replace(c, misses=c.misses + 1) for c in carried])
        self.unseen.update((frame, p.box) for p in self.people if p.carried)
        self.counts.update(((frame, p.box), (p.seen, p.misses)) for p in self.people)
        return [p.box for p in self.people]

    def seed(self, frame: int, people: list[Seed]) -> None:
        """The people an earlier prediction placed on `frame`, as if this Follower had just been called for
        it (detecting on every frame; with `redetect_every` > 1 it does nothing): on the frame next to it,
        one the detector misses is followed there under the rule above, `MIN_SEEN` and `MAX_UNSEEN`
        counted on from `counts` stored with that prediction. Label Studio asks for one task at a time:
        a person the detector missed on the task asked for had no box there, though found on the frame
        before.

        Args:
            frame: the frame of the earlier prediction.
            people: (box, (K, 3) keypoints, (K,) scores, frames found in a row, frames followed unseen in
                a row) of each person on it.
        """
        if self.redetect_every != 1:
            return
        self.people = [_Followed(box, np.asarray(kps, float), np.asarray(scores, float),
                                 pose_confidence(scores), misses=unseen, carried=unseen > 0, seen=seen)
                       for box, kps, scores, seen, unseen in people]  # fmt: skip
        self.last = frame

    def follow_back(self, frame: int, box: Box, to: int, others: list[Box]) -> Box | None:
        """The person in `box` on `frame` followed onto the adjacent frame `to`, before the detector found
        them (`model.pipeline.tracking` walks a track back from its first detections); None where their
        pose is lost there (`min_confidence`), the box leaves the frame, or it lands on one of `others`
        (the boxes already on `to`): overlapping one by `REPLACE_IOU`, one of the two boxes lying in the
        other (`PART_INSIDE` of the smaller), or holding the same pose (`same_pose`). The box is listed
        in `unseen`.

        Lying in, as well as by IoU: a detector's poor hit, boxing a person entering the frame together
        with half of their neighbour, is that person's box on that frame (a synthetic walk: a 37x155 box
        followed back into a 123x161 hit, IoU 0.25, and counted twice).
        """
        if abs(to - frame) != 1:
            raise ValueError(f"follow_back goes to an adjacent frame, got {frame} -> {to}")
        ((kps, scores),) = self.pose(frame, [box])
        carried, _ = self._carry(to, [_Followed(box, kps, scores, pose_confidence(scores))])
        if not carried or any(carried[0].box.iou(o) >= REPLACE_IOU or overlap_of_smaller(carried[0].box, o)
                              >= PART_INSIDE for o in others):  # fmt: skip
            return None
        p = carried[0]
        near = [o for o in others if p.box.iou(o) > 0]
        poses = self.pose(to, near) if near else []
        if any(same_pose(p, _Followed(o, k, s, pose_confidence(s))) for o, (k, s) in zip(near, poses)):
            return None
        self.unseen.add((to, p.box))
        return p.box

    def _carry(self, frame: int, people: list[_Followed]) -> tuple[list[_Followed], bool]:
        """`people` of the last frame moved onto `frame`; True when one was lost on the way."""
        if not people:
            return [], False
        out, lost = [], False
        for prev, (kps, scores) in zip(people, self.pose(frame, [p.box for p in people])):
            moved = update_with_keypoints(TrackBox(0, prev.box, "carried", 1.0), prev.kps, kps,
                                          prev_scores=prev.scores, new_scores=scores, frame_size=self.frame_size)
            confidence = pose_confidence(scores)
            if moved is None or confidence < self.min_confidence:
                lost = True  # left the frame or unsure: the detector looks again here
                continue
            out.append(_Followed(moved.box, kps, scores, confidence, prev.misses, carried=True, seen=prev.seen))
        self.followed += len(out)
        return out, lost

    def _refit(self, frame: int, found: list[_Followed]) -> list[_Followed]:
        """Detections moved onto the person the pose model finds in them (see `refit_box`); the pose is
        found again on each moved box (that pass is the frame's own, kept for the prediction)."""
        moves = [(i, box) for i, p in enumerate(found)
                 if p.confidence >= self.min_confidence and (box := refit_box(p.box, p.kps, p.scores)) is not None]
        if moves:
            for (i, box), (kps, scores) in zip(moves, self.pose(frame, [b for _, b in moves])):
                found[i] = _Followed(box, kps, scores, pose_confidence(scores))
            self.refits += len(moves)
        return found

    def _with_detections(self, frame: int, carried: list[_Followed]) -> list[_Followed]:
        """Detections on `frame` (with their poses), plus the followed people none of them covers but a part
        of them (`part_of`: that box is dropped after, by `_without_duplicates`)."""
        found = self._detections(frame)
        kept = []
        for c in carried:
            over = [d for d in found if c.box.iou(d.box) >= REPLACE_IOU]
            if not over:
                c = replace(c, misses=c.misses + 1)
                if c.misses < MAX_MISSES:  # a box that drifted off its person goes in time
                    kept.append(c)
            elif all(part_of(d, c) for d in over):  # only their head and shoulders were boxed: that box goes
                kept.append(replace(c, misses=0))
        return found + kept

    def _detections(self, frame: int) -> list[_Followed]:
        """The detector's people on `frame`, with their poses (`_refit`)."""
        boxes = self.detect(frame)
        if not isinstance(boxes, list) or not all(isinstance(b, Box) for b in boxes):
            raise TypeError(f"detector({frame}) must return a list of Box, got {type(boxes).__name__}")
        self.detections += 1
        found = [_Followed(b, kps, scores, pose_confidence(scores))
                 for b, (kps, scores) in zip(boxes, self.pose(frame, boxes) if boxes else [])]
        return self._refit(frame, found)


def refit_box(box: Box, kps: np.ndarray, scores: np.ndarray) -> Box | None:
    """The box of the whole, sure pose found in a detected box that misses it, or None.

    The detector boxes a person by the landmark pass on its own alignment. On a poor hit (aligned upside
    down, a square several times the person's size) that pass can spread landmarks over the background and
    over other people: on a 3-person synthetic walk, a 196x117 box around a 58x143 walker. Such boxes
    then match one another by IoU and are gap-filled into a false person (25 frames there). The pass
    cropped on that box, upright and centred, finds the walker whole. When at least `WHOLE_POSE` of the
    labelled joints score >= `MIN_SCORE` and their box (`box_from_keypoints`) overlaps the detected
    box by less than `REFIT_IOU`, that box is the person's. A pose with only some sure joints (a person's
    upper body, a part the detector boxed) leaves the box as it is.
    """
    sure = np.asarray(scores, dtype=float)[list(LABELLED_SLOTS)] >= MIN_SCORE
    if sure.mean() < WHOLE_POSE:
        return None
    joints = box_from_keypoints(kps, scores)
    return joints if box.iou(joints) < REFIT_IOU else None


def part_of(p: _Followed, q: _Followed) -> bool:
    """Whether `p` is a part of the person `q`: a box under `PART_AREA` of q's, lying mostly
    (`PART_INSIDE`) inside it, whose sure head and shoulder joints (3 at least, sure in both) lie on q's
    (median distance <= `SAME_HEAD` x p's box diagonal).

    The detector can box a walker's head and shoulders as a person of their own; the pass in that box
    places a shrunken body under them, and the part was followed as a false person (18 person-frames on
    a 3-person synthetic walk, 5 on a 1-person walk). Two people crossing have boxes of about one size,
    and one hidden behind the other keeps their box.
    """
    if p.box.area >= PART_AREA * q.box.area:
        return False
    if overlap_of_smaller(p.box, q.box) < PART_INSIDE:  # p's is the smaller box
        return False
    idx = list(HEAD_SLOTS)
    sure = (np.asarray(p.scores)[idx] >= MIN_SCORE) & (np.asarray(q.scores)[idx] >= MIN_SCORE)
    if sure.sum() < 3:
        return False
    d = np.linalg.norm(p.kps[idx, :2] - q.kps[idx, :2], axis=1)[sure]
    return bool(np.median(d) <= SAME_HEAD * float(np.hypot(p.box.w, p.box.h)))


def same_pose(p: _Followed, q: _Followed) -> bool:
    """Whether `p` and `q` hold one pose, whatever their boxes: most labelled joints (`WHOLE_POSE`) sure
    in both, lying within `SAME_POSE` x the smaller box diagonal of each other (median).

    A followed box can drift onto another person and grow around them (1.4x their box on a 3-person
    synthetic walk): its IoU with their box stays under `DUPLICATE_IOU`, but the pass in it finds them,
    and it was followed as a false person for 10 frames. Two people who cross have poses of their own.
    """
    sure, gap = pose_gap(p.kps, p.scores, p.box, q.kps, q.scores, q.box)
    return sure / len(LABELLED_SLOTS) >= WHOLE_POSE and gap <= SAME_POSE


def _without_duplicates(people: list[_Followed]) -> list[_Followed]:
    """Drops a person whose box overlaps an earlier one's by `DUPLICATE_IOU`, or a followed one whose pose
    is an earlier one's (`same_pose`; detections come first), then the parts of people (`part_of`).
    Two detections holding one pose stay: the second is often a person hidden behind the first (two
    walkers crossing), whose box is right even where the pass in it found the other."""
    out: list[_Followed] = []
    for p in people:
        if all(p.box.iou(q.box) < DUPLICATE_IOU and not (p.carried and same_pose(p, q)) for q in out):
            out.append(p)
    return [p for p in out if not any(q is not p and part_of(p, q) for q in out)]
