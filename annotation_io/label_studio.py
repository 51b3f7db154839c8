"""Label Studio formats: labelling config, frame-task data, result items <-> Persons, validation.

Label Studio (LS) stores region geometry in percent of the original image (x = px / width * 100);
percentages exist only in this module, everything it returns is in pixels (Label Studio 1.23's payloads). One LS task is one video frame; a person is a `rectanglelabels` box, its joints are
`keypointlabels` regions pointing at the box through `parentID`, and its track id is a per-region
`textarea` result that reuses the box id.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from annotation_io.errors import AnnotationFormatError
from annotation_io.ls_config import (  # noqa: F401  (re-exported: one import place for LS formats)
    JOINT_COLOURS,
    ConfigError,
    FrameTask,
    ImageSize,
    LabelConfig,
    _integer,
    _is_number,
    default_config,
    joint_of_name,
    label_config,
    parse_config,
    parse_task,
    task_data,
)
from annotation_io.ls_grouping import Keypoint as _Keypoint
from annotation_io.ls_grouping import assign_to_boxes as _assign
from annotation_io.ls_grouping import group_boxless as _group_boxless
from annotation_io.types import Box, Person

logger = logging.getLogger(__name__)

# Percentages are rounded to this many decimals when written, so that LS -> pixels -> LS gives the
# very numbers LS sent (x / 100 * w / w * 100 is not always x in floating point). 1e-10 % of an
# image is far below a pixel.
PERCENT_DIGITS = 10
_BOX_KEYS = ("x", "y", "width", "height")
# A track id typed in a TextArea: optional sign, decimal digits (str patterns' \d is what int() reads).
_TRACK_TEXT = re.compile(r"[+-]?\d+")


# ----------------------------------------------------------------------------- result items

# LS-only fields kept in Person.extra so that LS -> Person -> LS reproduces the items: per slot the
# keypoint region ids, `origin` and display width; the box and track `origin`; slots without a
# `score` in a scored person; and (as_labels) the scores moved out of the Person.
_EXTRA_IDS, _EXTRA_ORIGIN, _EXTRA_WIDTH = "ls_keypoint_ids", "ls_origin", "ls_keypoint_widths"
_EXTRA_BOX_ORIGIN, _EXTRA_TRACK_ORIGIN, _EXTRA_UNSCORED = "ls_box_origin", "ls_track_origin", "ls_unscored"
_EXTRA_SCORES, _EXTRA_BOX_SCORE = "ls_scores", "ls_box_score"


@dataclass(frozen=True)
class _At:
    """The result item being read: its index, the item and the task/annotation, for errors."""

    i: int
    item: Any
    source: str | None

    def error(self, msg: str) -> AnnotationFormatError:
        rid = self.item.get("id") if isinstance(self.item, dict) else None
        ref = f" (region id {rid!r})" if rid is not None else ""
        return AnnotationFormatError(f"{msg}{ref}", source=self.source, where=f"result[{self.i}]")

    def value(self) -> dict:
        value = self.item.get("value")
        if not isinstance(value, dict):
            raise self.error("has no 'value' object")
        angle = self.item.get("image_rotation")
        if angle not in (None, 0):
            raise self.error(f"image_rotation = {angle!r}: only unrotated images are supported")
        return value

    def rotation(self) -> float:
        """value.rotation in degrees (0 when absent); a value that is not a finite number is refused."""
        angle = self.item["value"].get("rotation")
        if angle is None:
            return 0.0
        if not _is_number(angle):
            raise self.error(f"value.rotation must be a finite number of degrees, got {angle!r}")
        return float(angle)

    def numbers(self, *keys: str) -> list[float]:
        value = self.item["value"]
        bad = [key for key in keys if not _is_number(value.get(key))]
        if bad:
            raise self.error(f"value.{bad[0]} must be a finite number, got {value.get(bad[0])!r}")
        return [float(value[key]) for key in keys]

    def box(self) -> list[float]:
        """x, y, width, height of a box (percent); a box without area is refused, not read as no person."""
        x, y, w, h = self.numbers(*_BOX_KEYS)
        for key, extent in (("width", w), ("height", h)):
            if extent <= 0:
                got = self.item["value"][key]
                raise self.error(f"value.{key} must be positive, got {got!r}: a person box needs an area")
        return [x, y, w, h]

    def person_box(self, size: ImageSize) -> Box:
        """The person box in pixels, as the annotator drew it.

        A box dragged past its opposite edge (negative width/height) spans the same pixels; a rotated
        one (Label Studio turns it about its top-left corner, clockwise on screen) stands for its
        axis-aligned bounding box; the box is clipped to the image. A box without area is refused,
        not read as no person.
        """
        x, y, w, h = self.numbers(*_BOX_KEYS)
        for key, extent in (("width", w), ("height", h)):
            if extent == 0:
                raise self.error(f"value.{key} is {self.item['value'][key]!r}: a person box needs an area")
        sx, sy = size.width / 100.0, size.height / 100.0
        corners = [(0.0, 0.0), (w * sx, 0.0), (w * sx, h * sy), (0.0, h * sy)]
        if (angle := self.rotation() % 360.0) != 0.0:
            c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            corners = [(u * c - v * s, u * s + v * c) for u, v in corners]
        xs, ys = [x * sx + u for u, _ in corners], [y * sy + v for _, v in corners]
        box = Box(min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)).clip(size.width, size.height)
        if box.area <= 0:
            raise self.error(f"person box at x={x}, y={y} % lies outside the {size.width}x{size.height} image")
        return box

    def label(self, key: str) -> str:
        """The region's one label; several different ones are refused (which joint or person would it be?)."""
        labels = self.item["value"].get(key)
        if not isinstance(labels, list) or not labels or not all(isinstance(v, str) for v in labels):
            raise self.error(f"value.{key} must be a non-empty list of label strings, got {labels!r}")
        if len(set(labels)) > 1:
            raise self.error(f"value.{key} has {len(set(labels))} labels {labels!r}: a region needs exactly one")
        return labels[0]

    def track_id(self, track_type: str) -> int | None:
        """Track id of a per-region textarea (`text`) or number result; None when left empty.

        Text is an optionally signed integer in decimal digits (any script: "٣" is 3) with spaces
        around it. A TextArea without maxSubmissions keeps every submission: several different
        non-empty texts are refused (which one is the track?); blank ones are left out.
        """
        raw = self.item["value"].get("number" if track_type == "number" else "text")
        if isinstance(raw, list):
            texts = [v.strip() if isinstance(v, str) else v for v in raw]
            texts = [v for v in texts if v not in (None, "")]
            if len(set(map(repr, texts))) > 1:
                raise self.error(f"track id has {len(texts)} different values {raw!r}: keep one")
            raw = texts[0] if texts else None
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if isinstance(raw, str) and _TRACK_TEXT.fullmatch(raw.strip()):
            return int(raw.strip())
        if not isinstance(raw, (str, bool)) and _integer(raw) is not None:
            return _integer(raw)
        raise self.error(f"track id {raw!r} is not an integer")


