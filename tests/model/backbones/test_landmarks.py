"""Tests of model.backbones.landmarks and the detector in model.backbones.detectors on real photographs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from annotation_io.skeletons import KEYPOINT_INDEX
from annotation_io.synth import generate
from annotation_io.types import Box
from model.backbones.blazepose import BlazePoseBackbone, posetrack_from_blazepose
from model.backbones.detectors import (
    EDGE_MIN_POSE_SCORE,
    HOG_MAX_HITS,
    HOG_MIN_POSE_SCORE,
    HOG_ROI_SCALE,
    UPRIGHT_RETRY,
    Detection,
    PersonDetector,
    _confirm,
    _pose_at,
    _upright,
    detect_people,
    find_people,
    fine_tiles,
    hog_hits,
    ssd_anchors,
)
from model.backbones.landmarks import (
    LandmarkModel,
    PoseResult,
    Roi,
    box_fit,
    box_iou,
    check_landmark_model,
    fuse_poses,
    head_top,
    refine_from_heatmaps,
    up_rotation,
)
from model.bench.real import load_stills
from model.bench.real_clips import camera_clip
from model.transforms import crop_geometry, crop_image, crop_to_frame
from tests.model.backbones.conftest import limb_joints_per_still

NOSE, LS, RS = 0, KEYPOINT_INDEX["left_shoulder"], KEYPOINT_INDEX["right_shoulder"]
ASTRONAUT_NOSE = (222, 128)  # full-frame BlazePose, measured
CAMERA_MAN_NOSE = (247, 170)
ASTRONAUT_HEAD_TOP_Y = 30  # top of her hair, by eye
STILLS = Path(__file__).resolve().parents[2] / "assets" / "real-stills"  # four of the shared set (its README)


@pytest.fixture(scope="module")
def detector() -> PersonDetector:
    pytest.importorskip("mediapipe")
    det = PersonDetector()
    yield det
    det.close()


@pytest.fixture(scope="module")
def photos() -> tuple[np.ndarray, np.ndarray]:
    data = pytest.importorskip("skimage.data")
    astronaut = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    camera_man = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)
    return astronaut, camera_man


def test_roi_geometry_round_trips_and_rotation_points_up() -> None:
    roi = Roi(100.0, 80.0, 64.0, 0.4)
    pts = np.array([[0.0, 0.0], [128.0, 128.0], [255.0, 3.0]])
    frame = roi.to_frame(pts)
    back = frame @ roi.to_crop()[:, :2].T + roi.to_crop()[:, 2]
    np.testing.assert_allclose(back, pts, atol=1e-9)
    np.testing.assert_allclose(roi.to_frame(np.array([[128.0, 128.0]]))[0], [100.0, 80.0])
    assert up_rotation((0, -1)) == 0.0 and up_rotation((1, 0)) == pytest.approx(np.pi / 2)
    aligned = Roi.from_alignment((50, 100), (50, 60))  # scale point straight above: upright
    assert aligned.rotation == 0.0 and aligned.size == pytest.approx(2 * 40 * 1.25)
    assert not Roi(0, 0, float("nan")).valid


def test_heatmap_refinement_moves_a_landmark_to_its_peak_and_keeps_unsure_ones() -> None:
    rows, cols = np.indices((64, 64))
    peak = np.array([20.4, 30.7])  # (column, row) in cells: crop pixel (81.6, 122.8)
    blob = 8.0 - 2.0 * ((cols - peak[0]) ** 2 + (rows - peak[1]) ** 2)  # logits, sharp peak
    logits = np.full((64, 64, 39), -20.0)
    logits[:, :, 0] = blob  # confident: moved
    logits[:, :, 1] = blob - 12.0  # peak probability < 0.5: kept
    xy = np.full((39, 2), 100.0)
    xy[0] = xy[1] = [84.0, 120.0]  # regressed a few pixels off the peak
    xy[2] = [-50.0, 10.0]  # outside the crop: kept
    xy[3] = [np.nan, np.nan]
    out, sure = refine_from_heatmaps(xy, logits)
    np.testing.assert_allclose(out[0], 4.0 * peak, atol=0.3)
    np.testing.assert_array_equal(out[1:3], xy[1:3])
    assert np.isnan(out[3]).all() and (out[33:] == 100.0).all()  # auxiliary points are not refined
    assert sure[0] > 0.99 and 0.0 < sure[1] < 0.5 and sure[2] == sure[3] == 0.0 and (sure[33:] == 1.0).all()
    assert sure[4] < 1e-6  # a body point whose heatmap is empty


def test_refined_landmarks_stay_on_the_astronaut(photos) -> None:
    pytest.importorskip("mediapipe")
    astronaut, _ = photos
    roi = Roi.from_box(Box.from_xyxy(40, 10, 370, 512))
    raw, refined = LandmarkModel(refine=False), LandmarkModel()
    try:
        a, b = raw.run(astronaut, roi), refined.run(astronaut, roi)
    finally:
        raw.close()
        refined.close()
    shift = np.linalg.norm(a.xy[:33] - b.xy[:33], axis=1)
    assert shift.max() < 0.03 * roi.size and shift.mean() > 0.1  # moved, by a few pixels
    np.testing.assert_array_equal(a.xy[33:], b.xy[33:])
    np.testing.assert_array_equal(a.visibility, b.visibility)
    assert a.heatmap_peak is None and b.heatmap_peak is not None
    np.testing.assert_array_equal(a.box().xyxy, PoseResult(a.xy, a.visibility, a.presence, a.score, a.roi,
                                                           b.heatmap_peak).box().xyxy)  # geometry ignores it
    assert (b.confidence() <= a.confidence() + 1e-12).all() and (b.confidence() < a.confidence() - 0.1).any()
    np.testing.assert_allclose(b.confidence()[[11, 12]], a.confidence()[[11, 12]])  # clear shoulders: kept


def test_roi_landmarks_find_the_astronaut_in_her_box(backbone: BlazePoseBackbone, photos) -> None:
    astronaut, _ = photos
    box = Box.from_xyxy(40, 10, 370, 512)
    pose = backbone.landmarks_in_box(astronaut, box)
    xy, conf = posetrack_from_blazepose(pose.landmarks())
    assert np.linalg.norm(xy[NOSE] - ASTRONAUT_NOSE) < 25
    for shoulder in (xy[LS], xy[RS]):  # under the face, on the shoulder pads
        assert xy[NOSE, 1] + 40 < shoulder[1] < 300
    assert xy[LS, 0] > xy[NOSE, 0] + 40 and xy[RS, 0] < xy[NOSE, 0] - 40  # frontal: her left on the right
    assert pose.score > 0.9 and conf[[NOSE, LS, RS]].min() > 0.8
    assert box_fit(pose, box) > 0.3


def test_a_two_person_crop_returns_the_box_person(backbone: BlazePoseBackbone, photos) -> None:
    astronaut, camera_man = photos
    frame = np.ascontiguousarray(np.concatenate([camera_man[:, 96:360], astronaut], axis=1))  # 776x512
    shift = 360 - 96
    noses = {"camera man": np.array(CAMERA_MAN_NOSE) - [96, 0], "astronaut": np.array(ASTRONAUT_NOSE) + [shift, 0]}
    boxes = {"camera man": Box.from_xyxy(60, 60, 330, 512), "astronaut": Box.from_xyxy(shift + 40, 10, shift + 370, 512)}
    for who, box in boxes.items():
        geom = crop_geometry(box)
        crop = crop_image(frame, geom)
        other = "astronaut" if who == "camera man" else "camera man"
        # The crop holds a good part of the other person's box too.
        x1, x2 = crop_to_frame(np.array([[0.0, 192.0], [287.0, 192.0]]), geom)[:, 0]
        ox1, _, ox2, _ = boxes[other].xyxy
        assert min(x2, ox2) - max(x1, ox1) > 50
        xy, conf = backbone.keypoints(crop[None])
        nose = crop_to_frame(xy[0], geom)[NOSE]
        assert np.linalg.norm(nose - noses[who]) < 30, (who, nose)
        assert np.linalg.norm(nose - noses[other]) > 150


def test_ssd_anchors_match_the_model_output() -> None:
    anchors = ssd_anchors()
    assert anchors.shape == (2254, 2) and anchors.min() > 0 and anchors.max() < 1
    np.testing.assert_allclose(anchors[0], [0.5 / 28, 0.5 / 28])


def test_detector_finds_people_large_and_small(backbone: BlazePoseBackbone, detector: PersonDetector,
                                               photos) -> None:
    astronaut, camera_man = photos
    boxes = detect_people(astronaut, backbone=backbone, detector=detector, use_hog=False)
    assert boxes and boxes[0].contains(*ASTRONAUT_NOSE) and boxes[0].h > 250
    assert boxes[0].y < ASTRONAUT_HEAD_TOP_Y  # the whole head, as an annotator draws the box
    # Two small people (160 px tall) on a large textured frame: found through the tiles.
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(60, 200, (720, 1280, 3), dtype=np.uint8), (0, 0), 3)
    frame[400:560, 900:1060] = cv2.resize(astronaut, (160, 160), interpolation=cv2.INTER_AREA)
    frame[100:260, 150:310] = cv2.resize(camera_man, (160, 160), interpolation=cv2.INTER_AREA)
    small = detect_people(frame, backbone=backbone, detector=detector, use_hog=False)
    nose_a = (900 + ASTRONAUT_NOSE[0] * 160 / 512, 400 + ASTRONAUT_NOSE[1] * 160 / 512)
    nose_c = (150 + CAMERA_MAN_NOSE[0] * 160 / 512, 100 + CAMERA_MAN_NOSE[1] * 160 / 512)
    for nose in (nose_a, nose_c):
        assert any(b.contains(*nose) and b.h < 250 for b in small), (nose, small)


def test_large_frames_get_a_finer_grid_that_finds_small_people(backbone: BlazePoseBackbone,
                                                               detector: PersonDetector, photos) -> None:
    assert fine_tiles(640, 480) == 0 and fine_tiles(900, 600) == 0  # photographs: tiles would be tiny
    assert fine_tiles(1000, 665) == 5 and fine_tiles(1280, 720) == 7 and fine_tiles(1920, 1080) == 7
    # Four people 90 px tall on a 1920x1080 frame, as in a wide shot of a crowd or a dance floor.
    astronaut, camera_man = photos
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(60, 200, (1080, 1920, 3), dtype=np.uint8), (0, 0), 3)
    size, spots = 90, [(200, 300), (900, 650), (1500, 200), (1600, 800)]
    for k, (x, y) in enumerate(spots):
        frame[y:y + size, x:x + size] = cv2.resize(astronaut if k % 2 == 0 else camera_man, (size, size),
                                                   interpolation=cv2.INTER_AREA)
    coarse = detect_people(frame, backbone=backbone, detector=detector, use_hog=False, fine=False)
    boxes = detect_people(frame, backbone=backbone, detector=detector, use_hog=False)
    assert not any(b.contains(x + size / 2, y + size / 2) for b in coarse for x, y in spots)  # 3x3 misses them
    for x, y in spots:
        assert sum(b.contains(x + size / 2, y + size / 2) for b in boxes) == 1, ((x, y), boxes)
    for b in boxes:  # nobody on the texture: each box is one of the pasted people
        assert any(b.contains(x + size / 2, y + size / 2) and b.h < 2 * size for x, y in spots), b
    # A large person on the same kind of frame: the finer grid sees parts of her (a glove, the face) and
    # adds none of them.
    frame = cv2.GaussianBlur(rng.integers(60, 200, (1080, 1920, 3), dtype=np.uint8), (0, 0), 3)
    frame[50:750, 600:1300] = cv2.resize(astronaut, (700, 700), interpolation=cv2.INTER_AREA)
    coarse = detect_people(frame, backbone=backbone, detector=detector, use_hog=False, fine=False)
    assert len(coarse) == 1
    assert detect_people(frame, backbone=backbone, detector=detector, use_hog=False) == coarse


def test_a_hit_aligned_upside_down_gets_an_upright_second_pass(backbone: BlazePoseBackbone, photos) -> None:
    astronaut, _ = photos
    model = backbone.model
    own = model.run(astronaut, Roi.from_box(Box(0, 0, 512, 512)))
    hip, scale = own.xy[33], own.xy[34]  # the pose's own alignment points: upright
    box = Box(0, 0, 10, 10)  # the hit's box is not used for confirmation
    upright = Detection(box, np.array([hip, scale, hip, scale]), 0.9)
    flipped = 2 * hip - scale  # the scale point turned to below the hips: the hit says she stands on her head
    upside_down = Detection(box, np.array([hip, flipped, hip, flipped]), 0.9)
    assert abs(upside_down.roi().rotation) >= UPRIGHT_RETRY > abs(upright.roi().rotation)
    found, second = _confirm([upright], model, astronaut, 0.5, 2)
    assert len(found) == 1 and not second  # confirmed on its own alignment: no second pass
    found, second = _confirm([upside_down], model, astronaut, 0.5, 2)
    assert not found  # the upside-down crop is rejected ...
    (person,) = second  # ... and the upright pass at the same place finds her
    assert person.box.contains(*ASTRONAUT_NOSE) and person.pose.roi.rotation == pytest.approx(0.0, abs=0.3)


def test_body_box_holds_hands_feet_and_head_top_not_unsure_points() -> None:
    xy = np.zeros((39, 2))
    xy[:33] = [100.0, 200.0]  # every landmark at one point, then spread some out
    xy[2], xy[5], xy[7], xy[8], xy[9], xy[10] = [95, 100], [105, 100], [90, 102], [110, 102], [97, 120], [103, 120]
    xy[15], xy[16] = [40, 250], [160, 250]  # wrists
    xy[19], xy[20] = [20, 260], [185, 260]  # index fingers, beyond the wrists
    xy[27], xy[28], xy[31], xy[32] = [90, 400], [110, 400], [80, 430], [125, 432]  # ankles, foot tips
    xy[29] = [500, 500]  # an unsure heel far away
    vis = np.ones(39)
    vis[29] = 0.05
    pose = PoseResult(xy, vis, np.ones(39), 1.0, Roi(100, 250, 400))
    top = head_top(xy)
    assert top[1] < 100  # above the eyes
    box = pose.body_box(margin=0.0)
    assert box.xyxy == pytest.approx((20, top[1], 185, 432))
    core = pose.box(margin=0.0)  # core joints only: no fingers, no foot tips, no head top
    assert core.x > box.x and core.y > box.y and core.y + core.h < 432
    grown = pose.body_box(margin=0.05)
    assert grown.h == pytest.approx(box.h * 1.1)


class _BlindDetector:
    """BlazePose's person detector missing everyone, as it misses people seen from behind on a street."""

    def detect(self, frame_bgr: np.ndarray, **kwargs: object) -> list:
        return []

    def detect_fine(self, frame_bgr: np.ndarray, **kwargs: object) -> list:
        return []

    def detect_split(self, frame_bgr: np.ndarray, **kwargs: object) -> tuple[list, list]:
        return [], []


