"""Bulk reads and writes of one webhook-processing batch (`backend.services.event_processing`).

Each function costs one statement (or one executemany) for the whole batch, not one per event, and
the statements are built once per dialect with bound parameters, so that SQLAlchemy compiles them
once. Plain rows and Core statements only: no ORM objects are loaded or flushed here. Reads take a
`Connection` or a `Session` (from `backend.db.session.read_scope` or `session_scope`); writes run in
the caller's `session_scope` transaction.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from backend.db.queries import CorrectionFields
from backend.db.tables import Annotation, Correction, Prediction, Project, Task, WebhookEvent, utcnow

Reader = Connection | Session
IN_CHUNK = 500  # ids per IN (...) list: far below SQLite's variable limit

_STATEMENTS: dict[tuple[str, ...], Any] = {}


def _chunks(ids: Iterable[int]) -> Iterable[list[int]]:
    items = sorted(set(ids))
    for start in range(0, len(items), IN_CHUNK):
        yield items[start : start + IN_CHUNK]


def _insert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


# ----------------------------------------------------------------------------- reads


def load_events(reader: Reader, event_ids: Collection[int]) -> dict[int, Row[Any]]:
    """The events by id (id, action, project_id, annotation_id, status, payload); absent ids are left out."""
    columns = (WebhookEvent.id, WebhookEvent.action, WebhookEvent.project_id, WebhookEvent.annotation_id,
               WebhookEvent.status, WebhookEvent.payload)  # fmt: skip
    out: dict[int, Row[Any]] = {}
    for chunk in _chunks(event_ids):
        out.update((row.id, row) for row in reader.execute(select(*columns).where(WebhookEvent.id.in_(chunk))))
    return out


def label_configs(reader: Reader, project_ids: Collection[int]) -> dict[int, str | None]:
    """The stored labelling config of each known project."""
    out: dict[int, str | None] = {}
    for chunk in _chunks(project_ids):
        out.update((i, xml) for i, xml in reader.execute(select(Project.id, Project.label_config)
                                                            .where(Project.id.in_(chunk))))  # fmt: skip
    return out


def task_projects(reader: Reader, task_ids: Collection[int]) -> dict[int, int]:
    """The project of each stored task."""
    out: dict[int, int] = {}
    for chunk in _chunks(task_ids):
        out.update((i, p) for i, p in reader.execute(select(Task.id, Task.project_id).where(Task.id.in_(chunk))))
    return out


@dataclass(frozen=True)
class LatestPrediction:
    """A task's latest prediction, as the comparison needs it."""

    id: int
    model_version: str
    persons: list[Any]


def latest_predictions(reader: Reader, task_ids: Collection[int]) -> dict[int, LatestPrediction]:
    """The newest prediction of each task that has one (as `backend.db.queries.latest_prediction`).

    Two statements: the candidates' ids and times (no JSON decoded), then the winners' persons."""
    newest: dict[int, tuple[datetime, int]] = {}
    for chunk in _chunks(task_ids):
        stmt = select(Prediction.task_id, Prediction.created_at, Prediction.id).where(Prediction.task_id.in_(chunk))
        for task_id, created, pid in reader.execute(stmt):
            if task_id not in newest or (created, pid) > newest[task_id]:
                newest[task_id] = (created, pid)
    out: dict[int, LatestPrediction] = {}
    for chunk in _chunks(pid for _, pid in newest.values()):
        stmt = select(Prediction.task_id, Prediction.id, Prediction.model_version, Prediction.persons)
        for task_id, pid, version, persons in reader.execute(stmt.where(Prediction.id.in_(chunk))):
            out[task_id] = LatestPrediction(pid, version, persons or [])
    return out


# ----------------------------------------------------------------------------- writes


@dataclass(frozen=True)
class TaskRow:
    """One task as an annotation event describes it (None: leave the stored value)."""

    id: int
    project_id: int
    data: dict[str, Any] | None
    image: str | None = None
    video_id: int | None = None
    frame_index: int | None = None


