"""Database operations as plain functions with a keyword-only `session`; callers own the transaction.

Writes are idempotent where Label Studio can repeat itself: rows keyed by LS ids are inserted with
``INSERT ... ON CONFLICT`` (SQLite and PostgreSQL alike), an annotation only moves forward in LS
`updated_at`, and webhook events are deduplicated by key. No function commits; wrap calls in
`backend.db.session.session_scope`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Select, bindparam, case, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from annotation_io.types import Person
from backend.db.persons import persons_to_json
from backend.db.tables import (
    CORRECTION_KINDS,
    Annotation,
    Base,
    Correction,
    Job,
    Prediction,
    Project,
    Task,
    VideoRecord,
    utcnow,
)
from backend.limits import TRACK_IDS

logger = logging.getLogger(__name__)

NO_MODEL_VERSION = "(none)"  # metrics key for annotations made without a stored prediction


class CorrectionFields(Protocol):
    """What a correction row stores about one joint (`backend.services.corrections.CorrectionRow`)."""

    joint: int
    kind: str
    track_id: int | None
    pred_x: float | None
    pred_y: float | None
    final_x: float | None
    final_y: float | None
    distance_px: float | None
    head_size_px: float | None


class NotFoundError(LookupError):
    """A row the call needs (task, model version, job) is not stored."""


class ConflictError(ValueError):
    """The call contradicts stored state (a name taken, a job already active or finished)."""


def _aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def parse_ls_datetime(value: str) -> datetime:
    """Parse an LS timestamp (``2024-05-01T12:00:00.123456Z``) as aware UTC; LS writes naive ones in UTC."""
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: year 1 or 9999 shifted to UTC
        raise ValueError(f"not an ISO 8601 timestamp within years 1-9999 UTC: {str(value)[:40]!r}") from exc


def _json_list(items: Sequence[Mapping[str, Any]], name: str) -> list[dict[str, Any]]:
    """A copy of LS result items, refused early (naming where) if it holds NaN/inf, which JSON cannot."""
    out = [dict(item) for item in items]
    try:
        json.dumps(out, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"{name} holds a NaN or infinite number, which JSON cannot store: {exc}") from exc
    except TypeError as exc:
        raise ValueError(f"{name} is not JSON-serialisable: {exc}") from exc
    return out


def _insert(session: Session, table: type[Base]) -> Any:
    """INSERT with ON CONFLICT support for the session's dialect."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _fresh(stmt: Select[Any]) -> Select[Any]:
    # Rows changed by Core statements must not be served stale from the identity map.
    return stmt.execution_options(populate_existing=True)


def _locked(session: Session, stmt: Select[Any]) -> Select[Any]:
    # Row lock on PostgreSQL; SQLite transactions are already exclusive (BEGIN IMMEDIATE).
    return _fresh(stmt.with_for_update() if session.get_bind().dialect.name == "postgresql" else stmt)


def _require_task(session: Session, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None:
        raise NotFoundError(f"task {task_id} is not stored: call upsert_task first")
    return task


# ----------------------------------------------------------------------------- projects, videos, tasks


def upsert_project(
    *, session: Session, project_id: int, title: str | None = None, label_config: str | None = None
) -> Project:
    """Create the project row if missing; set the fields given (None leaves a field unchanged).

    A project already in this session (a batch of webhook events) costs no statement if unchanged."""
    project = session.get(Project, project_id)
    if project is None:
        session.execute(
            _insert(session, Project).values(id=project_id).on_conflict_do_nothing(index_elements=["id"])
        )
        project = session.scalars(_fresh(select(Project).where(Project.id == project_id))).one()
    if title is not None and project.title != title:
        project.title = title
    if label_config is not None and project.label_config != label_config:
        project.label_config = label_config
    session.flush()
    return project


def upsert_video(
    *,
    session: Session,
    project_id: int,
    key: str,
    nframes: int | None = None,
    fps: float | None = None,
    width: int | None = None,
    height: int | None = None,
) -> VideoRecord:
    """Get or create the video `key` of a project; set the fields given."""
    upsert_project(session=session, project_id=project_id)
    stmt = _insert(session, VideoRecord).values(project_id=project_id, key=key)
    session.execute(stmt.on_conflict_do_nothing(index_elements=["project_id", "key"]))
    video = session.scalars(
        _fresh(select(VideoRecord).where(VideoRecord.project_id == project_id, VideoRecord.key == key))
    ).one()
    for name, value in (("nframes", nframes), ("fps", fps), ("width", width), ("height", height)):
        if value is not None:
            setattr(video, name, value)
    session.flush()
    return video


def take_track_ids(*, session: Session, video_id: int, count: int, floor: int) -> int | None:
    """Takes `count` track ids for people new to a request, in one atomic update of the video row.

    Two requests on one video may both read `next_track_id` before either records; the update (not a
    read and a write) gives each its own ids. The row stays locked until the session commits.

    Args:
        count: ids wanted (0: only raise `next_track_id` to `floor`).
        floor: the least id to give (above the ids the request's known people carry).

    Returns:
        The first id taken, or None when the 32-bit ids would run out (nothing is changed).
    """
    if floor > TRACK_IDS[1] - count:  # a label's id 2**31-1 makes floor 2**31: PostgreSQL refused that
        return None  # parameter beside the INTEGER column ("integer out of range", HTTP 500 on every /predict)
    start = case((VideoRecord.next_track_id < floor, floor), else_=VideoRecord.next_track_id)
    stmt = (
        update(VideoRecord)
        .where(VideoRecord.id == video_id, start <= TRACK_IDS[1] - count)
        .values(next_track_id=start + count)
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).rowcount != 1:
        return None
    taken = session.scalars(_fresh(select(VideoRecord.next_track_id).where(VideoRecord.id == video_id))).one()
    return int(taken) - count


def upsert_task(
    *,
    session: Session,
    task_id: int,
    project_id: int,
    data: Mapping[str, Any] | None = None,
    image: str | None = None,
    video_key: str | None = None,
    frame_index: int | None = None,
    nframes: int | None = None,
) -> Task:
    """Create or update an LS task; `video_key` (LS data `video_id`) links it to its video row."""
    video = None
    if video_key is not None:
        video = upsert_video(session=session, project_id=project_id, key=video_key, nframes=nframes)
    else:
        upsert_project(session=session, project_id=project_id)
    stmt = _insert(session, Task).values(id=task_id, project_id=project_id, data=dict(data or {}))
    session.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))
    task = session.scalars(_fresh(select(Task).where(Task.id == task_id))).one()
    if task.project_id != project_id:
        raise ConflictError(f"task {task_id} is stored under project {task.project_id}, not {project_id}")
    if data is not None:
        task.data = dict(data)
    if image is not None:
        task.image = image
    if video is not None:
        task.video_id = video.id
    if frame_index is not None:
        task.frame_index = frame_index
    session.flush()
    return task


