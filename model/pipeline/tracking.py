"""Person boxes and track ids for the video pipeline: human, interpolated, carried, detected.

`plan_boxes` decides, for every requested frame, which person boxes to crop and under which track
id, in this order of trust:
1. "human": a person labelled on that frame (its box, else its joints' box).
2. "interpolated": a track labelled on the nearest labelled frames on both sides; box corners are
   interpolated linearly.
3. "carried": a track labelled on the nearest labelled frame on one side only; the box is a copy of
   that label's box (the predictor then moves it frame by frame with `carry_with_keypoints`).
4. "detected": frames where no track reaches; detector boxes get track ids by IoU matching
   (optimal assignment on 1 - IoU, `model.pipeline.assignment`) against the tracks of the neighbouring
   frames, matched at their velocity-predicted position and remembered for MAX_LOST frames; the tracks
   and boxes left unmatched get a second chance with every guess moved as the camera moved (the matched
   tracks show how far). After a run of detector frames, a track that ends is joined to one that starts
   within MAX_LOST frames where the camera's motion carries it (`_stitch`), a track born on a person
   an older track boxes on its last frame or two, and going on after it, takes its id (`_hand_over`), and a frame where the
   detector missed a track seen before and after gets an interpolated box (one id across the miss). With
   a `Follower` as the detector, a track first found after the run's first frame is followed back from
   there by its pose (`_follow_back`), as the Follower follows one past its last detection; a track the
   detector found now and then but never on `MIN_SEEN` frames in a row, which the Follower does not follow,
   is followed on past its last detection (`_follow_on`). Earlier
   predictions in `known` (persons with scores) on the frames beside a run seed its tracks (`predicted`).
   After prediction, `model.pipeline.track_filters.drop_flicker` removes detected tracks that live for
   only 1-2 frames with a low score or on top of a longer track.

A frame counts as labelled when it holds a human person, or is marked `is_labeled` and holds no
prediction. A labelled frame is complete: a track missing from it is absent there, so it is neither
interpolated across it nor carried past it. Tracks reach at most `max_gap` frames from their nearest
label. Box scores: human 1; interpolated 0.5 + 0.5 q and carried 0.8 q with
q = 1 - d / (max_gap + 1), d the distance to the nearest label; detected 0.5 (the detector gives none).
"""

from __future__ import annotations

import bisect
import logging
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from annotation_io.types import Box, Person, Video
from model.pipeline.assignment import match_by_iou
from model.pipeline.boxes import BoxSource, TrackBox, box_from_keypoints, box_in_frame, overlap_of_smaller
from model.pipeline.follow import DUPLICATE_IOU, MAX_UNSEEN, MIN_SEEN, Seed

logger = logging.getLogger(__name__)

Detector = Callable[[int], list[Box]]
FollowBack = Callable[[int, Box, int, list[Box]], Box | None]  # `model.pipeline.follow.Follower.follow_back`

MIN_MAX_GAP = 30  # default max_gap is max(this, median label spacing): ~1 s at 25-30 fps
IOU_THRESHOLD = 0.3  # least IoU for a detection to continue a track
LINK_IOU = 0.1  # least IoU to link untracked labels on consecutive labelled frames (they lie K apart)
MAX_LOST = 10  # frames a track missed by the detector is remembered
DETECTED_SCORE = 0.5
FILLED_SCORE = 0.8 * DETECTED_SCORE  # a detector gap filled by interpolation
SHORT_TRACK = 2  # tracks detected on at most this many frames are not gap-filled (see track_filters)
HANDOVER_FRAMES = 2  # a track born on an older one's person at most this many frames before that one ends is it
HANDOVER_INSIDE = 0.8  # (on the frames they share, their boxes overlap by IOU_THRESHOLD or one lies this much in the other)


def default_max_gap(labelled: Sequence[int]) -> int:
    """How far tracks reach from their nearest label by default: `MIN_MAX_GAP` frames, or the median spacing
    of the labelled frames (sorted indices) where wider. Labels on frames `2 * max_gap + 1` apart or closer
    are linked into tracks."""
    spacing = int(np.median(np.diff(labelled))) if len(labelled) > 1 else 0
    return max(MIN_MAX_GAP, spacing)


