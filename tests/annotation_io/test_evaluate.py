"""Tests of the poseval-compatible evaluator: hand-computed AP cases, ignore regions, errors, CLI."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from annotation_io.evaluate import (
    EvaluationError,
    average_precision,
    evaluate,
    format_table,
    main,
    polygon_contains,
)
from annotation_io.skeletons import POSEVAL_FROM_17, POSEVAL_JOINTS
from annotation_io.types import Box, Frame, Person, Video

# Head box 10 x 10: head size = 0.6 * sqrt(200) = 8.49 px, so PCKh@0.5 accepts up to 4.24 px.
HEAD = Box(0.0, 0.0, 10.0, 10.0)
FAR = (500.0, 500.0)  # an offset that puts every joint far outside any match radius
ALL_100 = {joint: 100.0 for joint in POSEVAL_JOINTS}


def gt_person(offset: tuple[float, float] = (0.0, 0.0), track: int = 0, drop: tuple[int, ...] = ()) -> Person:
    """A labelled person: poseval joint k at (ox + 10k, oy + 5k), v = 2; `drop` lists poseval ids."""
    kp = np.zeros((17, 3))
    for k, slot in enumerate(POSEVAL_FROM_17):
        if k not in drop:
            kp[slot] = (offset[0] + 10.0 * k, offset[1] + 5.0 * k, 2.0)
    return Person(keypoints=kp, track_id=track, head_box=HEAD)


def pred_of(
    gt: Person, score: float, shift: tuple[float, float] = (1.0, -1.0), drop: tuple[int, ...] = ()
) -> Person:
    """A prediction of `gt` moved by `shift` (1.4 px by default: within PCKh), score on every joint."""
    kp = gt.keypoints.copy()
    kp[:, 0] += shift[0]
    kp[:, 1] += shift[1]
    for k in drop:
        kp[POSEVAL_FROM_17[k]] = 0.0
    return Person(keypoints=kp, scores=np.full(17, score), track_id=gt.track_id)


def video(name: str, frames: dict[int, list[Person]], num_frames: int = 4, **regions: list) -> Video:
    """A video whose frame i holds frames[i]; regions={"f0": [...]} sets frame 0's ignore regions."""
    return Video(
        name=name,
        num_frames=num_frames,
        frames=[
            Frame(index=i, persons=ps, is_labeled=True, ignore_regions=regions.get(f"f{i}", []))
            for i, ps in frames.items()
        ],
    )


def assert_all(values: dict[str, float], expected: float) -> None:
    for joint, value in values.items():
        assert value == pytest.approx(expected), joint


def test_perfect_predictions_score_100() -> None:
    a, b, c, d = gt_person(), gt_person((200, 0), 1), gt_person((0, 200)), gt_person((200, 200), 1)
    gt = video("v", {0: [a, b], 1: [c, d]})
    # Predictions listed in the other order with different scores: matching is by position.
    pred = video("v", {0: [pred_of(b, 0.3), pred_of(a, 0.9)], 1: [pred_of(d, 0.5), pred_of(c, 0.7)]})
    result = evaluate(gt, pred)
    assert result.ap == ALL_100
    assert result.total == 100.0
    assert result.groups == {
        col: 100.0 for col in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total")
    }
    assert result.within_total == 100.0 and set(result.within.values()) == {100.0}
    assert result.n_gt == {joint: 4 for joint in POSEVAL_JOINTS}
    assert result.n_pred == {joint: 4 for joint in POSEVAL_JOINTS}
    assert (result.n_frames, result.n_videos) == (2, 1)


def test_duplicate_with_lower_score_is_a_false_positive() -> None:
    p1, p2 = gt_person(), gt_person((0, 300))
    gt = video("v", {0: [p1], 1: [p2]})
    pred = video("v", {0: [pred_of(p1, 0.9), pred_of(p1, 0.5, shift=(-1, 1))], 1: [pred_of(p2, 0.3)]})
    # Per joint, nGT = 2 and contributions (0.9, TP), (0.5, FP: the duplicate), (0.3, TP).
    # Sorted: P = 1, 1/2, 2/3 at R = .5, .5, 1; monotone precision 1, 2/3, 2/3.
    # AP = .5 * 1 + .5 * 2/3 = 5/6.
    result = evaluate(gt, pred)
    assert_all(result.ap, 100 * 5 / 6)
    assert result.total == pytest.approx(100 * 5 / 6)
    assert result.n_pred == {joint: 3 for joint in POSEVAL_JOINTS}
    assert result.within_total == 100.0  # only the two matched predictions count, both within


