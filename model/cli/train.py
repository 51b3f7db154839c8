"""`python -m model train`: train a DCPose head on labelled videos (head only, backbone frozen).

Loads PoseTrack labels and the videos' frames, builds samples and a held-out split
(`model.training.samples`), trains the head with `model.training.loop.train_head` and, on rank 0 only,
writes our checkpoint (`model.checkpoint.save_checkpoint`) and its training curve
(``<stem>_curve.png``, `model.training.curve`). Under torchrun (``torchrun --nproc_per_node=N -m
model train ...``) every rank trains with DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from annotation_io.arguments import positive_int
from annotation_io.types import Video

if TYPE_CHECKING:
    from annotation_io.video import FrameReader
    from model.backbones.base import Backbone
    from model.training.heatmap_cache import BackboneHeatmapCache
    from model.training.loop import TrainConfig, TrainResult
    from model.training.samples import TrainSample

BackboneFactory = Callable[[argparse.Namespace], "Backbone"]

logger = logging.getLogger(__name__)

__all__ = ["handle", "register_parser", "run"]


_VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def _find_frames(root: Path, video: Video) -> Path:
    """The frame folder or video file of `video` under `root` (by name, file stem or file_name)."""
    candidates = [root / video.name, *(root / f"{video.name}{s}" for s in _VIDEO_SUFFIXES)]
    named = next((f.file_name for f in video.frames if f.file_name), None)
    if named:
        candidates += [(root / named).parent, root / Path(named).parent.name]
    for c in candidates:
        if c.exists():
            return c
    raise FileNotFoundError(
        f"frames of video {video.name!r} not found under {root}; tried {', '.join(str(c) for c in candidates)}"
    )


def _load_videos(folder: Path, what: str) -> dict[str, Video]:
    from annotation_io import posetrack

    if folder.is_file():
        videos = [posetrack.load(folder)]
    elif folder.is_dir():
        videos = list(posetrack.load_dir(folder).values())
    else:
        raise FileNotFoundError(f"{what} not found: {folder} (a PoseTrack JSON file or a folder of them)")
    if not videos:
        raise FileNotFoundError(f"{what}: no PoseTrack JSON files in {folder}")
    return {v.name: v for v in videos}


def _check_args(args: argparse.Namespace) -> None:
    """The device is there, and --out and its training curve are not inputs (a labels file, the backbone
    weights) and can be written: checked before the backbone loads and the head trains, not once the
    training is done (or as a traceback from torch)."""
    from model.cli.checks import check_device, check_outputs
    from model.training.curve import curve_path

    check_device(args.device)
    labels = Path(args.labels)
    inputs = [args.checkpoint, *(sorted(labels.glob("*.json")) if labels.is_dir() else [labels])]
    check_outputs(inputs, [args.out, curve_path(args.out)])


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _positive_float(text: str) -> float:
    """A finite number above 0 (argparse type of --lr)."""
    value = _float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def _fraction(text: str) -> float:
    """A number in [0, 1) (argparse type of --holdout)."""
    value = _float(text)
    if not 0.0 <= value < 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def _count(text: str, most: int | None = None, why: str = "") -> int:
    """An integer >= 0, and at most `most` where given (argparse type of --workers and --seed)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    if most is not None and value > most:
        raise argparse.ArgumentTypeError(f"must be at most {most}{why}, got {value}")
    return value


