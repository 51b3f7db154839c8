"""Shot cuts (`model.pipeline.shots`) on real photographs filmed as camera shots, and the predictor that
predicts each shot on its own."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from annotation_io.types import Box, Frame, Video
from model.bench.cuts import two_shot_clip
from model.bench.real import load_stills
from model.bench.real_clips import ClipReader
from model.pipeline.config import InferConfig
from model.pipeline.predictor import Predictor
from model.pipeline.shots import ShotFrames, find_cuts, shots
from model.testing.simulated import SimulatedBackbone

STILLS = Path(__file__).resolve().parents[2] / "assets" / "real-stills"
SHOT = 12  # frames per shot


@pytest.fixture(scope="module")
def two_shots() -> tuple[Video, ClipReader]:
    """A skier's photograph filmed for 12 frames, then a cut to two men's photograph filmed for 12 more (the
    camera pans, zooms and rolls; JPEG frames). Both shots number their people from track id 0, as an
    annotator who starts each shot afresh would."""
    stills = {gt.name: (gt, image) for gt, image in load_stills(STILLS)}
    return two_shot_clip(stills["coco_000000000785"], stills["crowdpose_103319"], SHOT)


def test_the_cut_between_two_real_shots_is_found_and_nothing_within_them(two_shots) -> None:
    _, reader = two_shots
    assert find_cuts(reader.read, range(2 * SHOT)) == [SHOT]
    assert find_cuts(reader.read, range(SHOT)) == []
    assert find_cuts(reader.read, range(SHOT, 2 * SHOT)) == []
    assert find_cuts(reader.read, range(SHOT - 1, SHOT + 1)) == [SHOT]  # two frames: the cut between them
    assert find_cuts(reader.read, range(3, 5)) == []


def test_grey_footage_is_cut_too(two_shots) -> None:
    """Grey frames have no hue: the grey-level histogram tells the shots apart."""
    _, reader = two_shots
    grey = [cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) for f in reader.frames]
    assert find_cuts(lambda t: grey[t], range(2 * SHOT)) == [SHOT]
    assert find_cuts(lambda t: cv2.cvtColor(grey[t], cv2.COLOR_BGR2GRAY), range(2 * SHOT)) == [SHOT]  # (H, W)


def test_a_flash_a_white_frame_and_a_fade_to_dark_are_not_cuts(two_shots) -> None:
    _, reader = two_shots
    frames = list(reader.frames[:SHOT])
    frames[3] = cv2.convertScaleAbs(frames[3], alpha=1.8, beta=40)  # a camera flash
    frames[5] = np.full_like(frames[5], 255)  # a white-out frame between two frames of the shot
    assert find_cuts(lambda t: frames[t], range(SHOT)) == []
    fade = [(f * (1.0 - 0.07 * t)).astype(np.uint8) for t, f in enumerate(reader.frames[:SHOT])]  # to 23%
    assert find_cuts(lambda t: fade[t], range(SHOT)) == []
    black = [np.zeros_like(reader.frames[0])] * 3
    assert find_cuts(lambda t: black[t], range(3)) == []


def test_find_cuts_reads_consecutive_frames_once_each(two_shots) -> None:
    _, reader = two_shots
    reads: list[int] = []
    find_cuts(lambda t: reads.append(t) or reader.read(t), range(2, 12))
    assert reads == list(range(2, 12))
    with pytest.raises(ValueError, match="consecutive"):
        find_cuts(reader.read, [0, 2, 3])


def test_shots_split_a_range_at_its_cuts() -> None:
    assert shots([5, 9], 0, 12) == [range(0, 5), range(5, 9), range(9, 12)]
    assert shots([], 3, 7) == [range(3, 7)]
    assert shots([0, 3, 3, 12], 0, 12) == [range(0, 3), range(3, 12)]  # cuts at the ends or twice: ignored


def test_shot_frames_are_the_shot_s_own(two_shots) -> None:
    _, reader = two_shots
    shot = ShotFrames(reader, range(SHOT, 2 * SHOT))
    assert shot.num_frames == SHOT and (shot.width, shot.height) == (reader.width, reader.height)
    assert shot.read(0) is reader.read(SHOT)
    for index in (-1, SHOT):
        with pytest.raises(IndexError, match="outside this shot"):
            shot.read(index)


class _Counting(ClipReader):
    """A ClipReader that lists the frames read."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        super().__init__(frames)
        self.reads: list[int] = []

    def read(self, index: int) -> np.ndarray:
        self.reads.append(index)
        return super().read(index)


