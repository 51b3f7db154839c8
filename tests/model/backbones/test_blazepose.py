"""Tests of model.backbones.blazepose: landmark mapping, BlazePose crops -> heatmaps, whole-frame people detection."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import model.backbones.blazepose
import model.backbones.detectors
import model.backbones.landmarks
import model.backbones.tflite
from annotation_io.skeletons import FLIP_PAIRS, KEYPOINT_INDEX, NUM_KEYPOINTS
from annotation_io.types import Box
from model.backbones.blazepose import (
    BlazePoseBackbone,
    MediaPipeUnavailableError,
    posetrack_from_blazepose,
)
from model.backbones.detectors import detect_people, hog_people
from model.backbones.landmarks import HEAD_TOP_FACTOR
from model.heatmaps import decode
from model.transforms import crop_geometry, crop_image, crop_to_frame

NOSE, HEAD_BOTTOM, HEAD_TOP = 0, 1, 2
LS, RS = KEYPOINT_INDEX["left_shoulder"], KEYPOINT_INDEX["right_shoulder"]
# BlazePose-33 left/right pairs (eyes, ears, mouth, limbs, hands, feet).
BP_FLIP_PAIRS = ((1, 4), (2, 5), (3, 6), (7, 8), (9, 10)) + tuple((i, i + 1) for i in range(11, 33, 2))
ASTRONAUT_BOX = Box.from_xyxy(40, 10, 370, 512)  # her head, torso and arms on the 512x512 photograph


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def astronaut_bgr() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])  # RGB -> BGR, as OpenCV reads frames


@pytest.fixture(scope="module")
def astronaut_crop(astronaut_bgr: np.ndarray):
    geom = crop_geometry(ASTRONAUT_BOX)
    return crop_image(astronaut_bgr, geom), geom


def synthetic_landmarks() -> np.ndarray:
    """(33, 3) a frontal, upright person (image x right, y down): person's left on the image right."""
    lm = np.zeros((33, 3))
    lm[:, 2] = 0.9
    pts = {
        0: (100, 100), 2: (110, 90), 5: (90, 90), 1: (106, 90), 3: (114, 90), 4: (94, 90), 6: (86, 90),
        7: (120, 95), 8: (80, 95), 9: (106, 112), 10: (94, 112),
        11: (130, 150), 12: (70, 150), 13: (140, 200), 14: (60, 200), 15: (145, 250), 16: (55, 250),
        23: (120, 260), 24: (80, 260), 25: (122, 330), 26: (78, 330), 27: (124, 400), 28: (76, 400),
    }
    for i in range(33):
        lm[i, :2] = pts.get(i, (100 + (5 if i % 2 else -5), 420))
    return lm


def standing_figure(width: int = 640, height: int = 480, cx: int = 320, top: int = 80, tall: int = 320):
    """A dark stick person on a light background (the HOG detector's upright pedestrian case)."""
    img = np.full((height, width, 3), 200, np.uint8)
    ink, u = (40, 40, 40), tall / 8
    cv2.circle(img, (cx, int(top + u * 0.5)), int(u * 0.5), ink, -1)
    cv2.line(img, (cx, int(top + u)), (cx, int(top + u * 1.3)), ink, int(u * 0.35))
    torso = [[cx - u * 0.9, top + u * 1.3], [cx + u * 0.9, top + u * 1.3], [cx + u * 0.6, top + u * 4],
             [cx - u * 0.6, top + u * 4]]
    cv2.fillPoly(img, [np.array(torso, np.int32)], ink)
    for s in (-1, 1):
        shoulder = (int(cx + s * u * 0.8), int(top + u * 1.5))
        hand = (int(cx + s * u * 1.1), int(top + u * 3.8))
        hip, foot = (int(cx + s * u * 0.35), int(top + u * 4)), (int(cx + s * u * 0.6), int(top + u * 8))
        cv2.line(img, shoulder, hand, ink, int(u * 0.3))
        cv2.line(img, hip, foot, ink, int(u * 0.4))
    return img


# -- pure mapping (no mediapipe) --------------------------------------------------------------------
def test_mapping_direct_joints_and_confidences() -> None:
    lm = synthetic_landmarks()
    lm[11, 2], lm[12, 2], lm[0, 2] = 1.3, -0.2, 0.4  # out-of-range visibilities get clipped
    xy, conf = posetrack_from_blazepose(lm)
    assert xy.shape == (NUM_KEYPOINTS, 2) and conf.shape == (NUM_KEYPOINTS,)
    np.testing.assert_allclose(xy[LS], lm[11, :2])  # BlazePose left = person's left = PoseTrack left
    np.testing.assert_allclose(xy[KEYPOINT_INDEX["right_ankle"]], lm[28, :2])
    np.testing.assert_allclose(xy[KEYPOINT_INDEX["left_wrist"]], lm[15, :2])
    assert conf[LS] == 1.0 and conf[RS] == 0.0 and conf[NOSE] == pytest.approx(0.4)
    assert conf[3] == 0.0 and conf[4] == 0.0  # ears: PoseTrack never labels them
    np.testing.assert_allclose(xy[3], lm[7, :2])  # ...but keep their position
    assert conf[HEAD_BOTTOM] == pytest.approx(np.mean([0.9, 0.9, 1.0, 0.0]))
    assert ((conf >= 0) & (conf <= 1)).all()


