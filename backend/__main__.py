"""`python -m backend`: serve the ML backend (default), run the RQ worker, pre-annotate, import.

    python -m backend [serve] [--host 0.0.0.0] [--port 9090]   # Flask dev server, threaded
    python -m backend worker [--burst]                          # RQ worker (needs REDIS_URL)
    python -m backend preannotate --project ID [--video V] [--task ID ...] [--force]
    python -m backend import-video VIDEO --project ID [--every K]
    python -m backend import-posetrack DIR --project ID

Settings come from the environment (`backend.settings`); with none set, the service runs on its
embedded defaults: SQLite in ./data, BlazePose, CPU. In production use
``gunicorn --workers 1 --threads 8 --timeout 0 -b 0.0.0.0:9090 backend.wsgi:app``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from backend.db.session import DatabaseSetupError
from backend.logs import configure_logging, mask_url_password
from backend.ls.importers import add_import_commands
from backend.settings import Settings, SettingsError

logger = logging.getLogger("backend")

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 9090


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """Runs the Flask development server (threaded) until interrupted."""
    from werkzeug.serving import make_server

    from backend.app import create_app

    app = create_app(settings)
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"DCPose ML backend listening on http://{args.host}:{server.port} (database "
          f"{mask_url_password(settings.database_url)}, backbone {settings.backbone}, device {settings.device})",
          flush=True)  # fmt: skip
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("interrupted")
    finally:
        server.server_close()
        app.extensions["dcpose"].close()
    return 0


def worker(args: argparse.Namespace, settings: Settings) -> int:
    """Runs the RQ worker of queue "dcpose" (same as `rq worker -u $REDIS_URL dcpose`)."""
    from backend.context import build_context
    from backend.jobs.runners import runner_factory
    from backend.jobs.worker import run_worker

    if not settings.redis_url:
        print("error: REDIS_URL is not set; without Redis, jobs run inside the web process", file=sys.stderr)
        return 2
    from redis.exceptions import RedisError

    ctx = build_context(settings, runner=runner_factory(settings, "rq"))
    try:
        run_worker(ctx, burst=args.burst)
    except RedisError as exc:  # refused at start (or lost for good): one line, as for the database
        print(f"error: REDIS_URL {mask_url_password(settings.redis_url)!r}: {exc}", file=sys.stderr)
        return 1
    finally:
        ctx.close()
    return 0


def preannotate(args: argparse.Namespace, settings: Settings) -> int:
    """Runs a "preannotate" job in the foreground; prints its outcome."""
    from backend.context import build_context
    from backend.db.jobs import get_job
    from backend.db.queries import ConflictError
    from backend.db.session import session_scope
    from backend.jobs.execution import run_job_now
    from backend.jobs.registry import PREANNOTATE

    if not (settings.label_studio_url and settings.label_studio_api_key):
        print("error: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY: predictions are pushed to Label Studio",
              file=sys.stderr)  # fmt: skip
        return 2
    ctx = build_context(settings)  # no runner: the job runs here, in the foreground
    try:
        job_id = run_job_now(ctx, PREANNOTATE, args.project, trigger="cli", video_id=args.video,
                             task_ids=args.task or None, force=args.force)  # fmt: skip
        with session_scope(ctx.sessions) as session:
            job = get_job(session=session, job_id=job_id)
            state, result, error = (job.state, job.result, job.error) if job else ("missing", None, "job row gone")
            if state == "cancelled":  # POST /jobs/<id>/cancel from elsewhere: what it did before it stopped
                result = {k: job.progress.get(k) for k in ("tasks_done", "tasks_total", "pushed", "failed")}
    except ConflictError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        ctx.close()
    print(f"job {job_id}: {state}" + (f": {error}" if error else f" {result}"))
    return 0 if state == "succeeded" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("serve", help="serve the ML backend (the default command)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST})")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)"
    )
    p.set_defaults(func=serve, settings=True)
    p = sub.add_parser("worker", help="run the RQ worker for background jobs (needs REDIS_URL)")
    p.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    p.set_defaults(func=worker, settings=True)
    p = sub.add_parser(
        "preannotate", help="predict a project's (or a video's) frame tasks and push them to LS"
    )
    p.add_argument("--project", type=int, required=True, help="Label Studio project id")
    p.add_argument("--video", default=None, help="only this video_id")
    p.add_argument("--task", type=int, action="append", help="only this task id (repeatable)")
    p.add_argument("--force", action="store_true", help="also tasks already predicted by the serving version")
    p.set_defaults(func=preannotate, settings=True)
    add_import_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0].startswith("-") and args_list[0] not in ("-h", "--help"):
        args_list.insert(0, "serve")
    args = build_parser().parse_args(args_list)
    if not getattr(args, "settings", False):  # the import commands read their own environment
        configure_logging("INFO")
        return int(args.func(args))
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        return int(args.func(args, settings))
    except SettingsError as exc:  # a folder or device of the settings, found unusable at start-up
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DatabaseSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
