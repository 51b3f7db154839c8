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
    assert drop_flicker({f: persons[f] for f in range(3, 6)}) == {f: persons[f] for f in range(3, 6)}


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
