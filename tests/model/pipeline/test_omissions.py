"""Tests of model.pipeline.omissions: joints the annotator left out stay out around their labels."""

from __future__ import annotations

import numpy as np
import torch

from annotation_io.skeletons import NUM_KEYPOINTS
from annotation_io.types import Box, Frame, Person, Video
from model.heatmaps import render_gaussians
from model.pipeline.config import InferConfig
from model.pipeline.omissions import EDGE_MARGIN, ONE_SIDE_REACH, left_out, off_frame
from model.pipeline.predictor import Predictor
from model.pipeline.video_job import _drop_joints
from model.transforms import HEATMAP_SIZE
from tests.model.pipeline.test_propagation import SIZE, _FlatBackbone, _Frames, _person, video  # noqa: F401

WRIST, ANKLE = 9, 15  # left wrist, left ankle (PoseTrack slots)


def _pose(shift: tuple[float, float] = (0.0, 0.0), without: tuple[int, ...] = ()) -> np.ndarray:
    kps = np.zeros((NUM_KEYPOINTS, 3))
    kps[:, 0] = 100 + 5 * np.arange(NUM_KEYPOINTS) + shift[0]
    kps[:, 1] = 80 + 3 * np.arange(NUM_KEYPOINTS) + shift[1]
    kps[:, 2] = 2.0
    kps[list(without), :] = 0.0
    return kps


def test_a_joint_both_labels_leave_out_is_left_out_and_one_either_places_is_kept() -> None:
    predicted = _pose((4.0, 1.0))
    before, after = _pose(without=(WRIST, ANKLE)), _pose((8.0, 2.0), without=(WRIST,))
    assert np.flatnonzero(left_out(predicted, [before, after], (320, 240))).tolist() == [WRIST]
    # With a label on one side only, that label decides.
    assert np.flatnonzero(left_out(predicted, [before], (320, 240))).tolist() == [WRIST, ANKLE]
    # A joint the prediction does not place is not "left out" by it.
    unplaced = predicted.copy()
    unplaced[WRIST] = 0.0
    assert not left_out(unplaced, [before, after], (320, 240)).any()


def test_a_joint_beyond_the_label_frame_s_edge_is_kept() -> None:
    # The person moved 90 px left since the label: the left-out joints were then near or past the
    # right edge (the annotator could not see them); the others were inside.
    predicted = _pose((0.0, 0.0))
    label = _pose((90.0, 0.0), without=(13, 14, WRIST))
    width = 256
    there = predicted[:, 0] + 90.0  # where each joint stood on the label's frame
    assert there[13] > width - EDGE_MARGIN * width and there[14] > width and there[WRIST] < width - EDGE_MARGIN * width
    assert np.flatnonzero(left_out(predicted, [label], (width, 240))).tolist() == [WRIST]


def test_labels_that_say_nothing_leave_everything_in() -> None:
    predicted = _pose()
    few = np.zeros((NUM_KEYPOINTS, 3))
    few[[0, 1], :2], few[[0, 1], 2] = predicted[[0, 1], :2], 2.0  # two joints: not a pose
    assert not left_out(predicted, [few], (320, 240)).any()
    assert not left_out(predicted, [], (320, 240)).any()
    # No joint shared with the prediction: where the person stood on the label cannot be told.
    other = _pose(without=tuple(range(8)))
    assert not left_out(np.where(np.arange(NUM_KEYPOINTS)[:, None] < 8, predicted, 0.0), [other], (320, 240)).any()


