"""Track ids unique in a video across requests: `videos.next_track_id`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

Label Studio asks for one task at a time, and bulk pre-annotation predicts a long video in chunks. Each
request numbered the people it found from 0 (or from above the labels' ids), so two people far apart in
one video could share an id. The video now keeps the next free id (above every predicted one), and the
model numbers new people from there (`backend.services.prediction`). Videos already there start above
the ids of their stored predictions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_MAX_ID = 2**31 - 1  # the column is 32-bit


def upgrade() -> None:
    """The column, set for the videos already there from the track ids of their stored predictions."""
    op.add_column("videos", sa.Column("next_track_id", sa.Integer(), nullable=False, server_default="0"))
    tasks = sa.table("tasks", sa.column("id", sa.BigInteger), sa.column("video_id", sa.Integer))
    predictions = sa.table("predictions", sa.column("task_id", sa.BigInteger), sa.column("persons", sa.JSON))
    videos = sa.table("videos", sa.column("id", sa.Integer), sa.column("next_track_id", sa.Integer))
    bind = op.get_bind()
    rows = bind.execute(sa.select(tasks.c.video_id, predictions.c.persons)
                        .join(predictions, predictions.c.task_id == tasks.c.id)
                        .where(tasks.c.video_id.is_not(None)))  # fmt: skip
    top: dict[int, int] = {}
    for video_id, persons in rows:
        for person in persons if isinstance(persons, list) else []:
            tid = person.get("track_id") if isinstance(person, dict) else None
            if isinstance(tid, int) and not isinstance(tid, bool) and tid + 1 > top.get(video_id, 0):
                top[video_id] = min(tid + 1, _MAX_ID)
    for video_id, next_id in top.items():
        bind.execute(videos.update().where(videos.c.id == video_id).values(next_track_id=next_id))


def downgrade() -> None:
    """Back to 0003: the column goes."""
    with op.batch_alter_table("videos") as batch:
        batch.drop_column("next_track_id")
