"""The promotion gate: score model versions on held-out frames and decide whether a candidate serves.

A version is scored by predicting the held-out frames exactly as the service would, through
`model.pipeline.predictor.Predictor`, with these choices so that the comparison is fair and cheap:

- the person boxes are the human ones of the held-out frames (the keypoints are withheld), so both
  versions see the same crops and no detector runs;
- ``exact`` mode (the three frames cropped with the current frame's box, as training crops them)
  and label-aware refinement off, so the score measures the network and not the labels;
- the neighbours come from the video's frame readers as in serving (backbone-only versions need
  none).

Figures come from the project's evaluator, `annotation_io.evaluate`: poseval mAP ("Total") and the
share of predicted keypoints within PCKh@0.5 of the annotation. Label Studio annotations carry no
head box, which poseval's head size needs; `with_head_boxes` gives each such person a square head
box derived from its head joints (see there), the same for every version, so comparisons hold.

`decide` promotes a candidate only if its mAP beats the serving version's by at least `margin` mAP
points (`PROMOTE_MARGIN`); a candidate scored on no held-out person is never promoted.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from annotation_io.evaluate import EvaluationError, evaluate
from annotation_io.jsonio import finite_json
from annotation_io.skeletons import KEYPOINT_INDEX
from annotation_io.types import Box, Frame, Person, Video
from backend.db import versions
from backend.db.queries import NotFoundError

logger = logging.getLogger(__name__)

__all__ = [
    "GateDecision",
    "HoldoutFrames",
    "VersionScore",
    "decide",
    "score_version",
    "with_head_boxes",
]

HEAD_TOP = KEYPOINT_INDEX["head_top"]
HEAD_BOTTOM = KEYPOINT_INDEX["head_bottom"]
NOSE = KEYPOINT_INDEX["nose"]
# A standing adult's head is about 1/8 of the body height: the fallback head box side when the
# head joints are missing (box height, else the joints' extent).
HEAD_FRACTION_OF_HEIGHT = 1.0 / 8.0
_BOX_GROWTH = 1.2  # persons without a box are cropped with their joints' box grown by 20% (as build_samples)


class GateError(ValueError):
    """The gate cannot score a version (no held-out person, unreadable frames); says what is missing."""


# ----------------------------------------------------------------------------------------- data


def _head_box(person: Person) -> Box | None:
    """A square head box for a person without one (None when nothing locates the head).

    With head_top and head_bottom placed: centred between them, side = their distance (PoseTrack's
    head boxes span the head from crown to chin). Otherwise a square of 1/8 of the person's height
    (its box, else its joints' extent) centred on the nose or head joint that is placed, else on
    the top centre of the box.
    """
    present = person.present
    xy = person.xy
    if present[HEAD_TOP] and present[HEAD_BOTTOM]:
        side = float(np.linalg.norm(xy[HEAD_TOP] - xy[HEAD_BOTTOM]))
        if side > 0:
            cx, cy = (xy[HEAD_TOP] + xy[HEAD_BOTTOM]) / 2.0
            return Box(float(cx) - side / 2, float(cy) - side / 2, side, side)
    outline = person.box if person.box is not None else person.keypoint_box()
    if outline is None or outline.h <= 0:
        return None
    side = HEAD_FRACTION_OF_HEIGHT * outline.h
    for joint in (NOSE, HEAD_TOP, HEAD_BOTTOM):
        if present[joint]:
            cx, cy = (float(v) for v in xy[joint])
            break
    else:
        cx, cy = outline.center[0], outline.y + side / 2
    return Box(cx - side / 2, cy - side / 2, side, side)


def with_head_boxes(video: Video) -> Video:
    """A copy of a labelled video where every person with joints has a head box (derived if missing).

    Persons whose head cannot be located at all (no joints, no box) are dropped: poseval cannot
    score them.
    """
    frames = []
    for frame in video.frames:
        persons = []
        for person in frame.persons:
            if not person.present.any():
                continue
            if person.head_box is None:
                head = _head_box(person)
                if head is None:
                    continue
                person = replace(person.copy(), head_box=head)
            persons.append(person)
        frames.append(replace(frame, persons=persons))
    return replace(video, frames=frames)


def _crop_box(person: Person) -> Box | None:
    if person.box is not None and person.box.w > 0 and person.box.h > 0:
        return person.box
    tight = person.keypoint_box()
    return tight.expand(_BOX_GROWTH) if tight is not None and tight.w > 0 and tight.h > 0 else None


@dataclass(frozen=True)
class HoldoutFrames:
    """The held-out frames the gate scores on.

    Attributes:
        gt: video name -> Video holding only the held-out frames (human persons, head boxes set).
        known: the same frames with the persons reduced to box and track (what the predictor gets).
        readers: video name -> frame reader (`model.training.samples.FrameReader`) over the whole video.
    """

    gt: dict[str, Video]
    known: dict[str, Video]
    readers: Mapping[str, Any]

    @property
    def persons(self) -> int:
        return sum(len(f.persons) for v in self.gt.values() for f in v.frames)

    @property
    def frames(self) -> int:
        return sum(len(v.frames) for v in self.gt.values())

    @classmethod
    def build(
        cls, videos: Mapping[str, Video], frames: Mapping[str, Sequence[int]], readers: Mapping[str, Any]
    ) -> HoldoutFrames:
        """Held-out frames `frames` (video name -> frame indices) of the labelled `videos`.

        Raises:
            GateError: a video without a reader, or a frame that is not labelled in `videos`.
        """
        gt: dict[str, Video] = {}
        known: dict[str, Video] = {}
        for name in sorted(frames):
            wanted = sorted({int(i) for i in frames[name]})
            if not wanted:
                continue
            if name not in videos:
                raise GateError(f"held-out video {name!r} is not among the labelled videos")
            if name not in readers:
                raise GateError(f"no frame reader for held-out video {name!r}")
            by_index = videos[name].frame_map()
            missing = [i for i in wanted if i not in by_index]
            if missing:
                raise GateError(f"held-out frames {missing[:10]} of video {name!r} carry no labels")
            labelled = with_head_boxes(replace(videos[name], frames=[by_index[i] for i in wanted]))
            kept: list[Frame] = []
            boxes: list[Frame] = []
            for frame in labelled.frames:
                persons = [p for p in frame.persons if _crop_box(p) is not None]
                kept.append(replace(frame, persons=persons, is_labeled=True))
                boxes.append(
                    Frame(frame.index, [Person(track_id=p.track_id, box=_crop_box(p)) for p in persons])
                )
            gt[name] = replace(labelled, frames=kept)
            known[name] = replace(labelled, frames=boxes)
        return cls(gt=gt, known=known, readers=readers)


# ----------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class VersionScore:
    """How one version does on the held-out frames.

    Attributes:
        version: the version's name.
        map: poseval mAP (%) over the 15 PoseTrack joints.
        within_pckh: share (%) of predicted keypoints within PCKh@0.5 of the annotation.
        frames: held-out frames scored.
        persons: held-out persons scored.
        seconds: time spent predicting and evaluating.
        groups: mAP per joint group (Head .. Ankle, Total).
    """

    version: str
    map: float
    within_pckh: float
    frames: int
    persons: int
    seconds: float = 0.0
    groups: dict[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return finite_json(
            {
                "version": self.version,
                "map": round(float(self.map), 4),
                "within_pckh": round(float(self.within_pckh), 4),
                "frames": self.frames,
                "persons": self.persons,
                "seconds": round(self.seconds, 3),
                "groups": {k: None if v is None else round(float(v), 4) for k, v in self.groups.items()},
            }
        )


def score_version(predictor_for: Any, holdout: HoldoutFrames, *, version: str) -> VersionScore:
    """Predict the held-out frames with a version and evaluate them.

    Args:
        predictor_for: callable(video name) -> `model.pipeline.predictor.Predictor` of the version for that
            video (a simulated backbone must be bound to the video; real backbones ignore the name).
        holdout: the held-out frames.
        version: the version's name (for the record).

    Raises:
        GateError: no held-out person to score on.
    """
    if holdout.persons == 0:
        raise GateError("no held-out person to score on: label more frames (the gate holds out ~20%)")
    t0 = time.perf_counter()
    preds: dict[str, Video] = {}
    for name, gt in holdout.gt.items():
        predictor = predictor_for(name)
        indices = [f.index for f in gt.frames]
        preds[name] = predictor.predict_video(
            gt, holdout.known[name], frames=indices, reader=holdout.readers[name]
        )
    try:
        result = evaluate(holdout.gt, preds)
    except EvaluationError as exc:  # a bug of ours: with_head_boxes gave every person a head box
        raise GateError(f"held-out evaluation of {version} failed: {exc}") from exc
    score = VersionScore(
        version=version,
        map=float(result.total),
        within_pckh=float(result.within_total),
        frames=holdout.frames,
        persons=holdout.persons,
        seconds=time.perf_counter() - t0,
        groups=finite_json({k: float(v) for k, v in result.groups.items()}),
    )
    logger.info(
        "gate: %s on %d held-out frames (%d persons): mAP %.2f, within PCKh@0.5 %.1f%% (%.1f s)",
        version,
        score.frames,
        score.persons,
        score.map,
        score.within_pckh,
        score.seconds,
    )
    return score


# ----------------------------------------------------------------------------------------- decision


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on a candidate.

    Attributes:
        promote: serve the candidate.
        candidate: its held-out figures.
        serving: the serving version's figures on the same frames.
        margin: mAP points the candidate had to gain.
        reason: one line saying why.
    """

    promote: bool
    candidate: VersionScore
    serving: VersionScore
    margin: float
    reason: str

    @property
    def delta(self) -> float:
        """Candidate mAP minus serving mAP (points)."""
        return self.candidate.map - self.serving.map

    def to_json(self) -> dict[str, Any]:
        return finite_json(
            {
                "promote": self.promote,
                "candidate": self.candidate.to_json(),
                "serving": self.serving.to_json(),
                "margin": self.margin,
                "delta_map": round(self.delta, 4),
                "reason": self.reason,
            }
        )


def decide(candidate: VersionScore, serving: VersionScore, *, margin: float) -> GateDecision:
    """Promote when candidate mAP >= serving mAP + margin (both finite); else keep serving.

    Raises:
        ValueError: a negative or non-finite margin.
    """
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"the promotion margin must be a finite number >= 0 (mAP points), got {margin!r}")
    if not math.isfinite(candidate.map):
        return GateDecision(
            False,
            candidate,
            serving,
            margin,
            f"candidate {candidate.version} has no mAP on the held-out frames",
        )
    if not math.isfinite(serving.map):
        return GateDecision(
            True, candidate, serving, margin, f"serving {serving.version} has no mAP on the held-out frames"
        )
    delta = candidate.map - serving.map
    if delta >= margin:
        reason = (
            f"candidate {candidate.version} mAP {candidate.map:.2f} beats serving {serving.version} "
            f"{serving.map:.2f} by {delta:+.2f} >= {margin:.2f} points"
        )
        return GateDecision(True, candidate, serving, margin, reason)
    reason = (
        f"candidate {candidate.version} mAP {candidate.map:.2f} vs serving {serving.version} "
        f"{serving.map:.2f}: {delta:+.2f} < required {margin:.2f} points"
    )
    return GateDecision(False, candidate, serving, margin, reason)


