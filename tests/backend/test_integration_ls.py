"""End to end with a real Label Studio 1.23.2: import, predict, correct, webhooks, metrics, delete, train.

Our backend runs for real (`create_app` served by werkzeug in a thread on 127.0.0.1, the offline
BlazePose model, the test database: SQLite file, then PostgreSQL) next to a real Label Studio (the
`tests.backend.ls_server` harness). Label Studio talks to it over HTTP exactly as in production:
/health and /setup on connect, a batched /predict for the Data Manager's "Retrieve Predictions",
ANNOTATION_CREATED / ANNOTATION_UPDATED / ANNOTATIONS_DELETED webhooks sent synchronously inside
the annotation requests, START_TRAINING for the "Start Training" button. The phases' durations are
printed at the end of each run (visible without -s).
"""

from __future__ import annotations

import copy
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cv2
import pytest
import requests
from flask import Flask
from sqlalchemy import func, select
from werkzeug.serving import BaseWSGIServer, make_server

from annotation_io.label_studio import label_config, parse_config
from annotation_io.skeletons import POSETRACK_KEYPOINTS
from backend.context import BackendContext
from backend.db.session import session_scope
from backend.db.tables import Annotation, Correction, Job, Prediction, WebhookEvent
from backend.ls.client import LabelStudioClient
from backend.ls.importers import import_video
from backend.settings import Settings
from tests.backend.ls_server import LabelStudioServer, label_studio  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.slow

FRAMES, PEOPLE, SIZE = 8, 2, (320, 240)
MOVE_PX = (6.0, 8.0)  # the corrected keypoint moves by 10 px
WEBHOOK_TIMEOUT_S = 20.0
TRAIN_ANSWER_MAX_S = 10.0  # LS blocks "Start Training" until the backend answers (ours: a few ms)
T = TypeVar("T")


