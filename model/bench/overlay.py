"""`python -m model propagation-overlay`: the README's picture of a frame whose keypoints were carried from labels.

Generates a synthetic clip (`annotation_io.synth`, one walker), keeps the human labels of frames 0 and 8,
predicts frame 4 at cold start with the default BlazePose predictor (label propagation on) and draws it
(`model.cli.render.draw_frame`); propagated joints get a cyan square, the ground truth small white dots.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["handle", "make_overlay", "register_parser"]

DEFAULT_OUT = Path("docs") / "propagation_overlay.png"
LABELLED = (0, 8)
SHOWN = 4


def make_overlay(out: Path, *, seed: int = 3) -> dict[str, float]:
    """Writes the picture to `out`; returns the mean and max pixel error of the propagated joints."""
    import cv2

    from annotation_io import posetrack
    from annotation_io.synth import generate
    from annotation_io.types import Frame, Video
    from annotation_io.video import open_video
    from model.cli.render import draw_frame
    from model.pipeline.config import with_propagation
    from model.pipeline.predictor import Predictor

    with tempfile.TemporaryDirectory(prefix="overlay_") as tmp:
        generate(tmp, videos=1, frames=LABELLED[-1] + 1, people=1, seed=seed, size=(320, 240))
        gt = posetrack.load(next((Path(tmp) / "annotations").glob("*.json")))
        known = Video(gt.name, gt.num_frames, [Frame(t, gt.frame(t).persons, is_labeled=True) for t in LABELLED],
                      width=gt.width, height=gt.height)
        with open_video(Path(tmp) / "images" / gt.name) as reader:
            predictor = Predictor.create("blazepose")
            try:
                frame = predictor.predict_frame(replace_frames(gt), SHOWN, known, reader=reader)
            finally:
                predictor.close()
            image = draw_frame(reader.read(SHOWN), frame.persons)
    errors = []
    for person in frame.persons:
        truth = gt.frame(SHOWN).person_by_track(person.track_id)
        for j in person.extra.get("propagated", []):
            x, y = person.xy[j]
            cv2.rectangle(image, (int(x) - 5, int(y) - 5), (int(x) + 5, int(y) + 5), (255, 255, 0), 1)
            if truth is not None and truth.present[j]:
                errors.append(float(np.linalg.norm(person.xy[j] - truth.xy[j])))
                tx, ty = truth.xy[j]
                cv2.circle(image, (int(round(tx)), int(round(ty))), 1, (255, 255, 255), -1)
    version = with_propagation(predictor.version) if errors else predictor.version
    for row, text in enumerate((f"frame {SHOWN}, labels on {LABELLED[0]} and {LABELLED[1]}", version,
                                "cyan: carried by optical flow")):
        cv2.putText(image, text, (6, 14 + 14 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return {"mean_px": float(np.mean(errors)) if errors else float("nan"),
            "max_px": float(np.max(errors)) if errors else float("nan"), "joints": float(len(errors))}


def replace_frames(gt: object) -> object:
    """The video without its persons (the predictor is given only what a user would have)."""
    from dataclasses import replace

    from annotation_io.types import Frame

    return replace(gt, frames=[Frame(f.index, []) for f in gt.frames])  # type: ignore[attr-defined]


def register_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    """Adds the `propagation-overlay` command."""
    parser = subparsers.add_parser(name, help="draw a frame whose keypoints were carried from labels",
                                   description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"PNG to write (default {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=3, help="seed of the synthetic walk (default 3)")
    parser.set_defaults(handle=handle, log_level="WARNING")


def handle(args: argparse.Namespace) -> int:
    """Writes the picture and prints the propagated joints' error; 2 for an --out that cannot be written."""
    from model.cli.checks import CheckError, check_outputs

    try:
        if args.out.suffix.lower() != ".png":
            raise CheckError(f"--out {args.out}: the picture is a PNG; give a file name ending in .png")
        check_outputs([], [args.out])
    except CheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stats = make_overlay(args.out, seed=args.seed)
    print(f"wrote {args.out}: {int(stats['joints'])} propagated joints, mean error {stats['mean_px']:.2f} px, "
          f"max {stats['max_px']:.2f} px")
    return 0
