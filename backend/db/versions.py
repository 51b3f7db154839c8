"""Model versions: create, update, list, and the one serving version per project (promote/rollback)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.queries import (
    ConflictError,
    NotFoundError,
    _locked,
    upsert_project,
)
from backend.db.tables import (
    MODEL_STATES,
    ModelVersion,
    utcnow,
)

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- model versions


def _version(session: Session, name: str, lock: bool = False) -> ModelVersion:
    stmt = select(ModelVersion).where(ModelVersion.name == name)
    version = session.scalars(_locked(session, stmt) if lock else stmt).first()
    if version is None:
        raise NotFoundError(f"model version {name!r} does not exist")
    return version


def create_model_version(
    *,
    session: Session,
    name: str,
    backbone: str,
    project_id: int | None = None,
    head_path: str | None = None,
    state: str = "candidate",
    metrics: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    training_summary: Mapping[str, Any] | None = None,
    parent: str | None = None,
) -> ModelVersion:
    """Register a version (not serving: promote with `set_serving`).

    Raises:
        ConflictError: the name is taken. ValueError: an unknown state, or "serving".
    """
    if state not in MODEL_STATES or state == "serving":
        raise ValueError(f"state must be one of {[s for s in MODEL_STATES if s != 'serving']}, got {state!r}")
    if session.scalar(select(ModelVersion.id).where(ModelVersion.name == name)) is not None:
        raise ConflictError(f"model version {name!r} already exists")
    if project_id is not None:
        upsert_project(session=session, project_id=project_id)
    version = ModelVersion(
        name=name,
        backbone=backbone,
        project_id=project_id,
        head_path=head_path,
        state=state,
        metrics=dict(metrics or {}),
        config=dict(config or {}),
        training_summary=dict(training_summary or {}),
        parent=parent,
    )
    session.add(version)
    session.flush()
    return version


def get_model_version(*, session: Session, name: str) -> ModelVersion | None:
    return session.scalars(select(ModelVersion).where(ModelVersion.name == name)).first()


def update_model_version(
    *,
    session: Session,
    name: str,
    state: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    training_summary: Mapping[str, Any] | None = None,
    head_path: str | None = None,
) -> ModelVersion:
    """Set the fields given (state to candidate/rejected/retired/failed; serving goes through `set_serving`)."""
    version = _version(session, name, lock=True)
    if state is not None:
        if state not in MODEL_STATES or state == "serving":
            raise ValueError(f"state {state!r}: use set_serving to serve; others are {MODEL_STATES}")
        if version.state == "serving":
            raise ConflictError(f"{name!r} is serving: promote another version instead of changing its state")
        version.state = state
    if metrics is not None:
        version.metrics = dict(metrics)
    if training_summary is not None:
        version.training_summary = dict(training_summary)
    if head_path is not None:
        version.head_path = head_path
    session.flush()
    return version


def serving_version(*, session: Session, project_id: int | None = None) -> ModelVersion | None:
    """The serving version of a project, else the global serving version, else None."""
    stmt = select(ModelVersion).where(ModelVersion.state == "serving")
    if project_id is not None:
        found = session.scalars(stmt.where(ModelVersion.project_id == project_id)).first()
        if found is not None:
            return found
    return session.scalars(stmt.where(ModelVersion.project_id.is_(None))).first()


def set_serving(*, session: Session, name: str) -> ModelVersion:
    """Serve `name` in its scope (its project, or global); the previous serving one becomes retired.

    Used for promotion and for rollback (a retired or rejected version can be served again).

    Raises:
        NotFoundError: no such version. ConflictError: the version failed (it has no usable weights).
    """
    version = _version(session, name, lock=True)
    if version.state == "failed":
        raise ConflictError(f"model version {name!r} failed and cannot serve")
    if version.state == "serving":
        return version
    scope = (
        ModelVersion.project_id.is_(None)
        if version.project_id is None
        else ModelVersion.project_id == version.project_id
    )
    for previous in session.scalars(
        _locked(session, select(ModelVersion).where(ModelVersion.state == "serving", scope))
    ):
        previous.state = "retired"
        logger.info("model version %s retired (replaced by %s)", previous.name, name)
    session.flush()  # the partial unique index allows one serving row per scope
    version.state, version.promoted_at = "serving", utcnow()
    session.flush()
    return version


def list_versions(*, session: Session, project_id: int | None = None) -> list[ModelVersion]:
    """All versions (oldest first); with `project_id`, that project's plus the global ones."""
    stmt = select(ModelVersion)
    if project_id is not None:
        stmt = stmt.where((ModelVersion.project_id == project_id) | ModelVersion.project_id.is_(None))
    return list(session.scalars(stmt.order_by(ModelVersion.created_at, ModelVersion.id)))
