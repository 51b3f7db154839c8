"""The one home of backbone names and of the default one: cheap to import (no torch), shared by the CLIs,
settings and the factory.

Adding a backbone: add its name to `BackboneName`, a class satisfying `model.backbones.base.Backbone`,
and a branch in `model.backbones.factory.build_backbone`.
"""

from __future__ import annotations

import os
import re
from typing import Literal, get_args

__all__ = ["BACKBONE_NAMES", "BackboneName", "check_backbone_name", "default_backbone", "hrnet_width"]

BackboneName = Literal["blazepose", "movenet", "yolo11_pose", "hrnet_w48", "hrnet_w32"]
BACKBONE_NAMES: tuple[str, ...] = get_args(BackboneName)
_HRNET_NAME = re.compile(r"hrnet_w(\d+)")


def hrnet_width(name: str) -> int | None:
    """The width of an "hrnet_w<width>" name (any width: tiny ones serve tests), else None."""
    match = _HRNET_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def check_backbone_name(name: str) -> str:
    """`name` if it names a backbone ("blazepose", "movenet", "yolo11_pose" or "hrnet_w<width>"), else ValueError naming the choices."""
    if name in ("blazepose", "movenet", "yolo11_pose") or hrnet_width(name) is not None:
        return name
    raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONE_NAMES)} or 'hrnet_w<width>'")


def default_backbone(checkpoint: str | os.PathLike[str] | None = None) -> str:
    """The backbone used when none is named.

    A checkpoint names its backbone by its kind: MoveNet's graph (``.json``) is movenet's; any other file is
    taken as blazepose's (its one checkpoint, BlazePose's heavy landmark model, is a ``.tflite``; anything
    else is refused there with a message saying to name the backbone). With no checkpoint: "movenet" where
    its weights were fetched (``make movenet``, ``weights/movenet-thunder.json``), else "blazepose", whose
    weights come with mediapipe. MoveNet places more limb joints on real images than BlazePose, in less
    time per box (README, "Backbones"), but its weights are a setup step; BlazePose always works offline.
    """
    from model.backbones.movenet_weights import DEFAULT_WEIGHTS  # stdlib only

    if checkpoint is not None:
        return "movenet" if str(checkpoint).lower().endswith(".json") else "blazepose"
    return "movenet" if DEFAULT_WEIGHTS.is_file() else "blazepose"