def test_mapping_derived_head_joints() -> None:
    lm = synthetic_landmarks()
    xy, _ = posetrack_from_blazepose(lm)
    mouth_y, eye_y, shoulder_y = 112.0, 90.0, 150.0
    # head_bottom: below the mouth, above the shoulders, nearer the mouth; on the body's midline.
    assert mouth_y < xy[HEAD_BOTTOM, 1] < (mouth_y + shoulder_y) / 2
    assert xy[HEAD_BOTTOM, 0] == pytest.approx(100.0)
    # head_top: above the eyes by roughly 1.5-2.2 eye-to-mouth distances, on the midline.
    rise = (eye_y - xy[HEAD_TOP, 1]) / (mouth_y - eye_y)
    assert 1.5 < rise < 2.2
    assert xy[HEAD_TOP, 0] == pytest.approx(100.0)


def test_mapping_is_mirror_and_rotation_equivariant() -> None:
    lm = synthetic_landmarks()
    xy, conf = posetrack_from_blazepose(lm)
    # Mirror the image (x -> 300 - x): BlazePose relabels left/right, so PoseTrack left/right swap too.
    mirrored = lm.copy()
    mirrored[:, 0] = 300 - mirrored[:, 0]
    for a, b in BP_FLIP_PAIRS:
        mirrored[[a, b]] = mirrored[[b, a]]
    xy_m, conf_m = posetrack_from_blazepose(mirrored)
    expected = xy.copy()
    expected[:, 0] = 300 - expected[:, 0]
    for a, b in FLIP_PAIRS:
        expected[[a, b]] = expected[[b, a]]
    np.testing.assert_allclose(xy_m, expected, atol=1e-9)
    np.testing.assert_allclose(conf_m, conf)
    # A person lying on the side: derived joints turn with the head (no fixed "up" axis).
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    turned = lm.copy()
    turned[:, :2] = lm[:, :2] @ rot.T
    xy_t, _ = posetrack_from_blazepose(turned)
    np.testing.assert_allclose(xy_t, xy @ rot.T, atol=1e-9)


