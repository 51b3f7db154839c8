"""Tests of model.pipeline.track_filters: short false tracks are dropped, real ones kept."""

from __future__ import annotations

import numpy as np

from annotation_io.types import Box, Person
from model.pipeline.track_filters import drop_flicker


def test_flickering_low_score_detections_are_dropped() -> None:
    def person(tid: int, score: float, source: str = "detected") -> Person:
        return Person(track_id=tid, box=Box(0, 0, 10, 10), score=score, extra={"box_source": source})

    persons = {f: [person(0, 0.8)] for f in range(8)}
    persons[3].append(person(1, 0.1))  # one frame, low score: a false detection
    persons[4].append(person(2, 0.9))  # one frame, confident, but on track 0's box: a duplicate
    persons[5].append(person(3, 0.1, "human"))  # a label's track is never dropped
    persons[6].append(Person(track_id=4, box=Box(100, 0, 10, 10), score=0.9, extra={"box_source": "detected"}))
    persons[7].append(Person(track_id=5, box=Box(2, 2, 5, 5), score=0.9, extra={"box_source": "detected"}))
    kept = drop_flicker(persons)
    # Track 4 is elsewhere (kept); track 5 sits on the lasting track 0 (a duplicate: dropped).
    assert [sorted(p.track_id for p in kept[f]) for f in (3, 4, 5, 6, 7)] == [[0], [0], [0, 3], [0, 4], [0]]
    # On 3 frames tracks are not judged: only a box lying on a surer one's goes (track 1, 0.1 on 0.8).
    short = drop_flicker({f: persons[f] for f in range(3, 6)})
    assert [sorted(p.track_id for p in short[f]) for f in (3, 4, 5)] == [[0], [0, 2], [0, 3]]


def test_a_partial_hit_whose_box_sticks_out_is_judged_by_its_joints() -> None:
    lasting = [Person(track_id=0, box=Box(0, 0, 60, 150), score=0.9, extra={"box_source": "detected"})]
    persons = {f: list(lasting) for f in range(8)}
    # A one-frame hit: its joints lie on track 0's lower body, its box reaches far to the right (a hand,
    # a foot, a stray landmark), so that box lies mostly outside track 0's box.
    kps = np.zeros((17, 3))
    kps[5:, :2] = np.column_stack([np.linspace(10, 50, 12), np.linspace(80, 140, 12)])
    kps[5:, 2] = 1
    hit = Person(track_id=1, box=Box(10, 70, 120, 80), keypoints=kps, score=0.9, extra={"box_source": "detected"})
    persons[4] = [*lasting, hit]
    assert [p.track_id for p in drop_flicker(persons)[4]] == [0]
    # The same hit elsewhere is a person of its own.
    away = hit.copy()
    away.keypoints[:, 0] += 300
    away.box = Box(310, 70, 120, 80)
    persons[4] = [*lasting, away]
    assert [p.track_id for p in drop_flicker(persons)[4]] == [0, 1]