def _task_upsert(dialect: str, with_data: bool) -> Any:
    key = ("task", dialect, str(with_data))
    if key not in _STATEMENTS:
        table = Task.__table__
        names = ("id", "project_id", "data", "image", "video_id", "frame_index", "created_at")
        stmt = _insert(dialect)(table).values({n: bindparam(n, type_=table.c[n].type) for n in names})
        set_: dict[str, Any] = {c: func.coalesce(stmt.excluded[c], table.c[c]) for c in ("image", "video_id",
                                                                                       "frame_index")}  # fmt: skip
        if with_data:
            set_["data"] = stmt.excluded.data
        # A task stored under another project is left alone (the caller refused that event already).
        _STATEMENTS[key] = stmt.on_conflict_do_update(index_elements=["id"], set_=set_,
                                                      where=table.c.project_id == stmt.excluded.project_id)  # fmt: skip
    return _STATEMENTS[key]


def upsert_tasks(session: Session, rows: Sequence[TaskRow]) -> None:
    """Creates or updates the tasks (one executemany per kind: with or without `data`)."""
    dialect = session.get_bind().dialect.name
    now = utcnow()
    for with_data in (True, False):
        params = [{"id": r.id, "project_id": r.project_id, "data": r.data if r.data is not None else {},
                   "image": r.image, "video_id": r.video_id, "frame_index": r.frame_index, "created_at": now}
                  for r in rows if (r.data is not None) == with_data]  # fmt: skip
        if params:
            session.execute(_task_upsert(dialect, with_data), params)


def _annotation_upsert(dialect: str) -> Any:
    key = ("annotation", dialect)
    if key not in _STATEMENTS:
        table = Annotation.__table__
        fields = ("task_id", "project_id", "result", "persons", "ls_updated_at", "completed_by", "was_cancelled",
                  "received_at")  # fmt: skip
        stmt = _insert(dialect)(table).values(
            {n: bindparam(n, type_=table.c[n].type) for n in ("id", "deleted", *fields)}
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={name: stmt.excluded[name] for name in fields},
            where=table.c.deleted.is_(False) & (table.c.ls_updated_at < stmt.excluded.ls_updated_at),
        )
        _STATEMENTS[key] = stmt.returning(table.c.id)
    return _STATEMENTS[key]


def write_annotations(session: Session, states: Sequence[Mapping[str, Any]]) -> set[int]:
    """Stores annotation states where each is strictly newer than a live stored one; returns the ids written.

    The rule of `backend.db.queries.upsert_annotation`, for many annotations in one statement
    (SQLAlchemy's "insertmanyvalues": multi-row VALUES ... RETURNING). At most one state per
    annotation id (a statement cannot change a row twice). A state holds `annotation_id`,
    `task_id`, `project_id`, `result`, `persons` (JSON-ready), `ls_updated_at`, `completed_by`
    and `was_cancelled`."""
    ids = [s["annotation_id"] for s in states]
    if len(set(ids)) != len(ids):
        raise ValueError("write_annotations takes one state per annotation id")
    if not states:
        return set()
    now = utcnow()
    params = [{"id": s["annotation_id"], "deleted": False, "task_id": s["task_id"], "project_id": s["project_id"],
               "result": s["result"], "persons": s["persons"], "ls_updated_at": s["ls_updated_at"],
               "completed_by": s["completed_by"], "was_cancelled": s["was_cancelled"], "received_at": now}
              for s in states]  # fmt: skip
    return set(session.scalars(_annotation_upsert(session.get_bind().dialect.name), params))


@dataclass(frozen=True)
class AnnotationCorrections:
    """The correction rows of one annotation's new state, against the prediction it was compared with."""

    annotation_id: int
    task_id: int
    project_id: int
    rows: Sequence[CorrectionFields]
    model_version: str | None
    prediction_id: int | None


