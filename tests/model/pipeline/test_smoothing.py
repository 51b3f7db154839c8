"""Tests of model.pipeline.smoothing (the temporal median of model-placed joints) and its place in the predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from annotation_io.posetrack import load
from annotation_io.synth import generate
from annotation_io.types import Box, Person, Video
from annotation_io.video import open_video
from model.bench.real import box_only
from model.pipeline.config import InferConfig
from model.pipeline.predictor import Predictor
from model.pipeline.smoothing import temporal_median
from model.testing.simulated import SimulatedBackbone

WRIST = 9  # PoseTrack slot of the left wrist


def _walk(frames: int = 6, track: int = 0, step: float = 4.0, source: str = "model") -> dict[int, list[Person]]:
    """A person moving right by `step` px a frame; every joint placed, spread over a 40x80 px body."""
    out = {}
    for t in range(frames):
        kps = np.zeros((17, 3))
        kps[:, 0] = 100.0 + step * t + np.arange(17) * 2.0
        kps[:, 1] = 50.0 + np.arange(17) * 4.0
        kps[:, 2] = 2.0
        out[t] = [Person(kps, np.full(17, 0.8), track, Box(100.0 + step * t, 50.0, 40.0, 80.0),
                         extra={"source": source})]
    return out


def _xy(persons: dict[int, list[Person]]) -> np.ndarray:
    return np.stack([people[0].keypoints[:, :2] for _, people in sorted(persons.items())])


def test_steady_motion_is_kept_exactly() -> None:
    walk = _walk()
    before = _xy(walk)
    assert np.array_equal(_xy(temporal_median(walk)), before)


def test_a_joint_that_slips_for_one_frame_is_brought_back() -> None:
    walk = _walk()
    truth = _xy(walk)
    walk[3][0].keypoints[WRIST, :2] += (60.0, -35.0)  # drawn to something else on frame 3 alone
    out = _xy(temporal_median(walk))
    assert np.abs(out[3, WRIST] - truth[3, WRIST]).max() <= 4.0  # at most one frame's step off
    assert np.abs(out[:, WRIST] - truth[:, WRIST]).max() <= 4.0  # and so are its neighbours
    others = np.arange(17) != WRIST
    assert np.array_equal(out[:, others], truth[:, others])


def test_human_and_carried_joints_stay_and_serve_as_neighbours() -> None:
    walk = _walk()
    walk[2][0].extra["source"] = "human"
    walk[2][0].keypoints[WRIST, :2] = (300.0, 300.0)
    walk[3][0].extra.update(source="model+propagated", propagated=[WRIST])
    walk[3][0].keypoints[WRIST, :2] = (290.0, 290.0)
    walk[3][0].keypoints[WRIST + 1, :2] += 70.0  # a joint the model placed beside the carried one: it slipped
    walk[4][0].keypoints[WRIST, :2] = (280.0, 280.0)  # the model follows the carried label: kept
    walk[5][0].extra["source"] = "model+human"  # a partial human pose: nothing of it moves
    kept = {t: walk[t][0].keypoints.copy() for t in range(6)}
    out = temporal_median(walk)
    assert np.array_equal(out[2][0].keypoints, kept[2])
    assert np.array_equal(out[3][0].keypoints[WRIST], kept[3][WRIST])
    assert abs(out[3][0].keypoints[WRIST + 1, 0] - (kept[3][WRIST + 1, 0] - 70.0)) <= 4.0  # one step off at most
    assert out[4][0].keypoints[WRIST, 0] == 280.0
    assert np.array_equal(out[5][0].keypoints, kept[5])


def test_ends_gaps_other_tracks_and_unplaced_joints_are_left_alone() -> None:
    walk = _walk(frames=5)
    other = _walk(frames=5, track=1, step=-4.0)
    persons = {t: walk[t] + other[t] for t in walk}
    persons[0][0].keypoints[WRIST, :2] += 50.0  # the track's first frame: no frame before
    del persons[2][0]  # track 0 absent on frame 2: frames 1 and 3 have one neighbour each
    persons[3][0].keypoints[WRIST, :2] += 50.0
    persons[3][1].keypoints[WRIST] = 0.0  # left out (v = 0) on frame 3 of track 1
    persons[4][1].keypoints[WRIST, :2] += 50.0  # the last frame
    kept = {(t, p.track_id): p.keypoints.copy() for t, people in persons.items() for p in people}
    out = temporal_median(persons)
    for t, people in out.items():  # nothing had a placed joint on both sides that moved
        for p in people:
            assert np.array_equal(p.keypoints, kept[t, p.track_id]), (t, p.track_id)
    persons[2].insert(0, walk[2][0])  # track 0 back on frame 2: its frame 3 slip is taken out
    assert np.abs(temporal_median(persons)[3][0].keypoints[WRIST, :2] - kept[3, 0][WRIST, :2]).max() >= 46.0


@pytest.fixture(scope="module")
def walkers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Video, Path]:
    root = tmp_path_factory.mktemp("walkers")
    (path,) = generate(root, videos=1, frames=16, people=2, seed=3, size=(256, 192))
    return load(path), root / "images" / "000001"


def _misses(gt: Video, out: Video) -> tuple[int, int]:
    """Placed joints farther than 0.1 x their person's box diagonal from the truth, and placed joints."""
    misses = placed = 0
    for frame in out.frames:
        for p in frame.persons:
            truth = gt.frame(frame.index).person_by_track(p.track_id)
            both = (p.keypoints[:, 2] > 0) & (truth.keypoints[:, 2] > 0)
            d = np.linalg.norm(p.keypoints[both, :2] - truth.keypoints[both, :2], axis=1)
            misses += int((d > 0.1 * np.hypot(truth.box.w, truth.box.h)).sum())
            placed += int(both.sum())
    return misses, placed


def test_the_predictor_takes_out_a_backbone_s_one_frame_slips(walkers) -> None:
    """The simulated backbone errs per frame (jitter, left/right swaps on single frames) on a rendered walk
    whose boxes are given: with the median, fewer joints are off, and the tracks' first and last frames
    are as without it."""
    gt, images = walkers
    known = box_only(gt)
    outs = {}
    with open_video(images) as reader:
        for on in (False, True):
            predictor = Predictor(SimulatedBackbone(gt), None, config=InferConfig(temporal_median=on))
            outs[on] = predictor.predict_video(gt, known, reader=reader)
    (plain, placed), (smoothed, same_placed) = _misses(gt, outs[False]), _misses(gt, outs[True])
    assert same_placed == placed > 300
    assert smoothed < 0.75 * plain
    for t in (0, gt.num_frames - 1):
        for a, b in zip(outs[False].frame(t).persons, outs[True].frame(t).persons, strict=True):
            assert np.array_equal(a.keypoints, b.keypoints)
    moved = sum(not np.array_equal(a.keypoints, b.keypoints)
                for fa, fb in zip(outs[False].frames, outs[True].frames, strict=True)
                for a, b in zip(fa.persons, fb.persons, strict=True))  # fmt: skip
    assert moved > 0
