"""The Flask app: Label Studio's ML-backend protocol (/health /setup /predict /webhook /versions) and extras.

Protocol routes (reference/labelstudio.md §5): `GET /` and `/health`; `POST /setup` (cheap,
returns the serving model version); `POST /predict` (one result per task, in order); `POST
/webhook` (recorded and queued in a few ms); `GET /versions`. Extras: `GET /metrics` (acceptance
statistics), `POST /preannotate` (a background job pushing predictions for a whole project or
video), `GET /jobs`, `GET /jobs/<id>`.

Every error is JSON `{"error": reason}`: bad input 400, unauthorised 401 (with WWW-Authenticate),
unknown job 404, a task id stored under another project 409, oversized body 413, unreachable image
422 (with the URL, never a token), model or queue unavailable 503; 500 only for bugs, logged with
the request's task ids. Basic auth guards every route but `/` and `/health` when
BASIC_AUTH_USER/BASIC_AUTH_PASS are set.
"""

from __future__ import annotations

import hmac
import json
import logging
from datetime import datetime
from typing import Any

from flask import Flask, Response, g, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from annotation_io.errors import AnnotationFormatError
from backend.db import jobs as db_jobs
from backend.db import versions
from backend.db.metrics import acceptance_metrics
from backend.db.queries import ConflictError, NotFoundError
from backend.db.session import session_scope
from backend.db.tables import Job
from backend.services.events import WebhookPayloadError
from backend.ls.frames import ImageUnavailableError
from backend.jobs.runners import BackendContext, JobQueueError, build_context
from backend.http.ls_model import DCPoseBackend, RequestFormatError, parse_project_id
from backend.services.prediction import serving_model
from backend.services.predictor_cache import ModelUnavailableError, PredictorFactory
from backend.settings import Settings
from backend.http.versions import blueprint as training_routes

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/", "/health"})
REALM = 'Basic realm="DCPose ML backend", charset="UTF-8"'


class ApiError(Exception):
    """An HTTP error with a JSON body {"error": message, **extra}."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def configure_logging(level: str = "INFO") -> None:
    """Root logging to stderr (called once by `python -m backend` and `backend.wsgi`)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines repeat at every start


def _error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": message, **extra}), status


def _body() -> dict[str, Any]:
    raw = request.get_data(cache=True)  # raises 413 beyond MAX_REQUEST_MB
    if not raw:
        raise ApiError(400, "empty request body; expected a JSON object")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"expected a JSON object, got {type(data).__name__}")
    return data


