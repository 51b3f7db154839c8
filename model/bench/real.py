"""`python -m model bench-real`: person recall, limb joints within 0.1 x box diagonal and poseval AP on real stills.

The data (default ``../shared/data/real-stills``, see its README) is PoseTrack 2018 layout, one
one-frame video per photograph: ``annotations/val/<name>.json`` + the image it names. For each backbone
(BlazePose, and MoveNet beside it where its weights were fetched; ``hrnet_w48`` as well when
``--checkpoint`` gives its weights) the predictor runs
twice per image (``--backbone movenet`` or ``--backbone yolo11_pose`` benches only MoveNet Thunder or
YOLO11n-pose instead, see `model.backbones.movenet` and `model.backbones.yolo_pose`; repeat the option
for several):

- **detector**: no labels; people come from the whole-frame detector;
- **boxes given**: the annotated boxes as box-only labels (a person with a box and no keypoints, as an
  annotator who drew the boxes would give them); the pipeline trusts each box and predicts inside it.

Figures (the data README's): the share of annotated limb joints (shoulders to ankles) placed within
0.1 x the annotated box diagonal, each annotated person matched to one prediction by optimal
assignment on correct-joint counts (an unmatched person counts as a miss); person recall = people
matched with at least one correct limb joint (and with at least half of them); poseval AP and the
share within PCKh@0.5 (`annotation_io.evaluate`; the head boxes of these files are proxies, so AP is
comparable between runs on these files only).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from annotation_io import posetrack
from annotation_io.errors import AnnotationFormatError
from annotation_io.evaluate import evaluate
from annotation_io.types import Frame, Person, Video
from model.backbones.names import default_backbone
from model.bench.real_score import LIMB_SLOTS, RealScore, score_frame

if TYPE_CHECKING:
    from model.bench.cuts import CutRow
    from model.bench.real_clips import ClipRow, FollowRow

logger = logging.getLogger(__name__)

__all__ = ["LIMB_SLOTS", "RealScore", "clear_stills_output", "handle", "register_parser", "run_real_bench", "run_real_clips",
           "run_real_cuts", "score_frame"]

DEFAULT_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real-stills"
MODES = ("detector", "boxes given")


class _Still:
    """A FrameReader over one photograph."""

    def __init__(self, image: np.ndarray) -> None:
        self.image, self.num_frames = image, 1
        self.height, self.width = image.shape[:2]

    def read(self, index: int) -> np.ndarray:
        if index != 0:
            raise IndexError(f"a still has one frame, not frame {index}")
        return self.image


def load_stills(root: Path) -> list[tuple[Video, np.ndarray]]:
    """(ground-truth video, BGR image) per annotation file, sorted by name."""
    import cv2

    files = sorted((root / "annotations" / "val").glob("*.json"))
    if not files:
        raise FileNotFoundError(
            f"no annotations/val/*.json under {root}: the real-stills set lies beside the checkout "
            f"(../shared/data/real-stills), not in the repository; give --data DIR "
            f"(tests/assets/real-stills holds four of its stills)"
        )
    out = []
    for path in files:
        video = posetrack.load(path)
        name = video.frames[0].file_name if video.frames else None
        if not name:
            raise AnnotationFormatError("names no image (a still is one frame with its file_name)", source=str(path))
        image = cv2.imread(str(root / name))
        if image is None:
            raise FileNotFoundError(f"cannot read the image {root / name} named by {path}")
        out.append((video, image))
    return out


STILLS_FOLDERS = {"annotations", "images"}  # what a stills folder holds


def clear_stills_output(out: Path) -> bool:
    """Makes way for a stills folder written to `out`: an earlier one there (nothing but annotations/ and
    images/) is removed. Returns False, removing nothing, where `out` is a file or holds anything else."""
    if not out.exists():
        return True
    if not out.is_dir() or {p.name for p in out.iterdir()} - STILLS_FOLDERS:
        return False
    shutil.rmtree(out)
    return True


def box_only(video: Video) -> Video:
    """The video's annotated people as box-only labels (box and track id, no keypoints)."""
    frames = []
    for frame in video.frames:
        persons = [Person(track_id=i, box=p.box) for i, p in enumerate(frame.persons) if p.box is not None]
        frames.append(Frame(frame.index, persons, is_labeled=True))
    return Video(video.name, video.num_frames, frames, width=video.width, height=video.height)


