"""import_video / import_posetrack / their CLI: against an in-memory LS stand-in, then a real LS (slow)."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import cv2
import numpy as np
import pytest

from annotation_io import posetrack, synth
from annotation_io.errors import AnnotationFormatError
from annotation_io.label_studio import label_config, parse_task, results_to_persons
from annotation_io.types import Video
from backend.ls.client import LabelStudioError
from backend.ls.importers import (
    LOCAL_FILES_PREFIX,
    add_import_commands,
    import_posetrack,
    import_video,
    local_files_url,
)
from tests.backend.ls_server import LabelStudioServer, label_studio  # noqa: F401  (pytest fixture)

W, H, FPS = 160, 120, 25.0


class MemoryLS:
    """The few LabelStudioClient methods the importers call, over in-memory projects."""

    def __init__(self, projects: tuple[int, ...] = (1,)) -> None:
        self.projects = {p: label_config() for p in projects}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.storages: list[dict[str, Any]] = []
        self.import_calls = 0

    def get_project(self, project: int) -> dict[str, Any]:
        if project not in self.projects:
            raise LabelStudioError("GET", f"/api/projects/{project}", "404: Not found.", status=404)
        return {"id": project, "label_config": self.projects[project]}

    def list_local_storages(self, project: int) -> list[dict[str, Any]]:
        return [s for s in self.storages if s["project"] == project]

    def create_local_storage(self, project: int, path: str | Path) -> dict[str, Any]:
        if not Path(path).is_absolute() or not Path(path).is_dir():
            raise LabelStudioError("POST", "/api/storages/localfiles", f"400: no {path}", status=400)
        self.storages.append({"id": len(self.storages) + 1, "project": project, "path": str(path)})
        return self.storages[-1]

    def iter_tasks(
        self, project: int, *, page_size: int = 100, fields: str = "all"
    ) -> Iterator[dict[str, Any]]:
        return iter([t for t in self.tasks.values() if t["project"] == project])

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> list[int]:
        self.import_calls += 1
        ids = []
        for task in tasks:
            task_id = len(self.tasks) + 1
            self.tasks[task_id] = {"id": task_id, "project": project, **task}
            ids.append(task_id)
        return ids


def write_synthetic_mp4(path: Path, frames: int, seed: int = 0) -> Path:
    """A small mp4 of synth walkers (W x H at FPS)."""
    scene = synth.make_scene(np.random.default_rng(seed), frames=frames, people=2, size=(W, H))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    assert writer.isOpened(), "cv2 cannot write mp4v here"
    for image, _ in synth.render_video(scene):
        writer.write(image)
    writer.release()
    return path


def image_path(url: str, root: Path) -> Path:
    assert url.startswith(LOCAL_FILES_PREFIX)
    return root / unquote(url[len(LOCAL_FILES_PREFIX) :])


@pytest.fixture()
def docroot(tmp_path: Path) -> Path:
    root = tmp_path / "docroot"
    root.mkdir()
    return root


# ----------------------------------------------------------------------------- video, fast


def test_import_video_one_task_per_kept_frame_and_rerun_skips(tmp_path: Path, docroot: Path) -> None:
    video = write_synthetic_mp4(tmp_path / "clip one.mp4", frames=7)
    ls = MemoryLS()
    summary = import_video(
        ls,
        video,
        1,
        every=2,
        frames_root=docroot / "frames",
        document_root=docroot,
        progress=False,
        batch_size=3,
    )
    assert (summary.tasks_created, summary.skipped, summary.annotations_created) == (4, 0, 0)
    assert ls.import_calls == 2  # batches of 3 + 1
    tasks = [parse_task(ls.tasks[i]) for i in summary.task_ids]
    assert [t.frame_index for t in tasks] == [0, 2, 4, 6]
    assert {(t.video_id, t.nframes, t.fps) for t in tasks} == {("clip one", 7, FPS)}
    assert tasks[1].image == LOCAL_FILES_PREFIX + "frames/clip%20one/000002.jpg"
    for t in tasks:
        image = cv2.imread(str(image_path(t.image, docroot)))
        assert image is not None and image.shape == (H, W, 3)
    assert ls.storages == [{"id": 1, "project": 1, "path": str((docroot / "frames").resolve())}]
    again = import_video(
        ls, video, 1, every=2, frames_root=docroot / "frames", document_root=docroot, progress=False
    )
    assert (again.tasks_created, again.skipped, again.storage_id) == (0, 4, 1)
    assert len(ls.storages) == 1 and len(ls.tasks) == 4
    # Another sampling of the same video only adds the frames not there yet.
    more = import_video(
        ls, video, 1, every=3, frames_root=docroot / "frames", document_root=docroot, progress=False
    )
    assert (more.tasks_created, more.skipped) == (1, 2)  # frame 3 is new; 0 and 6 exist
    assert "1 task(s) created" in str(more) and "2 skipped" in str(more)


def test_import_video_path_mode_and_video_id(tmp_path: Path) -> None:
    video = write_synthetic_mp4(tmp_path / "v.mp4", frames=3)
    ls = MemoryLS()
    summary = import_video(
        ls, video, 1, frames_root=tmp_path / "out", url_mode="path", video_id="cam7", progress=False
    )
    tasks = [parse_task(ls.tasks[i]) for i in summary.task_ids]
    assert [t.image for t in tasks] == [
        str((tmp_path / "out" / "cam7" / f"{i:06d}.jpg").resolve()) for i in range(3)
    ]
    assert summary.storage_id is None and ls.storages == []


def test_import_video_refuses_bad_settings_before_writing(tmp_path: Path, docroot: Path) -> None:
    video = write_synthetic_mp4(tmp_path / "v.mp4", frames=2)
    ls = MemoryLS()
    outside = tmp_path / "elsewhere"
    with pytest.raises(ValueError, match="not under the LS local-files document root"):
        import_video(ls, video, 1, frames_root=outside, document_root=docroot, progress=False)
    with pytest.raises(ValueError, match="LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"):
        import_video(ls, video, 1, frames_root=docroot / "f", progress=False)
    with pytest.raises(ValueError, match="every must be >= 1"):
        import_video(ls, video, 1, every=0, frames_root=docroot / "f", document_root=docroot)
    with pytest.raises(ValueError, match="url_mode"):
        mode: Any = "upload"
        import_video(ls, video, 1, frames_root=docroot / "f", document_root=docroot, url_mode=mode)
    with pytest.raises(LabelStudioError, match="404"):
        import_video(ls, video, 99, frames_root=docroot / "f", document_root=docroot, progress=False)
    assert not outside.exists() and not (docroot / "f").exists() and ls.tasks == {}


def test_a_second_video_under_the_same_id_does_not_overwrite_the_first_ones_frames(
    tmp_path: Path, docroot: Path
) -> None:
    """Before: cam2/clip.mp4 was extracted over cam1/clip.mp4's frames (both video id "clip"): the tasks of
    cam1 showed cam2's pictures, and the import said "3 skipped", exit 0."""
    (tmp_path / "cam1").mkdir(), (tmp_path / "cam2").mkdir()
    first = write_synthetic_mp4(tmp_path / "cam1" / "clip.mp4", frames=3, seed=0)
    second = write_synthetic_mp4(tmp_path / "cam2" / "clip.mp4", frames=4, seed=5)
    ls = MemoryLS()
    kw: dict[str, Any] = {"frames_root": docroot / "frames", "document_root": docroot, "progress": False}
    assert import_video(ls, first, 1, **kw).tasks_created == 3
    frames = sorted((docroot / "frames" / "clip").glob("*.jpg"))
    before = [f.read_bytes() for f in frames]
    refused = r"clip holds the frames of another video \(.*cam1/clip\.mp4\); importing .*cam2/clip\.mp4 as"
    with pytest.raises(ValueError, match=refused + " video id 'clip' would overwrite them"):
        import_video(ls, second, 1, **kw)
    assert [f.read_bytes() for f in frames] == before and len(ls.tasks) == 3
    assert import_video(ls, first, 1, every=2, **kw).skipped == 2  # the same video again: as before
    moved = tmp_path / "moved.mp4"
    first.rename(moved)
    assert import_video(ls, moved, 1, video_id="clip", **kw).skipped == 3  # a moved file is the same video
    assert import_video(ls, second, 1, video_id="cam2-clip", **kw).tasks_created == 4


