"""`scripts.turned_stills`: the real stills turned a quarter, half or three-quarter turn, annotations with them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from model.bench.real import load_stills
from scripts.turned_stills import main, turn_points

STILLS = Path(__file__).resolve().parents[2] / "assets" / "real-stills"  # four of the shared set


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_each_person_s_joints_and_box_lie_on_the_pixels_they_lay_on(
        tmp_path: Path, turn: int, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "turned"
    assert main(["--data", str(STILLS), "--turn", str(turn), "--out", str(out)]) == 0
    assert f"4 images, turned {turn} degrees -> {out}" in capsys.readouterr().out
    codes = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
    for (video, image), (moved, still) in zip(load_stills(STILLS), load_stills(out)):
        height, width = image.shape[:2]
        assert moved.name == video.name and still.shape[:2] == ((width, height) if turn != 180 else (height, width))
        expected = cv2.rotate(image, codes[turn]).astype(float)
        change = np.abs(still - expected).mean()  # the photograph itself, turned (saved as JPEG) ...
        assert change < 6 and change < 0.3 * np.abs(still - expected[:, ::-1]).mean(), change  # ... not any picture
        for person, turned in zip(video.frames[0].persons, moved.frames[0].persons, strict=True):
            seen = person.keypoints[:, 2] > 0
            np.testing.assert_array_equal(turned.keypoints[:, 2], person.keypoints[:, 2])
            for (x, y), (u, v) in zip(person.keypoints[seen, :2], turned.keypoints[seen, :2]):
                assert 0 <= u < still.shape[1] and 0 <= v < still.shape[0]
                before = _patch(image, x, y).astype(float)
                assert np.abs(before - _patch(still, u, v)).max() < 20, (video.name, x, y)  # its pixels there
            corners = turn_points(np.array([[person.box.x, person.box.y],
                                            [person.box.x + person.box.w, person.box.y + person.box.h]]),
                                  turn, width, height)  # fmt: skip
            box = turned.box
            assert (box.x, box.y) == pytest.approx(tuple(corners.min(axis=0)))
            assert (box.w, box.h) == pytest.approx((person.box.h, person.box.w) if turn != 180 else
                                                   (person.box.w, person.box.h))


def _patch(image: np.ndarray, x: float, y: float, r: int = 3) -> np.ndarray:
    """The mean colour of the (2r + 1)^2 pixels around (x, y) (clipped to the image)."""
    col, row = int(round(x)), int(round(y))
    return image[max(row - r, 0) : row + r + 1, max(col - r, 0) : col + r + 1].reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_a_point_goes_where_opencv_turns_its_pixel(turn: int) -> None:
    codes = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
    image = np.zeros((48, 64), np.uint8)
    for x, y in ((0, 0), (63, 5), (17, 47)):
        image[:] = 0
        image[y, x] = 255
        (row, col), = np.argwhere(cv2.rotate(image, codes[turn]))
        np.testing.assert_allclose(turn_points(np.array([[x, y]], float), turn, 64, 48), [[col, row]])


def test_a_quarter_turn_and_three_quarters_give_the_points_back() -> None:
    points = np.array([[0.0, 0.0], [639.0, 0.0], [10.5, 400.25]])
    there = turn_points(points, 90, 640, 480)  # the turned image is 480 wide, 640 high
    np.testing.assert_allclose(turn_points(there, 270, 480, 640), points)
    np.testing.assert_allclose(turn_points(turn_points(points, 180, 640, 480), 180, 640, 480), points)


def test_bad_turns_and_folders_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(STILLS), "--turn", "45", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "invalid choice: 45" in capsys.readouterr().err
    assert main(["--data", str(STILLS), "--turn", "90", "--out", str(STILLS)]) == 1
    assert "--out is the --data folder" in capsys.readouterr().err
    assert main(["--data", str(tmp_path), "--turn", "90", "--out", str(tmp_path / "y")]) == 1
    assert "is not a stills folder" in capsys.readouterr().err
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "notes.txt").write_text("mine")
    assert main(["--data", str(STILLS), "--turn", "90", "--out", str(tmp_path / "z")]) == 1
    assert "holds more than an earlier run's output" in capsys.readouterr().err
    assert (tmp_path / "z" / "notes.txt").read_text() == "mine"
