"""64-bit Label Studio ids on PostgreSQL; deleted-annotation tombstones indexed by annotation id.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

PostgreSQL's INTEGER stops at 2**31-1 while Label Studio's ids (and the service's input limits)
go to 2**63-1: every column holding a project, task, annotation or user id becomes BIGINT. SQLite's
INTEGER is 64-bit already and is left alone. `deleted_annotations` replaces the scan of every stored
ANNOTATIONS_DELETED payload (`backend.services.events`); it is filled from those payloads here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> columns holding a Label Studio id
LS_ID_COLUMNS = {
    "projects": ("id",),
    "videos": ("project_id",),
    "tasks": ("id", "project_id"),
    "model_versions": ("project_id",),
    "predictions": ("task_id",),
    "annotations": ("id", "task_id", "project_id", "completed_by"),
    "corrections": ("annotation_id", "task_id", "project_id"),
    "jobs": ("project_id",),
    "webhook_events": ("project_id", "annotation_id"),
}
_MAX_ID = 2**63 - 1


def _alter(kind: type[sa.types.TypeEngine], existing: type[sa.types.TypeEngine]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in LS_ID_COLUMNS.items():
        for column in columns:
            op.alter_column(table, column, type_=kind(), existing_type=existing())


def _backfill() -> None:
    """One tombstone per annotation id named by a recorded ANNOTATIONS_DELETED."""
    bind = op.get_bind()
    events = sa.table("webhook_events", sa.column("project_id", sa.BigInteger), sa.column("payload", sa.JSON),
                      sa.column("action", sa.String))  # fmt: skip
    seen: dict[int, int | None] = {}
    for project_id, payload in bind.execute(
        sa.select(events.c.project_id, events.c.payload).where(events.c.action == "ANNOTATIONS_DELETED")
    ):
        for entry in (payload or {}).get("annotations") or []:
            value = entry.get("id") if isinstance(entry, dict) else entry
            if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= _MAX_ID:
                seen.setdefault(value, project_id)
    if seen:
        tombstones = sa.table("deleted_annotations", sa.column("annotation_id", sa.BigInteger),
                              sa.column("project_id", sa.BigInteger), sa.column("deleted_at", sa.DateTime))  # fmt: skip
        now = datetime.now(UTC)
        rows = [{"annotation_id": a, "project_id": p, "deleted_at": now} for a, p in seen.items()]
        bind.execute(tombstones.insert(), rows)


def upgrade() -> None:
    """BIGINT ids on PostgreSQL; the tombstone table, filled from past deletes."""
    _alter(sa.BigInteger, sa.Integer)
    op.create_table(
        "deleted_annotations",
        sa.Column("annotation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False,
                  nullable=False),  # fmt: skip
        sa.Column("project_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("annotation_id", name=op.f("pk_deleted_annotations")),
    )
    _backfill()


def downgrade() -> None:
    """Back to 0001 (ids beyond 2**31-1 make this fail on PostgreSQL, as they must)."""
    op.drop_table("deleted_annotations")
    _alter(sa.Integer, sa.BigInteger)
