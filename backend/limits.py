"""Limits on client input (ids, nesting, numbers, frames, persons, keypoints, coordinates), checked at intake.

Every limit is a setting (`backend.settings.Settings`, environment variable in capitals) and every
refusal is a `LimitError` (HTTP 400) whose message names the field and the limit, so a client can
tell what to change. Checks run before anything is stored or computed: a hostile payload costs a
walk over the JSON, never a database row, a frame set or a model call. No Flask here.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from annotation_io.errors import AnnotationFormatError

MAX_ID = 2**63 - 1  # ids are stored as 64-bit integers (BIGINT on PostgreSQL)
MAX_TEXT_CHARS = 512  # a video_id or project title (VARCHAR(512) on PostgreSQL)
TRACK_IDS = (-(2**31), 2**31 - 1)  # corrections.track_id is INTEGER: 32-bit on PostgreSQL
PERSON_TYPES = frozenset({"rectanglelabels", "rectangle"})
KEYPOINT_TYPES = frozenset({"keypointlabels", "keypoint"})
_PERCENT_FIELDS = ("x", "y", "width", "height")
_FLOAT_DIGITS = len(str(int(sys.float_info.max)))  # 309: the digits of the largest float
_PLAIN_NUMBERS = (int, float)  # exact types (bool is an int subclass, not one of them)


class LimitError(ValueError):
    """Client input beyond a configured limit or outside what the service can store (an HTTP 400)."""


@dataclass(frozen=True)
class Limits:
    """The input limits (defaults fit PoseTrack videos and crowded scenes with room to spare).

    Attributes:
        max_video_frames: MAX_VIDEO_FRAMES: `data.nframes` (and frame_index) of a frame task.
        max_persons_per_annotation: MAX_PERSONS_PER_ANNOTATION: person boxes in one result.
        max_keypoints_per_annotation: MAX_KEYPOINTS_PER_ANNOTATION: keypoints in one result.
        max_persons_per_task: MAX_PERSONS_PER_TASK: boxes over all results a task carries.
        max_keypoints_per_task: MAX_KEYPOINTS_PER_TASK: keypoints over all results a task carries.
        max_predict_tasks: MAX_PREDICT_TASKS: tasks in one /predict, task ids in one /preannotate.
        max_json_depth: MAX_JSON_DEPTH: nesting of a request body.
        coordinate_tolerance_pct: COORDINATE_TOLERANCE_PCT: how far (in percent of the image)
            a region may reach outside the image before it is refused.
    """

    max_video_frames: int = 100_000
    max_persons_per_annotation: int = 100
    max_keypoints_per_annotation: int = 2_000
    max_persons_per_task: int = 200
    max_keypoints_per_task: int = 4_000
    max_predict_tasks: int = 1_000
    max_json_depth: int = 32
    coordinate_tolerance_pct: float = 2.0


def parse_id(value: Any, where: str) -> int:
    """A positive 64-bit id from an int or a string of ASCII digits ("²" and "٣" are not digits here).

    Raises:
        LimitError: anything else, naming `where`.
    """
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= 19:
            number = int(text)
    if number is None:
        raise LimitError(f"{where} must be an integer id, got {_short(value)}")
    if not 1 <= number <= MAX_ID:
        raise LimitError(f"{where} must be an id between 1 and 2**63-1, got {_short(value)}")
    return number


def check_json(value: Any, *, max_depth: int) -> None:
    """Refuses nesting deeper than MAX_JSON_DEPTH and non-finite numbers (walks without recursion).

    Raises:
        LimitError: the first offending place.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                raise LimitError(f"the JSON nests deeper than MAX_JSON_DEPTH={max_depth}")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, float) and not math.isfinite(item):
            raise LimitError(f"numbers must be finite, got {item!r}")


