"""One-frame slips of a followed person's joints, taken out by a median over the frames on either side.

A single-person model answers each frame on its own, and now and then one joint of one frame goes astray: a
wrist drawn to the other hand, an ankle to the other leg, a knee to a table's edge, then back in place on the
next frame. An annotator sees such a joint jump and has to drag it back. `temporal_median` replaces each
joint the model placed on frame t by the median of its positions on frames t - 1, t and t + 1 of the same
track, x and y each: where the joint moves one way over the three frames (a walk, a swing), the median is
its position on t, unchanged; where t's position lies beyond both neighbours, it is brought back to the
nearer one. A joint at the turn of a fast movement (a hand at the top of a jumping jack) loses at most its
last frame's step towards the turn.

Only what the model alone placed moves: the joints of a person whose `extra["source"]` is "model", and those
of a "model+propagated" person that its carried labels did not place (`extra["propagated"]` lists those);
human joints and carried ones stay, and so does a person holding human joints. The neighbours' joints,
whatever placed them, are read as they were before any change. A frame whose track has no person on both
adjacent frames (the ends of a track, a one-frame request from Label Studio) is kept.

Measured (docs/tracking.md, "One-frame slips are taken out"; MoveNet, no labels, limb joints within 0.1 x box
diagonal, the same predictions without and with it): the real stills as camera clips 2333 -> 2350 of 3058, the
held-out images so 3148 -> 3185 of 4303, four synthetic walks (1-3 walkers) 2870 -> 2942 of 3782, and 2964
with the neighbours taken three frames away (three times the motion).
"""

from __future__ import annotations

import numpy as np

from annotation_io.types import Person

__all__ = ["SMOOTHED_SOURCES", "temporal_median"]

SMOOTHED_SOURCES = ("model", "model+propagated")  # people whose model-placed joints move (not "human", "model+human")


def temporal_median(persons: dict[int, list[Person]]) -> dict[int, list[Person]]:
    """`persons` (frame -> people) with each model-placed joint of a tracked person at the median of its
    positions on the frame before, its own and the frame after (see the module doc); changed in place and
    returned. People without a track id are kept as they are."""
    tracks: dict[int, dict[int, Person]] = {}
    for t, people in persons.items():
        for person in people:
            if person.track_id is not None:
                tracks.setdefault(person.track_id, {})[t] = person
    moved: list[tuple[Person, np.ndarray, np.ndarray]] = []
    for frames in tracks.values():
        for t, person in frames.items():
            before, after = frames.get(t - 1), frames.get(t + 1)
            if before is None or after is None or person.extra.get("source") not in SMOOTHED_SOURCES:
                continue
            three = np.stack([before.keypoints, person.keypoints, after.keypoints])
            placed = (three[:, :, 2] > 0).all(axis=0)
            placed[person.extra.get("propagated", [])] = False
            if placed.any():
                moved.append((person, placed, np.median(three[:, :, :2], axis=0)))
    for person, placed, median in moved:  # after all medians: each read the joints as predicted
        person.keypoints[placed, :2] = median[placed]
    return persons
