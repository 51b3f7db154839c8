"""LS frame tasks -> frames, stored labels and task regions -> Predictor -> LS result items, logged to the DB.

For each frame task (data keys `image`, `video_id`, `frame_index`, `nframes`) the pipeline gets:
- the video's frames: the image URLs of every stored task of the same video, read through
  `backend.ls.frames` (a frame no task shows yet is stood in for by the current frame);
- the human labels stored for the video: the newest live, not-cancelled annotation of each frame;
- the regions already on the task (interactive context, else the newest draft, else the newest
  submitted annotation), which replace the stored labels of that frame.

Tasks of one video are predicted in one `Predictor.predict_video` call. The answer is converted
with `annotation_io.label_studio.persons_to_results` using the project's labelling config, and
every prediction is recorded with `backend.db.queries.record_prediction`. A task that cannot be
processed (bad data, unreadable image, malformed regions) is logged with its id and answered
with an empty result carrying `error`; when every task fails, its error is raised instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from annotation_io.errors import AnnotationFormatError
from annotation_io.label_studio import (
    FrameTask,
    ImageSize,
    LabelConfig,
    parse_task,
    persons_to_results,
    results_to_persons,
)
from annotation_io.skeletons import UNLABELLED_SLOTS
from annotation_io.types import Box, Frame, Person, Video
from backend.db import queries, versions
from backend.db.persons import persons_from_json
from backend.db.session import read_session, session_scope
from backend.db.tables import Annotation, Prediction, Task, VideoRecord
from backend.limits import TRACK_IDS, check_track_ids
from backend.ls.frames import ImageUnavailableError, VideoFrames
from backend.predictor_cache import ModelUnavailableError, PredictorSpec
from model.pipeline.config import with_propagation
from model.pipeline.tracking import MAX_LOST

if TYPE_CHECKING:
    from backend.context import BackendContext

logger = logging.getLogger(__name__)

TaskError = AnnotationFormatError | ImageUnavailableError
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ServingModel:
    """The model version that answers a project: its name and how to build it."""

    name: str
    spec: PredictorSpec


@dataclass
class FrameItem:
    """One frame task to predict.

    Attributes:
        task_id: LS task id.
        frame: the parsed task data.
        regions: result items already on the task and whether they are a submitted annotation.
        data: the task's raw `data` (stored with the task row).
    """

    task_id: int
    frame: FrameTask
    regions: tuple[list[dict[str, Any]], bool] | None = None
    data: dict[str, Any] | None = None


@dataclass
class TaskPrediction:
    """The answer for one task: LS result items and score, or the error that stopped it."""

    task_id: int | None
    result: list[dict[str, Any]]
    score: float
    persons: list[Person]
    error: TaskError | None = None
    reason: str | None = None
    model_version: str | None = None  # set where it differs from the serving name (label propagation)

    def to_ls(self, model_version: str) -> dict[str, Any]:
        """The LS prediction dict (`error` added when the task failed, `meta.reason` when it is empty); its own
        version wins."""
        out: dict[str, Any] = {"result": self.result, "score": self.score,
                               "model_version": self.model_version or model_version}
        if self.error is not None:
            out["error"] = str(self.error)
        if self.reason is not None:
            out["meta"] = {"reason": self.reason}
        return out


def region_id_prefix(task_id: int) -> str:
    """The prefix of the region ids a task's predicted persons are sent with (`persons_to_results`' id_prefix);
    `backend.services.event_processing` rebuilds the ids with it to pair each prediction with the region an
    annotator edited."""
    return f"t{task_id}_"

def failed(task_id: int | None, error: TaskError) -> TaskPrediction:
    return TaskPrediction(task_id, [], 0.0, [], error)


def base_spec(ctx: BackendContext) -> PredictorSpec:
    """The spec of the configured backbone without a head (the cold-start model)."""
    s = ctx.settings
    checkpoint = str(s.backbone_checkpoint) if s.backbone_checkpoint is not None else None
    return PredictorSpec(s.backbone, checkpoint, None, s.device)


def serving_model(ctx: BackendContext, project_id: int | None) -> ServingModel:
    """The DB's serving version of the project (else the global one), else the cold-start backbone.

    A stored version's `backbone` may be a name or a backbone version ("hrnet_w48:1a2b3c4d"); the
    configured BACKBONE_CHECKPOINT serves it when the names agree.
    """
    with read_session(ctx.sessions) as session:  # on SQLite: no wait for the write lock (every /setup asks)
        stored = versions.serving_fields(session=session, project_id=project_id)
    base = base_spec(ctx)
    if stored is None:
        return ServingModel(ctx.predictors.version(base), base)
    name, backbone, head = stored
    backbone = backbone.split(":")[0]
    checkpoint = base.checkpoint if backbone == base.backbone else None
    return ServingModel(name, PredictorSpec(backbone, checkpoint, head, base.device))


# ----------------------------------------------------------------------------- what LS is sent

BOX_MIN_SCORE = 0.3  # joints at least this confident shape a predicted person's box
BOX_MARGIN = 0.1  # share of the joints' extent added on each side (PoseTrack boxes hug the joints)
BOX_MIN_MARGIN_PX = 4.0


def display_box(person: Person, width: int, height: int) -> Box | None:
    """The box Label Studio is sent for a person: a human box unchanged; for a prediction, the tight
    box of its confident joints plus a small margin (not the square crop the model worked on).

    Falls back to the person's own box when fewer than two joints reach BOX_MIN_SCORE.
    """
    if person.scores is None or person.extra.get("box_source") == "human":
        return person.box
    confident = (person.keypoints[:, 2] > 0) & (person.scores >= BOX_MIN_SCORE)
    confident[list(UNLABELLED_SLOTS)] = False
    tight = Box.from_points(person.keypoints[confident, :2]) if confident.sum() >= 2 else None
    if tight is None:
        return person.box
    mx, my = max(tight.w * BOX_MARGIN, BOX_MIN_MARGIN_PX), max(tight.h * BOX_MARGIN, BOX_MIN_MARGIN_PX)
    x1, y1, x2, y2 = tight.xyxy
    return Box.from_xyxy(max(x1 - mx, 0.0), max(y1 - my, 0.0), min(x2 + mx, width), min(y2 + my, height))


def with_display_boxes(persons: Sequence[Person], width: int, height: int) -> list[Person]:
    """The persons with `display_box` boxes (copies; the model's own persons are left as they are)."""
    return [replace(p, box=display_box(p, width, height), extra=dict(p.extra)) for p in persons]


def empty_reason(serving: ServingModel, frame: int, labelled: bool) -> str:
    """Why a frame got no person (shown in the prediction's `meta.reason` and the log)."""
    if labelled:
        return f"frame {frame}: its human labels hold no person"
    return (f"frame {frame}: no person found: no human box on this frame, no track carried from a labelled "
            f"frame within reach, and the {serving.spec.backbone} person detector found nobody "
            "(draw a person box and its joints, or label a nearby frame, then retrieve predictions again)")


# ----------------------------------------------------------------------------- reading tasks


def _newest(items: list[dict[str, Any]]) -> dict[str, Any]:
    return max(items, key=lambda d: (str(d.get("updated_at") or d.get("created_at") or ""), str(d.get("id"))))


def task_regions(task: Mapping[str, Any], context: Mapping[str, Any] | None = None
                 ) -> tuple[list[dict[str, Any]], bool] | None:  # fmt: skip
    """Regions already on a task: interactive context, else newest draft, else newest annotation.

    Returns:
        (result items, whether they are a submitted annotation), or None when there are none.

    Raises:
        AnnotationFormatError: `drafts`, `annotations` or one's `result` is not a list (never skipped:
            the frame would be predicted as if it had no human labels).
    """
    if isinstance(context, Mapping) and isinstance(context.get("result"), list) and context["result"]:
        return list(context["result"]), False

    def usable(key: str) -> list[dict[str, Any]]:
        entries = task.get(key) or []
        source = f"task {task.get('id')}"
        if not isinstance(entries, list):
            raise AnnotationFormatError(f"must be a list, got {type(entries).__name__}", source=source,
                                        where=key)  # fmt: skip
        for j, e in enumerate(entries):
            result = e.get("result") if isinstance(e, dict) else None
            if result is not None and not isinstance(result, list):
                raise AnnotationFormatError(f"must be a list of region objects, got {type(result).__name__}",
                                            source=source, where=f"{key}[{j}].result")  # fmt: skip
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("result"), list) and e["result"]
                and not e.get("was_cancelled")]  # fmt: skip

    drafts, annotations = usable("drafts"), usable("annotations")
    if drafts:
        return list(_newest(drafts)["result"]), False
    if annotations:
        return list(_newest(annotations)["result"]), True
    return None


