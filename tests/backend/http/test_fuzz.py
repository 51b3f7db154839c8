"""Property-based fuzzing of every route's body and query (hypothesis, Flask test client, SQLite and PostgreSQL).

The property: no client input gets a 5xx, and every answer is JSON (images excepted). Bodies are
either random JSON (NaN and Infinity included, as Python's encoder writes them) or a valid Label
Studio request with one field, at any depth, replaced by a hostile value (huge or Unicode-digit ids,
non-finite numbers, wrong types, deep nesting). Examples are bounded so the default suite stays fast;
FUZZ_EXAMPLES=N runs N random examples per test instead.
"""

from __future__ import annotations

import json
import os
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.backend.conftest import SynthVideo
from tests.backend.services.test_events import CONFIG, event
from tests.backend.services.test_prediction import gt_results

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))  # a longer run (FUZZ_EXAMPLES set) explores at random
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="FUZZ_EXAMPLES" not in os.environ, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip

POST_ROUTES = ("/setup", "/predict", "/webhook", "/train", "/preannotate", "/versions", "/versions/x/promote")
GET_ROUTES = ("/", "/health", "/jobs", "/metrics", "/versions")
QUERY_NAMES = ("project", "limit", "kind", "state")
KEYS = ("project", "tasks", "id", "data", "action", "annotation", "annotations", "task", "result", "schema",
        "label_config", "config", "video_id", "force", "nframes", "frame_index", "image", "value", "x", "y")  # fmt: skip

HOSTILE_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**31, 2**31 - 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 0, -1, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["²", "٣", "1²", "3.1700000000", " 7 ", "", "NaN", "file:///etc/passwd", "/etc/passwd",
                     "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "<View/>"]),  # fmt: skip
)
JSON_VALUES = st.recursive(
    HOSTILE_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner,
                                                     max_size=4)  # fmt: skip
    ),
    max_leaves=12,
)


def encode(value: Any) -> str:
    """JSON text as Python writes it: NaN / Infinity appear as bare tokens, as a careless client sends them."""
    return json.dumps(value, allow_nan=True)


def valid_bodies(video: SynthVideo) -> dict[str, dict[str, Any]]:
    """A well-formed body per POST route, for mutation."""
    task = video.task(1)
    return {
        "/setup": {"project": "1.1700000000", "schema": CONFIG, "hostname": "http://127.0.0.1:9",
                   "access_token": "x"},  # fmt: skip
        "/predict": {"project": "1.1700000000", "label_config": CONFIG, "tasks": [task],
                     "params": {"context": None}},  # fmt: skip
        "/webhook": event("ANNOTATION_UPDATED", 21, task, gt_results(video, 1), "2026-03-01T10:00:00Z"),
        "/train": {"project": 1, "config": {"epochs": 1}},
        "/preannotate": {"project": 1, "video_id": video.name, "tasks": [101], "force": False},
        "/versions": {"project": 1},
        "/versions/x/promote": {},
    }


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place inside a JSON value (dict keys and list indices), the root excluded."""
    found: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found.append((*prefix, key))
        found.extend(paths(child, (*prefix, key)))
    return found


def mutate(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(body))
    holder = out
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    return out


def check(resp: Any, what: str) -> None:
    assert resp.status_code < 500, (what, resp.status_code, resp.get_data(as_text=True)[:500])
    if resp.mimetype == "text/html":  # the status page at /
        assert resp.get_data(as_text=True).lstrip().lower().startswith("<!doctype html"), what
    elif resp.mimetype != "image/png":
        assert isinstance(resp.get_json(silent=True), dict), (what, resp.get_data(as_text=True)[:200])


def test_random_json_bodies_never_get_5xx(app_client: FlaskClient) -> None:
    @FUZZ
    @given(route=st.sampled_from(POST_ROUTES), body=JSON_VALUES)
    def run(route: str, body: Any) -> None:
        text = encode(body)
        check(app_client.post(route, data=text, content_type="application/json"), f"{route} {text[:200]}")

    run()


def test_mutated_label_studio_requests_never_get_5xx(app_client: FlaskClient, synth_video: SynthVideo) -> None:
    bodies = valid_bodies(synth_video)
    places = {route: paths(body) for route, body in bodies.items()}

    @FUZZ
    @given(data=st.data(), route=st.sampled_from([r for r in POST_ROUTES if places[r]]), value=JSON_VALUES)
    def run(data: st.DataObject, route: str, value: Any) -> None:
        path = data.draw(st.sampled_from(places[route]), label="path")
        text = encode(mutate(bodies[route], path, value))
        check(app_client.post(route, data=text, content_type="application/json"), f"{route} {path} {text[:200]}")

    run()


def test_raw_bodies_and_queries_never_get_5xx(app_client: FlaskClient, backend_app: Flask) -> None:
    @FUZZ
    @given(route=st.sampled_from(POST_ROUTES), raw=st.binary(max_size=64),
           get=st.sampled_from(GET_ROUTES + ("/jobs/x", "/versions/x", "/versions/x/curve.png")),
           query=st.dictionaries(st.sampled_from(QUERY_NAMES), st.one_of(st.text(max_size=25), st.integers().map(str)),
                                 max_size=3))  # fmt: skip
    def run(route: str, raw: bytes, get: str, query: dict[str, str]) -> None:
        check(app_client.post(route, data=raw, content_type="application/json"), f"{route} {raw!r}")
        check(app_client.get(get, query_string=query), f"{get} {query}")

    run()
