"""`python -m model predict`: keypoints for a video, frame folder, image or PoseTrack JSON, as PoseTrack 2018 JSON.

    python -m model predict INPUT --out PRED.json [--labels LABELS.json] [--no-labels]
        [--backbone blazepose|movenet|yolo11_pose|hrnet_w48] [--checkpoint CKPT] [--head HEAD_CKPT] [--device cpu|cuda]
        [--mode cached|exact] [--no-label-aware] [--frames a:b] [--images-root DIR]
        [--render OVERLAY.mp4]

INPUT is one of
- a video file or a frame folder: its frames are predicted; `--labels` (a PoseTrack JSON indexed
  by the video's frames) supplies human labels;
- one image file (a suffix of `annotation_io.video.IMAGE_SUFFIXES`): a one-frame video, read as
  folder frames are (`annotation_io.video.ImageSource`);
- a PoseTrack 2018 (or 2017) JSON: its labelled frames are the human labels (unless
  `--no-labels`; `--labels` replaces them), and its images are found from their `file_name`
  relative to `--images-root`, the JSON's folder, or the folders above it (PoseTrack's layout is
  `<root>/annotations/x.json` + `<root>/images/...`, so the parent is usually the one).

The output copies the video name, frame count, image ids, file names and `is_labeled` flags of the
input JSON (or of `--labels`), so `python -m annotation_io.evaluate GT.json PRED.json` scores it.
Every requested frame is written, with per-keypoint `scores`, a person `score` and `track_id`.

Errors a user can fix (unreadable or missing input, a labels file that does not parse, a checkpoint
that does not fit the backbone, CUDA asked for but unavailable, bad `--frames`) print one line to
stderr and exit with status 2. `-v` logs more, with tracebacks.

`run_predict` and `handle` take a `predictor_factory` (the options -> a Predictor): the seam where
tests put a backbone of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from annotation_io import posetrack
from annotation_io.arguments import positive_int
from annotation_io.types import Video
from annotation_io.video import VideoError
from model.backbones.names import BACKBONE_NAMES, default_backbone
from model.cli.checks import CheckError, check_device, check_frames_not_outputs, check_outputs
from model.cli.predict_input import (
    PredictInput,
    PredictInputError,
    load_input,
    parse_frames,
    select_frames,
)
from model.cli.render import VIDEO_SUFFIXES
from model.pipeline.config import MODES

if TYPE_CHECKING:
    from model.pipeline.predictor import Predictor

logger = logging.getLogger(__name__)

__all__ = [
    "EXIT_USAGE",
    "PredictInput",
    "PredictInputError",
    "PredictOptions",
    "build_predictor",
    "handle",
    "load_input",
    "parse_frames",
    "register_parser",
    "run_predict",
    "select_frames",
]

EXIT_USAGE = 2
_FFMPEG_LOG = "OPENCV_FFMPEG_LOGLEVEL"


# ---------------------------------------------------------------------------------------- running


def _check_device(device: str) -> None:
    try:
        check_device(device)
    except CheckError as exc:
        raise PredictInputError(str(exc)) from None


@dataclass(frozen=True)
class PredictOptions:
    """What the command line says about the model: backbone, weights, head, device, mode and how often to detect."""

    backbone: str = "blazepose"
    checkpoint: str | Path | None = None
    head: str | Path | None = None
    device: str = "cpu"
    mode: str = "cached"
    label_aware: bool = True
    redetect_every: int = 1
    denoise: bool = True
    deblur: bool = True
    temporal_median: bool = True
    shot_cuts: bool = True
    trim_bars: bool = True
    deinterlace: bool = True


PredictorFactory = Callable[[PredictOptions], "Predictor"]


def build_predictor(options: PredictOptions) -> Predictor:
    """The Predictor the options describe (`Predictor.create`)."""
    from model.pipeline.config import InferConfig
    from model.pipeline.predictor import Predictor

    config = InferConfig(mode=options.mode, label_aware=options.label_aware,  # type: ignore[arg-type]
                         redetect_every=options.redetect_every, denoise=options.denoise, deblur=options.deblur,
                         temporal_median=options.temporal_median, shot_cuts=options.shot_cuts,
                         trim_bars=options.trim_bars, deinterlace=options.deinterlace)
    return Predictor.create(backbone=options.backbone, checkpoint=options.checkpoint, head=options.head,
                            device=options.device, config=config)


def _output_video(pred: Video, inp: PredictInput) -> Video:
    """Predictions dressed with the template's ids, file names and flags (what evaluation pairs on)."""
    if inp.template is None:
        return replace(inp.video, frames=pred.frames)
    meta = inp.template.frame_map()
    frames = [replace(meta[f.index], persons=f.persons) if f.index in meta else f for f in pred.frames]
    return replace(inp.video, frames=frames, extra=dict(inp.template.extra))


def _check_outputs(inp_paths: Sequence[str | Path | None], outputs: Sequence[str | Path | None]) -> None:
    """Refuse to overwrite an input, a folder or an unwritable place before the slow part runs."""
    try:
        check_outputs(inp_paths, outputs)
    except CheckError as exc:
        raise PredictInputError(str(exc)) from None