# ----------------------------------------------------------------------------------------- the run's gate


def evaluate_candidate(backbone: Any, candidate_head: Any, serving_head: Any | None, holdout: HoldoutFrames, *,
                       candidate: str, serving: str, margin: float, device: str = "cpu") -> GateDecision:  # fmt: skip
    """Scores a trained head and the serving model (its head, or the backbone alone) and decides.

    Args:
        backbone: the frozen backbone both versions run on (`model.backbones.base.Backbone`).
        candidate_head: the trained DCPose head.
        serving_head: the serving version's head; None when it is backbone-only.
        holdout: the held-out frames.
        candidate, serving: version names.
        margin: PROMOTE_MARGIN, mAP points.
        device: where the heads run.
    """
    from model.backbones.base import bind_video
    from model.pipeline.config import InferConfig
    from model.pipeline.predictor import Predictor

    config = InferConfig(mode="exact", label_aware=False, detect=False)

    def predictor(head: Any, version: str) -> Any:
        return lambda video: Predictor(bind_video(backbone, video), head, device=device, config=config,
                                       head_version=version)  # fmt: skip

    cand = score_version(predictor(candidate_head, candidate), holdout, version=candidate)
    base = score_version(predictor(serving_head, serving), holdout, version=serving)
    decision = decide(cand, base, margin=margin)
    logger.info("gate: %s", decision.reason)
    return decision


def apply_decision(session: Any, decision: GateDecision, *, candidate: str, project_id: int,
                   backbone_version: str) -> str:  # fmt: skip
    """Records the verdict on the candidate and promotes or rejects it (`backend.db.versions.apply_gate_verdict`).

    Call in ONE transaction. Returns "promoted", "rejected" or "candidate" (the serving version
    changed while the candidate trained).

    Raises:
        GateError: the candidate is not registered.
    """
    try:
        return versions.apply_gate_verdict(
            session=session, candidate=candidate, project_id=project_id, promote=decision.promote,
            judged_against=decision.serving.version, gate=decision.to_json(), holdout=decision.candidate.to_json(),
            baseline_holdout=decision.serving.to_json(), backbone_version=backbone_version,
        )  # fmt: skip
    except NotFoundError:
        raise GateError(f"candidate {candidate!r} is not registered") from None