def _run_mode(predictor: Any, stills: list[tuple[Video, np.ndarray]], mode: str) -> RealScore:
    total = RealScore()
    gts, preds = [], []
    start = time.perf_counter()
    for gt, image in stills:
        known = box_only(gt) if mode == "boxes given" else None
        video = Video(gt.name, 1, [Frame(0, [])], width=image.shape[1], height=image.shape[0])
        pred = predictor.predict_video(video, known, reader=_Still(image))
        one = score_frame(gt.frames[0], pred.frames[0] if pred.frames else None)
        total.add(one)
        total.per_image[gt.name] = f"{one.joints_ok}/{one.joints}"
        gts.append(gt)
        preds.append(Video(gt.name, gt.num_frames, pred.frames, width=gt.width, height=gt.height))
    total.seconds = time.perf_counter() - start
    result = evaluate(gts, preds)
    total.ap, total.within_pckh = result.total, result.within_total
    return total


def _predictors(backbones: Sequence[str], checkpoint: Path | None, heavy: Path | None = None) -> Iterator[Any]:
    """A Predictor for each of `backbones` (and hrnet_w48 when `checkpoint` is given, blazepose with BlazePose's
    heavy landmark model when `heavy` is), closed after use."""
    from model.pipeline.predictor import Predictor

    runs: list[tuple[str, Path | None]] = [(name, None) for name in backbones]
    if heavy is not None:
        runs.append(("blazepose", heavy))
    if checkpoint is not None:
        runs.append(("hrnet_w48", checkpoint))
    for name, weights in runs:
        predictor = Predictor.create(name, weights)
        try:
            yield predictor
        finally:
            predictor.close()


def run_real_bench(root: Path, *, checkpoint: Path | None = None, backbones: Sequence[str] = ("blazepose",),
                   heavy: Path | None = None) -> dict[str, dict[str, RealScore]]:  # fmt: skip
    """{backbone version: {mode: score}} for each of `backbones` (and hrnet_w48 when `checkpoint` is given,
    blazepose with the heavy landmark model when `heavy` is)."""
    stills = load_stills(root)
    return {predictor.version: {mode: _run_mode(predictor, stills, mode) for mode in MODES}
            for predictor in _predictors(backbones, checkpoint, heavy)}


def run_real_clips(root: Path, *, checkpoint: Path | None = None, backbones: Sequence[str] = ("blazepose",),
                   spacings: Sequence[int] = (4, 8), heavy: Path | None = None
                   ) -> tuple[list[ClipRow], list[FollowRow]]:  # fmt: skip
    """`model.bench.real_clips` rows for each backbone (as `run_real_bench`) and label spacing, and each
    backbone's row with no labels."""
    from model.bench.real_clips import run_clip_bench, run_follow_bench

    stills = load_stills(root)
    rows, follow = [], []
    for predictor in _predictors(backbones, checkpoint, heavy):
        rows += [row for every in spacings for row in run_clip_bench(predictor, stills, every)]
        follow.append(run_follow_bench(predictor, stills))
    return rows, follow


def run_real_cuts(root: Path, *, checkpoint: Path | None = None, backbones: Sequence[str] = ("blazepose",),
                  heavy: Path | None = None) -> dict[str, list[CutRow]]:  # fmt: skip
    """{backbone version: `model.bench.cuts` rows} for each backbone (as `run_real_bench`)."""
    from model.bench.cuts import run_cut_bench

    stills = load_stills(root)
    return {predictor.version: run_cut_bench(predictor, stills) for predictor in _predictors(backbones, checkpoint, heavy)}


