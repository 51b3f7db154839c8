"""Bulk reads and writes of one webhook-processing batch (`backend.services.event_processing`).

Each function costs one statement (or one executemany) for the whole batch, not one per event, and
the statements are built once per dialect with bound parameters, so that SQLAlchemy compiles them
once. Plain rows and Core statements only: no ORM objects are loaded or flushed here. Reads take a
`Connection` or a `Session` (from `backend.db.session.read_scope` or `session_scope`); writes run in
the caller's `session_scope` transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from backend.db.queries import CorrectionFields
from backend.db.tables import (
    Annotation,
    Correction,
    DeletedAnnotation,
    Prediction,
    Project,
    Task,
    VideoRecord,
    WebhookEvent,
    utcnow,
)

Reader = Connection | Session
IN_CHUNK = 500  # ids per IN (...) list: far below SQLite's variable limit

_STATEMENTS: dict[tuple[str, ...], Any] = {}
_IDS = bindparam("ids", expanding=True)


def _built(key: tuple[str, ...], build: Callable[[], Any]) -> Any:
    """The statement under `key`, built on first use (SQLAlchemy then compiles it once per dialect)."""
    if key not in _STATEMENTS:
        _STATEMENTS[key] = build()
    return _STATEMENTS[key]


def _in_chunks(reader: Reader, key: str, build: Callable[[], Any], ids: Iterable[int]) -> Iterable[Row[Any]]:
    """The rows of a prebuilt ``... IN :ids`` statement, IN_CHUNK ids at a time."""
    stmt = _built((key,), build)
    items = sorted(set(ids))
    for start in range(0, len(items), IN_CHUNK):
        yield from reader.execute(stmt, {"ids": items[start : start + IN_CHUNK]})


def _insert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


# ----------------------------------------------------------------------------- reads


def load_events(reader: Reader, event_ids: Collection[int]) -> dict[int, Row[Any]]:
    """The events by id (id, action, project_id, annotation_id, status, payload); absent ids are left out."""
    e = WebhookEvent
    rows = _in_chunks(reader, "events", lambda: select(e.id, e.action, e.project_id, e.annotation_id, e.status,
                                                        e.payload).where(e.id.in_(_IDS)), event_ids)  # fmt: skip
    return {row.id: row for row in rows}


def tombstoned(reader: Reader, annotation_ids: Collection[int]) -> set[int]:
    """The ids among `annotation_ids` that a received delete named (`backend.db.events.tombstoned`)."""
    d = DeletedAnnotation
    rows = _in_chunks(reader, "tombstones", lambda: select(d.annotation_id).where(d.annotation_id.in_(_IDS)),
                      annotation_ids)  # fmt: skip
    return {row[0] for row in rows}


def label_configs(reader: Reader, project_ids: Collection[int]) -> dict[int, str | None]:
    """The stored labelling config of each known project."""
    rows = _in_chunks(reader, "configs", lambda: select(Project.id, Project.label_config)
                      .where(Project.id.in_(_IDS)), project_ids)  # fmt: skip
    return {i: xml for i, xml in rows}


def task_projects(reader: Reader, task_ids: Collection[int]) -> dict[int, int]:
    """The project of each stored task."""
    rows = _in_chunks(reader, "task_projects", lambda: select(Task.id, Task.project_id).where(Task.id.in_(_IDS)),
                      task_ids)  # fmt: skip
    return {i: p for i, p in rows}


@dataclass(frozen=True)
class LatestPrediction:
    """A task's latest prediction, as the comparison needs it."""

    id: int
    model_version: str
    persons: list[Any]


def latest_predictions(reader: Reader, task_ids: Collection[int]) -> dict[int, LatestPrediction]:
    """The newest prediction of each task that has one (as `backend.db.queries.latest_prediction`).

    Two statements: the candidates' ids and times (no JSON decoded), then the winners' persons."""
    p = Prediction
    newest: dict[int, tuple[datetime, int]] = {}
    times = _in_chunks(reader, "prediction_times", lambda: select(p.task_id, p.created_at, p.id)
                       .where(p.task_id.in_(_IDS)), task_ids)  # fmt: skip
    for task_id, created, pid in times:
        if task_id not in newest or (created, pid) > newest[task_id]:
            newest[task_id] = (created, pid)
    rows = _in_chunks(reader, "predictions", lambda: select(p.task_id, p.id, p.model_version, p.persons)
                      .where(p.id.in_(_IDS)), (pid for _, pid in newest.values()))  # fmt: skip
    return {task_id: LatestPrediction(pid, version, persons or []) for task_id, pid, version, persons in rows}