def test_hog_finds_upright_people_the_detector_misses(backbone: BlazePoseBackbone, detector: PersonDetector) -> None:
    (gt, image), = [s for s in load_stills(STILLS) if s[0].name == "coco_000000196141"]
    small = min((p.box for p in gt.frames[0].persons), key=lambda b: b.h)  # a boy 96 px tall, far left
    blind = _BlindDetector()
    assert find_people(blind, backbone.model, image, hog=False) == []
    found = find_people(blind, backbone.model, image)
    assert [box_iou(p.box, small) > 0.7 for p in found] == [True], (small, [p.box for p in found])
    assert found[0].pose.score >= 0.9
    # Where the detector finds everyone, HOG's hits on them add nobody: the same four people.
    own = find_people(detector, backbone.model, image, hog=False)
    assert len(own) == 4 and [p.box for p in find_people(detector, backbone.model, image)] == [p.box for p in own]


def test_a_person_the_frame_edge_cuts_is_found_from_a_weaker_hit(backbone: BlazePoseBackbone,
                                                                detector: PersonDetector) -> None:
    """The catcher behind a batter, half out of the shot (a COCO still as the moving camera films it,
    `bench-real --clips`): BlazePose's detector scores him under its threshold, so he was never shown."""
    (gt, image), = [s for s in load_stills(STILLS) if s[0].name == "coco_000000196141"]
    clip, reader = camera_clip(gt, image)
    frame = reader.read(0)
    height, width = frame.shape[:2]
    cut = [b for b in (p.box.clip(width, height) for p in clip.frames[0].persons) if b.x + b.w >= width - 1]
    catcher = max(cut, key=lambda b: b.area)  # the test means something: the right edge cuts him
    before = find_people(detector, backbone.model, frame, edge=False)
    assert not any(box_iou(p.box, catcher) > 0.5 for p in before)
    after = find_people(detector, backbone.model, frame)
    assert [p.box for p in after[: len(before)]] == [p.box for p in before]  # the others as before
    new = [p for p in after if all(p.box != q.box for q in before)]
    assert [box_iou(p.box.clip(width, height), catcher) > 0.7 for p in new] == [True]
    assert new[0].pose.score >= EDGE_MIN_POSE_SCORE


