"""Per-crop cost of the offline backbones on real person crops, and the whole-frame detector's per-image cost.

Usage: `python -m scripts.bench_backbone_crops [--backbones blazepose movenet yolo11_pose] [--repeats 3]
[--device cpu] [--heavy weights/pose_landmark_heavy.tflite]` (`--heavy`: blazepose with BlazePose's heavy
landmark model too). The crops are the 21 annotated people of the real stills (`model.bench.real`), cut as the
pipeline cuts them (`model.transforms.crop_image`, 384x288). Per backbone it prints the median over
`repeats` runs of: `heatmaps` on the crops one by one (ms per crop), on all crops in one call (ms per
crop), and the backbone's whole-frame person detector per image (`Predictor.detect`). A print, not a
test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import numpy as np

from model.backbones.factory import build_backbone
from model.bench.real import DEFAULT_DATA, load_stills
from model.pipeline.predictor import Predictor
from model.transforms import crop_geometry, crop_image


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["blazepose", "yolo11_pose"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--heavy", default=None, help="BlazePose's heavy landmark model: also bench blazepose with it")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    stills = load_stills(DEFAULT_DATA.resolve())
    images = [image for _, image in stills]
    crops = np.stack([crop_image(image, crop_geometry(p.box)) for video, image in stills
                      for p in video.frames[0].persons if p.box is not None])  # fmt: skip
    print(f"{len(crops)} crops from {len(images)} images")
    print("backbone | ms/crop, one by one | ms/crop, one call | detector s/image")
    runs = [(name, None) for name in args.backbones] + ([("blazepose", args.heavy)] if args.heavy else [])
    for name, weights in runs:
        backbone = build_backbone(name, weights, args.device)
        predictor = Predictor(backbone, None, device=args.device)
        single = median_seconds(lambda b=backbone: [b.heatmaps(c[None]) for c in crops], args.repeats)
        batched = median_seconds(lambda b=backbone: b.heatmaps(crops), args.repeats)
        detect = median_seconds(lambda p=predictor: [p.detect(image) for image in images], args.repeats)
        print(f"{backbone.version} | {1e3 * single / len(crops):.0f} | {1e3 * batched / len(crops):.0f} | "
              f"{detect / len(images):.2f}", flush=True)  # fmt: skip
        predictor.close()


if __name__ == "__main__":
    main()
