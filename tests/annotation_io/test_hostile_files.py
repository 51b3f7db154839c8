"""Annotation files of the wrong shape through `python -m annotation_io.evaluate`: exit status 2 and one
line naming the file and the field, never a traceback or a value read as something else."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from annotation_io import posetrack
from annotation_io.errors import AnnotationFormatError
from annotation_io.evaluate import main

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PT18_GT = ASSETS / "posetrack18_gt.json"


def _error(capsys: pytest.CaptureFixture[str], gt: Path, pred: Path) -> str:
    """Run the evaluate CLI expecting exit status 2; returns its one-line message."""
    assert main([str(gt), str(pred)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _mutated(tmp_path: Path, name: str, change: Callable[[dict[str, Any]], None]) -> Path:
    data = json.loads(PT18_GT.read_text())
    change(data)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_an_integer_too_large_for_a_double_is_an_error_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: OverflowError: int too large to convert to float (a traceback, exit 1)."""
    text = PT18_GT.read_text()
    data = json.loads(text)
    data["annotations"][0]["keypoints"][0] = 10**400
    big = tmp_path / "big.json"
    big.write_text(json.dumps(data))
    err = _error(capsys, PT18_GT, big)
    assert f"{big}: annotations[0].keypoints[0]: number too large: an integer of 401 digits" in err, err
    pt17 = tmp_path / "pt17.json"
    pt17.write_text(json.dumps({"annolist": [{"imgnum": [1], "annorect": [
        {"annopoints": [{"point": [{"id": [0], "x": [10**400], "y": [1]}]}]}]}]}))
    with pytest.raises(AnnotationFormatError, match=r"annorect\[0\]\.annopoints\[0\]\.point\[0\]\.x: number too large"):
        posetrack.load(pt17)
    # beyond Python's 4300-digit limit the JSON decoder itself refuses the number
    digits = tmp_path / "digits.json"
    digits.write_text(text.replace('"nframes": 3', '"nframes": 1' + "0" * 5000, 1))
    assert f"{digits}: invalid JSON: Exceeds the limit (4300 digits)" in _error(capsys, PT18_GT, digits)


def test_json_nested_too_deeply_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: RecursionError: maximum recursion depth exceeded while decoding a JSON array (a traceback)."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert f"{deep}: invalid JSON: arrays or objects nested too deeply" in _error(capsys, PT18_GT, deep)


def test_a_category_whose_keypoints_are_not_a_list_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: TypeError: 'NoneType' object is not iterable (a traceback)."""
    bad = _mutated(tmp_path, "cat.json", lambda d: d["categories"][0].update(keypoints=None))
    assert f"{bad}: categories[0].keypoints: expected an array, got null" in _error(capsys, PT18_GT, bad)


def test_is_labeled_as_a_string_is_refused_not_read_as_true(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "false" (any non-empty string) loaded as is_labeled=True: an unlabelled frame became a
    human label saying "nobody here", which predict passes to the model as a known frame."""
    bad = _mutated(tmp_path, "flag.json", lambda d: d["images"][1].update(is_labeled="false"))
    err = _error(capsys, bad, PT18_GT)
    assert f"{bad}: images[1].is_labeled: expected true/false (or 0/1), got 'false'" in err, err
    numbers = _mutated(tmp_path, "numbers.json", lambda d: [im.update(is_labeled=k % 2) for k, im in
                                                             enumerate(d["images"])])
    assert [f.is_labeled for f in posetrack.load(numbers).frames] == [False, True, False]


def test_image_sizes_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: width -320 and height 0 loaded as the video's size without a word."""
    bad = _mutated(tmp_path, "size.json", lambda d: [im.update(width=-320, height=240) for im in d["images"]])
    err = _error(capsys, PT18_GT, bad)
    assert f"{bad}: images[0].width: expected a positive number of pixels, got -320" in err, err
    good = _mutated(tmp_path, "sized.json", lambda d: [im.update(width=320, height=240) for im in d["images"]])
    assert (posetrack.load(good).width, posetrack.load(good).height) == (320, 240)


def test_ground_truth_without_any_person_is_an_error_not_a_table_of_nan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: exit 0 with every AP NaN ("0 frame(s)"), an answer that says nothing."""
    empty = _mutated(tmp_path, "empty.json", lambda d: d.update(annotations=[]))
    err = _error(capsys, empty, PT18_GT)
    assert f"GT {empty} has no frame with an annotated person: nothing to evaluate" in err, err