def _image_size(picked: list[tuple[_At, str]], source: str | None) -> ImageSize | None:
    """The one (original_width, original_height) that the pose items carry; None when none carries it.

    Only the pose controls' items count: another <Image> of the task may have another size.
    """
    sizes = set()
    for at, _ in picked:
        item = at.item
        if "original_width" in item or "original_height" in item:
            w, h = _integer(item.get("original_width")), _integer(item.get("original_height"))
            if w is None or h is None or w <= 0 or h <= 0:
                raise at.error("original_width/original_height must be positive integers")
            sizes.add(ImageSize(w, h))
    if len(sizes) > 1:
        raise AnnotationFormatError(
            f"items disagree on the original image size: {sorted(sizes)}", source=source
        )
    return sizes.pop() if sizes else None


def _pick(results: list, config: LabelConfig, source: str | None, strict: bool) -> list[tuple[_At, str]]:
    """(item, role) of the items of the pose controls; others are skipped, or errors when strict."""
    if not isinstance(results, list):
        raise AnnotationFormatError("result must be a list of region objects", source=source, where="result")
    roles = config.role_types()
    picked = []
    for i, item in enumerate(results):
        at = _At(i, item, source)
        if not isinstance(item, dict):
            raise at.error("is not a JSON object")
        name = item.get("from_name")
        role, rtype = roles.get(name, (None, None)) if isinstance(name, str) else (None, None)
        if role is None and strict:
            controls = ", ".join(roles)
            raise at.error(f"unknown from_name {item.get('from_name')!r} (config controls: {controls})")
        if role is None:
            logger.debug("%s: skipping result[%d] of control %r", source, i, item.get("from_name"))
            continue
        if item.get("to_name") != config.image_name and (strict or item.get("to_name") is not None):
            raise at.error(f"unknown to_name {item.get('to_name')!r} (expected {config.image_name!r})")
        if item.get("type") != rtype:
            raise at.error(
                f"type {item.get('type')!r} does not match control {item['from_name']!r} ({rtype})"
            )
        at.value()
        picked.append((at, role))
    return picked


