"""The real-stills figures: limb joints within 0.1 x the annotated box diagonal, people found.

Each annotated person is matched to one prediction by optimal assignment on correct-joint counts (an
unmatched person counts as a miss), as the data README asks; `model.bench.real` (stills) and
`model.bench.real_clips` (the stills filmed by a moving camera) score with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from annotation_io.types import Frame

__all__ = ["LIMB_SLOTS", "RealScore", "score_frame"]

LIMB_SLOTS = np.arange(5, 17)  # shoulders .. ankles


@dataclass
class RealScore:
    """Counts over images: limb joints right / annotated, people found (>= 1 / >= half), predictions."""

    joints_ok: int = 0
    joints: int = 0
    found: int = 0
    found_half: int = 0
    people: int = 0
    predictions: int = 0
    ap: float = float("nan")
    within_pckh: float = float("nan")
    seconds: float = 0.0
    per_image: dict[str, str] = field(default_factory=dict)

    def add(self, other: RealScore) -> None:
        for name in ("joints_ok", "joints", "found", "found_half", "people", "predictions"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def within(self) -> float:
        """Limb joints within 0.1 x box diagonal, %."""
        return 100.0 * self.joints_ok / max(self.joints, 1)


def score_frame(gt: Frame, pred: Frame | None) -> RealScore:
    """Scores one image: optimal one-to-one matching of annotated people to predictions."""
    from scipy.optimize import linear_sum_assignment  # lazy: only the benchmark needs scipy

    gts = [p for p in gt.persons if p.box is not None]
    preds = [p for p in (pred.persons if pred is not None else [])]
    correct = np.zeros((len(gts), len(preds)), dtype=int)
    n = np.zeros(len(gts), dtype=int)
    for g, person in enumerate(gts):
        labelled = person.keypoints[LIMB_SLOTS, 2] > 0
        n[g] = int(labelled.sum())
        thr = 0.1 * float(np.hypot(person.box.w, person.box.h))
        for j, other in enumerate(preds):
            placed = other.keypoints[LIMB_SLOTS, 2] > 0
            d = np.linalg.norm(other.keypoints[LIMB_SLOTS, :2] - person.keypoints[LIMB_SLOTS, :2], axis=1)
            correct[g, j] = int(((d <= thr) & labelled & placed).sum())
    score = RealScore(joints=int(n.sum()), people=len(gts), predictions=len(preds))
    if preds and gts:
        rows, cols = linear_sum_assignment(-correct)
        best = np.zeros(len(gts), dtype=int)
        best[rows] = correct[rows, cols]
        score.joints_ok = int(best.sum())
        score.found = int((best > 0).sum())
        score.found_half = int(((best > 0) & (2 * best >= n)).sum())
    return score
