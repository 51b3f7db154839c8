"""Track ids unique in a video across requests: `videos.next_track_id`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

Label Studio asks for one task at a time, and bulk pre-annotation predicts a long video in chunks. Each
request numbered the people it found from 0 (or from above the labels' ids), so two people far apart in
one video could share an id. The video now keeps the next free id (above every predicted one), and the
model numbers new people from there (`backend.services.prediction`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """The column, 0 for the videos already there (their next request numbers from the labels' ids)."""
    op.add_column("videos", sa.Column("next_track_id", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    """Back to 0003: the column goes."""
    with op.batch_alter_table("videos") as batch:
        batch.drop_column("next_track_id")
