"""backend.db.persons: persons <-> the JSON of the `persons` columns."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from annotation_io.errors import AnnotationFormatError
from annotation_io.types import Box
from backend.db.persons import persons_from_json, persons_to_json
from tests.backend.services.test_corrections import as_label, make_person


def test_persons_json_round_trip() -> None:
    p = make_person(10.25, 20.5, track=3, head=Box(1, 2, 3, 4))
    p.score = 0.75
    p.scores[2] = np.nan  # no confidence for one joint
    p.region_id = "box-1"
    p.extra = {"ls_keypoint_ids": np.array([1, 2]), "note": "é"}
    q = as_label(make_person(0, 0))
    data = persons_to_json([p, q])
    assert data[0]["scores"][2] is None  # JSON has no NaN
    back = persons_from_json(json.loads(json.dumps(data, allow_nan=False)))
    np.testing.assert_array_equal(back[0].keypoints, p.keypoints)
    np.testing.assert_array_equal(back[0].scores, p.scores)  # NaN back in its place
    assert math.isnan(back[0].scores[2])
    assert (back[0].track_id, back[0].score, back[0].region_id) == (3, 0.75, "box-1")
    assert back[0].box == p.box and back[0].head_box == p.head_box
    assert back[0].extra == {"ls_keypoint_ids": [1, 2], "note": "é"}
    assert back[1].scores is None and back[1].track_id is None and back[1].head_box is None


def test_persons_json_errors_name_the_field() -> None:
    good = persons_to_json([make_person(0, 0)])[0]
    with pytest.raises(AnnotationFormatError, match=r"persons\[1\]\.keypoints"):
        persons_from_json([good, {**good, "keypoints": [[0, 0, 2]] * 15}])
    with pytest.raises(AnnotationFormatError, match=r"persons\[0\]\.box"):
        persons_from_json([{**good, "box": [1, 2]}])
    with pytest.raises(AnnotationFormatError, match=r"persons\[0\]"):
        persons_from_json([["not", "a", "dict"]])  # type: ignore[list-item]
    # a value that is no number, an extra that is no object, no list: the callers pass over only this error
    for damage, where in (({"box": ["a", 0, 1, 1]}, r"persons\[0\]"), ({"track_id": [1]}, r"persons\[0\]"),
                          ({"score": "x"}, r"persons\[0\]"), ({"extra": [1]}, r"persons\[0\]\.extra")):  # fmt: skip
        with pytest.raises(AnnotationFormatError, match=where):
            persons_from_json([{**good, **damage}], source="prediction 7")
    with pytest.raises(AnnotationFormatError, match="persons must be a list, got int"):
        persons_from_json(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"persons\[0\]\.extra\.obj"):
        bad = make_person(0, 0)
        bad.extra = {"obj": object()}
        persons_to_json([bad])
