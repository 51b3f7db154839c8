"""`python -m model COMMAND ...`: one entry point for the model's command lines; logging is set up here once.

Each command is a module with ``register_parser(subparsers, name)`` (which sets ``handle`` and
``log_level`` as parser defaults) and ``handle(args, **seams) -> int``. Only the module of the command
being run is imported, so ``python -m model predict`` never imports the benchmarks, and heavy imports
(torch, mediapipe) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["COMMANDS", "build_parser", "configure_logging", "main"]

# command -> (module, one-line help shown by `python -m model --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("model.cli.predict", "keypoints for a video, frame folder, image or PoseTrack JSON"),
    "train": ("model.cli.train", "train a DCPose head on labelled videos (head only, backbone frozen)"),
    "bench": ("model.bench.nets", "backbone, head and DCNv2 timings, parameters, memory"),
    "bench-video": ("model.bench.video", "cached/exact cost and accuracy on synthetic videos"),
    "bench-real": ("model.bench.real", "recall, limb joints within 0.1 x box diagonal and AP on real stills"),
    "propagation-overlay": ("model.bench.overlay", "draw a frame whose keypoints were carried from labels"),
}


def configure_logging(level: str) -> None:
    """The one logging setup of the model's command lines (a no-op where the host already set one)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported (the others get a placeholder with their help)."""
    parser = argparse.ArgumentParser(prog="python -m model", description=(__doc__ or "").splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if name == command:
            importlib.import_module(module).register_parser(subparsers, name)
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None, **seams: Any) -> int:
    """Parses, sets up logging, runs the command; returns its exit status (2 for bad arguments).

    Args:
        argv: the arguments after ``python -m model``; default `sys.argv[1:]`.
        seams: passed to the command's ``handle`` (e.g. ``predictor_factory=`` for predict,
            ``backbone_factory=`` for train): where tests put their own model.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on bad arguments, 0 on --help
        return int(exc.code or 0)
    level = "INFO" if getattr(args, "verbose", False) else args.log_level
    configure_logging(level)
    return int(args.handle(args, **seams))