# ----------------------------------------------------------------------------- writes


def ensure_projects(session: Session, project_ids: Collection[int]) -> None:
    """Creates the project rows that are missing (one executemany); stored ones are left as they are."""
    dialect = session.get_bind().dialect.name

    def build() -> Any:
        table = Project.__table__
        stmt = _insert(dialect)(table).values({n: bindparam(n, type_=table.c[n].type)
                                               for n in ("id", "created_at", "updated_at")})  # fmt: skip
        return stmt.on_conflict_do_nothing(index_elements=["id"])

    if project_ids:
        now = utcnow()
        session.execute(_built(("ensure_projects", dialect), build),
                        [{"id": i, "created_at": now, "updated_at": now} for i in sorted(set(project_ids))])  # fmt: skip


def update_project(session: Session, project_id: int, title: str | None, label_config: str | None) -> None:
    """Sets the title and labelling config given (None leaves one as it is), as `queries.upsert_project`.

    The row must exist (`ensure_projects`); it is written only when a value differs."""

    def build() -> Any:
        table = Project.__table__
        new_title = func.coalesce(bindparam("title", type_=table.c.title.type), table.c.title)
        new_config = func.coalesce(bindparam("label_config", type_=table.c.label_config.type), table.c.label_config)
        changed = table.c.title.is_distinct_from(new_title) | table.c.label_config.is_distinct_from(new_config)
        return (update(table).where((table.c.id == bindparam("project_id")) & changed)
                .values(title=new_title, label_config=new_config,
                        updated_at=bindparam("now", type_=table.c.updated_at.type)))  # fmt: skip

    if title is not None or label_config is not None:
        session.execute(_built(("update_project",), build), {"project_id": project_id, "title": title,
                                                             "label_config": label_config, "now": utcnow()})  # fmt: skip


def upsert_video(session: Session, project_id: int, key: str, nframes: int | None) -> int:
    """The id of the project's video `key`, created if missing; `nframes` stored when given (one statement)."""
    dialect = session.get_bind().dialect.name

    def build() -> Any:
        table = VideoRecord.__table__
        stmt = _insert(dialect)(table).values({n: bindparam(n, type_=table.c[n].type)
                                               for n in ("project_id", "key", "nframes")})  # fmt: skip
        stmt = stmt.on_conflict_do_update(index_elements=["project_id", "key"],
                                          set_={"nframes": func.coalesce(stmt.excluded.nframes, table.c.nframes)})
        return stmt.returning(table.c.id)

    stmt = _built(("upsert_video", dialect), build)
    return int(session.execute(stmt, {"project_id": project_id, "key": key, "nframes": nframes}).scalar_one())


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
    stmt = _built(("delete_corrections",), lambda: delete(Correction).where(Correction.annotation_id.in_(_IDS)))
    ids = sorted({item.annotation_id for item in items})
    for start in range(0, len(ids), IN_CHUNK):
        session.execute(stmt, {"ids": ids[start : start + IN_CHUNK]})
    rows = [(a.annotation_id, a.task_id, a.project_id, a.model_version, a.prediction_id, r.track_id, int(r.joint),
             str(r.kind), r.pred_x, r.pred_y, r.final_x, r.final_y, r.distance_px, r.head_size_px)
            for a in items for r in a.rows]  # fmt: skip  (the order of _CORRECTION_COLUMNS)
    if not rows:
        return 0
    connection = session.connection()
    # The column type's conversion for this dialect (SQLite: the text SQLAlchemy writes), done once.
    created = Correction.__table__.c.created_at.type.dialect_impl(connection.dialect).bind_processor(connection.dialect)
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