def frame_item(task: Any, context: Mapping[str, Any] | None = None) -> FrameItem:
    """Parses one LS task into a FrameItem.

    Raises:
        AnnotationFormatError: not a frame task, no integer id, or drafts/annotations that are not lists
            (names the task and the key).
    """
    frame = parse_task(task)
    if frame.task_id is None:
        raise AnnotationFormatError("the task has no integer 'id'", where="id")
    data = task.get("data") if isinstance(task.get("data"), dict) else None
    return FrameItem(frame.task_id, frame, task_regions(task, context), data)


def register_tasks(ctx: BackendContext, project_id: int, items: Sequence[FrameItem],
                   label_config: str | None = None) -> None:  # fmt: skip
    """Upserts the project, the videos and the task rows (one short transaction)."""
    with session_scope(ctx.sessions) as session:
        queries.upsert_project(session=session, project_id=project_id, label_config=label_config)
        for item in items:
            f = item.frame
            queries.upsert_task(session=session, task_id=item.task_id, project_id=project_id, data=item.data or f.to_data(),
                                image=f.image, video_key=f.video_id, frame_index=f.frame_index,
                                nframes=f.nframes)  # fmt: skip


def _stored_labels(session: Session, video_row: int) -> dict[int, list[Person]]:
    """frame index -> persons of the newest live, not-cancelled annotation of that frame."""
    stmt = (
        select(Task.frame_index, Annotation.persons, Annotation.id)
        .join(Annotation, Annotation.task_id == Task.id)
        .where(Task.video_id == video_row, Task.frame_index.is_not(None))
        .where(Annotation.deleted.is_(False), Annotation.was_cancelled.is_(False))
        .order_by(Annotation.ls_updated_at, Annotation.id)
    )
    labels: dict[int, list[Person]] = {}
    for index, persons, annotation_id in session.execute(stmt):
        try:
            labels[int(index)] = persons_from_json(persons or [], source=f"annotation {annotation_id}")
        except AnnotationFormatError as exc:
            logger.warning("stored annotation %s skipped: %s", annotation_id, exc)
    return labels


