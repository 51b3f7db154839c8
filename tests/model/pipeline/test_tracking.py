"""Tests of model.pipeline.tracking on synthetic walkers: label-derived boxes, IoU tracking, keypoint carrying."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from annotation_io.posetrack import load
from annotation_io.synth import generate, sparsify
from annotation_io.types import Box, Frame, Person, Video
from model.pipeline.assignment import hungarian, iou_matrix
from model.pipeline.boxes import TrackBox, box_from_keypoints, carry_with_keypoints, update_with_keypoints
from model.pipeline.follow import Follower
from model.pipeline.tracking import assign_tracks, plan_boxes

FRAMES, EVERY, SIZE = 40, 8, (160, 120)
SEEDS = (0, 1, 2, 3)  # each: people 0 and 1 cross, person 2 walks in from an edge


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Video]:
    """Full ground truth of one 40-frame, 3-person synthetic video per seed."""
    out = {}
    for seed in SEEDS:
        (path,) = generate(
            tmp_path_factory.mktemp(f"synth{seed}"), videos=1, frames=FRAMES, people=3, seed=seed, size=SIZE
        )
        out[seed] = load(path)
    return out


def gt_box(video: Video, index: int, track_id: int) -> Box | None:
    person = video.frame_map()[index].person_by_track(track_id)
    return None if person is None else person.box


class FakeDetector:
    """Returns the GT boxes of a frame, shuffled, some dropped, never a mere hand or foot at the edge;
    remembers which GT track each returned box belongs to and which frames it was asked for."""

    def __init__(self, video: Video, seed: int, drop: float = 0.0) -> None:
        self.frames = video.frame_map()
        self.rng = np.random.default_rng(seed)
        self.drop = drop
        self.truth: dict[tuple[int, tuple[float, ...]], int] = {}
        self.calls: list[int] = []

    def __call__(self, index: int) -> list[Box]:
        self.calls.append(index)
        persons = [p for p in self.frames[index].persons if p.present.sum() >= 6]  # a body, not a hand
        persons = [p for p in persons if self.rng.random() >= self.drop]
        self.rng.shuffle(persons)
        for p in persons:
            self.truth[(index, p.box.xyxy)] = p.track_id
        return [p.box for p in persons]

    def gt_id(self, index: int, tb: TrackBox) -> int:
        return self.truth[(index, tb.box.xyxy)]


# --- assignment ---------------------------------------------------------------------------------


def test_hungarian_finds_the_minimum_cost_assignment() -> None:
    rng = np.random.default_rng(0)
    for _ in range(60):
        n, m = (int(x) for x in rng.integers(1, 6, size=2))
        cost = rng.random((n, m)).round(2)  # rounding makes ties
        pairs = hungarian(cost)
        assert len(pairs) == min(n, m)
        assert len({r for r, _ in pairs}) == len({c for _, c in pairs}) == len(pairs)
        if n <= m:
            best = min(sum(cost[r, c] for r, c in enumerate(p)) for p in itertools.permutations(range(m), n))
        else:
            best = min(sum(cost[r, c] for c, r in enumerate(p)) for p in itertools.permutations(range(n), m))
        assert sum(cost[r, c] for r, c in pairs) == pytest.approx(best)
    assert hungarian(np.zeros((0, 3))) == []
    with pytest.raises(ValueError, match="finite"):
        hungarian(np.array([[np.inf, 1.0]]))


def test_iou_matrix_agrees_with_box_iou() -> None:
    rng = np.random.default_rng(1)
    a = [Box(*rng.uniform(0, 50, 2), *rng.uniform(1, 30, 2)) for _ in range(5)]
    b = [Box(*rng.uniform(0, 50, 2), *rng.uniform(1, 30, 2)) for _ in range(4)]
    expected = np.array([[x.iou(y) for y in b] for x in a])
    np.testing.assert_allclose(iou_matrix(a, b), expected, atol=1e-12)
    assert iou_matrix([], b).shape == (0, 4)
    empty = Box(3.0, 4.0, 0.0, 0.0)
    assert iou_matrix([empty], [empty]).tolist() == [[0.0]]  # 0/0 is no overlap, not NaN


def test_assign_tracks_keeps_ids_of_moved_shuffled_boxes_and_numbers_new_ones() -> None:
    prev = [
        TrackBox(3, Box(0, 0, 20, 40), "human", 1.0),
        TrackBox(7, Box(50, 0, 20, 40), "human", 1.0),
        TrackBox(9, Box(100, 0, 20, 40), "human", 1.0),
    ]
    # person 7 moved 4 px, person 3 moved 3 px, a new person far away, person 9 missing
    boxes = [Box(54, 1, 20, 40), Box(200, 0, 20, 40), Box(3, 0, 20, 40), Box(300, 0, 5, 5)]
    out = assign_tracks(prev, boxes, next_id=10)
    assert [t.track_id for t in out] == [7, 10, 3, 11]
    assert [t.box for t in out] == boxes and {t.source for t in out} == {"detected"}
    # a box overlapping two tracks goes to the better one; below the threshold nothing matches
    out = assign_tracks(prev, [Box(40, 0, 20, 40)], next_id=10)
    assert out[0].track_id == 7
    assert assign_tracks(prev, [Box(40, 0, 20, 40)], next_id=10, iou_threshold=0.8)[0].track_id == 10


def test_assign_tracks_rejects_bad_input() -> None:
    prev = [TrackBox(3, Box(0, 0, 2, 2), "human", 1.0), TrackBox(3, Box(5, 0, 2, 2), "human", 1.0)]
    with pytest.raises(ValueError, match="repeats a track id"):
        assign_tracks(prev, [], next_id=4)
    with pytest.raises(ValueError, match="next_id 3 must be above"):
        assign_tracks(prev[:1], [], next_id=3)
    with pytest.raises(ValueError, match="iou_threshold"):
        assign_tracks(prev[:1], [], next_id=4, iou_threshold=0.0)


# --- boxes from and with keypoints ----------------------------------------------------------------


def test_box_from_keypoints_fits_the_drawn_people(videos: dict[int, Video]) -> None:
    ious = [
        box_from_keypoints(p.keypoints).clip(*SIZE).iou(p.box)
        for v in videos.values()
        for f in v.frames
        for p in f.persons
        if p.present.sum() >= 2
    ]
    assert np.mean(ious) > 0.8  # measured 0.84-0.88 per video
    assert np.mean(ious) > np.mean(
        [  # better than the bare joint box
            p.keypoint_box().iou(p.box)
            for v in videos.values()
            for f in v.frames
            for p in f.persons
            if p.present.sum() >= 2
        ]
    )


def test_box_from_keypoints_uses_confident_joints_only() -> None:
    kps = np.zeros((17, 3))
    kps[[0, 15, 16]] = [[50, 10, 2], [40, 110, 2], [60, 110, 2]]
    box = box_from_keypoints(kps, margin=0.1)
    assert box.xyxy == pytest.approx((30, 0, 70, 120))  # 0.1 x the long side (100) per side
    kps[9] = [400, 60, 2]  # a wild joint with a low score
    scores = np.where(np.arange(17) == 9, 0.05, 0.9)
    assert box_from_keypoints(kps, scores, margin=0.1).xyxy == pytest.approx(box.xyxy)
    with pytest.raises(ValueError, match="at least 2 distinct joints"):
        box_from_keypoints(np.where(np.arange(17)[:, None] == 0, kps, 0))
    with pytest.raises(ValueError, match=r"scores must have shape \(17,\)"):
        box_from_keypoints(kps, np.ones(15))


def test_carry_with_keypoints_follows_a_similarity_and_ignores_outliers() -> None:
    rng = np.random.default_rng(2)
    kps = np.column_stack([rng.uniform(100, 160, 17), rng.uniform(50, 200, 17), np.full(17, 2.0)])
    box = Box(90, 40, 80, 170)
    s, t, o = 1.2, np.array([13.0, -7.0]), np.array([120.0, 90.0])
    moved = kps.copy()
    moved[:, :2] = o + s * (kps[:, :2] - o) + t
    x1, y1, x2, y2 = box.xyxy
    expected = Box.from_xyxy(*(o + s * (np.array([x1, y1]) - o) + t), *(o + s * (np.array([x2, y2]) - o) + t))
    assert carry_with_keypoints(box, kps, moved).xyxy == pytest.approx(expected.xyxy)
    wild = moved.copy()
    wild[[2, 9], :2] += 300  # two joints jump away
    assert carry_with_keypoints(box, kps, wild).iou(expected) > 0.85
    gone = moved.copy()
    gone[:, 2] = 0
    assert carry_with_keypoints(box, kps, gone) == box  # nothing seen on both frames: stays
    with pytest.raises(ValueError, match="differ in shape"):
        carry_with_keypoints(box, kps, moved[:15])


def test_carrying_with_joint_motion_beats_copying_the_box(videos: dict[int, Video]) -> None:
    carried, copied = [], []
    for v in videos.values():
        fm = v.frame_map()
        for start in range(0, FRAMES - EVERY, EVERY):
            for first in fm[start].persons:
                box, prev = first.box, first
                for f in range(start + 1, start + EVERY):
                    person = fm[f].person_by_track(first.track_id)
                    if person is None:
                        break
                    box, prev = carry_with_keypoints(box, prev.keypoints, person.keypoints), person
                    carried.append(box.iou(person.box))
                    copied.append(first.box.iou(person.box))
    assert np.mean(carried) > np.mean(copied) + 0.05  # measured ~0.74 vs ~0.64


def test_update_with_keypoints_stops_a_track_that_leaves_the_frame() -> None:
    kps = np.zeros((17, 3))
    kps[:5] = [[10, 10, 2], [20, 10, 2], [10, 50, 2], [20, 50, 2], [15, 30, 2]]
    track = TrackBox(4, Box(140, 5, 15, 50), "carried", 0.7)
    step = kps.copy()
    step[:, 0] += 10
    inside = update_with_keypoints(track, kps, step, frame_size=SIZE)
    assert inside is not None and inside.track_id == 4 and inside.score == 0.7
    assert inside.box.xyxy == pytest.approx((150, 5, 160, 55))  # clipped to the frame
    step[:, 0] += 30
    assert update_with_keypoints(track, kps, step, frame_size=SIZE) is None


# --- plan_boxes from labels -------------------------------------------------------------------------


def test_plan_boxes_human_interpolated_and_carried(videos: dict[int, Video]) -> None:
    crossing_checked = 0
    for seed, gt in videos.items():
        labels = sparsify(gt, EVERY)
        detector = FakeDetector(gt, seed)
        plan = plan_boxes(gt, labels, range(FRAMES), detector=detector)
        assert detector.calls == []  # every frame lies within reach of a label
        last = max(f.index for f in labels.labeled_frames())
        interp_ious = []
        for f in range(FRAMES):
            sources = {tb.source for tb in plan[f]}
            if f % EVERY == 0:  # human boxes win on labelled frames
                assert sources == {"human"}
                assert {tb.track_id: tb.box for tb in plan[f]} == {
                    p.track_id: p.box for p in labels.frame(f).persons
                }
            elif f > last:  # one-sided: a copy of the last label, trusted less with distance
                assert sources == {"carried"}
                for tb in plan[f]:
                    assert tb.box == gt_box(gt, last, tb.track_id)
                    previous = next(t for t in plan[f - 1] if t.track_id == tb.track_id)
                    assert tb.score < previous.score
            for tb in plan[f]:
                if tb.source != "interpolated":
                    continue
                true = gt_box(gt, f, tb.track_id)
                interp_ious.append(true.iou(tb.box))
                # ids never swap: the box is nearer its own person than any other (where they are apart)
                cx = tb.box.center[0]
                for other in gt.frame_map()[f].persons:
                    ox = other.box.center[0]
                    if other.track_id == tb.track_id or abs(ox - true.center[0]) <= 0.25 * true.h:
                        continue
                    assert abs(cx - true.center[0]) < abs(cx - ox), (seed, f, tb.track_id)
                    crossing_checked += {tb.track_id, other.track_id} == {0, 1}
        assert np.mean(np.array(interp_ious) > 0.5) > 0.9, seed
        x0 = [gt_box(gt, f, 0).center[0] - gt_box(gt, f, 1).center[0] for f in (0, FRAMES - 1)]
        assert x0[0] * x0[1] < 0, f"seed {seed}: people 0 and 1 should cross"
    assert crossing_checked > 100


def test_plan_boxes_scores_fall_with_distance_to_labels(videos: dict[int, Video]) -> None:
    gt = videos[1]
    plan = plan_boxes(gt, sparsify(gt, EVERY), range(FRAMES))
    score = {(f, tb.track_id): (tb.source, tb.score) for f in plan for tb in plan[f]}
    assert score[(1, 0)][0] == score[(4, 0)][0] == "interpolated"
    assert 1.0 > score[(1, 0)][1] > score[(4, 0)][1] > 0.5
    assert score[(7, 0)][1] == pytest.approx(score[(1, 0)][1])
    assert score[(33, 0)][0] == "carried" and score[(33, 0)][1] < score[(1, 0)][1]


def test_max_gap_hands_far_frames_to_the_detector_with_ids_continued(videos: dict[int, Video]) -> None:
    for seed, gt in videos.items():
        detector = FakeDetector(gt, seed)
        plan = plan_boxes(gt, sparsify(gt, EVERY), range(FRAMES), detector=detector, max_gap=3)
        far = [4, 12, 20, 28, 36, 37, 38, 39]  # 4 from both neighbouring labels, or 4+ past the last
        assert detector.calls == far
        assert all(tb.source == "carried" for f in (33, 34, 35) for tb in plan[f])
        for f in far:
            assert plan[f] and all(tb.source == "detected" and tb.score == 0.5 for tb in plan[f])
            assert [tb.track_id for tb in plan[f]] == sorted(detector.gt_id(f, tb) for tb in plan[f]), (
                seed,
                f,
            )


def test_detector_runs_before_the_first_label_continue_its_tracks_backwards(videos: dict[int, Video]) -> None:
    for seed, gt in videos.items():
        one = Video(
            gt.name, FRAMES, [replace(gt.frame_map()[30], persons=[p.copy() for p in gt.frame(30).persons])]
        )
        detector = FakeDetector(gt, seed)
        plan = plan_boxes(gt, one, range(FRAMES), detector=detector, max_gap=2)
        assert sorted(detector.calls) == list(range(28)) + list(range(33, FRAMES))
        known_ids = set(one.track_ids())
        right = [
            tb.track_id == detector.gt_id(f, tb)
            for f in detector.calls
            for tb in plan[f]
            if detector.gt_id(f, tb) in known_ids
        ]
        assert len(right) > 50 and all(right), seed


@pytest.mark.parametrize("step", [1, 3])  # every frame, or every third (there motion prediction matters)
def test_detector_only_ids_stay_stable_through_crossings_and_misses(
    videos: dict[int, Video], step: int
) -> None:
    for seed, gt in videos.items():
        detector = FakeDetector(gt, seed, drop=0.15)
        plan = plan_boxes(gt, None, range(0, FRAMES, step), detector=detector)
        ids_of: dict[int, list[int]] = defaultdict(list)
        for f in plan:
            for tb in plan[f]:
                if tb.source == "detected":  # interpolated boxes fill the detector's misses
                    ids_of[detector.gt_id(f, tb)].append(tb.track_id)
        assert detector.calls == list(range(0, FRAMES, step))
        for g in (0, 1):  # the crossing pair: one id each, all along
            assert len(set(ids_of[g])) == 1, (seed, g, Counter(ids_of[g]))
        assert ids_of[0][0] != ids_of[1][0]
        if 2 in ids_of:  # the newcomer gets ids of its own
            assert not set(ids_of[2]) & {ids_of[0][0], ids_of[1][0]}
            assert Counter(ids_of[2]).most_common(1)[0][1] >= 0.8 * len(ids_of[2])


def test_untracked_labels_get_fresh_ids_linked_across_labelled_frames(videos: dict[int, Video]) -> None:
    for seed, gt in videos.items():
        labels = sparsify(gt, EVERY)
        for frame in labels.frames:
            for p in frame.persons:
                p.track_id = 7 if p.track_id == 2 else None  # only the newcomer keeps an id
        plan = plan_boxes(gt, labels, range(0, FRAMES, EVERY))
        pairs = {
            (gt_id, tb.track_id)
            for f in plan
            for tb in plan[f]
            for gt_id in [next(p.track_id for p in gt.frame(f).persons if p.box == tb.box)]
        }
        mine = {tid for g, tid in pairs if g in (0, 1)}
        assert len(mine) == 2 and min(mine) >= 8, (seed, pairs)  # fresh ids above the known 7
        for tid in mine:  # one person per fresh id, through the crossing
            assert len({g for g, t in pairs if t == tid}) == 1, (seed, pairs)


# --- hand-made edge cases -----------------------------------------------------------------------------


def person(box: Box, track_id: int | None = None, scores: np.ndarray | None = None) -> Person:
    return Person(track_id=track_id, box=box, scores=scores)


def test_a_labelled_frame_is_complete() -> None:
    a, b = Box(10, 10, 20, 40), Box(60, 10, 20, 40)
    known = Video(
        "v",
        20,
        [
            Frame(0, [person(a, 1), person(b, 2)], True),
            Frame(5, [person(b, 2)], True),
            Frame(10, [], True),
            Frame(15, [person(a, 1)], True),
        ],
    )
    calls: list[int] = []
    plan = plan_boxes(Video("v", 20), known, range(20), detector=lambda f: calls.append(f) or [])
    assert plan[10] == [] and 10 not in calls  # labelled as empty: nobody, no detector
    assert [(t.track_id, t.source) for t in plan[3]] == [(1, "carried"), (2, "interpolated")]
    assert [(t.track_id, t.source) for t in plan[7]] == [(2, "carried")]  # 1 is absent on frame 5
    assert [(t.track_id, t.source) for t in plan[12]] == [(1, "carried")]  # 2 is absent on frame 10


def test_predictions_in_known_are_not_labels_and_frame_size_clips_or_drops() -> None:
    pred = person(Box(10, 10, 20, 40), 1, scores=np.full(17, 0.9))
    edge = person(Box(150, 10, 20, 40), 2)  # half inside the 160 x 120 frame
    out = person(Box(155, 10, 40, 40), 3)  # an eighth inside
    known = Video("v", 10, [Frame(0, [pred], True), Frame(4, [edge, out], True)])
    plan = plan_boxes(Video("v", 10, width=160, height=120), known, range(10))
    assert [(t.track_id, t.source) for t in plan[4]] == [(2, "human"), (3, "human")]  # labels stay as drawn
    for f in (0, 5):  # frame 0 holds only a prediction: not a label, so track 2 is carried onto it
        assert [(t.track_id, t.source, t.box.xyxy) for t in plan[f]] == [(2, "carried", (150, 10, 160, 50))]
    plan = plan_boxes(Video("v", 10), known, [5])  # frame size unknown: nothing clipped or dropped
    assert [(t.track_id, t.box) for t in plan[5]] == [(2, edge.box), (3, out.box)]


def test_a_detected_track_that_walks_out_of_the_frame_stops() -> None:
    def detector(f: int) -> list[Box]:
        if f <= 1:  # seen on frames 0 and 1, walking right at 5 px per frame, then missed
            return [Box(50 + 5 * f, 20, 40, 50)]
        return [Box(90, 20, 10, 50)] if f == 9 else []  # someone at the right edge

    video = Video("v", 10, width=100, height=100)
    plan = plan_boxes(video, None, range(10), detector=detector, iou_threshold=0.1)
    # on frame 9 the walker would be at x 95..135 (12% inside): gone, so the newcomer gets a new id
    assert [t.track_id for t in plan[9]] == [1] and [t.track_id for t in plan[1]] == [0]
    plan = plan_boxes(
        replace(video, width=None, height=None), None, range(10), detector=detector, iou_threshold=0.1
    )
    assert [t.track_id for t in plan[9]] == [0]  # frame size unknown: it cannot tell


def test_plan_boxes_rejects_bad_requests() -> None:
    video = Video("clip", 10)
    with pytest.raises(ValueError, match="frame 10 is outside video 'clip'"):
        plan_boxes(video, None, [3, 10])
    with pytest.raises(ValueError, match="max_gap"):
        plan_boxes(video, None, [3], max_gap=-1)
    with pytest.raises(TypeError, match=r"detector\(3\) must return a list of Box"):
        plan_boxes(video, None, [3], detector=lambda f: [(0, 0, 5, 5)])
    assert plan_boxes(video, None, [3, 3, 1]) == {1: [], 3: []}


def test_a_missed_detection_keeps_one_id() -> None:
    video = Video("walk", 12, width=640, height=480)

    def walker(f: int) -> Box:
        return Box(50.0 + 20 * f, 100.0, 80.0, 200.0)

    plan = plan_boxes(video, None, range(12), detector=lambda f: [] if f in (5, 6) else [walker(f)])
    assert len({tb.track_id for f in range(12) for tb in plan[f]}) == 1
    for f in range(12):
        (tb,) = plan[f]
        assert tb.source == ("interpolated" if f in (5, 6) else "detected")
        np.testing.assert_allclose(tb.box.xyxy, walker(f).xyxy, atol=1e-6)




def test_a_person_boxed_twice_then_once_keeps_the_older_id() -> None:
    """The detector boxes a walker as before (full) and, from frame 3, by the tighter box of their pose
    (a hit moved onto the pose found in it): both on frame 3, then the tight one alone. The tight box is
    born as a new track on frame 3 and goes on; the walker keeps the id of frames 0-2 throughout, boxed once."""
    video = Video("walk", 10, width=640, height=480)

    def full(f: int) -> Box:
        return Box(100.0 + 4 * f, 100.0, 100.0, 200.0)

    def tight(f: int) -> Box:
        return Box(125.0 + 4 * f, 110.0, 55.0, 160.0)  # IoU 0.44 with full(f)

    def detector(f: int) -> list[Box]:
        return [full(f)] if f < 3 else [tight(f), full(f)] if f == 3 else [tight(f)]

    plan = plan_boxes(video, None, range(10), detector=detector)
    assert {tb.track_id for f in range(10) for tb in plan[f]} == {0}
    assert [len(plan[f]) for f in range(10)] == [1] * 10
    assert plan[3][0].box == full(3) and plan[4][0].box == tight(4)


def test_two_people_side_by_side_are_not_handed_over() -> None:
    """B appears on A's box and both go on for 4 frames before A leaves: two people, two ids. C appears on
    the frame A's track ends, elsewhere: a new person too."""
    video = Video("walk", 12, width=640, height=480)

    def detector(f: int) -> list[Box]:
        a = [Box(100.0 + 4 * f, 100.0, 100.0, 200.0)] if f <= 6 else []
        b = [Box(150.0 + 4 * f, 100.0, 100.0, 200.0)] if f >= 3 else []  # IoU 0.33 with A's box
        c = [Box(450.0, 100.0, 100.0, 200.0)] if f >= 6 else []
        return a + b + c

    plan = plan_boxes(video, None, range(12), detector=detector)
    assert {tb.track_id for tb in plan[2]} == {0}
    assert {tb.track_id for tb in plan[6]} == {0, 1, 2}
    assert {tb.track_id for tb in plan[11]} == {1, 2}


