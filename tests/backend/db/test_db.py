"""backend.db: migrations, idempotent writes, corrections, metrics, versions, jobs, events (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import warnings
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, inspect, select, text, update
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from annotation_io.skeletons import KEYPOINT_INDEX, LABELLED_SLOTS, NUM_KEYPOINTS, POSETRACK_KEYPOINTS
from annotation_io.types import Box, Person
from backend.db import events, jobs, metrics, versions
from backend.db import queries as q
from backend.db.persons import persons_from_json
from backend.db.session import (
    current_revision,
    default_sqlite_url,
    downgrade,
    head_revision,
    migrate,
    normalize_url,
    session_scope,
)
from backend.db.tables import (
    Annotation,
    Base,
    Correction,
    ModelVersion,
    Prediction,
    Project,
    Task,
    VideoRecord,
    WebhookEvent,
)
from backend.services.corrections import compare

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
TABLES = {
    "deleted_annotations",
    "projects",
    "videos",
    "tasks",
    "model_versions",
    "predictions",
    "annotations",
    "corrections",
    "jobs",
    "webhook_events",
}


def person(
    x0: float, y0: float, *, track: int | None = 1, pred: bool = True, head: Box | None = None
) -> Person:
    kp = np.zeros((NUM_KEYPOINTS, 3))
    for j in LABELLED_SLOTS:
        kp[j] = (x0 + 10 * (j % 3), y0 + 10 * (j // 3), 2)
    return Person(
        keypoints=kp,
        scores=np.full(NUM_KEYPOINTS, 0.8) if pred else None,
        track_id=track,
        box=Box(x0 - 5, y0 - 5, 40, 70),
        head_box=head,
    )


def add_task(s: Session, task_id: int, project_id: int = 1, frame: int = 0) -> None:
    q.upsert_task(
        session=s,
        task_id=task_id,
        project_id=project_id,
        data={"image": f"/f/{frame}.jpg"},
        image=f"/f/{frame}.jpg",
        video_key="vid1",
        frame_index=frame,
        nframes=100,
    )


def annotate(
    s: Session, ann_id: int, task_id: int, persons: list[Person], at: datetime, result: list | None = None
) -> tuple[Annotation, bool]:
    return q.upsert_annotation(
        session=s,
        annotation_id=ann_id,
        task_id=task_id,
        project_id=1,
        result=result if result is not None else [{"id": "r1", "at": at.isoformat()}],
        persons=persons,
        ls_updated_at=at,
        completed_by=5,
    )


# ----------------------------------------------------------------------------- schema


def test_migrations_create_the_schema_matching_the_models(db_engine: Engine) -> None:
    assert TABLES <= set(inspect(db_engine).get_table_names())
    assert current_revision(db_engine) == head_revision() == "0004"
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with db_engine.connect() as conn, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # expression indexes cannot be reflected everywhere
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    migrate(db_engine)  # at head: nothing to do
    downgrade(db_engine)
    assert not TABLES & set(inspect(db_engine).get_table_names()) and current_revision(db_engine) is None
    migrate(db_engine)
    assert TABLES <= set(inspect(db_engine).get_table_names())


def test_engine_settings(db_engine: Engine, tmp_path) -> None:
    with db_engine.connect() as conn:
        if db_engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
        else:
            assert db_engine.pool._pre_ping  # type: ignore[attr-defined]
            assert conn.execute(text("select 1")).scalar() == 1
    assert default_sqlite_url(tmp_path / "data") == f"sqlite:///{tmp_path / 'data' / 'backend.db'}"
    assert (tmp_path / "data").is_dir()
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(ValueError, match="DATABASE_URL uses 'mysql'"):
        normalize_url("mysql://u@h/db")


def test_foreign_keys_and_checks_are_enforced(db_factory: sessionmaker[Session]) -> None:
    with pytest.raises(q.NotFoundError, match="task 99 is not stored"), session_scope(db_factory) as s:
        q.record_prediction(session=s, task_id=99, model_version="v", result=[], persons=[])
    with pytest.raises(IntegrityError), session_scope(db_factory) as s:
        s.add(Correction(annotation_id=1, task_id=1, project_id=1, joint=0, kind="kept"))
    with session_scope(db_factory) as s:
        add_task(s, 1)
    bad_job = text(
        "INSERT INTO jobs (id, project_id, kind, state, progress, result, trigger, created_at) "
        "VALUES ('x', 1, 'dance', 'queued', '{}', '{}', 'api', CURRENT_TIMESTAMP)"
    )
    with pytest.raises(IntegrityError), session_scope(db_factory) as s:  # CHECK on kind
        s.execute(bad_job)


def test_tasks_and_videos(db_factory: sessionmaker[Session]) -> None:
    with session_scope(db_factory) as s:
        add_task(s, 1, frame=0)
        add_task(s, 2, frame=1)
        add_task(s, 2, frame=1)  # repeated import: same row
        q.upsert_video(session=s, project_id=1, key="vid1", fps=25.0, width=640, height=480)
        q.upsert_project(session=s, project_id=1, title="poses", label_config="<View/>")
    with session_scope(db_factory) as s:
        tasks = s.scalars(select(Task).order_by(Task.id)).all()
        videos = s.scalars(select(VideoRecord)).all()
        assert [t.frame_index for t in tasks] == [0, 1] and len(videos) == 1
        v = videos[0]
        assert (v.key, v.nframes, v.fps, v.width, v.height) == ("vid1", 100, 25.0, 640, 480)
        assert {t.video_id for t in tasks} == {v.id} and tasks[1].data == {"image": "/f/1.jpg"}
        p = s.get(Project, 1)
        assert (p.title, p.label_config) == ("poses", "<View/>")
        with pytest.raises(q.ConflictError, match="task 1 is stored under project 1, not 2"):
            q.upsert_task(session=s, task_id=1, project_id=2)


# ----------------------------------------------------------------------------- JSON and datetimes


def test_json_and_datetime_round_trip(db_factory: sessionmaker[Session]) -> None:
    result = [
        {
            "id": "b1",
            "type": "rectanglelabels",
            "value": {"x": 12.5, "labels": ["person"]},
            "note": "ü ✓",
            "nested": [1, [2.25, None], {"k": True}],
        }
    ]
    p = person(100.5, 40.25, track=4, head=Box(1, 2, 30, 40))
    p.scores[3] = np.nan
    with session_scope(db_factory) as s:
        add_task(s, 1)
        q.record_prediction(session=s, task_id=1, model_version="v1", result=result, persons=[p], score=0.77)
        q.upsert_annotation(
            session=s,
            annotation_id=10,
            task_id=1,
            project_id=1,
            result=result,
            persons=[],
            ls_updated_at=datetime(2025, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        )
    with session_scope(db_factory) as s:
        pred = s.scalars(select(Prediction)).one()
        assert pred.result == result and pred.score == pytest.approx(0.77)
        back = persons_from_json(pred.persons)[0]
        np.testing.assert_array_equal(back.keypoints, p.keypoints)
        np.testing.assert_array_equal(back.scores, p.scores)  # NaN stored as null, read back as NaN
        assert back.track_id == 4 and back.head_box == p.head_box
        ann = s.get(Annotation, 10)
        assert ann.ls_updated_at == datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
        assert ann.ls_updated_at.tzinfo == UTC and ann.received_at.tzinfo == UTC
    with pytest.raises(StatementError, match="naive datetime"), session_scope(db_factory) as s:
        s.add(Project(id=5, created_at=datetime(2025, 1, 1)))
    with pytest.raises(ValueError, match="timezone-aware"), session_scope(db_factory) as s:
        annotate(s, 11, 1, [], datetime(2025, 1, 1))
    nan_result = [{"x": float("nan")}]  # JSON has no NaN
    with pytest.raises(ValueError, match="result of task 1 holds a NaN"), session_scope(db_factory) as s:
        q.record_prediction(session=s, task_id=1, model_version="v2", result=nan_result, persons=[])
    assert q.parse_ls_datetime("2025-03-01T12:00:00.123456Z") == T0
    assert q.parse_ls_datetime("2025-03-01T12:00:00.123456") == T0
    with pytest.raises(ValueError, match="ISO 8601"):
        q.parse_ls_datetime("yesterday")


def test_prediction_reserving_replaces(db_factory: sessionmaker[Session]) -> None:
    with session_scope(db_factory) as s:
        add_task(s, 1)
        first = q.record_prediction(session=s, task_id=1, model_version="v1", result=[{"n": 1}], persons=[])
        again = q.record_prediction(
            session=s, task_id=1, model_version="v1", result=[{"n": 2}], persons=[person(0, 0)], score=0.5
        )
        assert again.id == first.id and again.result == [{"n": 2}]
        q.record_prediction(session=s, task_id=1, model_version="v2", result=[{"n": 3}], persons=[])
    with session_scope(db_factory) as s:
        assert s.scalar(select(func.count()).select_from(Prediction)) == 2
        latest = q.latest_prediction(session=s, task_id=1)
        assert latest.model_version == "v2"
        v1 = q.latest_prediction(session=s, task_id=1, model_version="v1")
        assert v1.result == [{"n": 2}] and v1.score == 0.5 and len(v1.persons) == 1
        assert q.latest_prediction(session=s, task_id=2) is None


# ----------------------------------------------------------------------------- annotations


def test_annotation_upsert_is_idempotent_and_ordered(db_factory: sessionmaker[Session]) -> None:
    with session_scope(db_factory) as s:
        add_task(s, 1)
        _, changed = annotate(s, 10, 1, [person(0, 0, pred=False)], T0)
        assert changed
    with session_scope(db_factory) as s:  # the same event delivered twice
        row, changed = annotate(s, 10, 1, [person(0, 0, pred=False)], T0)
        assert not changed
    with session_scope(db_factory) as s:
        assert s.scalar(select(func.count()).select_from(Annotation)) == 1
        row = s.get(Annotation, 10)
        assert row.result == [{"id": "r1", "at": T0.isoformat()}] and row.ls_updated_at == T0
        assert row.completed_by == 5 and not row.deleted and not row.was_cancelled
    with session_scope(db_factory) as s:  # a newer state replaces
        row, changed = annotate(s, 10, 1, [person(5, 5, pred=False)], T0 + timedelta(seconds=30))
        assert changed
    with session_scope(db_factory) as s:  # an older one arriving late does not
        row, changed = annotate(s, 10, 1, [], T0 + timedelta(seconds=10))
        assert not changed
    with session_scope(db_factory) as s:
        row = s.get(Annotation, 10)
        assert row.ls_updated_at == T0 + timedelta(seconds=30)
        assert persons_from_json(row.persons)[0].keypoints[0, 0] == 5.0
        assert row.result == [{"id": "r1", "at": (T0 + timedelta(seconds=30)).isoformat()}]


def test_delete_marks_and_keeps_data(db_factory: sessionmaker[Session]) -> None:
    with session_scope(db_factory) as s:
        add_task(s, 1)
        annotate(s, 10, 1, [person(0, 0, pred=False)], T0)
        annotate(s, 11, 1, [], T0)
    with session_scope(db_factory) as s:
        marked = q.mark_annotations_deleted(session=s, annotation_ids=[10, 999], at=T0 + timedelta(hours=1))
        assert [a.id for a in marked] == [10]
    with session_scope(db_factory) as s:  # repeated delete: nothing new
        assert q.mark_annotations_deleted(session=s, annotation_ids=[10]) == []
        _, changed = annotate(s, 10, 1, [], T0 + timedelta(hours=2))  # a late update does not revive it
        assert not changed
    with session_scope(db_factory) as s:
        row = s.get(Annotation, 10)
        assert row.deleted and row.deleted_at == T0 + timedelta(hours=1)
        assert row.result == [{"id": "r1", "at": T0.isoformat()}] and len(row.persons) == 1
        assert not s.get(Annotation, 11).deleted


# ----------------------------------------------------------------------------- corrections and metrics


def test_corrections_replace_on_update(db_factory: sessionmaker[Session]) -> None:
    pred = person(0, 0)
    final1 = person(0, 0, pred=False)
    final1.keypoints[0, :2] += (3, 4)
    with session_scope(db_factory) as s:
        add_task(s, 1)
        prediction = q.record_prediction(session=s, task_id=1, model_version="v1", result=[], persons=[pred])
        ann, _ = annotate(s, 10, 1, [final1], T0)
        stored = q.replace_corrections(
            session=s,
            annotation=ann,
            rows=compare([pred], [final1]),
            model_version="v1",
            prediction_id=prediction.id,
        )
        assert stored == len(LABELLED_SLOTS)
        first_ids = set(s.scalars(select(Correction.id).where(Correction.annotation_id == ann.id)))
        assert len(first_ids) == stored
    final2 = person(0, 0, pred=False)
    final2.keypoints[[0, 1], 2] = 0
    with session_scope(db_factory) as s:
        ann, changed = annotate(s, 10, 1, [final2], T0 + timedelta(minutes=1))
        assert changed
        q.replace_corrections(
            session=s,
            annotation=ann,
            rows=compare([pred], [final2]),
            model_version="v1",
            prediction_id=prediction.id,
        )
    with session_scope(db_factory) as s:
        rows = q.corrections_since(session=s, project_id=1)
        assert len(rows) == len(LABELLED_SLOTS) and not first_ids & {c.id for c in rows}
        assert sorted(c.joint for c in rows if c.kind == "deleted") == [0, 1]
        assert {c.kind for c in rows} == {"kept", "deleted"}
        assert all(c.prediction_id == prediction.id and c.task_id == 1 for c in rows)
        assert q.corrections_since(session=s, project_id=1, since=max(c.id for c in rows)) == []
        assert len(q.corrections_since(session=s, project_id=1, kinds=["deleted"])) == 2
        assert q.count_corrections_since(session=s, project_id=1) == len(LABELLED_SLOTS)
        job = jobs.create_job(session=s, project_id=1, kind="train", trigger="api")
        job.started_at = rows[0].created_at  # the run saw these corrections
        assert q.count_corrections_since(session=s, project_id=1, job=job) == 0
        assert q.count_corrections_since(session=s, project_id=1, since=T0) == len(LABELLED_SLOTS)
        q.mark_annotations_deleted(session=s, annotation_ids=[10])
        assert q.corrections_since(session=s, project_id=1) == []
        assert len(q.corrections_since(session=s, project_id=1, include_deleted=True)) == len(LABELLED_SLOTS)
        with pytest.raises(ValueError, match="unknown correction kinds"):
            q.corrections_since(session=s, project_id=1, kinds=["bent"])


def test_acceptance_metrics_hand_case(db_factory: sessionmaker[Session]) -> None:
    nose, l_wrist, r_ankle, l_knee = (
        KEYPOINT_INDEX[n] for n in ("nose", "left_wrist", "right_ankle", "left_knee")
    )
    pred = person(0, 0)
    pred.keypoints[r_ankle, 2] = 0  # 14 joints predicted
    final = person(0, 0, pred=False, head=Box(0, 0, 30, 40))  # head size 0.6 * 50 = 30 px
    final.keypoints[nose, :2] += (3, 0)  # moved 3 px = 0.1 head
    final.keypoints[l_wrist, :2] += (0, 6)  # moved 6 px = 0.2 head
    final.keypoints[l_knee, 2] = 0  # deleted
    # right ankle stays placed in `final`: added by hand
    with session_scope(db_factory) as s:
        for t in (1, 2, 3, 4):
            add_task(s, t, frame=t)
        p1 = q.record_prediction(session=s, task_id=1, model_version="v1", result=[], persons=[pred])
        q.record_prediction(
            session=s, task_id=2, model_version="v1", result=[], persons=[pred]
        )  # not annotated
        p3 = q.record_prediction(session=s, task_id=3, model_version="v2", result=[], persons=[pred])
        a1, _ = annotate(s, 1, 1, [final], T0)
        q.replace_corrections(
            session=s, annotation=a1, rows=compare([pred], [final]), model_version="v1", prediction_id=p1.id
        )
        kept_all = person(0, 0, pred=False)
        kept_all.keypoints[r_ankle, 2] = 0
        a3, _ = annotate(s, 3, 3, [kept_all], T0)
        q.replace_corrections(
            session=s,
            annotation=a3,
            rows=compare([pred], [kept_all]),
            model_version="v2",
            prediction_id=p3.id,
        )
        moved_all = person(50, 50, pred=False)  # a deleted annotation must not count
        a4, _ = annotate(s, 4, 1, [moved_all], T0)
        q.replace_corrections(session=s, annotation=a4, rows=compare([pred], [moved_all]), model_version="v1")
        q.mark_annotations_deleted(session=s, annotation_ids=[4])
    with session_scope(db_factory) as s:
        m = metrics.acceptance_metrics(session=s, project_id=1)
        assert metrics.acceptance_metrics(session=s, project_id=2)["model_versions"] == {}
    assert m["annotations_received"] == 2 and m["predictions_served"] == 3
    v1, v2 = m["model_versions"]["v1"], m["model_versions"]["v2"]
    assert (v1["predictions_served"], v1["annotations_received"]) == (2, 1)
    o = v1["overall"]
    assert (o["predicted"], o["kept"], o["moved"], o["deleted"], o["added"]) == (14, 11, 2, 1, 1)
    assert o["kept_share"] == pytest.approx(11 / 14) and o["deleted_share"] == pytest.approx(1 / 14)
    assert o["moved_share"] == pytest.approx(2 / 14) and o["added_share"] == pytest.approx(1 / 14)
    assert o["moved_mean_px"] == pytest.approx(4.5) and o["moved_median_px"] == pytest.approx(4.5)
    assert o["moved_mean_head"] == pytest.approx(0.15) and o["moved_with_head_size"] == 2
    joints = v1["joints"]
    assert joints["nose"]["moved"] == 1 and joints["nose"]["moved_median_px"] == pytest.approx(3.0)
    assert joints["left_wrist"]["moved_median_head"] == pytest.approx(0.2)
    assert joints["left_knee"]["deleted_share"] == 1.0 and joints["right_ankle"]["added"] == 1
    assert joints["right_ankle"]["kept_share"] is None  # nothing predicted there
    assert joints["head_top"]["kept_share"] == 1.0 and joints["head_top"]["moved_mean_px"] is None
    assert set(joints) == {n for n in POSETRACK_KEYPOINTS if n not in ("left_ear", "right_ear")}
    o2 = v2["overall"]
    assert (o2["kept"], o2["moved"], o2["kept_share"], v2["annotations_received"]) == (14, 0, 1.0, 1)
    with session_scope(db_factory) as s:
        all_projects = metrics.acceptance_metrics(session=s)
    assert all_projects["model_versions"]["v1"]["overall"] == o


# ----------------------------------------------------------------------------- model versions


def test_one_serving_version_per_project(db_factory: sessionmaker[Session]) -> None:
    with session_scope(db_factory) as s:
        versions.create_model_version(session=s, name="base", backbone="hrnet-w48")
        versions.create_model_version(
            session=s,
            name="p1-a",
            backbone="hrnet-w48",
            project_id=1,
            parent="base",
            metrics={"mAP": 70.1},
            config={"lr": 1e-4},
            training_summary={"frames": 12},
        )
        versions.create_model_version(session=s, name="p1-b", backbone="hrnet-w48", project_id=1, parent="p1-a")
        versions.create_model_version(session=s, name="broken", backbone="hrnet-w48", project_id=1, state="failed")
        with pytest.raises(q.ConflictError, match="'p1-a' already exists"):
            versions.create_model_version(session=s, name="p1-a", backbone="x")
        with pytest.raises(ValueError, match="state must be one of"):
            versions.create_model_version(session=s, name="new", backbone="x", state="serving")
    with session_scope(db_factory) as s:
        assert versions.serving_version(session=s, project_id=1) is None
        versions.set_serving(session=s, name="base")
        assert versions.serving_version(session=s, project_id=1).name == "base"  # global fallback
        versions.set_serving(session=s, name="p1-a")
        versions.set_serving(session=s, name="p1-b")
    with session_scope(db_factory) as s:
        states = {v.name: v.state for v in versions.list_versions(session=s, project_id=1)}
        assert states == {"base": "serving", "p1-a": "retired", "p1-b": "serving", "broken": "failed"}
        assert versions.serving_version(session=s, project_id=1).name == "p1-b"
        assert versions.serving_version(session=s, project_id=2).name == "base"
        assert versions.serving_version(session=s).name == "base"
        versions.set_serving(session=s, name="p1-a")  # rollback
        assert versions.get_model_version(session=s, name="p1-b").state == "retired"
        assert versions.get_model_version(session=s, name="p1-a").promoted_at is not None
        assert versions.get_model_version(session=s, name="p1-a").metrics == {"mAP": 70.1}
        with pytest.raises(q.ConflictError, match="failed and cannot serve"):
            versions.set_serving(session=s, name="broken")
        with pytest.raises(q.NotFoundError, match="'nope' does not exist"):
            versions.set_serving(session=s, name="nope")
        with pytest.raises(q.ConflictError, match="is serving"):
            versions.update_model_version(session=s, name="p1-a", state="rejected")
        versions.update_model_version(session=s, name="p1-b", state="rejected", metrics={"mAP": 60.0})
    second = update(ModelVersion).where(ModelVersion.name == "p1-b").values(state="serving")
    with pytest.raises(IntegrityError), session_scope(db_factory) as s:  # the index refuses a 2nd serving
        s.execute(second)
    with session_scope(db_factory) as s:
        assert [v.name for v in versions.list_versions(session=s, project_id=1) if v.state == "serving"] == [
            "base",
            "p1-a",
        ]


# ----------------------------------------------------------------------------- jobs


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_jobs_lifecycle_and_stale_jobs(db_factory: sessionmaker[Session]) -> None:
    with session_scope(db_factory) as s:
        job = jobs.create_job(session=s, project_id=1, kind="train", trigger="start_training")
        with pytest.raises(q.ConflictError, match="already has a queued train job"):
            jobs.create_job(session=s, project_id=1, kind="train", trigger="api")
        other = jobs.create_job(session=s, project_id=1, kind="preannotate", trigger="api")
        assert jobs.active_job(session=s, project_id=1, kind="train").id == job.id
    with session_scope(db_factory) as s:
        run = jobs.update_job(session=s, job_id=job.id, state="running", progress={"epoch": 1, "loss": 0.5})
        assert run.started_at is not None and run.pid is not None and run.host
        run.pid = _dead_pid()  # the process that ran it is gone
        fresh = jobs.create_job(session=s, project_id=2, kind="train", trigger="periodic")
        jobs.update_job(session=s, job_id=fresh.id, state="running")  # this very process: alive
        silent = jobs.create_job(session=s, project_id=3, kind="train", trigger="api")
        jobs.update_job(session=s, job_id=silent.id, state="running")
        silent.host = "another-host"
        silent.heartbeat_at = q.utcnow() - timedelta(hours=2)
        jobs.update_job(session=s, job_id=other.id, state="succeeded", result={"pushed": 10})
    with session_scope(db_factory) as s:
        failed = jobs.fail_stale_jobs(session=s, heartbeat_timeout_s=600)
        assert sorted(j.id for j in failed) == sorted([job.id, silent.id])
    with session_scope(db_factory) as s:
        j = jobs.get_job(session=s, job_id=job.id)
        assert j.state == "failed" and "is gone" in j.error and str(run.pid) in j.error and j.finished_at
        assert "no heartbeat" in jobs.get_job(session=s, job_id=silent.id).error
        assert jobs.get_job(session=s, job_id=fresh.id).state == "running"
        assert jobs.get_job(session=s, job_id=other.id).result == {"pushed": 10}
        assert j.progress == {"epoch": 1, "loss": 0.5}
        with pytest.raises(q.ConflictError, match="already failed"):
            jobs.update_job(session=s, job_id=job.id, state="running")
        again = jobs.create_job(session=s, project_id=1, kind="train", trigger="api")  # allowed after failure
        assert jobs.list_jobs(session=s, project_id=1, kind="train")[0].id == again.id  # newest first
        assert len(jobs.list_jobs(session=s)) == 5 and jobs.get_job(session=s, job_id="nope") is None
        stale_queued = jobs.fail_stale_jobs(
            session=s, queued_timeout_s=60, now=q.utcnow() + timedelta(minutes=5)
        )
        assert [x.id for x in stale_queued] == [again.id]
        with pytest.raises(ValueError, match="job kind"):
            jobs.create_job(session=s, project_id=1, kind="cook", trigger="api")


def test_job_creation_race_is_refused_by_the_database(
    db_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_scope(db_factory) as s:
        first = jobs.create_job(session=s, project_id=1, kind="train", trigger="api")
    monkeypatch.setattr(jobs, "active_job", lambda **kw: None)  # as if a concurrent creator won the race
    with session_scope(db_factory) as s:
        with pytest.raises(q.ConflictError, match="already has an active train job"):
            jobs.create_job(session=s, project_id=1, kind="train", trigger="api")
        jobs.create_job(
            session=s, project_id=1, kind="preannotate", trigger="api"
        )  # the session is still usable
    with session_scope(db_factory) as s:
        assert {(j.kind, j.id == first.id) for j in jobs.list_jobs(session=s)} == {
            ("train", True),
            ("preannotate", False),
        }


# ----------------------------------------------------------------------------- events


PAYLOAD_KEYS = st.sampled_from(sorted(events.SECRET_KEYS) + ["project", "id", "title", "result", "token_x"]) | st.text(
    max_size=6)
PAYLOADS = st.recursive(st.none() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False, allow_infinity=False),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(PAYLOAD_KEYS, inner, max_size=4),
                        max_leaves=30)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(payload=st.dictionaries(PAYLOAD_KEYS, PAYLOADS, max_size=5))
def test_stored_payload_text_is_the_sanitised_payload(payload: dict) -> None:
    """The text written for an event (encoded once, secrets found by a scan of the text) holds exactly
    what `sanitize_payload` keeps: secrets at any depth are gone, the project is cut."""
    assert json.loads(events.payload_json(payload)) == events.sanitize_payload(payload)


def test_event_dedup_and_sanitising(db_factory: sessionmaker[Session]) -> None:
    payload = {
        "action": "ANNOTATION_CREATED",
        "annotation": {"id": 10, "result": [{"id": "a"}], "updated_at": "2025-03-01T12:00:00Z"},
        "task": {"id": 1, "data": {"image": "/x.jpg"}},
        "project": {
            "id": 1,
            "title": "p",
            "token": "SECRET-TOKEN",
            "task_data_password": "PW",
            "label_config": "<View/>",
            "created_by": {"email": "a@b"},
        },
        "access_token": "SECRET-ACCESS",
    }
    key = events.event_dedup_key("ANNOTATION_CREATED", [10], "2025-03-01T12:00:00Z")
    assert key == events.event_dedup_key("ANNOTATION_CREATED", [10], "2025-03-01T12:00:00Z") and len(key) == 64
    assert key != events.event_dedup_key("ANNOTATION_UPDATED", [10], "2025-03-01T12:00:00Z")
    assert key != events.event_dedup_key("ANNOTATION_CREATED", [10], "2025-03-01T12:00:01Z")
    assert events.event_dedup_key("ANNOTATIONS_DELETED", [2, 1]) == events.event_dedup_key(
        "ANNOTATIONS_DELETED", [1, 2]
    )
    with session_scope(db_factory) as s:
        event_id, new = events.record_event(
            session=s,
            action="ANNOTATION_CREATED",
            dedup_key=key,
            project_id=1,
            annotation_id=10,
            payload=payload,
        )
        assert new
    with session_scope(db_factory) as s:
        again, new = events.record_event(
            session=s,
            action="ANNOTATION_CREATED",
            dedup_key=key,
            project_id=1,
            annotation_id=10,
            payload=payload,
        )
        assert not new and again == event_id
        events.mark_event(session=s, event_id=event_id, status="processed")
    with session_scope(db_factory) as s:
        rows = s.scalars(select(WebhookEvent)).all()
        assert len(rows) == 1 and rows[0].status == "processed" and rows[0].processed_at is not None
        stored = rows[0].payload
        assert "SECRET" not in str(stored) and "PW" not in str(stored)
        assert stored["project"] == {"id": 1, "title": "p", "label_config": "<View/>"}
        assert stored["annotation"] == payload["annotation"] and stored["task"] == payload["task"]
        with pytest.raises(ValueError, match="event status"):
            events.mark_event(session=s, event_id=event_id, status="eaten")


# ----------------------------------------------------------------------------- concurrency


def test_concurrent_writers(db_factory: sessionmaker[Session]) -> None:
    """Two threads upsert the same rows at once: WAL + busy timeout + BEGIN IMMEDIATE (SQLite), row locks (PG)."""
    with session_scope(db_factory) as s:
        add_task(s, 1)
    errors: list[BaseException] = []
    rounds = 25

    def writer(offset: int) -> None:
        try:
            for i in range(rounds):
                with session_scope(db_factory) as s:
                    q.latest_prediction(
                        session=s, task_id=100 + i
                    )  # read first, then write: the lock upgrade
                    add_task(s, 100 + i, frame=i)  # both threads write the same tasks
                    annotate(s, 1000 + i, 100 + i, [person(i, i, pred=False)], T0 + timedelta(seconds=offset))
                    q.record_prediction(
                        session=s, task_id=100 + i, model_version="v1", result=[{"w": offset}], persons=[]
                    )
                    events.record_event(session=s, action="ANNOTATION_UPDATED", dedup_key=f"k{i}", project_id=1)
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    with session_scope(db_factory) as s:
        def count(table):
            return s.scalar(select(func.count()).select_from(table))
        assert (count(Annotation), count(Prediction), count(WebhookEvent)) == (rounds, rounds, rounds)
        # the later updated_at wins whichever thread wrote last
        assert {a.ls_updated_at for a in s.scalars(select(Annotation))} == {T0 + timedelta(seconds=2)}


def test_migration_0004_numbers_new_people_above_the_stored_predictions_ids(db_engine: Engine) -> None:
    """Videos already there when `videos.next_track_id` comes start above the track ids of their predictions."""
    import sqlalchemy as sa

    downgrade(db_engine, "0003")
    at = datetime(2026, 12, 1, tzinfo=UTC)
    projects = sa.table("projects", sa.column("id"), sa.column("created_at"), sa.column("updated_at"))
    videos = sa.table("videos", sa.column("id"), sa.column("project_id"), sa.column("key"))
    tasks = sa.table("tasks", sa.column("id"), sa.column("project_id"), sa.column("video_id"),
                     sa.column("data", sa.JSON), sa.column("created_at"))  # fmt: skip
    predictions = sa.table("predictions", sa.column("task_id"), sa.column("model_version"),
                           sa.column("result", sa.JSON), sa.column("persons", sa.JSON), sa.column("created_at"))  # fmt: skip
    with db_engine.begin() as conn:
        conn.execute(projects.insert().values(id=1, created_at=at, updated_at=at))
        conn.execute(videos.insert(), [{"id": 1, "project_id": 1, "key": "a"}, {"id": 2, "project_id": 1, "key": "b"}])
        conn.execute(tasks.insert(), [{"id": t, "project_id": 1, "video_id": 1, "data": {}, "created_at": at}
                                      for t in (11, 12)])  # fmt: skip
        conn.execute(predictions.insert(), [
            {"task_id": 11, "model_version": "v", "result": [], "persons": [{"track_id": 4}, {"track_id": None}],
             "created_at": at},
            {"task_id": 12, "model_version": "v", "result": [], "persons": [{"track_id": 9}, {"track_id": 2}],
             "created_at": at},
        ])  # fmt: skip
    migrate(db_engine)
    with db_engine.connect() as conn:
        got = dict(conn.execute(text("SELECT id, next_track_id FROM videos ORDER BY id")).all())
    assert got == {1: 10, 2: 0}