def format_result(result: dict[str, dict[str, RealScore]]) -> str:
    """The figures as a Markdown table."""
    lines = ["| backbone | boxes | limb joints within 0.1 diag | recall (>=1 / >=half) | predictions "
             "| poseval AP | within PCKh@0.5 | s/image |", "|---|---|---|---|---|---|---|---|"]
    for version, modes in result.items():
        for mode, s in modes.items():
            per = s.seconds / max(len(s.per_image), 1)
            lines.append(f"| {version} | {mode} | {s.within:.1f}% ({s.joints_ok}/{s.joints}) | "
                         f"{s.found}/{s.people} / {s.found_half}/{s.people} | {s.predictions} | {s.ap:.1f} | "
                         f"{s.within_pckh:.1f}% | {per:.2f} |")
    for version, modes in result.items():
        for mode, s in modes.items():
            lines.append(f"{version}, {mode}: " + " ".join(f"{k}:{v}" for k, v in s.per_image.items()))
    return "\n".join(lines)


def register_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    """Adds the `bench-real` command."""
    parser = subparsers.add_parser(name, help="recall, limb joints within 0.1 x box diagonal and AP on real stills",
                                   description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="real-stills folder (PoseTrack 2018 layout; default ../shared/data/real-stills)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="HRNet-W48 weights: also bench hrnet_w48")
    parser.add_argument("--heavy", type=Path, default=None,
                        help="BlazePose's heavy landmark model (pose_landmark_heavy.tflite, `make heavy`): also "
                             "bench blazepose with it fused")
    parser.add_argument("--backbone", action="append", choices=("blazepose", "movenet", "yolo11_pose"), default=None,
                        help="backbone with its own weights to bench (repeatable; default blazepose, and movenet "
                             "beside it where `make movenet` fetched it)")
    parser.add_argument("--clips", action="store_true",
                        help="also score the stills filmed by a moving camera, with labels every 4 and 8 "
                             "frames (label propagation) and with none (detection and following) "
                             "(model.bench.real_clips; a few minutes)")
    parser.add_argument("--cuts", action="store_true",
                        help="also score pairs of the stills filmed as two shots with a cut between, cut finding "
                             "off and on (model.bench.cuts; a few minutes)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.set_defaults(handle=handle, log_level="WARNING")


def handle(args: argparse.Namespace) -> int:
    """Runs the benchmark and prints its figures; 2 when the data or the checkpoint cannot be read."""
    for path in (args.checkpoint, args.heavy):
        if path is not None and not path.is_file():
            print(f"bench-real: checkpoint not found: {path}")
            return 2
    try:
        backbones = args.backbone or tuple(dict.fromkeys(("blazepose", default_backbone())))
        result = run_real_bench(args.data.resolve(), checkpoint=args.checkpoint, backbones=backbones,
                                heavy=args.heavy)  # fmt: skip
        clips, follow = (run_real_clips(args.data.resolve(), checkpoint=args.checkpoint, backbones=backbones,
                                        heavy=args.heavy) if args.clips else ([], []))  # fmt: skip
        cuts = (run_real_cuts(args.data.resolve(), checkpoint=args.checkpoint, backbones=backbones, heavy=args.heavy)
                if args.cuts else {})  # fmt: skip
    except (OSError, ValueError) as exc:  # ValueError: AnnotationFormatError, CheckpointError
        print(f"bench-real: {exc}")
        return 2
    if args.json:
        out: dict[str, Any] = {v: {m: asdict(s) for m, s in modes.items()} for v, modes in result.items()}
        if clips:
            out["clips"] = [asdict(row) for row in clips]
            out["clips_no_labels"] = [asdict(row) for row in follow]
        if cuts:
            out["cuts"] = {v: [asdict(row) for row in rows] for v, rows in cuts.items()}
        print(json.dumps(out, indent=2))
    else:
        print(format_result(result))
        if clips:
            from model.bench.real_clips import format_clips, format_follow

            print()
            print(format_clips(clips))
            print()
            print(format_follow(follow))
        if cuts:
            from model.bench.cuts import format_cuts

            for version, rows in cuts.items():
                print()
                print(format_cuts(rows, version))
    return 0
