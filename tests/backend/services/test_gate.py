"""Tests of backend.services.gate: head boxes, held-out frames, scoring with the real evaluator, the decision, applying it."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session

from annotation_io.skeletons import KEYPOINT_INDEX
from annotation_io.types import Box, Frame, Person, Video
from backend.db import versions
from backend.services.gate import (
    GateDecision,
    GateError,
    HoldoutFrames,
    VersionScore,
    apply_decision,
    decide,
    evaluate_candidate,
    score_version,
    with_head_boxes,
)
from tests.backend.conftest import SynthVideo

HEAD_TOP, HEAD_BOTTOM, NOSE = KEYPOINT_INDEX["head_top"], KEYPOINT_INDEX["head_bottom"], KEYPOINT_INDEX["nose"]


def score(version: str, value: float) -> VersionScore:
    return VersionScore(version, value, 50.0, frames=3, persons=4)


# ----------------------------------------------------------------------------- decision


def test_decide_promotes_only_when_the_candidate_gains_the_margin() -> None:
    assert decide(score("new", 61.0), score("old", 60.0), margin=1.0).promote
    kept = decide(score("new", 60.9), score("old", 60.0), margin=1.0)
    assert not kept.promote and kept.delta == pytest.approx(0.9) and "< required 1.00" in kept.reason
    assert not decide(score("new", 59.0), score("old", 60.0), margin=0.0).promote
    assert not decide(score("new", math.nan), score("old", 10.0), margin=0.0).promote
    assert decide(score("new", 5.0), score("old", math.nan), margin=0.0).promote
    as_json = decide(score("new", 70.0), score("old", 60.0), margin=2.0).to_json()
    assert as_json["promote"] and as_json["delta_map"] == pytest.approx(10.0) and as_json["margin"] == 2.0
    for bad in (-0.5, math.inf, math.nan):
        with pytest.raises(ValueError, match="margin"):
            decide(score("new", 1.0), score("old", 0.0), margin=bad)


# ----------------------------------------------------------------------------- data


def person(xy: dict[int, tuple[float, float]], box: Box | None = None, track: int | None = None) -> Person:
    p = Person(box=box, track_id=track)
    for j, (x, y) in xy.items():
        p.keypoints[j] = (x, y, 2)
    return p


def test_head_boxes_come_from_the_head_joints_else_a_share_of_the_height() -> None:
    with_head = person({HEAD_TOP: (50, 10), HEAD_BOTTOM: (50, 30), 11: (50, 80)})
    boxed = person({NOSE: (20, 15), 15: (20, 95)}, box=Box(10, 5, 20, 96))
    bare = person({9: (5, 50), 15: (5, 90)})
    nothing = Person(box=Box(0, 0, 10, 10))
    kept = Person(keypoints=with_head.keypoints.copy(), head_box=Box(1, 2, 3, 4))
    video = with_head_boxes(Video("v", 2, [Frame(0, [with_head, boxed, bare, nothing, kept], is_labeled=True)]))
    got = video.frames[0].persons
    assert len(got) == 4, "a person without joints cannot be scored and is dropped"
    assert got[0].head_box == Box(40, 10, 20, 20)  # centred between crown and chin, side = their distance
    side = 96 / 8
    assert got[1].head_box == Box(20 - side / 2, 15 - side / 2, side, side)  # on the nose, 1/8 of the box
    assert got[2].head_box.w == pytest.approx(40 / 8)  # the joints' extent when there is no box
    assert got[3].head_box == Box(1, 2, 3, 4)  # an annotated head box is kept
    assert with_head.head_box is None, "the input is not modified"


def labelled_video(n: int = 4) -> Video:
    frames = []
    for t in range(n):
        p = person({j: (40 + 3 * j + t, 20 + 6 * j) for j in (0, 1, 2, 5, 6, 7, 8, 11, 12, 15, 16)},
                   box=Box(30 + t, 10, 60, 120), track=7)  # fmt: skip
        frames.append(Frame(t, [p], is_labeled=True))
    return Video("vid", n, frames, width=200, height=160)


def test_holdout_frames_withhold_the_keypoints_and_check_their_inputs() -> None:
    video = labelled_video()
    held = HoldoutFrames.build({"vid": video}, {"vid": [2, 1, 2]}, {"vid": object()})
    assert held.frames == 2 and held.persons == 2
    assert [f.index for f in held.gt["vid"].frames] == [1, 2]
    assert all(p.head_box is not None for f in held.gt["vid"].frames for p in f.persons)
    known = held.known["vid"].frames[0].persons[0]
    assert not known.present.any() and known.box == video.frames[1].persons[0].box and known.track_id == 7
    with pytest.raises(GateError, match="no frame reader"):
        HoldoutFrames.build({"vid": video}, {"vid": [1]}, {})
    with pytest.raises(GateError, match=r"frames \[9\].*carry no labels"):
        HoldoutFrames.build({"vid": video}, {"vid": [9]}, {"vid": object()})
    with pytest.raises(GateError, match="not among the labelled videos"):
        HoldoutFrames.build({"vid": video}, {"other": [1]}, {"other": object()})


class ShiftingPredictor:
    """Predicts the ground truth moved by `shift` pixels; checks it got boxes without keypoints."""

    def __init__(self, gt: Video, shift: float) -> None:
        self.gt, self.shift = gt, shift
        self.calls: list[list[int]] = []

    def predict_video(self, video: Video, known: Video, *, frames: list[int], reader: Any) -> Video:
        assert all(not p.present.any() and p.box is not None for f in known.frames for p in f.persons)
        self.calls.append(list(frames))
        out = []
        for t in frames:
            persons = []
            for p in self.gt.frame(t).persons:
                q = p.copy()
                q.keypoints[q.present, 0] += self.shift
                q.scores = np.where(q.present, 0.9, 0.0)
                q.head_box = None
                persons.append(q)
            out.append(Frame(t, persons))
        return Video(video.name, video.num_frames, out)


def test_scores_are_poseval_map_and_pckh_share_of_what_the_predictor_returns() -> None:
    video = labelled_video()
    held = HoldoutFrames.build({"vid": video}, {"vid": [0, 3]}, {"vid": object()})
    exact = ShiftingPredictor(video, 0.0)
    perfect = score_version(lambda name: exact, held, version="exact")
    assert exact.calls == [[0, 3]]
    assert perfect.map == pytest.approx(100.0) and perfect.within_pckh == pytest.approx(100.0)
    assert (perfect.frames, perfect.persons) == (2, 2)
    # Head size here: 0.6 x diagonal of the derived head box (side = crown-chin distance 6 px) = 5.1 px;
    # a shift beyond half of it misses every joint.
    far = score_version(lambda name: ShiftingPredictor(video, 4.0), held, version="far")
    assert far.map == pytest.approx(0.0)
    assert math.isnan(far.within_pckh), "no prediction matches a person: no share to speak of"
    assert far.to_json()["map"] == 0.0 and far.to_json()["within_pckh"] is None and far.to_json()["version"] == "far"
    near = score_version(lambda name: ShiftingPredictor(video, 1.0), held, version="near")
    assert near.map == pytest.approx(100.0)
    empty = HoldoutFrames.build({"vid": replace(video, frames=[Frame(0, [], is_labeled=True)])}, {"vid": [0]},
                                {"vid": object()})  # fmt: skip
    with pytest.raises(GateError, match="no held-out person"):
        score_version(lambda name: exact, empty, version="x")


# ----------------------------------------------------------------------------- with the real predictor


def test_a_random_head_is_rejected_against_the_backbone_alone(synth_video: SynthVideo) -> None:
    import torch

    from annotation_io.video import open_video
    from model.nets.dcpose import build_dcpose
    from model.testing.simulated import SimulatedBackbone

    torch.manual_seed(0)
    backbone = SimulatedBackbone(synth_video.gt, seed=0)
    labels = {synth_video.name: synth_video.gt}
    reader = open_video(synth_video.paths[0].parent)
    held = HoldoutFrames.build(labels, {synth_video.name: [2, 3]}, {synth_video.name: reader})
    damaged = build_dcpose(backbone=None).eval()  # the released initialisation: near-zero output
    decision = evaluate_candidate(backbone, damaged, None, held, candidate="p1-v9", serving="base", margin=0.5)
    print(f"\nrandom head mAP {decision.candidate.map:.1f} vs backbone-only {decision.serving.map:.1f}")
    assert not decision.promote
    assert decision.serving.map > 30.0, "the simulated backbone alone places many joints"
    assert decision.candidate.map < decision.serving.map - 20.0
    assert decision.candidate.persons == decision.serving.persons == held.persons


# ----------------------------------------------------------------------------- applying the decision


def verdict(promote: bool, serving: str) -> GateDecision:
    return GateDecision(promote, score("p1-v1", 70.0 if promote else 40.0), score(serving, 50.0), 1.0, "test")


def add_candidate(session: Session, name: str = "p1-v1") -> None:
    versions.create_model_version(session=session, name=name, backbone="simulated:0:abc", project_id=1,
                                  head_path=f"/models/{name}/head.pt", metrics={"train": {"steps": 3}})  # fmt: skip


def test_a_promotion_registers_the_previous_model_as_v0_and_serves_the_candidate(db_session: Session) -> None:
    add_candidate(db_session)
    out = apply_decision(db_session, verdict(True, "simulated-base"), candidate="p1-v1", project_id=1,
                         backbone_version="simulated:0:abc")  # fmt: skip
    assert out == "promoted"
    assert versions.serving_version(session=db_session, project_id=1).name == "p1-v1"
    base = versions.get_model_version(session=db_session, name="p1-v0")
    assert (base.state, base.head_path, base.parent, base.project_id) == ("retired", None,
                                                                          "simulated-base", 1)
    row = versions.get_model_version(session=db_session, name="p1-v1")
    assert row.metrics["train"] == {"steps": 3} and row.metrics["gate"]["promote"] is True
    assert row.metrics["holdout"]["map"] == 70.0
    # A second promotion retires the first and keeps the one baseline.
    add_candidate(db_session, "p1-v2")
    decision = GateDecision(True, score("p1-v2", 80.0), score("p1-v1", 70.0), 1.0, "test")
    assert apply_decision(db_session, decision, candidate="p1-v2", project_id=1, backbone_version="s") == "promoted"
    assert versions.get_model_version(session=db_session, name="p1-v1").state == "retired"
    assert [v.name for v in versions.list_versions(session=db_session, project_id=1)] == ["p1-v1", "p1-v0", "p1-v2"]


def test_a_rejection_keeps_serving_and_a_stale_verdict_is_not_applied(db_session: Session) -> None:
    versions.create_model_version(session=db_session, name="global", backbone="simulated:0:abc")
    versions.set_serving(session=db_session, name="global")
    add_candidate(db_session)
    assert apply_decision(db_session, verdict(False, "global"), candidate="p1-v1", project_id=1,
                          backbone_version="s") == "rejected"  # fmt: skip
    row = versions.get_model_version(session=db_session, name="p1-v1")
    assert row.state == "rejected" and row.metrics["gate"]["candidate"]["map"] == 40.0
    assert versions.serving_version(session=db_session, project_id=1).name == "global"
    assert versions.get_model_version(session=db_session, name="p1-v0") is None
    add_candidate(db_session, "p1-v2")
    assert apply_decision(db_session, verdict(True, "somebody-else"), candidate="p1-v2", project_id=1,
                          backbone_version="s") == "candidate"  # fmt: skip
    row = versions.get_model_version(session=db_session, name="p1-v2")
    assert row.state == "candidate" and "promoted meanwhile" in row.metrics["gate"]["reason"]
    assert versions.serving_version(session=db_session, project_id=1).name == "global"
    with pytest.raises(GateError, match="not registered"):
        apply_decision(db_session, verdict(True, "global"), candidate="nope", project_id=1, backbone_version="s")