def results_to_persons(
    results: list[dict],
    config: LabelConfig | None = None,
    *,
    source: str | None = None,
    image_size: ImageSize | None = None,
    as_labels: bool = False,
) -> tuple[list[Person], ImageSize]:
    """Converts LS result items (a prediction's or an annotation's `result`) into Persons in pixels.

    Boxes become persons (region_id = box id, score = box score). Keypoints join the box their
    `parentID` names; a keypoint without one (drawn by hand) joins the smallest box containing
    it, else the nearest box, skipping boxes that already have that joint. Without any box
    (keypoints-only configs), keypoints form box-less persons by their region ids
    (`_group_boxless`). A per-region track result reusing a box id sets that
    person's track_id. Every keypoint region is a visible joint (v = 2): LS has no occlusion flag.
    Items of other controls are ignored.

    Args:
        results: LS result items.
        config: the project's parsed config; None means `default_config()`.
        source: task/annotation id for error messages.
        image_size: used when no item carries original_width/original_height.
        as_labels: read the result as human labels: Person.scores/score stay None even for regions
            that kept a prediction's score (kept in extra["ls_scores"] for round trips). Otherwise
            a person gets `scores` (0 for unscored joints) when any of its keypoints has a score.

    Returns:
        The persons, and the original image size (ImageSize(0, 0) for an empty result without
        `image_size`).

    Raises:
        AnnotationFormatError: a malformed item, a box without id or without area, a parentID
            naming no region, a joint twice in one person, or no original image size.
    """
    config = config or default_config()
    picked = _pick(results, config, source, strict=False)
    size = _image_size(picked, source) or image_size
    if size is None:
        if picked:
            raise AnnotationFormatError(
                "no item has original_width/original_height", source=source, where="result"
            )
        return [], ImageSize(0, 0)
    sx, sy = size.width / 100.0, size.height / 100.0  # percent -> pixels

    boxes: dict[str, tuple[Box, dict]] = {}
    others: set[str] = set()  # boxes of the person control's other labels (ignore regions): not persons
    for at, role in picked:
        if role == "box":
            label = at.label("rectanglelabels")
            if label != config.person_label and label not in config.other_box_labels:
                raise at.error(f"box label {label!r} is not {config.person_label!r}")
            if at.item.get("id") is None or str(at.item["id"]) in boxes or str(at.item["id"]) in others:
                raise at.error("a person box needs an id of its own")
            if label != config.person_label:
                others.add(str(at.item["id"]))
                continue
            boxes[str(at.item["id"])] = (at.person_box(size), at.item)
    keypoints: list[_Keypoint] = []
    tracks: dict[str, tuple[int | None, dict]] = {}
    for at, role in picked:
        if role == "kp":
            label = at.label("keypointlabels")
            if label in config.unmapped:  # a label of the config that names no joint (stock templates' "Face")
                logger.debug("%s: result[%d]: label %r names no joint; skipped", source, at.i, label)
                continue
            if label not in config.joint_labels:
                raise at.error(f"unknown joint label {label!r}")
            x, y = at.numbers("x", "y")
            parent = at.item.get("parentID")
            parent = None if parent in (None, "") else str(parent)
            keypoints.append(_Keypoint(at, config.joint_labels[label], x * sx, y * sy, parent))
        elif role == "track":
            rid = str(at.item.get("id"))
            if rid in others:
                continue
            if rid not in boxes or rid in tracks:
                raise at.error("a track id result must reuse the id of one person box, once")
            tracks[rid] = (at.track_id(config.track_type), at.item)
    if boxes:
        members = _assign(keypoints, boxes, config.slot_labels)
    else:
        members = _group_boxless(keypoints, config.slot_labels)
    persons = [_person(members[b], boxes[b], tracks.get(b), as_labels) for b in boxes]
    persons += [_person(joints, None, None, as_labels) for g, joints in members.items() if g not in boxes]
    return persons, ImageSize(size.width, size.height)


