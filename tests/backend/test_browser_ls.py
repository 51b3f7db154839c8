"""The annotator's loop in Label Studio 1.23.2's own web UI, driven by a real headless Chromium.

Our backend runs over HTTP (werkzeug thread; a real Predictor over the simulated backbone, so every
person gets 15 scored joints) next to the real Label Studio of `tests.backend.ls_server`. The test
logs in, opens a frame task and sees the prediction, submits it unchanged, drags a hip inside its
box by a known distance, presses Settings > Model > Start Training (too few labels first, then
enough), reads the Data Manager's score column, and opens the backend's status page. Every
assertion is checked against what the backend stored (its database), not only the page.
Screenshots of each step go to `tests.backend.browser.artefacts_dir()`.

What Label Studio 1.23.2 cannot show: the Start Training dialog always reads `Response: {}` (LS answers
its own POST with an empty 200 whatever the backend says), so the backend's one-line message is
checked on the ML backend card's title, where the backend writes it.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from annotation_io.label_studio import label_config
from backend.db import jobs as db_jobs
from backend.db import versions as db_versions
from backend.db.session import session_scope
from backend.db.tables import Job, Prediction
from backend.settings import Settings
from tests.backend import browser as ui
from tests.backend.conftest import SynthVideo
from tests.backend.ls_server import LabelStudioServer, label_studio  # noqa: F401  (pytest fixture)
from tests.backend.test_integration_ls import RunningBackend, corrections_of, kinds, wait_for

pytestmark = pytest.mark.slow

SIZE = (640, 480)
DRAG_PX = (36.0, 27.0)  # screen px: 45 px along the diagonal
HIP_SLOT = 11  # left_hip in the 17-slot order (result ids are "<box>_k<slot>")
TRAIN_CONFIG = {"epochs": 1, "batch_size": 4, "augment": False, "seed": 0}


def serve(app: Any) -> RunningBackend:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="backend-http", daemon=True)
    thread.start()
    return RunningBackend(f"http://127.0.0.1:{server.server_port}", app, server, thread)


def stop(backend: RunningBackend) -> None:
    backend.server.shutdown()
    backend.server.server_close()
    backend.thread.join(10)
    backend.ctx.close()


def tear_down(client: Any, project: int, backend: RunningBackend) -> None:
    """Deletes the test's LS project, then closes the client and stops the backend even if that failed."""
    try:
        client.request("DELETE", f"/api/projects/{project}", expect_json=False)
    finally:
        client.close()
        stop(backend)


@pytest.fixture
def driver() -> Iterator[Any]:
    chrome = ui.make_driver()
    try:
        yield chrome
    finally:
        chrome.quit()


def make_world(label_studio: LabelStudioServer, tmp_path: Path,  # noqa: F811
               config: str | None = None) -> tuple[Any, int, SynthVideo, list[int]]:  # fmt: skip
    """An LS project with `config` (default: ours) and the frames of a synthetic one-person video, one task each."""
    from annotation_io.posetrack import load
    from annotation_io.synth import generate
    from backend.ls.importers import import_video

    (path,) = generate(tmp_path / "synth", videos=1, frames=6, people=1, seed=11, size=SIZE)
    gt = load(path)
    client = label_studio.client()
    project = int(client.create_project(f"browser {uuid.uuid4().hex[:8]}", config or label_config())["id"])
    frames_root = label_studio.document_root / f"browser-{uuid.uuid4().hex[:8]}"
    summary = import_video(client, tmp_path / "synth" / "images" / gt.name, project, frames_root=frames_root,
                           document_root=label_studio.document_root, video_id=gt.name, progress=False)  # fmt: skip
    # The frames LS serves are the files the simulated detector must recognise (JPEG re-encoded on import).
    paths = [frames_root / gt.name / f"{t:06d}.jpg" for t in range(gt.num_frames)]
    return client, project, SynthVideo(gt.name, gt, paths, *SIZE), list(summary.task_ids)


def start_backend(label_studio: LabelStudioServer, tmp_path: Path, video: SynthVideo) -> RunningBackend:  # noqa: F811
    from backend.app import create_app
    from tests.backend.head_factory import head_factory

    settings = Settings(label_studio_url=label_studio.url, label_studio_api_key=label_studio.token,
                        data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'backend.db'}",
                        frame_cache_dir=tmp_path / "frames", model_dir=tmp_path / "models",
                        train_min_corrections=10**9, train_min_frames=2)  # fmt: skip
    settings.model_dir.mkdir(parents=True)
    (settings.model_dir / "train_config.json").write_text(json.dumps(TRAIN_CONFIG))
    # No simulated misses: every person gets its 15 joints (what the regions check counts).
    return serve(create_app(settings, predictor_factory=head_factory(video, drop_prob=0.0, blur_drop_prob=0.0)))


def train_jobs(backend: RunningBackend, project: int) -> list[tuple[str, str, str]]:
    with session_scope(backend.ctx.sessions) as session:
        return [(j.id, j.trigger, j.state) for j in db_jobs.list_jobs(session=session, project_id=project, kind="train")]