# ----------------------------------------------------------------------------- predictions, annotations


def record_prediction(
    *,
    session: Session,
    task_id: int,
    model_version: str,
    result: Sequence[Mapping[str, Any]],
    persons: Sequence[Person],
    score: float | None = None,
) -> Prediction:
    """Store what `model_version` proposed for a task; serving the same version again replaces it."""
    _require_task(session, task_id)
    values = {
        "task_id": task_id,
        "model_version": model_version,
        "result": _json_list(result, f"prediction result of task {task_id}"),
        "persons": persons_to_json(persons),
        "score": score,
        "created_at": utcnow(),
    }
    stmt = _insert(session, Prediction).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["task_id", "model_version"],
        set_={k: stmt.excluded[k] for k in ("result", "persons", "score", "created_at")},
    )
    session.execute(stmt)
    return session.scalars(
        _fresh(
            select(Prediction).where(Prediction.task_id == task_id, Prediction.model_version == model_version)
        )
    ).one()


def latest_prediction(
    *, session: Session, task_id: int, model_version: str | None = None
) -> Prediction | None:
    """The newest prediction of a task (of one model version when given)."""
    stmt = select(Prediction).where(Prediction.task_id == task_id)
    if model_version is not None:
        stmt = stmt.where(Prediction.model_version == model_version)
    return session.scalars(stmt.order_by(Prediction.created_at.desc(), Prediction.id.desc()).limit(1)).first()


_ANNOTATION_UPSERTS: dict[str, Any] = {}
_ANNOTATION_FIELDS = ("task_id", "project_id", "result", "persons", "ls_updated_at", "completed_by", "was_cancelled",
                      "received_at")  # fmt: skip


def _annotation_upsert(dialect: str) -> Any:
    """INSERT of an annotation that replaces only an older, live stored state, RETURNING the row when written.

    Built once per dialect with bound parameters, so that SQLAlchemy compiles it once."""
    if dialect not in _ANNOTATION_UPSERTS:
        table = Annotation.__table__
        names = ("id", "deleted", *_ANNOTATION_FIELDS)
        insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert_(Annotation).values({n: bindparam(n, type_=table.c[n].type) for n in names})
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={name: stmt.excluded[name] for name in _ANNOTATION_FIELDS},
            where=Annotation.deleted.is_(False) & (Annotation.ls_updated_at < stmt.excluded.ls_updated_at),
        )
        _ANNOTATION_UPSERTS[dialect] = stmt.returning(Annotation)
    return _ANNOTATION_UPSERTS[dialect]


