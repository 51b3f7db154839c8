"""Compare predicted persons with the human-corrected ones, joint by joint.

Pure functions on `annotation_io.types.Person` (pixel coordinates): no database, no Label Studio.

`compare` pairs each predicted person with a final (human) person, first by region id (Label Studio
keeps a predicted box's id on the region the annotator left, moved or retyped the track id of), then
by track id, then greedily by similarity (box IoU, or keypoint closeness when the boxes do not
overlap), and classifies every joint slot:

- kept: placed by the model and left where it was (distance <= `kept_tolerance_px`; Label Studio's
  percent round trip moves points by ~1e-4 px, so exact equality is too strict);
- moved: placed by the model and dragged elsewhere (with the distance in pixels);
- deleted: placed by the model, absent from the final person (or the whole person was removed);
- added: absent from the prediction, placed by hand (or the whole person was drawn by hand).

A joint is placed when its v > 0 (for labels v = 1, occluded, counts as placed). The head size is
poseval's, 0.6 x the final person's head-box diagonal, when that person has a head box.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from annotation_io.evaluate import HEAD_SIZE_FACTOR
from annotation_io.skeletons import LABELLED_SLOTS, NUM_KEYPOINTS
from annotation_io.types import Box, Person
from backend.db.tables import CorrectionKind

logger = logging.getLogger(__name__)


DEFAULT_KEPT_TOLERANCE_PX = 0.5
# Pairs less similar than this are not the same person (one was deleted, the other drawn by hand).
DEFAULT_MIN_SIMILARITY = 0.1


@dataclass(frozen=True)
class CorrectionRow:
    """What happened to one joint of one person between prediction and final annotation.

    Attributes:
        joint: slot in the 17-slot PoseTrack order.
        kind: kept, moved, deleted or added.
        track_id: the final person's track id, else the predicted one's.
        pred_x, pred_y: predicted position (None for added).
        final_x, final_y: final position (None for deleted).
        distance_px: distance between the two (None unless kept or moved).
        head_size_px: 0.6 x final head-box diagonal when known.
    """

    joint: int
    kind: CorrectionKind
    track_id: int | None = None
    pred_x: float | None = None
    pred_y: float | None = None
    final_x: float | None = None
    final_y: float | None = None
    distance_px: float | None = None
    head_size_px: float | None = None


def head_size(person: Person) -> float | None:
    """poseval's head size of a person (0.6 x head-box diagonal); None without a head box."""
    if person.head_box is None:
        return None
    return HEAD_SIZE_FACTOR * float(math.hypot(person.head_box.w, person.head_box.h))


def _check_finite(person: Person, role: str, index: int) -> None:
    bad = person.present & ~np.isfinite(person.xy).all(axis=1)
    if bad.any():
        joints = [int(j) for j in np.flatnonzero(bad)]
        raise ValueError(
            f"{role} person {index} (track {person.track_id}): joints {joints} are placed but not finite"
        )


def _outline(person: Person) -> Box | None:
    return person.box if person.box is not None else person.keypoint_box()


def similarity(a: Person, b: Person) -> float:
    """How likely two persons are the same, in [0, 1].

    The larger of the box IoU (person box, else the tight keypoint box) and a keypoint closeness,
    1 - mean distance of the joints both place / diagonal of `b`'s outline (0 when none in common).
    """
    box_a, box_b = _outline(a), _outline(b)
    iou = box_a.iou(box_b) if box_a is not None and box_b is not None else 0.0
    common = a.present & b.present
    closeness = 0.0
    if common.any() and box_b is not None:
        diag = math.hypot(box_b.w, box_b.h)
        if diag > 0:
            mean = float(np.linalg.norm(a.xy[common] - b.xy[common], axis=1).mean())
            closeness = max(0.0, 1.0 - mean / diag)
    return max(iou, closeness)