def card_title(driver: Any, url: str, project: int, prefix: str) -> str | None:
    title = ui.ml_card(driver, url, project)["title"]
    return title if title.startswith(prefix) else None


def test_annotator_loop_in_label_studio(
    label_studio: LabelStudioServer,  # noqa: F811
    tmp_path: Path,
    driver: Any,
) -> None:
    client, project, video, task_ids = make_world(label_studio, tmp_path)
    backend = start_backend(label_studio, tmp_path, video)
    try:
        ctx = backend.ctx
        serving = backend.get("/health")["model_version"]
        ml = client.add_ml_backend(project, backend.url, "dcpose-browser")
        assert ml.get("state") == "CO", ml
        client.dm_action(project, "retrieve_tasks_predictions", task_ids)
        # The backend brings the project's model_version in step with its own (for the score column).
        wait_for(lambda: client.get_project(project).get("model_version") == serving,
                 f"LS project model_version == {serving!r}", timeout=30,
                 describe=lambda: f"it is {client.get_project(project).get('model_version')!r}")  # fmt: skip

        # --- log in, open a frame task: the person and its 15 scored keypoints are on the canvas
        ui.login(driver, label_studio.url, label_studio.username, label_studio.password)
        task = task_ids[1]
        ui.open_task(driver, label_studio.url, project, task)
        stored = client.get_task(task)["predictions"]
        regions = wait_for(lambda: (s := ui.ls_state(driver)["regions"]) and len(s) >= 16 and s,
                           "16 regions on the canvas", timeout=30,
                           describe=lambda: f"regions {ui.ls_state(driver)}; stored predictions {stored}")  # fmt: skip
        boxes = [r for r in regions if r["type"] == "rectangleregion"]
        keypoints = [r for r in regions if r["type"] == "keypointregion"]
        assert len(boxes) == 1 and len(keypoints) == 15, regions
        assert all(r["parentID"] == boxes[0]["id"] and r["score"] is not None for r in keypoints), keypoints
        ui.screenshot(driver, "01_prediction_before")

        # --- Submit unchanged: the backend records 15 kept keypoints
        assert ui.submit(driver) == "Submit"
        annotation = int(ui.ls_state(driver)["pk"])
        rows = wait_for(lambda: corrections_of(ctx, annotation), f"corrections of annotation {annotation}")
        assert kinds(rows) == {"kept": 15} and {r[3] for r in rows} == {serving}, rows

        # --- drag the left hip (inside the box, near its centre) by a known distance, Update
        hip = f"{boxes[0]['id']}_k{HIP_SLOT}"
        where = ui.region_geometry(driver, hip)
        hit = ui.hit_test(driver, where["x"], where["y"])
        assert hit is not None and hit["cls"] == "Circle" and hit["name"].startswith(hip), (hit, where)
        ui.drag(driver, where["x"], where["y"], *DRAG_PX)
        expected = math.hypot(*DRAG_PX) * where["naturalWidth"] / where["stageWidth"] / where["zoom"]
        assert ui.submit(driver) == "Update"
        assert int(ui.ls_state(driver)["pk"]) == annotation
        moved = wait_for(lambda: [r for r in corrections_of(ctx, annotation) if r[0] == "moved"] or None,
                         "a moved keypoint recorded")  # fmt: skip
        assert len(moved) == 1 and moved[0][1] == HIP_SLOT, moved
        assert moved[0][2] == pytest.approx(expected, abs=2.0), f"moved {moved[0][2]:.1f} px, dragged {expected:.1f} px"
        assert kinds(corrections_of(ctx, annotation)) == {"kept": 14, "moved": 1}
        ui.screenshot(driver, "02_corrected_after")

        # --- Start Training with one labelled frame: nothing starts; the card says why and what is missing
        text = ui.start_training(driver, label_studio.url, project)
        assert "Request Sent!" in text and "Response: {}" in text, text  # LS 1.23.2 drops the backend's answer
        ui.screenshot(driver, "03_start_training_dialog")
        refused = wait_for(lambda: card_title(driver, label_studio.url, project, "DCPose: Training not started"),
                           "the refusal on the ML backend card", timeout=30)  # fmt: skip
        assert "Submit 1 more labelled frame(s)" in refused, refused
        assert train_jobs(backend, project) == []
        ui.screenshot(driver, "04_card_training_not_started")

        # --- more labelled frames (through the API), Start Training again: a job, and its message
        for other in task_ids[2:5]:
            (prediction,) = client.get_task(other)["predictions"]
            more = int(client.create_annotation(other, prediction["result"], lead_time=2.0)["id"])
            wait_for(lambda more=more: corrections_of(ctx, more), f"corrections of annotation {more}")
        ui.start_training(driver, label_studio.url, project)
        (job_id, trigger, _), = wait_for(lambda: train_jobs(backend, project), "a training job at the backend")
        assert trigger == "START_TRAINING"
        queued = wait_for(lambda: card_title(driver, label_studio.url, project, f"DCPose: Training job {job_id}"),
                          "the job's message on the ML backend card", timeout=30)  # fmt: skip
        assert "queued" in queued and f"/jobs/{job_id}" in queued, queued
        ui.screenshot(driver, "05_card_training_queued")

        # --- the Data Manager's score column shows the predictions' scores
        with session_scope(ctx.sessions) as session:
            ours = {p.task_id: p.score for p in session.scalars(select(Prediction))}
        listed = {t["id"]: t.get("predictions_score") for t in client.list_tasks(project, fields="all")}
        assert all(listed[t] == pytest.approx(ours[t], abs=1e-6) for t in task_ids), (listed, ours)
        rows_text = ui.data_manager_rows(driver, label_studio.url, project)
        assert len(rows_text) == len(task_ids), rows_text
        for t in task_ids:
            row = next(r for r in rows_text if r.split(" | ")[0] == str(t))
            assert any(abs(float(c) - ours[t]) < 0.006 for c in row.split(" | ") if c.startswith("0.")), (row, ours)
        ui.screenshot(driver, "06_data_manager_scores")

        # --- the training ends; the status page shows the version it made
        def finished() -> bool:
            return all(state not in ("queued", "running") for _, _, state in train_jobs(backend, project))

        wait_for(finished, "the training job to end", timeout=300)
        with session_scope(ctx.sessions) as session:
            (version,) = [v.name for v in db_versions.list_versions(session=session, project_id=project)
                          if v.name.endswith("-v1")]  # fmt: skip
        driver.get(backend.url + "/")
        row = ui.by_css(driver, f'tr.version[data-name="{version}"]')
        assert version in row.text and "held-out" in driver.page_source
        ui.screenshot(driver, "07_status_page_after_training")
    finally:
        tear_down(client, project, backend)


