"""Bulk pre-annotation: the "preannotate" job predicts a project's frame tasks and pushes them to LS.

`submit_preannotate` queues it (``POST /preannotate``); `run_preannotate` is the job, registered in
`backend.jobs.registry` and run by a job runner (worker thread or RQ worker), or in the foreground
by ``python -m backend preannotate``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from backend.jobs.registry import PREANNOTATE
from backend.ls.client import LabelStudioClient, LabelStudioError
from model.pipeline.config import with_propagation

if TYPE_CHECKING:
    from backend.context import BackendContext
    from backend.jobs.execution import ProgressReporter

logger = logging.getLogger(__name__)

PREANNOTATE_CHUNK = 256  # frames per predict_video call in bulk pre-annotation


class PreannotateSetupError(ValueError):
    """Pre-annotation cannot run: Label Studio is not configured (says what to set)."""


def submit_preannotate(ctx: BackendContext, project_id: int, *, trigger: str, video_id: str | None = None,
                       task_ids: list[int] | None = None, force: bool = False) -> str:  # fmt: skip
    """Queues a "preannotate" job for the project (or coalesces into the active one); returns its id.

    Raises:
        PreannotateSetupError: no Label Studio URL and API key to push predictions with.
        backend.context.NoRunnerError: the service has no job runner.
        backend.jobs.registry.JobQueueError: the queue refused the job.
        backend.db.queries.ConflictError: the project's pre-annotation job is being cancelled.
    """
    if ctx.ls.client() is None:
        raise PreannotateSetupError(
            "bulk pre-annotation pushes predictions to Label Studio: set LABEL_STUDIO_URL and "
            "LABEL_STUDIO_API_KEY (or connect the project so that /setup tells us)"
        )
    runner = ctx.require_runner("bulk pre-annotation")
    return runner.submit(PREANNOTATE, project_id, trigger=trigger, video_id=video_id, task_ids=task_ids, force=force)


def _has_prediction(task: Mapping[str, Any], version: str) -> bool:
    """Whether the task holds a prediction of `version`, with carried labels or without."""
    names = {version, with_propagation(version)}
    return any(isinstance(p, dict) and p.get("model_version") in names for p in task.get("predictions") or [])


def _select(tasks: Any, serving: str, *, video_id: str | None, task_ids: list[int] | None,
            force: bool) -> tuple[list[Any], list[Any], dict[str, int]]:  # fmt: skip
    """(frame items wanted, those to predict, skip counts) of the project's LS tasks."""
    from annotation_io.errors import AnnotationFormatError
    from backend.services.prediction import frame_item

    wanted = None if task_ids is None else {int(t) for t in task_ids}
    items, todo, skipped = [], [], {"not_frame_task": 0, "already_predicted": 0}
    for task in tasks:
        if wanted is not None and task.get("id") not in wanted:
            continue
        try:
            item = frame_item(task)
        except AnnotationFormatError as exc:
            skipped["not_frame_task"] += 1
            logger.debug("task %s is not a frame task: %s", task.get("id"), exc)
            continue
        if video_id is not None and item.frame.video_id != str(video_id):
            continue
        items.append(item)
        if not force and _has_prediction(task, serving):
            skipped["already_predicted"] += 1
        else:
            todo.append(item)
    return items, todo, skipped


def _by_video(items: list[Any]) -> dict[str, list[Any]]:
    """Items grouped by video, each group in frame order."""
    videos: dict[str, list[Any]] = {}
    for item in sorted(items, key=lambda i: (i.frame.video_id, i.frame.frame_index)):
        videos.setdefault(item.frame.video_id, []).append(item)
    return videos


# LS statuses that refuse one task's prediction (the task was deleted: 400 "Invalid pk", 404): the job goes on
# to the next task; any other failure (the token refused, LS down after the client's retries) ends the job.
TASK_REFUSALS = frozenset({400, 404, 409, 413, 422})


def _push(client: LabelStudioClient, task_id: int, prediction: Any, fallback_version: str, job_id: str) -> str:
    """Pushes one task's prediction: "pushed", or "failed" when LS refuses that task (logged).

    Raises:
        LabelStudioError: any failure but a refusal of this one task.
    """
    try:
        client.create_prediction(task_id, prediction.result, prediction.score,
                                 prediction.model_version or fallback_version)  # fmt: skip
    except LabelStudioError as exc:
        if exc.status not in TASK_REFUSALS:
            raise
        logger.warning("job %s: task %s: Label Studio refused its prediction: %s", job_id, task_id, exc)
        return "failed"
    return "pushed"


def run_preannotate(ctx: BackendContext, *, job_id: str, report: ProgressReporter, project_id: int,
                    video_id: str | None = None, task_ids: list[int] | None = None,
                    force: bool = False) -> dict[str, Any]:  # fmt: skip
    """The "preannotate" job: predicts a project's (or one video's) frame tasks, pushes them to LS.

    Tasks come from `GET /api/tasks`; those that already hold a prediction of the serving version
    (its "+prop" name included: carried labels) are skipped unless `force`. Each video is predicted in frame order in one `predict_video`
    call (cached mode: one backbone pass per person-frame), then each task's prediction is pushed
    with `POST /api/predictions` and recorded in the DB. A task whose prediction LS refuses (deleted
    meanwhile) counts as failed and is logged; any other LS failure ends the job, failed, with its reason.

    Raises:
        ValueError: Label Studio is not configured, or the project's config cannot be served.
        backend.ls.client.LabelStudioError: Label Studio refused a call.
    """
    from annotation_io.label_studio import parse_config
    from backend.services.prediction import predict_video_tasks, register_tasks, serving_model

    client = ctx.ls.client()
    if client is None:
        raise PreannotateSetupError("pushing predictions needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
    raw_config = client.get_project(project_id).get("label_config") or ""
    config = parse_config(raw_config)
    serving = serving_model(ctx, project_id)
    items, todo, skipped = _select(client.iter_tasks(project_id), serving.name, video_id=video_id,
                                   task_ids=task_ids, force=force)  # fmt: skip
    register_tasks(ctx, project_id, items, raw_config)
    videos = _by_video(todo)
    counts = {"pushed": 0, "failed": 0}
    report(model_version=serving.name, videos_total=len(videos), videos_done=0, tasks_total=len(todo),
           tasks_done=0, skipped=skipped, **counts)  # fmt: skip
    report.flush()
    labelled = _by_video(items)
    for n, (key, group) in enumerate(videos.items()):
        # Chunks bound the frames held per call and keep the job's heartbeat going on long videos.
        for chunk in (group[i : i + PREANNOTATE_CHUNK] for i in range(0, len(group), PREANNOTATE_CHUNK)):
            done = counts["pushed"] + counts["failed"]
            predictions = predict_video_tasks(
                ctx, serving, config, project_id, chunk, context_items=labelled.get(key, []),
                progress=lambda d, _t, base=done, key=key: report(video=key, tasks_done=base, frames_in_call=d),
            )  # fmt: skip
            for item in chunk:
                p = predictions[item.task_id]
                if p.error is not None:
                    counts["failed"] += 1
                    logger.warning("job %s: task %s not predicted: %s", job_id, item.task_id, p.error)
                else:
                    counts[_push(client, item.task_id, p, serving.name, job_id)] += 1
                report(tasks_done=counts["pushed"] + counts["failed"], **counts)
        report(videos_done=n + 1)
    report.flush()
    return {"model_version": serving.name, "videos": len(videos), "tasks": len(todo), "skipped": skipped, **counts}