# ----------------------------------------------------------------------------- helpers


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = WEBHOOK_TIMEOUT_S,
             describe: Callable[[], str] | None = None) -> T:  # fmt: skip
    """The first truthy value of `probe()`, polled every 0.1 s; fails naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"; {describe()}" if describe is not None else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(0.1)


@dataclass
class RunningBackend:
    """Our service served over HTTP from a thread."""

    url: str
    app: Flask
    server: BaseWSGIServer = field(repr=False)
    thread: threading.Thread = field(repr=False)

    @property
    def ctx(self) -> BackendContext:
        return self.app.extensions["dcpose"]

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        resp = requests.get(self.url + path, params=params, timeout=30)
        assert resp.status_code == 200, f"GET {path}: {resp.status_code} {resp.text[:500]}"
        return resp.json()

    def events(self, project: int) -> list[tuple[str, str, int | None]]:
        """(action, status, annotation id) of the webhook events recorded for a project, in order."""
        with session_scope(self.ctx.sessions) as session:
            stmt = select(WebhookEvent).where(WebhookEvent.project_id == project).order_by(WebhookEvent.id)
            return [(e.action, e.status, e.annotation_id) for e in session.scalars(stmt)]


@pytest.fixture
def backend(
    db_url: str, tmp_path: Path, label_studio: LabelStudioServer  # noqa: F811
) -> Iterator[RunningBackend]:
    """The backend on the test database with the default model (`default_backbone`: MoveNet where `make test`
    fetched it, else BlazePose), on a free port."""
    from backend.app import create_app
    from model.backbones.names import default_backbone

    settings = Settings(label_studio_url=label_studio.url, label_studio_api_key=label_studio.token,
                        data_dir=tmp_path / "data", database_url=db_url, frame_cache_dir=tmp_path / "frames",
                        model_dir=tmp_path / "models", backbone=default_backbone())  # fmt: skip
    app = create_app(settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="backend-http", daemon=True)
    thread.start()
    running = RunningBackend(f"http://127.0.0.1:{server.server_port}", app, server, thread)
    try:
        yield running
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        app.extensions["dcpose"].close()
        assert not thread.is_alive(), "the backend's HTTP thread did not stop"


@pytest.fixture
def ls_project(label_studio: LabelStudioServer) -> Iterator[tuple[LabelStudioClient, int]]:  # noqa: F811
    """A fresh LS project with our labelling config; deleted afterwards (with its ML backend and webhook)."""
    client = label_studio.client()
    project = int(client.create_project(f"e2e {uuid.uuid4().hex[:8]}", label_config())["id"])
    try:
        yield client, project
    finally:
        try:
            client.request("DELETE", f"/api/projects/{project}", expect_json=False)
        finally:
            client.close()


def write_synthetic_mp4(folder: Path, name: str) -> tuple[Path, Any]:
    """A synthetic walking-people video (ground truth returned too) written as an mp4v .mp4."""
    from annotation_io.posetrack import load
    from annotation_io.synth import generate

    (gt_path,) = generate(folder, videos=1, frames=FRAMES, people=PEOPLE, seed=5, size=SIZE)
    gt = load(gt_path)
    path = folder / f"{name}.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, SIZE)
    assert writer.isOpened(), "cv2 cannot write mp4v videos here"
    try:
        for t in range(gt.num_frames):
            image = cv2.imread(str(folder / "images" / gt.name / f"{t:06d}.jpg"))
            assert image is not None and image.shape[:2] == (SIZE[1], SIZE[0])
            writer.write(image)
    finally:
        writer.release()
    return path, gt


def check_prediction_shape(task_id: int, prediction: dict[str, Any]) -> list[dict[str, Any]]:
    """The keypoint items of a stored prediction, after checking every one has a parentID to a box."""
    result = prediction["result"]
    boxes = {r["id"] for r in result if r["type"] == "rectanglelabels"}
    keypoints = [r for r in result if r["type"] == "keypointlabels"]
    orphans = [r.get("id") for r in keypoints if r.get("parentID") not in boxes]
    assert not orphans, f"task {task_id}: keypoints {orphans} have no parentID naming a box {sorted(boxes)}"
    return keypoints


def corrected(result: list[dict[str, Any]], move_id: str, delete_id: str | None) -> list[dict[str, Any]]:
    """`result` with keypoint `move_id` moved by MOVE_PX (kept inside the image) and `delete_id` removed."""
    out = []
    for item in copy.deepcopy(result):
        if item["id"] == delete_id and item["type"] == "keypointlabels":
            continue
        if item["id"] == move_id and item["type"] == "keypointlabels":
            w, h, v = item["original_width"], item["original_height"], item["value"]
            x, y = v["x"] * w / 100, v["y"] * h / 100
            dx = MOVE_PX[0] if x + MOVE_PX[0] < w - 1 else -MOVE_PX[0]
            dy = -MOVE_PX[1] if y - MOVE_PX[1] > 1 else MOVE_PX[1]
            v["x"], v["y"] = (x + dx) * 100 / w, (y + dy) * 100 / h
        out.append(item)
    return out


CorrectionTuple = tuple[str, int, float | None, str | None]


def corrections_of(ctx: BackendContext, annotation_id: int) -> list[CorrectionTuple]:
    """(kind, joint, distance_px, model_version) of an annotation's stored corrections."""
    with session_scope(ctx.sessions) as session:
        stmt = select(Correction).where(Correction.annotation_id == annotation_id).order_by(Correction.id)
        return [(c.kind, c.joint, c.distance_px, c.model_version) for c in session.scalars(stmt)]


def annotation_row(ctx: BackendContext, annotation_id: int) -> tuple[Any, bool, int] | None:
    """(ls_updated_at, deleted, result length) of our stored annotation, or None."""
    with session_scope(ctx.sessions) as session:
        row = session.get(Annotation, annotation_id)
        return None if row is None else (row.ls_updated_at, row.deleted, len(row.result))


