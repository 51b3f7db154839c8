"""Tests of model.pipeline.one_per_box: two boxes of a frame that got one person's pose each get their own."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from annotation_io.skeletons import NUM_KEYPOINTS
from annotation_io.types import Box, Frame, Person, Video
from model.heatmaps import render_gaussians
from model.pipeline.config import InferConfig
from model.pipeline.one_per_box import (
    APART_GAP,
    MIN_SHARED,
    PAINT_SCORE,
    SAME_GAP,
    apart,
    fit,
    paint_out,
    same_person,
    shared_poses,
)
from model.pipeline.predictor import Predictor
from model.transforms import HEATMAP_SIZE, frame_to_heatmap
from tests.model.pipeline.test_propagation import _Frames

# A standing figure in a unit box (PoseTrack slots: nose, head bottom, head top, ears, shoulders, elbows,
# wrists, hips, knees, ankles; left first).
TEMPLATE = np.array([
    (0.5, 0.1), (0.5, 0.18), (0.5, 0.0), (0.55, 0.08), (0.45, 0.08), (0.65, 0.22), (0.35, 0.22), (0.8, 0.38),
    (0.2, 0.38), (0.9, 0.5), (0.1, 0.5), (0.6, 0.55), (0.4, 0.55), (0.62, 0.78), (0.38, 0.78), (0.65, 1.0),
    (0.35, 1.0),
])
LIMBS = ((2, 1), (1, 5), (1, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12), (11, 12), (11, 13), (13, 15),
         (12, 14), (14, 16))
WHITE, RED = (255, 255, 255), (0, 0, 255)  # BGR
SIZE = (320, 240)


def _figure(x: float, y: float, w: float, h: float) -> np.ndarray:
    return TEMPLATE * [w, h] + [x, y]


def _pose(xy: np.ndarray) -> np.ndarray:
    return np.column_stack([xy, np.full(len(xy), 2.0)])


class _MostVisibleBackbone:
    """A backbone that answers each crop with the true pose of the figure showing the most pixels of its
    colour in the crop (score 0.9): a single-person model that picks the most salient person."""

    name, version, sigma = "most-visible", "most-visible", 2.0

    def __init__(self, figures: dict[tuple[int, int, int], np.ndarray], leg_score: float = 0.9) -> None:
        self.figures = figures
        self.scores = torch.full((NUM_KEYPOINTS,), 0.9)
        self.scores[13:] = leg_score  # knees and ankles

    def heatmaps(self, crops, geoms, frame_indices):
        xys = []
        for crop, geom in zip(crops, geoms):
            seen = {c: int((np.abs(crop.astype(int) - c).max(axis=-1) < 40).sum()) for c in self.figures}
            xys.append(frame_to_heatmap(self.figures[max(seen, key=seen.get)], geom))
        xy = torch.from_numpy(np.stack(xys)).float()
        return render_gaussians(xy, self.scores.expand(len(crops), -1), size=HEATMAP_SIZE[::-1], sigma=2.0).float()


def _scene(front_width: int = 8) -> tuple[np.ndarray, dict, list[Box]]:
    """A white figure in front of a thinner red one standing behind it, a little to the right: the red one's box
    holds most of the white one, which shows more pixels there."""
    front, small = _figure(60, 40, 120, 180), _figure(100, 30, 110, 170)
    image = np.full((SIZE[1], SIZE[0], 3), 128, np.uint8)
    for xy, colour, width in ((front, WHITE, front_width), (small, RED, 1)):
        for a, b in LIMBS:
            cv2.line(image, tuple(map(int, xy[a])), tuple(map(int, xy[b])), colour, width)
    boxes = [Box.from_xyxy(55, 35, 185, 225), Box.from_xyxy(95, 25, 215, 205)]
    return image, {WHITE: front, RED: small}, boxes


def _predict(image: np.ndarray, figures: dict, boxes: list[Box], config: InferConfig,
             labelled: np.ndarray | None = None) -> list[Person]:
    """The pipeline on the scene, its boxes given as box-only labels (the first one labelled with the
    joints `labelled` where given)."""
    video = Video("v", 1, [Frame(0, [])], width=SIZE[0], height=SIZE[1])
    people = [Person(track_id=i, box=b) for i, b in enumerate(boxes)]
    if labelled is not None:
        people[0] = Person(_pose(labelled), track_id=0, box=boxes[0])
    known = Video("v", 1, [Frame(0, people, is_labeled=True)], width=SIZE[0], height=SIZE[1])
    predictor = Predictor(_MostVisibleBackbone(figures), None, config=config, detector=lambda frame: [])
    return predictor.predict_video(video, known, reader=_Frames([image])).frames[0].persons


def test_the_box_holding_another_s_pose_gets_its_own_person() -> None:
    image, figures, boxes = _scene()
    off = _predict(image, figures, boxes, InferConfig(one_per_box=False, propagate=False))
    assert np.abs(off[1].xy - figures[WHITE]).max() < 3  # the small box alone answers with the big figure
    front, small = _predict(image, figures, boxes, InferConfig(propagate=False))
    assert np.abs(front.xy - figures[WHITE]).max() < 3
    assert np.abs(small.xy - figures[RED]).max() < 3


@pytest.mark.parametrize("frames", [1, 3])
def test_a_detected_box_holding_another_s_pose_gets_its_own_person(frames: int) -> None:
    """No labels: the detector boxes both figures (on one frame, as Label Studio asks, and on a short clip,
    where the boxes are followed and tracked); the box behind gets its own figure, not the front one's.
    The backbone is unsure of the legs, as a real one is of a person seen in part: a whole, sure pose in
    a box it misses would move the box onto it (`model.pipeline.follow.refit_box`)."""
    image, figures, boxes = _scene()
    video = Video("v", frames, [Frame(t, []) for t in range(frames)], width=SIZE[0], height=SIZE[1])

    def predict(config: InferConfig) -> list[list[Person]]:
        predictor = Predictor(_MostVisibleBackbone(figures, leg_score=0.2), None, config=config,
                              detector=lambda frame: list(boxes))
        out = predictor.predict_video(video, None, reader=_Frames([image] * frames))
        assert len(out.frames) == frames
        return [sorted(frame.persons, key=lambda p: p.box.x) for frame in out.frames]

    for front, behind in predict(InferConfig(one_per_box=False, propagate=False)):
        assert np.abs(front.xy - figures[WHITE]).max() < 3 and np.abs(behind.xy - figures[WHITE]).max() < 3
    for front, behind in predict(InferConfig(propagate=False)):
        assert front.extra["box_source"] == behind.extra["box_source"] == "detected"
        assert np.abs(front.xy - figures[WHITE]).max() < 3
        assert np.abs(behind.xy - figures[RED]).max() < 3


def test_a_box_holding_a_hand_labelled_person_gets_its_own() -> None:
    """The front figure labelled by hand on the frame, the one behind given as a box: its crop finds the
    labelled figure, is run again with it painted out, and finds its own."""
    image, figures, boxes = _scene()
    off = _predict(image, figures, boxes, InferConfig(one_per_box=False, propagate=False), figures[WHITE])
    assert np.abs(off[1].xy - figures[WHITE]).max() < 3
    front, behind = _predict(image, figures, boxes, InferConfig(propagate=False), figures[WHITE])
    assert front.extra["source"] == "human" and np.abs(front.xy - figures[WHITE]).max() < 1e-6
    assert behind.extra["source"] == "model" and np.abs(behind.xy - figures[RED]).max() < 3


def test_two_boxes_whose_labels_are_carried_there_are_not_run_again() -> None:
    """Both figures labelled by hand on frame 0 of a still clip, boxes given on frames 1 and 2: the box behind
    still finds the front figure there, but both tracks hold sure carried joints, which tell the two apart, so
    its crop is not painted and run again (on the synthetic crossing of bench-video's cost row, such runs
    were 8 of 46 passes, none taken); the figure behind gets its own joints all the same. Without propagation
    the crop is run again, as before."""
    image, figures, boxes = _scene()
    frames = [Frame(0, [Person(_pose(figures[c]), track_id=i, box=b) for i, (c, b) in enumerate(zip((WHITE, RED), boxes))],
                    is_labeled=True)]
    frames += [Frame(t, [Person(track_id=i, box=b) for i, b in enumerate(boxes)], is_labeled=True) for t in (1, 2)]
    known = Video("v", 3, frames, width=SIZE[0], height=SIZE[1])
    video = Video("v", 3, [Frame(t, []) for t in range(3)], width=SIZE[0], height=SIZE[1])
    crops = {}
    for propagate in (True, False):
        backbone = _MostVisibleBackbone(figures)
        seen = backbone.heatmaps
        counted: list[int] = []
        backbone.heatmaps = lambda c, g, f, seen=seen, counted=counted: counted.append(len(c)) or seen(c, g, f)
        predictor = Predictor(backbone, None, config=InferConfig(propagate=propagate), detector=lambda frame: [])
        out = predictor.predict_video(video, known, frames=[1, 2], reader=_Frames([image] * 3))
        crops[propagate] = sum(counted)
        for frame in out.frames:
            front, behind = sorted(frame.persons, key=lambda p: p.track_id)
            assert np.abs(front.xy - figures[WHITE]).max() < 3 and np.abs(behind.xy - figures[RED]).max() < 3
            assert behind.extra["source"] == ("model+propagated" if propagate else "model")
    assert crops[True] == 4  # two boxes on two frames, nothing run again
    assert crops[False] > 4


def test_a_person_the_paint_does_not_hide_stays_where_it_was() -> None:
    """The front figure drawn wider than the paint: the painted crop still finds it, so nothing changes."""
    image, figures, boxes = _scene(front_width=30)
    front, small = _predict(image, figures, boxes, InferConfig(propagate=False))
    assert np.abs(front.xy - figures[WHITE]).max() < 3 and np.abs(small.xy - figures[WHITE]).max() < 3


def test_one_pose_in_two_boxes_is_one_person_and_poses_apart_are_not() -> None:
    box = Box(0, 0, 100, 200)
    pose, scores = _pose(_figure(0, 0, 100, 200)), np.full(NUM_KEYPOINTS, 0.8)
    diag = float(np.hypot(100, 200))
    near = pose.copy()
    near[:, 0] += 0.5 * SAME_GAP * diag
    far = pose.copy()
    far[:, 0] += 2 * SAME_GAP * diag
    assert same_person(pose, scores, box, near, scores, box)
    assert not same_person(pose, scores, box, far, scores, box)
    unsure = scores.copy()
    unsure[MIN_SHARED - 1:] = 0.1  # too few joints sure in both to tell
    assert not same_person(pose, unsure, box, pose, scores, box)


def test_poses_are_apart_only_when_clearly_apart_and_placed() -> None:
    """Between one person (within SAME_GAP) and two (APART_GAP or farther) lies a band that is neither: a
    painted crop whose pose lies there is not taken as someone else."""
    box = Box(0, 0, 100, 200)
    pose, scores = _pose(_figure(0, 0, 100, 200)), np.full(NUM_KEYPOINTS, 0.8)
    diag = float(np.hypot(100, 200))
    for gap, one, two in ((0.5 * SAME_GAP, True, False), (0.5 * (SAME_GAP + APART_GAP), False, False),
                          (1.2 * APART_GAP, False, True)):
        moved = pose.copy()
        moved[:, 0] += gap * diag
        assert same_person(pose, scores, box, moved, scores, box) is one, gap
        assert apart(pose, scores, box, moved, scores, box) is two, gap
    faint = np.full(NUM_KEYPOINTS, PAINT_SCORE / 2)
    far = pose.copy()
    far[:, 0] += 2 * APART_GAP * diag
    assert not apart(pose, faint, box, far, scores, box)  # nothing placed in both: nothing to tell


def test_a_pose_fits_its_own_box_and_not_another() -> None:
    pose, scores = _pose(_figure(10, 10, 100, 200)), np.full(NUM_KEYPOINTS, 0.8)
    assert fit(pose, scores, Box(10, 10, 100, 200)) > 0.7
    assert fit(pose, scores, Box(300, 10, 100, 200)) == 0.0
    one = np.zeros(NUM_KEYPOINTS)
    one[0] = 0.9
    assert fit(pose, one, Box(10, 10, 100, 200)) == 0.0  # one joint boxes nothing


def test_each_pose_is_in_one_pair_at_most() -> None:
    box = Box(0, 0, 100, 200)
    a, other = _pose(_figure(0, 0, 100, 200)), _pose(_figure(150, 0, 100, 200))
    scores = np.full(NUM_KEYPOINTS, 0.8)
    assert shared_poses([a, other, a], [scores] * 3, [box] * 3) == [(0, 2)]
    assert shared_poses([a, a, a], [scores] * 3, [box] * 3) == [(0, 1)]
    assert shared_poses([a, other], [scores] * 2, [box] * 2) == []


def test_paint_out_blackens_the_limbs_of_placed_joints_only_on_a_copy() -> None:
    image = np.full((240, 320, 3), 200, np.uint8)
    pose = _pose(_figure(40, 20, 160, 200))
    scores = np.full(NUM_KEYPOINTS, 0.8)
    scores[[13, 15]] = PAINT_SCORE / 2  # the left knee and ankle unsure: that shin is not painted
    out = paint_out(image, pose, scores, width=10)
    assert (image == 200).all()
    mid = lambda a, b: tuple(int(v) for v in (pose[a, :2] + pose[b, :2]) / 2)  # noqa: E731
    for a, b in ((5, 7), (12, 14), (14, 16)):
        x, y = mid(a, b)
        assert (out[y, x] == 0).all(), (a, b)
    x, y = mid(13, 15)
    assert (out[y, x] == 200).all()
    assert (out[5, 5] == 200).all()


def test_paint_out_takes_joints_far_off_the_frame() -> None:
    """A joint placed far outside the frame (a carried point gone astray) draws nothing there, and no
    coordinate overflows cv2's drawing."""
    image = np.full((240, 320, 3), 200, np.uint8)
    pose = _pose(_figure(40, 20, 160, 200))
    pose[9, :2] = (1e15, -1e15)  # the left wrist
    out = paint_out(image, pose, np.full(NUM_KEYPOINTS, 0.8), width=10)
    x, y = (int(v) for v in pose[5, :2])
    assert (out[y, x] == 0).all() and (out[235, 5] == 200).all()


