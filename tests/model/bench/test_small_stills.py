"""`scripts.small_stills`: the real stills shrunk four to a large frame, their annotations moved with them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from model.bench.real import load_stills
from scripts.small_stills import CANVAS, GREY, main

STILLS = Path(__file__).resolve().parents[2] / "assets" / "real-stills"  # four of the shared set


def test_four_stills_make_one_mosaic_whose_people_lie_where_their_pixels_went(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "small"
    assert main(["--data", str(STILLS), "--scale", "0.5", "--out", str(out)]) == 0
    sources = load_stills(STILLS)
    people = sum(len(video.frames[0].persons) for video, _ in sources)
    assert f"1 mosaics, {people} people, scale 0.5 -> {out}" in capsys.readouterr().out
    ((mosaic, canvas),) = load_stills(out)
    assert canvas.shape == (CANVAS[1], CANVAS[0], 3)
    persons = mosaic.frames[0].persons
    assert len(persons) == people and [p.track_id for p in persons] == list(range(people))
    index = 0
    for slot, (video, image) in enumerate(sources):
        dx, dy = (slot % 2) * CANVAS[0] // 2, (slot // 2) * CANVAS[1] // 2
        k = min(0.5, CANVAS[0] / 2 / image.shape[1], CANVAS[1] / 2 / image.shape[0])
        h, w = round(image.shape[0] * k), round(image.shape[1] * k)
        quarter = canvas[dy : dy + h, dx : dx + w].astype(float)
        shrunk = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA).astype(float)
        change = np.abs(quarter - shrunk).mean()  # the still itself (saved as JPEG) ...
        assert change < 10 and change < 0.3 * np.abs(quarter - shrunk[:, ::-1]).mean()  # ... not any picture
        assert np.abs(canvas[dy + h + 2 : dy + CANVAS[1] // 2, dx : dx + w].astype(float) - GREY).mean() < 2
        for person in video.frames[0].persons:
            moved = persons[index]
            index += 1
            seen = person.keypoints[:, 2] > 0
            assert np.array_equal(moved.keypoints[:, 2] > 0, seen) and seen.any()
            np.testing.assert_allclose(moved.keypoints[seen, :2], person.keypoints[seen, :2] * k + (dx, dy), atol=0.01)
            np.testing.assert_allclose(moved.box.xyxy, np.array(person.box.xyxy) * k + (dx, dy, dx, dy), atol=0.01)
    assert index == people


def test_bad_requests_are_refused_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(STILLS), "--scale", "0", "--out", str(tmp_path / "o")]) == 1
    assert "--scale must lie in 0.05..1, got 0.0" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["--data", str(STILLS), "--out", str(taken)]) == 1
    assert "holds more than an earlier run's output" in capsys.readouterr().err
    assert (taken / "notes.txt").read_text() == "mine"
    assert main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 1
    assert "is not a stills folder" in capsys.readouterr().err
    broken = tmp_path / "broken"
    (broken / "annotations" / "val").mkdir(parents=True)
    (broken / "annotations" / "val" / "a.json").write_text('{"images": [], "annotations": 5}')
    assert main(["--data", str(broken), "--out", str(tmp_path / "o")]) == 1
    assert "holds an annotation file this cannot read" in capsys.readouterr().err
    assert main(["--data", str(STILLS), "--out", str(STILLS)]) == 1
    assert "--out is the --data folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