_IN_BATCH = 1000  # frame indices per query of `_predictions_beside`


def _predictions_beside(ctx: BackendContext, project_id: int, key: str, frames: Sequence[int],
                        skip: set[int]) -> dict[int, Frame]:  # fmt: skip
    """The newest stored prediction of each frame up to `MAX_LOST` (10) from `frames` (not in `frames` or
    `skip`), as unlabelled frames of predicted persons: their boxes and track ids seed the tracks of the
    frames asked for (`model.pipeline.tracking.plan_boxes`), as a detector pass over a run remembers its
    tracks. Label Studio asks for one task at a time; before, each answer numbered its people 0, 1, ... in
    the detector's order, so one person's id changed from frame to frame."""
    reach = range(-MAX_LOST, MAX_LOST + 1)
    beside = {f + d for f in frames for d in reach} - set(frames) - skip
    beside = {f for f in beside if f >= 0}
    if not beside:
        return {}
    rows = []
    with read_session(ctx.sessions) as session:
        wanted = sorted(beside)
        for start in range(0, len(wanted), _IN_BATCH):  # bound the bind parameters of one statement
            stmt = (
                select(Task.frame_index, Prediction.persons, Prediction.id, Prediction.created_at)
                .join(Prediction, Prediction.task_id == Task.id)
                .join(VideoRecord, VideoRecord.id == Task.video_id)
                .where(VideoRecord.project_id == project_id, VideoRecord.key == key,
                       Task.frame_index.in_(wanted[start : start + _IN_BATCH]))  # fmt: skip
            )
            rows += session.execute(stmt).all()
    rows.sort(key=lambda row: (row.created_at, row.id))
    out: dict[int, Frame] = {}
    for index, persons, prediction_id, _ in rows:  # the newest last
        try:
            predicted = [p for p in persons_from_json(persons or [], source=f"prediction {prediction_id}")
                         if p.is_prediction and p.track_id is not None]  # fmt: skip
        except AnnotationFormatError as exc:
            logger.warning("stored prediction %s not used: %s", prediction_id, exc)
            continue
        out[int(index)] = Frame(int(index), predicted, is_labeled=False)
    return out


