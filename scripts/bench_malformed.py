"""Malformed-request count: N distinct hostile requests to a real server, answers counted by status (5xx must be 0).

The server is `python -m backend serve` on 127.0.0.1 from each --code tree (side by side in one run,
e.g. this branch and an export of main), over a fresh SQLite file or PostgreSQL database. Requests
are the issue-11 catalogue (deep nesting, NaN/Infinity, ids beyond 64 bits or PostgreSQL's INTEGER,
Unicode digits, coordinates outside the image, system files as images) plus valid Label Studio
bodies with one field replaced by a hostile value, drawn with a fixed seed so every tree gets the
same requests. Frame counts are never mutated: `data.nframes = 2**40` exhausts memory on main.

    python -m scripts.bench_malformed [--requests 400] [--postgres URL] [--code . --code /tmp/main-export]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests

from scripts.bench_backend import temporary_postgres
from scripts.bench_load import Server

HOSTILE: list[Any] = [None, True, 0, -1, 2**31, 2**63, 2**64, -(2**63) - 1, 10**30, 1.5, "²", "٣", "1²", "", "x",
                      [], {}, [[[]]], "file:///etc/passwd", "/etc/passwd", -50.0, 250.0, 1e12,
                      "0001-01-01T00:00:00+01:00"]  # fmt: skip
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999"]


def bodies(config: str) -> dict[str, dict[str, Any]]:
    """A valid body per POST route (task images point nowhere: no model work is done)."""
    data = {"image": "/data/upload/1/none.jpg", "video_id": "v", "frame_index": 0, "nframes": 3}
    region = {"id": "b0", "from_name": "person", "to_name": "image", "type": "rectanglelabels",
              "original_width": 160, "original_height": 120,
              "value": {"x": 10, "y": 10, "width": 20, "height": 40, "rectanglelabels": ["person"]}}  # fmt: skip
    keypoint = {"id": "k0", "parentID": "b0", "from_name": "kp", "to_name": "image", "type": "keypointlabels",
                "original_width": 160, "original_height": 120,
                "value": {"x": 15, "y": 15, "width": 0.5, "keypointlabels": ["nose"]}}  # fmt: skip
    annotation = {"id": 21, "result": [region, keypoint], "updated_at": "2026-03-01T10:00:00Z", "task": 7,
                  "project": 1, "completed_by": 1, "was_cancelled": False}  # fmt: skip
    return {
        "/setup": {"project": "1.1700000000", "schema": config},
        "/predict": {"project": "1.1700000000", "label_config": config, "tasks": [{"id": 7, "data": data}]},
        "/webhook": {"action": "ANNOTATION_CREATED", "annotation": annotation, "task": {"id": 7, "data": data},
                     "project": {"id": 1, "label_config": config}},  # fmt: skip
        "/train": {"project": 1, "config": {"epochs": 1}},
        "/preannotate": {"project": 1, "tasks": [7]},
    }


def leaves(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    out: list[tuple[Any, ...]] = []
    for key, child in items:
        if key in ("nframes", "frame_index"):
            continue
        out.append((*prefix, key))
        out.extend(leaves(child, (*prefix, key)))
    return out


def requests_to_send(config: str, count: int, seed: int = 11) -> list[tuple[str, str, str]]:
    """(method, path, body text) of `count` distinct malformed requests."""
    rng, valid = random.Random(seed), bodies(config)
    out: dict[tuple[str, str, str], None] = {}
    for route in valid:
        for depth in (40, 100_000):
            out[("POST", route, '{"project": 1, "x": ' + "[" * depth + "]" * depth + "}")] = None
    text = json.dumps(valid["/webhook"])
    for constant in NON_FINITE:
        out[("POST", "/webhook", text.replace('"width": 0.5', f'"width": {constant}'))] = None
    for query in ("/metrics?project=", "/jobs?project=", "/jobs?limit=", "/versions?project="):
        for value in (str(2**31), str(2**63), str(2**64), "²", "-1"):
            out[("GET", query + value, "")] = None
    routes = list(valid)
    while len(out) < count:
        route = rng.choice(routes)
        body = json.loads(json.dumps(valid[route]))
        path = rng.choice(leaves(body))
        holder = body
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = rng.choice(HOSTILE)
        out[("POST", route, json.dumps(body))] = None
    return list(out)[:count]


def main(argv: Sequence[str] | None = None) -> int:
    from annotation_io.label_studio import label_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--postgres", default=None, help="admin URL of a PostgreSQL server (default: SQLite)")
    parser.add_argument("--code", type=Path, action="append", help="code trees to compare (default: this one)")
    parser.add_argument("--port", type=int, default=9491)
    args = parser.parse_args(argv)
    todo = requests_to_send(label_config(), args.requests)
    for n, code in enumerate(args.code or [Path(".")]):
        with ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-malformed-")))
            db_url = temporary_postgres(stack, args.postgres) if args.postgres else f"sqlite:///{tmp}/b.db"
            env = {**os.environ, "DATA_DIR": str(tmp / "data"), "DATABASE_URL": db_url, "LOG_LEVEL": "ERROR",
                   "TRAIN_MIN_CORRECTIONS": str(10**9), "PYTHONPATH": str(code.resolve())}  # fmt: skip
            server = Server(code.resolve(), env, args.port + n)
            server.start()
            stack.callback(server.stop)
            by_status: Counter[str] = Counter()
            fives: Counter[str] = Counter()
            for method, path, body in todo:
                resp = requests.request(method, server.url + path, data=body or None, timeout=60,
                                        headers={"Content-Type": "application/json"})  # fmt: skip
                by_status[str(resp.status_code)] += 1
                if resp.status_code >= 500:
                    fives[path.split("?")[0]] += 1
            print(f"== {code} on {'PostgreSQL' if args.postgres else 'SQLite'}: {len(todo)} distinct malformed "
                  f"requests; by status {dict(sorted(by_status.items()))}; 5xx by route {dict(fives)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