def match_persons(
    predicted: Sequence[Person], final: Sequence[Person], *, min_similarity: float = DEFAULT_MIN_SIMILARITY
) -> list[tuple[int, int]]:
    """Pairs (predicted index, final index): the same region, then equal track ids, then greedy on similarity.

    The same region: equal region ids (the box id Label Studio keeps when the annotator edits a predicted
    person) and at least `min_similarity` alike. It comes before the track id, so that an annotator
    who swaps two persons' track ids (an identity switch fixed) does not pair each prediction with the
    other person, every joint "moved" by the distance between them.
    """
    pairs: list[tuple[int, int]] = []
    used_p: set[int] = set()
    used_f: set[int] = set()
    for i, p in enumerate(predicted):
        if p.region_id is None:
            continue
        j = next((j for j, f in enumerate(final) if j not in used_f and f.region_id == p.region_id), None)
        if j is not None and similarity(p, final[j]) >= min_similarity:
            pairs.append((i, j))
            used_p.add(i)
            used_f.add(j)
    for i, p in enumerate(predicted):
        if p.track_id is None or i in used_p:
            continue
        for j, f in enumerate(final):
            if j not in used_f and f.track_id == p.track_id:
                pairs.append((i, j))
                used_p.add(i)
                used_f.add(j)
                break
    candidates = [
        (similarity(p, f), i, j)
        for i, p in enumerate(predicted)
        if i not in used_p
        for j, f in enumerate(final)
        if j not in used_f
    ]
    # Most similar first; ties broken by position so the result does not depend on set order.
    for sim, i, j in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
        if sim < min_similarity:
            break
        if i in used_p or j in used_f:
            continue
        pairs.append((i, j))
        used_p.add(i)
        used_f.add(j)
    return sorted(pairs)


def _joint_rows(
    pred: Person | None, fin: Person | None, joints: Sequence[int], tolerance: float
) -> list[CorrectionRow]:
    track = (
        fin.track_id if fin is not None and fin.track_id is not None else (pred.track_id if pred else None)
    )
    head = head_size(fin) if fin is not None else None
    # Per person once, not per joint: which joints are placed, and the coordinates as plain floats.
    placed_p, xy_p = (pred.present.tolist(), pred.xy.tolist()) if pred is not None else ([], [])
    placed_f, xy_f = (fin.present.tolist(), fin.xy.tolist()) if fin is not None else ([], [])
    rows: list[CorrectionRow] = []
    for j in joints:
        has_p = bool(placed_p) and placed_p[j]
        has_f = bool(placed_f) and placed_f[j]
        px, py = xy_p[j] if has_p else (None, None)
        fx, fy = xy_f[j] if has_f else (None, None)
        if has_p and has_f:
            dist = float(math.hypot(fx - px, fy - py))  # type: ignore[operator]
            kind: CorrectionKind = "kept" if dist <= tolerance else "moved"
            rows.append(CorrectionRow(j, kind, track, px, py, fx, fy, dist, head))
        elif has_p:
            rows.append(CorrectionRow(j, "deleted", track, px, py, None, None, None, head))
        elif has_f:
            rows.append(CorrectionRow(j, "added", track, None, None, fx, fy, None, head))
    return rows


def compare(
    predicted: Sequence[Person],
    final: Sequence[Person],
    *,
    kept_tolerance_px: float = DEFAULT_KEPT_TOLERANCE_PX,
    joints: Sequence[int] = LABELLED_SLOTS,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
) -> list[CorrectionRow]:
    """Per-joint comparison of what the model proposed with what the annotator submitted.

    Args:
        predicted: persons of the prediction the annotation started from (may be empty).
        final: persons of the submitted annotation.
        kept_tolerance_px: a joint that moved at most this far counts as kept.
        joints: slots to compare; by default the 15 PoseTrack labels (ears are never labelled,
            so a predicted ear would always count as deleted).
        min_similarity: pairs below this similarity are not matched (see `similarity`).

    Returns:
        One row per compared slot that either side places: matched pairs first (in predicted
        order), then unmatched predicted persons (deleted), then unmatched final ones (added).

    Raises:
        ValueError: a negative tolerance, a slot outside 0..16, or a placed joint that is NaN/inf.
    """
    if not kept_tolerance_px >= 0:
        raise ValueError(f"kept_tolerance_px must be >= 0, got {kept_tolerance_px}")
    bad = [j for j in joints if not 0 <= int(j) < NUM_KEYPOINTS]
    if bad:
        raise ValueError(f"joint slots must be in 0..{NUM_KEYPOINTS - 1}, got {bad}")
    for role, persons in (("predicted", predicted), ("final", final)):
        for i, person in enumerate(persons):
            _check_finite(person, role, i)
    pairs = match_persons(predicted, final, min_similarity=min_similarity)
    rows: list[CorrectionRow] = []
    for i, j in pairs:
        rows.extend(_joint_rows(predicted[i], final[j], joints, kept_tolerance_px))
    matched_p = {i for i, _ in pairs}
    matched_f = {j for _, j in pairs}
    for i, p in enumerate(predicted):
        if i not in matched_p:
            rows.extend(_joint_rows(p, None, joints, kept_tolerance_px))
    for j, f in enumerate(final):
        if j not in matched_f:
            rows.extend(_joint_rows(None, f, joints, kept_tolerance_px))
    return rows