@pytest.mark.parametrize("video_id", ["../escaped", "a/b", ".."])
def test_a_video_id_that_is_not_a_plain_name_is_refused_before_writing(
    tmp_path: Path, docroot: Path, video_id: str
) -> None:
    """Before: --video-id ../escaped wrote the frames beside the document root, then failed on their URL."""
    video = write_synthetic_mp4(tmp_path / "v.mp4", frames=2)
    with pytest.raises(ValueError, match="must be a plain name"):
        import_video(MemoryLS(), video, 1, frames_root=docroot / "frames", document_root=docroot,
                     video_id=video_id, progress=False)  # fmt: skip
    assert not (docroot / "frames").exists() and not (docroot / "escaped").exists()


def test_a_frame_folder_that_is_its_own_destination_is_not_re_encoded_over_itself(docroot: Path) -> None:
    """Before: importing docroot/frames/clip with the default frames root re-encoded its JPEGs over
    themselves, a little worse at every import."""
    folder = docroot / "frames" / "clip"
    folder.mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(folder / f"{i:06d}.jpg"), np.full((H, W, 3), 60 * i, np.uint8))
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    with pytest.raises(ValueError, match="is the folder its frames would be extracted to"):
        import_video(MemoryLS(), folder, 1, frames_root=docroot / "frames", document_root=docroot,
                     progress=False)  # fmt: skip
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before


