"""Keeps Label Studio in step with the backend through its REST API: the project's model version, a note.

Label Studio 1.23 averages the Data Manager's "Prediction score" over the predictions whose
`model_version` equals the project's `model_version` (set to the ML backend's *title* on connect),
so the backend sets the project's `model_version` to the version that serves it: on /setup, after
/predict and after a promotion. LS accepts the value only once a prediction of that version is
stored (or an ML backend bears it as its title), so a refused update is retried a few times and
then left to the next trigger. `post_note` shows a one-line message (e.g. what "Start Training"
did: LS 1.23's dialog shows only `Response: {}`) as the title of the project's ML backend card in
Settings > Model. Both run in the job runner's "ls" lane (`request_sync`), never inside a request.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from backend.jobs.registry import SYNC_LS, JobQueueError
from backend.ls.client import LabelStudioError, as_id
from backend.services.prediction import serving_model

if TYPE_CHECKING:
    from backend.context import BackendContext

logger = logging.getLogger(__name__)

LANE = "ls"
NOTE_PREFIX = "DCPose"
RETRY_S = 1.0


def request_sync(ctx: BackendContext, project_id: int | None, *, note: str | None = None,
                 backend_url: str | None = None, attempts: int = 1) -> bool:  # fmt: skip
    """Queues `sync_project` (no-op without a runner, a project or a Label Studio to talk to).

    Returns:
        Whether it was queued.
    """
    if ctx.runner is None or project_id is None or ctx.ls.client() is None:
        return False
    if note is None and ctx.ls_versions.get(project_id) == serving_model(ctx, project_id).name:
        return False  # Label Studio already holds it: no job and no REST call per /predict
    try:
        ctx.runner.enqueue(SYNC_LS, lane=LANE, project_id=project_id, note=note, backend_url=backend_url,
                           attempts=attempts)  # fmt: skip
    except JobQueueError as exc:
        logger.warning("project %s: Label Studio sync not queued: %s", project_id, exc)
        return False
    return True


def sync_project(ctx: BackendContext, *, project_id: int, note: str | None = None,
                 backend_url: str | None = None, attempts: int = 1) -> str:  # fmt: skip
    """Posts `note` (if any), then sets the project's model_version to the serving version.

    Args:
        attempts: tries of the model-version update, RETRY_S apart, while LS refuses the version
            (its predictions are not stored yet).

    Returns:
        "unchanged", "updated", "refused" or "unavailable" (no LS client, LS unreachable).
    """
    client = ctx.ls.client()
    if client is None:
        return "unavailable"
    try:
        if note:
            post_note(ctx, project_id, note, backend_url)
        version = serving_model(ctx, project_id).name
        for attempt in range(max(attempts, 1)):
            outcome = set_model_version(ctx, project_id, version)
            if outcome != "refused":
                ctx.ls_versions[project_id] = version
                return outcome
            if attempt + 1 < attempts:
                time.sleep(RETRY_S)
        logger.info("project %s: Label Studio does not take model_version %r yet (no prediction of it stored)",
                    project_id, version)  # fmt: skip
        return "refused"
    except (LabelStudioError, OSError) as exc:
        logger.warning("project %s: Label Studio sync failed: %s", project_id, exc)
        return "unavailable"


def set_model_version(ctx: BackendContext, project_id: int, version: str) -> str:
    """PATCHes the project's model_version; "unchanged", "updated" or "refused" (LS's 400).

    Raises:
        LabelStudioError: any other LS error.
    """
    client = ctx.ls.client()
    if client is None:
        return "unavailable"
    project = client.get_project(project_id)
    if project.get("model_version") == version:
        return "unchanged"
    try:
        client.request("PATCH", f"/api/projects/{project_id}", json_body={"model_version": version})
    except LabelStudioError as exc:
        if getattr(exc, "status", None) == 400:
            return "refused"
        raise
    logger.info("project %s: Label Studio model_version %r -> %r", project_id, project.get("model_version"),
                version)  # fmt: skip
    return "updated"


def _same_server(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.hostname, pa.port or 80) == (pb.hostname, pb.port or 80)


def post_note(ctx: BackendContext, project_id: int, message: str, backend_url: str | None = None) -> int:
    """Sets the title of the project's ML backends that point at this service to "DCPose: <message>".

    Args:
        backend_url: this service as Label Studio reaches it (the URL of its requests); None: every
            ML backend of the project whose title starts with NOTE_PREFIX or that is the only one.

    Returns:
        How many ML backend cards were retitled.

    Raises:
        LabelStudioError: LS refused, or listed its ML backends in another shape (not objects with ids).
    """
    client = ctx.ls.client()
    if client is None:
        return 0
    listed: Any = client.request("GET", "/api/ml", params={"project": project_id})
    if not isinstance(listed, list) or not all(isinstance(b, dict) for b in listed):
        raise LabelStudioError("GET", "/api/ml", f"expected a list of ML backends, got {type(listed).__name__}")
    backends: list[dict[str, Any]] = listed
    if backend_url:
        mine = [b for b in backends if _same_server(str(b.get("url") or ""), backend_url)]
    else:
        mine = [b for b in backends if str(b.get("title") or "").startswith(NOTE_PREFIX)] or backends[:1]
    title = f"{NOTE_PREFIX}: {' '.join(message.split())}"
    ids = [as_id(b.get("id"), "GET", "/api/ml", "an ML backend's 'id'") for b in mine]  # all checked first
    for b, backend_id in zip(mine, ids, strict=True):
        client.request("PATCH", f"/api/ml/{backend_id}", json_body={"title": title, "url": b.get("url"),
                                                                     "project": project_id})  # fmt: skip
    return len(mine)
