"""PoseTrack 2018 / 2017 load, dump, round trips and error messages (assets in tests/assets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from annotation_io import posetrack
from annotation_io.errors import AnnotationFormatError
from annotation_io.skeletons import KEYPOINT_INDEX, POSETRACK_KEYPOINTS, POSEVAL_JOINTS
from annotation_io.types import Box, Frame, Person, Video

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PT18_GT, PT18_PRED = ASSETS / "posetrack18_gt.json", ASSETS / "posetrack18_pred.json"
PT17_GT, PT17_PRED = ASSETS / "posetrack17_gt.json", ASSETS / "posetrack17_pred.json"


def raw(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def assert_same_video(a: Video, b: Video, *, ids: bool = True) -> None:
    """Equal names, frame counts, frames and persons (positions, scores, boxes, tracks)."""
    assert (a.name, a.num_frames) == (b.name, b.num_frames)
    assert [f.index for f in a.frames] == [f.index for f in b.frames]
    for fa, fb in zip(a.frames, b.frames):
        assert (fa.is_labeled, fa.file_name) == (fb.is_labeled, fb.file_name)
        assert not ids or fa.image_id == fb.image_id
        assert len(fa.ignore_regions) == len(fb.ignore_regions)
        for ra, rb in zip(fa.ignore_regions, fb.ignore_regions):
            np.testing.assert_allclose(ra, rb)
        assert len(fa.persons) == len(fb.persons)
        for pa, pb in zip(fa.persons, fb.persons):
            np.testing.assert_allclose(pa.keypoints, pb.keypoints)
            assert (pa.scores is None) == (pb.scores is None)
            if pa.scores is not None:
                np.testing.assert_allclose(pa.scores, pb.scores)
            assert (pa.track_id, pa.score, pa.box, pa.head_box) == (
                pb.track_id,
                pb.score,
                pb.box,
                pb.head_box,
            )


def only_plain_json(value: Any) -> bool:
    """True when the structure holds only dict/list/str/int/float/bool/None (no numpy types)."""
    if isinstance(value, dict):
        return all(type(k) is str and only_plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(only_plain_json(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


# --- PoseTrack 2018 ---------------------------------------------------------------------------


def test_load_2018_gt_values() -> None:
    data = raw(PT18_GT)
    video = posetrack.load(PT18_GT)
    assert (video.name, video.num_frames) == ("000342", 3)
    assert [f.index for f in video.frames] == [0, 1, 2]
    assert [f.is_labeled for f in video.frames] == [True, False, True]
    assert [len(f.persons) for f in video.frames] == [2, 0, 2]
    first = video.frames[0]
    assert (first.file_name, first.image_id) == (data["images"][0]["file_name"], data["images"][0]["id"])
    assert (
        first.extra["has_no_densepose"] is True and first.extra["frame_id"] == data["images"][0]["frame_id"]
    )
    assert first.ignore_regions == []
    (region,) = video.frames[2].ignore_regions
    xs, ys = data["images"][2]["ignore_regions_x"][0], data["images"][2]["ignore_regions_y"][0]
    np.testing.assert_array_equal(region, np.c_[xs, ys])
    for person, ann in zip(video.frames[2].persons, data["annotations"][2:]):
        np.testing.assert_array_equal(person.keypoints.reshape(-1), ann["keypoints"])  # v kept as loaded
        assert person.box == Box(*ann["bbox"]) and person.head_box == Box(*ann["bbox_head"])
        assert person.track_id == ann["track_id"] and person.extra["id"] == ann["id"]
        assert person.scores is None and person.score is None and not person.is_prediction
    assert video.extra["categories"] == data["categories"]


def test_load_2018_prediction_scores() -> None:
    data = raw(PT18_PRED)
    video = posetrack.load_2018(data, source="pred")
    persons = [p for f in video.frames for p in f.persons]
    assert len(persons) == len(data["annotations"]) == 4
    for person, ann in zip(persons, data["annotations"]):
        assert person.is_prediction
        np.testing.assert_array_equal(person.scores, ann["scores"])
        assert person.score == ann["score"] and person.track_id == ann["track_id"]


@pytest.mark.parametrize("path", [PT18_GT, PT18_PRED], ids=["gt", "pred"])
def test_2018_round_trip_is_lossless(path: Path, tmp_path: Path) -> None:
    original = raw(path)
    out = posetrack.dump_2018(posetrack.load_2018(path), tmp_path / "out.json")
    assert out == original
    assert only_plain_json(out)
    assert json.loads((tmp_path / "out.json").read_text()) == original
    # Stable text: dumping the re-loaded file gives the same bytes.
    posetrack.dump_2018(posetrack.load(tmp_path / "out.json"), tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == (tmp_path / "out.json").read_text()


def test_2018_sparse_frames_use_frame_id_and_fall_back_to_id_order() -> None:
    data = raw(PT18_GT)
    for image, frame in zip(data["images"], (0, 4, 8)):
        image["frame_id"] = image["id"] = 10003420000 + frame
        image["nframes"] = 10
    for ann, image_index in zip(data["annotations"], (0, 0, 2, 2)):
        ann["image_id"] = data["images"][image_index]["id"]
    video = posetrack.load_2018(data)
    assert video.num_frames == 10 and [f.index for f in video.frames] == [0, 4, 8]
    assert [len(f.persons) for f in video.frames] == [2, 0, 2]
    # frame ids that do not encode distinct frame numbers: index = rank of the image id
    data["images"][0]["frame_id"] = data["images"][1]["frame_id"]
    data["images"].reverse()
    video = posetrack.load_2018(data)
    assert [f.image_id for f in video.frames] == sorted(im["id"] for im in data["images"])
    assert [f.index for f in video.frames] == [0, 1, 2]
    assert posetrack.dump_2018(video)["images"] == data["images"][::-1]


def test_dump_2018_of_a_new_video_generates_unique_ids(tmp_path: Path) -> None:
    kp = np.zeros((17, 3))
    kp[0] = (10.5, 20.25, 2)
    person = Person(keypoints=kp, scores=np.linspace(0.9, 0.1, 17), track_id=3, score=np.float32(0.5))
    video = Video("000007", 30, [Frame(index=i, persons=[person.copy(), person.copy()]) for i in (2, 5)])
    out = posetrack.dump_2018(video)
    ids = [im["id"] for im in out["images"]]
    assert [i % 10000 for i in ids] == [2, 5] and [im["frame_id"] for im in out["images"]] == ids
    ann_ids = [a["id"] for a in out["annotations"]]
    assert len(set(ann_ids)) == 4 and only_plain_json(out)
    assert out["categories"][0]["keypoints"] == list(POSETRACK_KEYPOINTS)
    back = posetrack.load_2018(write(tmp_path / "new.json", out))
    assert_same_video(video, back, ids=False)
    video.frames[1].image_id = ids[0]
    with pytest.raises(ValueError, match=f"duplicate image id {ids[0]}"):
        posetrack.dump_2018(video)
    video.frames[1].image_id = None
    video.frames[0].persons[0].scores[4] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        posetrack.dump_2018(video)


# --- PoseTrack 2017 ---------------------------------------------------------------------------


def test_load_2017_gt_maps_poseval_ids_by_name() -> None:
    data = raw(PT17_GT)
    video = posetrack.load(PT17_GT)
    assert (video.name, video.num_frames) == ("000342", 3)
    assert [f.is_labeled for f in video.frames] == [True, False, True]
    assert [f.file_name for f in video.frames] == [e["image"][0]["name"] for e in data["annolist"]]
    for frame, entry in zip(video.frames, data["annolist"]):
        assert frame.index == entry["imgnum"][0] - 1
        for person, rect in zip(frame.persons, entry["annorect"], strict=True):
            assert person.box is None and person.track_id == rect["track_id"][0]
            assert person.head_box == Box.from_xyxy(
                rect["x1"][0], rect["y1"][0], rect["x2"][0], rect["y2"][0]
            )
            expected = np.zeros((17, 3))
            for point in rect["annopoints"][0]["point"]:
                slot = KEYPOINT_INDEX[POSEVAL_JOINTS[point["id"][0]]]  # by joint name, not by the index map
                expected[slot] = (point["x"][0], point["y"][0], 2 if point["is_visible"][0] else 1)
            np.testing.assert_array_equal(person.keypoints, expected)
            assert person.keypoints[KEYPOINT_INDEX["head_bottom"], 2] > 0  # poseval's "neck" (id 12)
            assert not person.keypoints[[3, 4], 2].any()  # ears: never in PT17
    np.testing.assert_array_equal(video.frames[2].ignore_regions[0][:, 0], [1000, 1100.5, 1100.5, 1000])


def test_2017_and_2018_assets_describe_the_same_poses() -> None:
    """The two GT files were written independently in each layout; positions must agree."""
    v17, v18 = posetrack.load(PT17_GT), posetrack.load(PT18_GT)
    for f17, f18 in zip(v17.frames, v18.frames, strict=True):
        for p17, p18 in zip(f17.persons, f18.persons, strict=True):
            np.testing.assert_array_equal(p17.present, p18.present)
            np.testing.assert_allclose(p17.xy[p17.present], p18.xy[p18.present])


@pytest.mark.parametrize("path", [PT17_GT, PT17_PRED], ids=["gt", "pred"])
def test_2017_round_trip_is_lossless(path: Path, tmp_path: Path) -> None:
    original = raw(path)
    video = posetrack.load_2017(path)
    out = posetrack.dump_2017(video, tmp_path / "out.json")
    assert out == original and only_plain_json(out)
    assert json.loads((tmp_path / "out.json").read_text()) == original


def test_load_2017_prediction_layout() -> None:
    data = raw(PT17_PRED)  # poseval README layout: no imgnum, no is_labeled, no is_visible
    video = posetrack.load_2017(data)
    assert [f.index for f in video.frames] == [0, 1, 2] and not any(f.is_labeled for f in video.frames)
    rect = data["annolist"][0]["annorect"][1]
    person = video.frames[0].persons[1]
    assert person.is_prediction and person.score == rect["score"][0]
    for point in rect["annopoints"][0]["point"]:
        slot = KEYPOINT_INDEX[POSEVAL_JOINTS[point["id"][0]]]
        assert person.scores[slot] == point["score"][0] and person.keypoints[slot, 2] == 2
    assert video.frames[1].persons[0].head_box is None  # a rect without x1..y2


def test_2017_imgnum_from_zero_is_kept() -> None:
    data = raw(PT17_GT)
    for i, entry in enumerate(data["annolist"]):
        entry["imgnum"] = [i]
    video = posetrack.load_2017(data)
    assert [f.index for f in video.frames] == [0, 1, 2]
    assert posetrack.dump_2017(video) == data


def test_2017_head_box_corners_survive_float_width() -> None:
    """x2 - x1 + x1 is not always x2 in floating point; the dump must still write x2 back."""
    corners = [(a / 10, b / 10) for a in range(0, 2000, 3) for b in range(a + 10, a + 2000, 97)]
    lossy = [(x1, x2) for x1, x2 in corners if x1 + (x2 - x1) != x2][:6]
    assert len(lossy) == 6  # such pairs exist, so this test checks something
    data = raw(PT17_GT)
    rects = data["annolist"][0]["annorect"] + data["annolist"][2]["annorect"]
    for rect, (x1, x2), (y1, y2) in zip(rects + rects[:2], lossy, lossy[::-1]):
        rect["x1"], rect["x2"], rect["y1"], rect["y2"] = [x1], [x2], [y1], [y2]
        assert posetrack.dump_2017(posetrack.load_2017(data)) == data


def test_cross_format_2018_to_2017_and_back() -> None:
    v18 = posetrack.load(PT18_GT)
    v17 = posetrack.load_2017(posetrack.dump_2017(v18))
    assert [f.index for f in v17.frames] == [0, 1, 2] and [f.is_labeled for f in v17.frames] == [
        True,
        False,
        True,
    ]
    for f18, f17 in zip(v18.frames, v17.frames):
        assert len(f18.ignore_regions) == len(f17.ignore_regions)
        for r18, r17 in zip(f18.ignore_regions, f17.ignore_regions):
            np.testing.assert_array_equal(r18, r17)
        for p18, p17 in zip(f18.persons, f17.persons, strict=True):
            np.testing.assert_array_equal(p18.present, p17.present)
            np.testing.assert_allclose(p18.xy[p18.present], p17.xy[p17.present])
            assert p17.track_id == p18.track_id and p17.head_box is not None
            np.testing.assert_allclose(p17.head_box.xywh, p18.head_box.xywh)
    back = posetrack.load_2018(posetrack.dump_2018(v17))
    assert [len(f.persons) for f in back.frames] == [2, 0, 2] and back.name == "000342"


def test_load_dir_keys_by_file_name(tmp_path: Path) -> None:
    write(tmp_path / "000342_mpii_test.json", raw(PT18_GT))
    write(tmp_path / "000342_mpii.json", raw(PT17_GT))
    (tmp_path / "notes.txt").write_text("not json")
    videos = posetrack.load_dir(tmp_path)
    assert list(videos) == ["000342_mpii.json", "000342_mpii_test.json"]
    assert all(v.name == "000342" and v.num_frames == 3 for v in videos.values())
    with pytest.raises(NotADirectoryError):
        posetrack.load_dir(tmp_path / "notes.txt")


# --- errors -----------------------------------------------------------------------------------


def _break(data: dict[str, Any], change: str) -> str:
    """Apply one named corruption to a PT18 dict; return the expected `where: message` tail."""
    if change == "short_keypoints":
        data["annotations"][3]["keypoints"] = data["annotations"][3]["keypoints"][:48]
        return "annotations[3].keypoints: expected 51 numbers, got 48"
    if change == "no_image_id":
        del data["annotations"][0]["image_id"]
        return "annotations[0]: missing required field 'image_id'"
    if change == "unknown_image":
        data["annotations"][1]["image_id"] = 77
        return "annotations[1].image_id: image_id 77 matches no entry of images"
    if change == "track_id_type":
        data["annotations"][2]["track_id"] = "2"
        return "annotations[2].track_id: expected an integer, got string '2'"
    if change == "keypoint_type":
        data["annotations"][0]["keypoints"][7] = None
        return "annotations[0].keypoints[7]: expected a number, got null None"
    if change == "bbox_len":
        data["annotations"][0]["bbox"] = [1, 2, 3]
        return "annotations[0].bbox: expected 4 numbers, got 3"
    if change == "scores_len":
        data["annotations"][0]["scores"] = [0.5] * 15
        return "annotations[0].scores: expected 17 numbers, got 15"
    if change == "duplicate_image":
        data["images"][2]["id"] = data["images"][0]["id"]
        return "images[2].id: duplicate image id 10003420000 (also images[0])"
    if change == "two_videos":
        data["images"][1]["vid_id"] = "000343"
        return "images[1].vid_id: vid_id '000343' differs from '000342' of images[0]"
    if change == "region_shape":
        data["images"][2]["ignore_regions_y"][0].pop()
        return "images[2].ignore_regions_y[0]: expected 4 numbers, got 3"
    del data["images"]
    return "missing required field 'images'"


@pytest.mark.parametrize(
    "change",
    ["short_keypoints", "no_image_id", "unknown_image", "track_id_type", "keypoint_type", "bbox_len",
     "scores_len", "duplicate_image", "two_videos", "region_shape", "no_images"],
)  # fmt: skip
def test_malformed_2018_names_file_entry_and_field(change: str, tmp_path: Path) -> None:
    data = raw(PT18_GT)
    tail = _break(data, change)
    path = write(tmp_path / "x.json", data)
    loader = posetrack.load_2018 if change == "no_images" else posetrack.load
    with pytest.raises(AnnotationFormatError) as info:
        loader(path)
    assert str(info.value) == f"{path}: {tail}"
    assert info.value.source == str(path)


@pytest.mark.parametrize(
    ("mutate", "tail"),
    [
        (
            lambda d: d["annolist"][0]["annorect"][0]["annopoints"][0]["point"][0].update(id=[15]),
            "annolist[0].annorect[0].annopoints[0].point[0].id: expected a poseval joint id 0..14, got 15",
        ),
        (
            lambda d: d["annolist"][2]["annorect"][1].pop("y2"),
            "annolist[2].annorect[1]: head box needs x1, y1, x2, y2; missing ['y2']",
        ),
        (lambda d: d["annolist"][2].update(imgnum=[1]), "annolist[2].imgnum: imgnum 1 repeats annolist[0]"),
        (
            lambda d: d["annolist"][1].update(annorect={}),
            "annolist[1].annorect: expected an array, got object",
        ),
        (
            lambda d: d["annolist"][0]["annorect"][0].update(track_id=[0, 1]),
            "annolist[0].annorect[0].track_id: expected a 1-element array, got 2 elements",
        ),
        (
            lambda d: d["annolist"][0]["annorect"][0]["annopoints"][0]["point"][1].pop("x"),
            "annolist[0].annorect[0].annopoints[0].point[1]: missing required field 'x'",
        ),
    ],
    ids=["joint_id", "head_box", "imgnum", "annorect_type", "track_id_len", "point_x"],
)
def test_malformed_2017_names_the_field(mutate: Any, tail: str) -> None:
    data = raw(PT17_GT)
    mutate(data)
    with pytest.raises(AnnotationFormatError) as info:
        posetrack.load_2017(data, source="seq.json")
    assert str(info.value) == f"seq.json: {tail}"


def test_invalid_json_and_unknown_layout(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(AnnotationFormatError, match=r"bad\.json: line 2 column 12: invalid JSON") as info:
        posetrack.load(bad)
    assert info.value.where == "line 2 column 12"
    other = write(tmp_path / "other.json", {"videos": []})
    with pytest.raises(AnnotationFormatError, match=r"other\.json: neither PoseTrack 2018 .* nor 2017"):
        posetrack.load(other)
    with pytest.raises(AnnotationFormatError, match=r"expected an object, got array"):
        posetrack.load_2018(write(tmp_path / "list.json", [1, 2]))


def test_module_docstring_states_the_neck_convention() -> None:
    doc = posetrack.__doc__ or ""
    assert "head_bottom" in doc and "neck" in doc


def test_box_only_annotations_load_as_people_without_joints() -> None:
    """A box drawn without keypoints is an input: the person's box, no joint placed."""
    data = {
        "images": [{"file_name": "images/v/000000.jpg", "id": 1, "frame_id": 1, "vid_id": "v", "nframes": 1,
                    "is_labeled": True}],
        "annotations": [{"image_id": 1, "track_id": 0, "bbox": [10, 20, 100, 200], "id": 5},
                        {"image_id": 1, "track_id": 1, "bbox": [200, 20, 80, 150], "keypoints": [], "id": 6}],
        "categories": [{"id": 1, "name": "person", "keypoints": []}],
    }
    video = posetrack.load(data, source="v")
    people = video.frames[0].persons
    assert [p.box.xywh for p in people] == [[10, 20, 100, 200], [200, 20, 80, 150]]
    assert all(not p.present.any() for p in people) and [p.track_id for p in people] == [0, 1]
    del data["annotations"][0]["bbox"]  # neither box nor keypoints: still an error naming the field
    with pytest.raises(AnnotationFormatError, match="keypoints"):
        posetrack.load(data, source="v")