def _video_state(
    ctx: BackendContext, project_id: int, key: str
) -> tuple[int, dict[int, str], dict[int, list[Person]], int]:
    """(stored frame count, frame -> image URL of the stored tasks, frame -> stored human labels, the least
    track id no prediction of the video has used)."""
    with session_scope(ctx.sessions) as session:
        video = session.scalars(
            select(VideoRecord).where(VideoRecord.project_id == project_id, VideoRecord.key == key)
        ).first()
        if video is None:
            return 0, {}, {}, 0
        stmt = select(Task.frame_index, Task.image).where(
            Task.video_id == video.id, Task.frame_index.is_not(None), Task.image.is_not(None)
        )
        urls = {int(i): str(u) for i, u in session.execute(stmt.order_by(Task.id))}
        return int(video.nframes or 0), urls, _stored_labels(session, video.id), int(video.next_track_id or 0)


# ----------------------------------------------------------------------------- predicting


def _known(labels: dict[int, list[Person]], items: Sequence[FrameItem], context_items: Sequence[FrameItem],
           config: LabelConfig, size: ImageSize, errors: dict[int, TaskError]) -> dict[int, Frame]:  # fmt: skip
    """Human labels by frame: stored ones, replaced by the regions on the context tasks, then on the tasks."""
    frames = {i: Frame(i, persons, is_labeled=True) for i, persons in labels.items()}
    predicted = {id(item) for item in items}
    for item in [*context_items, *items]:
        if item.regions is None:
            continue
        result, submitted = item.regions
        try:
            persons, _ = results_to_persons(result, config, source=f"task {item.task_id}", image_size=size,
                                            as_labels=True)  # fmt: skip
            check_track_ids(persons, f"task {item.task_id}")  # predictions carry them on to corrections
        except AnnotationFormatError as exc:
            if id(item) in predicted:
                errors[item.task_id] = exc
            else:
                logger.warning("regions of task %s not used: %s", item.task_id, exc)
            continue
        frames[item.frame.frame_index] = Frame(item.frame.frame_index, persons, is_labeled=submitted)
    return frames