def test_the_predictor_leaves_out_what_the_labels_around_leave_out(video) -> None:  # noqa: F811
    frames, gt = video
    labels = {t: _person(gt, t) for t in (0, 8, 16)}
    for t, person in labels.items():  # the wrist is hidden on every label; the ankle only on frame 8's
        person.keypoints[WRIST] = 0.0
        if t == 8:
            person.keypoints[ANKLE] = 0.0
    known = Video("v", len(frames), [Frame(t, [p], is_labeled=True) for t, p in labels.items()],
                  width=SIZE[0], height=SIZE[1])
    template = Video("v", len(frames), width=SIZE[0], height=SIZE[1])
    for propagate in (True, False):
        config = InferConfig(propagate=propagate)
        out = Predictor(_FlatBackbone(), None, config=config, detector=lambda frame: []).predict_video(
            template, known, frames=[4, 12], reader=_Frames(frames))
        for t in (4, 12):
            (person,) = out.frame(t).persons
            assert person.extra["left_out"] == [WRIST] and person.keypoints[WRIST].tolist() == [0.0, 0.0, 0.0]
            assert person.scores[WRIST] == 0.0 and person.present.sum() == NUM_KEYPOINTS - 1
    # Past the last label only its next frames leave the wrist out: a joint hidden there may come out.
    last = Video("v", len(frames), [f for f in known.frames if f.index < 16], width=SIZE[0], height=SIZE[1])
    out = Predictor(_FlatBackbone(), None, detector=lambda frame: []).predict_video(
        template, last, frames=list(range(9, 9 + ONE_SIDE_REACH + 2)), reader=_Frames(frames))
    for t in range(9, 9 + ONE_SIDE_REACH + 2):
        (person,) = out.frame(t).persons
        assert (person.extra.get("left_out") == [WRIST, ANKLE]) == (t - 8 <= ONE_SIDE_REACH), t
    # Off, every joint is predicted again.
    off = Predictor(_FlatBackbone(), None, config=InferConfig(follow_omissions=False), detector=lambda frame: [])
    (person,) = off.predict_video(template, known, frames=[4], reader=_Frames(frames)).frame(4).persons
    assert person.present.all() and "left_out" not in person.extra


def test_a_box_only_or_unlabelled_frame_leaves_nothing_out(video) -> None:  # noqa: F811
    frames, gt = video
    box_only = Person(track_id=0, box=_person(gt, 0).box)
    partial = _person(gt, 8)
    partial.keypoints[WRIST] = 0.0  # a correction on a frame not marked labelled: not a complete label
    known = Video("v", len(frames), [Frame(0, [box_only], is_labeled=True), Frame(8, [partial], is_labeled=False)],
                  width=SIZE[0], height=SIZE[1])
    out = Predictor(_FlatBackbone(), None, detector=lambda frame: []).predict_video(
        Video("v", len(frames), width=SIZE[0], height=SIZE[1]), known, frames=[4], reader=_Frames(frames))
    (person,) = out.frame(4).persons
    assert person.present.all() and "left_out" not in person.extra


def test_a_joint_a_correction_places_nearer_by_is_kept(video) -> None:  # noqa: F811
    frames, gt = video
    labels = {t: _person(gt, t) for t in (0, 8)}
    for person in labels.values():
        person.keypoints[WRIST] = 0.0
    correction = _person(gt, 5)  # on a frame not marked labelled, the annotator placed only the wrist
    correction.keypoints[np.arange(NUM_KEYPOINTS) != WRIST] = 0.0
    frames_known = [Frame(0, [labels[0]], is_labeled=True), Frame(5, [correction], is_labeled=False),
                    Frame(8, [labels[8]], is_labeled=True)]
    known = Video("v", len(frames), frames_known, width=SIZE[0], height=SIZE[1])
    out = Predictor(_FlatBackbone(), None, detector=lambda frame: []).predict_video(
        Video("v", len(frames), width=SIZE[0], height=SIZE[1]), known, frames=[2, 4], reader=_Frames(frames))
    for t in (2, 4):
        (person,) = out.frame(t).persons
        assert WRIST in person.extra["propagated"] and "left_out" not in person.extra, t
        assert np.linalg.norm(person.xy[WRIST] - gt[t][WRIST]) < 2.0