def upsert_annotation(
    *,
    session: Session,
    annotation_id: int,
    task_id: int,
    project_id: int,
    result: Sequence[Mapping[str, Any]],
    persons: Sequence[Person],
    ls_updated_at: datetime,
    completed_by: int | None = None,
    was_cancelled: bool = False,
) -> tuple[Annotation, bool]:
    """Store an LS annotation state; only a strictly newer `ls_updated_at` replaces the stored one.

    The same event twice, or an older state arriving late, leaves the row as it is. A deleted
    annotation stays deleted (LS never revives an id), and late events for it change nothing.

    Returns:
        The row and whether this call changed it (created or replaced).
    """
    updated = _aware(ls_updated_at, "ls_updated_at")
    _require_task(session, task_id)
    upsert_project(session=session, project_id=project_id)
    values = {
        "task_id": task_id,
        "project_id": project_id,
        "result": _json_list(result, f"result of annotation {annotation_id}"),
        "persons": persons_to_json(persons),
        "ls_updated_at": updated,
        "completed_by": completed_by,
        "was_cancelled": was_cancelled,
        "received_at": utcnow(),
    }
    stmt = _annotation_upsert(session.get_bind().dialect.name)
    params = {"id": annotation_id, "deleted": False, **values}
    row = session.scalars(stmt, params, execution_options={"populate_existing": True}).first()
    if row is not None:
        return row, True
    row = session.scalars(_fresh(select(Annotation).where(Annotation.id == annotation_id))).one()
    logger.debug("annotation %s: event at %s ignored (stored %s, deleted=%s)", annotation_id,
                 updated.isoformat(), row.ls_updated_at.isoformat(), row.deleted)  # fmt: skip
    return row, False


def mark_annotations_deleted(
    *, session: Session, annotation_ids: Iterable[int], at: datetime | None = None
) -> list[Annotation]:
    """Mark annotations deleted (the rows and their results are kept); unknown ids are skipped.

    Returns:
        The rows newly marked (already deleted ones are left with their first `deleted_at`).
    """
    ids = sorted(set(annotation_ids))
    when = _aware(at, "at") if at is not None else utcnow()
    rows = (
        session.scalars(_locked(session, select(Annotation).where(Annotation.id.in_(ids)))).all()
        if ids
        else []
    )
    marked = [row for row in rows if not row.deleted]
    for row in marked:
        row.deleted, row.deleted_at = True, when
    session.flush()
    if len(rows) < len(ids):
        logger.info("delete of unknown annotations %s ignored", sorted(set(ids) - {r.id for r in rows}))
    return marked


# ----------------------------------------------------------------------------- corrections


def replace_corrections(
    *,
    session: Session,
    annotation: Annotation,
    rows: Sequence[CorrectionFields],
    model_version: str | None = None,
    prediction_id: int | None = None,
) -> int:
    """Replace all correction rows of an annotation (on every accepted update); returns how many.

    The rows go in as one executemany (one statement, not one per row)."""
    session.execute(delete(Correction).where(Correction.annotation_id == annotation.id))
    now = utcnow()
    values = [
        {"annotation_id": annotation.id, "task_id": annotation.task_id, "project_id": annotation.project_id,
         "model_version": model_version, "prediction_id": prediction_id, "track_id": r.track_id, "joint": r.joint,
         "kind": r.kind, "pred_x": r.pred_x, "pred_y": r.pred_y, "final_x": r.final_x, "final_y": r.final_y,
         "distance_px": r.distance_px, "head_size_px": r.head_size_px, "created_at": now}
        for r in rows
    ]  # fmt: skip
    if values:
        session.execute(insert(Correction.__table__), values)  # Core executemany: one statement
    return len(values)


def _corrections_query(
    project_id: int, since: int | datetime | None, kinds: Collection[str] | None, include_deleted: bool
) -> Select[Any]:
    stmt = select(Correction).join(Annotation, Annotation.id == Correction.annotation_id)
    stmt = stmt.where(Correction.project_id == project_id)
    if not include_deleted:
        stmt = stmt.where(Annotation.deleted.is_(False))
    if isinstance(since, datetime):
        stmt = stmt.where(Correction.created_at > _aware(since, "since"))
    elif since is not None:
        stmt = stmt.where(Correction.id > int(since))
    if kinds is not None:
        unknown = set(kinds) - set(CORRECTION_KINDS)
        if unknown:
            raise ValueError(f"unknown correction kinds {sorted(unknown)}; known: {CORRECTION_KINDS}")
        stmt = stmt.where(Correction.kind.in_(list(kinds)))
    return stmt


def corrections_since(
    *,
    session: Session,
    project_id: int,
    since: int | datetime | None = None,
    kinds: Collection[str] | None = None,
    include_deleted: bool = False,
) -> list[Correction]:
    """Corrections of a project after a correction id (int) or a time, oldest first."""
    stmt = _corrections_query(project_id, since, kinds, include_deleted)
    return list(session.scalars(stmt.order_by(Correction.id)))


def count_corrections_since(
    *,
    session: Session,
    project_id: int,
    job: Job | None = None,
    since: int | datetime | None = None,
    kinds: Collection[str] | None = None,
) -> int:
    """Corrections stored after `job` started (or was created), or after `since`; all when neither."""
    if job is not None:
        since = job.started_at or job.created_at
    stmt = _corrections_query(project_id, since, kinds, include_deleted=False)
    return int(session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