def test_weak_edge_hits_whose_pose_lies_across_the_frame_are_not_people(backbone: BlazePoseBackbone,
                                                                       detector: PersonDetector,
                                                                       tmp_path: Path) -> None:
    """On a synthetic walk, weak hits at the edge gave sure poses (0.82-0.99) lying across the frame or
    holding the walker: 34 false people in 40 frames. The edge pass keeps upright poses that hold nobody."""
    generate(tmp_path, videos=1, frames=40, people=1, seed=1)
    frame = cv2.imread(str(sorted((tmp_path / "images").rglob("*.jpg"))[20]))
    height, width = frame.shape[:2]
    weak = detector.detect_split(frame)[1]
    assert any(d.roi().valid and _pose_at(backbone.model, frame, d.roi(), 2).score >= EDGE_MIN_POSE_SCORE
               for d in weak)  # the test means something: weak hits with sure poses
    before = find_people(detector, backbone.model, frame, edge=False)
    assert len(before) == 1
    assert [p.box for p in find_people(detector, backbone.model, frame)] == [p.box for p in before]


def test_hog_hits_that_are_not_people_are_not_confirmed(backbone: BlazePoseBackbone) -> None:
    # Upright bars on a wall: HOG's person window fires on such edges; the landmark model refuses them.
    rng = np.random.default_rng(1)
    frame = cv2.GaussianBlur(rng.integers(90, 170, (540, 960, 3), dtype=np.uint8), (0, 0), 2)
    for x in range(120, 900, 110):
        cv2.rectangle(frame, (x, 140), (x + 28, 420), (30, 30, 30), -1)
        cv2.circle(frame, (x + 14, 120), 18, (30, 30, 30), -1)
    hits = hog_hits(frame)
    assert len(hits) >= 2, hits  # the test means something: HOG takes bars for people
    found = find_people(_BlindDetector(), backbone.model, frame)
    assert found == [], [p.box for p in found]