def test_joints_beyond_the_frame_s_edge_by_more_than_the_margin_are_off_frame() -> None:
    w, h = 320, 240
    margin = EDGE_MARGIN * w
    kps = _pose()
    kps[0, :2] = (-margin - 1.0, 100.0)  # left of the frame
    kps[1, :2] = (100.0, h - 1 + margin + 1.0)  # below it
    kps[2, :2] = (w - 1 + margin - 1.0, 100.0)  # just past the right edge: a joint at the edge
    kps[3, :2] = (-margin - 50.0, 100.0)
    kps[3, 2] = 0.0  # not placed
    assert np.flatnonzero(off_frame(kps, (w, h))).tolist() == [0, 1]


class _TallBackbone:
    """A backbone that places the joints down the middle of the crop, from its top to its bottom (score 0.9)."""

    name, version, sigma = "tall", "tall", 2.0

    def heatmaps(self, crops, geoms, frame_indices):
        w, h = HEATMAP_SIZE
        xy = torch.stack([torch.full((NUM_KEYPOINTS,), w / 2.0), torch.linspace(2.0, h - 3.0, NUM_KEYPOINTS)], dim=1)
        return render_gaussians(xy[None].repeat(len(crops), 1, 1), torch.full((len(crops), NUM_KEYPOINTS), 0.9),
                                size=HEATMAP_SIZE[::-1], sigma=2.0).float()


def test_the_predictor_leaves_out_joints_beyond_the_frame_and_keeps_human_ones(video) -> None:  # noqa: F811
    frames, _ = video
    w, h = SIZE
    cut = Box(100.0, h - 90.0, 60.0, 140.0)  # a person cut off by the bottom edge: their box reaches below it
    whole = Box(100.0, 40.0, 60.0, 140.0)
    template = Video("v", len(frames), width=w, height=h)
    for box, cut_off in ((cut, True), (whole, False)):
        known = Video("v", len(frames), [Frame(3, [Person(track_id=0, box=box)], is_labeled=True)], width=w, height=h)
        out = Predictor(_TallBackbone(), None, detector=lambda frame: []).predict_video(
            template, known, frames=[3], reader=_Frames(frames))
        (person,) = out.frame(3).persons
        below = person.extra.get("off_frame", [])
        assert bool(below) == cut_off
        assert person.present.sum() == NUM_KEYPOINTS - len(below)
        kept = person.keypoints[person.present]
        assert (kept[:, 1] <= h - 1 + EDGE_MARGIN * w).all()
        if cut_off:  # the lowest joints went, the scores with them
            assert below == list(range(NUM_KEYPOINTS - len(below), NUM_KEYPOINTS)) and len(below) >= 3
            assert (person.scores[below] == 0.0).all()
    # A joint a human placed there stays, even beyond the edge.
    partial = Person(np.zeros((NUM_KEYPOINTS, 3)), track_id=0, box=cut)
    partial.keypoints[ANKLE] = (130.0, h + 30.0, 2.0)
    known = Video("v", len(frames), [Frame(3, [partial], is_labeled=False)], width=w, height=h)
    out = Predictor(_TallBackbone(), None, detector=lambda frame: []).predict_video(
        template, known, frames=[3], reader=_Frames(frames))
    (person,) = out.frame(3).persons
    assert ANKLE not in person.extra["off_frame"] and person.keypoints[ANKLE].tolist() == [130.0, h + 30.0, 2.0]


def test_dropped_carried_joints_are_no_longer_listed_as_carried() -> None:
    person = Person(_pose(), np.full(NUM_KEYPOINTS, 0.8), 0,
                    extra={"source": "model+propagated+human", "propagated": [WRIST, ANKLE]})
    drop = np.zeros(NUM_KEYPOINTS, bool)
    drop[[WRIST, 0]] = True
    _drop_joints(person, drop, None, "off_frame")
    assert person.extra["off_frame"] == [0, WRIST] and person.extra["propagated"] == [ANKLE]
    assert person.keypoints[WRIST].tolist() == [0.0, 0.0, 0.0] and person.scores[0] == 0.0
    drop[:] = False
    drop[ANKLE] = True
    _drop_joints(person, drop, None, "off_frame")  # the last carried joint goes: so does the claim
    assert "propagated" not in person.extra and person.extra["source"] == "model+human"