def test_a_person_born_on_a_stray_hit_keeps_an_id_of_their_own() -> None:
    """A stray hit on frames 1-2 (2 boxes) and a walker found from frame 2 on, on the same spot: the walker is
    not handed the stray's id, which would carry the stray's frame-1 box past the flicker filter."""
    video = Video("walk", 10, width=640, height=480)

    def walker(f: int) -> Box:
        return Box(100.0 + 4 * f, 100.0, 100.0, 200.0)

    stray = Box(110.0, 120.0, 90.0, 150.0)  # IoU 0.57 with walker(2), 0.53 with walker(3)

    plan = plan_boxes(video, None, range(10), detector=lambda f: ([stray] if f in (1, 2) else []) + (
        [walker(f)] if f >= 2 else []))
    ids = {tb.box: tb.track_id for f in range(10) for tb in plan[f]}
    assert len({ids[walker(f)] for f in range(2, 10)}) == 1 and ids[walker(2)] != ids[stray]


def test_a_person_lost_while_the_camera_speeds_up_keeps_one_id() -> None:
    """The camera pans 2 px per frame, then 20: B, missed on frames 5-7, is found again 72 px beyond where
    B's own velocity puts B (B's box is 70 px wide). A, seen throughout, shows the camera's motion; C, new on
    frame 9, is no one lost."""
    video = Video("pan", 14, width=1200, height=480)

    def pan(f: int) -> float:
        return 2.0 * f if f <= 4 else 8.0 + 20.0 * (f - 4)

    def person(name: str, f: int) -> Box:
        x, y, w, h = {"A": (100, 100, 80, 200), "B": (300, 120, 70, 180), "C": (20, 280, 60, 150)}[name]
        return Box(x + pan(f), y, w, h)

    def detector(f: int) -> list[Box]:
        names = ["A"] + (["B"] if f not in (5, 6, 7) else []) + (["C"] if f >= 9 else [])
        return [person(n, f) for n in names]

    plan = plan_boxes(video, None, range(14), detector=detector)
    ids: dict[str, set[int]] = defaultdict(set)
    for f in range(14):
        for tb in plan[f]:
            (name,) = [n for n in "ABC" if tb.box.iou(person(n, f)) > 0.99]
            ids[name].add(tb.track_id)
            if name == "B" and f in (5, 6, 7):  # the gap is filled on B's path (the pan is steady there)
                assert tb.source == "interpolated"
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len(ids["A"] | ids["B"] | ids["C"]) == 3
    assert sum(len(plan[f]) for f in range(14)) == 14 + 14 + 5