def check_depth(value: Any, *, max_depth: int) -> None:
    """Refuses nesting deeper than MAX_JSON_DEPTH, visiting only the containers (as `check_json` counts depth).

    For a value parsed with `finite_float` and a refusal of NaN/Infinity, which leave no non-finite
    number for `check_json` to find.

    Raises:
        LimitError: the value nests deeper.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise LimitError(f"the JSON nests deeper than MAX_JSON_DEPTH={max_depth}")
        for child in item.values() if type(item) is dict else item:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))


def check_text(value: Any) -> None:
    """Refuses strings (keys included) that no database stores as text: JSON's escapes can spell a lone UTF-16
    surrogate ("\\ud800"), which parses but cannot be encoded as UTF-8, and NUL ("\\u0000"), which PostgreSQL
    text refuses.

    Raises:
        LimitError: the first such string, naming where it is.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():  # the key is popped (checked) before anything under it names it
                stack.append((child, f"{where}.{key}" if where else str(key)))
                stack.append((key, f"a key in {where or 'the body'}"))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
        elif isinstance(item, str):
            if "\x00" in item:
                raise LimitError(f"{where}: strings must not contain NUL (\\u0000), got {_short(item)}")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise LimitError(f"{where}: strings must be valid Unicode, got {_short(item)} "
                                 "(a lone UTF-16 surrogate)") from None  # fmt: skip


def check_length(text: str, where: str) -> None:
    """Refuses text longer than MAX_TEXT_CHARS (a video_id or project title: VARCHAR(512) on PostgreSQL).

    Raises:
        LimitError: naming `where` and the length.
    """
    if len(text) > MAX_TEXT_CHARS:
        raise LimitError(f"{where} is {len(text)} characters long; at most {MAX_TEXT_CHARS}")


def finite_float(text: str) -> float:
    """`json.loads(..., parse_float=finite_float)`: a JSON number that overflows to infinity is refused.

    Raises:
        LimitError: the number is beyond float range (1e999).
    """
    value = float(text)
    if not math.isfinite(value):
        raise LimitError(f"numbers must be finite, got {text[:40]}")
    return value


def finite_int(text: str) -> int:
    """`json.loads(..., parse_int=finite_int)`: an integer beyond float range is refused, as `finite_float`
    refuses 1e999 (every `float()` of it overflows: a score, an fps, a track id, a learning rate).

    Raises:
        LimitError: the integer is beyond float range (about 1.8e308), named by its number of digits.
    """
    digits = len(text) - text.startswith("-")
    if digits > _FLOAT_DIGITS or (digits == _FLOAT_DIGITS and abs(int(text)) > sys.float_info.max):
        raise LimitError(f"numbers must be within float range (about 1.8e308), got a {digits}-digit integer")
    return int(text)


def check_frame_fields(data: Mapping[str, Any], limits: Limits, where: str) -> None:
    """Refuses a task's `nframes` / `frame_index` beyond MAX_VIDEO_FRAMES and a `video_id` longer than
    MAX_TEXT_CHARS (other checks are the converter's).

    Raises:
        LimitError: a value over the limit.
    """
    video_id = data.get("video_id")
    if isinstance(video_id, (str, int)):
        check_length(str(video_id), f"{where}.video_id")  # stored as str(video_id)
    for key in ("nframes", "frame_index"):
        value = data.get(key)
        number = _number(value)
        if number is not None and abs(number) > limits.max_video_frames:
            raise LimitError(f"{where}.{key}={_short(value)} exceeds MAX_VIDEO_FRAMES={limits.max_video_frames}")


def count_regions(result: Any, limits: Limits, where: str) -> tuple[int, int]:
    """(persons, keypoints) of one LS result list, refusing regions outside the image.

    Raises:
        LimitError: a region reaching more than COORDINATE_TOLERANCE_PCT outside the image, or an
            image size that is not a positive number.
    """
    persons = keypoints = 0
    if not isinstance(result, list):
        return 0, 0
    low, high = -limits.coordinate_tolerance_pct, 100.0 + limits.coordinate_tolerance_pct
    for i, item in enumerate(result):
        if not isinstance(item, dict):
            continue
        kind = _kind(item)
        person = kind in PERSON_TYPES
        persons += person
        keypoints += kind in KEYPOINT_TYPES
        _check_region(item, person, low, high, limits, where, i)
    return persons, keypoints


