"""Tests of model.bench.real: the real-stills scorer and the command's errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from annotation_io.types import Box, Frame, Person
from model.bench.real import box_only, score_frame
from model.cli.main import main


def _person(offset: float, box: Box | None = None) -> Person:
    kps = np.zeros((17, 3))
    kps[5:, 0] = 100 + np.arange(12) * 10 + offset
    kps[5:, 1] = 200
    kps[5:, 2] = 2
    return Person(kps, track_id=0, box=box or Box(90, 100, 140, 300))


def test_score_frame_matches_one_prediction_per_person() -> None:
    gt = Frame(0, [_person(0.0), _person(400.0, Box(490, 100, 140, 300))])
    near = _person(5.0)  # within 0.1 x diagonal (33 px) of the first person: 12/12
    far = _person(200.0)  # nobody's
    score = score_frame(gt, Frame(0, [far, near]))
    assert (score.joints_ok, score.joints, score.found, score.found_half, score.people) == (12, 24, 1, 1, 2)
    assert score.within == pytest.approx(50.0)
    # Two people cannot share one prediction.
    twin = Frame(0, [_person(0.0), _person(1.0)])
    assert score_frame(twin, Frame(0, [near])).joints_ok == 12
    assert score_frame(gt, None).joints_ok == 0


def test_box_only_keeps_boxes_and_drops_keypoints() -> None:
    from annotation_io.types import Video

    video = Video("v", 1, [Frame(0, [_person(0.0), _person(400.0)])])
    (frame,) = box_only(video).frames
    assert [p.box for p in frame.persons] == [p.box for p in video.frames[0].persons]
    assert not any(p.present.any() for p in frame.persons) and frame.is_labeled


def test_command_reports_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench-real", "--data", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "no annotations/val/*.json" in out
    assert "--data DIR" in out and "tests/assets/real-stills" in out  # says where the data can come from
    assert main(["bench-real", "--checkpoint", str(tmp_path / "missing.pth")]) == 2


def test_command_benches_the_backbones_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench-real", "--data", str(tmp_path), "--backbone", "yolo11_pose"]) == 2
    assert "no annotations/val/*.json" in capsys.readouterr().out
    # hrnet_w48 needs its weights: it is benched through --checkpoint, not named by --backbone.
    assert main(["bench-real", "--backbone", "hrnet_w48"]) == 2
    assert "invalid choice: 'hrnet_w48'" in capsys.readouterr().err


def test_command_reports_malformed_annotations_and_checkpoints(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """On main, these ended in a traceback (exit 1) instead of a message and exit 2."""
    (tmp_path / "annotations" / "val").mkdir(parents=True)
    bad = tmp_path / "annotations" / "val" / "a.json"
    bad.write_text('{"images": [')
    assert main(["bench-real", "--data", str(tmp_path)]) == 2
    assert f"bench-real: {bad}: line 1 column 13: invalid JSON" in capsys.readouterr().out
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    bad.write_text('{"images": [], "annotations": [], "categories": []}')
    assert main(["bench-real", "--data", str(tmp_path)]) == 2
    assert f"bench-real: {bad}: names no image" in capsys.readouterr().out
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((48, 64, 3), 90, np.uint8))
    bad.write_text('{"images": [{"id": 1, "file_name": "a.jpg", "frame_id": 1, "vid_id": "1", "nframes": 1,'
                   ' "is_labeled": true}], "annotations": [], "categories": []}')  # fmt: skip
    assert main(["bench-real", "--data", str(tmp_path), "--checkpoint", str(garbage)]) == 2
    assert f"bench-real: {garbage}: cannot be read as a checkpoint" in capsys.readouterr().out
