"""`python -m model predict` refuses output places it cannot write before it predicts anything."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from model.cli.main import main as model_main
from model.cli.predict import EXIT_USAGE, PredictOptions


def _writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


@pytest.fixture()
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """An existing folder this process cannot create files in (read-only; /proc where running as root)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if _writable(folder):  # root writes anywhere permissions say no
        folder = Path("/proc")
        if not folder.is_dir() or _writable(folder):
            pytest.skip("no folder here refuses this process new files")
    yield folder
    (tmp_path / "read-only").chmod(0o755)


@pytest.fixture()
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "my clip é.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    return path


def _never(options: PredictOptions):  # noqa: ANN202 (a PredictorFactory)
    raise AssertionError("the prediction ran although its output cannot be written")


@pytest.mark.parametrize("which", ["--out", "--render"])
def test_an_unwritable_output_folder_is_refused_before_predicting(
    clip: Path, tmp_path: Path, unwritable: Path, which: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the whole prediction ran, then writing failed ("[Errno 13] Permission denied: '.p.json...tmp'")."""
    out = {"--out": unwritable / "p.json", "--render": tmp_path / "p.json"}
    argv = ["predict", str(clip), "--out", str(out["--out"]), "--no-progress"]
    if which == "--render":
        argv += ["--render", str(unwritable / "overlay.mp4")]
    assert model_main(argv, predictor_factory=_never) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert f"cannot write into {unwritable}" in err, err
    assert not (tmp_path / "p.json").exists()


def test_a_posetrack_json_naming_a_huge_image_is_refused_from_its_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: frames an annotation file lists were decoded as the run reached them, so an image declaring
    30000 x 30000 pixels (a few KB of PNG) took gigabytes of memory half-way through; frame folders were
    already checked on open."""
    from annotation_io.posetrack import dump_2018
    from annotation_io.types import Frame, Video
    from tests.annotation_io.test_video_real_media import png_declaring

    images = tmp_path / "images" / "v"
    images.mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(images / f"{i:06d}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    png_declaring(images / "000002.png", 30000, 30000)
    frames = [Frame(i, [], False, file_name=f"images/v/{i:06d}.png", image_id=10000 + i) for i in range(3)]
    labels = tmp_path / "v.json"
    dump_2018(Video("v", 3, frames), labels)
    argv = ["predict", str(labels), "--out", str(tmp_path / "p.json"), "--no-progress"]
    assert model_main(argv, predictor_factory=_never) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert "000002.png: frame 2 of the frames listed by the annotation file" in err, err
    assert "more pixels than a frame may have" in err, err
    assert not (tmp_path / "p.json").exists()
