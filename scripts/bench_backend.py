"""Latency of the ML backend on a real HTTP server: p50/p95 of /health, /setup, /webhook and /predict.

The service runs in this process on 127.0.0.1 (werkzeug, threaded, like `python -m backend`) over a
fresh database: SQLite in a temporary folder, or a temporary PostgreSQL database created on
--postgres (and dropped afterwards). Tasks are the frames of a synthetic video written to a
temporary folder. Webhooks are ANNOTATION_CREATED events, each with the full result of a
prediction (boxes, 15 keypoints per person, track ids), as Label Studio sends them on submit.

Predictors: "simulated" (default; a real `model.pipeline.predictor.Predictor` over
`model.testing.simulated.SimulatedBackbone`, so the figures are the service's own cost) or "blazepose"
(the default serving model: mediapipe on the CPU).

    python -m scripts.bench_backend [--requests 200] [--backbone simulated|blazepose]
                                    [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import requests

from backend.logs import configure_logging


def percentiles(samples: Sequence[float]) -> tuple[float, float, float]:
    """(p50, p95, max) in milliseconds."""
    ms = np.asarray(samples) * 1000.0
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(ms.max())


def timed(fn: Callable[[], requests.Response], expect: int) -> float:
    start = time.perf_counter()
    resp = fn()
    elapsed = time.perf_counter() - start
    if resp.status_code != expect:
        raise RuntimeError(f"{resp.request.method} {resp.url}: {resp.status_code} {resp.text[:300]}")
    return elapsed


def temporary_postgres(stack: ExitStack, admin_url: str) -> str:
    """A fresh database on the server of `admin_url` (dropped when `stack` closes)."""
    import psycopg
    from sqlalchemy import make_url

    admin = psycopg.connect(make_url(admin_url).set(drivername="postgresql").render_as_string(False),
                            autocommit=True)  # fmt: skip
    name = f"dcpose_bench_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    stack.callback(drop)
    return make_url(admin_url).set(drivername="postgresql+psycopg", database=name).render_as_string(False)


def predictor_factory(kind: str, gt: Any, frames: list[np.ndarray]) -> Any:
    if kind == "blazepose":
        return None  # the service's default: Predictor.create("blazepose")
    from model.pipeline.predictor import Predictor
    from model.testing.simulated import SimulatedBackbone

    boxes = {f.index: [p.box for p in f.persons] for f in gt.frames}

    def detector(image: np.ndarray) -> list:
        for index, pixels in enumerate(frames):
            if pixels.shape == image.shape and np.array_equal(pixels, image):
                return list(boxes.get(index, []))
        return []

    return lambda spec: Predictor(SimulatedBackbone(gt, seed=0), None, detector=detector)


def run(args: argparse.Namespace) -> dict[str, tuple[float, float, float]]:
    import cv2
    from werkzeug.serving import make_server

    from annotation_io.label_studio import label_config, task_data
    from annotation_io.posetrack import load
    from annotation_io.synth import generate
    from backend.app import create_app
    from backend.settings import Settings

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-backend-")))
        (path,) = generate(
            tmp / "video", videos=1, frames=args.frames, people=args.people, seed=1, size=args.size
        )
        gt = load(path)
        paths = [tmp / "video" / "images" / gt.name / f"{t:06d}.jpg" for t in range(gt.num_frames)]
        frames = [cv2.imread(str(p)) for p in paths]
        db_url = temporary_postgres(stack, args.postgres) if args.postgres else ""
        settings = Settings(data_dir=tmp / "data", database_url=db_url, frame_cache_dir=tmp / "frames",
                            media_roots=(tmp,))  # the task images are files of the temporary folder
        app = create_app(settings, predictor_factory=predictor_factory(args.backbone, gt, frames))
        stack.callback(app.extensions["dcpose"].close)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        stack.callback(server.shutdown)
        url, http, config = f"http://127.0.0.1:{server.port}", requests.Session(), label_config()
        tasks = [{"id": 1000 + t, "data": task_data(str(p), gt.name, t, gt.num_frames), "project": 1,
                  "annotations": [], "predictions": []} for t, p in enumerate(paths)]  # fmt: skip

        def predict(task: dict) -> requests.Response:
            body = {
                "project": "1.1700000000",
                "label_config": config,
                "tasks": [task],
                "params": {"context": None},
            }
            return http.post(f"{url}/predict", json=body, timeout=120)

        runner = app.extensions["dcpose"].runner
        out: dict[str, list[float]] = {"GET /health": [], "POST /setup": [], "POST /predict (1 task)": [],
                                       "POST /webhook (idle)": [], "POST /webhook (burst)": []}  # fmt: skip
        results = [predict(t).json()["results"][0]["result"] for t in tasks]  # warm-up; served predictions
        # No Label Studio host: with one, each webhook would first try to sync the project from it.
        setup = {"project": "1.1700000000", "schema": config}
        for _ in range(args.requests):
            out["GET /health"].append(timed(lambda: http.get(f"{url}/health", timeout=10), 200))
            out["POST /setup"].append(timed(lambda: http.post(f"{url}/setup", json=setup, timeout=10), 200))
        for i in range(args.predict_requests):
            out["POST /predict (1 task)"].append(timed(lambda i=i: predict(tasks[i % len(tasks)]), 200))

        def webhook(i: int) -> float:
            t = i % len(tasks)
            stamp = f"2026-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
            annotation = {"id": 5000 + i, "result": results[t], "was_cancelled": False, "ground_truth": False,
                          "created_at": "2026-01-01T00:00:00Z", "updated_at": stamp, "lead_time": 3.0,
                          "task": tasks[t]["id"], "project": 1, "completed_by": 1}  # fmt: skip
            payload = {"action": "ANNOTATION_CREATED", "annotation": annotation,
                       "task": {k: tasks[t][k] for k in ("id", "data", "project")},
                       "project": {"id": 1, "title": "bench", "label_config": config, "token": "secret"}}  # fmt: skip
            return timed(lambda: http.post(f"{url}/webhook", json=payload, timeout=10), 201)

        # Idle: one submit at a time (annotators' pace); burst: back to back, while the worker
        # processes the earlier ones (on SQLite both wait for the one writer lock).
        for i in range(args.requests):
            out["POST /webhook (idle)"].append(webhook(i))
            if not runner.drain(60):
                raise RuntimeError("webhook processing did not finish")
        start = time.perf_counter()
        for i in range(args.requests, 2 * args.requests):
            out["POST /webhook (burst)"].append(webhook(i))
        if not runner.drain(600):
            raise RuntimeError("webhook processing did not finish")
        processed = time.perf_counter() - start
        metrics = http.get(f"{url}/metrics", timeout=10).json()
        print(f"database: {'PostgreSQL' if args.postgres else 'SQLite'}; predictor: {args.backbone}; "
              f"video {args.size[0]}x{args.size[1]}, {args.people} people; "
              f"{metrics['annotations_received']} annotations processed; burst of {args.requests} done "
              f"{processed:.2f} s after its first webhook ({processed / args.requests * 1000:.1f} ms per event)")  # fmt: skip
        return {name: percentiles(samples) for name, samples in out.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per cheap endpoint and webhooks")
    parser.add_argument("--predict-requests", type=int, default=50, help="/predict requests")
    parser.add_argument("--backbone", choices=("simulated", "blazepose"), default="simulated")
    parser.add_argument("--postgres", default=None, help="admin URL of a PostgreSQL server (default: SQLite)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--people", type=int, default=2)
    parser.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")), default=(640, 360),
                        help="frame size WxH (default 640x360)")  # fmt: skip
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    rows = run(args)
    print(f"{'endpoint':<24}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}  n")
    for name, (p50, p95, worst) in rows.items():
        n = args.predict_requests if "predict" in name else args.requests
        print(f"{name:<24}{p50:>10.1f}{p95:>10.1f}{worst:>10.1f}  {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