def test_mapping_rejects_bad_landmarks() -> None:
    with pytest.raises(ValueError, match=r"\(33, 3\)"):
        posetrack_from_blazepose(np.zeros((17, 3)))
    bad = synthetic_landmarks()
    bad[5, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        posetrack_from_blazepose(bad)
    assert HEAD_TOP_FACTOR > 1  # the top of the skull lies further from the eyes than the mouth does


def test_import_is_light_and_missing_mediapipe_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # mediapipe is imported inside functions only, so `import model` never loads it.
    for module in (model.backbones.blazepose, model.backbones.landmarks, model.backbones.tflite,
                   model.backbones.detectors):
        tree = ast.parse(Path(module.__file__).read_text())
        top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top_level for a in n.names] + [n.module or "" for n in top_level
                                                                if isinstance(n, ast.ImportFrom)]
        assert "numpy" in names and not any(name.startswith("mediapipe") for name in names)
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` fail
    with pytest.raises(MediaPipeUnavailableError, match=r"mediapipe 0\.10\.21"):
        BlazePoseBackbone()


# -- BlazePose on real crops ------------------------------------------------------------------------
def test_astronaut_keypoints(backbone: BlazePoseBackbone, astronaut_crop) -> None:
    crop, geom = astronaut_crop
    assert crop.shape == (384, 288, 3)
    xy, conf = backbone.keypoints(crop[None])
    assert xy.shape == (1, 17, 2) and conf.shape == (1, 17)
    frame = crop_to_frame(xy[0], geom)  # back to the 512x512 photograph (measured: nose ~(216, 132))
    nose, ls, rs = frame[NOSE], frame[LS], frame[RS]
    assert 180 <= nose[0] <= 260 and 100 <= nose[1] <= 165
    assert 0 <= frame[HEAD_TOP, 1] <= nose[1] - 50  # top of the head well above the nose (~y 35)
    assert nose[1] < frame[HEAD_BOTTOM, 1] < (ls[1] + rs[1]) / 2  # under the face, above the shoulders
    assert 160 <= frame[HEAD_BOTTOM, 1] <= 215  # chin at ~y 172
    for shoulder in (ls, rs):
        assert shoulder[1] > nose[1] + 50 and 180 <= shoulder[1] <= 300
    # Frontal person: her left shoulder is on the image's right.
    assert ls[0] > nose[0] + 40 and rs[0] < nose[0] - 40
    for slot in (NOSE, HEAD_BOTTOM, HEAD_TOP, LS, RS):
        assert conf[0, slot] >= 0.9, f"low confidence {conf[0, slot]:.2f} for slot {slot}"
    assert conf[0, 3] == 0 and conf[0, 4] == 0


def test_mirrored_crop_swaps_left_and_right(backbone: BlazePoseBackbone, astronaut_crop) -> None:
    crop, _ = astronaut_crop
    mirrored = np.ascontiguousarray(crop[:, ::-1])
    xy, conf = backbone.keypoints(np.stack([crop, mirrored]))
    assert (conf[:, [LS, RS]] > 0.9).all()
    width = crop.shape[1]
    shoulder_width = np.linalg.norm(xy[0, LS] - xy[0, RS])
    # The pixel BlazePose called her left shoulder is called the right shoulder in the mirror image.
    for a, b in ((LS, RS), (RS, LS)):
        mirrored_point = np.array([width - 1 - xy[0, a, 0], xy[0, a, 1]])
        assert np.linalg.norm(xy[1, b] - mirrored_point) < 0.2 * shoulder_width
    assert xy[1, LS, 0] > xy[1, RS, 0]  # still frontal: the left shoulder stays on the image's right


def test_heatmaps_peak_at_keypoints(backbone: BlazePoseBackbone, astronaut_crop) -> None:
    crop, _ = astronaut_crop
    xy, conf = backbone.keypoints(crop[None])
    hm = backbone.heatmaps(crop[None])
    assert hm.shape == (1, 17, 96, 72) and hm.dtype == torch.float32
    peak_xy, peak = decode(hm)
    hm_xy = xy[0] / 4.0
    inside = (hm_xy[:, 0] >= 0) & (hm_xy[:, 0] <= 71) & (hm_xy[:, 1] >= 0) & (hm_xy[:, 1] <= 95)
    check = inside & (conf[0] > 0.3)
    assert check[[NOSE, HEAD_TOP, HEAD_BOTTOM, LS, RS]].all()
    err = np.linalg.norm(peak_xy[0, check] - hm_xy[check], axis=-1)
    assert err.max() < 0.6, f"heatmap peaks off by {err.max():.2f} heatmap px"
    # Peak height = joint confidence (a Gaussian sampled at most half a pixel off its centre).
    assert (peak[0, check] <= conf[0, check] + 1e-5).all() and (peak[0, check] >= 0.9 * conf[0, check]).all()
    assert hm[0, 3].abs().max() == 0 and hm[0, 4].abs().max() == 0  # ears


def test_blank_crop_gives_low_scores_and_batch_is_per_crop(backbone: BlazePoseBackbone, astronaut_crop):
    crop, _ = astronaut_crop
    blank = np.full_like(crop, 128)
    xy_one, conf_one = backbone.keypoints(crop[None])
    xy, conf = backbone.keypoints(np.stack([blank, crop]))
    # Nobody there: a pose is still returned (no detector gate), with low scores instead of nothing.
    assert conf[0].max() < 0.3 and np.isfinite(xy[0]).all()
    np.testing.assert_allclose(xy[1], xy_one[0], atol=1e-3)
    np.testing.assert_allclose(conf[1], conf_one[0], atol=1e-4)
    hm = backbone.heatmaps(np.stack([blank, crop]))
    assert hm[0].max() < 0.3 and hm[1].max() > 0.9
    empty = backbone.heatmaps(np.zeros((0, 384, 288, 3), np.uint8))
    assert empty.shape == (0, 17, 96, 72)


def test_calls_from_threads_are_serialised(backbone: BlazePoseBackbone, astronaut_crop) -> None:
    crop, _ = astronaut_crop
    expected, _ = backbone.keypoints(crop[None])
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(backbone.keypoints(crop[None])[0])
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2
    for got in results:
        np.testing.assert_allclose(got, expected, atol=1e-3)


def test_bad_crops_and_closed_backbone_raise(backbone: BlazePoseBackbone) -> None:
    assert (backbone.name, backbone.heatmap_size, backbone.input_size) == ("blazepose", (96, 72), (384, 288))
    with pytest.raises(ValueError, match=r"crops_bgr must have shape \(N, 384, 288, 3\)"):
        backbone.heatmaps(np.zeros((1, 256, 192, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        backbone.keypoints(np.zeros((1, 384, 288, 3), np.float32))
    with pytest.raises(ValueError, match="sigma"):
        BlazePoseBackbone(sigma=0)
    other = BlazePoseBackbone()
    other.close()
    with pytest.raises(RuntimeError, match="closed"):
        other.keypoints(np.zeros((1, 384, 288, 3), np.uint8))


# -- people detection on whole frames ---------------------------------------------------------------
def test_detect_people_finds_the_astronaut(backbone: BlazePoseBackbone, astronaut_bgr: np.ndarray) -> None:
    boxes = detect_people(astronaut_bgr, max_people=3, backbone=backbone)
    assert 1 <= len(boxes) <= 3
    her = boxes[0]
    for x, y in ((222, 128), (305, 255), (115, 240)):  # nose and shoulders (full-frame BlazePose)
        assert her.contains(x, y)
    assert 150 <= her.w <= 420 and 250 <= her.h <= 512
    x1, y1, x2, y2 = her.xyxy
    assert x1 >= 0 and y1 >= 0 and x2 <= 512 and y2 <= 512


def test_detect_people_iterates_over_two_people(backbone: BlazePoseBackbone, astronaut_bgr: np.ndarray):
    data = pytest.importorskip("skimage.data")
    camera_man = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)
    frame = np.concatenate([camera_man, astronaut_bgr], axis=1)  # 1024x512, two people side by side
    noses = [(247, 170), (512 + 222, 128)]  # full-frame BlazePose on each photograph alone
    boxes = detect_people(frame, max_people=2, backbone=backbone, use_hog=False)
    assert len(boxes) == 2
    assert all(any(b.contains(*n) for b in boxes) for n in noses)
    assert not any(b.contains(*noses[0]) and b.contains(*noses[1]) for b in boxes)


class _BlindDetector:
    """A person detector that finds nobody."""

    def detect(self, frame_bgr: np.ndarray, **kwargs: object) -> list:
        return []

    def detect_fine(self, frame_bgr: np.ndarray, **kwargs: object) -> list:
        return []

    def detect_split(self, frame_bgr: np.ndarray, **kwargs: object) -> tuple[list, list]:
        return [], []

    def close(self) -> None:
        pass


def test_hog_fallback_and_empty_frame(backbone: BlazePoseBackbone) -> None:
    figure = standing_figure()  # person at x 270..370, y 80..400
    boxes = hog_people(figure)
    assert len(boxes) >= 1
    assert boxes[0].contains(320, 90) and boxes[0].contains(320, 390) and boxes[0].w < 320
    # Two stick figures side by side, a detector that finds nobody: detect_people falls back to HOG.
    left, right = standing_figure(cx=200, top=60, tall=300), standing_figure(cx=420, top=120, tall=300)
    pair = np.concatenate([left, right], axis=1)
    blind = _BlindDetector()
    assert detect_people(pair, backbone=backbone, detector=blind, use_hog=False) == []
    centres = [(200, 210), (640 + 420, 270)]  # torso centres
    boxes = detect_people(pair, max_people=4, backbone=backbone, detector=blind)
    assert len(boxes) == 2 and all(any(b.contains(*c) for b in boxes) for c in centres)
    grey = np.full((240, 320, 3), 128, np.uint8)
    assert hog_people(grey) == []
    assert detect_people(grey, backbone=backbone) == []
    with pytest.raises(ValueError, match="max_people"):
        detect_people(grey, max_people=0, backbone=backbone)
    with pytest.raises(ValueError, match=r"frame_bgr must be an \(H, W, 3\)"):
        detect_people(grey[..., 0], backbone=backbone)


def test_hog_on_panoramas_too_thin_to_scale_finds_nobody() -> None:
    """Before: a 20000x10 frame scales to 800x0 for HOG and cv2.resize raised cv2.error ("!dsize.empty()"):
    HTTP 500 from /predict for such a task image, a traceback from `python -m model predict`."""
    for h, w in [(10, 20000), (20000, 10), (3, 20000), (19, 800 * 20)]:
        assert hog_people(np.full((h, w, 3), 90, np.uint8)) == [], (h, w)


def test_hog_on_frames_thinner_than_its_window_finds_nobody_without_crashing() -> None:
    """On main, OpenCV's HOG segfaulted (or "double free") on an 800x40 frame: the server died with it.

    Run in a child process, a few frames each: the corruption does not crash every single call.
    """
    code = (
        "import numpy as np\n"
        "from model.backbones.detectors import hog_people\n"
        "rng = np.random.default_rng(0)\n"
        "for h, w in [(40, 800), (60, 1920), (500, 2), (800, 3), (3, 800)] * 3:\n"
        "    assert hog_people(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) == [], (h, w)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parents[3])  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])