def _check_frames_not_outputs(reader: object, outputs: Sequence[str | Path | None]) -> None:
    """Refuse an output that is one of the frame images read (a folder's, or those a PoseTrack JSON lists)."""
    files = getattr(reader, "files", ())  # FolderSource: a list; the frames a JSON lists: index -> path
    try:
        check_frames_not_outputs(files.values() if isinstance(files, dict) else files, outputs)
    except CheckError as exc:
        raise PredictInputError(str(exc)) from None


def run_predict(
    input_path: str | Path,
    out_path: str | Path,
    *,
    labels: str | Path | None = None,
    use_labels: bool = True,
    images_root: str | Path | None = None,
    options: PredictOptions = PredictOptions(),
    frames: slice | Sequence[int] | None = None,
    render: str | Path | None = None,
    progress: bool | Callable[[int, int], None] = False,
    predictor_factory: PredictorFactory | None = None,
) -> Video:
    """Predict the keypoints of INPUT and write them as PoseTrack 2018 JSON (and an overlay video).

    Args:
        input_path: a video file, a frame folder, an image file or a PoseTrack JSON (see the module docstring).
        out_path: the prediction JSON to write.
        labels: a PoseTrack JSON of human labels for the video (replaces a JSON input's own labels).
        use_labels: use human labels at all (False: `--no-labels`).
        images_root: the folder a JSON input's `file_name`s are relative to.
        options: the model (`Predictor.create`).
        frames: the frames to predict (a slice or indices); default every frame.
        render: also write an overlay video (mp4v) of the predicted frames here.
        progress: True for a tqdm bar, or a callable(done, total).
        predictor_factory: builds the Predictor from `options` (default `build_predictor`); it is
            closed when the run ends.

    Returns:
        The predictions as written.

    Raises:
        PredictInputError, VideoError, AnnotationFormatError, FileNotFoundError,
        model.checkpoint.CheckpointError: see `main` (each is a one-line error there).
    """
    if options.mode not in MODES:
        raise PredictInputError(f"--mode must be cached or exact, got {options.mode!r}")
    _check_device(options.device)
    _check_outputs([input_path, labels, options.checkpoint, options.head], [out_path, render])
    if render is not None and Path(render).suffix.lower() not in VIDEO_SUFFIXES:
        # checked now: OpenCV's writer fails only once the prediction has run
        raise PredictInputError(f"--render {render}: give a video file name ending in {', '.join(VIDEO_SUFFIXES)}")
    inp = load_input(input_path, labels=labels, use_labels=use_labels, images_root=images_root)
    predictor = None
    try:
        _check_frames_not_outputs(inp.reader, [out_path, render])
        wanted = select_frames(frames, inp.video.num_frames)
        predictor = (predictor_factory or build_predictor)(options)
        started = time.perf_counter()
        pred = predictor.predict_video(
            inp.video, inp.known, frames=wanted, reader=inp.reader, progress=progress
        )
        out = _output_video(pred, inp)
        posetrack.dump_2018(out, out_path)
        logger.info(
            "%s: %d frames, %d persons in %.1f s (%s) -> %s", out.name, len(out.frames),
            sum(len(f.persons) for f in out.frames), time.perf_counter() - started, predictor.version, out_path,
        )  # fmt: skip
        if render is not None:
            from model.cli.render import render_video

            render_video(inp.reader, out, render, inp.video.fps, frames=wanted, progress=progress is True)
    finally:
        inp.reader.close()
        if predictor is not None:
            predictor.close()
    return out


# ------------------------------------------------------------------------------------------- CLI