def predict_video_tasks(ctx: BackendContext, serving: ServingModel, config: LabelConfig, project_id: int,
                        items: Sequence[FrameItem], *, context_items: Sequence[FrameItem] = (),
                        progress: Progress | None = None) -> dict[int, TaskPrediction]:  # fmt: skip
    """Predicts frame tasks of ONE video (already registered) and records the predictions.

    Args:
        context_items: other tasks of the video whose regions count as human labels.
        progress: callable(frames done, frames total).

    Returns:
        task id -> its prediction (or error).
    """
    if not items:
        return {}
    key = items[0].frame.video_id
    stored_frames, urls, labels, next_track_id = _video_state(ctx, project_id, key)
    nframes = max([stored_frames] + [i.frame.nframes for i in items])
    errors: dict[int, TaskError] = {}
    for item in items:
        urls[item.frame.frame_index] = item.frame.image
        try:
            ctx.frames.image(item.frame.image)
        except ImageUnavailableError as exc:
            errors[item.task_id] = exc
            urls.pop(item.frame.frame_index)
            logger.warning("task %s: %s", item.task_id, exc)
    ok = [i for i in items if i.task_id not in errors]
    indices = sorted({i.frame.frame_index for i in ok})
    if not indices:
        return {i.task_id: failed(i.task_id, errors[i.task_id]) for i in items}
    reader = VideoFrames(ctx.frames, urls, nframes, anchor=indices[0] if len(indices) == 1 else None)
    size = ImageSize(reader.width, reader.height)
    known = _known(labels, ok, context_items, config, size, errors)
    for task_id in errors.keys() & {i.task_id for i in ok}:
        logger.warning("task %s: %s", task_id, errors[task_id])
    ok = [i for i in ok if i.task_id not in errors]
    indices = sorted({i.frame.frame_index for i in ok})
    out: dict[int, TaskPrediction] = {t: failed(t, e) for t, e in errors.items()}
    if not indices:
        return out
    video = Video(key, nframes, width=size.width, height=size.height)
    seeds = _predictions_beside(ctx, project_id, key, indices, set(known))
    seeds = {f: frame for f, frame in seeds.items() if f < nframes and frame.persons}
    frames = sorted([*known.values(), *seeds.values()], key=lambda frame: frame.index)
    known_video = Video(key, nframes, frames, width=size.width, height=size.height) if frames else None
    start = time.perf_counter()
    try:
        with ctx.predictors.lease(serving.spec) as predictor:
            predicted = predictor.predict_video(video, known_video, frames=indices, reader=reader,
                                                progress=progress or False, first_track_id=next_track_id)  # fmt: skip
    except ModelUnavailableError as exc:
        if serving.spec.head is None:
            raise
        # Its head file was deleted or damaged after promotion: every request fails until another serves.
        reason = exc.__cause__ or exc
        raise ModelUnavailableError(f"serving model version {serving.name!r} cannot be loaded: {reason}; promote "
                                    "a version whose head loads (POST /versions/<name>/promote)") from exc  # fmt: skip
    except Exception:
        logger.exception("project %s video %s tasks %s: prediction failed", project_id, key,
                         [i.task_id for i in ok])  # fmt: skip
        raise
    logger.info("project %s video %s: %d task(s), %d frame(s) in %.2f s (%s, %d stand-in reads)", project_id, key,
                len(ok), len(indices), time.perf_counter() - start, serving.name, reader.stand_ins)  # fmt: skip
    by_frame = {f.index: f.persons for f in predicted.frames}
    answered = {id(p): p for i in indices for p in by_frame.get(i, [])}.values()
    known_ids = {p.track_id for frame in frames for p in frame.persons if p.track_id is not None}
    _take_track_ids(ctx, project_id, key, size, list(answered), known_ids)
    for item in ok:
        persons = with_display_boxes(by_frame.get(item.frame.frame_index, []), size.width, size.height)
        result = persons_to_results(persons, size.width, size.height, config, id_prefix=region_id_prefix(item.task_id))
        scores = [p.score for p in persons if p.score is not None]
        reason = None
        if not result:
            reason = empty_reason(serving, item.frame.frame_index, item.frame.frame_index in known)
            logger.info("project %s task %s: empty prediction: %s", project_id, item.task_id, reason)
        version = with_propagation(serving.name) if any("propagated" in p.extra for p in persons) else None
        out[item.task_id] = TaskPrediction(item.task_id, result, float(sum(scores) / len(scores)) if scores else 0.0,
                                           persons, reason=reason, model_version=version)  # fmt: skip
    _record(ctx, project_id, key, size, serving.name, [(i.task_id, out[i.task_id]) for i in ok])
    return out


