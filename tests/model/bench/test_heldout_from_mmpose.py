"""`scripts.heldout_from_mmpose`: mmpose's test data in the four source formats -> the real-stills layout."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from model.bench.real import load_stills
from scripts.heldout_from_mmpose import main


def _image(path: Path, width: int = 200, height: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))


def _json(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


@pytest.fixture
def mmpose(tmp_path: Path) -> Path:
    """A checkout's tests/data with one image per source format and known joints."""
    root = tmp_path / "mmpose"
    data = root / "tests" / "data"
    # PoseTrack 2018: slot order as is; a second person with no limb joint is left out.
    _image(data / "posetrack18" / "images" / "val" / "000001_test" / "000000.jpg")
    pt_kps = [0.0] * 51
    pt_kps[15:18] = [50.0, 20.0, 1.0]  # left shoulder (slot 5)
    nose_only = [0.0] * 51
    nose_only[0:3] = [10.0, 10.0, 1.0]
    _json(data / "posetrack18" / "annotations" / "test_posetrack18_val.json", {
        "images": [{"id": 7, "file_name": "images/val/000001_test/000000.jpg", "vid_id": "000001"}],
        "annotations": [
            {"image_id": 7, "bbox": [40, 10, 30, 60], "bbox_head": [45, 10, 10, 10], "keypoints": pt_kps},
            {"image_id": 7, "bbox": [0, 0, 20, 20], "keypoints": nose_only},
        ]})
    # MPII: joint 0 is the right ankle (slot 16), 13 the left shoulder (slot 5); no box: joints' extent + 10%.
    _image(data / "mpii" / "000000001.jpg")
    joints = [[0.0, 0.0]] * 16
    joints[0], joints[13], joints[9] = [100.0, 90.0], [110.0, 30.0], [105.0, 10.0]
    vis = [1 if j[0] else 0 for j in joints]
    _json(data / "mpii" / "test_mpii.json", [{"image": "000000001.jpg", "joints": joints, "joints_vis": vis}])
    # AI Challenger: joint 0 is the right shoulder (slot 6), 13 the neck (head_bottom, slot 1).
    _image(data / "aic" / "abcdef0123.jpg")
    aic = [0.0] * 42
    aic[0:3], aic[39:42] = [60.0, 40.0, 1.0], [62.0, 30.0, 2.0]
    _json(data / "aic" / "test_aic.json", {
        "images": [{"id": 1, "file_name": "abcdef0123.jpg"}],
        "annotations": [{"image_id": 1, "bbox": [50, 20, 40, 70], "keypoints": aic}]})
    # Human-Art: COCO order; only the real photograph is taken.
    _image(data / "humanart" / "real_human" / "acrobatics" / "000000000590.jpg")
    _image(data / "humanart" / "2D_virtual_human" / "digital_art" / "000000001648.jpg")
    coco = [0.0] * 51
    coco[3 * 16:3 * 16 + 3] = [80.0, 95.0, 2.0]  # right ankle
    coco[3 * 1:3 * 1 + 3] = [70.0, 20.0, 2.0]  # left eye: no slot in the stills
    _json(data / "humanart" / "test_humanart.json", {
        "images": [{"id": 1, "file_name": "HumanArt/images/real_human/acrobatics/000000000590.jpg"},
                   {"id": 2, "file_name": "HumanArt/images/2D_virtual_human/digital_art/000000001648.jpg"}],
        "annotations": [{"image_id": 1, "bbox": [60, 10, 40, 88], "keypoints": coco},
                        {"image_id": 2, "bbox": [0, 0, 50, 50], "keypoints": coco}]})
    return root


def test_converts_each_source_to_stills_that_bench_real_loads(mmpose: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "heldout"
    assert main(["--mmpose", str(mmpose), "--out", str(out)]) == 0
    assert "4 images, 4 people, 5 annotated limb joints" in capsys.readouterr().out

    stills = {video.name: (video, image) for video, image in load_stills(out)}
    assert sorted(stills) == ["aic_abcdef0123", "humanart_000000000590", "mpii_000000001", "posetrack_000001_test"]
    assert all(image.shape == (100, 200, 3) for _, image in stills.values())

    (pt,) = stills["posetrack_000001_test"][0].frames[0].persons
    assert pt.keypoints[5].tolist() == [50.0, 20.0, 1.0]
    assert pt.head_box is not None and list(pt.head_box.xywh) == [45.0, 10.0, 10.0, 10.0]

    (mpii,) = stills["mpii_000000001"][0].frames[0].persons
    assert mpii.keypoints[16].tolist() == [100.0, 90.0, 1.0] and mpii.keypoints[5].tolist() == [110.0, 30.0, 1.0]
    assert mpii.keypoints[2].tolist() == [105.0, 10.0, 1.0]  # head top
    assert mpii.box is not None
    np.testing.assert_allclose(mpii.box.xywh, (99.0, 2.0, 12.0, 96.0))  # x 100-110, y 10-90, +10% a side

    (aic,) = stills["aic_abcdef0123"][0].frames[0].persons
    assert aic.keypoints[6].tolist() == [60.0, 40.0, 1.0] and aic.keypoints[1].tolist() == [62.0, 30.0, 1.0]
    assert aic.head_box is not None
    np.testing.assert_allclose(aic.head_box.xywh, (64.75, 20.0, 10.5, 10.5))  # the stills' proxy: 0.15 x height

    (art,) = stills["humanart_000000000590"][0].frames[0].persons
    assert art.keypoints[16].tolist() == [80.0, 95.0, 1.0]
    assert not art.keypoints[1:5, 2].any()  # eyes and ears are not annotated in the stills


def test_a_folder_that_is_not_mmpose_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--mmpose", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "no tests/data folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_missing_annotation_file_is_named(mmpose: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (mmpose / "tests" / "data" / "mpii" / "test_mpii.json").unlink()
    assert main(["--mmpose", str(mmpose), "--out", str(tmp_path / "out")]) == 1
    assert "test_mpii.json is missing" in capsys.readouterr().err


def test_an_earlier_output_is_replaced_and_any_other_folder_is_left_alone(mmpose: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "heldout"
    assert main(["--mmpose", str(mmpose), "--out", str(out)]) == 0
    stale = out / "annotations" / "val" / "gone.json"
    stale.write_text("{}")
    assert main(["--mmpose", str(mmpose), "--out", str(out)]) == 0
    assert not stale.exists() and len(list((out / "annotations" / "val").iterdir())) == 4
    mine = tmp_path / "work"
    (mine / "images").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    assert main(["--mmpose", str(mmpose), "--out", str(mine)]) == 1
    assert "holds more than an earlier run's output" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"
