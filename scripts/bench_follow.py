"""Following people vs detecting on every frame: a no-label synthetic walk with the real BlazePose, side by side.

Usage: `python -m scripts.bench_follow [--frames 40] [--people 1 3] [--every 10 5] [--backbone blazepose
yolo11_pose] [--one-at-a-time]`. For each backbone and clip, the backbone predicts it twice, `redetect_every=1` (the detector on every frame, as before) and
`redetect_every=N` for each N given (people followed between detections), with `--one-at-a-time` twice more frame by
frame (as Label Studio asks for tasks; alone, and seeded by the prediction of the frame before), and prints per
run: person-frames found
(a predicted box with IoU >= 0.3 to the person's, one-to-one), false people (predicted boxes that
match nobody), id switches (changes of the predicted id along a person's matched frames), number of
ids, detector runs and wall time.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from annotation_io.posetrack import load
from annotation_io.synth import generate
from annotation_io.types import Frame, Video
from annotation_io.video import open_video
from model.backbones.factory import build_backbone
from model.pipeline.assignment import match_by_iou
from model.pipeline.config import InferConfig
from model.pipeline.predictor import Predictor
from model.pipeline.tracking import MAX_LOST

MATCH_IOU = 0.3


def score(gt: Video, out: Video) -> dict[str, int]:
    """Person-frames found, false people, id switches and ids used, matching boxes one-to-one by IoU."""
    found = false = switches = total = 0
    last_id: dict[int, int] = {}
    ids = set()
    for frame in gt.frames:
        truth = [p for p in frame.persons if p.box is not None]
        pred = [p for p in out.frame(frame.index).persons if p.box is not None]
        ids.update(p.track_id for p in pred)
        matched = match_by_iou([p.box for p in truth], [p.box for p in pred], MATCH_IOU)  # pred -> truth
        total += len(truth)
        found += len(matched)
        false += len(pred) - len(matched)
        for c, t in matched.items():
            tid = truth[t].track_id
            switches += tid in last_id and last_id[tid] != pred[c].track_id
            last_id[tid] = pred[c].track_id
    return {"found": found, "of": total, "false": false, "switches": switches, "ids": len(ids)}


def run(pred: Predictor, gt: Video, images: Path, one_at_a_time: str | None = None,
        ) -> tuple[dict[str, int], float, int]:  # fmt: skip
    """Predicts the whole clip in one call, or (`one_at_a_time`) frame by frame in order, as Label Studio
    asks for tasks: "alone" with nothing known, "seeded" with the predictions of the `MAX_LOST` frames
    before as predicted persons and the ids given so far (as `backend.services.prediction` passes them)."""
    calls = []
    detect = pred.detect
    pred.detect = lambda frame: calls.append(1) or detect(frame)  # type: ignore[method-assign]
    start = time.perf_counter()
    with open_video(images) as reader:
        if one_at_a_time is None:
            out = pred.predict_video(gt, None, reader=reader)
        else:
            frames: list[Frame] = []
            next_id = 0
            for t in range(gt.num_frames):
                known = None
                if one_at_a_time == "seeded" and frames:  # the frames within MAX_LOST, as the backend loads
                    known = replace(gt, frames=[replace(f, is_labeled=False) for f in frames[-MAX_LOST - 1 :]])
                frame = pred.predict_video(gt, known, frames=[t], reader=reader,
                                           first_track_id=next_id if one_at_a_time == "seeded" else 0).frame(t)
                frames.append(frame)
                next_id = max([next_id] + [p.track_id + 1 for p in frame.persons if p.track_id is not None])
            out = replace(gt, frames=frames)
    return score(gt, out), time.perf_counter() - start, len(calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--people", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--every", type=int, nargs="+", default=[10], help="redetect_every values besides 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", nargs="+", default=["blazepose"], help="backbones (bundled weights) to compare")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="also predict frame by frame, as Label Studio asks: alone, and seeded by the frame before")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print("backbone | people | redetect_every | found / person-frames | false people | id switches | ids | "
          "detector runs | wall s")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backbone:
            backbone = build_backbone(name, None, "cpu")
            for people in args.people:
                root = Path(tmp) / f"p{people}"
                if not root.exists():
                    generate(root, videos=1, frames=args.frames, people=people, seed=args.seed)
                gt = load(next((root / "annotations").rglob("*.json")))
                runs = [(every, None) for every in (1, *args.every)]
                runs += [(1, mode) for mode in ("alone", "seeded")] if args.one_at_a_time else []
                for every, mode in runs:
                    pred = Predictor(backbone, None, config=InferConfig(redetect_every=every))
                    s, wall, calls = run(pred, gt, root / "images" / "000001", mode)
                    label = f"{every}" if mode is None else f"{every}, one frame at a time ({mode})"
                    print(f"{name} | {people} | {label} | {s['found']} / {s['of']} | {s['false']} | {s['switches']} | "
                          f"{s['ids']} | {calls} | {wall:.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
