"""backend.services.corrections: per-joint comparison of predicted and final persons."""

from __future__ import annotations

import numpy as np
import pytest

from annotation_io.skeletons import KEYPOINT_INDEX, LABELLED_SLOTS, NUM_KEYPOINTS
from annotation_io.types import Box, Person
from backend.services.corrections import compare, head_size, match_persons


def make_person(
    x0: float,
    y0: float,
    *,
    track: int | None = None,
    scores: bool = True,
    head: Box | None = None,
    ears: bool = False,
) -> Person:
    """A 17-joint person laid out on a grid from (x0, y0), 10 px apart; ears absent unless asked."""
    kp = np.zeros((NUM_KEYPOINTS, 3))
    for j in range(NUM_KEYPOINTS):
        kp[j] = (x0 + 10 * (j % 3), y0 + 10 * (j // 3), 2)
    if not ears:
        kp[[3, 4], 2] = 0
    xy = kp[kp[:, 2] > 0, :2]
    box = Box.from_points(xy).expand(1.2)
    return Person(
        keypoints=kp,
        scores=np.linspace(0.5, 0.9, NUM_KEYPOINTS) if scores else None,
        track_id=track,
        box=box,
        head_box=head,
    )


def as_label(p: Person) -> Person:
    """The same person as a human label (no scores)."""
    q = p.copy()
    q.scores = None
    q.score = None
    return q


def kinds(rows: list) -> dict[int, str]:
    return {r.joint: r.kind for r in rows}


def test_unchanged_person_is_all_kept_even_after_a_percent_round_trip() -> None:
    pred = make_person(100, 50, track=1)
    final = as_label(pred)
    final.keypoints[:, :2] += 1e-4  # LS stores percent; x/w*100*w/100 drifts by this much
    rows = compare([pred], [final])
    assert len(rows) == len(LABELLED_SLOTS)  # ears are absent on both sides and not compared
    assert set(kinds(rows).values()) == {"kept"}
    assert all(r.distance_px is not None and r.distance_px < 1e-3 for r in rows)
    assert all(r.track_id == 1 for r in rows)


def test_moved_deleted_and_added_joints() -> None:
    pred = make_person(100, 50, track=7)
    pred.keypoints[KEYPOINT_INDEX["right_ankle"], 2] = 0  # the model placed no right ankle
    final = as_label(pred)
    final.keypoints[KEYPOINT_INDEX["nose"], :2] += (3.0, 4.0)  # moved by 5 px
    final.keypoints[KEYPOINT_INDEX["left_wrist"], :2] += (0.24, 0.32)  # 0.4 px: within tolerance
    final.keypoints[KEYPOINT_INDEX["left_knee"], 2] = 0  # deleted by the annotator
    final.keypoints[KEYPOINT_INDEX["right_ankle"]] = (140.0, 210.0, 1)  # added by hand (occluded)
    rows = {r.joint: r for r in compare([pred], [final])}

    nose = rows[KEYPOINT_INDEX["nose"]]
    assert nose.kind == "moved" and nose.distance_px == pytest.approx(5.0)
    assert (nose.pred_x, nose.pred_y) == (100.0, 50.0) and (nose.final_x, nose.final_y) == (103.0, 54.0)
    assert rows[KEYPOINT_INDEX["left_wrist"]].kind == "kept"
    knee = rows[KEYPOINT_INDEX["left_knee"]]
    assert knee.kind == "deleted" and knee.final_x is None and knee.distance_px is None
    ankle = rows[KEYPOINT_INDEX["right_ankle"]]
    assert ankle.kind == "added" and (ankle.final_x, ankle.final_y) == (140.0, 210.0) and ankle.pred_x is None
    counts = {k: sum(r.kind == k for r in rows.values()) for k in ("kept", "moved", "deleted", "added")}
    assert counts == {"kept": 12, "moved": 1, "deleted": 1, "added": 1}


def test_tolerance_decides_kept_or_moved() -> None:
    pred = make_person(0, 0, track=1)
    final = as_label(pred)
    final.keypoints[0, :2] += (0.6, 0.8)  # 1 px
    assert kinds(compare([pred], [final]))[0] == "moved"
    assert kinds(compare([pred], [final], kept_tolerance_px=1.5))[0] == "kept"


def test_head_size_from_final_head_box() -> None:
    pred = make_person(0, 0, track=1)
    final = as_label(pred)
    final.head_box = Box(0, 0, 30, 40)  # diagonal 50 -> poseval head size 0.6 * 50
    rows = compare([pred], [final])
    assert head_size(final) == pytest.approx(30.0)
    assert all(r.head_size_px == pytest.approx(30.0) for r in rows)
    assert all(r.head_size_px is None for r in compare([pred], [as_label(pred)]))


def test_whole_person_deleted_and_another_drawn_by_hand() -> None:
    pred = make_person(0, 0, track=1)
    drawn = as_label(make_person(500, 400))  # far away, no track id: a different person
    rows = compare([pred], [drawn])
    deleted = [r for r in rows if r.kind == "deleted"]
    added = [r for r in rows if r.kind == "added"]
    assert len(deleted) == len(added) == len(LABELLED_SLOTS) and len(rows) == 2 * len(LABELLED_SLOTS)
    assert {r.track_id for r in deleted} == {1} and {r.track_id for r in added} == {None}
    assert all(r.final_x is None for r in deleted) and all(r.pred_x is None for r in added)


def test_geometric_matching_ignores_order() -> None:
    a, b = make_person(0, 0), make_person(300, 0)  # no track ids
    rows = compare([a, b], [as_label(b), as_label(a)])
    assert {r.kind for r in rows} == {"kept"} and len(rows) == 2 * len(LABELLED_SLOTS)
    assert match_persons([a, b], [as_label(b), as_label(a)]) == [(0, 1), (1, 0)]


def test_track_id_wins_over_geometry() -> None:
    a, b = make_person(0, 0, track=1), make_person(300, 0, track=2)
    fa, fb = as_label(b), as_label(a)  # positions swapped, ids kept: the annotator moved both persons
    fa.track_id, fb.track_id = 1, 2
    rows = compare([a, b], [fa, fb])
    assert {r.kind for r in rows} == {"moved"}
    assert all(r.distance_px == pytest.approx(300.0) for r in rows)


def test_partial_overlap_prefers_the_best_pair() -> None:
    pred = make_person(0, 0)
    near = as_label(make_person(2, 0))  # shifted 2 px
    far = as_label(make_person(25, 0))  # overlaps less
    pairs = match_persons([pred], [far, near])
    assert pairs == [(0, 1)]
    rows = compare([pred], [far, near])
    assert sum(r.kind == "moved" for r in rows) == len(LABELLED_SLOTS)
    assert sum(r.kind == "added" for r in rows) == len(LABELLED_SLOTS)


def test_ears_compared_only_when_asked() -> None:
    pred = make_person(0, 0, track=1, ears=True)
    final = as_label(pred)
    final.keypoints[[3, 4], 2] = 0
    assert {r.joint for r in compare([pred], [final])} == set(LABELLED_SLOTS)
    rows = compare([pred], [final], joints=range(NUM_KEYPOINTS))
    assert kinds(rows)[3] == kinds(rows)[4] == "deleted"


def test_empty_inputs() -> None:
    assert compare([], []) == []
    final = as_label(make_person(0, 0))
    assert {r.kind for r in compare([], [final])} == {"added"}


def test_bad_input_is_named() -> None:
    pred = make_person(0, 0, track=1)
    with pytest.raises(ValueError, match="kept_tolerance_px"):
        compare([pred], [pred], kept_tolerance_px=-1)
    with pytest.raises(ValueError, match="0..16"):
        compare([pred], [pred], joints=[17])
    broken = as_label(pred)
    broken.keypoints[5, 0] = np.nan
    with pytest.raises(ValueError, match=r"final person 0 \(track 1\): joints \[5\]"):
        compare([pred], [broken])


def test_the_same_region_wins_over_a_retyped_track_id() -> None:
    # An identity switch fixed: the annotator swapped two persons' track ids and moved nothing. Was: each
    # prediction paired with the other person by track id, every joint "moved" 300 px.
    a, b = make_person(0, 0, track=1), make_person(300, 0, track=2)
    a.region_id, b.region_id = "t5_p0", "t5_p1"
    fa, fb = as_label(a), as_label(b)
    fa.track_id, fb.track_id = 2, 1
    rows = compare([a, b], [fb, fa])
    assert {r.kind for r in rows} == {"kept"} and len(rows) == 2 * len(LABELLED_SLOTS)
    assert {r.track_id for r in rows[: len(LABELLED_SLOTS)]} == {2}  # the final (corrected) track id
    # The same region moved far (no longer alike): track id, then geometry decide as before.
    fa, fb = as_label(b), as_label(a)
    fa.region_id, fa.track_id, fb.region_id, fb.track_id = "t5_p0", 1, "t5_p1", 2
    assert all(r.distance_px == pytest.approx(300.0) for r in compare([a, b], [fa, fb]))