def check_result(result: Any, limits: Limits, where: str) -> tuple[int, int]:
    """Counts one annotation's regions against the per-annotation limits; returns (persons, keypoints).

    Raises:
        LimitError: too many persons or keypoints, or a region outside the image.
    """
    persons, keypoints = count_regions(result, limits, where)
    _at_most(persons, limits.max_persons_per_annotation, f"{where}: person boxes", "MAX_PERSONS_PER_ANNOTATION")
    _at_most(keypoints, limits.max_keypoints_per_annotation, f"{where}: keypoints", "MAX_KEYPOINTS_PER_ANNOTATION")
    return persons, keypoints


def check_task(task: Mapping[str, Any], limits: Limits, where: str) -> None:
    """Checks a task: its frame fields and the annotations, drafts and predictions it carries (a draft is
    read as human labels when the task has one, like an annotation).

    Raises:
        LimitError: a limit broken (named in the message).
    """
    if isinstance(task.get("data"), Mapping):
        check_frame_fields(task["data"], limits, f"{where}.data")
    persons = keypoints = 0
    for key in ("annotations", "drafts", "predictions"):
        for j, entry in enumerate(_as_list(task.get(key))):
            if isinstance(entry, Mapping):
                p, k = check_result(entry.get("result"), limits, f"{where}.{key}[{j}].result")
                persons, keypoints = persons + p, keypoints + k
    _at_most(persons, limits.max_persons_per_task, f"{where}: person boxes", "MAX_PERSONS_PER_TASK")
    _at_most(keypoints, limits.max_keypoints_per_task, f"{where}: keypoints", "MAX_KEYPOINTS_PER_TASK")


def check_tasks(tasks: Iterable[Any], limits: Limits) -> None:
    """Checks the tasks of a /predict: their number, ids, projects and contents.

    Raises:
        LimitError: a limit broken (named in the message).
    """
    tasks = list(tasks)
    _at_most(len(tasks), limits.max_predict_tasks, "tasks in one request", "MAX_PREDICT_TASKS")
    seen: dict[int, int] = {}  # task id -> its first place
    for i, task in enumerate(tasks):
        if not isinstance(task, Mapping):
            continue
        if task.get("id") is not None:
            task_id = parse_id(task["id"], f"tasks[{i}].id")
            if task_id in seen:  # the answers are matched to tasks by id: both places got the last one's
                raise LimitError(f"tasks[{i}].id {task_id} is the id of tasks[{seen[task_id]}] too; send each "
                                 "task once")  # fmt: skip
            seen[task_id] = i
        project = task.get("project")
        if project is not None and not (isinstance(project, str) and "." in project):
            parse_id(project, f"tasks[{i}].project")
        check_task(task, limits, f"tasks[{i}]")


def check_track_ids(persons: Iterable[Any], source: str) -> None:
    """Refuses a person (human label) whose track id the database cannot store (`TRACK_IDS`): a correction
    keeps the track id, and PostgreSQL refused 3000000000 only when the event was processed, after its 201.

    Args:
        persons: `annotation_io.types.Person`s, as `results_to_persons` returns them.
        source: where they come from ("annotation 7", "task 101"), named in the error.

    Raises:
        AnnotationFormatError: the first track id out of range, with its box's region id.
    """
    low, high = TRACK_IDS
    for person in persons:
        track = person.track_id
        if track is not None and not low <= track <= high:
            raise AnnotationFormatError(f"track id {_short(track)} of person box {person.region_id!r} is outside "
                                        "-2**31 to 2**31-1, the range a track id is stored in", source=source)  # fmt: skip