def kinds(rows: list[CorrectionTuple]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind, *_ in rows:
        counts[kind] = counts.get(kind, 0) + 1
    return counts


# ----------------------------------------------------------------------------- phases


def retrieve_predictions(client: LabelStudioClient, backend: RunningBackend, project: int,
                         task_ids: list[int], serving: str) -> dict[int, dict[str, Any]]:  # fmt: skip
    """Runs the Data Manager action, checks what LS and our DB stored; returns task id -> LS prediction."""
    client.dm_action(project, "retrieve_tasks_predictions", task_ids)
    listed = client.list_tasks(project, fields="task_only")
    counts = {task["id"]: task["total_predictions"] for task in listed}
    assert all(counts[i] == 1 for i in task_ids), f"predictions per task after the DM action: {counts}"
    stored: dict[int, dict[str, Any]] = {}
    for task_id in task_ids:  # every task has its prediction now, so opening it triggers no new one
        (prediction,) = client.get_task(task_id)["predictions"]
        assert prediction["model_version"] == serving, f"task {task_id}: {prediction['model_version']!r}"
        check_prediction_shape(task_id, prediction)
        stored[task_id] = prediction
    with session_scope(backend.ctx.sessions) as session:
        ours = session.scalars(select(Prediction.task_id).where(Prediction.model_version == serving)).all()
    assert sorted(ours) == sorted(task_ids), f"our DB recorded predictions for tasks {sorted(ours)}"
    return stored


def check_metrics(backend: RunningBackend, project: int, serving: str, *, kept: int, moved: int,
                  deleted: int, annotations: int) -> dict[str, Any]:  # fmt: skip
    """GET /metrics for the project; checks the serving version's overall counts; returns its entry."""
    metrics = backend.get("/metrics", project=project)
    assert metrics["annotations_received"] == annotations, metrics
    version = metrics["model_versions"][serving]
    overall = version["overall"]
    got = (overall["kept"], overall["moved"], overall["deleted"], overall["added"])
    assert got == (kept, moved, deleted, 0), f"/metrics overall (kept, moved, deleted, added): {overall}"
    assert version["predictions_served"] == FRAMES, version
    assert version["annotations_received"] == annotations, version
    return version


def start_training(client: LabelStudioClient, backend: RunningBackend, project: int, ml_id: int) -> float:
    """Presses "Start Training" (POST /api/ml/{id}/train), checks that START_TRAINING arrived.

    Returns:
        How long LS took to answer (it waits for our /webhook).
    """
    t = time.perf_counter()
    client.request("POST", f"/api/ml/{ml_id}/train", expect_json=False)
    answer_s = time.perf_counter() - t
    assert answer_s < TRAIN_ANSWER_MAX_S, f"Start Training took {answer_s:.1f} s"
    wait_for(lambda: any(a == "START_TRAINING" for a, _, _ in backend.events(project)),
             "START_TRAINING in our webhook events",
             describe=lambda: f"events {backend.events(project)}")  # fmt: skip

    def training_settled() -> bool:  # a queued or running job would still use the DB after the test
        with session_scope(backend.ctx.sessions) as session:
            active = Job.state.in_(("queued", "running"))
            return not session.scalars(select(Job.id).where(Job.project_id == project, active)).all()

    wait_for(training_settled, "the training job (if one was queued) to end", timeout=180)
    return answer_s


# ----------------------------------------------------------------------------- the test


def test_label_studio_end_to_end(
    label_studio: LabelStudioServer,  # noqa: F811
    ls_project: tuple[LabelStudioClient, int],
    backend: RunningBackend,
    tmp_path: Path,
    db_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, project = ls_project
    ctx = backend.ctx
    phases: dict[str, float] = {"LS start (once per session)": label_studio.start_s}
    joint_of = parse_config(label_config()).joint_labels  # keypoint label -> 17-slot joint
    started = time.perf_counter()

    def events() -> str:
        return f"events recorded: {backend.events(project)}"

    # --- import the frames of a synthetic video (local files under LS's document root)
    video, _ = write_synthetic_mp4(tmp_path / "synth", f"e2e-{uuid.uuid4().hex[:8]}")
    t = time.perf_counter()
    summary = import_video(client, video, project, frames_root=label_studio.document_root / video.stem,
                           document_root=label_studio.document_root, progress=False)  # fmt: skip
    phases["import"] = time.perf_counter() - t
    task_ids = summary.task_ids
    assert summary.tasks_created == FRAMES and len(task_ids) == FRAMES, f"import made {summary}"

    # --- connect the backend (LS calls /health and /setup), then "Retrieve Predictions"
    serving = backend.get("/health")["model_version"]
    ml = client.add_ml_backend(project, backend.url, "dcpose-e2e")
    assert ml.get("state") == "CO", f"LS did not connect the backend: {ml}"
    assert ml.get("model_version") == serving, f"LS has version {ml.get('model_version')!r}, not {serving!r}"
    t = time.perf_counter()
    stored = retrieve_predictions(client, backend, project, task_ids, serving)
    phases["predictions (DM action)"] = time.perf_counter() - t

    # --- submit a corrected annotation: one keypoint moved by 10 px, one deleted, the rest kept
    task_id = max(task_ids, key=lambda i: len(check_prediction_shape(i, stored[i])))
    prediction = stored[task_id]
    keypoints = check_prediction_shape(task_id, prediction)
    n = len(keypoints)
    assert n >= 3, f"the backbone found only {n} keypoints on the best synthetic frame"
    moved_kp, deleted_kp = keypoints[0], keypoints[1]
    moved_joint = joint_of[moved_kp["value"]["keypointlabels"][0]]
    deleted_joint = joint_of[deleted_kp["value"]["keypointlabels"][0]]
    result = corrected(prediction["result"], moved_kp["id"], deleted_kp["id"])
    t = time.perf_counter()
    ann = client.create_annotation(task_id, result, lead_time=4.0, parent_prediction=prediction["id"])
    ann_id = int(ann["id"])
    phases["annotation POST (webhook sent inside)"] = time.perf_counter() - t
    rows = wait_for(lambda: corrections_of(ctx, ann_id), f"corrections of {ann_id}", describe=events)
    phases["webhook round trip (POST -> corrections stored)"] = time.perf_counter() - t
    assert kinds(rows) == {"kept": n - 2, "moved": 1, "deleted": 1}, f"corrections {rows}"
    (moved_row,) = [r for r in rows if r[0] == "moved"]
    (deleted_row,) = [r for r in rows if r[0] == "deleted"]
    assert (moved_row[1], deleted_row[1]) == (moved_joint, deleted_joint), f"joints in {rows}"
    assert moved_row[2] == pytest.approx(math.hypot(*MOVE_PX), abs=0.5), f"moved distance {moved_row[2]}"
    assert {r[3] for r in rows} == {serving}, f"corrections not all attributed to {serving}: {rows}"
    version = check_metrics(backend, project, serving, kept=n - 2, moved=1, deleted=1, annotations=1)
    assert version["overall"]["moved_mean_px"] == pytest.approx(math.hypot(*MOVE_PX), abs=0.5), version
    assert version["joints"][POSETRACK_KEYPOINTS[moved_joint]]["moved"] == 1, version["joints"]
    assert version["joints"][POSETRACK_KEYPOINTS[deleted_joint]]["deleted"] == 1, version["joints"]

    # --- PATCH: the deleted keypoint is put back -> one current state, its corrections replaced
    before = annotation_row(ctx, ann_id)
    assert before is not None and not before[1], before
    restored = corrected(prediction["result"], moved_kp["id"], None)
    client.update_annotation(ann_id, restored)

    def updated() -> bool:
        state = annotation_row(ctx, ann_id)
        newer = state is not None and state[0] > before[0]
        return newer and "deleted" not in kinds(corrections_of(ctx, ann_id))

    wait_for(updated, f"ANNOTATION_UPDATED of {ann_id} applied", describe=events)
    rows = corrections_of(ctx, ann_id)
    assert kinds(rows) == {"kept": n - 1, "moved": 1}, f"corrections after the update {rows}"
    assert annotation_row(ctx, ann_id)[2] == len(restored)  # type: ignore[index]
    with session_scope(ctx.sessions) as session:
        count = select(func.count()).select_from(Annotation).where(Annotation.task_id == task_id)
        assert session.scalar(count) == 1, f"more than one annotation row for task {task_id}"
    check_metrics(backend, project, serving, kept=n - 1, moved=1, deleted=0, annotations=1)

    # --- DELETE -> ANNOTATIONS_DELETED -> marked deleted (rows kept), left out of /metrics
    client.delete_annotation(ann_id)
    wait_for(lambda: (annotation_row(ctx, ann_id) or (0, False))[1], f"annotation {ann_id} marked deleted",
             describe=events)  # fmt: skip
    assert corrections_of(ctx, ann_id), "deleting must only mark the annotation, not drop its corrections"
    check_metrics(backend, project, serving, kept=0, moved=0, deleted=0, annotations=0)

    # --- "Start Training": START_TRAINING reaches /webhook (what the job then does is not tested here)
    phases["Start Training (LS call)"] = start_training(client, backend, project, int(ml["id"]))
    actions = [a for a, _, _ in backend.events(project)]
    for action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "START_TRAINING"):
        assert action in actions, f"{action} never reached /webhook; events {actions}"

    phases["total (LS already up)"] = time.perf_counter() - started
    with capsys.disabled():
        line = ", ".join(f"{k}: {v:.2f} s" for k, v in phases.items())
        print(f"\n[LS integration, {db_url.split(':', 1)[0]}] {line}")


def test_tasks_predicted_one_at_a_time_keep_their_track_ids(
    label_studio: LabelStudioServer,  # noqa: F811
    ls_project: tuple[LabelStudioClient, int],
    backend: RunningBackend,
    tmp_path: Path,
) -> None:
    """Label Studio asks for one task at a time (an annotator opening them in order; here the Data Manager
    action on one task each): each person keeps one track id from frame to frame, and the follower's count
    of frames found in a row goes on from the prediction stored for the frame before."""
    from annotation_io.label_studio import results_to_persons

    client, project = ls_project
    video, gt = write_synthetic_mp4(tmp_path / "synth", f"one-{uuid.uuid4().hex[:8]}")
    summary = import_video(client, video, project, frames_root=label_studio.document_root / video.stem,
                           document_root=label_studio.document_root, progress=False)  # fmt: skip
    client.add_ml_backend(project, backend.url, "dcpose-one-at-a-time")
    ids: dict[int, list[int]] = {}  # ground-truth track -> predicted id on each frame it is found
    for t, task_id in enumerate(summary.task_ids):
        client.dm_action(project, "retrieve_tasks_predictions", [task_id])
        (prediction,) = client.get_task(task_id)["predictions"]
        persons, _ = results_to_persons(prediction["result"], parse_config(label_config()))
        for truth in gt.frames[t].persons:
            hits = [p for p in persons if p.box is not None and p.box.iou(truth.box) > 0.5]
            if len(hits) == 1:
                ids.setdefault(truth.track_id, []).append(hits[0].track_id)
    # BlazePose finds the walker in front on every frame; the one half behind him, seldom
    assert any(len(v) >= FRAMES - 1 for v in ids.values()), ids
    assert all(len(set(v)) == 1 for v in ids.values()), f"track ids per person, frame by frame: {ids}"
    assert len({v[0] for v in ids.values()}) == len(ids), ids
    with session_scope(backend.ctx.sessions) as session:
        last = session.scalars(select(Prediction).where(Prediction.task_id == summary.task_ids[-1])).one()
    seen = max(p["extra"]["seen"] for p in last.persons)
    assert seen >= FRAMES - 1, last.persons  # found on frame after frame: counted on from task to task