def test_duplicate_listed_first_takes_the_match_as_in_poseval() -> None:
    p1, p2 = gt_person(), gt_person((0, 300))
    gt = video("v", {0: [p1], 1: [p2]})
    # Both frame-0 predictions have pck 1 with p1; poseval gives the GT to the first one listed
    # (argmax), whatever its score, so the 0.9 prediction becomes the false positive:
    # sorted (0.9, FP), (0.5, TP), (0.3, TP): P = 0, 1/2, 2/3 at R = 0, .5, 1;
    # AP = .5 * 2/3 + .5 * 2/3 = 2/3.
    pred = video("v", {0: [pred_of(p1, 0.5, shift=(-1, 1)), pred_of(p1, 0.9)], 1: [pred_of(p2, 0.3)]})
    assert_all(evaluate(gt, pred).ap, 100 * 2 / 3)


def test_each_prediction_keeps_only_its_best_gt() -> None:
    # Two overlapping GT persons share joints 0..7; B's joints 8..14 lie 300 px lower.
    a = gt_person()
    b = gt_person(track=1)
    lower = gt_person((0, 300))
    b.keypoints[list(POSEVAL_FROM_17[8:])] = lower.keypoints[list(POSEVAL_FROM_17[8:])]
    p0 = pred_of(a, 0.9)  # pck: A 15/15, B 8/15
    p1 = pred_of(b, 0.8, drop=(0, 1, 2, 3, 4, 5, 6, 7, 14))  # pck: A 0, B 6/15
    # p0 keeps only A, so B's best prediction is p1 (6/15), not p0 (8/15): p1's joints 8..13 are TPs.
    # Joints 8..13: nGT 2, (0.9, TP), (0.8, TP) -> AP 100. Joints 0..7 and 14: nGT 2, one TP -> 50.
    result = evaluate(video("v", {0: [a, b]}), video("v", {0: [p0, p1]}))
    expected = [50.0] * 8 + [100.0] * 6 + [50.0]
    assert [result.ap[POSEVAL_JOINTS[k]] for k in range(15)] == pytest.approx(expected)
    assert result.within_total == 100.0
    assert result.n_matched["right_ankle"] == 1 and result.n_matched["nose"] == 2


def test_unmatched_gt_person_halves_recall() -> None:
    a, b = gt_person(), gt_person((300, 0), 1)
    gt = video("v", {0: [a, b]})
    pred = video("v", {0: [pred_of(a, 0.8)]})
    # nGT = 2 per joint, one TP: P = 1 at R = .5, then precision 0 up to R = 1: AP = .5.
    result = evaluate(gt, pred)
    assert_all(result.ap, 50.0)
    assert_all(result.recall, 50.0)
    assert_all(result.precision, 100.0)
    assert result.within_total == 100.0


def test_missing_joints_in_prediction() -> None:
    person = gt_person()
    gt = video("v", {0: [person]})
    pred = video("v", {0: [pred_of(person, 0.7, drop=(14, 5))]})  # no head_top, no left_ankle
    result = evaluate(gt, pred)
    # head_top and left_ankle: one GT joint each, no contribution -> AP 0; the 13 others 100.
    assert result.ap["head_top"] == 0.0 and result.ap["left_ankle"] == 0.0
    assert sum(v == 100.0 for v in result.ap.values()) == 13
    assert result.total == pytest.approx(1300 / 15)
    assert result.groups["Head"] == pytest.approx(200 / 3)  # mean(head_top 0, neck 100, nose 100)
    assert result.groups["Ankle"] == pytest.approx(50.0)
    assert result.groups["Knee"] == 100.0
    assert result.n_pred["head_top"] == 0 and result.n_gt["head_top"] == 1
    assert result.within_total == 100.0 and math.isnan(result.within["head_top"])


