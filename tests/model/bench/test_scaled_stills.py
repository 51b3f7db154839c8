"""`scripts.scaled_stills`: the real stills scaled to a long side, annotations with them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.bench.real import load_stills
from scripts.scaled_stills import main

STILLS = Path(__file__).resolve().parents[2] / "assets" / "real-stills"  # four of the shared set


@pytest.mark.parametrize("long_side", [320, 1000])
def test_each_person_s_joints_and_box_lie_on_the_pixels_they_lay_on(
        tmp_path: Path, long_side: int, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "scaled"
    assert main(["--data", str(STILLS), "--long-side", str(long_side), "--out", str(out)]) == 0
    assert f"4 images, long side {long_side} px -> {out}" in capsys.readouterr().out
    for (video, image), (moved, still) in zip(load_stills(STILLS), load_stills(out), strict=True):
        height, width = image.shape[:2]
        kx, ky = still.shape[1] / width, still.shape[0] / height
        assert moved.name == video.name and max(still.shape[:2]) == long_side and kx == pytest.approx(ky, rel=0.01)
        for person, scaled in zip(video.frames[0].persons, moved.frames[0].persons, strict=True):
            seen = person.keypoints[:, 2] > 0
            np.testing.assert_array_equal(scaled.keypoints[:, 2], person.keypoints[:, 2])
            np.testing.assert_allclose(scaled.keypoints[seen, :2], person.keypoints[seen, :2] * (kx, ky), rtol=1e-6)
            for (x, y), (u, v) in zip(person.keypoints[seen, :2], scaled.keypoints[seen, :2]):
                assert 0 <= u < still.shape[1] and 0 <= v < still.shape[0]
                before, after = _patch(image, x, y, 8), _patch(still, u, v, 8 * kx)  # the same area
                assert np.abs(before - after).max() < 25, (video.name, x, y)  # its pixels there, not the next ones
            box = scaled.box
            assert (box.x, box.y, box.w, box.h) == pytest.approx(
                (person.box.x * kx, person.box.y * ky, person.box.w * kx, person.box.h * ky))


def _patch(image: np.ndarray, x: float, y: float, r: float) -> np.ndarray:
    """The mean colour of the pixels within `r` (at least 1) of (x, y) along each axis (clipped to the image)."""
    col, row, r = int(round(x)), int(round(y)), max(1, int(round(r)))
    return image[max(row - r, 0) : row + r + 1, max(col - r, 0) : col + r + 1].reshape(-1, 3).mean(axis=0)


def test_bad_sizes_and_folders_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "63", "100000"):
        assert main(["--data", str(STILLS), "--long-side", bad, "--out", str(tmp_path / "x")]) == 1
        assert "--long-side must be 64 to 8192 pixels" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(STILLS), "--long-side", "wide", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "invalid int value" in capsys.readouterr().err
    assert main(["--data", str(STILLS), "--long-side", "640", "--out", str(STILLS)]) == 1
    assert "--out is the --data folder" in capsys.readouterr().err
    assert main(["--data", str(tmp_path), "--long-side", "640", "--out", str(tmp_path / "y")]) == 1
    assert "is not a stills folder" in capsys.readouterr().err
