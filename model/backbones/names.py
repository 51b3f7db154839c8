"""The one home of backbone names: cheap to import (no torch), shared by the CLIs, settings and the factory.

Adding a backbone: add its name to `BackboneName`, a class satisfying `model.backbones.base.Backbone`,
and a branch in `model.backbones.factory.build_backbone`.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

__all__ = ["BACKBONE_NAMES", "BackboneName", "check_backbone_name", "hrnet_width"]

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