def register_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    """Adds the `predict` command."""
    parser = subparsers.add_parser(
        name, help="keypoints for a video, frame folder, image or PoseTrack JSON",
        description="Keypoints for a video file, frame folder, one image or PoseTrack JSON, written as PoseTrack 2018 "
        "JSON. A JSON INPUT's labelled frames are used as human labels unless --no-labels.",
    )  # fmt: skip
    parser.add_argument("input", type=Path, help="video file, frame folder, image file or PoseTrack JSON")
    parser.add_argument("--out", type=Path, required=True, help="prediction file to write (PoseTrack 2018 JSON)")
    parser.add_argument("--labels", type=Path, help="PoseTrack JSON of human labels for the video")
    parser.add_argument("--no-labels", action="store_true", help="ignore the labels of a JSON INPUT")
    parser.add_argument("--images-root", type=Path, help="folder a JSON INPUT's file names are relative to")
    parser.add_argument("--backbone", default=None, choices=BACKBONE_NAMES,
                        help="rough pose estimator (default: movenet for a .json checkpoint, blazepose for another; "
                             "with none, movenet where `make movenet` fetched it, else blazepose)")
    parser.add_argument("--checkpoint", type=Path, help="backbone weights (hrnet_w48: HRNet or official DCPose file; yolo11_pose: a yolo11n-pose.pt; movenet: movenet-thunder.json, default weights/)")
    parser.add_argument("--head", type=Path, help="DCPose head checkpoint; without one, backbone-only")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--mode", default="cached", choices=MODES,
                        help="cached: one backbone pass per person-frame (default); exact: released 3 crops")
    parser.add_argument("--no-label-aware", action="store_true", help="do not feed human labels to the head")
    parser.add_argument("--redetect-every", type=functools.partial(positive_int, unit="frames"), default=1,
                        metavar="N",
                        help="where no label reaches, run the person detector every N frames and follow people "
                        "between (default 1: every frame, finds the most people; 10: 2.3x faster on one person)")
    parser.add_argument("--no-deinterlace", action="store_true",
                        help="use interlaced frames as decoded, both fields woven (default: a pan's fields are aligned "
                        "and the parts still combed get one field's rows)")
    parser.add_argument("--no-denoise", action="store_true",
                        help="use grainy frames as they are (default: filtered first; faster, fewer people found)")
    parser.add_argument("--no-deblur", action="store_true",
                        help="use frames smeared by a pan or a shaken camera as they are (default: deconvolved "
                        "where they show a steady smear; sharp frames are used as they are)")
    parser.add_argument("--no-temporal-median", action="store_true",
                        help="keep each frame's joints as the model placed them (default: a joint the model alone "
                        "placed goes to the median of its positions on the frames before and after and its own)")
    parser.add_argument("--no-shot-cuts", action="store_true",
                        help="predict the video as one shot (default: cuts to another shot are found and each shot "
                        "is predicted on its own, so that no person, label or track id is carried across a cut)")
    parser.add_argument("--no-trim-bars", action="store_true",
                        help="look for people on the whole frame (default: inside black bars, or a blurred copy of "
                        "the picture around it, the detectors and the noise filter look at the picture alone)")
    parser.add_argument("--frames", type=str, help="frames a:b to predict (default all)")
    parser.add_argument("--render", type=Path, help="also write an overlay video here (.mp4, .avi, .mov, .m4v or .mkv; mp4v codec)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details and tracebacks")
    parser.set_defaults(handle=handle, log_level="WARNING")


def _one_line(exc: BaseException) -> str:
    """The error as one line; a checkpoint mismatch keeps its headline, counts and one example."""
    from model.checkpoint import CheckpointMismatchError

    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if isinstance(exc, CheckpointMismatchError):
        counts = (len(exc.missing), len(exc.unexpected), len(exc.shape_mismatches))
        text = "{} missing keys, {} unexpected keys, {} shape mismatches".format(*counts)
        if exc.shape_mismatches:
            key, got, want = exc.shape_mismatches[0]
            text += f", e.g. {key} {list(got)} vs {list(want)}"
        return f"{lines[0]}: {text}"
    return "; ".join(lines) or type(exc).__name__


@contextlib.contextmanager
def _quiet_native_logs() -> Iterator[None]:
    """Silence OpenCV's and FFmpeg's own stderr chatter ("moov atom not found") for one-line errors."""
    level = cv2.getLogLevel()
    had = os.environ.get(_FFMPEG_LOG)
    os.environ.setdefault(_FFMPEG_LOG, "-8")  # AV_LOG_QUIET, read when FFmpeg opens a file
    cv2.setLogLevel(2)  # errors only
    try:
        yield
    finally:
        cv2.setLogLevel(level)
        if had is None:
            os.environ.pop(_FFMPEG_LOG, None)


def handle(args: argparse.Namespace, *, predictor_factory: PredictorFactory | None = None) -> int:
    """Runs the command: 0, or 2 with a one-line message on stderr."""
    quiet = contextlib.nullcontext() if args.verbose else _quiet_native_logs()
    backbone = args.backbone or default_backbone(args.checkpoint)
    options = PredictOptions(backbone=backbone, checkpoint=args.checkpoint, head=args.head,
                             device=args.device, mode=args.mode, label_aware=not args.no_label_aware,
                             redetect_every=args.redetect_every, denoise=not args.no_denoise,
                             deblur=not args.no_deblur,
                             temporal_median=not args.no_temporal_median, shot_cuts=not args.no_shot_cuts,
                             trim_bars=not args.no_trim_bars, deinterlace=not args.no_deinterlace)
    try:
        with quiet:
            run_predict(
                args.input, args.out, labels=args.labels, use_labels=not args.no_labels,
                images_root=args.images_root, options=options,
                frames=parse_frames(args.frames) if args.frames is not None else None,
                render=args.render, progress=not args.no_progress, predictor_factory=predictor_factory,
            )  # fmt: skip
    # ValueError covers PredictInputError, AnnotationFormatError, CheckpointError and bad values found
    # deeper (frame ranges, head/backbone mismatch); ImportError covers a missing mediapipe.
    except (ValueError, VideoError, OSError, ImportError) as exc:
        logger.info("prediction failed", exc_info=True)  # the traceback, with -v
        sys.stderr.write(f"error: {_one_line(exc)}\n")
        return EXIT_USAGE
    return 0