def _tracks(rider: dict[int, Box], rider_source: str = "detected", frames: int = 12) -> dict[int, list[Person]]:
    """A walker detected on every frame (track 0) and a second track on the frames and boxes of `rider`
    (confident, so only where it lies can drop it; its middle frame gap-filled)."""
    persons = {f: [Person(track_id=0, box=Box(100 + 3 * f, 40, 60, 160), score=0.9, extra={"box_source": "detected"})]
               for f in range(frames)}
    middle = sorted(rider)[len(rider) // 2]
    for f, box in rider.items():
        source = "interpolated" if f == middle and rider_source == "detected" else rider_source
        persons[f].append(Person(track_id=1, box=box, score=0.9, extra={"box_source": source}))
    return persons


def test_a_second_hit_lasting_a_few_frames_on_a_tracked_person_is_dropped() -> None:
    # The upper half of the walker, boxed as a person of its own on frames 3-7 (seen on synthetic walks).
    upper = {f: Box(105 + 3 * f, 45, 45, 80) for f in range(3, 8)}
    assert all(1 not in {p.track_id for p in people} for people in drop_flicker(_tracks(upper)).values())
    # Kept: the same track once beside the walker (a person crossing them), one labelled by a human, and
    # one lying on the walker on every frame of the clip (someone in front of them throughout).
    crossing = {**upper, 7: Box(300, 45, 45, 80)}
    whole_clip = {f: Box(105 + 3 * f, 45, 45, 80) for f in range(12)}
    for rider, source in ((crossing, "detected"), (upper, "human"), (whole_clip, "detected")):
        persons = _tracks(rider, source)
        assert drop_flicker(persons) == persons


def _posed(track_id: int, box: Box, head: tuple[float, float], score: float = 0.9) -> Person:
    """A detected person in `box` scoring `score`, whose 17 joints hang from `head` in a column 120 px tall."""
    kps = np.zeros((17, 3))
    kps[:, 0] = head[0] + np.tile([-8.0, 8.0], 9)[:17]
    kps[:, 1] = head[1] + np.linspace(0, 120, 17)
    kps[:, 2] = 1
    return Person(keypoints=kps, scores=np.full(17, 0.9), track_id=track_id, box=box, score=score,
                  extra={"box_source": "detected"})


def test_a_person_behind_another_is_kept_where_a_second_hit_on_them_goes() -> None:
    # Track 0 stands in front on all 12 frames; track 1 is found on frames 2-8 only, its box inside
    # track 0's on every one (a seated man behind a standing one: seen on a real CrowdPose still).
    front = {f: _posed(0, Box(100, 40, 80, 170), (140, 50)) for f in range(12)}

    def run(rider_head: tuple[float, float], score: float = 0.45) -> set[int]:
        persons = {f: [front[f]] for f in range(12)}
        for f in range(2, 9):
            persons[f].append(_posed(1, Box(110, 50, 60, 150), rider_head, score))
        return {p.track_id for people in drop_flicker(persons).values() for p in people}

    # Its joints lie where track 0's are: a second hit on the same person, dropped.
    assert run((141, 52)) == {0}
    # Its head 25 px to the side and 30 px lower (0.24 x the smaller box diagonal apart): a person of
    # their own, kept.
    assert run((165, 80)) == {0, 1}
    # The same track scoring 0.25, under a third of track 0's 0.9 (faint hits on a skier's back and skis had
    # poses apart from his): dropped.
    assert run((165, 80), 0.25) == {0}


def test_a_person_behind_is_judged_by_a_share_of_the_front_person_s_score_at_any_length() -> None:
    """Person scores are on each backbone's scale (MoveNet scored a clear skier 0.35-0.40): a rider keeps its
    own pose when it scores half of the person in front or more, and a faint one goes however long it lasts."""

    def run(frames: range, score: float, front_score: float = 0.3) -> set[int]:
        persons = {f: [_posed(0, Box(100, 40, 80, 170), (140, 50), front_score)] for f in range(14)}
        for f in frames:
            persons[f].append(_posed(1, Box(110, 50, 60, 150), (165, 80), score))
        return {p.track_id for people in drop_flicker(persons).values() for p in people}

    assert run(range(2, 9), 0.2) == {0, 1}  # 0.67 x the front person's score: a person behind, kept
    assert run(range(2, 9), 0.1) == {0}  # 0.33 x: a faint hit, dropped
    assert run(range(1, 13), 0.1) == {0}  # on 12 of 14 frames (a box on a skier's arm, 11 of 40): dropped too
    assert run(range(1, 13), 0.2) == {0, 1}
    assert run(range(14), 0.1) == {0, 1}  # on every frame, as long as the track it lies on: not a rider


def test_a_detected_box_holding_no_pose_is_dropped_even_on_one_frame() -> None:
    def person(tid: int, joint_score: float, source: str = "detected") -> Person:
        return Person(track_id=tid, box=Box(40 * tid, 0, 30, 60), scores=np.full(17, joint_score), score=0.5,
                      extra={"box_source": source})  # fmt: skip

    # One frame (a Label Studio task): too few frames to judge tracks, but a box holding no pose is junk.
    frame = [person(0, 0.9), person(1, 0.08), person(2, 0.25), person(3, 0.08, "human"), person(4, 0.08, "interpolated")]
    assert [p.track_id for p in drop_flicker({0: frame})[0]] == [0, 2, 3, 4]
    lasting = {f: [person(0, 0.9), person(1, 0.05 if f == 3 else 0.9)] for f in range(8)}
    assert [len(people) for people in drop_flicker(lasting).values()] == [2, 2, 2, 1, 2, 2, 2, 2]
    # A detector track whose detections all hold nobody goes with the boxes that filled the gap between
    # them (two 0.01 boxes were left of such a track with MoveNet); a filled gap holding a pose stays, and so
    # do boxes interpolated between labels, whose person may be hidden.
    gap = {f: [person(0, 0.9)] for f in range(8)}
    for f in (2, 3, 4):
        gap[f].append(person(1, 0.05, "interpolated" if f == 3 else "detected"))
        gap[f].append(person(2, 0.9, "interpolated" if f == 3 else "detected"))
    for f in (5, 6):
        gap[f].append(person(3, 0.05, "interpolated"))
    gap[7].append(person(3, 0.9, "human"))
    assert [sorted(p.track_id for p in people) for people in drop_flicker(gap).values()] == [
        [0], [0], [0, 2], [0, 2], [0, 2], [0, 3], [0, 3], [0, 3]]


def test_on_a_one_frame_request_a_box_lying_on_a_surer_one_is_dropped() -> None:
    """Numbers of a real broadcast clip: a box on a footballer's shorts scored 0.31 against his 0.49; two
    players in one tackle scored 0.44 and 0.45."""
    def person(tid: int, box: Box, score: float, source: str = "detected") -> Person:
        return Person(track_id=tid, box=box, scores=np.full(17, 0.9), score=score, extra={"box_source": source})

    player = person(0, Box(354, 263, 215, 316), 0.49)
    shorts = person(3, Box(390, 369, 145, 146), 0.31)
    tackler, tackled = person(1, Box(610, 275, 198, 258), 0.45), person(2, Box(644, 271, 124, 208), 0.44)
    assert [p.track_id for p in drop_flicker({3: [player, shorts, tackler, tackled]})[3]] == [0, 1, 2]
    shorts.extra["box_source"] = "human"  # an annotator's box is never dropped
    assert [p.track_id for p in drop_flicker({3: [player, shorts]})[3]] == [0, 3]
    # On a request long enough to judge tracks, a box of its own on every frame stays (a child in front).
    lasting = {f: [player.copy(), person(3, Box(390, 369, 145, 146), 0.31)] for f in range(8)}
    assert all(len(people) == 2 for people in drop_flicker(lasting).values())
