"""Tests of backend.services.training_data: the human-checked frames of a project, safe video names."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session

from annotation_io.types import Box, Person
from backend.db import queries
from backend.db.tables import utcnow
from backend.services.corrections import CorrectionRow
from backend.services.training_data import gather_project_data, safe_video_name


def labelled_person(shift: float, scores: bool = False) -> Person:
    p = Person(box=Box(10 + shift, 10, 40, 90), track_id=3)
    for j in (0, 1, 2, 5, 6, 11, 12):
        p.keypoints[j] = (20 + shift + j, 15 + 5 * j, 2)
    if scores:
        p.scores = np.full(17, 0.8)
        p.score = 0.9
    return p


def add_task(session: Session, task_id: int, frame: int, project: int = 1, video: str = "walk") -> None:
    queries.upsert_task(session=session, task_id=task_id, project_id=project, image=f"/frames/{video}/{frame}.jpg",
                        video_key=video, frame_index=frame, nframes=8)  # fmt: skip


def annotate(session: Session, ann_id: int, task_id: int, persons: list[Person], day: int, project: int = 1,
             cancelled: bool = False) -> Any:  # fmt: skip
    row, _ = queries.upsert_annotation(session=session, annotation_id=ann_id, task_id=task_id, project_id=project,
                                       result=[], persons=persons, was_cancelled=cancelled,
                                       ls_updated_at=utcnow().replace(day=day))  # fmt: skip
    return row


def test_project_data_are_the_newest_live_annotations_with_every_task_image(db_session: Session) -> None:
    for task_id, frame in ((10, 0), (11, 2), (12, 3), (13, 4), (14, 0)):
        add_task(db_session, task_id, frame)
    add_task(db_session, 20, 1, project=2, video="other")
    annotate(db_session, 1, 10, [labelled_person(0.0)], day=1)
    annotate(
        db_session, 2, 14, [labelled_person(5.0, scores=True), labelled_person(50.0)], day=2
    )  # frame 0, newer
    annotate(db_session, 3, 11, [labelled_person(1.0)], day=1)
    queries.mark_annotations_deleted(session=db_session, annotation_ids=[3])
    annotate(db_session, 4, 12, [labelled_person(2.0)], day=1, cancelled=True)
    annotate(db_session, 5, 20, [labelled_person(3.0)], day=1, project=2)
    row = annotate(db_session, 6, 13, [labelled_person(4.0)], day=3)
    queries.replace_corrections(session=db_session, annotation=row, rows=[CorrectionRow(0, "moved")] * 2)

    data = gather_project_data(session=db_session, project_id=1)
    walk = safe_video_name("walk")
    assert list(data.videos) == [walk] and data.images == {
        walk: {i: f"/frames/walk/{i}.jpg" for i in (0, 2, 3, 4)}
    }
    video = data.videos[walk]
    assert video.name == walk and video.extra == {"video_id": "walk"}
    assert video.num_frames == 8 and [f.index for f in video.frames] == [0, 4]
    assert all(f.is_labeled for f in video.frames) and sorted(data.annotations) == [2, 6]
    first = video.frame(0).persons
    assert len(first) == 2 and first[0].xy[0, 0] == pytest.approx(25.0), "the newest annotation of frame 0"
    assert all(p.scores is None and p.score is None for p in first), "human-checked: labels, not predictions"
    assert data.last_correction_id is not None
    summary = data.summary()
    assert (summary["labelled_frames"], summary["persons"], summary["frames_by_video"]) == (
        2,
        3,
        {"walk": [0, 4]},
    )
    assert gather_project_data(session=db_session, project_id=9).videos == {}


def test_video_names_are_safe_for_files_and_distinct() -> None:
    names = [safe_video_name(v) for v in ("walk", "../../etc", "cam 1/day 2", "cam_1_day_2", "", "a" * 300)]
    assert names[0].startswith("walk-") and len(set(names)) == len(names)
    assert all("/" not in n and not n.startswith(".") and len(n) <= 57 for n in names)
    assert safe_video_name("walk") == names[0], "stable: it keys the heatmap cache across runs"
