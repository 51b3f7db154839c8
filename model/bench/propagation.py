"""The `propagation` section of `python -m model bench-video`: label propagation against the backbone and the head.

On the synthetic test videos, with human labels every 4 and every 8 frames, it scores the unlabelled
frames (poseval mAP and % of keypoints within PCKh@0.5, `annotation_io.evaluate`) for:

- **backbone only**: the predictor at cold start with propagation and the temporal median off (the backbone
  frame by frame);
- **backbone + temporal median**: the same with the temporal median of model-placed joints on (the default,
  `model.pipeline.smoothing`);
- **propagation only**: the labels carried by optical flow alone (`model.pipeline.propagation.propagate`);
  joints no label reaches are left out;
- **propagation + backbone**: the cold-start predictor with propagation on (the default);
- **head + propagation**: a head trained on the training videos (neighbour labels fed as label heatmaps
  half of the time), label-aware, with propagation on.

Each runs with the simulated backbone (`model.testing.simulated`: ground truth corrupted like a real
backbone) and with the real BlazePose on the rendered frames; the rows say which. The cost row is the
time per person-frame of the cold-start predictor with BlazePose, propagation on vs off, measured side by
side in one run (interleaved repeats, the fastest counting).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from annotation_io.evaluate import evaluate
from annotation_io.synth import sparsify
from annotation_io.types import Frame, Person, Video

logger = logging.getLogger(__name__)

__all__ = ["PropagationCost", "PropagationRow", "format_propagation", "propagation_only"]

VARIANTS = ("backbone only", "backbone + temporal median", "propagation only", "propagation + backbone",
            "head + propagation")


@dataclass
class PropagationRow:
    """One (backbone, label spacing, variant) on the unlabelled test frames."""

    backbone: str  # "simulated" or "blazepose (real, rendered frames)"
    label_every: int
    variant: str
    map: float
    within: float
    frames: int


@dataclass
class PropagationCost:
    """Cold-start predictor time per person-frame with propagation off and on (one run, side by side)."""

    backbone: str
    person_frames: int
    off_ms: float
    on_ms: float

    @property
    def ratio(self) -> float:
        return self.on_ms / self.off_ms if self.off_ms > 0 else math.nan


def propagation_only(gt: Video, known: Video, reader: Any, frames: list[int]) -> Video:
    """The known labels carried by optical flow to `frames` (`propagate_people`; no backbone)."""
    import cv2

    from model.pipeline.propagation import propagate_people

    grays: dict[int, np.ndarray] = {}

    def gray(i: int) -> np.ndarray:
        if i not in grays:
            grays[i] = cv2.cvtColor(np.asarray(reader.read(i)), cv2.COLOR_BGR2GRAY)
        return grays[i]

    labels: dict[int, dict[int, np.ndarray]] = {}
    for frame in known.frames:
        for p in frame.persons:
            if p.track_id is not None and p.present.any():
                labels.setdefault(p.track_id, {})[frame.index] = p.keypoints
    out: dict[int, list[Person]] = {f: [] for f in frames}
    carried = propagate_people(gray, labels, {tid: frames for tid in labels}, num_frames=gt.num_frames)
    for tid, track in carried.items():
        for f, prop in track.items():
            kps = np.zeros((len(prop.xy), 3))
            placed = prop.conf > 0
            kps[placed, :2], kps[placed, 2] = prop.xy[placed], 2.0
            out[f].append(Person(kps, prop.conf.copy(), tid, None, None, float(prop.conf.mean())))
    return replace(gt, frames=[Frame(f, out[f]) for f in frames])


def _unlabelled(gt: Video, every: int) -> tuple[Video, list[int]]:
    frames = [f.index for f in gt.frames if f.index % every]
    return replace(gt, frames=[f for f in gt.frames if f.index % every]), frames


def score_variants(name: str, test: dict[str, Video], open_reader: Callable[[str], Any],
                   predict: Callable[..., Video], head: Any, every: int) -> list[PropagationRow]:
    """The variants (`VARIANTS`) for one backbone and one label spacing.

    Args:
        name: the backbone as the rows name it.
        test: test video name -> ground truth.
        open_reader: video name -> frame reader (closed here).
        predict: (video name, template, known, reader, frames, head, **InferConfig fields) -> output Video.
        head: the trained head for "head + propagation".
        every: label spacing.
    """
    rows = []
    gts = {k: _unlabelled(gt, every)[0] for k, gt in test.items()}
    settings: dict[str, tuple[Any, dict[str, Any]]] = {
        "backbone only": (None, {"propagate": False, "temporal_median": False}),
        "backbone + temporal median": (None, {"propagate": False}),
        "propagation + backbone": (None, {"propagate": True}),
        "head + propagation": (head, {"propagate": True, "label_aware": True}),
    }
    for variant in VARIANTS:
        outs = {}
        for key, gt in test.items():
            known = sparsify(gt, every)
            frames = _unlabelled(gt, every)[1]
            reader = open_reader(key)
            try:
                if variant == "propagation only":
                    outs[key] = propagation_only(gt, known, reader, frames)
                else:
                    net, cfg = settings[variant]
                    template = replace(gt, frames=[Frame(f.index, [], False) for f in gt.frames])
                    outs[key] = predict(key, template, known, reader, frames, net, **cfg)
            finally:
                reader.close()
        ev = evaluate(gts, outs)
        rows.append(PropagationRow(name, every, variant, ev.total, ev.within_total, ev.n_frames))
        logger.info("%s, labels every %d, %s: mAP %.1f, within %.1f%%", name, every, variant, ev.total,
                    ev.within_total)
    return rows


def time_propagation(name: str, test: dict[str, Video], open_reader: Callable[[str], Any],
                     predict: Callable[..., Video], every: int, repeats: int) -> PropagationCost:
    """ms per person-frame of the cold-start predictor, propagation off vs on (interleaved, fastest)."""
    best = {False: math.inf, True: math.inf}
    pf = 0
    for _ in range(repeats):
        for on in (False, True):
            took, pf = 0.0, 0
            for key, gt in test.items():
                known = sparsify(gt, every)
                frames = _unlabelled(gt, every)[1]
                template = replace(gt, frames=[Frame(f.index, [], False) for f in gt.frames])
                reader = open_reader(key)
                t0 = time.perf_counter()
                out = predict(key, template, known, reader, frames, None, propagate=on)
                took += time.perf_counter() - t0
                reader.close()
                pf += sum(len(f.persons) for f in out.frames)
            best[on] = min(best[on], took)
    return PropagationCost(name, pf, 1000 * best[False] / max(pf, 1), 1000 * best[True] / max(pf, 1))


def format_propagation(rows: list[PropagationRow], costs: list[PropagationCost]) -> list[str]:
    """Report lines of the section."""
    lines = ["", "Propagation on unlabelled test frames (mAP and % of keypoints within PCKh@0.5)",
             f"{'backbone':<34} {'labels':>6} {'variant':<26} {'mAP':>6} {'within':>7} {'frames':>6}"]
    for r in rows:
        lines.append(f"{r.backbone:<34} {'1/' + str(r.label_every):>6} {r.variant:<26} {r.map:>6.1f} "
                     f"{r.within:>7.1f} {r.frames:>6}")
    for c in costs:
        lines.append(f"cost, {c.backbone}: {c.off_ms:.0f} ms/person-frame without propagation, {c.on_ms:.0f} with "
                     f"({c.ratio:.2f}x; goal <= 1.20) over {c.person_frames} person-frames")
    return lines
