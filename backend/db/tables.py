"""SQLAlchemy 2 typed ORM tables: projects, videos, tasks, predictions, annotations, corrections, versions, jobs, events.

Conventions:
- Label Studio (LS) ids are used as primary keys where LS owns the object (projects, tasks,
  annotations); our own objects get autoincrement ids (jobs: uuid4 hex strings).
- Every datetime is timezone-aware UTC in Python (`UTCDateTime`); SQLite stores it as naive UTC text,
  PostgreSQL as `timestamptz`.
- JSON columns use SQLAlchemy's portable `JSON` (TEXT on SQLite, `json` on PostgreSQL). NaN is not
  JSON: the engine rejects it (session.py), and `backend.db.persons.persons_to_json` writes None.
- Keypoints are pixels of the original frame, as everywhere in the project; `persons` columns hold
  `backend.db.persons.persons_to_json` output.
- The schema itself is created by the Alembic migration in `backend/db/migrations/versions/`; a test
  checks that it matches these classes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ModelState = Literal["candidate", "serving", "rejected", "retired", "failed"]
CorrectionKind = Literal["kept", "moved", "deleted", "added"]
JobKind = Literal["train", "preannotate"]
JobState = Literal["queued", "running", "succeeded", "failed", "rejected", "cancelled"]
EventStatus = Literal["received", "processed", "ignored", "failed"]

MODEL_STATES: tuple[str, ...] = get_args(ModelState)
CORRECTION_KINDS: tuple[str, ...] = get_args(CorrectionKind)
JOB_KINDS: tuple[str, ...] = get_args(JobKind)
JOB_STATES: tuple[str, ...] = get_args(JobState)
ACTIVE_JOB_STATES: tuple[str, ...] = ("queued", "running")
FINISHED_JOB_STATES: tuple[str, ...] = ("succeeded", "failed", "rejected", "cancelled")
EVENT_STATUSES: tuple[str, ...] = get_args(EventStatus)

# Constraint names are spelled out so that migrations can name what they drop (Alembic advice).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Sentinel standing for "global" (project_id NULL) in the one-serving-version index: LS project ids
# start at 1.
GLOBAL_SCOPE = -1


# Our own integer ids are cursors (`corrections_since(since_id)`): SQLite must never reuse the ids of
# deleted rows (plain INTEGER PRIMARY KEY does, after the newest rows are deleted).
_AUTOINC = {"sqlite_autoincrement": True}


# Label Studio's ids (projects, tasks, annotations, users) and every column holding one: 64-bit on
# PostgreSQL (BIGINT; SQLite's INTEGER is 64-bit already and must stay INTEGER for rowid primary keys).
LsId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    Naive datetimes are refused on the way in (their zone is unknown); SQLite gets naive UTC (its
    text comparisons then order correctly), PostgreSQL gets the aware value. Values read back are
    always aware UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}: {value!r}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} refused: pass a timezone-aware (UTC) datetime"
            )
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Project(Base):
    """A Label Studio project (id = LS project id)."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(LsId, primary_key=True, autoincrement=False)
    title: Mapped[str | None] = mapped_column(String(512))
    label_config: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class VideoRecord(Base):
    """A video of a project (`key` = LS task data `video_id`). Named so as not to shadow annotation_io's Video."""

    __tablename__ = "videos"
    __table_args__ = (UniqueConstraint("project_id", "key", name="uq_videos_project_id_key"), _AUTOINC)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(LsId, ForeignKey("projects.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(512))
    nframes: Mapped[int | None] = mapped_column(Integer)
    fps: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    # above every track id predicted for this video so far: a person new to a request gets an id of their own
    next_track_id: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Task(Base):
    """One LS task = one video frame (id = LS task id). Several tasks may show the same frame."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_video_id_frame_index", "video_id", "frame_index"),
        Index("ix_tasks_project_id", "project_id"),
    )

    id: Mapped[int] = mapped_column(LsId, primary_key=True, autoincrement=False)
    project_id: Mapped[int] = mapped_column(LsId, ForeignKey("projects.id", ondelete="CASCADE"))
    video_id: Mapped[int | None] = mapped_column(ForeignKey("videos.id", ondelete="SET NULL"))
    frame_index: Mapped[int | None] = mapped_column(Integer)
    image: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelVersion(Base):
    """A model version: backbone plus optional fine-tuned head; at most one serving per project scope."""

    __tablename__ = "model_versions"
    __table_args__ = (CheckConstraint(_in("state", MODEL_STATES), name="state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    project_id: Mapped[int | None] = mapped_column(LsId, ForeignKey("projects.id", ondelete="CASCADE"))
    backbone: Mapped[str] = mapped_column(String(128))
    head_path: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="candidate")
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    training_summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    parent: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# One serving version per project (and one global): a partial unique index on the scope.
Index(
    "uq_model_versions_serving_scope",
    func.coalesce(ModelVersion.project_id, GLOBAL_SCOPE),
    unique=True,
    sqlite_where=text("state = 'serving'"),
    postgresql_where=text("state = 'serving'"),
)


class Prediction(Base):
    """What a model version proposed for a task; re-serving the same version replaces it."""

    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("task_id", "model_version", name="uq_predictions_task_id_model_version"),
        _AUTOINC,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(LsId, ForeignKey("tasks.id", ondelete="CASCADE"))
    model_version: Mapped[str] = mapped_column(String(128))
    result: Mapped[list[Any]] = mapped_column(JSON, default=list)
    persons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    score: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Annotation(Base):
    """The current state of an LS annotation (id = LS annotation id); deletion only marks it."""

    __tablename__ = "annotations"
    __table_args__ = (
        Index("ix_annotations_task_id", "task_id"),
        Index("ix_annotations_project_id", "project_id"),
    )

    id: Mapped[int] = mapped_column(LsId, primary_key=True, autoincrement=False)
    task_id: Mapped[int] = mapped_column(LsId, ForeignKey("tasks.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(LsId, ForeignKey("projects.id", ondelete="CASCADE"))
    result: Mapped[list[Any]] = mapped_column(JSON, default=list)
    persons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    ls_updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_by: Mapped[int | None] = mapped_column(LsId)
    was_cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Correction(Base):
    """One joint of one person of an annotation, compared with the prediction it started from."""

    __tablename__ = "corrections"
    __table_args__ = (
        CheckConstraint(_in("kind", CORRECTION_KINDS), name="kind"),
        CheckConstraint("joint >= 0 AND joint <= 16", name="joint"),
        Index("ix_corrections_annotation_id", "annotation_id"),
        Index("ix_corrections_project_id_id", "project_id", "id"),
        _AUTOINC,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    annotation_id: Mapped[int] = mapped_column(LsId, ForeignKey("annotations.id", ondelete="CASCADE"))
    task_id: Mapped[int] = mapped_column(LsId, ForeignKey("tasks.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(LsId, ForeignKey("projects.id", ondelete="CASCADE"))
    model_version: Mapped[str | None] = mapped_column(String(128))
    prediction_id: Mapped[int | None] = mapped_column(ForeignKey("predictions.id", ondelete="SET NULL"))
    track_id: Mapped[int | None] = mapped_column(Integer)
    joint: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8))
    pred_x: Mapped[float | None] = mapped_column(Float)
    pred_y: Mapped[float | None] = mapped_column(Float)
    final_x: Mapped[float | None] = mapped_column(Float)
    final_y: Mapped[float | None] = mapped_column(Float)
    distance_px: Mapped[float | None] = mapped_column(Float)
    head_size_px: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """A background job (training or bulk pre-annotation); at most one active per (project, kind)."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("kind", JOB_KINDS), name="kind"),
        CheckConstraint(_in("state", JOB_STATES), name="state"),
        Index("ix_jobs_project_id_kind", "project_id", "kind"),
        # The database itself refuses a second queued/running job of a kind for a project.
        Index(
            "uq_jobs_active_project_kind",
            "project_id",
            "kind",
            unique=True,
            sqlite_where=text("state IN ('queued', 'running')"),
            postgresql_where=text("state IN ('queued', 'running')"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[int] = mapped_column(LsId)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pid: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))
    # Set by POST /jobs/<id>/cancel on a running job; the job stops at its next stored progress report.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookEvent(Base):
    """A received webhook, deduplicated by `dedup_key`; `payload` is sanitised (no tokens)."""

    __tablename__ = "webhook_events"
    __table_args__ = (CheckConstraint(_in("status", EVENT_STATUSES), name="status"), _AUTOINC)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[int | None] = mapped_column(LsId)
    annotation_id: Mapped[int | None] = mapped_column(LsId)
    dedup_key: Mapped[str] = mapped_column(String(64), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="received")
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DeletedAnnotation(Base):
    """A tombstone per deleted LS annotation id: a create that arrives after its delete looks it up here."""

    __tablename__ = "deleted_annotations"

    annotation_id: Mapped[int] = mapped_column(LsId, primary_key=True, autoincrement=False)
    project_id: Mapped[int | None] = mapped_column(LsId)
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
