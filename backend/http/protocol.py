"""Label Studio's ML-backend protocol routes: /health, /setup, /predict, /webhook (a Blueprint).

`GET /health`: status and serving version (503 when the database or the model is down);
`POST /setup`: cheap, remembers the project and its config, returns the serving model version;
`POST /predict`: one result per task, in order; `POST /webhook`: recorded and queued in a few
milliseconds (`backend.services.events`). The request bodies are Label Studio's, as its ML backend
SDK (label-studio-ml) sends them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, g, request
from sqlalchemy.exc import DatabaseError

from backend.http.errors import ApiError, database_unavailable
from backend.http.inputs import current_context, json_body, parse_project_id
from backend.http.ls_model import DCPoseBackend
from backend.predictor_cache import ModelUnavailableError
from backend.services.prediction import serving_model

blueprint = Blueprint("protocol", __name__)


@blueprint.get("/health")
def health() -> Any:
    try:
        version = serving_model(current_context(), None).name
    except (DatabaseError, ModelUnavailableError) as exc:
        if isinstance(exc, DatabaseError) and not database_unavailable(exc):
            raise
        return {"status": "DOWN", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}, 503
    return {"status": "UP", "model_class": "DCPoseBackend", "model_version": version}


@blueprint.post("/setup")
def setup() -> Any:
    ctx = current_context()
    body = json_body()
    schema = body.get("schema")
    if schema is not None and not isinstance(schema, str):
        raise ApiError(400, "'schema' must be the labelling config XML string")
    token = body.get("access_token")
    if token is not None and not isinstance(token, str):  # not echoed: it is a secret
        raise ApiError(400, f"'access_token' must be Label Studio's token string, got {type(token).__name__}")
    hostname = _hostname(body)
    backend = DCPoseBackend(parse_project_id(body.get("project")), schema, context=ctx)  # a bad project or config:
    ctx.ls.learn(hostname, token)  # refused before Label Studio's address and token are taken
    backend.remember_project()
    answer: dict[str, Any] = {"model_version": backend.model_version}
    config = backend.parsed_label_config
    if config is not None and config.unmapped:
        # Left out of predictions; the project is served with the joints that do map.
        answer["unmapped_labels"] = list(config.unmapped)
        answer["message"] = (f"keypoint labels naming no PoseTrack joint are left out: {', '.join(config.unmapped)}")
    return answer


def _hostname(body: dict[str, Any]) -> str | None:
    """/setup's `hostname` (Label Studio's URL, or empty): a string whose host and port parse.

    Raises:
        ApiError: not a string, or a URL Python cannot parse ("http://[::1", port 99999). It is not
            echoed: it may carry a password.
    """
    hostname = body.get("hostname")
    if hostname is not None and not isinstance(hostname, str):
        raise ApiError(400, f"'hostname' must be Label Studio's URL string, got {type(hostname).__name__}")
    try:
        if hostname:
            urlsplit(hostname).port  # noqa: B018  (parses host and port: raises on a bad one)
    except ValueError:
        raise ApiError(400, "'hostname' must be Label Studio's URL, like http://localhost:8080; its host or port "
                            "does not parse (the URL is not shown: it may hold a password)") from None
    return hostname


@blueprint.post("/predict")
def predict() -> Any:
    body = json_body()
    tasks = body.get("tasks")
    if isinstance(tasks, list):
        g.task_ids = [t.get("id") for t in tasks if isinstance(t, dict)]
    label_config = body.get("label_config")
    if label_config is not None and not isinstance(label_config, str):
        raise ApiError(400, "'label_config' must be the labelling config XML string")
    params = body.get("params") if isinstance(body.get("params"), dict) else {}
    context = params.get("context") if isinstance(params.get("context"), dict) else None
    backend = DCPoseBackend(parse_project_id(body.get("project")), label_config, context=current_context())
    results = backend.predict(tasks, context=context)  # type: ignore[arg-type]
    return {"results": results, "model_version": results[0]["model_version"]}


@blueprint.post("/webhook")
def webhook() -> Any:
    body = json_body()
    backend = DCPoseBackend(None, None, context=current_context())
    response, status = backend.fit(None, body, backend_url=request.host_url.rstrip("/"))
    return response, status
