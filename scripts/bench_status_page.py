"""Render time of the status page (`GET /`) with many versions and jobs in the database.

Seeds a fresh SQLite database (or --postgres) with N model versions (gate figures, training
summaries), M jobs (every state, training progress records) and corrections of K annotations, then
times `GET /` through Flask's test client, side by side with the JSON routes it summarises
(`/versions`, `/jobs?limit=1000`, `/metrics`), interleaved, `--repeats` times each. Prints medians.

    python -m scripts.bench_status_page [--versions 20] [--jobs 1000] [--annotations 200] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from backend.context import BackendContext


def seed(ctx: BackendContext, *, versions: int, jobs: int, annotations: int, project_id: int = 1) -> None:
    """Versions p1-v1.. (the last serving), jobs of every state, annotations with 15 corrections each."""
    from annotation_io.types import Person
    from backend.db import queries
    from backend.db import versions as db_versions
    from backend.db.session import session_scope
    from backend.db.tables import Job, utcnow
    from backend.services.corrections import CorrectionRow

    states = ("succeeded", "rejected", "failed", "succeeded")
    with session_scope(ctx.sessions) as session:
        for i in range(1, versions + 1):
            gate = {"promote": i % 2 == 0, "candidate": {"map": 60 + i * 0.5}, "serving": {"map": 60 + i * 0.4},
                    "margin": 0.01, "delta_map": round(i * 0.1, 2), "reason": f"candidate beats serving by {i * 0.1:.1f}"}
            db_versions.create_model_version(
                session=session, name=f"p{project_id}-v{i}", backbone="blazepose", project_id=project_id,
                metrics={"gate": gate}, training_summary={"videos": 1, "labelled_frames": 10 + i, "persons": 20 + i},
            )  # fmt: skip
        if versions:
            db_versions.set_serving(session=session, name=f"p{project_id}-v{versions}")
        now = utcnow()
        for i in range(jobs):
            state = "running" if i == jobs - 1 else states[i % len(states)]
            progress = {"phase": "train", "epoch": 3, "epochs": 10, "step": 2, "steps_per_epoch": 4}
            session.add(Job(id=f"job{i:06d}", project_id=project_id + 1 + i, kind="train", state=state,
                            trigger="api", progress=progress, created_at=now - timedelta(seconds=jobs - i)))  # fmt: skip
        session.flush()
        for a in range(annotations):
            task_id = 1000 + a
            queries.upsert_task(session=session, task_id=task_id, project_id=project_id, data={"image": "x"})
            row, _ = queries.upsert_annotation(
                session=session, annotation_id=task_id, task_id=task_id, project_id=project_id, result=[],
                persons=[Person()], ls_updated_at=now, completed_by=1, was_cancelled=False,
            )  # fmt: skip
            rows = [CorrectionRow(j, ("kept", "kept", "moved", "deleted")[(a + j) % 4],
                                  distance_px=3.0 if (a + j) % 4 == 2 else None)
                    for j in (0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)]  # fmt: skip
            queries.replace_corrections(session=session, annotation=row, rows=rows,
                                        model_version=f"p{project_id}-v{1 + a % max(versions, 1)}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--annotations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--postgres", help="a PostgreSQL URL to use instead of a temporary SQLite file")
    args = parser.parse_args(argv)

    from backend.app import create_app
    from backend.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        url = args.postgres or f"sqlite:///{root / 'backend.db'}"
        settings = Settings(data_dir=root / "data", database_url=url, model_dir=root / "models",
                            frame_cache_dir=root / "frames")  # fmt: skip
        app = create_app(settings)
        ctx: BackendContext = app.extensions["dcpose"]
        try:
            t = time.perf_counter()
            seed(ctx, versions=args.versions, jobs=args.jobs, annotations=args.annotations)
            print(f"seeded {args.versions} versions, {args.jobs} jobs, {args.annotations} annotations "
                  f"({args.annotations * 15} corrections) in {time.perf_counter() - t:.1f} s on {url.split(':')[0]}")
            client = app.test_client()
            routes = {"GET / (status page)": "/", "GET /versions": "/versions", "GET /jobs?limit=1000": "/jobs?limit=1000",
                      "GET /metrics": "/metrics"}  # fmt: skip
            times: dict[str, list[float]] = {name: [] for name in routes}
            sizes: dict[str, int] = {}
            for path in routes.values():  # warm-up (templates compiled, caches filled)
                assert client.get(path).status_code == 200, path
            for _ in range(args.repeats):
                for name, path in routes.items():
                    t = time.perf_counter()
                    resp = client.get(path)
                    times[name].append((time.perf_counter() - t) * 1000)
                    sizes[name] = len(resp.data)
            print(f"{'route':<24} {'median ms':>10} {'p90 ms':>8} {'KiB':>7}")
            for name, values in times.items():
                values.sort()
                p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
                print(f"{name:<24} {statistics.median(values):>10.1f} {p90:>8.1f} {sizes[name] / 1024:>7.1f}")
        finally:
            ctx.close()


if __name__ == "__main__":
    main()