class _CountingLandmarks:
    """A landmark model seeing nobody anywhere, counting its passes."""

    def __init__(self) -> None:
        self.rois: list[Roi] = []

    def run(self, frame_bgr: np.ndarray, roi: Roi) -> PoseResult:
        self.rois.append(roi)
        return PoseResult(np.zeros((39, 2)), np.zeros(39), np.zeros(39), 0.0, roi)


def test_hog_hits_get_a_bounded_number_of_landmark_passes() -> None:
    """A frame full of upright edges (a fence, a crowd) can give HOG dozens of hits; only the best
    HOG_MAX_HITS of them cost a landmark pass, best SVM score first."""
    frame = np.zeros((720, 1280, 3), np.uint8)
    hits = [(Box(40.0 * i, 100.0, 30.0, 90.0), float(i)) for i in range(3 * HOG_MAX_HITS)]
    landmarks = _CountingLandmarks()
    assert find_people(_BlindDetector(), landmarks, frame, hog=hits, realign=0) == []
    assert len(landmarks.rois) == HOG_MAX_HITS
    assert landmarks.rois[0].cx == pytest.approx(40.0 * (3 * HOG_MAX_HITS - 1) + 15.0)  # the best hit first


@pytest.mark.parametrize(("still", "index"), [("coco_000000196141", 0), ("crowdpose_103319", 0)])
def test_a_sure_pose_upside_down_is_not_an_upright_person(backbone: BlazePoseBackbone, still: str, index: int) -> None:
    """HOG looks for upright people, and the landmark pass on an upright ROI can return a sure pose that
    is not (on a real clip, one spread over two men leaning together, ankles above hips). Real people
    turned upside down give such passes: sure, and not shoulders-hips-ankles top to bottom."""
    (gt, image), = [s for s in load_stills(STILLS) if s[0].name == still]
    box = sorted((p.box for p in gt.frames[0].persons), key=lambda b: -b.h)[index]
    roi = Roi(box.x + box.w / 2, box.y + box.h / 2, HOG_ROI_SCALE * box.h, 0.0)
    pose = _pose_at(backbone.model, image, roi, 2)
    assert pose.score >= HOG_MIN_POSE_SCORE and _upright(pose)
    flipped = np.ascontiguousarray(image[::-1])
    roi = Roi(roi.cx, image.shape[0] - roi.cy, roi.size, 0.0)
    pose = _pose_at(backbone.model, flipped, roi, 2)
    assert pose.score >= HOG_MIN_POSE_SCORE, pose.score  # the test means something: the pass is sure
    assert not _upright(pose)