def test_joint_without_gt_is_nan_and_skipped_in_means() -> None:
    person = gt_person(drop=(14,))  # head_top never labelled
    gt = video("v", {0: [person]})
    full = gt_person()  # the prediction does place a head_top
    pred = video("v", {0: [pred_of(full, 0.6)]})
    result = evaluate(gt, pred)
    assert math.isnan(result.ap["head_top"])
    assert result.total == 100.0  # mean of the 14 joints with GT
    assert result.groups["Head"] == 100.0  # mean(neck, nose)
    assert result.to_json()["ap"]["head_top"] is None
    # The head_top placed where the GT has none cannot be accepted unchanged: 14 of 15 within.
    assert result.within["head_top"] == 0.0
    assert result.within_total == pytest.approx(100 * 14 / 15)


def test_predicted_joint_absent_from_matched_gt_is_a_false_positive() -> None:
    a, b = gt_person(drop=(6,)), gt_person((0, 300))  # frame 0's GT lacks right_wrist
    gt = video("v", {0: [a], 1: [b]})
    pred = video("v", {0: [pred_of(gt_person(), 0.9)], 1: [pred_of(b, 0.5)]})
    # right_wrist: (0.9, FP), (0.5, TP), nGT = 1: P = 0 then 1/2 at R = 1: AP = 1/2.
    result = evaluate(gt, pred)
    assert result.ap["right_wrist"] == pytest.approx(50.0)
    assert result.n_gt["right_wrist"] == 1
    assert sum(v == 100.0 for v in result.ap.values()) == 14
    assert result.within["right_wrist"] == pytest.approx(50.0)
    assert result.within_total == pytest.approx(100 * 29 / 30)


def test_prediction_inside_ignore_region_is_ignored() -> None:
    person = gt_person()
    intruder = pred_of(gt_person(FAR), 0.95, shift=(0, 0))  # x 500..640, y 500..570
    region = np.array([[480, 480], [700, 480], [700, 600], [480, 600]], dtype=float)
    pred = video("v", {0: [intruder, pred_of(person, 0.9)]})
    ignored = evaluate(video("v", {0: [person]}, f0=[region]), pred)
    assert ignored.ap == ALL_100
    assert set(ignored.n_pred.values()) == {1}
    # Without the region the intruder is a false positive above the TP: AP = 1/2 * 1 = 50.
    counted = evaluate(video("v", {0: [person]}), pred)
    assert_all(counted.ap, 50.0)
    assert set(counted.n_pred.values()) == {2}


def test_gt_joint_inside_ignore_region_does_not_count() -> None:
    a, b = gt_person((100, 100)), gt_person((0, 300))
    pred = video("v", {0: [pred_of(a, 0.8, drop=(0,))], 1: [pred_of(b, 0.6)]})  # a's right_ankle missed
    region = np.array([[95, 95], [105, 95], [105, 105], [95, 105]], dtype=float)  # around a's right_ankle
    ignored = evaluate(video("v", {0: [a], 1: [b]}, f0=[region]), pred)
    assert ignored.n_gt["right_ankle"] == 1 and ignored.ap["right_ankle"] == 100.0
    counted = evaluate(video("v", {0: [a], 1: [b]}), pred)
    # nGT = 2, one TP: AP = 50.
    assert counted.n_gt["right_ankle"] == 2 and counted.ap["right_ankle"] == pytest.approx(50.0)
    assert ignored.ap["right_knee"] == counted.ap["right_knee"] == 100.0


def test_polygon_contains_is_strict() -> None:
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], dtype=float)
    pts = np.array([[5, 5], [0, 5], [10, 10], [11, 5], [-1, -1], [9.999, 0.001]])
    assert polygon_contains(square, pts).tolist() == [True, False, False, False, False, True]
    closed = np.vstack([square, square[:1]])  # a repeated first vertex changes nothing
    assert polygon_contains(closed, pts).tolist() == [True, False, False, False, False, True]
    # Concave "U": the notch between the arms is outside.
    u_shape = np.array([[0, 0], [30, 0], [30, 30], [20, 30], [20, 10], [10, 10], [10, 30], [0, 30]], float)
    assert polygon_contains(u_shape, np.array([[5, 20], [15, 20], [25, 20], [15, 5]])).tolist() == [
        True, False, True, True,
    ]  # fmt: skip
    assert not polygon_contains(np.array([[0, 0], [10, 10]]), np.array([[5, 5]])).any()


