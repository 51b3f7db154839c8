"""Model version and training routes (a Blueprint): /versions, /versions/<name>[/curve.png|/promote], /train.

- ``GET|POST /versions[?project=]``: the version names (LS's protocol route), the serving one, and
  details of each.
- ``GET /versions/<name>``: the version with its metrics (training curve, held-out figures, gate
  verdict), config, training data summary and the path of its curve PNG.
- ``GET /versions/<name>/curve.png``: the training curve.
- ``POST /versions/<name>/promote``: serve this version in its scope by hand (promotion or
  rollback, `backend.services.training.promote_version`). 404 for an unknown version, 409 when it
  failed or its head file is missing.
- ``POST /train {"project": 1[, "config": {"epochs": 5, ...}]}`` -> 202 ``{"job": id}``: queues a
  "train" job through `backend.services.training.submit_training`, as START_TRAINING does; while
  one is queued or running for the project, the request coalesces into it and its id is returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, request, send_file

from backend.db import versions as db_versions
from backend.db.session import session_scope
from backend.db.tables import ModelVersion
from backend.http.errors import ApiError
from backend.http.inputs import current_context, json_body, parse_project_id, query_int, required_project
from backend.http.jobs import iso
from backend.services import training
from backend.services.prediction import serving_model
from backend.services.version_files import version_files

blueprint = Blueprint("versions", __name__)


def version_details(version: ModelVersion, model_dir: str | Path) -> dict[str, Any]:
    """A version row with its files, as JSON."""
    curve = version_files(model_dir, version.name)["curve"]
    head = Path(version.head_path) if version.head_path else None
    return {
        "name": version.name,
        "state": version.state,
        "project_id": version.project_id,
        "backbone": version.backbone,
        "parent": version.parent,
        "head_path": version.head_path,
        "head_exists": None if head is None else head.is_file(),
        "metrics": version.metrics,
        "config": version.config,
        "training_summary": version.training_summary,
        "curve_png": str(curve) if curve.is_file() else None,
        "created_at": iso(version.created_at),
        "promoted_at": iso(version.promoted_at),
    }


@blueprint.route("/versions", methods=["GET", "POST"])
def list_versions() -> Any:
    ctx = current_context()
    project_id = query_int("project")
    if project_id is None and request.method == "POST" and request.get_data():
        project_id = parse_project_id(json_body().get("project"))
    serving = serving_model(ctx, project_id)
    with session_scope(ctx.sessions) as session:
        rows = db_versions.list_versions(session=session, project_id=project_id)
        details = [{"name": v.name, "state": v.state, "backbone": v.backbone, "project_id": v.project_id,
                    "parent": v.parent, "metrics": v.metrics, "created_at": iso(v.created_at),
                    "promoted_at": iso(v.promoted_at)} for v in rows]  # fmt: skip
    if serving.name not in {d["name"] for d in details}:
        details.insert(0, {"name": serving.name, "state": "serving", "backbone": serving.spec.backbone,
                           "project_id": None, "builtin": True})  # fmt: skip
    return {"versions": [d["name"] for d in details], "serving": serving.name, "details": details}


@blueprint.get("/versions/<name>")
def version(name: str) -> Any:
    ctx = current_context()
    with session_scope(ctx.sessions) as session:
        row = db_versions.get_model_version(session=session, name=name)
        if row is None:
            raise ApiError(404, f"no model version {name!r}")
        return version_details(row, ctx.settings.model_dir)


@blueprint.get("/versions/<name>/curve.png")
def curve(name: str) -> Any:
    ctx = current_context()
    with session_scope(ctx.sessions) as session:
        known = db_versions.get_model_version(session=session, name=name) is not None
    path = version_files(ctx.settings.model_dir, name)["curve"]
    if not known or not path.is_file():
        raise ApiError(404, f"model version {name!r} has no training curve")
    return send_file(path.resolve(), mimetype="image/png", max_age=0)


@blueprint.post("/versions/<name>/promote")
def promote(name: str) -> Any:
    return training.promote_version(current_context(), name)


@blueprint.post("/train")
def train() -> Any:
    body = json_body()
    project_id = required_project(body)
    job_id = training.submit_training(current_context(), project_id, trigger="api", config=body.get("config"))
    return {"job": job_id}, 202
