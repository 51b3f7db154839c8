"""Clean-up of predicted tracks: `drop_flicker` removes short detected tracks that are false people."""

from __future__ import annotations

import logging
from collections.abc import Set as AbstractSet

import numpy as np

from annotation_io.types import Box, Person
from model.pipeline.boxes import overlap_of_smaller, pose_confidence, pose_gap
from model.pipeline.tracking import SHORT_TRACK

logger = logging.getLogger(__name__)

__all__ = ["drop_flicker"]

MIN_SPAN_TO_PRUNE = 6  # short tracks are judged only when at least this many frames were predicted
FLICKER_SCORE = 0.3  # a short detected track with a mean person score below this is dropped
DUPLICATE_OVERLAP = 0.6  # ...and so is one whose box lies this much (of the smaller box) on a longer track's
EMPTY_POSE = 0.2  # a detected box whose best 10 labelled joints score under this on average holds nobody
LOWER_SCORE = 0.7  # on too few frames, a detected box lying on a box scoring 1 / this x its own is dropped
OWN_POSE = 0.2  # a rider whose joints lie this far from the longer track's (median, x the smaller box diagonal) ...
OWN_POSE_JOINTS = 3  # ... judged on the frames where at least this many joints are sure in both, is a person
OWN_POSE_SCORE = 0.5  # ... when its person score is this share of the longer track's or more (not a faint pose)


def drop_flicker(persons: dict[int, list[Person]], *, short: int = SHORT_TRACK, min_span: int = MIN_SPAN_TO_PRUNE,
                 min_score: float = FLICKER_SCORE) -> dict[int, list[Person]]:
    """Removes detected tracks that live for 1-2 frames with a low score or on top of a lasting person.

    False detections flicker: a stray hit on the background, or a second, partial hit on a person
    already tracked (seen with BlazePose's detector over tiles on a synthetic walk: 10 such boxes in
    40 frames). A short detected track goes when its mean person score is low, or when on one of its
    frames its joints' box lies mostly (`DUPLICATE_OVERLAP` of the smaller box) on the box of a longer
    track (the joints, not its person box: a detected box reaches past the joints to hands, feet and
    head top, and a partial hit's box can stick out of the person it sits on). A detector track that lies so
    on one longer track on every frame it has goes too, unless it holds a pose of its own (`_riders`).

    Args:
        persons: frame -> predicted persons (``extra["box_source"]`` says where the box came from).
        short: tracks on at most this many frames are candidates...
        min_span: ...when at least this many frames were predicted (on fewer, see `_lies_on`)...
        min_score: ...and they go when their mean person score is below this (or they sit on a longer track).

    Returns:
        The same mapping without those tracks' persons, and without detected boxes in which the
        landmark model sees nobody, on any number of frames (`_empty`). With fewer than `min_span`
        frames, tracks are not judged; a detected box lying on a surer one is dropped instead (`_lies_on`).
    """
    gap_filled = _detector_tracks(persons)
    persons = {f: [p for p in people if not _empty(p, gap_filled)] for f, people in persons.items()}
    if len(persons) < min_span:  # too few frames to judge tracks: judge the boxes of each frame
        return {f: [p for p in people if not any(_lies_on(p, q) for q in people)] for f, people in persons.items()}
    scores: dict[int, list[float]] = {}
    for people in persons.values():
        for p in people:
            if p.track_id is not None and p.extra.get("box_source") == "detected":
                scores.setdefault(p.track_id, []).append(p.score or 0.0)
    frames_of: dict[int, int] = {}
    for people in persons.values():
        for p in people:
            if p.track_id is not None:
                frames_of[p.track_id] = frames_of.get(p.track_id, 0) + 1
    candidates = {t for t in scores if frames_of[t] <= short}
    drop = {t for t in candidates if float(np.mean(scores[t])) < min_score}
    for people in persons.values():
        for p in (p for p in people if p.track_id in candidates):
            if any(q.track_id not in candidates and _lies_on_box(p, q.box) for q in people):
                drop.add(p.track_id)
    drop |= _riders(persons)
    if drop:
        logger.debug("dropped %d flickering detected track(s): %s", len(drop), sorted(drop))
    return {f: [p for p in people if p.track_id not in drop] for f, people in persons.items()}


def _detector_tracks(persons: dict[int, list[Person]]) -> set[int]:
    """Tracks of the detector alone: detected on some frame, gap-filled (interpolated) on the others."""
    sources: dict[int, set[str]] = {}
    for people in persons.values():
        for p in people:
            if p.track_id is not None:
                sources.setdefault(p.track_id, set()).add(str(p.extra.get("box_source")))
    return {t for t, s in sources.items() if "detected" in s and s <= {"detected", "interpolated"}}


def _empty(p: Person, gap_filled: AbstractSet[int] = frozenset()) -> bool:
    """Whether `p` is a detected box, or a box filling a gap in a detector track (`gap_filled`), in which the
    landmark model sees nobody: its best `TOP_JOINTS` labelled joints average under `EMPTY_POSE`.

    The detector's hit was confirmed by a landmark pass on its own alignment, but the pass on the box
    that came of it can find nothing: a patch of a truck's load, a player's shorts, a 14x23 px speck
    (2 of 24 predictions on the real stills, 3 of 38 on the held-out images, each with no joint
    scoring 0.3). A single frame says as much as a track here, so this holds for one-frame requests too
    (Label Studio asks for one task at a time). The boxes filling a gap between two such detections go
    with them: with MoveNet, two boxes scoring 0.01 were left of a 57x39 px hit on a skier (a real still
    filmed as a 40-frame clip).
    """
    source = p.extra.get("box_source")
    if not (source == "detected" or (source == "interpolated" and p.track_id in gap_filled)) or p.scores is None:
        return False
    return pose_confidence(p.scores) < EMPTY_POSE