def _cpus() -> int:
    """The CPUs this process may run on (what torch's DataLoader weighs its worker count against)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def register_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    """Adds the `train` command."""
    from model.backbones.names import BACKBONE_NAMES

    parser = subparsers.add_parser(name, help="train a DCPose head on labelled videos",
                                   description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--videos", type=Path, required=True,
                        help="folder holding each video's frames (a frame folder or video file per video name, "
                             "or the root its file_names are relative to)")
    parser.add_argument("--labels", type=Path, required=True, help="PoseTrack JSON file or folder of them (labels)")
    parser.add_argument("--backbone", default=None, choices=BACKBONE_NAMES,
                        help="rough pose estimator (default: movenet for a .json checkpoint, blazepose for another; "
                             "with none, movenet where `make movenet` fetched it, else blazepose)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="HRNet weights (hrnet backbones), a yolo11n-pose.pt (yolo11_pose) or movenet-thunder.json (movenet)")
    parser.add_argument("--epochs", type=functools.partial(positive_int, unit="epochs"), default=10, help="passes over the training samples (default 10)")
    parser.add_argument("--batch-size", type=functools.partial(positive_int, unit="samples"), default=16, help="samples per optimiser step (default 16)")
    parser.add_argument("--lr", type=_positive_float, default=1e-4, help="Adam learning rate (default 1e-4)")
    # 0..2**32-1 as the service's (backend.services.finetune_config): else numpy ("expected non-negative integer")
    # or torch ("Overflow when unpacking long long") refused it once the backbone had run
    parser.add_argument("--seed", type=functools.partial(_count, most=2**32 - 1), default=0,
                        help="seeds the split, sample order and augmentation (0 to 2**32-1; default 0)")
    parser.add_argument("--holdout", type=_fraction, default=0.2, help="held-out fraction (by video / frame range; default 0.2)")
    parser.add_argument("--distance", type=functools.partial(positive_int, unit="frames"), default=1, help="neighbour frame distance (default 1, as released)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--no-augment", action="store_true", help="no flip / scale / rotation augmentation")
    parser.add_argument("--no-cache", action="store_true", help="run the backbone in the loop every step")
    parser.add_argument("--cache-dir", type=Path, default=None, help="keep cached heatmaps as files here")
    # at most one per CPU: the DataLoader starts every one of them (--workers 100000 hung the machine)
    parser.add_argument("--workers", type=functools.partial(_count, most=_cpus(), why=" (the CPUs here)"), default=0,
                        help="DataLoader workers (cache mode; at most one per CPU)")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast for the head")
    parser.add_argument("--version", default=None, help="version string stored in the checkpoint")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write (our format)")
    parser.set_defaults(handle=handle, log_level="INFO")


def _build_backbone(args: argparse.Namespace) -> Backbone:
    from model.backbones.factory import build_backbone

    device = args.device
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"  # one GPU per rank under torchrun
    return build_backbone(args.backbone, args.checkpoint, device)


def run(args: argparse.Namespace, *, backbone_factory: BackboneFactory | None = None) -> TrainResult:
    """Load, train, save checkpoint and curve (rank 0).

    Args:
        args: the parsed command line.
        backbone_factory: builds the backbone from the arguments; default: `build_backbone` by name.
    """
    from annotation_io.video import open_video
    from model.backbones.names import default_backbone
    from model.cli.checks import CheckError, check_frames_not_outputs
    from model.nets.dcpose import DILATIONS, build_dcpose
    from model.training import loop as train_module
    from model.training.curve import curve_path, save_training_curve
    from model.training.samples import build_samples, split_holdout, within_shots

    args.backbone = args.backbone or default_backbone(args.checkpoint)  # none named: by the checkpoint, or fetched

    _check_args(args)
    labels = _load_videos(args.labels, "labels")
    backbone = (backbone_factory or _build_backbone)(args)
    samples = build_samples(labels, distance=args.distance)
    if not samples:
        raise ValueError(f"{args.labels}: no labelled frame holds a human pose; nothing to train on")
    try:
        train, holdout = split_holdout(samples, fraction=args.holdout, seed=args.seed, distance=args.distance)
    except ValueError as exc:  # a single labelled frame: nothing to hold out
        raise ValueError(f"{args.labels}: {exc} (--holdout 0)") from None
    if not train:  # (train_head's "label some frames first" would be wrong: they are labelled)
        raise ValueError(
            f"{args.labels}: none of the {len(samples)} labelled persons is left to train on: {len(holdout)} held "
            f"out (--holdout {args.holdout:g}), the rest within --distance {args.distance} of them; label more "
            "frames or use --holdout 0"
        )
    readers = {name: open_video(_find_frames(args.videos, v)) for name, v in labels.items()}
    try:  # the checkpoint and its curve neither replace a frame nor land among the frames
        check_frames_not_outputs((f for r in readers.values() for f in getattr(r, "files", ())),
                                 [args.out, curve_path(args.out)])  # fmt: skip
    except CheckError:
        for r in readers.values():
            r.close()
        raise
    config = train_module.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         augment=not args.no_augment, use_cache=not args.no_cache, device=args.device,
                         num_workers=args.workers, cache_dir=str(args.cache_dir) if args.cache_dir else None,
                         amp=args.amp)
    head = build_dcpose(backbone=None)
    logger.info("training on %d samples, %d held out, backbone %s", len(train), len(holdout), backbone.version)
    from tqdm import tqdm

    steps_per_epoch = math.ceil(len(train) / (config.batch_size * int(os.environ.get("WORLD_SIZE", "1"))))
    rank0 = int(os.environ.get("RANK", "0")) == 0
    bar = None
    try:
        train, holdout = within_shots(train, readers), within_shots(holdout, readers)
        cache = _filled_cache(backbone, readers, train + holdout, config, rank0)
        bar = tqdm(total=steps_per_epoch * config.epochs, desc="train head", unit="step", disable=not rank0)

        def progress(epoch: int, step: int, loss: float) -> None:
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.2e}")
            bar.update(1)

        result = train_module.train_head(head, backbone, readers, train, config=config, holdout=holdout,
                                         progress=progress, cache=cache)
    finally:
        if bar is not None:
            bar.close()
        for r in readers.values():
            r.close()
    if rank0:
        version = args.version or f"{args.backbone}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        model_config = {"backbone": backbone.name,
                        "num_joints": head.num_joints, "dilations": list(DILATIONS), "head": "dcpose"}
        extra = {"epochs": len(result.epoch_losses), "best_epoch": result.best_epoch,
                 "epoch_losses": result.epoch_losses, "holdout_losses": result.holdout_losses,
                 "train_samples": len(train), "holdout_samples": len(holdout),
                 "backbone_version": backbone.version, "lr": config.lr, "batch_size": config.batch_size}
        from model.checkpoint import save_checkpoint

        save_checkpoint(args.out, head, model_config=model_config, version=version, extra=extra)
        curve = save_training_curve(result, curve_path(args.out), title=f"DCPose head on {backbone.name} ({version})")
        logger.info("wrote %s and %s", args.out, curve)
    return result


def _filled_cache(backbone: Backbone, readers: dict[str, FrameReader], samples: list[TrainSample],
                  config: TrainConfig, show: bool) -> BackboneHeatmapCache | None:
    """The heatmap cache filled before training, with a progress bar (the backbone's pass over every
    labelled frame and its neighbours takes minutes on a large set, and the step bar would stand at 0
    meanwhile); None where training fills it itself (no cache, or several DDP ranks sharing the work)."""
    from tqdm import tqdm

    from model.training.heatmap_cache import BackboneHeatmapCache

    if not config.use_cache or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None
    cache = BackboneHeatmapCache(backbone, readers, directory=Path(config.cache_dir) if config.cache_dir else None,
                                 crop=config.crop)  # fmt: skip
    with tqdm(desc="backbone heatmaps", unit="crop", disable=not show) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        cache.prefetch(samples, progress=advance)
    return cache


def handle(args: argparse.Namespace, *, backbone_factory: BackboneFactory | None = None) -> int:
    """Runs the command; 2 for bad input (a one-line error in the log)."""
    from annotation_io.video import VideoError

    try:
        run(args, backbone_factory=backbone_factory)
    # OSError: a folder that cannot be read or written; VideoError: frames that do not decode.
    except (OSError, ValueError, KeyError, VideoError) as exc:
        logger.debug("training failed", exc_info=True)
        logger.error("%s", exc)
        return 2
    return 0
