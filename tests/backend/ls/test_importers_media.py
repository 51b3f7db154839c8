"""The importers on real-footage inputs: EXIF-oriented PoseTrack images, argument values checked up front."""

from __future__ import annotations

import argparse
from pathlib import Path

import PIL.Image
import pytest

from annotation_io import synth
from annotation_io.label_studio import results_to_persons
from backend.ls.importers import add_import_commands, import_posetrack
from tests.backend.ls.test_importers import MemoryLS

W, H = 128, 96


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_labels_of_exif_oriented_images_are_placed_as_label_studio_shows_them(
    tmp_path: Path, suffix: str
) -> None:
    """Before: the size came from cv2.IMREAD_UNCHANGED, which ignores EXIF orientation, so labels on a
    sideways-stored phone photo were converted against the stored 96x128 instead of the shown 128x96;
    and cv2.imread fails on a TIFF with an orientation, so such a dataset's import stopped with "none of
    its frame images decodes"."""
    root = tmp_path / "docroot"
    dataset = root / "posetrack"
    synth.generate(dataset, videos=1, frames=2, people=1, seed=3, label_every=1, size=(W, H))
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    for image in sorted((dataset / "images").rglob("*.jpg")):
        with PIL.Image.open(image) as shown:
            stored = shown.transpose(PIL.Image.Transpose.ROTATE_90)
        image.unlink()
        stored.save(image.with_suffix(suffix), quality=95, exif=exif.tobytes())
    for labels in (dataset / "annotations").glob("*.json"):
        labels.write_text(labels.read_text().replace(".jpg", suffix))
    ls = MemoryLS()
    summary = import_posetrack(ls, dataset, 1, document_root=root, progress=False)
    assert summary.annotations_created == 2
    for task in ls.tasks.values():
        result = task["annotations"][0]["result"]
        assert {(r["original_width"], r["original_height"]) for r in result} == {(W, H)}
        _, size = results_to_persons(result, as_labels=True)
        assert size == (W, H)


@pytest.mark.parametrize("option", ["--project", "--every", "--batch-size"])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_counts_and_ids_below_one_are_refused_by_the_parser(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: --batch-size 0 extracted every frame and created the storage before failing, and
    --project 0 went to Label Studio."""
    root = argparse.ArgumentParser(prog="python -m backend")
    add_import_commands(root.add_subparsers(dest="command", required=True))
    argv = ["import-video", "clip.mp4", "--project", "1", option, value]
    with pytest.raises(SystemExit) as exit_info:
        root.parse_args(argv)
    assert exit_info.value.code == 2
    assert f"argument {option}:" in capsys.readouterr().err