def _lost(gt: Video, out: Video) -> list[tuple[int, int]]:
    """(frame, track) of the predicted people lying on nobody of that frame's truth (box IoU under 0.5)."""
    return [(f.index, p.track_id) for f in out.frames for p in f.persons
            if all(p.box.iou(q.box) < 0.5 for q in gt.frame(f.index).persons)]  # fmt: skip


def test_labels_and_tracks_are_not_carried_across_a_cut(two_shots) -> None:
    """Labels on frame 2 (the skier, track 0) and frame 13 (two men, tracks 0 and 1): without the cut,
    track 0's box is interpolated from the skier to a man across frames 3-12, and the men are carried back
    onto the skier's shot. With it, every predicted person lies on a person of their own shot."""
    gt, reader = two_shots
    known = replace(gt, frames=[gt.frames[2], gt.frames[13]])
    outs = {}
    for cuts in (False, True):
        predictor = Predictor(SimulatedBackbone(gt), None, config=InferConfig(detect=False, shot_cuts=cuts))
        outs[cuts] = predictor.predict_video(gt, known, reader=reader)
    assert len(_lost(gt, outs[False])) >= 5
    assert _lost(gt, outs[True]) == []
    for f in outs[True].frames:
        assert sorted(p.track_id for p in f.persons) == ([0] if f.index < SHOT else [0, 1])


def test_people_found_in_two_shots_never_share_an_id(two_shots) -> None:
    """No labels: the detector's people of one shot get ids the other shot's do not continue."""
    gt, reader = two_shots
    by_image = {reader.read(f.index).tobytes(): f for f in gt.frames}

    def detector(image: np.ndarray) -> list[Box]:
        return [p.box for p in by_image[image.tobytes()].persons]

    template = replace(gt, frames=[Frame(f.index, []) for f in gt.frames])
    predictor = Predictor(SimulatedBackbone(gt), None, config=InferConfig(denoise=False), detector=detector)
    out = predictor.predict_video(template, None, reader=reader)
    ids = [{p.track_id for f in out.frames if f.index in shot for p in f.persons} for shot in shots([SHOT], 0, 2 * SHOT)]
    assert len(ids[0]) == 1 and len(ids[1]) == 2 and not ids[0] & ids[1]
    assert _lost(gt, out) == []


def test_a_frame_asked_alone_after_a_cut_gets_nothing_carried_from_before_it(two_shots) -> None:
    """As Label Studio asks for one task: frame 14, with the skier labelled on frame 2 before the cut. The
    cut is looked for on frames 2-14 only (the label's reach), and the skier is not carried past it."""
    gt, reader = two_shots
    known = replace(gt, frames=[gt.frames[2]])
    counting = _Counting(reader.frames)
    for cuts, people in ((False, 1), (True, 0)):
        counting.reads.clear()
        predictor = Predictor(SimulatedBackbone(gt), None, config=InferConfig(detect=False, shot_cuts=cuts))
        assert len(predictor.predict_frame(gt, 14, known, reader=counting).persons) == people
        assert set(counting.reads) <= set(range(2, 15))


def test_training_neighbours_across_a_cut_stand_in_by_the_frame_itself(two_shots) -> None:
    """The head trains as the predictor runs it: a labelled frame right after the cut (or right before it)
    gets itself as that neighbour, margin 1 and no neighbour label; frames within a shot keep theirs."""
    from model.training.samples import build_samples, within_shots

    gt, reader = two_shots
    samples = build_samples({gt.name: replace(gt, frames=[gt.frames[t] for t in (5, 6, SHOT - 1, SHOT)])})
    counting = _Counting(reader.frames)
    out = {(s.frame, s.track_id): s for s in within_shots(samples, {gt.name: counting})}
    before, after = out[(SHOT - 1, 0)], out[(SHOT, 0)]
    assert (before.prev, before.next, before.margin, before.next_keypoints) == (SHOT - 2, SHOT - 1, (1.0, 1.0), None)
    assert (after.prev, after.next, after.margin, after.prev_keypoints) == (SHOT, SHOT + 1, (1.0, 1.0), None)
    assert (out[(6, 0)].prev, out[(6, 0)].next) == (5, 7) and out[(6, 0)].prev_keypoints is not None
    assert sorted(counting.reads) == sorted(set(counting.reads))  # each frame read once
