"""Training fault benchmark: the server's RSS around a training job, and kill -9 mid-training under a webhook burst.

Sibling of `scripts/bench_load.py` (whose server, load clients and checks it reuses). Per code tree
(--code, repeatable: e.g. this branch and an export of main, side by side in one run), on a fresh
SQLite file (or --postgres ADMIN_URL), with the default BlazePose backbone on the CPU:

1. seeds a project: a synthetic video (--frames frames, 2 people), /predict over its frame tasks,
   then human annotations (ANNOTATION_CREATED webhooks) on every other frame;
2. RSS: runs one short training job (POST /train, 1 epoch) to its end and prints the server's RSS
   (VmRSS) at baseline (before the job), peak during the job and after it ended, and the peak of
   the server's child processes (where the training runs when it runs in a child);
3. kill -9: starts a long training job, waits until it trains, runs --clients webhook clients for
   --seconds and kills the server (SIGKILL) half-way; a training child still alive 5 s later is
   reported and killed too. After a restart it checks: acknowledged webhooks lost (must be 0) and
   not processed, the job's state (must be "failed", not left "running"), the serving version and
   the version rows (unchanged), and torn version folders (a named folder without all its files,
   or a registered version without its head; must be 0). Half-written ".tmp-*" folders are counted
   apart: the next training run removes them.

    python -m scripts.bench_train_kill [--clients 20] [--seconds 20] [--frames 12] [--postgres URL]
                                       [--code . --code /tmp/main-export]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text

from scripts.bench_backend import temporary_postgres
from scripts.bench_load import (
    Server,
    common_arguments,
    descendants,
    drain,
    for_each_tree,
    load,
    rss_mb,
    stored,
)

PROJECT = "1.1700000000"
VERSION_FILES = ("head.pt", "config.json", "training_data.json", "metrics.json")


def query(db_url: str, sql: str) -> list[Any]:
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).all())
    finally:
        engine.dispose()


def job_row(db_url: str, job_id: str) -> tuple[str, dict[str, Any], str | None]:
    (state, progress, error), = query(db_url, f"select state, progress, error from jobs where id = '{job_id}'")
    return state, (json.loads(progress) if isinstance(progress, str) else progress) or {}, error


def seed(server: Server, tmp: Path, frames: int) -> tuple[str, list, dict]:
    """A labelled synthetic video; returns (label config, one frame's result, its task data) for the load."""
    from annotation_io.label_studio import label_config, persons_to_results, task_data
    from annotation_io.posetrack import load as load_posetrack
    from annotation_io.synth import generate

    (path,) = generate(tmp / "video", videos=1, frames=frames, people=2, seed=3, size=(320, 240))
    gt = load_posetrack(path)
    config = label_config()
    datas = [task_data(str(tmp / "video" / "images" / gt.name / f"{t:06d}.jpg"), gt.name, t, gt.num_frames)
             for t in range(gt.num_frames)]  # fmt: skip
    tasks = [{"id": 1 + t, "data": d, "project": 1} for t, d in enumerate(datas)]
    resp = requests.post(f"{server.url}/predict", json={"project": PROJECT, "label_config": config, "tasks": tasks},
                         timeout=600)  # fmt: skip
    resp.raise_for_status()
    for t in range(0, gt.num_frames, 2):
        persons = []
        for p in gt.frames[t].persons:
            q = p.copy()
            q.keypoints[q.present, 2] = 2.0
            persons.append(q)
        result = persons_to_results(persons, 320, 240, id_prefix=f"a{t}_")
        annotation = {"id": 1 + t, "result": result, "was_cancelled": False, "ground_truth": False, "task": 1 + t,
                      "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z", "project": 1,
                      "lead_time": 3.0, "completed_by": 1}  # fmt: skip
        body = {"action": "ANNOTATION_CREATED", "annotation": annotation, "task": tasks[t],
                "project": {"id": 1, "title": "bench", "label_config": config}}  # fmt: skip
        assert requests.post(f"{server.url}/webhook", json=body, timeout=60).status_code == 201
    return config, persons_to_results(gt.frames[0].persons, 320, 240), datas[0]


def start_job(server: Server, config: dict[str, Any]) -> str:
    resp = requests.post(f"{server.url}/train", json={"project": 1, "config": config}, timeout=60)
    assert resp.status_code == 202, resp.text
    return resp.json()["job"]


def rss_run(server: Server, db_url: str) -> str:
    """Trains one short job to its end; returns the RSS line."""
    assert server.proc is not None
    time.sleep(2)
    baseline = rss_mb(server.proc.pid)
    job_id = start_job(server, {"epochs": 1, "batch_size": 4, "augment": False})
    peak = child_peak = 0.0
    start = time.monotonic()
    while job_row(db_url, job_id)[0] in ("queued", "running"):
        peak = max(peak, rss_mb(server.proc.pid))
        child_peak = max(child_peak, sum(rss_mb(p) for p in descendants(server.proc.pid)))
        time.sleep(0.2)
    seconds = time.monotonic() - start
    time.sleep(5)  # the allocator's chance to give memory back
    state = job_row(db_url, job_id)[0]
    return (f"   training job ({state}, {seconds:.0f} s): server RSS baseline {baseline:.0f} MB, peak {peak:.0f} MB, "
            f"after {rss_mb(server.proc.pid):.0f} MB; child processes' peak {child_peak:.0f} MB")  # fmt: skip


def version_state(db_url: str, model_dir: Path) -> tuple[list[Any], int, int]:
    """(version rows, torn version folders or registered versions without a head, .tmp-* folders)."""
    rows = sorted(tuple(r) for r in query(db_url, "select name, state, head_path from model_versions"))
    root = model_dir / "versions"
    folders = [p for p in root.iterdir() if p.is_dir()] if root.exists() else []
    torn = sum(1 for p in folders if not p.name.startswith(".tmp-") and not all((p / f).is_file() for f in VERSION_FILES))
    torn += sum(1 for _, _, head in rows if head and not Path(head).is_file())
    return rows, torn, sum(1 for p in folders if p.name.startswith(".tmp-"))


def serving_version(server: Server, config: str) -> str:
    resp = requests.post(f"{server.url}/setup", json={"project": PROJECT, "schema": config}, timeout=60)
    return str(resp.json().get("model_version"))


def kill_run(server: Server, db_url: str, model_dir: Path, args: argparse.Namespace, config: str, result: list,
             data: dict) -> list[str]:  # fmt: skip
    """kill -9 mid-training under a webhook burst; returns the report lines."""
    assert server.proc is not None
    serving, (rows, _, _) = serving_version(server, config), version_state(db_url, model_dir)
    job_id = start_job(server, {"epochs": 10_000, "batch_size": 4, "augment": False})
    deadline = time.monotonic() + 600
    while job_row(db_url, job_id)[1].get("phase") != "train" and time.monotonic() < deadline:
        time.sleep(0.2)
    phase = job_row(db_url, job_id)[1].get("phase")
    server_pid = server.proc.pid
    children: list[int] = []
    watcher = threading.Thread(target=lambda: children.extend(_watch_children(server)), daemon=True)
    watcher.start()
    run = load(server, args.clients, args.seconds, config, result, data, kill_at=args.seconds / 2)
    watcher.join()
    time.sleep(5)
    orphans = [p for p in children if rss_mb(p) > 0]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    server.start()
    drain(db_url, args.drain_limit)
    missing, unprocessed = stored(db_url, run["acked"])
    state, progress, error = job_row(db_url, job_id)
    after, torn, temporaries = version_state(db_url, model_dir)
    codes = dict(sorted(run["statuses"].items()))
    return [f"   kill -9 of server {server_pid} while the job trained (phase {phase}) under {args.clients} clients: "
            f"statuses {codes}",
            f"   {len(run['acked'])} webhooks acknowledged; lost {missing}; not processed after restart {unprocessed}",
            f"   training processes alive 5 s after the kill: {len(orphans)} (of {len(children)} children seen)",
            f"   job after restart: {state} ({error}); last progress phase {progress.get('phase')}",
            f"   serving version {serving} -> {serving_version(server, config)}; version rows unchanged: "
            f"{after == rows}; torn version folders {torn}; .tmp-* folders {temporaries}"]  # fmt: skip


def _watch_children(server: Server) -> list[int]:
    """The server's descendants seen until the server is gone."""
    seen: set[int] = set()
    proc = server.proc
    while proc is not None and proc.poll() is None:
        seen.update(descendants(proc.pid))
        time.sleep(0.1)
    return sorted(seen)


def bench(code: Path, args: argparse.Namespace, stack: ExitStack, tmp: Path, port: int) -> None:
    db_url = temporary_postgres(stack, args.postgres) if args.postgres else f"sqlite:///{tmp}/{uuid.uuid4().hex}.db"
    data_dir = tmp / "data"
    env = {**os.environ, "DATA_DIR": str(data_dir), "DATABASE_URL": db_url, "LOG_LEVEL": "WARNING",
           "TRAIN_MIN_CORRECTIONS": str(10**9), "TRAIN_MIN_FRAMES": "0", "MEDIA_ROOTS": str(tmp),
           "PYTHONPATH": str(code)}  # fmt: skip
    server = Server(code, env, port)
    server.start()
    stack.callback(server.stop)
    config, result, data = seed(server, tmp, args.frames)
    drain(db_url, 120)
    print(f"== {code} on {'PostgreSQL' if args.postgres else 'SQLite'} ({args.frames} frames, every other labelled)",
          flush=True)  # fmt: skip
    print(rss_run(server, db_url), flush=True)
    for line in kill_run(server, db_url, data_dir / "models", args, config, result, data):
        print(line, flush=True)
    server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser, seconds=20.0, drain_limit=600.0, port=9491)  # the kill comes half-way
    parser.add_argument("--frames", type=int, default=12)
    args = parser.parse_args(argv)
    return for_each_tree(args, bench, "bench-train-")


if __name__ == "__main__":
    raise SystemExit(main())