def assign_tracks(
    prev: Sequence[TrackBox],
    boxes: Sequence[Box],
    *,
    next_id: int,
    iou_threshold: float = IOU_THRESHOLD,
    source: BoxSource = "detected",
    score: float = DETECTED_SCORE,
) -> list[TrackBox]:
    """Gives each box a track id: a previous track's (best total IoU, at least `iou_threshold`) or a new one.

    Args:
        prev: tracks on the neighbouring frame, at most one box per id.
        boxes: new boxes, e.g. a detector's.
        next_id: first id for unmatched boxes (numbered in box order); above every id in `prev`.
        iou_threshold: least IoU of a match.
        source, score: given to every returned box.

    Returns:
        One TrackBox per box, in the order of `boxes`.

    Raises:
        ValueError: an id repeats in `prev`, `next_id` is not above them, or a bad threshold.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    ids = [t.track_id for t in prev]
    if len(set(ids)) != len(ids):
        raise ValueError(f"prev repeats a track id: {sorted(ids)}")
    if ids and next_id <= max(ids):
        raise ValueError(f"next_id {next_id} must be above every previous track id (max {max(ids)})")
    matched = match_by_iou([t.box for t in prev], list(boxes), iou_threshold)  # box -> prev index
    out = []
    for c, box in enumerate(boxes):
        if c in matched:
            tid = ids[matched[c]]
        else:
            tid, next_id = next_id, next_id + 1
        out.append(TrackBox(tid, box, source, score))
    return out


@dataclass
class _Memo:
    """Last box of a track in the detection pass, with its centre velocity (px per frame)."""

    frame: int
    box: Box
    velocity: np.ndarray | None = None

    def predict(self, frame: int) -> Box:
        if self.velocity is None:
            return self.box
        dx, dy = self.velocity * (frame - self.frame)
        return Box(self.box.x + dx, self.box.y + dy, self.box.w, self.box.h)

    def update(self, frame: int, box: Box, *, move: bool = True) -> None:
        """The track's box on `frame`; with `move`, its velocity too."""
        if move:
            step = (np.array(box.center) - np.array(self.box.center)) / (frame - self.frame)
            self.velocity = step if self.velocity is None else 0.5 * self.velocity + 0.5 * step
        self.frame, self.box = frame, box


def _remember(memory: dict[int, _Memo], track_id: int, frame: int, box: Box, *, move: bool = True) -> None:
    if track_id in memory:
        memory[track_id].update(frame, box, move=move)
    else:
        memory[track_id] = _Memo(frame, box)