def test_frames_without_gt_persons_are_skipped() -> None:
    person = gt_person()
    far = pred_of(gt_person(FAR), 0.9)
    gt = Video("v", 4, [Frame(0, [person], is_labeled=True), Frame(1, [], is_labeled=True)])
    pred = video("v", {0: [pred_of(person, 0.5)], 1: [far], 2: [far]})
    result = evaluate(gt, pred)
    assert result.ap == ALL_100 and result.n_frames == 1
    # A GT person without keypoints (and without head box) still makes its frame count, as in
    # poseval, so the prediction there is a false positive: (0.9, FP), (0.5, TP) -> AP 50.
    gt.frames[1].persons.append(Person(track_id=5))
    result = evaluate(gt, pred)
    assert_all(result.ap, 50.0)
    assert result.n_frames == 2
    # No prediction frame at all: every GT joint missed.
    missed = evaluate(gt, Video("v", 4))
    assert_all(missed.ap, 0.0)
    assert missed.total == 0.0 and math.isnan(missed.within_total)


def test_missing_scores_rank_last() -> None:
    person = gt_person()
    unscored = pred_of(person, 0.0)
    unscored.scores = None  # poseval's fallback score -9999
    gt = video("v", {0: [person]})
    # The far 0.1 false positive now ranks above the true positive: AP 50.
    assert_all(evaluate(gt, video("v", {0: [unscored, pred_of(gt_person(FAR), 0.1)]})).ap, 50.0)
    assert_all(evaluate(gt, video("v", {0: [pred_of(person, 0.2), pred_of(gt_person(FAR), 0.1)]})).ap, 100.0)


def test_two_videos_are_pooled() -> None:
    a, b = gt_person(), gt_person()
    gt = {"a": video("a", {0: [a]}), "b": video("b", {0: [b]})}
    pred = [video("b", {0: [pred_of(gt_person(FAR), 0.95)]}), video("a", {0: [pred_of(a, 0.9)]})]
    # Pooled: (0.95, FP), (0.9, TP), nGT = 2: P = 0, 1/2 at R = 0, 1/2: AP = .5 * .5 = 25
    # (the per-video APs 0 and 100 would average to 50).
    result = evaluate(gt, pred)
    assert_all(result.ap, 25.0)
    assert (result.n_videos, result.n_frames) == (2, 2)
    assert result.n_gt == {joint: 2 for joint in POSEVAL_JOINTS}
    assert result.within_total == 100.0


def test_average_precision_by_hand() -> None:
    # Sorted labels 1,0,1,0 with nGT 3: P = 1, 1/2, 2/3, 1/2 at R = 1/3, 1/3, 2/3, 2/3.
    # AP = 1/3 * 1 + 1/3 * 2/3 = 5/9; final precision 1/2, recall 2/3.
    ap, precision, recall = average_precision(np.array([0.6, 0.9, 0.7, 0.8]), np.array([0, 1, 1, 0], bool), 3)
    assert ap == pytest.approx(500 / 9)
    assert (precision, recall) == pytest.approx((50.0, 200 / 3))
    assert average_precision(np.zeros(0), np.zeros(0, bool), 2) == (0.0, 0.0, 0.0)
    assert all(math.isnan(v) for v in average_precision(np.array([0.5]), np.array([False]), 0))


def test_frame_count_mismatch_raises() -> None:
    gt = video("seq7", {0: [gt_person()]}, num_frames=5)
    pred = video("seq7", {0: [pred_of(gt_person(), 0.5)]}, num_frames=4)
    with pytest.raises(EvaluationError, match=r"seq7.*4 frames.*5"):
        evaluate(gt, pred)


def test_missing_prediction_video_raises() -> None:
    gt = [video("a", {0: [gt_person()]}), video("b", {0: [gt_person()]})]
    with pytest.raises(EvaluationError, match=r"\['b'\]"):
        evaluate(gt, [video("a", {0: []})])


def test_gt_person_without_head_box_raises() -> None:
    person = gt_person(track=42)
    person.head_box = None
    with pytest.raises(EvaluationError, match=r"'clip'.*frame 2.*track 42.*head box"):
        evaluate(video("clip", {2: [person]}), video("clip", {}))


