"""Tests of model.backbones.yolo_pose: COCO -> PoseTrack slots, choosing the crop's person, and the real model
on the real stills (people found, keypoints on them, the box's person picked from a two-person crop)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from annotation_io.types import Box, Person
from model.backbones.base import Backbone, file_digest
from model.backbones.factory import build_backbone
from model.backbones.yolo_pose import (
    YoloPerson,
    YoloPoseBackbone,
    average_views,
    pick_person,
    posetrack_from_coco,
)
from model.backbones.yolo_weights import INSTALL_HINT, find_weights
from model.bench.real import LIMB_SLOTS, load_stills
from model.transforms import crop_geometry, crop_image, crop_to_frame

# An upright person facing the camera, COCO-17 order (x, y): image y grows downwards.
COCO_UPRIGHT = np.array([
    [100, 50], [105, 45], [95, 45], [112, 48], [88, 48],  # nose, eyes (l, r), ears (l, r)
    [125, 90], [75, 90], [135, 140], [65, 140], [140, 185], [60, 185],  # shoulders, elbows, wrists
    [115, 190], [85, 190], [117, 260], [83, 260], [118, 330], [82, 330],  # hips, knees, ankles
], dtype=float)  # fmt: skip


def upright(vis: float = 0.9) -> np.ndarray:
    return np.hstack([COCO_UPRIGHT, np.full((17, 1), vis)])


def person_at(box: Box, score: float = 0.9) -> YoloPerson:
    kp = upright()
    kp[:, 0] += box.x - 60
    kp[:, 1] += box.y - 40
    return YoloPerson(box, score, kp)


def test_coco_joints_fill_the_posetrack_slots() -> None:
    xy, conf = posetrack_from_coco(upright(0.8))
    limbs = list(range(5, 17))
    assert np.allclose(xy[limbs], COCO_UPRIGHT[limbs]) and np.allclose(xy[0], COCO_UPRIGHT[0])
    assert np.allclose(conf[limbs], 0.8) and conf[0] == pytest.approx(0.8)
    assert conf[3] == conf[4] == 0.0  # PoseTrack never labels the ears
    eyes_y, shoulders_y = 45.0, 90.0
    assert xy[2, 1] < eyes_y - 10  # head_top: well above the eyes
    assert 50.0 < xy[1, 1] < shoulders_y  # head_bottom: between the nose and the shoulder line
    assert abs(xy[1, 0] - 100) < 2 and abs(xy[2, 0] - 100) < 2  # both on the face's midline
    with pytest.raises(ValueError, match=r"\(17, 3\)"):
        posetrack_from_coco(np.zeros((33, 3)))


def test_the_crop_person_is_the_candidate_fitting_the_central_box() -> None:
    crop = YoloPoseBackbone.crop_box()
    own = person_at(Box(crop.x + 20, crop.y, crop.w - 40, crop.h))  # narrower than the 3:4 box
    neighbour = person_at(Box(crop.x + 90, crop.y - 20, crop.w, crop.h), score=0.99)
    assert pick_person([neighbour, own], crop) is own
    lying = person_at(Box(crop.x, crop.y + crop.h / 3, crop.w, crop.h / 3))  # a wide box, same centre
    assert pick_person([lying, neighbour], crop) is lying
    far = person_at(Box(crop.x + crop.w, crop.y, crop.w / 3, crop.h / 3))
    assert pick_person([far], crop) is None
    assert pick_person([], crop) is None


def test_views_of_the_same_person_are_averaged_and_others_are_not() -> None:
    crop = YoloPoseBackbone.crop_box()
    a = person_at(crop)
    b = YoloPerson(crop, 0.8, a.keypoints + [4.0, -2.0, 0.0])
    other = person_at(Box(crop.x + 150, crop.y, crop.w, crop.h))
    assert np.allclose(average_views([a, b], crop), a.keypoints + [2.0, -1.0, 0.0])
    assert np.allclose(average_views([other, a, None], crop), a.keypoints)
    assert average_views([None, None], crop) is None


# ----------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def yolo() -> Iterator[YoloPoseBackbone]:
    try:
        find_weights()
    except FileNotFoundError:
        pytest.skip(f"YOLO11n-pose weights not installed ({INSTALL_HINT})")
    backbone = build_backbone("yolo11_pose")
    assert isinstance(backbone, YoloPoseBackbone)
    yield backbone


STILLS = Path(__file__).resolve().parents[2] / "assets" / "real-stills"  # four of the shared set (its README)


def still(name: str) -> tuple[list[Person], np.ndarray]:
    """(annotated persons, BGR image) of one of the real stills in tests/assets."""
    for video, image in load_stills(STILLS):
        if video.name == name:
            return video.frames[0].persons, image
    pytest.fail(f"{name} not in {STILLS}")


def limb_hits(predicted_xy: np.ndarray, person: Person) -> tuple[int, int]:
    """(limb joints within 0.1 x box diagonal, labelled limb joints)."""
    labelled = person.keypoints[LIMB_SLOTS, 2] > 0
    d = np.linalg.norm(predicted_xy[LIMB_SLOTS] - person.keypoints[LIMB_SLOTS, :2], axis=1)
    return int(((d <= 0.1 * np.hypot(person.box.w, person.box.h)) & labelled).sum()), int(labelled.sum())


def test_factory_builds_it_by_name_with_a_versioned_name(yolo: YoloPoseBackbone) -> None:
    assert isinstance(yolo, Backbone)
    assert yolo.name == "yolo11_pose"
    assert yolo.version == f"yolo11_pose:{file_digest(find_weights())}"


def test_a_missing_weights_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        build_backbone("yolo11_pose", tmp_path / "nothing.pt")


def test_whole_frame_detection_finds_the_annotated_people_with_keypoints_on_them(
    yolo: YoloPoseBackbone,
) -> None:
    persons, image = still("coco_000000196141")  # 4 people, two of them small
    boxes = yolo.detect_people(image)
    for person in persons:
        assert max(person.box.iou(b) for b in boxes) >= 0.5, person.box
    (found,) = yolo.model.people([image])
    hits = total = 0
    for person in persons:
        best = max(found, key=lambda p: p.box.iou(person.box))
        xy, _ = posetrack_from_coco(best.keypoints)
        h, n = limb_hits(xy, person)
        hits, total = hits + h, total + n
    assert hits >= 0.8 * total, f"{hits}/{total} limb joints within 0.1 x box diagonal"


def test_a_two_person_crop_gives_the_pose_of_the_box_person(yolo: YoloPoseBackbone) -> None:
    persons, image = still("crowdpose_103319")  # two people whose boxes overlap
    a, b = persons
    assert a.box.iou(b.box) > 0.2
    geoms = [crop_geometry(p.box) for p in (a, b)]
    crops = np.stack([crop_image(image, g) for g in geoms])
    xy, conf = yolo.keypoints(crops)
    for i, (own, other) in enumerate(((a, b), (b, a))):
        frame_xy = crop_to_frame(xy[i], geoms[i])
        hits, total = limb_hits(frame_xy, own)
        assert hits >= 0.75 * total, f"person {i}: {hits}/{total}"
        assert limb_hits(frame_xy, other)[0] < hits
        assert conf[i, LIMB_SLOTS].mean() > 0.3


def test_heatmaps_peak_at_the_joints_and_are_empty_without_a_person(yolo: YoloPoseBackbone) -> None:
    persons, image = still("coco_000000000785")  # one skier
    geom = crop_geometry(persons[0].box)
    blank = np.full((384, 288, 3), 127, dtype=np.uint8)
    heat = yolo.heatmaps(np.stack([crop_image(image, geom), blank]))
    assert heat.shape == (2, 17, 96, 72) and heat.dtype == torch.float32
    assert heat[1].abs().max() == 0.0  # nobody on a grey crop: empty heatmaps, no error
    assert heat[0, 3:5].abs().max() == 0.0  # ears: confidence 0
    xy, _ = yolo.keypoints(crop_image(image, geom)[None])
    for j in LIMB_SLOTS:
        peak = divmod(int(heat[0, j].argmax()), 72)
        assert np.hypot(peak[1] - xy[0, j, 0] / 4, peak[0] - xy[0, j, 1] / 4) <= 1.0


def test_the_predictor_detects_with_yolo_and_places_the_joints() -> None:
    from annotation_io.types import Frame, Video
    from model.bench.real import _Still, score_frame
    from model.pipeline.predictor import Predictor

    try:
        find_weights()
    except FileNotFoundError:
        pytest.skip(f"YOLO11n-pose weights not installed ({INSTALL_HINT})")
    persons, image = still("coco_000000040083")
    predictor = Predictor.create("yolo11_pose")
    assert predictor.detect(image) == predictor.backbone.detect_people(image)
    video = Video("v", 1, [Frame(0, [])], width=image.shape[1], height=image.shape[0])
    pred = predictor.predict_video(video, reader=_Still(image)).frames[0]
    score = score_frame(Frame(0, persons), pred)
    assert score.found == len(persons)
    assert score.joints_ok >= 0.6 * score.joints