_CORRECTION_COLUMNS = ("annotation_id", "task_id", "project_id", "model_version", "prediction_id", "track_id",
                       "joint", "kind", "pred_x", "pred_y", "final_x", "final_y", "distance_px", "head_size_px",
                       "created_at")  # fmt: skip


def _correction_insert(session: Session) -> str:
    """The corrections INSERT as the driver's SQL text (parameters: see `replace_corrections`).

    SQLite: an executemany of one row each, in `_CORRECTION_COLUMNS` order. PostgreSQL: one
    statement over all rows as one JSON text (``json_to_recordset``): psycopg would otherwise send
    the rows one by one."""
    dialect = session.get_bind().dialect
    key = ("corrections", dialect.name)
    if key not in _STATEMENTS:
        table = Correction.__table__
        columns = _CORRECTION_COLUMNS[:-1]  # all but created_at, one value for every row
        if dialect.name == "postgresql":
            record = ", ".join(f"{c} {table.c[c].type.compile(dialect=dialect)}" for c in columns)
            _STATEMENTS[key] = (f"INSERT INTO {table.name} ({', '.join(_CORRECTION_COLUMNS)}) "
                                f"SELECT {', '.join(columns)}, %(created_at)s "
                                f"FROM json_to_recordset(%(rows)s::json) AS r({record})")  # fmt: skip
        else:
            marks = ", ".join("?" for _ in _CORRECTION_COLUMNS)
            _STATEMENTS[key] = f"INSERT INTO {table.name} ({', '.join(_CORRECTION_COLUMNS)}) VALUES ({marks})"
    return _STATEMENTS[key]


def replace_corrections(session: Session, items: Sequence[AnnotationCorrections]) -> int:
    """Replaces the corrections of every annotation given (one DELETE, one INSERT of all rows); returns the rows.

    The rows go to the driver as they are: they hold only numbers, strings and one timestamp,
    converted once (SQLAlchemy would process every value of every row, ~50 us a row)."""
    for chunk in _chunks(item.annotation_id for item in items):
        session.execute(delete(Correction).where(Correction.annotation_id.in_(chunk)))
    rows = [(a.annotation_id, a.task_id, a.project_id, a.model_version, a.prediction_id, r.track_id, int(r.joint),
             str(r.kind), r.pred_x, r.pred_y, r.final_x, r.final_y, r.distance_px, r.head_size_px)
            for a in items for r in a.rows]  # fmt: skip  (the order of _CORRECTION_COLUMNS)
    if not rows:
        return 0
    connection = session.connection()
    created = Correction.__table__.c.created_at.type.bind_processor(connection.dialect)
    now = created(utcnow()) if created is not None else utcnow()
    sql = _correction_insert(session)
    if connection.dialect.name == "postgresql":
        records = json.dumps([dict(zip(_CORRECTION_COLUMNS, row, strict=False)) for row in rows], allow_nan=False)
        connection.exec_driver_sql(sql, {"rows": records, "created_at": now})
    else:
        connection.exec_driver_sql(sql, [(*row, now) for row in rows])
    return len(rows)


def _event_mark() -> Any:
    if ("mark",) not in _STATEMENTS:
        table = WebhookEvent.__table__
        _STATEMENTS[("mark",)] = (
            update(table)
            .where(table.c.id == bindparam("event_id"))
            .values(status=bindparam("status"), error=bindparam("error"),
                    processed_at=bindparam("processed_at", type_=table.c.processed_at.type))  # fmt: skip
        )
    return _STATEMENTS[("mark",)]


def mark_events(session: Session, statuses: Mapping[int, tuple[str, str | None]]) -> None:
    """Sets the status (and error) of many events in one executemany; `statuses`: id -> (status, error)."""
    if statuses:
        now = utcnow()
        session.execute(_event_mark(), [{"event_id": i, "status": s, "error": e, "processed_at": now}
                                        for i, (s, e) in statuses.items()])  # fmt: skip