def _query_int(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_project_id(raw) if name == "project" else int(raw)
    except (RequestFormatError, ValueError):
        raise ApiError(400, f"query parameter {name}={raw!r} must be an integer") from None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_json(job: Job) -> dict[str, Any]:
    """A job row as JSON."""
    return {"id": job.id, "project_id": job.project_id, "kind": job.kind, "state": job.state,
            "trigger": job.trigger, "progress": job.progress, "result": job.result, "error": job.error,
            "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
            "finished_at": _iso(job.finished_at), "heartbeat_at": _iso(job.heartbeat_at)}  # fmt: skip


def create_app(settings: Settings | None = None, *, predictor_factory: PredictorFactory | None = None,
               context: BackendContext | None = None, start_runner: bool = True) -> Flask:  # fmt: skip
    """The service's Flask app.

    Args:
        settings: default `Settings.from_env()`.
        predictor_factory: builds predictors (tests inject fast ones); default
            `model.pipeline.predictor.Predictor.create` through `backend.services.predictor_cache`.
        context: a ready BackendContext (else built from `settings`: DB migrated, runner chosen).
        start_runner: start the job runner (fails stale jobs, requeues unprocessed events).

    The context is `app.extensions["dcpose"]`; call its `close()` when done.
    """
    settings = settings or (context.settings if context is not None else Settings.from_env())
    ctx = context or build_context(settings, predictor_factory=predictor_factory)
    if start_runner and ctx.runner is not None:
        ctx.runner.start()
    app = Flask("backend")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions["dcpose"] = ctx
    _register_errors(app)

    @app.before_request
    def _authenticate() -> tuple[Response, int] | None:
        expected = settings.basic_auth
        if expected is None or request.path in OPEN_PATHS:
            return None
        auth = request.authorization
        user = (auth.username or "") if auth is not None and auth.type == "basic" else ""
        password = (auth.password or "") if auth is not None and auth.type == "basic" else ""
        ok = hmac.compare_digest(user.encode(), expected[0].encode())
        ok &= hmac.compare_digest(password.encode(), expected[1].encode())
        if ok:
            return None
        resp, status = _error(401, "authentication required (HTTP basic auth)")
        resp.headers["WWW-Authenticate"] = REALM
        return resp, status

    @app.get("/")
    @app.get("/health")
    def health() -> Any:
        try:
            version = serving_model(ctx, None).name
        except (OperationalError, ModelUnavailableError) as exc:
            return {"status": "DOWN", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}, 503
        return {"status": "UP", "model_class": "DCPoseBackend", "model_version": version}

    @app.post("/setup")
    def setup() -> Any:
        body = _body()
        schema = body.get("schema")
        if schema is not None and not isinstance(schema, str):
            raise ApiError(400, "'schema' must be the labelling config XML string")
        ctx.ls.learn(body.get("hostname"), body.get("access_token"))
        backend = DCPoseBackend(parse_project_id(body.get("project")), schema, context=ctx)
        backend.remember_project()
        return {"model_version": backend.model_version}

    @app.post("/predict")
    def predict() -> Any:
        body = _body()
        tasks = body.get("tasks")
        if isinstance(tasks, list):
            g.task_ids = [t.get("id") for t in tasks if isinstance(t, dict)]
        label_config = body.get("label_config")
        if label_config is not None and not isinstance(label_config, str):
            raise ApiError(400, "'label_config' must be the labelling config XML string")
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        context_ = params.get("context") if isinstance(params.get("context"), dict) else None
        backend = DCPoseBackend(parse_project_id(body.get("project")), label_config, context=ctx)
        results = backend.predict(tasks, context=context_)  # type: ignore[arg-type]
        return {"results": results, "model_version": results[0]["model_version"]}

    @app.post("/webhook")
    def webhook() -> Any:
        body = _body()
        response, status = DCPoseBackend(None, None, context=ctx).fit(None, body)
        return response, status

    @app.route("/versions", methods=["GET", "POST"])
    def list_versions() -> Any:
        project_id = _query_int("project")
        if project_id is None and request.method == "POST" and request.get_data():
            project_id = parse_project_id(_body().get("project"))
        serving = serving_model(ctx, project_id)
        with session_scope(ctx.sessions) as session:
            rows = versions.list_versions(session=session, project_id=project_id)
            details = [{"name": v.name, "state": v.state, "backbone": v.backbone, "project_id": v.project_id,
                        "parent": v.parent, "metrics": v.metrics, "created_at": _iso(v.created_at),
                        "promoted_at": _iso(v.promoted_at)} for v in rows]  # fmt: skip
        if serving.name not in {d["name"] for d in details}:
            details.insert(0, {"name": serving.name, "state": "serving", "backbone": serving.spec.backbone,
                               "project_id": None, "builtin": True})  # fmt: skip
        return {"versions": [d["name"] for d in details], "serving": serving.name, "details": details}

    @app.get("/metrics")
    def metrics() -> Any:
        with session_scope(ctx.sessions) as session:
            return acceptance_metrics(session=session, project_id=_query_int("project"))

    @app.post("/preannotate")
    def preannotate() -> Any:
        body = _body()
        project_id = parse_project_id(body.get("project"))
        if project_id is None:
            raise ApiError(400, "'project' (the Label Studio project id) is required")
        video_id = body.get("video_id")
        if video_id is not None and (isinstance(video_id, bool) or not isinstance(video_id, (str, int))):
            raise ApiError(400, f"'video_id' must be a string, got {video_id!r}")
        tasks = body.get("tasks")
        task_ids = None
        if tasks is not None:
            if not isinstance(tasks, list) or not tasks:
                raise ApiError(400, "'tasks' must be a non-empty list of task ids (or tasks with 'id')")
            task_ids = [t.get("id") if isinstance(t, dict) else t for t in tasks]
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in task_ids):
                raise ApiError(400, f"'tasks' must hold integer task ids, got {tasks[:5]!r}")
        if ctx.ls.client() is None:
            raise ApiError(400, "bulk pre-annotation pushes predictions to Label Studio: set LABEL_STUDIO_URL and "
                                "LABEL_STUDIO_API_KEY (or connect the project so that /setup tells us)")  # fmt: skip
        assert ctx.runner is not None
        job_id = ctx.runner.submit("preannotate", project_id, "preannotate", trigger="api",
                                   video_id=None if video_id is None else str(video_id), task_ids=task_ids,
                                   force=bool(body.get("force", False)))  # fmt: skip
        return {"job": job_id}, 202

    @app.get("/jobs")
    def list_jobs() -> Any:
        limit = _query_int("limit") or 100
        with session_scope(ctx.sessions) as session:
            rows = db_jobs.list_jobs(session=session, project_id=_query_int("project"), kind=request.args.get("kind"),
                                     state=request.args.get("state"), limit=max(1, min(limit, 1000)))  # fmt: skip
            return {"jobs": [job_json(j) for j in rows]}

    @app.get("/jobs/<job_id>")
    def get_job(job_id: str) -> Any:
        with session_scope(ctx.sessions) as session:
            job = db_jobs.get_job(session=session, job_id=job_id)
            if job is None:
                raise ApiError(404, f"no job {job_id!r}")
            return job_json(job)

    app.register_blueprint(training_routes)  # /train, /versions/<name>/... (backend.http.versions)
    return app


def _register_errors(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api(exc: ApiError) -> Any:
        return _error(exc.status, exc.message, **exc.extra)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        resp = exc.get_response()
        resp.set_data(json.dumps({"error": exc.description or exc.name}))
        resp.content_type = "application/json"
        return resp

    @app.errorhandler(RequestFormatError)
    @app.errorhandler(WebhookPayloadError)
    @app.errorhandler(AnnotationFormatError)
    def _bad_input(exc: Exception) -> Any:
        return _error(400, str(exc))

    @app.errorhandler(ConflictError)
    def _conflict(exc: ConflictError) -> Any:
        return _error(409, str(exc))

    @app.errorhandler(NotFoundError)
    def _not_found(exc: NotFoundError) -> Any:
        return _error(404, str(exc))

    @app.errorhandler(ImageUnavailableError)
    def _image(exc: ImageUnavailableError) -> Any:
        return _error(422, str(exc), url=exc.url)

    @app.errorhandler(ModelUnavailableError)
    @app.errorhandler(JobQueueError)
    def _unavailable(exc: Exception) -> Any:
        logger.error("%s %s: %s", request.method, request.path, exc)
        return _error(503, str(exc))

    @app.errorhandler(OperationalError)
    def _database(exc: OperationalError) -> Any:
        logger.error(
            "%s %s: database unavailable: %s", request.method, request.path, str(exc).splitlines()[0]
        )
        return _error(503, "database unavailable")

    @app.errorhandler(Exception)
    def _bug(exc: Exception) -> Any:
        logger.exception("%s %s failed (tasks %s)", request.method, request.path, g.get("task_ids"))
        return _error(500, f"internal error ({type(exc).__name__}); see the backend log")
