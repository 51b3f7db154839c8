"""COCO keypoints load/dump: grouping into videos, name-mapped keypoints, round trips, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from annotation_io import coco, posetrack
from annotation_io.errors import AnnotationFormatError
from annotation_io.skeletons import KEYPOINT_INDEX, POSETRACK_KEYPOINTS, SKELETON_1BASED
from annotation_io.types import Box, Frame, Person, Video
from tests.annotation_io.test_posetrack import ASSETS, PT18_GT, PT18_PRED, assert_same_video, only_plain_json

COCO_MIN = ASSETS / "coco_min.json"


def raw(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_load_plain_coco_maps_keypoints_by_name() -> None:
    data = raw(COCO_MIN)
    (video,) = coco.load(COCO_MIN)
    assert video.name == "coco_min" and video.num_frames == 2
    assert [f.image_id for f in video.frames] == [im["id"] for im in data["images"]]  # file order
    assert [f.index for f in video.frames] == [0, 1] and all(f.is_labeled for f in video.frames)
    assert (video.width, video.height) == (None, None)  # the two images differ in size
    assert video.frames[1].extra["width"] == data["images"][1]["width"]
    person, crowd = video.frames[0].persons  # the bottle (category 44) is not a person
    names = data["categories"][0]["keypoints"]
    triples = np.reshape(data["annotations"][0]["keypoints"], (-1, 3))
    for name, triple in zip(names, triples):
        if name in KEYPOINT_INDEX:
            np.testing.assert_array_equal(person.keypoints[KEYPOINT_INDEX[name]], triple)
    # COCO's eyes have no PoseTrack slot: head_bottom/head_top stay absent
    assert not person.keypoints[[KEYPOINT_INDEX["head_bottom"], KEYPOINT_INDEX["head_top"]], 2].any()
    assert person.box == Box(*data["annotations"][0]["bbox"]) and person.extra["area"] == 17376.91885
    assert crowd.extra["iscrowd"] == 1 and not crowd.present.any()


def test_dump_plain_coco_round_trip(tmp_path: Path) -> None:
    videos = coco.load(COCO_MIN)
    out = coco.dump(videos, tmp_path / "coco_min.json")  # a pseudo-video is named after its file
    assert json.loads((tmp_path / "coco_min.json").read_text()) == out and only_plain_json(out)
    assert all("vid_id" not in im and "nframes" not in im for im in out["images"])  # stays a plain COCO file
    assert out["info"] == raw(COCO_MIN)["info"]
    (category,) = out["categories"]
    assert category["name"] == "person" and category["keypoints"] == list(POSETRACK_KEYPOINTS)
    assert category["skeleton"] == [list(p) for p in SKELETON_1BASED]
    assert min(min(p) for p in category["skeleton"]) == 1 and max(max(p) for p in category["skeleton"]) == 17
    ann = out["annotations"][0]
    assert ann["num_keypoints"] == int((np.reshape(ann["keypoints"], (-1, 3))[:, 2] > 0).sum()) == 12
    assert (ann["area"], ann["iscrowd"], ann["bbox"]) == (17376.91885, 0, [388.66, 69.92, 109.41, 277.62])
    (again,) = coco.load(tmp_path / "coco_min.json")
    assert_same_video(videos[0], again)
    assert coco.dump(again) == out


def test_videos_group_by_vid_id_and_round_trip(tmp_path: Path) -> None:
    gt = posetrack.load(PT18_GT)
    other = posetrack.load(PT18_PRED)
    other.name = "000343"
    for frame in other.frames:
        frame.image_id += 10000  # ids unique across the two videos
        frame.extra["frame_id"] = frame.image_id
        for k, person in enumerate(frame.persons):
            person.extra["id"] = frame.image_id * 100 + k
    gt.width, gt.height = 1280, 720
    out = coco.dump([gt, other], tmp_path / "merged.json")
    image = out["images"][0]
    assert (image["vid_id"], image["nframes"], image["width"], image["height"]) == ("000342", 3, 1280, 720)
    assert image["frame_id"] == image["id"] and "width" not in out["images"][3]
    ann = out["annotations"][0]
    assert ann["area"] == pytest.approx(Box(*ann["bbox"]).area) and ann["iscrowd"] == 0
    assert ann["num_keypoints"] == 15 and ann["bbox_head"] == [625, 94, 56, 84] and "scores" not in ann
    assert out["annotations"][4]["scores"] == raw(PT18_PRED)["annotations"][0]["scores"]
    back = coco.load(tmp_path / "merged.json")
    assert [v.name for v in back] == ["000342", "000343"]
    assert (back[0].width, back[0].height) == (1280, 720)
    assert_same_video(gt, back[0])
    assert_same_video(other, back[1])
    # and on to PoseTrack 2018 again: the official file comes back, plus the COCO-only fields
    again = posetrack.dump_2018(back[0])
    for image in again["images"]:
        assert (image.pop("width"), image.pop("height")) == (1280, 720)
    for ann in again["annotations"]:
        assert ann.pop("iscrowd") == 0 and ann.pop("num_keypoints") > 0 and ann.pop("area") > 0
    assert again == raw(PT18_GT)


def test_group_by_folder_when_only_nframes(tmp_path: Path) -> None:
    images = [
        {"id": 1, "file_name": "seq_b/000004.jpg", "nframes": 9, "frame_id": 4},
        {"id": 2, "file_name": "seq_a/000000.jpg", "nframes": 5, "frame_id": 0},
        {"id": 3, "file_name": "seq_b/000002.jpg", "nframes": 9, "frame_id": 2},
    ]
    kp = [0.0] * 51
    kp[0:3] = [5.5, 6.5, 2]
    anns = [{"id": 10, "image_id": 3, "category_id": 1, "keypoints": kp, "bbox": [1, 2, 3, 4]}]
    videos = coco.load({"images": images, "annotations": anns})
    assert [(v.name, v.num_frames) for v in videos] == [("seq_b", 9), ("seq_a", 5)]
    assert [f.index for f in videos[0].frames] == [2, 4] and videos[0].frames[0].persons[0].keypoints[
        0, 0
    ] == 5.5


def test_new_video_without_box_gets_keypoint_box() -> None:
    kp = np.zeros((17, 3))
    kp[5], kp[12] = (10, 20, 2), (40, 80, 1)
    video = Video(
        "clip", 12, [Frame(index=7, persons=[Person(keypoints=kp, track_id=2)])], width=64, height=96
    )
    out = coco.dump(video)
    (image,), (ann,) = out["images"], out["annotations"]
    assert (image["id"] % 10000, image["nframes"], image["vid_id"], image["width"]) == (7, 12, "clip", 64)
    assert ann["bbox"] == [10, 20, 30, 60] and ann["area"] == 1800 and ann["num_keypoints"] == 2
    (back,) = coco.load(out)
    assert back.frames[0].index == 7 and back.frames[0].persons[0].box == Box(10, 20, 30, 60)


@pytest.mark.parametrize(
    ("mutate", "tail"),
    [
        (lambda d: d["annotations"][0].update(keypoints=[1] * 50), "annotations[0].keypoints: expected 51 numbers, got 50"),
        (lambda d: d["annotations"][1].update(image_id=5), "annotations[1].image_id: image_id 5 matches no entry of images"),
        (lambda d: d["images"][1].pop("id"), "images[1]: missing required field 'id'"),
        (lambda d: d["images"][0].update(file_name=7), "images[0].file_name: expected a string, got integer 7"),
        (lambda d: d["images"][1].update(vid_id="a"), "images[0]: image carries neither vid_id nor nframes while others do"),
        (lambda d: d.update(annotations={}), "annotations: expected an array, got object"),
    ],
    ids=["keypoints", "image_id", "image_without_id", "file_name", "mixed_video_fields", "annotations_type"],
)  # fmt: skip
def test_malformed_coco_names_the_field(mutate: Any, tail: str, tmp_path: Path) -> None:
    data = raw(COCO_MIN)
    mutate(data)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationFormatError) as info:
        coco.load(path)
    assert str(info.value) == f"{path}: {tail}"


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n "images": [],\n "annotations": [}\n')
    with pytest.raises(AnnotationFormatError, match=r"broken\.json: line 3 column 18: invalid JSON"):
        coco.load(path)


def test_dump_refuses_duplicate_ids() -> None:
    frames = [Frame(index=i, image_id=5, persons=[Person()]) for i in range(2)]
    with pytest.raises(ValueError, match="duplicate image id 5"):
        coco.dump(Video("v", 2, frames))
    frames[1].image_id = 6
    frames[0].persons[0].extra["id"] = 601
    frames[1].persons[0].extra["id"] = 601
    with pytest.raises(ValueError, match="duplicate annotation id 601"):
        coco.dump(Video("v", 2, frames))
