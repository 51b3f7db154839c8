"""Where the predictor's time goes per person-frame: HRNet-W48 (random weights) + head on a synthetic clip.

    python -m scripts.profile_pipeline [--device cuda] [--size 1280x720] [--frames 64] [--people 4]
        [--batch 32] [--repeats 3] [--precision fp32]

Prints, for backbone-only, cached and exact (interleaved repeats, the fastest counting): ms per
person-frame end to end, and the share of the cached run spent in each stage (frame decode, crops,
backbone, neighbour heatmaps, head, decode), timed with the device synchronised around each stage.
A benchmark, not a test: figures depend on the machine; compare variants within one run.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from annotation_io.types import Frame
from model.backbones.factory import build_backbone
from model.bench.video import BenchSettings, _generate, _random_head
from model.pipeline import read_ahead, video_job
from model.pipeline.config import InferConfig
from model.pipeline.predictor import Predictor

STAGES = ("image", "crops", "backbone", "neighbours", "head", "decode")


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class StageTimer:
    """Wraps the job's stages with synchronised timers (restored by `restore`)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.seconds: collections.Counter[str] = collections.Counter()
        self._restore: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, stage: str) -> None:
        inner = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            _sync(self.device)
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                _sync(self.device)
                self.seconds[stage] += time.perf_counter() - t0

        self._restore.append((owner, attr, inner))
        setattr(owner, attr, timed)

    def restore(self) -> None:
        for owner, attr, inner in reversed(self._restore):
            setattr(owner, attr, inner)
        self._restore.clear()


class _Instant:
    """A backbone that returns zero heatmaps at once (on the CPU, as the Backbone protocol says)."""

    name, version = "hrnet_w48", "hrnet_w48:instant"

    def __init__(self, device: str) -> None:
        self.device = device

    def heatmaps(self, crops: Any, geoms: Any, frames: Any) -> torch.Tensor:
        return torch.zeros((len(crops), 17, 96, 72))


class _InstantHead(torch.nn.Module):
    """A head whose refine returns the current heatmaps (moved like a real head's output)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def refine(self, current: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        return current + self.anchor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--people", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--instant", action="store_true",
                        help="a backbone and head that return at once: the pipeline's own cost alone")
    parser.add_argument("--decode-workers", default=None, metavar="N[,M...]",
                        help="frame-decoding threads of the read-ahead; several values: each variant once per value, "
                             "interleaved (default: the product's own, model.pipeline.read_ahead.READ_AHEAD_WORKERS)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also print the N functions of most own time in one cached run (cProfile)")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    if torch.device(args.device).type == "cuda":
        torch.backends.cudnn.benchmark = True
    root = Path(tempfile.mkdtemp(prefix="profile_pipeline_"))
    settings = BenchSettings(cost_frames=args.frames, people=args.people, size=(w, h), train_videos=1,
                             train_frames=2, test_frames=2)
    data = _generate(root, settings, need_cost=True)
    video = data.gt[data.cost]
    template = replace(video, frames=[Frame(f.index, [], False) for f in video.frames])
    if args.instant:
        backbone, head = _Instant(args.device), _InstantHead()
    else:
        backbone = build_backbone("hrnet_w48", None, args.device, batch_size=args.batch, allow_random=True,
                                  precision=args.precision)
        head = _random_head()

    def predictor(with_head: bool, mode: str) -> Predictor:
        cfg = InferConfig(label_aware=False, detect=False, batch_size=args.batch, mode=mode,
                          precision=args.precision)
        return Predictor(backbone, head if with_head else None, device=args.device, config=cfg,
                         detector=lambda frame: [])

    workers = [int(v) for v in args.decode_workers.split(",")] if args.decode_workers else [None]
    variants: dict[str, Callable[[], Any]] = {}
    for name, with_head, mode in (("backbone-only", False, "cached"), ("cached", True, "cached"),
                                  ("exact", True, "exact")):
        p = predictor(with_head, mode)
        for count in workers:
            def run(p: Predictor = p, count: int | None = count) -> int:
                reader = data.reader(data.cost)
                saved = read_ahead.READ_AHEAD_WORKERS
                if count is not None:
                    read_ahead.READ_AHEAD_WORKERS = count
                try:
                    out = p.predict_video(template, video, reader=reader)
                finally:
                    read_ahead.READ_AHEAD_WORKERS = saved
                    reader.close()
                return sum(len(f.persons) for f in out.frames)

            variants[name if count is None else f"{name} ({count} decoding)"] = run
    for run in variants.values():  # warm-up: cuDNN autotuning, allocations
        run()
    best: dict[str, float] = {}
    person_frames = 0
    for _ in range(args.repeats):
        for name, run in variants.items():
            _sync(args.device)
            t0 = time.perf_counter()
            person_frames = run()
            _sync(args.device)
            took = time.perf_counter() - t0
            best[name] = min(best.get(name, float("inf")), took)
    print(f"device {args.device}, {w}x{h}, {args.frames} frames x {args.people} people = {person_frames} "
          f"person-frames, batch {args.batch}, {args.precision}, {os.cpu_count()} CPUs")
    for name, took in best.items():
        ms = 1e3 * took / person_frames
        print(f"  {name:28s} {ms:7.2f} ms per person-frame  ({1e3 / ms:6.0f} per second)")

    timer = StageTimer(args.device)
    timer.wrap(video_job.VideoJob, "image", "image")
    timer.wrap(video_job, "crop_image", "crops")
    timer.wrap(backbone, "heatmaps", "backbone")
    timer.wrap(video_job.VideoJob, "_side_heatmaps", "neighbours")
    timer.wrap(Predictor, "refine", "head")
    timer.wrap(video_job, "decode_to_frame", "decode")
    _sync(args.device)
    t0 = time.perf_counter()
    stage_name, cached = next((name, run) for name, run in variants.items() if name.startswith("cached"))
    cached()
    _sync(args.device)
    total = time.perf_counter() - t0
    timer.restore()
    inner = dict(timer.seconds)
    print(f"{stage_name}, one timed run with synchronised stages: {1e3 * total / person_frames:.2f} ms per "
          "person-frame")
    for stage in STAGES:
        v = inner.get(stage, 0.0)
        print(f"  {stage:11s} {1e3 * v / person_frames:7.3f} ms per person-frame  ({100 * v / total:5.1f}%)")
    rest = total - sum(inner.values())
    print(f"  {'other':11s} {1e3 * rest / person_frames:7.3f} ms per person-frame  ({100 * rest / total:5.1f}%)")
    if args.profile:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.runcall(cached)
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
