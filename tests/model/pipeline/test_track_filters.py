"""Tests of model.pipeline.track_filters: short false tracks are dropped, real ones kept."""

from __future__ import annotations

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
