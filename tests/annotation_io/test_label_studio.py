"""Tests for annotation_io.label_studio: config, task data, results <-> Persons, validation."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from annotation_io import label_studio as ls
from annotation_io.errors import AnnotationFormatError
from annotation_io.skeletons import KEYPOINT_INDEX, LS_JOINTS
from annotation_io.types import Box, Person

ASSETS = Path(__file__).resolve().parents[1] / "assets"
W, H = 640, 480


@pytest.fixture
def prediction() -> dict:
    return json.loads((ASSETS / "ls_prediction.json").read_text())


@pytest.fixture
def annotation() -> dict:
    return json.loads((ASSETS / "ls_annotation.json").read_text())


def _items(results: list[dict], item_type: str) -> list[dict]:
    return [r for r in results if r["type"] == item_type]


def _kp_item(label: str, x: float, y: float, rid: str, parent: str | None = None) -> dict:
    item = {"id": rid, "from_name": "kp", "to_name": "image", "type": "keypointlabels",
            "original_width": W, "original_height": H, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]}}  # fmt: skip
    if parent is not None:
        item["parentID"] = parent
    return item


def _box_item(rid: str, x: float, y: float, w: float, h: float) -> dict:
    return {"id": rid, "from_name": "person", "to_name": "image", "type": "rectanglelabels",
            "original_width": W, "original_height": H, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": ["person"]}}  # fmt: skip


# ----------------------------------------------------------------------------- config


def test_label_config_parses_back() -> None:
    xml = ls.label_config()
    cfg = ls.parse_config(xml)
    assert (cfg.image_name, cfg.image_value) == ("image", "image")
    assert (cfg.person_from_name, cfg.person_label, cfg.keypoint_from_name) == ("person", "person", "kp")
    assert (cfg.track_from_name, cfg.track_type) == ("track_id", "textarea")
    assert cfg.joint_labels == {name: KEYPOINT_INDEX[name] for name in LS_JOINTS}
    labels = ET.fromstring(xml).find("KeyPointLabels").findall("Label")
    assert [int(el.get("model_index")) for el in labels] == list(range(15))
    assert len({el.get("background") for el in labels}) == 15
    textarea = ET.fromstring(xml).find(".//View[@visibleWhen='region-selected']/TextArea")
    assert textarea.get("perRegion") == "true" and textarea.get("toName") == "image"


def test_label_config_custom_names_and_no_track() -> None:
    cfg = ls.parse_config(ls.label_config(image="frame", person="body", keypoints="joints", track=None))
    assert (cfg.image_name, cfg.image_value, cfg.person_from_name, cfg.keypoint_from_name) == (
        "frame", "image", "body", "joints")  # fmt: skip
    assert cfg.track_from_name is None
    with pytest.raises(ls.ConfigError, match="distinct"):
        ls.label_config(person="kp")


def test_parse_config_by_name_and_by_model_index() -> None:
    xml = """<View><Image name="img" value="$url"/>
      <RectangleLabels name="box" toName="img"><Label value="human"/></RectangleLabels>
      <KeyPointLabels name="pts" toName="img">
        <Label value="right_ankle"/><Label value="nez" model_index="0"/><Label value="tete" model_index="2"/>
      </KeyPointLabels>
      <Number name="tid" toName="img" perRegion="true"/></View>"""
    cfg = ls.parse_config(xml)
    assert cfg.joint_labels == {"right_ankle": 16, "nez": 0, "tete": 2}
    assert (cfg.image_value, cfg.person_label) == ("url", "human")
    assert (cfg.track_from_name, cfg.track_type) == ("tid", "number")


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<View><Image name='image' value='$image'/></View>", "no <KeyPointLabels> bound to an <Image>"),
        ("<View><Image name='image' value='$image'/><KeyPointLabels name='kp' toName='other'>"
         "<Label value='nose'/></KeyPointLabels></View>", "no <KeyPointLabels> bound to an <Image>"),
        ("<View><Image name='image' value='$image'/><RectangleLabels name='p' toName='image'>"
         "<Label value='person'/></RectangleLabels><KeyPointLabels name='kp' toName='image'><Label value='foo'/>"
         "<Label value='bar'/></KeyPointLabels></View>",
         "no keypoint label names a PoseTrack joint: foo, bar (expected joint names such as nose, head_bottom"),
        ("<View><Image name='image' value='$image'/><RectangleLabels name='p' toName='image'>"
         "<Label value='person'/></RectangleLabels><KeyPointLabels name='kp' toName='image'>"
         "<Label value='Punkt' model_index='15'/></KeyPointLabels></View>", "model_index='15' is not in 0..14"),
        ("<View><Image name='image' value='$image'/><RectangleLabels name='p' toName='image'>"
         "<Label value='person'/></RectangleLabels><KeyPointLabels name='kp' toName='image'>"
         "<Label value='nose'/><Label value='nez' model_index='0'/></KeyPointLabels></View>", "same joint"),
        ("<View><Image name='image' value='$image'/><RectangleLabels name='p' toName='image'>"
         "<Label value='car'/><Label value='bus'/></RectangleLabels><KeyPointLabels name='kp' toName='image'>"
         "<Label value='nose'/></KeyPointLabels></View>", "no 'person' label"),
        ("<View><Image name='image'", "not valid XML"),
    ],
)  # fmt: skip
def test_parse_config_errors(xml: str, message: str) -> None:
    with pytest.raises(ls.ConfigError) as info:
        ls.parse_config(xml)
    assert message in str(info.value)
    assert isinstance(info.value, AnnotationFormatError)


# ----------------------------------------------------------------------------- results -> persons -> results


def test_prediction_round_trip_is_identical(prediction: dict) -> None:
    results = prediction["result"]
    persons, size = ls.results_to_persons(results, source="task 1")
    assert size == ls.ImageSize(W, H)
    assert [p.region_id for p in persons] == ["p0", "p1"]
    assert [p.track_id for p in persons] == [3, 17]
    assert [p.score for p in persons] == [0.93, 0.81]
    by_id = {r["id"]: r for r in results}
    for p in persons:
        assert p.is_prediction
        box = by_id[p.region_id]["value"]
        assert p.box.x == pytest.approx(box["x"] / 100 * W)
        assert p.box.h == pytest.approx(box["height"] / 100 * H)
        kp_items = [r for r in results if r.get("parentID") == p.region_id]
        assert int(p.present.sum()) == len(kp_items)
        for item in kp_items:
            slot = KEYPOINT_INDEX[item["value"]["keypointlabels"][0]]
            x_px, y_px = item["value"]["x"] * W / 100, item["value"]["y"] * H / 100
            assert p.keypoints[slot] == pytest.approx([x_px, y_px, 2])
            assert p.scores[slot] == item["score"]
        assert np.all(p.scores[~p.present] == 0)
    # Same items, in the drag-first order (every keypoint, then each box and its track).
    drag_first = [r for r in results if r["type"] == "keypointlabels"]
    drag_first += [r for r in results if r["type"] != "keypointlabels"]
    assert ls.persons_to_results(persons, *size) == drag_first
    ls.validate_results(results, ls.default_config())


def test_persons_to_results_matches_reference_shapes() -> None:
    kps = np.zeros((17, 3))
    kps[0] = (140.8, 105.6, 2)  # nose at 22 %, 22 %
    kps[3] = (150.0, 100.0, 2)  # left ear: LS has no label for it
    kps[6] = (160.0, 120.0, 1)  # occluded but labelled: still a region
    scores = np.zeros(17)
    scores[[0, 3, 6]] = (0.5, 0.4, 0.3)
    person = Person(keypoints=kps, scores=scores, track_id=100, box=Box(128, 96, 128, 288), score=0.9)
    items = ls.persons_to_results([person], W, H, id_prefix="t9_")
    assert [(r["id"], r["type"]) for r in items] == [  # drag-first: keypoints, then the box and its track
        ("t9_p0_k0", "keypointlabels"), ("t9_p0_k6", "keypointlabels"), ("t9_p0", "rectanglelabels"),
        ("t9_p0", "textarea")]  # fmt: skip
    nose, _, box, track = items
    geometry = {"x": 20, "y": 20, "width": 20, "height": 60, "rotation": 0}
    assert box["value"] == {**geometry, "rectanglelabels": ["person"]}
    assert box["score"] == 0.9 and "parentID" not in box
    assert nose == {"id": "t9_p0_k0", "from_name": "kp", "to_name": "image", "type": "keypointlabels",
                    "parentID": "t9_p0", "original_width": W, "original_height": H, "image_rotation": 0,
                    "score": 0.5, "value": {"x": 22, "y": 22, "width": 0.6, "keypointlabels": ["nose"]}}  # fmt: skip
    assert track["value"] == {**geometry, "text": ["100"]}
    assert track["from_name"] == "track_id" and "score" not in track
    ls.validate_results(items)


def test_generated_ids_do_not_clash_with_kept_region_ids() -> None:
    kps = np.zeros((17, 3))
    kps[0] = (10, 10, 2)
    kept = Person(keypoints=kps, box=Box(0, 0, 50, 50), region_id="p1")
    new = Person(keypoints=kps.copy(), box=Box(100, 100, 50, 50))
    items = ls.persons_to_results([kept, new], W, H)
    ids = [r["id"] for r in items]
    assert len(set(ids)) == len(ids) == 4 and ids == ["p1_k0", "p1__k0", "p1", "p1_"]
    persons, _ = ls.results_to_persons(items)
    assert [p.box.x for p in persons] == pytest.approx([0, 100])


def test_percent_pixel_exactness() -> None:
    rng = np.random.default_rng(0)
    kps = np.zeros((17, 3))
    kps[:, 0], kps[:, 1], kps[:, 2] = rng.uniform(0, W, 17), rng.uniform(0, H, 17), 2
    person = Person(keypoints=kps, box=Box(10.25, 20.5, 300.125, 400.0))
    items = ls.persons_to_results([person], W, H)
    for item in _items(items, "keypointlabels"):
        slot = KEYPOINT_INDEX[item["value"]["keypointlabels"][0]]
        assert item["value"]["x"] == pytest.approx(kps[slot, 0] / W * 100, abs=1e-9)
        assert item["value"]["y"] == pytest.approx(kps[slot, 1] / H * 100, abs=1e-9)
    back, _ = ls.results_to_persons(items)
    present = back[0].present
    assert present.sum() == 15 and not present[[3, 4]].any()
    np.testing.assert_allclose(back[0].keypoints[present], kps[present], atol=1e-8)
    assert back[0].box.xywh == pytest.approx(person.box.xywh, abs=1e-8)
    # LS percentages with few decimals come back bit-identical after percent -> px -> percent.
    hundredths = rng.integers(0, 10001, size=200)
    items = [_kp_item("nose", c / 100, (10000 - c) / 100, f"k{i}") for i, c in enumerate(hundredths.tolist())]
    for item in items:
        (p,), _ = ls.results_to_persons([item])
        (out,) = ls.persons_to_results([p], W, H)
        assert (out["value"]["x"], out["value"]["y"]) == (item["value"]["x"], item["value"]["y"])


def test_geometry_is_clipped_to_the_image() -> None:
    kps = np.zeros((17, 3))
    kps[0] = (-12.0, 500.0, 2)
    items = ls.persons_to_results([Person(keypoints=kps, box=Box(-20, 400, 100, 200))], W, H)
    nose, box = items
    assert (nose["value"]["x"], nose["value"]["y"]) == (0.0, 100.0)
    assert box["value"]["x"] == 0 and box["value"]["y"] + box["value"]["height"] == pytest.approx(100)
    ls.validate_results(items)


def test_a_person_boxed_wholly_outside_the_image_is_not_written() -> None:
    kps = np.zeros((17, 3))
    kps[0] = (W + 30.0, 40.0, 2)
    outside = Person(keypoints=kps, box=Box(W + 10, 10, 50, 50), track_id=3)
    inside = Person(keypoints=kps.copy(), box=Box(10, 10, 50, 50), track_id=4)
    items = ls.persons_to_results([outside, inside], W, H)
    assert {i.get("parentID") for i in items if i["type"] == "keypointlabels"} == {"p1"}
    assert all(i["id"].startswith("p1") for i in items)
    ls.validate_results(items)  # no region without an area, which the webhook would refuse once submitted


# ----------------------------------------------------------------------------- human annotations


def test_manual_keypoints_join_smallest_containing_then_nearest_box(annotation: dict) -> None:
    results = annotation["result"]
    persons, _ = ls.results_to_persons(results, source="annotation 41")
    big, small = persons
    assert (big.region_id, small.region_id) == ("Ab3kQ_9xZr", "Bq81-LmN2e")
    # left_knee at (49.95 %, 77.8 %) lies in both boxes: the smaller one (B) gets it.
    knee = (49.95 / 100 * W, 77.8 / 100 * H)
    assert big.box.contains(*knee) and small.box.contains(*knee)
    assert small.keypoints[KEYPOINT_INDEX["left_knee"]] == pytest.approx([49.95 * W / 100, 77.8 * H / 100, 2])
    assert big.keypoints[KEYPOINT_INDEX["left_knee"], 2] == 0
    # right_ankle at (70 %, 60 %) is outside both; A's right edge (60 %) is nearer than B's (55 %).
    assert big.keypoints[KEYPOINT_INDEX["right_ankle"]] == pytest.approx([0.7 * W, 0.6 * H, 2])
    assert small.keypoints[KEYPOINT_INDEX["right_ankle"], 2] == 0
    assert (big.track_id, small.track_id) == (None, 5)
    assert small.extra["ls_origin"] == {KEYPOINT_INDEX[j]: "manual" for j in ("right_knee", "left_knee")}
    assert small.scores is None and small.score is None  # drawn by hand: labels, not predictions
    assert big.scores is not None and big.scores[0] == 0.8  # kept the prediction's scores
    # Back to LS: identical, except that the hand-drawn keypoints now name their box.
    out = ls.persons_to_results(persons, W, H)
    expected = copy.deepcopy(results)
    for item in expected:
        if item["type"] == "keypointlabels" and "parentID" not in item:
            item["parentID"] = "Bq81-LmN2e" if item["id"] == "-ka7DE_2WJ" else "Ab3kQ_9xZr"
    key = lambda r: (r["id"], r["type"])  # noqa: E731
    assert sorted(out, key=key) == sorted(expected, key=key)


def test_as_labels_moves_scores_out_but_round_trips(annotation: dict) -> None:
    persons, size = ls.results_to_persons(annotation["result"], as_labels=True)
    assert all(p.scores is None and p.score is None for p in persons)
    assert persons[0].extra["ls_scores"] == {0: 0.8, 5: 0.7}
    again, _ = ls.results_to_persons(ls.persons_to_results(persons, *size))
    assert again[0].scores[[0, 5]].tolist() == [0.8, 0.7] and again[0].score == 0.9


def test_orphan_nearest_box_and_occupied_joint() -> None:
    left, right = _box_item("L", 0, 0, 20, 20), _box_item("R", 60, 60, 20, 20)
    near_right = _kp_item("nose", 55, 50, "k1")  # distance to R: 5 % x + 10 % y; to L: 35, 30
    persons, _ = ls.results_to_persons([left, right, near_right])
    assert persons[1].present[0] and not persons[0].present[0]
    # R already has a nose through parentID: the orphan nose goes to the next candidate, L.
    persons, _ = ls.results_to_persons([left, right, _kp_item("nose", 70, 70, "k0", parent="R"), near_right])
    assert persons[0].keypoints[0] == pytest.approx([0.55 * W, 0.5 * H, 2])
    assert persons[1].keypoints[0] == pytest.approx([0.7 * W, 0.7 * H, 2])
    with pytest.raises(AnnotationFormatError, match="every person box has that joint already"):
        ls.results_to_persons([left, _kp_item("nose", 1, 1, "a", parent="L"), _kp_item("nose", 2, 2, "b")])


def test_keypoints_without_any_box_form_one_person() -> None:
    items = [_kp_item("nose", 10, 10, "a"), _kp_item("left_hip", 20, 40, "b")]
    (person,), size = ls.results_to_persons(items)
    assert person.box is None and person.region_id is None and size == (W, H)
    assert person.present.sum() == 2 and person.keypoints[11, :2] == pytest.approx([0.2 * W, 0.4 * H])
    assert ls.persons_to_results([person], W, H) == items
    # A second nose drawn by hand cannot join that person: it starts one of its own.
    persons, _ = ls.results_to_persons(items + [_kp_item("nose", 50, 50, "c")])
    assert [int(p.present.sum()) for p in persons] == [2, 1]


def test_keypoint_under_keypoint_follows_to_its_box() -> None:
    # head_top lies outside B but was dragged under B's nose in the Regions panel.
    items = [_box_item("B", 10, 10, 50, 50), _kp_item("nose", 20, 20, "k0", "B")]
    items.append(_kp_item("head_top", 90, 90, "k2", parent="k0"))
    (person,), _ = ls.results_to_persons(items)
    assert person.present[2] and person.keypoints[2, 0] == pytest.approx(0.9 * W)


def test_empty_result() -> None:
    assert ls.results_to_persons([]) == ([], ls.ImageSize(0, 0))
    assert ls.results_to_persons([], image_size=ls.ImageSize(W, H)) == ([], (W, H))
    assert ls.persons_to_results([], W, H) == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r[1].update(parentID="nope"), "parentID 'nope' names no person box"),
        (lambda r: r[1].update(parentID="p0") or r[2].update(value={**r[2]["value"], "keypointlabels": ["nose"]}),
         "person box 'p0' has joint 'nose' twice"),
        (lambda r: r[0]["value"].update(rotation="30"), "value.rotation must be a finite number of degrees"),
        (lambda r: r[0]["value"].update(width=0), "value.width is 0: a person box needs an area"),
        (lambda r: r[0]["value"].update(x=-60, width=50), "lies outside the 640x480 image"),
        (lambda r: r[0].update(image_rotation=90), "image_rotation = 90"),
        (lambda r: r[16]["value"].update(text=["A7"]), "track id 'A7' is not an integer"),
        (lambda r: r[3]["value"].update(keypointlabels=["left_ear"]), "unknown joint label 'left_ear'"),
        (lambda r: r[3]["value"].pop("x"), "value.x must be a finite number"),
        (lambda r: r[4].update(original_width=320), "disagree on the original image size"),
        (lambda r: r[0]["value"].update(rectanglelabels=["car"]), "box label 'car' is not 'person'"),
        (lambda r: r[3].update(type="rectanglelabels"), "does not match control 'kp'"),
        # integers too large for a double (JSON allows them): were OverflowError tracebacks
        (lambda r: r[3]["value"].update(x=10**400), "value.x must be a finite number"),
        (lambda r: r[4].update(original_width=10**400), "original_width/original_height must be positive integers"),
        (lambda r: r[0]["value"].update(width=-(10**400)), "value.width must be a finite number"),
    ],
)  # fmt: skip
def test_results_to_persons_errors(prediction: dict, mutate, message: str) -> None:
    results = prediction["result"]
    mutate(results)
    with pytest.raises(AnnotationFormatError, match="task 9") as info:
        ls.results_to_persons(results, source="task 9")
    assert message in str(info.value)


def test_other_controls_are_ignored(prediction: dict) -> None:
    extra = {"id": "c1", "from_name": "quality", "to_name": "image", "type": "choices"}
    extra["value"] = {"choices": ["ok"]}
    persons, _ = ls.results_to_persons(prediction["result"] + [extra])
    assert len(persons) == 2


def test_number_track_and_custom_names_round_trip() -> None:
    xml = ls.label_config(image="img", person="who", keypoints="joints", track=None)
    xml = xml.replace("</View>", '<Number name="tid" toName="img" perRegion="true"/></View>')
    cfg = ls.parse_config(xml)
    assert cfg.track_type == "number"
    kps = np.zeros((17, 3))
    kps[[0, 16]] = (100, 100, 2), (200, 300, 1)
    person = Person(keypoints=kps, box=Box(50, 50, 200, 300), track_id=7)
    items = ls.persons_to_results([person], W, H, cfg)
    names = [(r["from_name"], r["to_name"]) for r in items]
    assert names == [("joints", "img"), ("joints", "img"), ("who", "img"), ("tid", "img")]
    assert items[-1]["value"]["number"] == 7 and "text" not in items[-1]["value"]
    ls.validate_results(items, cfg)
    (back,), _ = ls.results_to_persons(items, cfg)
    assert back.track_id == 7 and back.scores is None and back.region_id == "p0"
    np.testing.assert_allclose(back.keypoints[[0, 16], :2], kps[[0, 16], :2])
    assert back.keypoints[16, 2] == 2  # LS has no occlusion flag: every region is a visible joint


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("index", "change", "message"),
    [
        (0, {"from_name": "persn"}, "result[0]: unknown from_name 'persn' (config controls: person, kp, track_id)"),
        (1, {"to_name": "img"}, "result[1]: unknown to_name 'img'"),
        (2, {"value": {"x": 1, "y": 2, "width": 0.6, "keypointlabels": ["neck"]}}, "unknown label 'neck' for 'kp'"),
        (0, {"value": {"x": 90, "y": 0, "width": 20, "height": 5, "rotation": 0, "rectanglelabels": ["person"]}},
         "value.x = 90.0 (+ 20.0) is outside 0..100"),
        (3, {"value": {"x": 5, "y": -1, "width": 0.6, "keypointlabels": ["nose"]}}, "value.y = -1.0"),
        (4, {"value": {"x": 5, "y": 101, "width": 0.6, "keypointlabels": ["nose"]}}, "value.y = 101.0"),
        (5, {"original_width": None}, "original_width is missing"),
        (5, {"original_height": "480"}, "original_height is missing or not a positive integer"),
        (6, {"parentID": "p7"}, "parentID 'p7' names no region"),
        (16, {"id": "p0_k0"}, "track id result reuses no person box id"),
        (0, {"type": "polygonlabels"}, "type 'polygonlabels' does not match control 'person'"),
    ],
)  # fmt: skip
def test_validate_results_errors(prediction: dict, index: int, change: dict, message: str) -> None:
    results = prediction["result"]
    results[index].update(change)
    with pytest.raises(AnnotationFormatError) as info:
        ls.validate_results(results, ls.default_config(), source="task 3")
    text = str(info.value)
    assert message in text and text.startswith("task 3: result[")
    assert f"(region id {results[index]['id']!r})" in text


def test_validate_results_accepts_annotation_and_rejects_missing_size(annotation: dict) -> None:
    ls.validate_results(annotation["result"])
    del annotation["result"][2]["original_height"]
    with pytest.raises(AnnotationFormatError, match=r"result\[2\]: original_height is missing"):
        ls.validate_results(annotation["result"])


# ----------------------------------------------------------------------------- task data


def test_task_data_round_trip() -> None:
    data = ls.task_data("/data/local-files/?d=v1/000004.jpg", "000342_mpii", 4, 40, fps=25)
    assert data == {"image": "/data/local-files/?d=v1/000004.jpg", "video_id": "000342_mpii", "frame_index": 4,
                    "nframes": 40, "fps": 25}  # fmt: skip
    task = ls.parse_task({"id": 12, "data": data})
    assert task == ls.FrameTask("/data/local-files/?d=v1/000004.jpg", "000342_mpii", 4, 40, 25.0, task_id=12)
    assert task.to_data() == data
    assert ls.parse_task(ls.task_data("a.jpg", "v", 0, 1)).fps is None  # bare data dict, no fps
    assert "fps" not in ls.task_data("a.jpg", "v", 0, 1)


_TASK = {"image": "a.jpg", "video_id": "v", "frame_index": 0, "nframes": 3}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": None}, "task 5: data.image: missing (frame tasks need image"),
        ({"video_id": None}, "data.video_id: missing"),
        ({"frame_index": -1}, "data.frame_index: must be an integer >= 0, got -1"),
        ({"frame_index": 1.5}, "data.frame_index: must be"),
        ({"frame_index": True}, "data.frame_index: must be"),
        ({"frame_index": 3}, "data.nframes: must be an integer > frame_index (3), got 3"),
        ({"fps": 0}, "data.fps: must be a positive"),
        ({"image": ""}, "data.image: must be a non-empty"),
        ({"video_id": ["v"]}, "data.video_id: must be a non-empty string"),
    ],
)
def test_parse_task_errors(change: dict, message: str) -> None:
    data = {k: v for k, v in {**_TASK, **change}.items() if v is not None}
    with pytest.raises(AnnotationFormatError) as info:
        ls.parse_task({"id": 5, "data": data})
    assert message in str(info.value) and str(info.value).startswith("task 5")
    with pytest.raises(AnnotationFormatError):
        ls.task_data(data.get("image", ""), data.get("video_id", ""), data.get("frame_index", 0),
                     data.get("nframes", 0), fps=data.get("fps"))  # fmt: skip


def test_a_box_without_keypoints_is_a_box_only_label() -> None:
    config = ls.parse_config(ls.label_config())
    results = ls.persons_to_results([Person(track_id=3, box=Box(10, 20, 100, 200))], 640, 480, config)
    (person,), size = ls.results_to_persons(results, config, as_labels=True)
    assert size == (640, 480) and person.track_id == 3 and not person.present.any()
    np.testing.assert_allclose(person.box.xywh, [10, 20, 100, 200], atol=1e-6)


# ----------------------------------------------------------------------------- stock templates, look


@pytest.mark.parametrize(
    ("spelling", "joint"),
    [("Left Shoulder", "left_shoulder"), ("left-shoulder", "left_shoulder"), ("L_Shoulder", "left_shoulder"),
     ("shoulder_l", "left_shoulder"), ("RightAnkle", "right_ankle"), ("R knee", "right_knee"), ("NOSE", "nose"),
     ("Neck", "head_bottom"), ("Head Top", "head_top"), ("left eye", None), ("Face", None)],
)  # fmt: skip
def test_joint_names_match_leniently(spelling: str, joint: str | None) -> None:
    assert ls.joint_of_name(spelling) == joint


def test_keypoints_only_stock_template_maps_and_lists_unmapped() -> None:
    # The structure of Label Studio's keypoint template: KeyPointLabels on an Image, no boxes.
    xml = """<View><KeyPointLabels name="kp-1" toName="img-1">
        <Label value="Nose" background="red"/><Label value="Left Eye" background="blue"/>
        <Label value="L_Shoulder"/><Label value="right-hip"/><Label value="Hand" predicted_values="left_wrist"/>
      </KeyPointLabels><Image name="img-1" value="$img"/></View>"""
    cfg = ls.parse_config(xml)
    assert cfg.person_from_name is None and cfg.track_from_name is None
    assert cfg.joint_labels == {"Nose": 0, "L_Shoulder": 5, "right-hip": 12, "Hand": 9}
    assert cfg.unmapped == ("Left Eye",)
    kps = np.zeros((17, 3))
    kps[[0, 5, 12]] = (100, 100, 2), (120, 150, 2), (130, 300, 2)
    two = [Person(keypoints=kps, box=Box(50, 50, 200, 300), track_id=1, scores=np.full(17, 0.5), score=0.5),
           Person(keypoints=kps + [300, 0, 0], box=Box(350, 50, 200, 300), track_id=2)]  # fmt: skip
    items = ls.persons_to_results(two, W, H, cfg)
    assert {r["type"] for r in items} == {"keypointlabels"} and not any("parentID" in r for r in items)
    ls.validate_results(items, cfg)
    back, _ = ls.results_to_persons(items, cfg)  # people kept apart by their region ids
    assert [int(p.present.sum()) for p in back] == [3, 3]
    np.testing.assert_allclose(back[1].keypoints[[0, 5, 12], :2], two[1].keypoints[[0, 5, 12], :2])


def test_stock_template_with_rectangles_and_spelled_names() -> None:
    xml = """<View><Image name="image" value="$image"/>
      <RectangleLabels name="label" toName="image"><Label value="Person"/></RectangleLabels>
      <KeyPointLabels name="kp" toName="image"><Label value="Left Hip"/><Label value="Right Knee"/>
      <Label value="tail"/></KeyPointLabels></View>"""
    cfg = ls.parse_config(xml)
    assert (cfg.person_from_name, cfg.person_label, cfg.unmapped) == ("label", "Person", ("tail",))
    assert cfg.joint_labels == {"Left Hip": 11, "Right Knee": 14}


def test_generated_config_look_is_legible() -> None:
    root = ET.fromstring(ls.label_config())
    assert root.find("RectangleLabels").get("fillOpacity") == "0"  # unfilled: does not tint the joints
    colours = dict(zip(LS_JOINTS, ls.JOINT_COLOURS, strict=True))
    assert len(set(colours.values())) == 15

    def hue(colour: str) -> float:
        import colorsys

        r, g, b = (int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
        return colorsys.rgb_to_hsv(r, g, b)[0] * 360

    left = [hue(c) for j, c in colours.items() if j.startswith("left_")]
    right = [hue(c) for j, c in colours.items() if j.startswith("right_")]
    assert all(h <= 60 or h >= 300 for h in left), left  # warm: reds, oranges, yellows, pinks
    assert all(90 <= h <= 290 for h in right), right  # cool: greens, cyans, blues, purples
    caption = root.find(".//View[@visibleWhen='region-selected']/Header")
    assert caption is not None and caption.get("value") == "Track id"
    custom = ET.fromstring(ls.label_config(colours=["#000000"] * 15, box_fill_opacity=0.1, track_caption=None))
    assert custom.find("RectangleLabels").get("fillOpacity") == "0.1"
    assert custom.find(".//Header") is None
    with pytest.raises(ls.ConfigError, match="15 joint colours"):
        ls.label_config(colours=["#000000"])


# ----------------------------------------------------------------------------- annotation semantics: odd but real

YOLO_NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
              "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
              "left_ankle", "right_ankle")  # fmt: skip
# Label Studio's YOLO keypoint config: model_index in COCO's 17-joint order, predicted_values the detector class.
YOLO_CONFIG = ('<View><Image name="image" value="$image"/><KeyPointLabels name="keypoints" toName="image">'
               + "".join(f'<Label value="{n}" predicted_values="person" model_index="{i}"/>' for i, n in enumerate(YOLO_NAMES))
               + "</KeyPointLabels></View>")  # fmt: skip


def _config(*controls: str) -> str:
    return '<View><Image name="image" value="$image"/>' + "".join(controls) + "</View>"


PERSON = '<RectangleLabels name="person" toName="image"><Label value="person"/></RectangleLabels>'
KP = '<KeyPointLabels name="kp" toName="image"><Label value="nose"/><Label value="left_knee"/></KeyPointLabels>'
TRACK = '<TextArea name="track_id" toName="image" perRegion="true"/>'


def test_a_label_naming_a_joint_maps_to_it_whatever_its_model_index() -> None:
    # Was: model_index won, so "left_shoulder" (COCO index 5) was stored as LS_JOINTS[5], the left elbow,
    # "Left Eye" (index 1) as head_bottom; indexes 15/16 refused the whole config.
    cfg = ls.parse_config(YOLO_CONFIG)
    assert cfg.joint_labels == {n: KEYPOINT_INDEX[n] for n in YOLO_NAMES if n in LS_JOINTS}
    assert cfg.unmapped == ("left_eye", "right_eye", "left_ear", "right_ear")
    stock = ls.parse_config(_config('<KeyPointLabels name="kp" toName="image"><Label value="Left Eye" model_index="1"/>'
                                    '<Label value="Punkt" model_index="1"/></KeyPointLabels>'))  # fmt: skip
    assert stock.joint_labels == {"Punkt": KEYPOINT_INDEX["head_bottom"]} and stock.unmapped == ("Left Eye",)
    items = [_kp_item("left_shoulder", 30, 30, "a"), _kp_item("left_eye", 31, 20, "b")]
    for item in items:
        item["from_name"] = "keypoints"
    (person,), _ = ls.results_to_persons(items, cfg)
    assert person.present.nonzero()[0].tolist() == [KEYPOINT_INDEX["left_shoulder"]]


def test_the_pose_controls_are_found_among_extras() -> None:
    note = '<View visibleWhen="region-selected" whenTagName="kp"><TextArea name="note" toName="image" perRegion="true"/></View>'
    cars = '<RectangleLabels name="vehicles" toName="image"><Label value="car"/></RectangleLabels>'
    extras = '<Choices name="quality" toName="image"><Choice value="ok"/></Choices><TextArea name="comment" toName="image"/>'
    face = '<KeyPointLabels name="face" toName="image"><Label value="mouth"/></KeyPointLabels>'
    # Were: the first RectangleLabels (cars) held "persons", the keypoint note was read as the track id.
    cfg = ls.parse_config(_config(cars, note, extras, face, PERSON, KP, TRACK))
    assert (cfg.person_from_name, cfg.person_label, cfg.keypoint_from_name) == ("person", "person", "kp")
    assert cfg.track_from_name == "track_id"
    two = ls.parse_config(_config(PERSON, KP, '<TextArea name="remark" toName="image" perRegion="true"/>', TRACK))
    assert two.track_from_name == "track_id"


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (_config(PERSON, KP, KP.replace('"kp"', '"kp2"').replace("nose", "head_top").replace("left_knee", "right_knee")),
         "2 <KeyPointLabels> name joints: 'kp' (nose, left_knee); 'kp2' (head_top, right_knee)"),
        (_config('<Image name="other" value="$other"/>', KP.replace('toName="image"', 'toName="image,other"')),
         "<KeyPointLabels name='kp'> is bound to several images (image, other)"),
        (_config(PERSON, PERSON.replace('"person" toName', '"people" toName'), KP),
         "several <RectangleLabels> have a 'person' label ('person', 'people')"),
        (_config(PERSON.replace("person", "car"), PERSON.replace("person", "bus"), KP),
         "no <RectangleLabels> on 'image' has a 'person' label ('car', 'bus')"),
        (_config(PERSON, KP, TRACK.replace("track_id", "a"), TRACK.replace("track_id", "b")),
         "several per-region <TextArea>/<Number> could hold the track id ('a', 'b')"),
    ],
)  # fmt: skip
def test_ambiguous_pose_controls_are_refused(xml: str, message: str) -> None:
    # Were: the first control won and the other's human labels were silently ignored.
    with pytest.raises(ls.ConfigError) as info:
        ls.parse_config(xml)
    assert message in str(info.value)


def _track_item(rid: str, text: list) -> dict:
    return {"id": rid, "from_name": "track_id", "to_name": "image", "type": "textarea", "original_width": W,
            "original_height": H, "value": {"x": 10, "y": 10, "width": 50, "height": 50, "rotation": 0, "text": text}}  # fmt: skip


def test_boxes_as_annotators_leave_them() -> None:
    # Rotated with the handle (LS turns it about its top-left corner, clockwise): its bounding box, clipped.
    rotated = _box_item("R", 10, 10, 50, 50)
    rotated["value"]["rotation"] = 90  # (64, 48) px, 320 x 240 turned: x from 64 - 240 to 64, y from 48 to 368
    flipped = _box_item("F", 60, 60, -50, -50)  # dragged past its opposite corner
    turned = _box_item("T", 10, 10, 50, 50)
    turned["value"]["rotation"] = 360
    persons, _ = ls.results_to_persons([rotated, flipped, turned])
    np.testing.assert_allclose(persons[0].box.xywh, [0, 48, 64, 320], atol=1e-6)
    np.testing.assert_allclose(persons[1].box.xywh, [64, 48, 320, 240], atol=1e-6)
    np.testing.assert_allclose(persons[2].box.xywh, [64, 48, 320, 240], atol=1e-6)
    # An orphan keypoint inside the rotated box's bounding box joins it.
    (r, *_), _ = ls.results_to_persons([rotated, _kp_item("nose", 5, 50, "k")])
    assert r.present[0]
    with pytest.raises(AnnotationFormatError, match=r"value.rotation = 90: predictions are unrotated"):
        ls.validate_results([rotated])


def test_labels_of_the_config_that_are_not_persons_or_joints_are_skipped() -> None:
    xml = _config(PERSON.replace('<Label value="person"/>', '<Label value="person"/><Label value="ignore"/>'),
                  KP.replace("</KeyPointLabels>", '<Label value="Face"/></KeyPointLabels>'), TRACK)  # fmt: skip
    cfg = ls.parse_config(xml)
    ignore = _box_item("I", 60, 60, 20, 20)
    ignore["value"]["rectanglelabels"] = ["ignore"]
    items = [_box_item("B", 10, 10, 40, 40), ignore, _track_item("I", ["9"]), _kp_item("Face", 20, 20, "f", "B"),
             _kp_item("nose", 21, 21, "n", "B"), _kp_item("left_knee", 65, 65, "k")]  # fmt: skip
    # Were: "box label 'ignore' is not 'person'" and "unknown joint label 'Face'" refused the whole annotation.
    (person,), _ = ls.results_to_persons(items, cfg)
    assert person.region_id == "B" and person.present.nonzero()[0].tolist() == [0, KEYPOINT_INDEX["left_knee"]]
    with pytest.raises(AnnotationFormatError, match="parentID 'I' names no person box"):
        ls.results_to_persons([*items[:2], _kp_item("nose", 61, 61, "x", "I")], cfg)


@pytest.mark.parametrize(
    ("text", "track"), [([" 2 "], 2), (["+3"], 3), (["٣"], 3), (["4", "4"], 4), (["", "5"], 5), ([], None), ([""], None)]
)  # fmt: skip
def test_track_id_text_as_typed(text: list, track: int | None) -> None:
    (person,), _ = ls.results_to_persons([_box_item("B", 10, 10, 50, 50), _track_item("B", text)])
    assert person.track_id == track


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        # were ValueError (a 500 at the webhook): str.isdigit() accepts digits int() does not read
        (lambda r: r[1]["value"].update(text=["²"]), "track id '²' is not an integer"),
        (lambda r: r[1]["value"].update(text=["--3"]), "track id '--3' is not an integer"),
        (lambda r: r[1]["value"].update(text=["1.5"]), "track id '1.5' is not an integer"),
        # were: the first value or label silently won
        (lambda r: r[1]["value"].update(text=["3", "7"]), "track id has 2 different values ['3', '7']: keep one"),
        (lambda r: r[2]["value"].update(keypointlabels=["nose", "left_knee"]),
         "value.keypointlabels has 2 labels ['nose', 'left_knee']: a region needs exactly one"),
        (lambda r: r[0]["value"].update(rectanglelabels=["person", "car"]), "value.rectanglelabels has 2 labels"),
        # was: read as a joint of this image's person
        (lambda r: r[2].update(to_name="image2"), "result[2]: unknown to_name 'image2' (expected 'image')"),
    ],
)  # fmt: skip
def test_ambiguous_regions_are_refused(mutate, message: str) -> None:
    results = [_box_item("B", 10, 10, 50, 50), _track_item("B", ["1"]), _kp_item("nose", 20, 20, "k", "B")]
    mutate(results)
    with pytest.raises(AnnotationFormatError, match="annotation 5") as info:
        ls.results_to_persons(results, source="annotation 5")
    assert message in str(info.value)


def test_regions_of_another_image_do_not_set_the_size() -> None:
    # Was: "items disagree on the original image size" for any task with a second, other-sized <Image>.
    other = {"id": "z", "from_name": "thumb_kp", "to_name": "thumb", "type": "keypointlabels", "original_width": 64,
             "original_height": 48, "value": {"x": 1, "y": 1, "width": 1, "keypointlabels": ["x"]}}  # fmt: skip
    persons, size = ls.results_to_persons([_box_item("B", 10, 10, 50, 50), other])
    assert size == (W, H) and len(persons) == 1
