"""`scripts.barred_stills`: the real stills inside black bars (and as portrait strips in 16:9, over a blurred copy of
themselves, and in a portrait frame), annotations with them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from model.bars import picture_area
from model.bench.real import load_stills
from scripts.barred_stills import main

STILLS = Path(__file__).resolve().parents[2] / "assets" / "real-stills"  # four of the shared set


def _mean(image: np.ndarray, x: float, y: float, r: int = 6) -> np.ndarray:
    col, row = int(round(x)), int(round(y))
    return image[max(row - r, 0) : row + r + 1, max(col - r, 0) : col + r + 1].reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("layout", ["bars", "portrait", "blurred", "tall"])
def test_the_people_lie_on_their_pixels_inside_the_bars(tmp_path: Path, layout: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / layout
    assert main(["--data", str(STILLS), "--layout", layout, "--out", str(out)]) == 0
    assert f"4 images, {layout} -> {out}" in capsys.readouterr().out
    people = 0
    for (video, image), (moved, frame) in zip(load_stills(STILLS), load_stills(out), strict=True):
        height, width = frame.shape[:2]
        assert moved.name == video.name
        if layout == "tall":  # the image whole, in a 9:16 frame
            assert width == image.shape[1] and height / width == pytest.approx(16 / 9, abs=0.01)
            picture, x0, y0 = image.shape[1], 0, (height - image.shape[0]) // 2
        else:  # the four are narrower than 16:9
            assert height == image.shape[0] and width / height == pytest.approx(16 / 9, abs=0.01)
            picture = image.shape[1] if layout == "bars" else round(height * 9 / 16)
            x0, y0 = (width - picture) // 2, 0
        area = picture_area(frame)  # black or soft, the bars are found: the picture inside them (JPEG's ringing aside)
        assert area is not None
        assert area[0] == pytest.approx(x0, abs=16) and area[2] == pytest.approx(x0 + picture, abs=16)
        assert area[1] == pytest.approx(y0, abs=16) and area[3] == pytest.approx(height - y0, abs=16)
        if layout in ("bars", "tall"):
            assert len(moved.frames[0].persons) == len(video.frames[0].persons)
        else:
            assert 1 <= len(moved.frames[0].persons) <= len(video.frames[0].persons)
        for person in moved.frames[0].persons:
            seen = person.keypoints[:, 2] > 0
            assert seen.sum() >= 4 and person.box is not None
            assert x0 <= person.box.x and person.box.x + person.box.w <= x0 + picture + 1e-6
            original = min(video.frames[0].persons, key=lambda p: abs(p.box.h - person.box.h) + abs(p.box.y + y0 - person.box.y))
            shift = person.keypoints[seen, :2] - original.keypoints[seen, :2]
            assert np.ptp(shift[:, 0]) < 1e-6 and np.allclose(shift[:, 1], y0)
            for (x, y), (u, v) in zip(original.keypoints[seen, :2], person.keypoints[seen, :2]):
                assert np.abs(_mean(image, x, y) - _mean(frame, u, v)).max() < 25, (video.name, x, y)
            people += 1
    assert people >= (9 if layout in ("bars", "tall") else 4)  # all nine of the four photographs; the strips hold some


def test_bad_layouts_and_folders_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(STILLS), "--layout", "square", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "invalid choice: 'square'" in capsys.readouterr().err
    assert main(["--data", str(tmp_path), "--layout", "bars", "--out", str(tmp_path / "y")]) == 1
    assert "is not a stills folder" in capsys.readouterr().err
    cv2.imwrite(str(tmp_path / "keep.png"), np.zeros((4, 4, 3), np.uint8))
    assert main(["--data", str(STILLS), "--layout", "bars", "--out", str(tmp_path)]) == 1
    assert "holds more than an earlier run's output" in capsys.readouterr().err
    assert (tmp_path / "keep.png").is_file()