def _take_track_ids(ctx: BackendContext, project_id: int, key: str, size: ImageSize, persons: Sequence[Person],
                    known_ids: set[int]) -> None:  # fmt: skip
    """Gives the people new to this request track ids that no other answer of the video has (in place).

    The model numbered them from `videos.next_track_id` as read before predicting, but another request
    on the same video may have recorded people with those ids since. The ids are taken in one atomic
    update of the video row, and the new people renumbered onto them in order: the same ids when no
    request came between.
    """
    ids = {p.track_id for p in persons if p.track_id is not None}
    if not ids:
        return
    new = sorted(ids - known_ids)
    floor = new[0] if new else max(ids, default=-1) + 1  # the model's new ids lie above the known ones
    with session_scope(ctx.sessions) as session:
        video = queries.upsert_video(
            session=session, project_id=project_id, key=key, width=size.width, height=size.height
        )
        first = queries.take_track_ids(session=session, video_id=video.id, count=len(new), floor=floor)
    if first is None:
        if not new:  # only raising next_track_id above the known ids, which reach the top
            return
        # An id beyond the stored range (2**31 after a label's 2**31-1) would reach Label Studio, and the
        # annotation that keeps it be refused at the webhook: such a person gets none.
        logger.warning("project %s video %s: track ids run out; new people keep the ids the model gave, "
                       "none beyond %d", project_id, key, TRACK_IDS[1])  # fmt: skip
        for person in persons:
            if person.track_id is not None and not TRACK_IDS[0] <= person.track_id <= TRACK_IDS[1]:
                person.track_id = None
        return
    to_taken = {old: first + n for n, old in enumerate(new)}
    for person in persons:
        person.track_id = to_taken.get(person.track_id, person.track_id)


def _record(ctx: BackendContext, project_id: int, key: str, size: ImageSize, version: str,
            predictions: Sequence[tuple[int, TaskPrediction]]) -> None:  # fmt: skip
    with session_scope(ctx.sessions) as session:
        queries.upsert_video(session=session, project_id=project_id, key=key, width=size.width, height=size.height)
        for task_id, p in predictions:
            queries.record_prediction(session=session, task_id=task_id, model_version=p.model_version or version,
                                      result=p.result,
                                      persons=p.persons, score=p.score)  # fmt: skip


def predict_tasks(ctx: BackendContext, *, project_id: int, config: LabelConfig, tasks: Sequence[Any],
                  context: Mapping[str, Any] | None = None, label_config: str | None = None
                  ) -> tuple[ServingModel, list[TaskPrediction]]:  # fmt: skip
    """Predicts LS tasks (one answer per task, in order) with the project's serving model.

    Args:
        project_id: LS project id.
        config: the project's parsed labelling config.
        tasks: LS task dicts.
        context: interactive context (its `result` counts as regions of a single task).
        label_config: the raw config XML, stored with the project.

    Raises:
        AnnotationFormatError | ImageUnavailableError: every task failed (the first task's error).
        backend.predictor_cache.ModelUnavailableError: the model cannot be built.
    """
    serving = serving_model(ctx, project_id)
    answers: list[TaskPrediction | FrameItem] = []
    for task in tasks:
        try:
            answers.append(frame_item(task, context if len(tasks) == 1 else None))
        except AnnotationFormatError as exc:
            task_id = task.get("id") if isinstance(task, dict) else None
            logger.warning("task %s skipped: %s", task_id, exc)
            answers.append(failed(task_id if isinstance(task_id, int) else None, exc))
    items = [a for a in answers if isinstance(a, FrameItem)]
    register_tasks(ctx, project_id, items, label_config)
    groups: dict[str, list[FrameItem]] = {}
    for item in items:
        groups.setdefault(item.frame.video_id, []).append(item)
    done: dict[int, TaskPrediction] = {}
    for group in groups.values():
        done.update(predict_video_tasks(ctx, serving, config, project_id, group))
    out = [done[a.task_id] if isinstance(a, FrameItem) else a for a in answers]
    if out and all(p.error is not None for p in out):
        raise out[0].error  # type: ignore[misc]
    return serving, out