def check_context(context: Any, limits: Limits) -> None:
    """Checks /predict's interactive context (`params.context`): its `result` stands for the task's regions,
    so it is held to the per-annotation limits.

    Raises:
        LimitError: too many persons or keypoints, or a region outside the image.
    """
    if isinstance(context, Mapping):
        check_result(context.get("result"), limits, "params.context.result")


def _check_region(item: Mapping[str, Any], person: bool, low: float, high: float, limits: Limits, where: str,
                  index: int) -> None:  # fmt: skip
    """Checks one region (`where` and `index` name it in an error; the message is built only then)."""
    for key in ("original_width", "original_height"):
        size = item.get(key)
        if size is not None and not (type(size) in _PLAIN_NUMBERS and 0 < size <= 1_000_000):
            size = _number(size)
            if size is None or not 0 < size <= 1_000_000:
                raise LimitError(f"{where}[{index}].{key} must be a positive image size, got {_short(item[key])}")
    value = item.get("value")
    if not isinstance(value, Mapping):
        return
    numbers = [_number(value.get(key)) for key in _PERCENT_FIELDS]  # x, y, width, height
    for key, number in zip(_PERCENT_FIELDS, numbers, strict=True):
        if number is not None and not low <= (number if key in ("x", "y") else abs(number)) <= high:
            raise LimitError(f"{where}[{index}].value.{key}={_short(value.get(key))} is outside the image (0-100 % "
                             f"with COORDINATE_TOLERANCE_PCT={limits.coordinate_tolerance_pct})")  # fmt: skip
    if not person:
        return
    for (origin, extent), start, size in ((("x", "width"), numbers[0], numbers[2]),
                                          (("y", "height"), numbers[1], numbers[3])):  # fmt: skip
        size = _turned_extent(item, value, numbers, origin == "x", size)
        if start is not None and size is not None and start + size > high:
            raise LimitError(f"{where}[{index}].value: {origin} + {extent} = {start + size:g} % reaches outside the "
                             f"image (COORDINATE_TOLERANCE_PCT={limits.coordinate_tolerance_pct})")  # fmt: skip


def _turned_extent(item: Mapping[str, Any], value: Mapping[str, Any], numbers: list[float | None], along_x: bool,
                   size: float | None) -> float | None:  # fmt: skip
    """A box's extent (percent of the image) right of its x, or below its y, as drawn: Label Studio turns a box by
    `value.rotation` degrees about its top-left corner, so a box turned near the right or bottom edge reaches
    less far (or further) than x + width. None where it cannot be told (no image size to turn percentages
    with): the parser then clips the box to the image and refuses one wholly outside it."""
    angle = _number(value.get("rotation"))
    if not angle or size is None or math.isclose(angle % 360.0, 0.0, abs_tol=1e-9):
        return size
    width, height, w, h = (_number(item.get("original_width")), _number(item.get("original_height")),
                           numbers[2], numbers[3])  # fmt: skip
    if not width or not height or w is None or h is None or not math.isfinite(angle):
        return None
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    u, v = w * width / 100.0, h * height / 100.0  # the box's sides in pixels
    if along_x:
        return max(0.0, u * c, u * c - v * s, -v * s) * 100.0 / width
    return max(0.0, u * s, u * s + v * c, v * c) * 100.0 / height


def _kind(item: Mapping[str, Any]) -> str:
    kind = item.get("type")
    return kind if isinstance(kind, str) else ""


def _at_most(count: int, limit: int, what: str, name: str) -> None:
    if count > limit:
        raise LimitError(f"{what}: {count} exceeds {name}={limit}")


def _number(value: Any) -> float | None:
    if type(value) is float:  # the common case first (JSON numbers with a fraction)
        return value
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if isinstance(value, float) or abs(value) < 2**1000 else math.inf


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