OVERLAP = Path(__file__).resolve().parents[2] / "assets" / "real-stills-overlap"


def test_a_real_small_skier_behind_another_gets_their_own_joints() -> None:
    """COCO 197388, the annotated boxes given: MoveNet run on the small skier's box alone answers with the
    front skier whose head and shoulders it holds; the pipeline paints him out and finds the small one."""
    from model.backbones.movenet_weights import DEFAULT_WEIGHTS
    from model.bench.real import _Still, box_only, load_stills

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"{DEFAULT_WEIGHTS} not fetched (make movenet)")
    (gt, image), = load_stills(OVERLAP)
    small = gt.frames[0].persons[1]
    labelled = small.keypoints[5:17, 2] > 0
    video = Video(gt.name, 1, [Frame(0, [])], width=image.shape[1], height=image.shape[0])
    right = {}
    for on in (False, True):
        predictor = Predictor.create("movenet", None, config=InferConfig(one_per_box=on))
        try:
            out = predictor.predict_video(video, box_only(gt), reader=_Still(image)).frames[0].persons
        finally:
            predictor.close()
        d = np.linalg.norm(out[1].xy[5:17] - small.keypoints[5:17, :2], axis=1)
        right[on] = int((d[labelled] <= 0.1 * np.hypot(small.box.w, small.box.h)).sum())
    assert right[False] <= 3 and right[True] >= 7, right
