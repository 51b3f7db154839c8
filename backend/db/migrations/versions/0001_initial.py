"""Initial schema: projects, videos, tasks, model versions, predictions, annotations, corrections, jobs, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Written from an autogenerate run against PostgreSQL, then tidied by hand: parents before children,
`UTCDateTime` spelled as its storage type (``DateTime(timezone=True)``), partial unique indexes for
both dialects. tests/backend/db/test_db.py checks that it matches `backend.db.tables`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
# Tables whose integer ids are cursors get AUTOINCREMENT on SQLite (no reuse of deleted ids).
_SERVING = "state = 'serving'"
_ACTIVE = "state IN ('queued', 'running')"


def _pk(table: str, column: str = "id") -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(column, name=op.f(f"pk_{table}"))


def _fk(table: str, column: str, target: str, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"), ondelete=ondelete
    )


def upgrade() -> None:
    """Create every table and index."""
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("title", sa.String(length=512), nullable=True),
        sa.Column("label_config", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        _pk("projects"),
    )
    op.create_table(
        "videos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("nframes", sa.Integer(), nullable=True),
        sa.Column("fps", sa.Float(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        _fk("videos", "project_id", "projects"),
        _pk("videos"),
        sa.UniqueConstraint("project_id", "key", name="uq_videos_project_id_key"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("video_id", sa.Integer(), nullable=True),
        sa.Column("frame_index", sa.Integer(), nullable=True),
        sa.Column("image", sa.Text(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        _fk("tasks", "project_id", "projects"),
        _fk("tasks", "video_id", "videos", ondelete="SET NULL"),
        _pk("tasks"),
    )
    op.create_index("ix_tasks_project_id", "tasks", ["project_id"])
    op.create_index("ix_tasks_video_id_frame_index", "tasks", ["video_id", "frame_index"])
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("backbone", sa.String(length=128), nullable=False),
        sa.Column("head_path", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("training_summary", sa.JSON(), nullable=False),
        sa.Column("parent", sa.String(length=128), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("promoted_at", _TS, nullable=True),
        sa.CheckConstraint(
            "state IN ('candidate', 'serving', 'rejected', 'retired', 'failed')",
            name=op.f("ck_model_versions_state"),
        ),
        _fk("model_versions", "project_id", "projects"),
        _pk("model_versions"),
        sa.UniqueConstraint("name", name=op.f("uq_model_versions_name")),
        sqlite_autoincrement=True,
    )
    # One serving version per project scope (NULL project = global, coalesced to -1).
    op.create_index(
        "uq_model_versions_serving_scope",
        "model_versions",
        [sa.literal_column("coalesce(project_id, -1)")],
        unique=True,
        sqlite_where=sa.text(_SERVING),
        postgresql_where=sa.text(_SERVING),
    )
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("persons", sa.JSON(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        _fk("predictions", "task_id", "tasks"),
        _pk("predictions"),
        sa.UniqueConstraint("task_id", "model_version", name="uq_predictions_task_id_model_version"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "annotations",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("persons", sa.JSON(), nullable=False),
        sa.Column("ls_updated_at", _TS, nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("deleted_at", _TS, nullable=True),
        sa.Column("completed_by", sa.Integer(), nullable=True),
        sa.Column("was_cancelled", sa.Boolean(), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        _fk("annotations", "project_id", "projects"),
        _fk("annotations", "task_id", "tasks"),
        _pk("annotations"),
    )
    op.create_index("ix_annotations_project_id", "annotations", ["project_id"])
    op.create_index("ix_annotations_task_id", "annotations", ["task_id"])
    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("annotation_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=True),
        sa.Column("prediction_id", sa.Integer(), nullable=True),
        sa.Column("track_id", sa.Integer(), nullable=True),
        sa.Column("joint", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("pred_x", sa.Float(), nullable=True),
        sa.Column("pred_y", sa.Float(), nullable=True),
        sa.Column("final_x", sa.Float(), nullable=True),
        sa.Column("final_y", sa.Float(), nullable=True),
        sa.Column("distance_px", sa.Float(), nullable=True),
        sa.Column("head_size_px", sa.Float(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.CheckConstraint("kind IN ('kept', 'moved', 'deleted', 'added')", name=op.f("ck_corrections_kind")),
        sa.CheckConstraint("joint >= 0 AND joint <= 16", name=op.f("ck_corrections_joint")),
        _fk("corrections", "annotation_id", "annotations"),
        _fk("corrections", "prediction_id", "predictions", ondelete="SET NULL"),
        _fk("corrections", "project_id", "projects"),
        _fk("corrections", "task_id", "tasks"),
        _pk("corrections"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_corrections_annotation_id", "corrections", ["annotation_id"])
    op.create_index("ix_corrections_project_id_id", "corrections", ["project_id", "id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("heartbeat_at", _TS, nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.CheckConstraint("kind IN ('train', 'preannotate')", name=op.f("ck_jobs_kind")),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'succeeded', 'failed', 'rejected')", name=op.f("ck_jobs_state")
        ),
        _pk("jobs"),
    )
    op.create_index("ix_jobs_project_id_kind", "jobs", ["project_id", "kind"])
    # At most one queued/running job of a kind per project.
    op.create_index(
        "uq_jobs_active_project_kind",
        "jobs",
        ["project_id", "kind"],
        unique=True,
        sqlite_where=sa.text(_ACTIVE),
        postgresql_where=sa.text(_ACTIVE),
    )
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("annotation_id", sa.Integer(), nullable=True),
        sa.Column("dedup_key", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("processed_at", _TS, nullable=True),
        sa.CheckConstraint(
            "status IN ('received', 'processed', 'ignored', 'failed')", name=op.f("ck_webhook_events_status")
        ),
        _pk("webhook_events"),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_webhook_events_dedup_key")),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    """Drop everything, children first (indexes go with their tables)."""
    for table in (
        "webhook_events",
        "jobs",
        "corrections",
        "annotations",
        "predictions",
        "model_versions",
        "tasks",
        "videos",
        "projects",
    ):
        op.drop_table(table)
