"""Tests of backend.limits: ids, JSON depth and finiteness, frames, region counts and coordinates."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.limits import (
    MAX_ID,
    LimitError,
    Limits,
    check_depth,
    check_json,
    check_result,
    check_tasks,
    finite_float,
    parse_id,
)
from backend.settings import Settings, SettingsError


@pytest.mark.parametrize("value, expected", [(1, 1), ("42", 42), (" 7 ", 7), (MAX_ID, MAX_ID), (str(MAX_ID), MAX_ID)])
def test_parse_id_accepts_positive_64_bit_ascii_ids(value: object, expected: int) -> None:
    assert parse_id(value, "id") == expected


@pytest.mark.parametrize("value", [0, -1, MAX_ID + 1, "9" * 40, "²", "٣", "1.5", 1.0, True, None, "", [1], "0x10"])
def test_parse_id_refuses_everything_else_naming_the_field(value: object) -> None:
    with pytest.raises(LimitError, match="task.id"):
        parse_id(value, "task.id")


def test_check_json_depth_and_finite_numbers() -> None:
    nested: object = []
    for _ in range(40):
        nested = [nested]
    with pytest.raises(LimitError, match="MAX_JSON_DEPTH=32"):
        check_json({"a": nested}, max_depth=32)
    check_json({"a": [[1.5, {"b": 2}]]}, max_depth=4)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(LimitError, match="finite"):
            check_json({"a": [1, {"b": bad}]}, max_depth=32)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None)
@given(value=st.dictionaries(st.text(max_size=4), JSON_VALUES, max_size=4), max_depth=st.integers(1, 8))
def test_check_depth_refuses_what_check_json_refuses(value: dict, max_depth: int) -> None:
    """The request path's depth check (containers only) draws the line where the full walk does."""
    refused = []
    for check in (check_json, check_depth):
        try:
            check(value, max_depth=max_depth)
            refused.append(False)
        except LimitError:
            refused.append(True)
    assert refused[0] == refused[1]


def test_non_finite_numbers_are_refused_while_parsing() -> None:
    assert json.loads('{"a": [1.5, -2e300]}', parse_float=finite_float) == {"a": [1.5, -2e300]}
    for text in ('{"a": 1e999}', '{"a": [-1e400]}'):
        with pytest.raises(LimitError, match="finite"):
            json.loads(text, parse_float=finite_float)


def _keypoint(x: float, y: float) -> dict:
    return {"type": "keypointlabels", "value": {"x": x, "y": y, "width": 0.5}, "original_width": 100,
            "original_height": 100}  # fmt: skip


def test_regions_are_counted_and_must_lie_in_the_image() -> None:
    limits = Limits(max_keypoints_per_annotation=3, coordinate_tolerance_pct=2.0)
    assert check_result([_keypoint(0, 0), _keypoint(101.5, -1.9)], limits, "r") == (0, 2)
    with pytest.raises(LimitError, match="MAX_KEYPOINTS_PER_ANNOTATION=3"):
        check_result([_keypoint(1, 1)] * 4, limits, "r")
    for x, y in ((-50, 1), (250, 1), (1, 1e12), (102.5, 50)):
        with pytest.raises(LimitError, match="outside the image"):
            check_result([_keypoint(x, y)], limits, "r")
    box = {"type": "rectanglelabels", "value": {"x": 90, "y": 0, "width": 30, "height": 10}}
    with pytest.raises(LimitError, match="x \\+ width"):
        check_result([box], limits, "r")
    with pytest.raises(LimitError, match="original_width"):
        check_result([{**_keypoint(1, 1), "original_width": 0}], limits, "r")


def test_a_turned_box_is_held_to_the_extent_it_covers() -> None:
    """Label Studio turns a box about its top-left corner. A box at x=90 % 30 % wide turned 90 degrees (on a
    200x100 image) hangs down from its corner inside the image; its unrotated x + width (120 %) was refused
    at intake although the annotation reader takes turned boxes. Turned the other way, it reaches outside."""
    limits = Limits(coordinate_tolerance_pct=2.0)

    def box(rotation: float, **size: int) -> dict:
        return {"type": "rectanglelabels", "value": {"x": 90, "y": 10, "width": 30, "height": 8,
                                                      "rotation": rotation}, **size}  # fmt: skip

    image = {"original_width": 200, "original_height": 100}
    assert check_result([box(90, **image)], limits, "r") == (1, 0)  # 60 px of width turned downward: y 10 -> 70 %
    assert check_result([box(450, **image)], limits, "r") == (1, 0)
    with pytest.raises(LimitError, match=r"y \+ height = 130 % reaches outside"):  # 120 px down a 100 px image
        check_result([box(90, original_width=400, original_height=100)], limits, "r")
    with pytest.raises(LimitError, match=r"x \+ width = 120 % reaches outside"):
        check_result([box(0, **image)], limits, "r")
    with pytest.raises(LimitError, match=r"x \+ width = 120.927 % reaches outside"):  # turned up-right
        check_result([box(-20, original_width=100, original_height=100)], limits, "r")
    assert check_result([box(90)], limits, "r") == (1, 0)  # no image size: the reader clips it


def test_tasks_frames_and_count() -> None:
    limits = Limits(max_video_frames=100, max_predict_tasks=2)
    check_tasks([{"id": 1, "data": {"nframes": 100, "frame_index": 99}}], limits)
    with pytest.raises(LimitError, match="nframes=101 exceeds MAX_VIDEO_FRAMES=100"):
        check_tasks([{"id": 1, "data": {"nframes": 101}}], limits)
    with pytest.raises(LimitError, match="MAX_PREDICT_TASKS=2"):
        check_tasks([{}, {}, {}], limits)
    with pytest.raises(LimitError, match=r"tasks\[0\].id"):
        check_tasks([{"id": 2**64}], limits)
    with pytest.raises(LimitError, match=r"tasks\[1\].id 7 is the id of tasks\[0\] too"):
        check_tasks([{"id": 7}, {"id": "7"}], limits)


def test_limits_are_settings() -> None:
    settings = Settings.from_env({"MAX_VIDEO_FRAMES": "500", "MAX_JSON_DEPTH": "8", "COORDINATE_TOLERANCE_PCT": "0"})
    assert settings.limits == Limits(max_video_frames=500, max_json_depth=8, coordinate_tolerance_pct=0.0)
    with pytest.raises(SettingsError, match="MAX_PREDICT_TASKS"):
        Settings.from_env({"MAX_PREDICT_TASKS": "0"})
    with pytest.raises(SettingsError, match="MAX_PERSONS_PER_TASK"):
        Settings.from_env({"MAX_PERSONS_PER_TASK": "many"})