def test_table_and_json() -> None:
    a, b = gt_person(), gt_person((300, 0), 1)
    result = evaluate(video("v", {0: [a, b]}), video("v", {0: [pred_of(a, 0.8)]}))
    lines = format_table(result).splitlines()
    header = "& Head & Shou & Elb  & Wri  & Hip  & Knee & Ankl & Total\\\\"
    assert lines[1] == header and lines[4] == header
    assert lines[2] == "& 50.0 & 50.0 & 50.0 & 50.0 & 50.0 & 50.0 & 50.0 & 50.0 \\\\"
    assert lines[5] == "&100.0 &100.0 &100.0 &100.0 &100.0 &100.0 &100.0 &100.0 \\\\"
    data = json.loads(json.dumps(result.to_json()))
    assert list(data["ap"]) == list(POSEVAL_JOINTS)
    assert data["total"] == 50.0 and data["within_total"] == 100.0 and data["groups"]["Total"] == 50.0
    assert data["n_gt"]["nose"] == 2 and data["n_frames"] == 1


# --- CLI -------------------------------------------------------------------------------------------


def posetrack_module() -> ModuleType:
    """annotation_io.posetrack, or a skip when (and only when) that module does not exist yet."""
    try:
        return importlib.import_module("annotation_io.posetrack")
    except ModuleNotFoundError as exc:
        if exc.name == "annotation_io.posetrack":
            pytest.skip("annotation_io.posetrack is not written yet")
        raise


def posetrack18(persons_per_frame: list[list[Person]], with_scores: bool) -> dict:
    """A PoseTrack 2018 per-video dict holding the given persons (frame i = persons_per_frame[i])."""
    n = len(persons_per_frame)
    images, annotations = [], []
    for i, persons in enumerate(persons_per_frame):
        image_id = 10000342 * 10000 + i
        images.append(
            {
                "file_name": f"images/val/000342_mpii_test/{i:06d}.jpg",
                "id": image_id,
                "frame_id": image_id,
                "vid_id": "000342",
                "nframes": n,
                "is_labeled": bool(persons),
            }
        )
        for j, p in enumerate(persons):
            kp = p.keypoints.copy()
            kp[:, 2] = np.where(kp[:, 2] > 0, 1, 0)
            box = p.keypoint_box()
            annotations.append(
                {
                    "id": image_id * 100 + j,
                    "image_id": image_id,
                    "track_id": j,
                    "category_id": 1,
                    "keypoints": kp.reshape(-1).tolist(),
                    "bbox": box.xywh if box else [0, 0, 0, 0],
                    "bbox_head": p.head_box.xywh if p.head_box else [0, 0, 0, 0],
                    "scores": (np.linspace(0.9, 0.5, 17) - 0.01 * j).tolist() if with_scores else [],
                }
            )
    from annotation_io.skeletons import POSETRACK_KEYPOINTS, SKELETON_1BASED

    categories = [
        {
            "supercategory": "person",
            "id": 1,
            "name": "person",
            "keypoints": list(POSETRACK_KEYPOINTS),
            "skeleton": [list(pair) for pair in SKELETON_1BASED],
        }
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_cli_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.json"), str(tmp_path / "nope2.json")]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_cli_gt_against_itself_with_scores_is_100(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    posetrack_module()
    frames = [[gt_person(), gt_person((200, 0))], [], [gt_person((0, 100))]]
    gt = write_json(tmp_path / "gt" / "000342_mpii_test.json", posetrack18(frames, with_scores=False))
    pred = write_json(tmp_path / "pred" / "000342_mpii_test.json", posetrack18(frames, with_scores=True))
    assert main([str(gt), str(pred), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"] == 100.0 and set(data["ap"].values()) == {100.0}
    assert data["within_total"] == 100.0 and data["n_frames"] == 2 and data["n_gt"]["nose"] == 3
    # Folders matched by file name, text output.
    assert main([str(gt.parent), str(pred.parent)]) == 0
    out = capsys.readouterr().out
    assert "&100.0 &100.0 &100.0 &100.0 &100.0 &100.0 &100.0 &100.0 \\\\" in out


def test_cli_frame_count_mismatch_and_bad_file_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    posetrack_module()
    frames = [[gt_person()], [], [gt_person((0, 100))]]
    gt = write_json(tmp_path / "gt.json", posetrack18(frames, with_scores=False))
    short = write_json(tmp_path / "short.json", posetrack18(frames[:2], with_scores=True))
    assert main([str(gt), str(short)]) == 2
    err = capsys.readouterr().err
    assert "2 frames" in err and "3" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    assert main([str(gt), str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err