def _person(
    joints: dict[int, _Keypoint],
    box: tuple[Box, dict] | None,
    track: tuple[int | None, dict] | None,
    as_labels: bool,
) -> Person:
    box_item = {} if box is None else box[1]
    person = Person(box=None if box is None else box[0])
    person.region_id = None if box_item.get("id") is None else str(box_item["id"])
    scored: dict[int, float] = {}
    for slot, k in sorted(joints.items()):
        person.keypoints[slot] = (k.x, k.y, 2.0)
        item = k.at.item
        for key, value in ((_EXTRA_IDS, item.get("id")), (_EXTRA_ORIGIN, item.get("origin")),
                           (_EXTRA_WIDTH, item["value"].get("width"))):  # fmt: skip
            if value is not None:
                person.extra.setdefault(key, {})[slot] = value
        if _is_number(item.get("score")):
            scored[slot] = float(item["score"])
    box_score = float(box_item["score"]) if _is_number(box_item.get("score")) else None
    if as_labels:
        person.extra.update({k: v for k, v in ((_EXTRA_SCORES, scored), (_EXTRA_BOX_SCORE, box_score)) if v})
    else:
        person.score = box_score
        if scored:
            person.scores = np.zeros(len(person.keypoints))
            person.scores[list(scored)] = list(scored.values())
            if unscored := sorted(set(joints) - set(scored)):
                person.extra[_EXTRA_UNSCORED] = unscored
    if track is not None:
        person.track_id = track[0]
        if track[1].get("origin") is not None:
            person.extra[_EXTRA_TRACK_ORIGIN] = track[1]["origin"]
    if box_item.get("origin") is not None:
        person.extra[_EXTRA_BOX_ORIGIN] = box_item["origin"]
    return person


def _slot_get(mapping: Any, slot: int) -> Any:
    """mapping[slot], also when the mapping went through JSON and its keys became strings."""
    if not isinstance(mapping, dict):
        return None
    return mapping.get(slot, mapping.get(str(slot)))


def _pct(px: float, full: int) -> float:
    return round(min(max(px / full * 100.0, 0.0), 100.0), PERCENT_DIGITS)