def test_local_files_url_quotes_and_checks_root(tmp_path: Path) -> None:
    assert local_files_url(tmp_path / "a b" / "1.jpg", tmp_path) == LOCAL_FILES_PREFIX + "a%20b/1.jpg"
    with pytest.raises(ValueError, match="not under"):
        local_files_url(tmp_path.parent / "x.jpg", tmp_path)


# ----------------------------------------------------------------------------- PoseTrack, fast


@pytest.fixture()
def dataset(docroot: Path) -> Path:
    """Two synthetic PoseTrack 2018 videos of 3 frames under the document root (sparse: every 2nd)."""
    root = docroot / "posetrack"
    synth.generate(root, videos=2, frames=3, people=2, seed=3, label_every=2, size=(128, 96))
    return root


def assert_labels_round_trip(task: dict[str, Any], video: Video) -> None:
    """The task's annotation converts back to the frame's ground truth (positions and track ids)."""
    frame = video.frame(parse_task(task).frame_index)
    persons, size = results_to_persons(task["annotations"][0]["result"], as_labels=True)
    assert size == (128, 96)
    truth = sorted(frame.persons, key=lambda p: p.track_id)
    persons = sorted(persons, key=lambda p: p.track_id)
    assert [p.track_id for p in persons] == [p.track_id for p in truth]
    for got, want in zip(persons, truth):
        present = want.keypoints[:, 2] > 0
        np.testing.assert_array_equal(got.present, present)  # v=1 (occluded) arrives as a plain keypoint
        np.testing.assert_allclose(got.xy[present], np.clip(want.xy[present], 0, [128, 96]), atol=1e-6)
        np.testing.assert_allclose(got.box.xywh, want.box.xywh, atol=1e-6)


def test_import_posetrack_tasks_and_annotations(dataset: Path, docroot: Path) -> None:
    ls = MemoryLS()
    summary = import_posetrack(ls, dataset, 1, document_root=docroot, progress=False)
    assert (summary.videos, summary.tasks_created, summary.annotations_created) == (
        ["000001", "000002"],
        6,
        6,
    )
    assert ls.storages[0]["path"] == str((dataset / "images").resolve())
    videos = {v.name: v for v in map(posetrack.load, sorted((dataset / "annotations").glob("*.json")))}
    for task_id in summary.task_ids:
        task = ls.tasks[task_id]
        frame = parse_task(task)
        assert (
            image_path(frame.image, docroot)
            == dataset / "images" / frame.video_id / f"{frame.frame_index:06d}.jpg"
        )
        assert_labels_round_trip(task, videos[frame.video_id])
    again = import_posetrack(ls, dataset, 1, document_root=docroot, progress=False)
    assert (again.tasks_created, again.skipped, len(ls.storages)) == (0, 6, 1)


def test_import_posetrack_sparse_files_and_missing_image(dataset: Path, docroot: Path) -> None:
    (dataset / "images" / "000002" / "000001.jpg").unlink()
    ls = MemoryLS()
    files = sorted((dataset / "sparse").glob("*.json"))
    summary = import_posetrack(ls, dataset, 1, files=files, document_root=docroot, progress=False)
    assert (summary.tasks_created, summary.annotations_created, summary.skipped) == (5, 4, 1)
    labelled = sorted(
        (parse_task(t).video_id, parse_task(t).frame_index) for t in ls.tasks.values() if "annotations" in t
    )
    assert labelled == [("000001", 0), ("000001", 2), ("000002", 0), ("000002", 2)]