class _Labels:
    """Human boxes per labelled frame, keyed by track id (untracked people get fresh ids), and the boxes
    of earlier predictions on frames with no label (`predicted`)."""

    def __init__(self, known: Video | None, max_gap: int | None, frame_size: tuple[int, int] | None,
                 first_id: int = 0) -> None:  # fmt: skip
        self.boxes: dict[int, dict[int, Box]] = {}
        self.predicted: dict[int, dict[int, Box]] = {}
        self.seeds_at: dict[int, list[Seed]] = {}  # of the predicted persons a Follower counted (`Follower.seed`)
        self.next_id = first_id
        self.frame_size = frame_size
        untracked: dict[int, list[Box]] = {}
        if known is not None:
            self.next_id = max(first_id, max(known.track_ids(), default=-1) + 1)
            for frame in known.frames:
                humans = [p for p in frame.persons if not p.is_prediction]
                if not humans and (not frame.is_labeled or frame.persons):
                    mine = [p for p in frame.persons if p.track_id is not None and p.box is not None and p.box.area > 0]
                    if mine:
                        self.predicted[frame.index] = {int(p.track_id): p.box for p in mine}
                        self.seeds_at[frame.index] = [seed for p in mine if (seed := _seed(p)) is not None]
                    continue
                mine = self.boxes.setdefault(frame.index, {})
                for person in humans:
                    box = _human_box(person, known.name, frame.index)
                    if box is None:
                        continue
                    if person.track_id is not None and person.track_id not in mine:
                        mine[int(person.track_id)] = box
                    else:
                        if person.track_id is not None:
                            logger.warning(
                                "%s frame %d: track id %d labelled twice; the second gets a fresh id",
                                known.name,
                                frame.index,
                                person.track_id,
                            )
                        untracked.setdefault(frame.index, []).append(box)
        self.frames = sorted(self.boxes)
        self.max_gap = default_max_gap(self.frames) if max_gap is None else max_gap
        if untracked:
            self._link(untracked)
        self._cache: dict[int, list[TrackBox]] = {}

    def _link(self, untracked: dict[int, list[Box]]) -> None:
        """Gives untracked labels fresh ids, linked by IoU to the untracked labels of the previous
        labelled frame (moved at their velocity so far) when some frame lies within reach of both."""
        memory: dict[int, _Memo] = {}
        for k, index in enumerate(self.frames):
            prev: list[TrackBox] = []
            if k > 0 and index - self.frames[k - 1] <= 2 * self.max_gap + 1:
                prev = [
                    TrackBox(t, m.predict(index), "human", 1.0)
                    for t, m in memory.items()
                    if m.frame == self.frames[k - 1] and t not in self.boxes[index]
                ]
            for tb in assign_tracks(
                prev, untracked.get(index, []), next_id=self.next_id, iou_threshold=LINK_IOU
            ):
                self.boxes[index][tb.track_id] = tb.box
                self.next_id = max(self.next_id, tb.track_id + 1)
                _remember(memory, tb.track_id, index, tb.box)

    def has_tracks(self, index: int) -> bool:
        """Whether a frame holds tracks that a detector pass beside it continues (`state`)."""
        return bool(self.plan(index) or self.predicted.get(index))

    def state(self, index: int) -> dict[int, _Memo]:
        """Track positions and velocities at a frame, seeding the detector pass. Velocities come from
        the track's two nearest labels (consecutive labelled frames); carried boxes move on at that
        velocity here (the plan itself keeps them still: the predictor moves them with the joints).
        A frame no label reaches gives the boxes of its earlier prediction instead, with no velocity:
        Label Studio asks for one frame at a time, and the people on the frame before keep their ids."""
        if not self.plan(index):
            return {t: _Memo(index, box) for t, box in self.predicted.get(index, {}).items()}
        k = bisect.bisect_right(self.frames, index)
        left, right = self.frames[max(k - 2, 0) : k][::-1], self.frames[k : k + 2]  # nearest first
        out = {}
        for tb in self.plan(index):
            pair = [f for f in (left[:1] + right[:1]) if tb.track_id in self.boxes[f]]
            if len(pair) < 2:
                side = left if pair and pair[0] in left else right
                pair = [f for f in side if tb.track_id in self.boxes[f]][:2] if pair else []
            memo = _Memo(index, tb.box)
            if len(pair) == 2:
                a, b = sorted(pair)
                step = np.subtract(self.boxes[b][tb.track_id].center, self.boxes[a][tb.track_id].center)
                memo.velocity = step / (b - a)
                if tb.source == "carried":
                    memo.box = _Memo(pair[0], self.boxes[pair[0]][tb.track_id], memo.velocity).predict(index)
            out[tb.track_id] = memo
        return out

    def predicted_state(self, index: int, step: int) -> dict[int, _Memo]:
        """The tracks of earlier predictions on `index` and the `MAX_LOST` frames behind it (against
        `step`), each at its nearest box: a person the prediction of the frame before missed is looked for
        where the one before that had them, as a detector pass over a run remembers its tracks."""
        out: dict[int, _Memo] = {}
        for k in range(MAX_LOST + 1):
            for t, box in self.predicted.get(index - k * step, {}).items():
                out.setdefault(t, _Memo(index - k * step, box))
        return out

    def plan(self, index: int) -> list[TrackBox]:
        """The label-derived boxes of one frame (human, interpolated or carried), by track id."""
        if index not in self._cache:
            self._cache[index] = self._plan(index)
        return self._cache[index]

    def _plan(self, index: int) -> list[TrackBox]:
        if index < 0:
            return []
        if index in self.boxes:
            return [TrackBox(t, b, "human", 1.0) for t, b in sorted(self.boxes[index].items())]
        k = bisect.bisect_left(self.frames, index)
        left = self.frames[k - 1] if k > 0 else None
        right = self.frames[k] if k < len(self.frames) else None
        lbox = self.boxes[left] if left is not None else {}
        rbox = self.boxes[right] if right is not None else {}
        out = []
        for tid in sorted(set(lbox) | set(rbox)):
            d_left = index - left if tid in lbox else None
            d_right = right - index if tid in rbox else None
            d = min(x for x in (d_left, d_right) if x is not None)
            if d > self.max_gap:
                continue
            q = 1.0 - d / (self.max_gap + 1)
            if d_left is not None and d_right is not None:
                w = d_left / (d_left + d_right)
                a, b = np.array(lbox[tid].xyxy), np.array(rbox[tid].xyxy)
                tb = TrackBox(tid, Box.from_xyxy(*((1 - w) * a + w * b)), "interpolated", 0.5 + 0.5 * q)
            else:
                tb = TrackBox(tid, lbox[tid] if d_left is not None else rbox[tid], "carried", 0.8 * q)
            if self.frame_size is not None:
                if not box_in_frame(tb.box, *self.frame_size):
                    continue
                tb = TrackBox(tid, tb.box.clip(*self.frame_size), tb.source, tb.score)
            out.append(tb)
        return out