def persons_to_results(
    persons: list[Person],
    width: int,
    height: int,
    config: LabelConfig | None = None,
    *,
    keypoint_width: float = 0.6,
    id_prefix: str | None = None,
) -> list[dict]:
    """Converts Persons (pixels) into LS result items (Label Studio 1.23's payloads).

    Per person: a `rectanglelabels` box (with `score` when known), one `keypointlabels` item per
    joint with v > 0 that the config has a label for (ears have none), each with `parentID` = box
    id and, for predictions, `score`; then a per-region track result reusing the box id. Geometry
    is clipped to the image. A keypoints-only config gets no boxes and keypoints without parentID.

    Order (drag-first): every keypoint of every person, THEN each box followed by its track item.
    Label Studio 1.23 draws the first result item on top (its region sort reverses the list), so
    this puts every box beneath every keypoint and a joint inside a box takes the mouse first. Ids: Person.region_id (and extra["ls_keypoint_ids"]) when set, else
    f"{id_prefix}p{i}" for the box and f"{box_id}_k{slot}" for joints (slot: 17-slot index).

    Args:
        persons: persons on the frame.
        width, height: original image size in pixels.
        config: the project's parsed config; None means `default_config()`.
        keypoint_width: keypoint display size in % of the image width (LS's own kept if known).
        id_prefix: prefix for generated ids (keeps them unique across several result lists).

    Raises:
        AnnotationFormatError: bad image size, or a present joint with a non-finite coordinate.
    """
    config = config or default_config()
    w, h = _integer(width), _integer(height)
    if w is None or h is None or w <= 0 or h <= 0:
        raise AnnotationFormatError(f"image size must be positive integers, got {width!r} x {height!r}")

    def region(rid: str, from_name: str, rtype: str, value: dict, **opt: Any) -> dict:
        item: dict[str, Any] = {"id": rid, "from_name": from_name, "to_name": config.image_name}
        item["type"] = rtype
        item.update({k: v for k, v in opt.items() if k in ("origin", "parentID") and v is not None})
        item.update(original_width=w, original_height=h, image_rotation=0)
        if opt.get("score") is not None:
            item["score"] = float(opt["score"])
        item["value"] = value
        return item

    out: list[dict] = []  # keypoints; boxes and tracks go to `boxes`, appended last
    boxes: list[dict] = []
    with_boxes = config.person_from_name is not None
    for i, (p, box_id) in enumerate(zip(persons, region_ids(persons, w, h, config, id_prefix=id_prefix), strict=True)):
        if box_id is None:
            logger.debug("person %d: box %s lies outside the %dx%d image; not written", i, p.box, w, h)
            continue
        geometry: dict[str, Any] = {}
        if p.box is not None and with_boxes:
            b = p.box.clip(w, h)
            geometry = {"x": _pct(b.x, w), "y": _pct(b.y, h), "width": _pct(b.w, w), "height": _pct(b.h, h)}
            geometry["rotation"] = 0
            score = p.score if p.score is not None else p.extra.get(_EXTRA_BOX_SCORE)
            value = {**geometry, "rectanglelabels": [config.person_label]}
            boxes.append(region(box_id, str(config.person_from_name), "rectanglelabels", value,
                                score=score, origin=p.extra.get(_EXTRA_BOX_ORIGIN)))  # fmt: skip
        unscored = set(p.extra.get(_EXTRA_UNSCORED, ()))
        for slot, label in sorted(config.slot_labels.items()):
            x, y, v = p.keypoints[slot]
            if v <= 0:
                continue
            if not (math.isfinite(x) and math.isfinite(y)):
                raise AnnotationFormatError(f"person {i} ({box_id}): joint {label!r} is at ({x}, {y})")
            if p.scores is not None:
                score = None if slot in unscored else float(p.scores[slot])
            else:
                score = _slot_get(p.extra.get(_EXTRA_SCORES), slot)
            kp_width = _slot_get(p.extra.get(_EXTRA_WIDTH), slot)
            value = {"x": _pct(x, w), "y": _pct(y, h), "width": kp_width or keypoint_width}
            value["keypointlabels"] = [label]
            kp_id = _slot_get(p.extra.get(_EXTRA_IDS), slot) or f"{box_id}_k{slot}"
            origin = _slot_get(p.extra.get(_EXTRA_ORIGIN), slot)
            out.append(region(kp_id, config.keypoint_from_name, "keypointlabels", value,
                              score=score, parentID=box_id if geometry else None, origin=origin))  # fmt: skip
        if p.track_id is not None and config.track_from_name and geometry:
            key = "number" if config.track_type == "number" else "text"
            value = {**geometry, key: int(p.track_id) if key == "number" else [str(p.track_id)]}
            boxes.append(region(box_id, config.track_from_name, config.track_type, value,
                                origin=p.extra.get(_EXTRA_TRACK_ORIGIN)))  # fmt: skip
        elif p.track_id is not None:
            logger.debug("person %d: track id %s not written (no box or no track control)", i, p.track_id)
    return out + boxes