def test_status_page_in_a_browser(tmp_path: Path, driver: Any) -> None:
    """Renders the versions, moves a running job's bar as its progress changes, cancels it and promotes after a
    confirm."""
    from backend.app import create_app
    from scripts.bench_status_page import seed

    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'backend.db'}",
                        frame_cache_dir=tmp_path / "frames", model_dir=tmp_path / "models")  # fmt: skip
    backend = serve(create_app(settings))
    try:
        ctx = backend.ctx
        seed(ctx, versions=3, jobs=4, annotations=6)
        with session_scope(ctx.sessions) as session:
            job = db_jobs.create_job(session=session, project_id=77, kind="preannotate", trigger="api")
            db_jobs.update_job(session=session, job_id=job.id, state="running",
                               progress={"tasks_done": 3, "tasks_total": 10})  # fmt: skip
            job_id = job.id
        driver.get(backend.url + "/")
        bar = f'tr.job[data-id="{job_id}"] progress'
        assert float(ui.by_css(driver, bar).get_attribute("value")) == pytest.approx(0.3)
        ui.screenshot(driver, "08_status_page")
        with session_scope(ctx.sessions) as session:
            db_jobs.update_job(session=session, job_id=job_id, progress={"tasks_done": 8, "tasks_total": 10})
        bar_js = f"const e = document.querySelector('{bar}'); return e ? e.value : 0;"
        wait_for(lambda: float(driver.execute_script(bar_js)) > 0.75, "the progress bar to move to 80 %", timeout=15)

        # Cancel the running job: a confirmation, the request stored, then the row ends "cancelled" unbuttoned.
        cancel = f'tr.job[data-id="{job_id}"] button.cancel'
        ui.by_css(driver, cancel).click()
        alert = ui.wait(driver).until(lambda d: d.switch_to.alert)
        assert f"Cancel job {job_id}" in alert.text
        alert.accept()
        ui.wait(driver).until(lambda d: d.find_element("css selector", cancel).text == "Cancelling…")
        with session_scope(ctx.sessions) as session:
            assert session.get(Job, job_id).cancel_requested_at is not None
            db_jobs.update_job(session=session, job_id=job_id, state="cancelled")  # what its next report does
        state_js = f"const e = document.querySelector('tr.job[data-id=\"{job_id}\"] .state'); return e && e.textContent;"
        ui.wait(driver).until(lambda d: d.execute_script(state_js) == "cancelled")
        assert not driver.find_elements("css selector", cancel)

        # Roll back to p1-v1: a confirmation, then the page and the backend serve it.
        assert "p1-v3" in ui.by_css(driver, '#serving td[data-scope="project 1"]').text
        ui.by_css(driver, 'button.promote[data-name="p1-v1"]').click()
        alert = ui.wait(driver).until(lambda d: d.switch_to.alert)
        assert "Serve p1-v1" in alert.text
        alert.accept()
        serving_js = 'const e = document.querySelector(\'#serving td[data-scope="project 1"]\'); return e && e.textContent;'
        ui.wait(driver).until(lambda d: "p1-v1" in (d.execute_script(serving_js) or ""))  # the page reloads
        with session_scope(ctx.sessions) as session:
            assert db_versions.serving_version(session=session, project_id=1).name == "p1-v1"
            assert session.get(Job, job_id) is not None
        ui.screenshot(driver, "09_status_page_rolled_back")
    finally:
        stop(backend)