def test_import_posetrack_errors(dataset: Path, docroot: Path, tmp_path: Path) -> None:
    ls = MemoryLS()
    with pytest.raises(ValueError, match="not under the LS local-files document root"):
        import_posetrack(
            ls, dataset, 1, document_root=tmp_path / "docroot" / "posetrack" / "images", progress=False
        )
    with pytest.raises(FileNotFoundError, match="annotations/"):
        import_posetrack(ls, dataset / "images", 1, document_root=docroot, progress=False)
    bad = dataset / "annotations" / "000003.json"
    bad.write_text('{"images": [{"id": 1}], "annotations": 5}')
    with pytest.raises(AnnotationFormatError, match="000003.json"):
        import_posetrack(ls, dataset, 1, document_root=docroot, progress=False)
    ls.projects[1] = "<View><Image name='image' value='$image'/></View>"
    bad.unlink()
    with pytest.raises(AnnotationFormatError, match="KeyPointLabels"):
        import_posetrack(ls, dataset, 1, document_root=docroot, progress=False)
    assert ls.tasks == {}  # nothing imported when a file or the config is bad


def test_import_posetrack_refuses_an_image_name_leaving_the_document_root(
    dataset: Path, docroot: Path, tmp_path: Path
) -> None:
    """A file_name such as "../../../x.jpg" is refused before LS is asked for anything: the local storage
    made for the dataset's images would otherwise widen to a folder above the document root."""
    outside = tmp_path / "secret.jpg"
    cv2.imwrite(str(outside), np.zeros((96, 128, 3), np.uint8))
    path = dataset / "annotations" / "000001.json"
    data = json.loads(path.read_text())
    escape = Path("images", "000001", "..", "..", "..", "..", outside.name)  # dataset/images/000001 -> tmp_path
    data["images"][0]["file_name"] = str(escape)
    assert (dataset / escape).resolve() == outside.resolve()
    path.write_text(json.dumps(data))
    ls = MemoryLS()
    with pytest.raises(ValueError, match=r"image .*secret\.jpg is not under the LS local-files document root"):
        import_posetrack(ls, dataset, 1, document_root=docroot, progress=False)
    assert (ls.storages, ls.tasks) == ([], {})


# ----------------------------------------------------------------------------- CLI, fast


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m backend")
    add_import_commands(root.add_subparsers(dest="command", required=True))
    return root


def test_cli_parses_both_commands(tmp_path: Path) -> None:
    args = parser().parse_args(["import-video", "clip.mp4", "--project", "3", "--every", "5"])
    assert (args.video, args.project, args.every, args.url_mode) == (Path("clip.mp4"), 3, 5, "local-files")
    assert args.func.__name__ == "run_import_video"
    args = parser().parse_args(
        ["import-posetrack", str(tmp_path), "--project", "2", "--files", "a.json", "b.json"]
    )
    assert args.files == [Path("a.json"), Path("b.json")] and args.func.__name__ == "run_import_posetrack"
    with pytest.raises(SystemExit):
        parser().parse_args(["import-video", "clip.mp4"])  # --project is required


def test_cli_without_token_fails_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    args = parser().parse_args(["import-posetrack", str(tmp_path), "--project", "1"])
    assert args.func(args) == 1
    assert "LABEL_STUDIO_API_KEY" in capsys.readouterr().err


def test_cli_names_a_missing_video_or_dataset_before_asking_for_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On main, a mistyped video path was answered "pass --frames-root or set
    LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", which says nothing about the path."""
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"):
        monkeypatch.delenv(name, raising=False)
    for argv, what in ((["import-video", str(tmp_path / "typo.mp4")], "video file or frame folder"),
                       (["import-posetrack", str(tmp_path / "nope")], "PoseTrack dataset folder")):  # fmt: skip
        args = parser().parse_args([*argv, "--project", "1"])
        assert args.func(args) == 1
        err = capsys.readouterr().err
        assert f"error: {what} not found: {argv[1]}" in err, err
        assert "LABEL_STUDIO" not in err and "--frames-root" not in err, err


