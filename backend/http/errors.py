"""The one error mapping: every failure becomes JSON `{"error": reason}` with its HTTP status.

Bad input 400, unauthorised 401 (with WWW-Authenticate), unknown job or version 404, a task id
stored under another project or a version that cannot serve 409, oversized body 413, unreachable
image 422 (with the URL, never a token), model, database, queue or job runner unavailable 503; 500
only for bugs, logged with the request's task ids. Routes raise typed exceptions (the services' own,
or `ApiError` for request-shape problems) and never build error responses themselves.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, jsonify, request
from sqlalchemy.exc import DatabaseError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from annotation_io.errors import AnnotationFormatError
from backend.context import NoRunnerError
from backend.db.queries import ConflictError, NotFoundError
from backend.http.inputs import RequestEncodingError, RequestFormatError
from backend.jobs.registry import JobQueueError
from backend.limits import LimitError
from backend.ls.frames import ImageUnavailableError
from backend.predictor_cache import ModelUnavailableError
from backend.services.events import WebhookPayloadError
from backend.services.preannotate import PreannotateSetupError
from backend.services.training import TrainingRequestError

logger = logging.getLogger(__name__)

# Exception type -> HTTP status; the most specific registered class of an exception wins.
STATUS: dict[type[Exception], int] = {
    RequestFormatError: 400,
    RequestEncodingError: 415,
    LimitError: 400,
    WebhookPayloadError: 400,
    AnnotationFormatError: 400,
    TrainingRequestError: 400,
    PreannotateSetupError: 400,
    NotFoundError: 404,
    ConflictError: 409,
    ImageUnavailableError: 422,
    ModelUnavailableError: 503,
    JobQueueError: 503,
    NoRunnerError: 503,
}


class ApiError(Exception):
    """An HTTP error with a JSON body {"error": message, **extra} (and optional response headers)."""

    def __init__(self, status: int, message: str, *, headers: Mapping[str, str] | None = None,
                 **extra: Any) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, dict(headers or {}), extra


def error_response(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    """The JSON error body every failure gets."""
    return jsonify({"error": message, **extra}), status


def register_error_handlers(app: Flask) -> None:
    """Installs the mapping on `app`."""

    @app.errorhandler(ApiError)
    def _api(exc: ApiError) -> Any:
        resp, status = error_response(exc.status, exc.message, **exc.extra)
        resp.headers.update(exc.headers)
        return resp, status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        resp = exc.get_response()
        resp.set_data(json.dumps({"error": exc.description or exc.name}))
        resp.content_type = "application/json"
        return resp

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> Any:
        limit = app.config["MAX_CONTENT_LENGTH"]
        return error_response(413, f"the request body is larger than MAX_REQUEST_MB ({limit / 2**20:g} MB)")

    def _typed(exc: Exception) -> Any:
        status = next(STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS)
        if status >= 500:
            logger.error("%s %s: %s", request.method, request.path, exc)
        extra = {"url": exc.url} if isinstance(exc, ImageUnavailableError) else {}
        return error_response(status, str(exc), **extra)

    for cls in STATUS:
        app.register_error_handler(cls, _typed)

    @app.errorhandler(Exception)
    def _bug(exc: Exception) -> Any:
        logger.exception("%s %s failed (tasks %s)", request.method, request.path, g.get("task_ids"))
        return error_response(500, f"internal error ({type(exc).__name__}); see the backend log")

    @app.errorhandler(DatabaseError)
    def _database(exc: DatabaseError) -> Any:
        if not database_unavailable(exc):  # IntegrityError, ProgrammingError, DataError: a bug of ours
            return _bug(exc)
        logger.error("%s %s: database unavailable: %s", request.method, request.path, str(exc).splitlines()[0])
        return error_response(503, "database unavailable")


def database_unavailable(exc: BaseException) -> bool:
    """Whether a database error means the database cannot be used (server gone, an SQLite file that is no
    longer a database: plain DatabaseError), rather than a statement of ours that is wrong."""
    return isinstance(exc, OperationalError) or type(exc) is DatabaseError
