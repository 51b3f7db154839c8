"""Persons in the database: the JSON of the `persons` columns of predictions and annotations.

Keypoints are pixels of the original frame. JSON has no NaN (PostgreSQL's json type refuses it):
missing values are written as null (`annotation_io.jsonio.finite_json`) and read back as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from annotation_io.errors import AnnotationFormatError
from annotation_io.jsonio import finite_json
from annotation_io.skeletons import NUM_KEYPOINTS
from annotation_io.types import Box, Person


def _floats_json(values: Any) -> Any:
    """Numbers (or nested lists of them) as floats, NaN/inf as None."""
    array = np.asarray(values, dtype=np.float64)
    # tolist() gives plain floats; only a table holding NaN/inf needs the walk that replaces them.
    return array.tolist() if np.isfinite(array).all() else finite_json(array.tolist())


def _box_json(box: Box | None) -> list[float | None] | None:
    return None if box is None else _floats_json(box.xywh)


def persons_to_json(persons: Sequence[Person]) -> list[dict[str, Any]]:
    """Persons as JSON-ready dicts (the `persons` columns of predictions and annotations)."""
    out = []
    for i, p in enumerate(persons):
        out.append(
            {
                "track_id": p.track_id,
                "keypoints": _floats_json(p.keypoints),
                "scores": None if p.scores is None else _floats_json(p.scores),
                "box": _box_json(p.box),
                "head_box": _box_json(p.head_box),
                "score": None if p.score is None else _floats_json(p.score),
                "region_id": p.region_id,
                "extra": finite_json(p.extra, f"persons[{i}].extra"),
            }
        )
    return out


def _box_from(value: Any, where: str) -> Box | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 4:
        raise AnnotationFormatError("box must be [x, y, w, h]", where=where)
    return Box(*(math.nan if v is None else float(v) for v in value))


def _floats(value: Any, where: str) -> np.ndarray:
    try:
        return np.array([[math.nan if v is None else v for v in row] for row in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AnnotationFormatError(f"not a table of numbers: {exc}", where=where) from exc


def persons_from_json(data: Sequence[dict[str, Any]], *, source: str | None = None) -> list[Person]:
    """Inverse of `persons_to_json`.

    Raises:
        AnnotationFormatError: not a list, an entry is not a person dict, or has a wrong shape or a value that
            is no number (names which).
    """
    if not isinstance(data, (list, tuple)):
        raise AnnotationFormatError(f"persons must be a list, got {type(data).__name__}", source=source)
    persons = []
    for i, item in enumerate(data):
        where = f"persons[{i}]"
        if not isinstance(item, dict) or "keypoints" not in item:
            raise AnnotationFormatError("expected a dict with 'keypoints'", source=source, where=where)
        kp = _floats(item["keypoints"], f"{where}.keypoints")
        if kp.shape != (NUM_KEYPOINTS, 3):
            raise AnnotationFormatError(
                f"keypoints must be {NUM_KEYPOINTS} rows of [x, y, v], got shape {kp.shape}",
                source=source,
                where=f"{where}.keypoints",
            )
        scores = item.get("scores")
        sc = None if scores is None else _floats([scores], f"{where}.scores")[0]
        if sc is not None and sc.shape != (NUM_KEYPOINTS,):
            raise AnnotationFormatError(
                f"scores must have {NUM_KEYPOINTS} values, got {sc.shape[0]}",
                source=source,
                where=f"{where}.scores",
            )
        score, extra = item.get("score"), item.get("extra") or {}
        if not isinstance(extra, dict):
            raise AnnotationFormatError(f"extra must be an object, got {type(extra).__name__}", source=source,
                                        where=f"{where}.extra")  # fmt: skip
        try:  # the callers skip a row that raises AnnotationFormatError; a ValueError here was an HTTP 500
            persons.append(
                Person(
                    keypoints=kp,
                    scores=sc,
                    track_id=None if item.get("track_id") is None else int(item["track_id"]),
                    box=_box_from(item.get("box"), f"{where}.box"),
                    head_box=_box_from(item.get("head_box"), f"{where}.head_box"),
                    score=None if score is None else float(score),
                    region_id=item.get("region_id"),
                    extra=dict(extra),
                )
            )
        except AnnotationFormatError:
            raise
        except (TypeError, ValueError) as exc:  # a box, score or track id that is no number
            raise AnnotationFormatError(f"not a number: {exc}", source=source, where=where) from exc
    return persons