# ----------------------------------------------------------------------------- a second landmark model

HEAVY = Path(__file__).resolve().parents[3] / "weights" / "pose_landmark_heavy.tflite"  # `make heavy`


def _bundled(name: str) -> str:
    from model.backbones.tflite import bundled_model_root

    return str(Path(bundled_model_root()) / "mediapipe" / "modules" / name)


def test_fused_poses_lean_to_the_surer_model() -> None:
    roi = Roi(50.0, 50.0, 100.0, 0.0)
    ones = np.ones(39)
    sure = PoseResult(np.zeros((39, 2)), ones * 0.9, ones, 1.0, roi, ones)
    unsure = PoseResult(np.full((39, 2), 10.0), ones * 0.1, ones, 0.5, Roi(0.0, 0.0, 10.0, 0.0), None)
    fused = fuse_poses(sure, unsure)
    a, b = sure.confidence()[0], unsure.confidence()[0]  # 0.9 and 0.05
    np.testing.assert_allclose(fused.xy, np.full((39, 2), 10.0 * b / (a + b)))
    assert fused.xy[0, 0] < 1.0 and fused.roi is roi and fused.heatmap_peak is None
    np.testing.assert_allclose(fused.visibility, 0.5)
    assert fused.score == pytest.approx(0.75)
    np.testing.assert_allclose(fuse_poses(sure, sure).xy, sure.xy)