def _seed(person: Person) -> Seed | None:
    """A predicted person as a `Follower` left them (`Follower.counts`, stored in extra "seen" and "unseen"),
    or None."""
    seen, unseen = person.extra.get("seen"), person.extra.get("unseen")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (seen, unseen)):
        return None
    if person.scores is None or person.box is None:
        return None
    return person.box, person.keypoints, person.scores, seen, unseen


def _human_box(person: Person, video: str, index: int) -> Box | None:
    if person.box is not None and person.box.area > 0:
        return person.box
    try:
        return box_from_keypoints(person.keypoints)
    except ValueError:
        logger.debug("%s frame %d: a labelled person without box or 2 joints is skipped", video, index)
        return None


def plan_boxes(
    video: Video,
    known: Video | None,
    frames: Sequence[int],
    *,
    detector: Detector | None = None,
    max_gap: int | None = None,
    iou_threshold: float = IOU_THRESHOLD,
    first_id: int = 0,
) -> dict[int, list[TrackBox]]:
    """The person boxes to crop on each requested frame, with stable track ids.

    Args:
        video: the video predicted; gives `num_frames` and, where known, the frame size
            (`known`'s size is used when `video` has none).
        known: human labels (persons with `scores is None`); None or empty: detector only. Predicted
            persons (scores set) are no labels; on the unlabelled frames up to `MAX_LOST` before the
            detector frames (or just after them), their boxes and track ids seed the tracks there, and
            their follower counts let a person the detector misses be followed (earlier predictions of
            the frames beside the one asked for keep their ids: Label Studio asks for one at a time).
        frames: frame indices to plan.
        detector: frame index -> person boxes, called only for frames no label reaches (not for
            labelled frames, even empty ones). None: such frames get no box.
        max_gap: farthest a track reaches from its nearest label, in frames. Default:
            max(30, median spacing of labelled frames), so a gap between two typical labels is
            interpolated throughout and a last label is carried for about a second.
        iou_threshold: least IoU for a detection to continue a track. Tracks are matched at
            their position predicted from their velocity; a track the detector misses is kept
            for MAX_LOST (10) frames, so requested frames further apart share no ids.

        first_id: the least id given to a new track (earlier calls on the same video gave the ids below).

    Returns:
        Requested frame index -> its TrackBoxes sorted by track id (possibly empty). New ids (for
        untracked labels and unmatched detections) lie above every id in `known`, from `first_id` on.

    Raises:
        ValueError: a frame outside the video, a negative `max_gap`, or a bad `iou_threshold`.
        TypeError: the detector returned something other than a list of Box.
    """
    wanted = sorted({_frame_index(f, video) for f in frames})
    if max_gap is not None and max_gap < 0:
        raise ValueError(f"max_gap must be >= 0 frames, got {max_gap}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    width = video.width or (known.width if known is not None else None)
    height = video.height or (known.height if known is not None else None)
    if isinstance(first_id, bool) or not isinstance(first_id, int) or first_id < 0:
        raise ValueError(f"first_id must be an integer >= 0, got {first_id!r}")
    labels = _Labels(known, max_gap, (width, height) if width and height else None, first_id)
    plans = {f: labels.plan(f) for f in wanted}
    todo = [f for f in wanted if not plans[f] and f not in labels.boxes]
    if todo and detector is not None:
        _detect(plans, todo, wanted, labels, detector, iou_threshold)
    counts: dict[str, int] = {}
    for tbs in plans.values():
        for tb in tbs:
            counts[tb.source] = counts.get(tb.source, 0) + 1
    logger.info(
        "%s: planned %d frames (%d labelled, max_gap %d): %s",
        video.name,
        len(wanted),
        len(labels.frames),
        labels.max_gap,
        counts,
    )
    return plans


def _frame_index(value: int, video: Video) -> int:
    try:
        index = operator.index(value)
    except TypeError as exc:
        raise ValueError(f"frame indices must be integers, got {value!r}") from exc
    if index < 0 or (video.num_frames > 0 and index >= video.num_frames):
        raise ValueError(f"frame {index} is outside video {video.name!r} (0..{video.num_frames - 1})")
    return index


def _runs(todo: list[int], wanted: list[int]) -> list[list[int]]:
    """Splits detector frames into runs: no other requested frame and no jump over MAX_LOST inside."""
    todo_set, runs, current = set(todo), [], []
    for f in wanted:
        if f not in todo_set or (current and f - current[-1] > MAX_LOST):
            if current:
                runs.append(current)
            current = []
        if f in todo_set:
            current.append(f)
    return runs + ([current] if current else [])


def _detect(
    plans: dict[int, list[TrackBox]],
    todo: list[int],
    wanted: list[int],
    labels: _Labels,
    detector: Detector,
    iou_threshold: float,
) -> None:
    """Fills detector frames run by run, continuing the label-derived tracks beside each run: forward
    from the frame before it, or backward from the frame after it when only that one has tracks;
    tracks found only on the far side are candidates too."""
    unseen = getattr(detector, "unseen", set())  # boxes a Follower carried where the detector missed them
    for run in _runs(todo, wanted):
        order, step = run, 1
        if not labels.has_tracks(run[0] - 1) and labels.has_tracks(run[-1] + 1):
            order, step = run[::-1], -1
        before = order[0] - step  # tracks beside the run (labels, else earlier predictions), and those beyond its end
        memory = labels.state(before) if labels.plan(before) else labels.predicted_state(before, step)
        if (seed := getattr(detector, "seed", None)) is not None and labels.seeds_at.get(before):
            seed(before, labels.seeds_at[before])  # followed onto the run where missed
        memory.update({t: m for t, m in labels.state(order[-1] + step).items() if t not in memory})
        for f in order:
            boxes = detector(f)
            if not isinstance(boxes, list) or not all(isinstance(b, Box) for b in boxes):
                raise TypeError(f"detector({f}) must return a list of Box, got {type(boxes).__name__}")
            prev = []
            for tid, memo in list(memory.items()):
                guess, lag = memo.predict(f), (f - memo.frame) * step  # lag < 0: a track met ahead
                seen = labels.frame_size is None or box_in_frame(guess, *labels.frame_size)
                if lag > MAX_LOST or (lag > 0 and not seen):  # lost too long ago, or walked out
                    del memory[tid]
                elif seen and -lag <= MAX_LOST:
                    prev.append(TrackBox(tid, guess, "detected", DETECTED_SCORE))
            assigned = _assign_with_camera(prev, boxes, labels.next_id, iou_threshold)
            for tb in assigned:
                labels.next_id = max(labels.next_id, tb.track_id + 1)
                # a followed box moves the track, but its velocity stays the detections' (a pass on a
                # person being crossed can slide; the detection after must still match the track)
                _remember(memory, tb.track_id, f, tb.box, move=(f, tb.box) not in unseen)
            plans[f] = sorted(assigned, key=lambda t: t.track_id)
        label_ids = {t for boxes in labels.boxes.values() for t in boxes}
        _stitch(plans, run, label_ids)
        _hand_over(plans, order, label_ids)
        if (follow_back := getattr(detector, "follow_back", None)) is not None:
            _follow_back(plans, order, follow_back, unseen)
            if getattr(detector, "redetect_every", 1) == 1:
                _follow_on(plans, order, follow_back, unseen)
        _fill_gaps(plans, run, unseen)


def _assign_with_camera(prev: list[TrackBox], boxes: list[Box], next_id: int,
                        iou_threshold: float) -> list[TrackBox]:  # fmt: skip
    """`assign_tracks`, then a second chance for the tracks it left and the boxes it gave new ids: each
    track's guess moved by the camera's motion, the median of how far the matched tracks' boxes lie from
    their guesses. A camera that pans faster carries everyone past their velocity at once; a track still
    without velocity (found on the previous frame only) is then lost on every frame where the pan moves
    its box by more than about half its width."""
    assigned = assign_tracks(prev, boxes, next_id=next_id, iou_threshold=iou_threshold)
    guesses = {tb.track_id: tb.box for tb in prev}
    matched = [tb for tb in assigned if tb.track_id in guesses]
    fresh = [tb for tb in assigned if tb.track_id not in guesses]
    taken = {tb.track_id for tb in matched}
    left = [tb for tb in prev if tb.track_id not in taken]
    if not (matched and fresh and left):
        return assigned
    dx, dy = np.median([np.subtract(tb.box.center, guesses[tb.track_id].center) for tb in matched], axis=0)
    moved = [TrackBox(tb.track_id, Box(tb.box.x + dx, tb.box.y + dy, tb.box.w, tb.box.h), tb.source, tb.score)
             for tb in left]  # fmt: skip
    again = assign_tracks(moved, [tb.box for tb in fresh], next_id=next_id, iou_threshold=iou_threshold)
    return matched + again


def _stitch(plans: dict[int, list[TrackBox]], run: list[int], label_ids: set[int]) -> None:
    """Joins a track that ends inside the run to one that starts after it, within `MAX_LOST` frames:
    the detector lost a person for a few frames and found them again where their velocity did not
    predict (a panning camera speeding up; a pose the detector missed while the camera turned). Both
    tracks must hold more than `SHORT_TRACK` boxes: a stray hit joined to a track would outlive the
    flicker filter (`model.pipeline.track_filters.drop_flicker`).

    The lost track's last box, moved by the camera's motion between its last frame and the other's
    first (the median motion of the other tracks seen on both frames; with none, the track's own
    velocity), must overlap the other's first box by `IOU_THRESHOLD`. Pairs are joined best overlap
    first, each track ending at most one pair and starting at most one; the joined track keeps the
    earlier one's id, or the id of the label it continues (two label tracks are never joined).
    `_fill_gaps` then interpolates across the gap. On a real still filmed by a panning camera
    (CrowdPose, 16 frames), the man behind another was lost on 2 frames and came back under a new id.
    """
    at = {f: {tb.track_id: tb.box for tb in plans.get(f, [])} for f in run}
    frames_of: dict[int, list[int]] = {}
    for f in run:
        for t in at[f]:
            frames_of.setdefault(t, []).append(f)
    tracks = {t: fs for t, fs in frames_of.items() if len(fs) > SHORT_TRACK}
    starts = sorted((fs[0], t) for t, fs in tracks.items())
    pairs = []
    for a, fs in tracks.items():
        last = fs[-1]
        for first, b in starts[bisect.bisect_right(starts, (last, float("inf"))) :]:
            if first - last > MAX_LOST:
                break
            if a in label_ids and b in label_ids:
                continue
            dx, dy = _motion(at, a, b, last, first, fs)
            end = at[last][a]
            overlap = Box(end.x + dx, end.y + dy, end.w, end.h).iou(at[first][b])
            if overlap >= IOU_THRESHOLD:
                pairs.append((overlap, a, b))
    joined: dict[int, int] = {}  # track id -> the id it takes

    def final(t: int) -> int:
        while t in joined:
            t = joined[t]
        return t

    ended, started = set(), set()
    for _, a, b in sorted(pairs, reverse=True):
        keep, gone = final(a), final(b)
        if a in ended or b in started or keep == gone or (keep in label_ids and gone in label_ids):
            continue
        if gone in label_ids:
            keep, gone = gone, keep
        joined[gone] = keep
        ended.add(a)
        started.add(b)
        logger.debug("track %d joined to track %d across frames %d-%d", gone, keep, frames_of[a][-1], frames_of[b][0])
    if joined:
        for f in run:
            plans[f] = sorted((TrackBox(final(tb.track_id), tb.box, tb.source, tb.score) for tb in plans.get(f, [])),
                              key=lambda t: t.track_id)  # fmt: skip


def _hand_over(plans: dict[int, list[TrackBox]], order: list[int], label_ids: set[int]) -> None:
    """A track born on an older track's person on that track's last frames, which goes on after it ends,
    is that person: boxed twice for a frame or two, then once, under the new id. It takes the older
    track's id from there on, and its boxes on the frames the two share are dropped.

    In the order the run was detected: track `b` first appears on frame i, track `a`, seen before i, has
    its last box on frame j >= i, at most `HANDOVER_FRAMES` frames later, and `b` goes on to frame j + 1.
    On each of frames i..j both have a box and the two overlap (IoU `IOU_THRESHOLD`, or the smaller lies
    `HANDOVER_INSIDE` in the other); `b`'s box on frame j + 1 overlaps `a`'s on frame j by `IOU_THRESHOLD`.
    Both must hold more than `SHORT_TRACK` boxes, as for `_stitch` (a stray hit joined to a track would
    outlive the flicker filter). Pairs are handed over best overlap first, each track once; a label's
    track is never `b`.

    On a real PoseTrack clip (a footballer sliding into a tackle, 1280x720), the detector boxed the
    slider twice on one frame (a hit and the box of the pose found in it, IoU 0.49), missed him on the
    next, and the one box left there continued the newer track: the slider changed id after 3 of 5
    frames. `_stitch` joins a track to one that starts after it ends; this is the case where the two
    overlap in time.
    """
    at = [{tb.track_id: tb.box for tb in plans.get(f, [])} for f in order]
    frames_of: dict[int, list[int]] = {}
    for i, boxes in enumerate(at):
        for t in boxes:
            frames_of.setdefault(t, []).append(i)
    pairs = []
    frames_of = {t: frames for t, frames in frames_of.items() if len(frames) > SHORT_TRACK}
    for b, b_frames in frames_of.items():
        first = b_frames[0]
        if b in label_ids:
            continue
        for a, a_frames in frames_of.items():
            last = a_frames[-1]
            if a == b or a_frames[0] >= first or not first <= last < min(first + HANDOVER_FRAMES, len(at) - 1):
                continue
            if b not in at[last + 1] or any(a not in at[i] or b not in at[i] for i in range(first, last + 1)):
                continue
            if not all(at[i][a].iou(at[i][b]) >= IOU_THRESHOLD
                       or overlap_of_smaller(at[i][a], at[i][b]) >= HANDOVER_INSIDE for i in range(first, last + 1)):
                continue
            onward = at[last][a].iou(at[last + 1][b])
            if onward >= IOU_THRESHOLD:
                pairs.append((onward, a, b, first, last))
    used: set[int] = set()
    for _, a, b, first, last in sorted(pairs, reverse=True):
        if a in used or b in used:
            continue
        used |= {a, b}
        for i, f in enumerate(order):
            if first <= i <= last:
                plans[f] = [tb for tb in plans[f] if tb.track_id != b]
            elif i > last:
                plans[f] = sorted((TrackBox(a, tb.box, tb.source, tb.score) if tb.track_id == b else tb
                                   for tb in plans.get(f, [])), key=lambda t: t.track_id)  # fmt: skip
        logger.debug("track %d handed over to track %d on frame %d", b, a, order[last + 1])


def _follow_back(plans: dict[int, list[TrackBox]], order: list[int], follow_back: FollowBack,
                 unseen: set[tuple[int, Box]]) -> None:  # fmt: skip
    """Tracks followed back from their first detection, frame by frame (`follow_back`), where the
    detector had not found them yet: at most `MAX_UNSEEN` frames, stopping where the pose is lost or
    lands on a box already there. The mirror of a `Follower` following a person past their last
    detection, under the same rule: only a track whose first `MIN_SEEN` boxes are detections on
    consecutive frames, each overlapping the one before by `DUPLICATE_IOU` (a stray hit is not
    followed). `order` is the run in the order it was detected (backward when tracks came from the
    far side); following goes against it.

    A person the detector first finds on the fourth frame of a clip (blurred, walking in from the edge)
    was missing on the first three; with `redetect_every` 10, a walk-in was missing on every frame since
    the last detection (synthetic walks, 3 people: 307 -> 352 of 401 person-frames found).
    """
    first: dict[int, int] = {}  # track -> index in `order` of its first box
    for i, f in enumerate(order):
        for tb in plans.get(f, []):
            first.setdefault(tb.track_id, i)
    for tid, i in sorted(first.items(), key=lambda item: item[1]):
        if i == 0 or not _steady_start(plans, order, tid, i, unseen):
            continue
        box = next(tb.box for tb in plans[order[i]] if tb.track_id == tid)
        _follow_steps(plans, order, tid, box, i, -1, follow_back)


def _follow_on(plans: dict[int, list[TrackBox]], order: list[int], follow: FollowBack,
               unseen: set[tuple[int, Box]]) -> None:  # fmt: skip
    """Tracks followed on past their last detection, frame by frame (`follow`, which goes either way): the
    `Follower` follows a missed person only once found on `MIN_SEEN` frames in a row, so one the detector
    finds now and then was lost after their last detection. At most `MAX_UNSEEN` frames, stopping where
    the pose is lost or lands on a box already there, as `_follow_back` does. Only a track whose last box
    is a detection (not a box the Follower carried, whose end it decided) and which has more than
    `SHORT_TRACK` detections in the run (the tracks `_fill_gaps` fills): a stray hit is not followed.
    `order` is the run in the order it was detected; following goes along it.

    On a real still filmed as a clip (COCO 197388, 16 frames), the front skier's hits scored just under
    the detector's threshold on most frames: found on 5 frames, none of them in a row, he was filled
    between them and lost after the last.
    """
    last: dict[int, int] = {}  # track -> index in `order` of its last box
    detected: dict[int, int] = {}  # track -> its detections in the run
    for i, f in enumerate(order):
        for tb in plans.get(f, []):
            last[tb.track_id] = i
            if (f, tb.box) not in unseen:
                detected[tb.track_id] = detected.get(tb.track_id, 0) + 1
    for tid, i in sorted(last.items(), key=lambda item: item[1]):
        box = next(tb.box for tb in plans[order[i]] if tb.track_id == tid)
        if i < len(order) - 1 and detected.get(tid, 0) > SHORT_TRACK and (order[i], box) not in unseen:
            _follow_steps(plans, order, tid, box, i, 1, follow)


def _follow_steps(plans: dict[int, list[TrackBox]], order: list[int], tid: int, box: Box, i: int, step: int,
                  follow: FollowBack) -> None:  # fmt: skip
    """Track `tid`'s `box` on `order[i]` followed frame by frame along `order` (`step` 1) or against it (-1),
    each box added to `plans`: at most `MAX_UNSEEN` frames, up to the run's end or a frame that is not
    adjacent, stopping where `follow` (which lists each box in the Follower's `unseen`) gives None."""
    for j in range(i, i + step * MAX_UNSEEN, step):
        if not 0 <= j + step < len(order) or abs(order[j + step] - order[j]) != 1:
            break
        to = order[j + step]
        moved = follow(order[j], box, to, [tb.box for tb in plans.get(to, [])])
        if moved is None:
            break
        box = moved
        plans[to] = sorted([*plans.get(to, []), TrackBox(tid, box, "detected", DETECTED_SCORE)],
                           key=lambda t: t.track_id)  # fmt: skip
        logger.debug("track %d followed %s onto frame %d", tid, "on" if step == 1 else "back", to)


def _steady_start(plans: dict[int, list[TrackBox]], order: list[int], tid: int, i: int,
                  unseen: set[tuple[int, Box]]) -> bool:  # fmt: skip
    """Whether track `tid`'s boxes on `order[i:i + MIN_SEEN]` are detections on consecutive frames, each
    overlapping the one before by `DUPLICATE_IOU`."""
    frames = order[i : i + MIN_SEEN]
    if len(frames) < MIN_SEEN or any(abs(b - a) != 1 for a, b in zip(frames, frames[1:])):
        return False
    boxes = [next((tb.box for tb in plans.get(f, []) if tb.track_id == tid), None) for f in frames]
    if any(b is None or (f, b) in unseen for f, b in zip(frames, boxes)):
        return False
    return all(a.iou(b) >= DUPLICATE_IOU for a, b in zip(boxes, boxes[1:]))


def _motion(at: dict[int, dict[int, Box]], a: int, b: int, start: int, end: int,
            a_frames: list[int]) -> tuple[float, float]:  # fmt: skip
    """How far track `a`'s box moves from frame `start` to `end`: the median motion of the box centres
    of the other tracks seen on both frames (the camera's), or `a`'s velocity over its last two frames
    (`a_frames`, ascending, ending at `start`)."""
    moves = [np.subtract(at[end][t].center, box.center) for t, box in at[start].items()
             if t not in (a, b) and t in at[end]]  # fmt: skip
    if moves:
        dx, dy = np.median(moves, axis=0)
        return float(dx), float(dy)
    f0, f1 = a_frames[-2], a_frames[-1]
    step = np.subtract(at[f1][a].center, at[f0][a].center) * (end - start) / (f1 - f0)
    return float(step[0]), float(step[1])


def _fill_gaps(plans: dict[int, list[TrackBox]], run: list[int], unseen: set[tuple[int, Box]] = frozenset()) -> None:
    """Detector gaps inside a track are filled by interpolation.

    A track detected on frames a < b of the run but missed on run frames between them gets boxes
    interpolated linearly between its boxes on a and b (source "interpolated", score 0.8 x the
    detected score): the detector missed a person who is still there (blur, an odd pose). Only tracks
    detected on more than `SHORT_TRACK` frames are filled: filling between two stray detections would
    spread a false person over the frames between them (seen on a synthetic walk). Boxes in `unseen`
    (frame, box) are people a `Follower` followed where the detector missed them: they are not
    detections, and between two detections of their track the interpolation replaces them.
    """
    seen: dict[int, dict[int, Box]] = {}
    for f in run:
        for tb in plans.get(f, []):
            if (f, tb.box) not in unseen:
                seen.setdefault(tb.track_id, {})[f] = tb.box
    for tid, boxes in seen.items():
        if len(boxes) <= SHORT_TRACK:
            continue
        frames = sorted(boxes)
        for f in run:  # followed between two of its detections: the interpolation is surer
            if frames[0] < f < frames[-1] and f not in boxes:
                plans[f] = [tb for tb in plans.get(f, []) if tb.track_id != tid]
        for a, b in zip(frames, frames[1:]):
            for f in (g for g in run if a < g < b):
                w = (f - a) / (b - a)
                corners = (1 - w) * np.array(boxes[a].xyxy) + w * np.array(boxes[b].xyxy)
                filled = TrackBox(tid, Box.from_xyxy(*corners), "interpolated", FILLED_SCORE)
                plans[f] = sorted([*plans.get(f, []), filled], key=lambda t: t.track_id)

