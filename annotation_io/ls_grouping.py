"""Which person a keypoint region joins: its box (parentID, else the box holding it), or, boxless, by region id.

Used by `annotation_io.label_studio.results_to_persons`; coordinates are pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from annotation_io.types import Box


@dataclass
class Keypoint:
    """One keypoint region being read: its result item, 17-slot joint, pixel position and parentID."""

    at: Any  # the result item being read (label_studio._At): its item and error()
    slot: int
    x: float  # pixels
    y: float
    parent: str | None


def group_boxless(keypoints: list[Keypoint], names: dict[int, str]) -> dict[str | None, dict[int, Keypoint]]:
    """People without boxes (keypoints-only configs): group id -> slot -> keypoint.

    Keypoints whose region id reads "<person>_k<slot>" (ours, kept by LS when a prediction becomes an
    annotation) form one person per "<person>"; any other keypoint (drawn by hand) joins the person
    without that joint whose joints' centre is nearest, else starts a person of its own.
    """
    groups: dict[str | None, dict[int, Keypoint]] = {}
    loose = []
    for k in keypoints:
        stem, sep, slot = str(k.at.item.get("id") or "").rpartition("_k")
        if not (sep and stem and slot.isdigit()):
            loose.append(k)
        elif k.slot in groups.setdefault(stem, {}):
            raise k.at.error(f"joint {names[k.slot]!r} twice in person {stem!r} and no person box")
        else:
            groups[stem][k.slot] = k

    def distance(group: dict[int, Keypoint], k: Keypoint) -> float:
        cx = sum(j.x for j in group.values()) / len(group)
        cy = sum(j.y for j in group.values()) / len(group)
        return math.hypot(cx - k.x, cy - k.y)

    for i, k in enumerate(loose):
        free = [g for g, joints in groups.items() if joints and k.slot not in joints]
        target = min(free, key=lambda g: distance(groups[g], k)) if free else f"drawn{i}"
        groups.setdefault(target, {})[k.slot] = k
    return groups


def assign_to_boxes(
    keypoints: list[Keypoint], boxes: dict[str, tuple[Box, dict]], names: dict[int, str]
) -> dict[str | None, dict[int, Keypoint]]:
    """Box id (None: the box-less person) -> slot -> keypoint."""
    members: dict[str | None, dict[int, Keypoint]] = {box_id: {} for box_id in boxes}
    by_id = {str(k.at.item["id"]): k for k in keypoints if k.at.item.get("id") is not None}
    orphans = []
    for k in keypoints:
        parent, seen = k.parent, set()
        # A keypoint dragged under another keypoint in the Regions panel: follow up to the box.
        while parent is not None and parent not in boxes:
            if parent not in by_id or parent in seen:
                raise k.at.error(f"parentID {parent!r} names no person box")
            seen.add(parent)
            parent = by_id[parent].parent
        if parent is None:
            orphans.append(k)
        elif k.slot in members[parent]:
            raise k.at.error(f"person box {parent!r} has joint {names[k.slot]!r} twice")
        else:
            members[parent][k.slot] = k
    for k in orphans:
        # Hand-drawn keypoints have no parentID (Label Studio 1.23's payloads): smallest box that
        # contains the point first, then the others by distance; a box keeps its own joint.
        def rank(box_id: str, k: Keypoint = k) -> tuple[int, float]:
            box = boxes[box_id][0]
            return (0, box.area) if box.contains(k.x, k.y) else (1, box.distance_to(k.x, k.y))

        free = [b for b in sorted(boxes, key=rank) if k.slot not in members[b]]
        if not free:
            raise k.at.error(f"{names[k.slot]!r} has no parentID and every person box has that joint already")
        else:
            members[free[0]][k.slot] = k
    return members
