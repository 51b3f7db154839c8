"""Model versions: create, update, list, the one serving version per project (promote/rollback), gate verdicts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from annotation_io.jsonio import finite_json
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


_SERVING = (select(ModelVersion.project_id, ModelVersion.name, ModelVersion.backbone, ModelVersion.head_path)
            .where(ModelVersion.state == "serving",
                   (ModelVersion.project_id == bindparam("project_id")) | ModelVersion.project_id.is_(None)))  # fmt: skip


def serving_fields(*, session: Session, project_id: int | None = None) -> tuple[str, str, str | None] | None:
    """(name, backbone, head_path) of `serving_version`'s answer, in one statement built once
    (it is asked on every /setup and /predict; no JSON column is read)."""
    rows = {pid: (name, backbone, head) for pid, name, backbone, head in
            session.execute(_SERVING, {"project_id": project_id})}  # fmt: skip
    return rows.get(project_id) if project_id is not None and project_id in rows else rows.get(None)


# Namespace of the advisory locks that serialise serving changes (pg_advisory_xact_lock's first key).
_PG_SERVING_LOCK = 0x5E7E


def lock_serving_scope(*, session: Session, project_id: int | None) -> None:
    """Waits until no other transaction changes the serving version of this scope; call first in one.

    Without it, two promotions of one project on PostgreSQL (by hand and by the gate, or two at once)
    each saw no "p<project>-v0" and no serving row of the other's and failed on the unique indexes
    (the second a 500). An advisory lock held to the end of the transaction; SQLite's write
    transactions are exclusive already (BEGIN IMMEDIATE).
    """
    if session.get_bind().dialect.name == "postgresql":
        key = -1 if project_id is None else project_id % 2**31  # int4; a shared key only serialises more
        session.execute(text("SELECT pg_advisory_xact_lock(:ns, :key)"), {"ns": _PG_SERVING_LOCK, "key": key})


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


def remember_previous(*, session: Session, project_id: int, serving_name: str, backbone_version: str,
                      metrics: Mapping[str, Any] | None = None) -> str | None:  # fmt: skip
    """Before a project's first own version serves: registers what served it until then.

    The project's "p<project>-v0" (state retired) stands for the global version (its head) or the
    backbone alone, so that promoting it rolls the project back. Nothing is done when the project
    already has a serving version of its own, or a v0.

    Returns:
        The v0 name, or None when the project already serves its own version.
    """
    current = serving_version(session=session, project_id=project_id)
    if current is not None and current.project_id is not None:
        return None
    name = f"p{project_id}-v0"
    if get_model_version(session=session, name=name) is None:
        create_model_version(
            session=session, name=name, backbone=current.backbone if current is not None else backbone_version,
            project_id=project_id, head_path=current.head_path if current is not None else None, state="retired",
            metrics=None if metrics is None else finite_json(metrics), parent=serving_name,
            training_summary={"baseline_of": serving_name},
        )  # fmt: skip
        logger.info("project %s: %s registered for %s (rollback target)", project_id, name, serving_name)
    return name


def apply_gate_verdict(*, session: Session, candidate: str, project_id: int, promote: bool, judged_against: str,
                       gate: Mapping[str, Any], holdout: Mapping[str, Any], baseline_holdout: Mapping[str, Any],
                       backbone_version: str) -> str:  # fmt: skip
    """Records the gate's figures on a candidate and promotes or rejects it; call in ONE transaction.

    A promotion in a project that has no version of its own yet first registers that project's
    "p<project>-v0" (`remember_previous`), so that a manual rollback can return to it. When the
    serving version is no longer `judged_against` (a manual promotion while the candidate trained),
    the candidate is left a candidate.

    Args:
        gate: the verdict as JSON; holdout / baseline_holdout: the candidate's / serving version's
            held-out figures.

    Returns:
        "promoted", "rejected" or "candidate".

    Raises:
        NotFoundError: the candidate is not registered.
    """
    lock_serving_scope(session=session, project_id=project_id)
    row = _version(session, candidate)
    metrics = finite_json({**(row.metrics or {}), "gate": dict(gate), "holdout": dict(holdout)})
    current = serving_version(session=session, project_id=project_id)
    current_name = current.name if current is not None else None
    if current_name is not None and current_name != judged_against:
        metrics["gate"]["reason"] += f"; not applied: {current_name} was promoted meanwhile"
        update_model_version(session=session, name=candidate, metrics=metrics)
        return "candidate"
    if not promote:
        update_model_version(session=session, name=candidate, metrics=metrics, state="rejected")
        return "rejected"
    update_model_version(session=session, name=candidate, metrics=metrics)
    remember_previous(session=session, project_id=project_id, serving_name=judged_against,
                      backbone_version=backbone_version, metrics={"holdout": dict(baseline_holdout)})  # fmt: skip
    set_serving(session=session, name=candidate)
    return "promoted"
