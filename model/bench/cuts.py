"""`python -m model bench-real --cuts`: footage that cuts from one shot to another, with and without cut finding.

Each pair of the real stills (in name order: the 1st and 2nd, the 3rd and 4th, ...) becomes one video of
two shots (`two_shot_clip`): the first photograph filmed by the moving camera of `model.bench.real_clips`
for `SHOT_FRAMES` frames, then a cut to the second, filmed as long at the first's frame size.
The predictor runs on each video with `InferConfig.shot_cuts` off and on (`model.pipeline.shots`), in
three settings:

- **labels, own ids**: human labels every 8 frames, each shot's people with ids of their own;
- **labels, ids again**: the same labels, both shots numbering their people from 0, as an annotator
  who starts each shot afresh would (a track id then names one person before the cut and another after);
- **no labels**: the person detector and following alone.

Printed per setting: the share of annotated limb joints within 0.1 x box diagonal on the unlabelled
frames (`model.bench.real_score.score_frame`), the person-frames found with at least half of them, the
predicted person-frames against the annotated ones (a person carried across the cut is one more), the
track ids predicted on both sides of a cut (no labels: any; with labels: those no label gives), and
the cuts `find_cuts` finds against the cuts there are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from annotation_io.types import Frame, Video
from model.bench.real_clips import ClipReader, camera_clip
from model.bench.real_score import RealScore, score_frame
from model.pipeline.shots import find_cuts

logger = logging.getLogger(__name__)

__all__ = ["CutRow", "format_cuts", "run_cut_bench", "two_shot_clip"]

SHOT_FRAMES = 12
LABEL_EVERY = 8
SETTINGS = ("labels, own ids", "labels, ids again", "no labels")
OWN_IDS = 100  # the second shot's people are numbered from here in "labels, own ids"


@dataclass
class CutRow:
    """One setting, with cut finding off or on, over all two-shot videos."""

    setting: str
    shot_cuts: bool
    within: float  # limb joints within 0.1 x box diagonal, %, on the unlabelled frames ...
    joints_ok: int  # ... that many ...
    joints: int  # ... of these
    found: int  # person-frames with at least half their limb joints placed
    person_frames: int  # annotated person-frames (unlabelled frames)
    predictions: int  # predicted person-frames
    ids_across: int  # predicted track ids on both sides of a cut (label ids left out)
    cuts_found: int  # cuts find_cuts finds on the videos ...
    cuts: int  # ... of these


def two_shot_clip(first: tuple[Video, np.ndarray], second: tuple[Video, np.ndarray], frames: int = SHOT_FRAMES,
                  second_ids_from: int = 0) -> tuple[Video, ClipReader]:  # fmt: skip
    """Two stills (one-frame truth and BGR image each) filmed by the moving camera for `frames` frames each,
    the second after a cut at frame `frames` and filmed at the first's frame size; the second shot's people
    get track ids from `second_ids_from` on (the first's from 0)."""
    a, a_reader = camera_clip(*first, frames)
    b, b_reader = camera_clip(*second, frames, size=(a.width, a.height))
    shifted = [Frame(f.index + frames, [replace(p, track_id=p.track_id + second_ids_from) for p in f.persons],
                     is_labeled=True) for f in b.frames]  # fmt: skip
    video = Video(f"{first[0].name}+{second[0].name}", 2 * frames, list(a.frames) + shifted,
                  width=a.width, height=a.height)
    return video, ClipReader(a_reader.frames + b_reader.frames)


def _run(predictor: Any, clips: list[tuple[Video, ClipReader]], setting: str) -> CutRow:
    total, ids_across, cuts_found = RealScore(), 0, 0
    for gt, reader in clips:
        labelled = set() if setting == "no labels" else set(range(0, gt.num_frames, LABEL_EVERY))
        known = replace(gt, frames=[f for f in gt.frames if f.index in labelled]) if labelled else None
        template = replace(gt, frames=[Frame(f.index, [], False) for f in gt.frames])
        out = {f.index: f for f in predictor.predict_video(template, known, reader=reader).frames}
        for frame in gt.frames:
            if frame.index not in labelled:
                total.add(score_frame(frame, out.get(frame.index)))
        label_ids = set(known.track_ids()) if known is not None else set()
        sides = [{p.track_id for t, f in out.items() if (t < SHOT_FRAMES) == first for p in f.persons} - label_ids
                 for first in (True, False)]  # fmt: skip
        ids_across += len(sides[0] & sides[1])
        cuts_found += find_cuts(reader.read, range(gt.num_frames)) == [SHOT_FRAMES]
    return CutRow(setting, predictor.config.shot_cuts, total.within, total.joints_ok, total.joints, total.found_half,
                  total.people, total.predictions, ids_across, cuts_found, len(clips))


def run_cut_bench(predictor: Any, stills: list[tuple[Video, np.ndarray]]) -> list[CutRow]:
    """The settings (`SETTINGS`) on the two-shot videos of `stills`, cut finding off and on
    (`predictor.config.shot_cuts`, restored after)."""
    pairs = list(zip(stills[0::2], stills[1::2]))
    rows, config = [], predictor.config
    try:
        for setting in SETTINGS:
            clips = [two_shot_clip(a, b, second_ids_from=OWN_IDS if setting == "labels, own ids" else 0)
                     for a, b in pairs]  # fmt: skip
            for on in (False, True):
                predictor.config = replace(config, shot_cuts=on)
                rows.append(_run(predictor, clips, setting))
                logger.info("cuts, %s, shot_cuts=%s: %.1f%% within", setting, on, rows[-1].within)
    finally:
        predictor.config = config
    return rows


def format_cuts(rows: list[CutRow], backbone: str) -> str:
    """The figures as a Markdown table."""
    lines = [f"Two-shot videos ({backbone}; {SHOT_FRAMES} + {SHOT_FRAMES} frames, a cut between; unlabelled frames):", "",
             "| setting | shot cuts | limb joints within 0.1 diag | found (>= half) | predicted / annotated person-frames "
             "| ids on both sides of a cut | cuts found |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.setting} | {'on' if r.shot_cuts else 'off'} | {r.within:.1f}% ({r.joints_ok}/{r.joints}) | {r.found}/{r.person_frames} "
              f"| {r.predictions} / {r.person_frames} | {r.ids_across} | {r.cuts_found}/{r.cuts} |" for r in rows]
    return "\n".join(lines)