def _lies_on_box(p: Person, box: Box | None) -> bool:
    """Whether `p`'s joints (its box when it has none) lie on `box`, `DUPLICATE_OVERLAP` of the smaller
    box: the joints, as a detected box reaches past them to hands, feet and head top, and a partial
    hit's box can stick out of the person it sits on."""
    joints = p.keypoint_box() or p.box
    return box is not None and joints is not None and overlap_of_smaller(joints, box) >= DUPLICATE_OVERLAP


def _lies_on(p: Person, q: Person) -> bool:
    """On a request too short to judge tracks (one Label Studio task): whether `p` is a detected box
    whose joints lie on `q`'s box (`DUPLICATE_OVERLAP` of the smaller box) and whose person score is
    under `LOWER_SCORE` x q's.

    The short-track rule above tells a second hit from a person by how long it lasts. On a single frame,
    the second hit is told by its score: on a real broadcast clip, a box on a footballer's shorts with a
    shrunken pose in it scored 0.31 against his 0.49. Two players in one tackle scored 0.44 and 0.45, and
    so stay.
    """
    if q is p or p.extra.get("box_source") != "detected":
        return False
    return (p.score or 0.0) < LOWER_SCORE * (q.score or 0.0) and _lies_on_box(p, q.box)


def _riders(persons: dict[int, list[Person]]) -> set[int]:
    """Detector tracks whose joints lie on one longer track's box on every frame they have
    (`DUPLICATE_OVERLAP` of the smaller box) and that hold no pose of their own (`_own_pose`).

    A second hit on a person already tracked can last a few frames: on 3-person synthetic walks, the
    upper half of a near walker (4 frames) and a box on a walker's lower body at the frame edge (5
    frames, gap-filled). A person of their own lies on another only while crossing them, and one who
    stays in front of another for the whole clip has a track as long as theirs. A faint hit can last
    longer: with MoveNet, a box on a skier's arm, 11 of 40 frames of a real still filmed as a clip (tracks
    of up to 10 frames were judged until 2026-12-05).

    A person behind another can be found on fewer frames than them, though, and their box can lie
    within the other's on every one (a seated man behind a standing one, a couple in a crowd): such a
    track is kept when it holds a pose of its own (`_own_pose`). A second hit on a walker finds the
    walker's own joints in it (median 0.07-0.18 x the smaller box diagonal apart on a 3-person synthetic
    walk); the man behind on a real CrowdPose still lay 0.25-0.37 apart.
    """
    frames: dict[int, dict[int, Person]] = {}
    for f, people in persons.items():
        for p in people:
            if p.track_id is not None:
                frames.setdefault(p.track_id, {})[f] = p
    detector = _detector_tracks(persons)
    out = set()
    for t in detector:
        first = min(frames[t])
        for u in {q.track_id for q in persons[first]} - {t, None}:
            under = frames[u]
            if (len(under) > len(frames[t])
                    and all(f in under and _lies_on_box(p, under[f].box) for f, p in frames[t].items())
                    and not _own_pose(frames[t], under)):
                out.add(t)
                break
    return out


def _own_pose(track: dict[int, Person], under: dict[int, Person]) -> bool:
    """Whether `track` holds a pose of its own beside the track `under` it: on the frames where at least
    `OWN_POSE_JOINTS` labelled joints are sure (`MIN_SCORE`) in both, the median distance between those
    joints is `OWN_POSE` x the smaller box diagonal or more, on the median such frame; and the track's
    median person score is `OWN_POSE_SCORE` x that of `under` on the same frames or more. A share, as each
    backbone scores on its own scale: on the real stills filmed as clips, people behind others scored
    0.65-1.02 x the person in front with MoveNet (0.19-0.28) and 0.76-0.89 with BlazePose (0.36-0.43);
    faint hits whose poses lay apart as well, on a skier's arm, back and skis, 0.24-0.44 (BlazePose)
    and 0.35 (MoveNet)."""
    own = float(np.median([p.score or 0.0 for p in track.values()]))
    front = float(np.median([under[f].score or 0.0 for f in track]))
    if own < OWN_POSE_SCORE * front:
        return False
    apart = [d for f, p in track.items() if (d := _pose_distance(p, under[f])) is not None]
    return bool(apart) and float(np.median(apart)) >= OWN_POSE


def _pose_distance(p: Person, q: Person) -> float | None:
    """Median distance of the labelled joints sure in both persons, x the smaller box diagonal; None when
    fewer than `OWN_POSE_JOINTS` are, or a box is missing."""
    if p.scores is None or q.scores is None or p.box is None or q.box is None:
        return None
    sure, gap = pose_gap(p.keypoints, p.scores, p.box, q.keypoints, q.scores, q.box)
    return gap if sure >= OWN_POSE_JOINTS and np.isfinite(gap) else None

