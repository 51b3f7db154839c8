"""Load and fault benchmark of the ML backend: N clients x D seconds on /webhook and /setup, and kill -9 mid-burst.

Sibling of `scripts/bench_backend.py` (one request at a time). The server runs as a child process
on 127.0.0.1 (traffic goes nowhere else): `python -m backend serve` (--server dev, the default) or the
production command, gunicorn with W workers of T threads (--server gunicorn:W:T); over a fresh SQLite
file or a fresh PostgreSQL database (--postgres ADMIN_URL; dropped afterwards); with --redis URL, jobs
and events go to Redis and --rq-workers `python -m backend worker` processes. Each of --clients threads
posts ANNOTATION_CREATED webhooks (Label Studio's shape, a full pose result, unique annotations)
with one /setup in ten, for --seconds. Printed per code tree (--code, repeatable: e.g. this branch and
an export of main, measured side by side in one run):

- requests/s, p50/p95/p99/max latency per route, responses by status;
- events processed per second (processed events / span from the first receipt to the last
  processing) and the backlog left when the load stops and how long it takes to drain;
- the server's RSS (VmRSS) at start, peak and end;
- --kill: a second run kills the server (SIGKILL) mid-burst, restarts it, waits for the backlog and
  checks that every acknowledged (201) webhook is stored and processed: "lost" must be 0.

    python -m scripts.bench_load [--clients 20] [--seconds 60] [--postgres URL] [--kill]
                                 [--server dev|gunicorn:W:T] [--redis URL --rq-workers N]
                                 [--code . --code /tmp/main-export]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests
from sqlalchemy import create_engine, text

from scripts.bench_backend import temporary_postgres


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    """The live descendant processes of `pid` (from /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Server:
    """The backend from a code tree on 127.0.0.1:`port`, with its own environment.

    `kind` "dev" is `python -m backend serve` (werkzeug, threaded); "gunicorn:W:T" is the production
    command (`gunicorn backend.wsgi:app`) with W worker processes of T threads each.
    """

    def __init__(self, code: Path, env: dict[str, str], port: int, kind: str = "dev") -> None:
        self.code, self.env, self.port, self.kind = code, env, port, kind
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.kind == "dev":
            return [sys.executable, "-m", "backend", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        _, workers, threads = self.kind.split(":")
        return [sys.executable, "-m", "gunicorn", "--workers", workers, "--threads", threads, "--timeout", "0",
                "--bind", f"127.0.0.1:{self.port}", "backend.wsgi:app"]  # fmt: skip

    def start(self, timeout: float = 120.0) -> None:
        self.proc = subprocess.Popen(self.command(), cwd=self.code, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code in (200, 503):
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError(f"server from {self.code} did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the whole group: gunicorn's workers too
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


class Workers:
    """`python -m backend worker` processes (the RQ workers) from a code tree, with the server's environment."""

    def __init__(self, code: Path, env: dict[str, str], count: int) -> None:
        self.code, self.env, self.count = code, env, count
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-m", "backend", "worker"], cwd=self.code, env=self.env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
                      for _ in range(self.count)]  # fmt: skip

    def rss_mb(self) -> float:
        return sum(rss_mb(pid) for p in self.procs for pid in [p.pid, *descendants(p.pid)])

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs = []


def flush_redis(url: str) -> None:
    """Empties the Redis database of `url` (the benchmark's own database number)."""
    from redis import Redis

    Redis.from_url(url).flushdb()


def server_rss_mb(server: Server) -> float:
    """The server's resident memory in MB: its process and, under gunicorn, its workers."""
    if server.proc is None:
        return 0.0
    pids = [server.proc.pid] + (descendants(server.proc.pid) if server.kind != "dev" else [])
    return sum(rss_mb(pid) for pid in pids)


def payload(i: int, config: str, result: list[dict[str, Any]], data: dict[str, Any]) -> dict[str, Any]:
    stamp = f"2026-01-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
    annotation = {"id": 100_000 + i, "result": result, "was_cancelled": False, "ground_truth": False,
                  "created_at": "2026-01-01T00:00:00Z", "updated_at": stamp, "lead_time": 3.0,
                  "task": 1000 + i % 50, "project": 1, "completed_by": 1}  # fmt: skip
    return {"action": "ANNOTATION_CREATED", "annotation": annotation,
            "task": {"id": 1000 + i % 50, "data": data, "project": 1},
            "project": {"id": 1, "title": "bench", "label_config": config, "token": "secret"}}  # fmt: skip


def load(server: Server, clients: int, seconds: float, config: str, result: list, data: dict,
         kill_at: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Runs the clients; returns latencies, statuses and the acknowledged annotation ids."""
    counter, lock = iter(range(10**9)), threading.Lock()
    latencies: dict[str, list[float]] = {"/webhook": [], "/setup": []}
    statuses: Counter[str] = Counter()
    acked: list[int] = []
    stop_at = time.monotonic() + seconds
    setup = {"project": "1.1700000000", "schema": config, "hostname": "http://127.0.0.1:9", "access_token": "x"}

    def client() -> None:
        http = requests.Session()
        while time.monotonic() < stop_at:
            with lock:
                i = next(counter)
            route, body = ("/setup", setup) if i % 10 == 9 else ("/webhook", payload(i, config, result, data))
            start = time.perf_counter()
            try:
                resp = http.post(server.url + route, json=body, timeout=30)
                code = str(resp.status_code)
            except requests.RequestException as exc:
                code = type(exc).__name__
            with lock:
                statuses[f"{route} {code}"] += 1
                if code.isdigit():
                    latencies[route].append(time.perf_counter() - start)
                if route == "/webhook" and code == "201":
                    acked.append(100_000 + i)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    peak = 0.0
    while any(t.is_alive() for t in threads):
        if server.proc is not None:
            peak = max(peak, server_rss_mb(server))
        if kill_at is not None and time.monotonic() - started >= kill_at:
            server.kill()
            kill_at = None
        time.sleep(0.2)
    return {"latencies": latencies, "statuses": statuses, "acked": acked, "rss_peak": peak,
            "elapsed": time.monotonic() - started}  # fmt: skip


def backlog(db_url: str) -> tuple[int, int, float]:
    """(events still received, events processed or failed, events processed per second so far)."""
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            waiting = conn.execute(text("select count(*) from webhook_events where status = 'received'")).scalar()
            done = conn.execute(text("select count(*) from webhook_events where status != 'received'")).scalar()
            first, last = conn.execute(text("select min(received_at), max(processed_at) from webhook_events")).one()
    finally:
        engine.dispose()
    span = (_when(last) - _when(first)).total_seconds() if first is not None and last is not None else 0.0
    return int(waiting), int(done), done / span if span > 0 else 0.0


def _when(value: Any) -> datetime:
    """A timestamp column's value (SQLite gives text)."""
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def drain(db_url: str, limit_s: float) -> tuple[int, float]:
    """(backlog when called, seconds until it is empty; inf past `limit_s`)."""
    start = time.monotonic()
    first = backlog(db_url)[0]
    while time.monotonic() - start < limit_s:
        if backlog(db_url)[0] == 0:
            return first, time.monotonic() - start
        time.sleep(0.25)
    return first, float("inf")


def stored(db_url: str, ids: Sequence[int]) -> tuple[int, int]:
    """(acknowledged annotations with no event row, acknowledged annotations not processed)."""
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            rows = dict(conn.execute(text("select annotation_id, status from webhook_events")).all())
    finally:
        engine.dispose()
    missing = sum(1 for i in ids if i not in rows)
    return missing, sum(1 for i in ids if rows.get(i) not in ("processed", "ignored"))


def report(name: str, run: dict[str, Any], drained: tuple[int, float], rates: tuple[int, int, float],
           rss: tuple[float, float, float]) -> None:  # fmt: skip
    total = sum(run["statuses"].values())
    print(f"== {name}: {total} requests in {run['elapsed']:.1f} s = {total / run['elapsed']:.1f} req/s; "
          f"statuses {dict(sorted(run['statuses'].items()))}")  # fmt: skip
    for route, samples in run["latencies"].items():
        if samples:
            ms = np.asarray(samples) * 1000
            p50, p95, p99 = np.percentile(ms, [50, 95, 99])
            print(f"   {route:9s} n={len(ms):5d}  p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  p99 {p99:7.1f} ms  "
                  f"max {ms.max():7.1f} ms")  # fmt: skip
    print(f"   events processed {rates[1]} at {rates[2]:.1f}/s; backlog at end of load {drained[0]}, "
          f"drained in {drained[1]:.1f} s; RSS start {rss[0]:.0f} MB, peak {rss[1]:.0f} MB, end {rss[2]:.0f} MB")  # fmt: skip


def bench(code: Path, args: argparse.Namespace, stack: ExitStack, tmp: Path, port: int) -> None:
    from annotation_io.label_studio import label_config, persons_to_results, task_data
    from annotation_io.posetrack import load as load_posetrack
    from annotation_io.synth import generate

    (path,) = generate(tmp / "video", videos=1, frames=2, people=2, seed=1, size=(320, 240))
    gt = load_posetrack(path)
    image = str(tmp / "video" / "images" / gt.name / "000000.jpg")
    result = persons_to_results(gt.frames[0].persons, 320, 240)
    data, config = task_data(image, gt.name, 0, gt.num_frames), label_config()
    for kill in (False, True) if args.kill else (False,):
        db_url = temporary_postgres(stack, args.postgres) if args.postgres else f"sqlite:///{tmp}/{uuid.uuid4().hex}.db"
        env = {**os.environ, "DATA_DIR": str(tmp / uuid.uuid4().hex), "DATABASE_URL": db_url, "LOG_LEVEL": "WARNING",
               "TRAIN_MIN_CORRECTIONS": str(10**9), "PYTHONPATH": str(code)}  # fmt: skip
        workers = None
        if args.redis:
            flush_redis(args.redis)
            env["REDIS_URL"] = args.redis
            workers = Workers(code, env, args.rq_workers)
            workers.start()
            stack.callback(workers.stop)
        server = Server(code, env, port, args.server)
        server.start()
        stack.callback(server.stop)
        rss_start = server_rss_mb(server)
        run = load(server, args.clients, args.seconds, config, result, data,
                   kill_at=args.seconds / 2 if kill else None)  # fmt: skip
        if kill:
            server.start()  # requeues what was acknowledged but not processed
        drained = drain(db_url, args.drain_limit)
        rates = backlog(db_url)
        rss = (rss_start, max(run["rss_peak"], server_rss_mb(server)), server_rss_mb(server))
        label = (f"{code} on {'PostgreSQL' if args.postgres else 'SQLite'}, server {args.server}"
                 + (f", Redis + {args.rq_workers} RQ worker(s) ({workers.rss_mb():.0f} MB)" if workers else "")
                 + (" (kill -9 mid-burst)" if kill else ""))  # fmt: skip
        report(label, run, drained, rates, rss)
        if kill:
            missing, unprocessed = stored(db_url, run["acked"])
            print(f"   kill -9: {len(run['acked'])} acknowledged; lost {missing}; not processed after restart "
                  f"{unprocessed}")  # fmt: skip
        server.stop()
        if workers is not None:
            workers.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser, seconds=60.0, drain_limit=900.0, port=9391)
    parser.add_argument("--kill", action="store_true", help="also run the kill -9 mid-burst check")
    parser.add_argument("--redis", default=None,
                        help="REDIS_URL for the server and its RQ workers, e.g. redis://127.0.0.1:6379/14 "
                             "(that database is emptied first; default: no Redis, in-process processing)")  # fmt: skip
    parser.add_argument("--rq-workers", type=int, default=1, help="`python -m backend worker` processes with --redis")
    args = parser.parse_args(argv)
    return for_each_tree(args, bench, "bench-load-")


def common_arguments(parser: argparse.ArgumentParser, *, seconds: float, drain_limit: float, port: int) -> None:
    """The options every load benchmark takes: clients, seconds, database, drain limit, code trees, port."""
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=seconds, help="length of the webhook burst")
    parser.add_argument("--postgres", default=None, help="admin URL of a PostgreSQL server (default: SQLite)")
    parser.add_argument("--drain-limit", type=float, default=drain_limit, help="seconds to wait for the backlog")
    parser.add_argument("--code", type=Path, action="append", help="code trees to compare (default: this one)")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--server", default="dev", type=server_kind,
                        help='"dev" (python -m backend serve, the default) or "gunicorn:WORKERS:THREADS"')  # fmt: skip


def server_kind(value: str) -> str:
    """An argparse type: "dev" or "gunicorn:WORKERS:THREADS" (positive integers)."""
    parts = value.split(":")
    counts_ok = len(parts) == 3 and parts[0] == "gunicorn" and all(p.isdigit() and int(p) > 0 for p in parts[1:])
    if value == "dev" or counts_ok:
        return value
    raise argparse.ArgumentTypeError(f'expected "dev" or "gunicorn:WORKERS:THREADS", got {value!r}')


def for_each_tree(args: argparse.Namespace, run: Any, prefix: str) -> int:
    """Runs `run(code, args, stack, tmp, port)` for each --code tree, each in its own temporary folder."""
    for n, code in enumerate(args.code or [Path(".")]):
        with ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
            run(code.resolve(), args, stack, tmp, args.port + n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