def test_cli_a_video_name_too_long_for_the_file_system_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: Path.exists() raised OSError (ENAMETOOLONG) out of the command: a traceback."""
    name = tmp_path / ("v" * 300 + ".mp4")
    args = parser().parse_args(["import-video", str(name), "--project", "1"])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: video file or frame folder cannot be used (File name too long): ")


def test_cli_a_frames_folder_that_is_a_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: extract_frames' mkdir raised FileExistsError out of the command: a traceback."""
    from backend.ls import importers

    monkeypatch.setattr(importers, "_client_from_env", lambda url: contextlib.nullcontext(MemoryLS()))
    video = write_synthetic_mp4(tmp_path / "v.mp4", frames=2)
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "v").write_text("not a folder")
    args = parser().parse_args(["import-video", str(video), "--project", "1", "--url-mode", "path",
                                "--frames-root", str(tmp_path / "frames"), "--no-progress"])  # fmt: skip
    assert args.func(args) == 1
    assert f"error: [Errno 17] File exists: '{tmp_path / 'frames' / 'v'}'" in capsys.readouterr().err
    assert (tmp_path / "frames" / "v").read_text() == "not a folder"


# ----------------------------------------------------------------------------- real Label Studio


@pytest.fixture()
def real_project(
    label_studio: LabelStudioServer, request: pytest.FixtureRequest
) -> tuple[Any, int]:
    client = label_studio.client()
    return client, int(client.create_project(f"importers {request.node.name}"[:50], label_config())["id"])


@pytest.mark.slow
def test_real_import_video_images_download(
    label_studio: LabelStudioServer, real_project: tuple, tmp_path: Path
) -> None:
    client, project = real_project
    video = write_synthetic_mp4(tmp_path / "walk.mp4", frames=6, seed=5)
    summary = import_video(
        client,
        video,
        project,
        every=2,
        frames_root=label_studio.document_root / "frames",
        document_root=label_studio.document_root,
        progress=False,
    )
    assert summary.tasks_created == 3
    tasks = client.list_tasks(project)
    assert sorted(t["id"] for t in tasks) == sorted(summary.task_ids)
    for task in tasks:
        frame = parse_task(task)
        image = cv2.imdecode(np.frombuffer(client.download(frame.image), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (H, W, 3)
        on_disk = cv2.imread(
            str(label_studio.document_root / "frames" / "walk" / f"{frame.frame_index:06d}.jpg")
        )
        np.testing.assert_array_equal(image, on_disk)
    again = import_video(
        client,
        video,
        project,
        every=2,
        frames_root=label_studio.document_root / "frames",
        document_root=label_studio.document_root,
        progress=False,
    )
    assert (again.tasks_created, again.skipped, again.storage_id) == (0, 3, summary.storage_id)


@pytest.mark.slow
def test_real_import_posetrack(label_studio: LabelStudioServer, real_project: tuple) -> None:  # noqa: F811
    client, project = real_project
    root = label_studio.document_root / "pt"
    synth.generate(root, videos=2, frames=3, people=2, seed=8, label_every=2, size=(128, 96))
    summary = import_posetrack(
        client,
        root,
        project,
        files=sorted((root / "sparse").glob("*.json")),
        document_root=label_studio.document_root,
        progress=False,
    )
    assert (summary.tasks_created, summary.annotations_created) == (6, 4)
    assert len(client.list_tasks(project)) == 6
    exported = client.export(project)
    assert sum(len(t["annotations"]) for t in exported) == 4
    videos = {v.name: v for v in map(posetrack.load, sorted((root / "annotations").glob("*.json")))}
    for task in exported:
        if task["annotations"]:
            assert_labels_round_trip(task, videos[task["data"]["video_id"]])
    first = client.list_tasks(project)[0]
    assert (
        client.download(first["data"]["image"])
        == (
            root / "images" / first["data"]["video_id"] / f"{first['data']['frame_index']:06d}.jpg"
        ).read_bytes()
    )


@pytest.mark.slow
def test_real_cli_import_video(
    label_studio: LabelStudioServer,
    real_project: tuple,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, project = real_project
    video = write_synthetic_mp4(tmp_path / "cli.mp4", frames=4, seed=2)
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(label_studio.document_root))
    args = parser().parse_args(["import-video", str(video), "--project", str(project), "--no-progress"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"project {project}: 1 video(s), 4 task(s) created" in out
    assert len(client.list_tasks(project)) == 4
    assert (label_studio.document_root / "frames" / "cli" / "000003.jpg").is_file()
