"""A project's human-checked frames from the database: the training data of a "train" job.

`gather_project_data` reads the newest live, not cancelled annotation of each (video, frame) task
of a project as a `ProjectData` (videos named by `safe_video_name`, which also names the heatmap
cache folders). Used by `backend.services.finetune.run_training`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from annotation_io.errors import AnnotationFormatError
from annotation_io.types import Frame, Video
from backend.db.persons import persons_from_json
from backend.db.tables import Annotation, Correction, Task, VideoRecord

logger = logging.getLogger(__name__)


@dataclass
class ProjectData:
    """A project's human-checked frames and where its frames are.

    Attributes:
        project_id: LS project id.
        videos: video name -> Video holding the human-checked frames (is_labeled, human persons);
            the name is `safe_video_name` of the LS video_id, which is kept in Video.extra["video_id"].
        images: video name -> frame index -> image URL or path of every stored task of the video.
        annotations: ids of the annotations used (one per labelled frame).
        last_correction_id: newest correction id of the project when gathered (None: none).
    """

    project_id: int
    videos: dict[str, Video]
    images: dict[str, dict[int, str]]
    annotations: list[int] = field(default_factory=list)
    last_correction_id: int | None = None

    def summary(self) -> dict[str, Any]:
        """Counts for the version's training_data.json."""
        frames = {v.extra.get("video_id", name): [f.index for f in v.frames] for name, v in self.videos.items()}
        return {
            "project_id": self.project_id,
            "videos": len(self.videos),
            "labelled_frames": sum(len(v) for v in frames.values()),
            "persons": sum(len(f.persons) for v in self.videos.values() for f in v.frames),
            "annotations": len(self.annotations),
            "last_correction_id": self.last_correction_id,
            "frames_by_video": frames,
        }


def gather_project_data(*, session: Session, project_id: int) -> ProjectData:
    """The human-checked frames of a project from the database.

    A frame counts when a task of a video shows it and a live (not deleted), not cancelled
    annotation exists; with several, the newest by LS `updated_at` wins. Its persons are the
    annotation's (human labels: scores dropped); frames whose annotation cannot be read are
    skipped with a warning.
    """
    tasks = session.execute(
        select(Task.id, Task.frame_index, Task.image, Task.data, VideoRecord.key, VideoRecord.nframes,
               VideoRecord.width, VideoRecord.height)
        .join(VideoRecord, VideoRecord.id == Task.video_id)
        .where(Task.project_id == project_id, Task.frame_index.is_not(None))
        .order_by(Task.id)
    ).all()  # fmt: skip
    images: dict[str, dict[int, str]] = {}
    meta: dict[str, tuple[int, int | None, int | None]] = {}
    frame_of: dict[int, tuple[str, int]] = {}
    for task_id, index, image, data, key, nframes, width, height in tasks:
        url = image or (data or {}).get("image")
        if isinstance(url, str) and url:
            images.setdefault(key, {}).setdefault(int(index), url)
        frame_of[task_id] = (key, int(index))
        known = meta.get(key, (0, width, height))[0]
        meta[key] = (max(known, int(nframes or 0), int(index) + 1), width, height)
    rows = session.execute(
        select(Annotation.id, Annotation.task_id, Annotation.persons)
        .where(Annotation.project_id == project_id, Annotation.deleted.is_(False),
               Annotation.was_cancelled.is_(False))
        .order_by(Annotation.ls_updated_at, Annotation.id)
    ).all()  # fmt: skip
    chosen: dict[tuple[str, int], tuple[int, list[Any]]] = {}
    for ann_id, task_id, persons in rows:  # oldest first: the newest per frame overwrites
        if task_id in frame_of:
            chosen[frame_of[task_id]] = (ann_id, persons)
    frames: dict[str, list[Frame]] = {}
    used = []
    for (key, index), (ann_id, persons) in sorted(chosen.items()):
        try:
            people = persons_from_json(persons or [], source=f"annotation {ann_id}")
        except AnnotationFormatError as exc:
            logger.warning("project %s: annotation %s skipped: %s", project_id, ann_id, exc)
            continue
        for person in people:  # human-checked: whatever scores a kept prediction carried, it is a label
            person.scores, person.score = None, None
        frames.setdefault(key, []).append(Frame(index, people, is_labeled=True))
        used.append(ann_id)
    videos = {safe_video_name(k): Video(safe_video_name(k), meta[k][0], frames[k], width=meta[k][1], height=meta[k][2],
                                        extra={"video_id": k}) for k in sorted(frames)}  # fmt: skip
    last = session.scalar(select(func.max(Correction.id)).where(Correction.project_id == project_id))
    return ProjectData(project_id, videos, {safe_video_name(k): images.get(k, {}) for k in frames}, used, last)


def safe_video_name(video_id: str) -> str:
    """A file-name-safe, unique name for an LS video_id (it names heatmap cache folders).

    LS video ids are free text ("../x", "cam 1/day 2"): anything but letters, digits, "-", "_" and
    "." is replaced, and a digest of the id keeps distinct ids apart.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", video_id)[:48].strip(".") or "video"
    return f"{cleaned}-{hashlib.sha1(video_id.encode('utf-8')).hexdigest()[:8]}"