def region_ids(
    persons: list[Person], width: int, height: int, config: LabelConfig | None = None, *, id_prefix: str | None = None
) -> list[str | None]:
    """The box id `persons_to_results` gives each person (its keypoints' ids and parentID derive from it).

    Person.region_id when set, else f"{id_prefix}p{i}" (with "_" appended while it clashes with a kept
    id); None for a person it does not write: its box lies wholly outside the image (a box carried past
    the frame edge would go out with no area, a region LS shows as a dot and the webhook refuses).
    Label Studio keeps these ids on the regions an annotator left or moved, so they tell which
    predicted person a submitted one is (`backend.services.corrections.match_persons`).
    """
    config = config or default_config()
    with_boxes = config.person_from_name is not None
    used = {p.region_id for p in persons if p.region_id}
    ids: list[str | None] = []
    for i, p in enumerate(persons):
        if p.box is not None and with_boxes and p.box.clip(width, height).area <= 0:
            ids.append(None)
            continue
        box_id = p.region_id or f"{id_prefix or ''}p{i}"
        while not p.region_id and box_id in used:  # a new person beside regions kept from LS
            box_id += "_"
        used.add(box_id)
        ids.append(box_id)
    return ids


def validate_results(
    results: list[dict], config: LabelConfig | None = None, *, source: str | None = None
) -> None:
    """Checks result items against the config (LS itself accepts any from_name or label, §9.6).

    Raises:
        AnnotationFormatError: the first bad item: unknown from_name/to_name/type/label, geometry
            outside 0..100 %, a box without area, rotation, missing original_width/original_height, a
            parentID or track result naming no region, or a track id that is not an integer.
    """
    config = config or default_config()
    picked = _pick(results, config, source, strict=True)
    ids = {str(at.item["id"]) for at, _ in picked if at.item.get("id") is not None}
    box_ids = {str(at.item.get("id")) for at, role in picked if role == "box"}
    for at, role in picked:
        for key in ("original_width", "original_height"):
            size = _integer(at.item.get(key))
            if size is None or size <= 0:
                raise at.error(f"{key} is missing or not a positive integer: {at.item.get(key)!r}")
        if at.item.get("parentID") is not None and str(at.item["parentID"]) not in ids:
            raise at.error(f"parentID {at.item['parentID']!r} names no region")
        if role == "track":
            if str(at.item.get("id")) not in box_ids:
                raise at.error("track id result reuses no person box id")
            at.track_id(config.track_type)
            continue
        if role == "box" and at.rotation() != 0:
            raise at.error(f"value.rotation = {at.item['value']['rotation']!r}: predictions are unrotated boxes")
        known = [config.person_label] if role == "box" else list(config.joint_labels)
        if (label := at.label("rectanglelabels" if role == "box" else "keypointlabels")) not in known:
            expected = ", ".join(known)
            raise at.error(f"unknown label {label!r} for {at.item['from_name']!r} (expected: {expected})")
        x, y, span_x, span_y = at.box() if role == "box" else (*at.numbers("x", "y"), 0.0, 0.0)
        for name, start, span in (("x", x, span_x), ("y", y, span_y)):
            if not (-1e-6 <= start and span >= 0 and start + span <= 100 + 1e-6):
                raise at.error(f"value.{name} = {start} (+ {span}) is outside 0..100 % of the image")