def test_people_keep_their_ids_while_the_camera_pans_faster_than_their_velocity() -> None:
    """The camera pans 2 px per frame, then 40: B's box (70 px wide) lies 38 px past its velocity's guess, under
    the IoU to continue its track, and a new track's guess, with no velocity yet, lies 40 px behind. A's wider
    box still matches; how far A lies from its guess moves everyone's guess."""
    video = Video("pan", 12, width=2000, height=480)

    def pan(f: int) -> float:
        return 2.0 * f if f <= 4 else 8.0 + 40.0 * (f - 4)

    def detector(f: int) -> list[Box]:
        return [Box(100 + pan(f), 100, 80, 200), Box(300 + pan(f), 120, 70, 180)]

    plan = plan_boxes(video, None, range(12), detector=detector)
    ids = {(round(tb.box.x - pan(f)), tb.track_id) for f in range(12) for tb in plan[f]}
    assert ids == {(100, 0), (300, 1)}

def test_people_followed_inside_a_track_are_interpolated_and_followed_past_its_last_detection() -> None:
    video = Video("walk", 14, width=640, height=480)

    def walker(f: int) -> Box:
        return Box(50.0 + 20 * f, 100.0, 80.0, 200.0)

    def pose(f: int, boxes: list[Box]) -> list[tuple[np.ndarray, np.ndarray]]:
        # the pass finds the walker 6 px low: a followed box drifts where a detection would not
        kps = np.zeros((17, 3))
        b = walker(f)
        kps[:, 0] = b.x + b.w * np.linspace(0.1, 0.9, 17)
        kps[:, 1] = b.y + 6.0 + b.h * np.linspace(0.05, 0.95, 17)
        kps[:, 2] = 2.0
        return [(kps.copy(), np.full(17, 0.9)) for _ in boxes]

    missed = {5, 6, 11, 12, 13}
    follower = Follower(lambda f: [] if f in missed else [walker(f)], pose, redetect_every=1, min_confidence=0.3,
                        frame_size=(640, 480))
    plan = plan_boxes(video, None, range(14), detector=follower)
    assert {f for f, _ in follower.unseen} == missed
    assert len({tb.track_id for f in range(14) for tb in plan[f]}) == 1
    for f in range(14):
        (tb,) = plan[f]
        if f in (5, 6):  # between two detections: interpolated, exactly on the walker
            assert tb.source == "interpolated"
            np.testing.assert_allclose(tb.box.xyxy, walker(f).xyxy, atol=1e-6)
        else:  # detected, or followed past the last detection
            assert tb.source == "detected" and tb.box.iou(walker(f)) > 0.8, f


