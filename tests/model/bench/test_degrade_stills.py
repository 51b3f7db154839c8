"""`scripts.degrade_stills`: the real stills made grey, blurred, smeared, noisy, compressed, dark, hazy or interlaced, in
their own layout."""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from model.bench.real import load_stills
from model.deblur import motion_blur
from model.interlace import COMBED, comb_map
from scripts.degrade_stills import DARK_GAIN, HAZE, KINDS, SMEAR, WOVEN_SHIFT, main, smear_angle

STILLS = Path(__file__).resolve().parents[2] / "assets" / "real-stills"  # four of the shared set


def _sharpness(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_image_is_changed_and_the_annotations_are_kept(tmp_path: Path, kind: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / kind
    assert main(["--data", str(STILLS), "--kind", kind, "--out", str(out)]) == 0
    assert f"4 images, {kind} -> {out}" in capsys.readouterr().out
    before = {video.name: (video, image) for video, image in load_stills(STILLS)}
    after = {video.name: (video, image) for video, image in load_stills(out)}
    assert sorted(after) == sorted(before) and len(after) == 4
    for path in (STILLS / "annotations").rglob("*.json"):  # the annotations as they were
        assert (out / path.relative_to(STILLS)).read_bytes() == path.read_bytes()
    for name, (_, image) in after.items():
        source = before[name][1]
        path = f"images/val/{name}/000000.jpg"
        assert image.shape == source.shape
        change = np.abs(image.astype(int) - source.astype(int)).mean()
        if kind == "grey":
            assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
        elif kind == "dark":
            assert image.mean() == pytest.approx(DARK_GAIN * source.mean(), rel=0.05)
        elif kind == "haze":  # a veil: the picture's levels squeezed into the top of the range
            assert image.mean() == pytest.approx(HAZE[0] * source.mean() + HAZE[1], rel=0.05)
            low, high = np.percentile(image, [1, 99])  # through JPEG: a few pixels ring further
            assert low >= HAZE[1] - 3 and high - low < 0.5 * np.subtract(*np.percentile(source, [99, 1])) + 6
        elif kind == "blur":
            assert _sharpness(image) < 0.2 * _sharpness(source)
        elif kind == "smear":  # the line it was smeared along, read back off the image
            assert _sharpness(image) < 0.3 * _sharpness(source)
            read = motion_blur(image)
            assert read is not None and motion_blur(source) is None
            assert read.length == pytest.approx(SMEAR * max(image.shape[:2]), abs=1.5)
            turn = abs(read.angle - smear_angle(zlib.crc32(path.encode()))) % 180
            assert min(turn, 180 - turn) <= 3, (read, path)
        elif kind == "woven":  # the top field kept, the bottom one moved (through JPEG): combed
            woven, still, moved = image.astype(int), source.astype(int), np.roll(source, WOVEN_SHIFT, axis=1).astype(int)
            for rows, near, far in ((slice(0, None, 2), still, moved), (slice(1, None, 2), moved, still)):
                assert np.abs(woven[rows] - near[rows]).mean() < 0.5 * np.abs(woven[rows] - far[rows]).mean()
            assert comb_map(image).max() > COMBED >= comb_map(source).max()
        else:  # noise, jpeg: changed, roughly the same picture
            assert 2 < change < 25, change
    if kind == "grey":  # the test means something: the stills have colour
        assert any(np.abs(image[..., 0].astype(int) - image[..., 2]).mean() > 5 for _, image in before.values())


def test_the_same_noise_every_run_and_a_second_run_replaces_the_first(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["--data", str(STILLS), "--kind", "noise", "--out", str(first)]) == 0
    assert main(["--data", str(STILLS), "--kind", "noise", "--out", str(second)]) == 0
    images = sorted(p.relative_to(first) for p in first.rglob("*.jpg"))
    assert images and images == sorted(p.relative_to(second) for p in second.rglob("*.jpg"))
    for path in images:
        assert (first / path).read_bytes() == (second / path).read_bytes()
    assert main(["--data", str(STILLS), "--kind", "grey", "--out", str(first)]) == 0  # an earlier output: replaced
    grey = cv2.imread(str(first / images[0]))
    assert np.array_equal(grey[..., 0], grey[..., 1])


def test_bad_folders_are_refused_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["--data", str(STILLS), "--kind", "grey", "--out", str(taken)]) == 1
    assert "holds more than an earlier run's output" in capsys.readouterr().err
    assert (taken / "notes.txt").read_text() == "mine"  # nothing of it removed
    assert main(["--data", str(tmp_path / "nowhere"), "--kind", "grey", "--out", str(tmp_path / "o")]) == 1
    assert "is not a stills folder" in capsys.readouterr().err
    assert main(["--data", str(STILLS), "--kind", "grey", "--out", str(STILLS)]) == 1
    assert "--out is the --data folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data", str(STILLS), "--kind", "sepia", "--out", str(tmp_path / "o")])
