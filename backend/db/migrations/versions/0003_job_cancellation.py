"""Job cancellation: the "cancelled" job state and `jobs.cancel_requested_at`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05

``POST /jobs/<id>/cancel`` ends a queued job at once (state "cancelled") and stamps a running one's
`cancel_requested_at`, which the job reads at its next stored progress report
(`backend.jobs.execution.ProgressReporter`). The state CHECK constraint is replaced; SQLite cannot
alter a constraint, so there the table is copied (Alembic's batch mode), and the partial unique index of
active jobs, which the copy does not carry, is made again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = "state IN ('queued', 'running')"
_STATES = "state IN ('queued', 'running', 'succeeded', 'failed', 'rejected'{})"


def _replace_state_check(states: str, *, add_column: bool) -> None:
    """The jobs table with the state CHECK `states`, plus (or minus) `cancel_requested_at`."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.drop_index("uq_jobs_active_project_kind", table_name="jobs")
    with op.batch_alter_table("jobs", recreate="always" if sqlite else "never") as batch:
        batch.drop_constraint(op.f("ck_jobs_state"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_state"), states)
        if add_column:
            batch.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True))
        else:
            batch.drop_column("cancel_requested_at")
    if sqlite:
        op.create_index("uq_jobs_active_project_kind", "jobs", ["project_id", "kind"], unique=True,
                        sqlite_where=sa.text(_ACTIVE))  # fmt: skip


def upgrade() -> None:
    """The "cancelled" state and the cancel request's time."""
    _replace_state_check(_STATES.format(", 'cancelled'"), add_column=True)


def downgrade() -> None:
    """Back to 0002: cancelled jobs become failed (0002 knows no "cancelled"), and the column goes."""
    jobs = sa.table("jobs", sa.column("state", sa.String), sa.column("error", sa.Text))
    op.execute(
        jobs.update()
        .where(jobs.c.state == "cancelled")
        .values(state="failed", error="cancelled (before 0003, a job could not be)")
    )
    _replace_state_check(_STATES.format(""), add_column=False)