def test_only_a_blazepose_landmark_model_is_taken_as_the_second(tmp_path: Path) -> None:
    """A missing file, a file that is no TFLite model, and a TFLite model of other inputs (BlazePose's own
    person detector) are refused naming the file; the bundled landmark model passes."""
    pytest.importorskip("mediapipe")
    with pytest.raises(ValueError, match="no such file"):
        check_landmark_model(str(tmp_path / "missing.tflite"))
    (tmp_path / "text.tflite").write_text("not a model")
    with pytest.raises(ValueError, match=r"text\.tflite is not a BlazePose landmark model.*not a TFLite file"):
        check_landmark_model(str(tmp_path / "text.tflite"))
    detector = _bundled("pose_detection/pose_detection.tflite")
    with pytest.raises(ValueError, match=r"pose_detection\.tflite is not a BlazePose landmark model"):
        check_landmark_model(detector)
    check_landmark_model(_bundled("pose_landmark/pose_landmark_full.tflite"))


def test_a_second_landmark_model_runs_once_per_box_and_is_fused() -> None:
    """The bundled model as its own second opinion: one more pass per box on the winning ROI, and the
    fused pose is the single model's (two equal poses)."""
    pytest.importorskip("mediapipe")
    (gt, image), = [s for s in load_stills(STILLS) if s[0].name == "coco_000000040083"]
    box = gt.frames[0].persons[0].box
    full = _bundled("pose_landmark/pose_landmark_full.tflite")
    with BlazePoseBackbone() as one, BlazePoseBackbone(second_model=full) as two:
        alone, fused = one.landmarks_in_box(image, box), two.landmarks_in_box(image, box)
        assert (one.model.calls, two.model.calls, two._second.calls) == (3, 3, 1)
    np.testing.assert_allclose(fused.xy, alone.xy, atol=1e-6)
    np.testing.assert_allclose(fused.confidence(), alone.confidence(), atol=1e-6)


@pytest.mark.skipif(not HEAVY.is_file(), reason=f"{HEAVY} not fetched (make heavy)")
def test_the_heavy_model_places_more_limb_joints_on_real_stills() -> None:
    """BlazePose's heavy landmark model fused with the bundled one, on the test stills with their boxes
    given: at least as many limb joints within 0.1 x box diagonal, and more on one of them at least."""
    scores = {weights: limb_joints_per_still("blazepose", weights) for weights in (None, HEAVY)}
    assert all(h >= b for b, h in zip(scores[None], scores[HEAVY])) and sum(scores[HEAVY]) > sum(scores[None]), scores