def _walker_pose(box: Box, sure: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    kps = np.zeros((17, 3))
    kps[:, 0] = box.x + box.w * np.linspace(0.1, 0.9, 17)
    kps[:, 1] = box.y + box.h * np.linspace(0.05, 0.95, 17)
    kps[:, 2] = 2.0
    return kps, np.full(17, sure)


def _late_follower(people: dict[str, Callable[[int], Box]], found_from: dict[str, int], *,
                   every: int = 1) -> Follower:  # fmt: skip
    """People the detector finds from `found_from[name]` on; the pose pass finds whoever a box overlaps
    most (IoU > 0.3, sure), nobody elsewhere."""

    def detect(f: int) -> list[Box]:
        return [walk(f) for name, walk in people.items() if f >= found_from[name]]

    return Follower(detect, _overlap_pose(people), redetect_every=every, min_confidence=0.3, frame_size=(640, 480))


def _overlap_pose(
    people: dict[str, Callable[[int], Box]],
) -> Callable[[int, list[Box]], list[tuple[np.ndarray, np.ndarray]]]:
    """A pose pass that finds, in each box, whoever it overlaps most (IoU > 0.3, sure), nobody elsewhere."""

    def pose(f: int, boxes: list[Box]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for b in boxes:
            iou, who = max((b.iou(walk(f)), name) for name, walk in people.items())
            out.append(_walker_pose(people[who](f)) if iou > 0.3 else _walker_pose(b, 0.05))
        return out

    return pose


@pytest.mark.parametrize("every", [1, 4])
def test_a_person_the_detector_finds_late_is_followed_back_to_the_first_frames(every: int) -> None:
    """The detector misses a walker on the first 3 frames (half hidden, blurred): the track is followed back
    from its first detection, under its id; a person who walks in is followed back only while in the frame."""
    video = Video("late", 12, width=640, height=480)
    people = {"A": lambda f: Box(50.0 + 20 * f, 100.0, 80.0, 200.0),
              "B": lambda f: Box(-60.0 + 15 * f, 250.0, 60.0, 150.0)}  # enters from the left edge
    follower = _late_follower(people, {"A": 3, "B": 4}, every=every)
    plan = plan_boxes(video, None, range(12), detector=follower)
    ids: dict[str, set[int]] = defaultdict(set)
    for f in range(12):
        for tb in plan[f]:
            (name,) = [n for n, walk in people.items() if tb.box.iou(walk(f).clip(640, 480)) > 0.5]
            ids[name].add(tb.track_id)
    assert all(len(v) == 1 for v in ids.values()) and len(ids) == 2
    on = {name: sorted(f for f in range(12) for tb in plan[f] if tb.track_id in ids[name]) for name in people}
    assert on["A"] == list(range(12))
    assert on["B"][0] in (1, 2) and on["B"] == list(range(on["B"][0], 12))  # frame 0 holds under a quarter of B
    assert {(0, tb.box) for tb in plan[0]} <= follower.unseen


def test_a_track_is_not_followed_back_onto_a_person_already_there_or_from_a_stray_hit() -> None:
    """B walks out from behind A on frame 4: followed back onto frame 3, B's box lands on A, so it is not
    added; C, found on 2 frames only, is not followed back either."""
    video = Video("behind", 10, width=640, height=480)
    people = {"A": lambda f: Box(200.0, 100.0, 80.0, 200.0),
              "B": lambda f: Box(230.0 + 20 * (f - 4), 100.0, 80.0, 200.0),
              "C": lambda f: Box(450.0, 100.0, 60.0, 150.0)}
    detections = {"A": range(10), "B": range(4, 10), "C": (6, 7)}

    def pose(f: int, boxes: list[Box]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for b in boxes:  # before frame 4, B is hidden: the pass in B's box finds A
            iou, who = max((b.iou(walk(f)), name) for name, walk in people.items() if name != "B" or f >= 4)
            out.append(_walker_pose(people[who](f)) if iou > 0.3 else _walker_pose(b, 0.05))
        return out

    follower = Follower(lambda f: [people[n](f) for n, frames in detections.items() if f in frames], pose,
                        redetect_every=1, min_confidence=0.3, frame_size=(640, 480))
    plan = plan_boxes(video, None, range(10), detector=follower)
    assert [len(plan[f]) for f in range(10)] == [1, 1, 1, 1, 2, 2, 3, 3, 2, 2]
    assert not follower.unseen


def test_follow_back_goes_to_an_adjacent_frame_only() -> None:
    follower = _late_follower({"A": lambda f: Box(50.0, 100.0, 80.0, 200.0)}, {"A": 0})
    assert follower.follow_back(3, Box(50.0, 100.0, 80.0, 200.0), 2, []) is not None
    assert follower.follow_back(3, Box(50.0, 100.0, 80.0, 200.0), 2, [Box(55.0, 100.0, 80.0, 200.0)]) is None
    wide = Box(20.0, 90.0, 250.0, 230.0)  # a poor hit around the walker and a neighbour: IoU 0.28, but it holds him
    assert wide.iou(Box(50.0, 100.0, 80.0, 200.0)) < 0.3
    assert follower.follow_back(3, Box(50.0, 100.0, 80.0, 200.0), 2, [wide]) is None
    with pytest.raises(ValueError, match="adjacent"):
        follower.follow_back(3, Box(50.0, 100.0, 80.0, 200.0), 1, [])


def test_an_earlier_prediction_of_the_frame_beside_seeds_the_track_ids() -> None:
    """Label Studio asks for one frame at a time: the people predicted on the frame before (or after, when
    only that one was) keep their ids on this one; a newcomer gets an id above theirs. Before, each request
    numbered its detections 0, 1, ... in the detector's order."""
    video = Video("one-at-a-time", 10, width=640, height=480)

    def walker(name: str, f: int) -> Box:
        return Box({"A": 100.0, "B": 300.0, "C": 500.0}[name] + 4 * f, 100.0, 80.0, 200.0)

    def predicted(f: int, ids: dict[str, int]) -> Frame:
        return Frame(f, [Person(np.zeros((17, 3)), track_id=t, box=walker(n, f), scores=np.full(17, 0.9))
                         for n, t in ids.items()])  # fmt: skip

    detector = lambda f: [walker("B", f), walker("A", f), walker("C", f)]  # noqa: E731  the detector's order
    for side in (3, 5):
        known = Video("one-at-a-time", 10, [predicted(side, {"A": 7, "B": 3})], width=640, height=480)
        plan = plan_boxes(video, known, [4], detector=detector)
        ids = {n: tb.track_id for tb in plan[4] for n in "ABC" if tb.box.iou(walker(n, 4)) > 0.9}
        assert ids == {"A": 7, "B": 3, "C": 8}, (side, ids)
    # a person the prediction of the frame before missed is looked for where an earlier one had them
    earlier = Video("one-at-a-time", 10, [predicted(0, {"A": 7}), predicted(3, {"B": 3})], width=640, height=480)
    ids = {n: tb.track_id for tb in plan_boxes(video, earlier, [4], detector=detector)[4]
           for n in "ABC" if tb.box.iou(walker(n, 4)) > 0.9}  # fmt: skip
    assert ids == {"A": 7, "B": 3, "C": 8}, ids
    long = Video("one-at-a-time", 30, width=640, height=480)  # ... within MAX_LOST frames
    far = Video("one-at-a-time", 30, [predicted(3, {"A": 7, "B": 3})], width=640, height=480)
    assert sorted(tb.track_id for tb in plan_boxes(long, far, [14], detector=detector)[14]) == [8, 9, 10]
    # ids earlier calls gave in this video, though not in `known`, are not given again
    assert sorted(tb.track_id for tb in plan_boxes(video, None, [4], detector=detector, first_id=12)[4]) == [12, 13, 14]
    assert sorted(tb.track_id for tb in plan_boxes(long, far, [14], detector=detector, first_id=5)[14]) == [8, 9, 10]
    with pytest.raises(ValueError, match="first_id"):
        plan_boxes(video, None, [4], detector=detector, first_id=-1)


@pytest.mark.parametrize(("seen", "unseen", "followed"), [(3, 0, True), (7, 14, True), (2, 0, False), (3, 15, False)])
def test_a_person_an_earlier_request_found_is_followed_onto_a_frame_the_detector_misses_them(
        seen: int, unseen: int, followed: bool) -> None:  # fmt: skip
    """One task at a time: A, predicted on frame 3 with the Follower's counts, is missed by the detector on frame
    4. A is followed there under the rule of a whole run (found on 3 frames in a row, followed at most 15)."""
    video = Video("one-at-a-time", 10, width=640, height=480)
    people = {"A": lambda f: Box(100.0 + 4 * f, 100.0, 80.0, 200.0), "B": lambda f: Box(300.0, 100.0, 80.0, 200.0)}
    follower = _late_follower(people, {"A": 99, "B": 0})  # the detector never finds A
    kps, scores = _walker_pose(people["A"](3))
    before = Person(kps, track_id=7, box=people["A"](3), scores=scores, extra={"seen": seen, "unseen": unseen})
    known = Video("one-at-a-time", 10, [Frame(3, [before])], width=640, height=480)
    plan = plan_boxes(video, known, [4], detector=follower)
    ids = {tb.track_id for tb in plan[4] if tb.box.iou(people["A"](4)) > 0.8}
    assert ids == ({7} if followed else set())
    (b,) = [tb for tb in plan[4] if tb.box.iou(people["B"](4)) > 0.9]
    assert follower.counts[(4, b.box)] == (1, 0)
    if followed:
        (a,) = [tb for tb in plan[4] if tb.track_id == 7]
        assert follower.counts[(4, a.box)] == (seen, unseen + 1) and (4, a.box) in follower.unseen


def test_a_person_the_detector_finds_now_and_then_is_followed_on_past_the_last_detection() -> None:
    """A walks on to the end of the clip, but the detector finds A only now and then, never on 3 frames in a
    row (so the Follower does not follow A): A's track is filled between its detections and followed on
    from the last one to the end, under one id. B, found on 2 frames only, is not followed on; C, found on
    frames 0, 2 and 4, walks out of the frame's right edge and is followed on only while the frame holds
    them."""
    video = Video("sparse", 14, width=640, height=480)
    people = {"A": lambda f: Box(40.0 + 15 * f, 100.0, 80.0, 200.0),
              "B": lambda f: Box(300.0, 260.0, 60.0, 150.0),
              "C": lambda f: Box(430.0 + 30 * f, 20.0, 60.0, 150.0)}  # half out on frame 6, out on 7
    detections = {"A": (0, 2, 5, 7), "B": (1, 3), "C": (0, 2, 4)}
    follower = Follower(lambda f: [people[n](f) for n, frames in detections.items() if f in frames],
                        _overlap_pose(people),
                        redetect_every=1, min_confidence=0.3, frame_size=(640, 480))
    plan = plan_boxes(video, None, range(14), detector=follower)
    on: dict[str, list[int]] = defaultdict(list)
    ids: dict[str, set[int]] = defaultdict(set)
    for f in range(14):
        for tb in plan[f]:
            (name,) = [n for n, walk in people.items() if tb.box.iou(walk(f).clip(640, 480)) > 0.5]
            on[name].append(f)
            ids[name].add(tb.track_id)
    assert on["A"] == list(range(14)) and len(ids["A"]) == 1
    followed = [(f, tb.box) for f in range(8, 14) for tb in plan[f] if tb.track_id in ids["A"]]
    assert all(fb in follower.unseen for fb in followed)
    assert on["B"] == [1, 3]  # 2 detections: neither filled between them nor followed on
    assert on["C"] == list(range(on["C"][-1] + 1)) and on["C"][-1] in (5, 6)  # out of the frame from frame 7
