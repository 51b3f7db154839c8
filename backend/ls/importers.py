"""Import videos and PoseTrack datasets into a Label Studio project: one task per frame.

Frames reach Label Studio (LS) as local files (LS's local storage documentation): the images must lie
under LS's `LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`, the project needs a local-files storage whose
path contains them (created here, or reused), and the task's image URL is
`/data/local-files/?d=<path relative to the document root>`. Task `data` is
`annotation_io.label_studio.task_data(...)`; PoseTrack labels travel as inline `annotations` of the
imported tasks. Re-running an import skips the frames whose (video_id, frame_index) task exists.

CLI (wired into `python -m backend` by `add_import_commands`)::

    python -m backend import-video VIDEO --project ID [--every K] [--frames-root DIR]
    python -m backend import-posetrack DIR --project ID [--files A.json ...]

Settings come from the environment there: LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY and
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from annotation_io import posetrack
from annotation_io.arguments import positive_int
from annotation_io.errors import AnnotationFormatError
from annotation_io.label_studio import LabelConfig, parse_config, parse_task, persons_to_results, task_data
from annotation_io.types import Frame, Video
from annotation_io.video import VideoError, VideoInfo, extract_frames, imread_color, video_info
from backend.ls.client import LabelStudioClient, LabelStudioError

logger = logging.getLogger(__name__)

UrlMode = Literal["local-files", "path"]
URL_MODES: tuple[str, ...] = ("local-files", "path")
LOCAL_FILES_PREFIX = "/data/local-files/?d="
DEFAULT_BATCH = 100
SOURCE_MARK = ".source.json"  # in a video's frames folder: which video the frames were extracted from
Task = dict[str, Any]


@dataclass
class ImportSummary:
    """What an import did.

    Attributes:
        project_id: the LS project.
        videos: video ids imported (in order).
        tasks_created: tasks created.
        annotations_created: annotations created with them (PoseTrack labels).
        skipped: frames not imported: their task existed already, or (PoseTrack) their image is missing.
        task_ids: ids of the created tasks, in frame order per video.
        storage_id: the local-files storage serving the frames (None in url_mode "path").
    """

    project_id: int
    videos: list[str] = field(default_factory=list)
    tasks_created: int = 0
    annotations_created: int = 0
    skipped: int = 0
    task_ids: list[int] = field(default_factory=list)
    storage_id: int | None = None

    def __str__(self) -> str:
        return (
            f"project {self.project_id}: {len(self.videos)} video(s), {self.tasks_created} task(s) created,"
            f" {self.annotations_created} annotation(s), {self.skipped} skipped"
        )


# ----------------------------------------------------------------------------- helpers


def _resolved_root(document_root: str | Path | None, url_mode: str) -> Path | None:
    """The resolved document root for url_mode "local-files" (None for "path")."""
    if url_mode not in URL_MODES:
        raise ValueError(f"url_mode must be one of {', '.join(URL_MODES)}, got {url_mode!r}")
    if url_mode != "local-files":
        return None
    if document_root is None:
        raise ValueError("url_mode 'local-files' needs the document root LS serves local files from"
                         " (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)")  # fmt: skip
    root = Path(document_root).resolve()
    if not root.is_dir():
        raise ValueError(f"local-files document root {root} is not an existing folder")
    return root


def _under_root(path: Path, root: Path, what: str) -> Path:
    """`path` relative to `root`; ValueError naming both when it lies outside."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise ValueError(f"{what} {resolved} is not under the LS local-files document root {root}:"
                         " LS can only serve files below LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")  # fmt: skip
    return resolved.relative_to(root)


def local_files_url(path: str | Path, document_root: str | Path) -> str:
    """The LS URL of a file under the document root: `/data/local-files/?d=<relative path>`.

    Raises:
        ValueError: the file is not under the document root.
    """
    rel = _under_root(Path(path), Path(document_root).resolve(), "image")
    return LOCAL_FILES_PREFIX + quote(rel.as_posix(), safe="/")


def image_url(path: Path, root: Path | None) -> str:
    """Task image URL in the import's url mode (root None: the absolute local path)."""
    return str(path.resolve()) if root is None else local_files_url(path, root)


def ensure_local_storage(client: LabelStudioClient, project: int, directory: Path) -> int:
    """Id of a local-files storage of the project whose path contains `directory`, created if none."""
    directory = directory.resolve()
    for storage in client.list_local_storages(project):
        path = storage.get("path")
        if isinstance(path, str) and path and directory.is_relative_to(Path(path).resolve()):
            logger.info("project %d: reusing local-files storage %s (%s)", project, storage.get("id"), path)
            return int(storage["id"])
    storage = client.create_local_storage(project, directory)
    logger.info("project %d: created local-files storage %s for %s", project, storage.get("id"), directory)
    return int(storage["id"])


def existing_frames(client: LabelStudioClient, project: int) -> set[tuple[str, int]]:
    """(video_id, frame_index) of the project's frame tasks (other tasks are ignored)."""
    found = set()
    for task in client.iter_tasks(project, fields="task_only"):
        try:
            frame = parse_task(task)
        except AnnotationFormatError:
            continue
        found.add((frame.video_id, frame.frame_index))
    return found


def project_config(client: LabelStudioClient, project: int) -> LabelConfig:
    """The project's parsed labelling config (ConfigError when it has no pose controls)."""
    return parse_config(client.get_project(project).get("label_config") or "")


def import_in_batches(
    client: LabelStudioClient, project: int, tasks: list[Task], *, batch_size: int = DEFAULT_BATCH,
    progress: bool = True, desc: str = "import",
) -> list[int]:  # fmt: skip
    """Imports tasks `batch_size` at a time, with a tqdm bar; returns their ids in order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from tqdm import tqdm

    ids: list[int] = []
    with tqdm(total=len(tasks), desc=desc, unit="task", disable=not progress) as bar:
        for start in range(0, len(tasks), batch_size):
            batch = tasks[start : start + batch_size]
            ids.extend(client.import_tasks(project, batch))
            bar.update(len(batch))
    return ids


# ----------------------------------------------------------------------------- video


def _check_video_id(video_id: str) -> None:
    """A video id names its frames' folder under frames_root: a plain name, which cannot lead out of it."""
    if video_id in ("", ".", "..") or "/" in video_id or "\0" in video_id:
        raise ValueError(f"video id {video_id!r} must be a plain name (no '/', not '.' or '..'): it names"
                         " the folder the video's frames are written to")  # fmt: skip


def _claim_frames(folder: Path, video_path: Path, info: VideoInfo, video_id: str) -> None:
    """Marks `folder` as holding the frames of `video_path`; refuses a folder holding another video's.

    Frames are named by index only, so a second video imported under the same id (the `GH010001.MP4` of
    two cameras) would overwrite the first one's frames, which its tasks go on showing. A video is
    known by its size in bytes, frame count and frame size, not its path (a moved file is the same
    video). A folder of an import made before the mark existed is taken as this video's.

    Raises:
        ValueError: the folder holds another video's frames, or a mark that does not read.
    """
    mine = {"bytes": video_path.stat().st_size if video_path.is_file() else None,
            "frames": info.num_frames, "width": info.width, "height": info.height}  # fmt: skip
    mark = folder / SOURCE_MARK
    try:
        theirs = json.loads(mark.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # no mark; a folder that is a file fails its mkdir
        theirs = mine
    except (OSError, ValueError):
        theirs = None
    if not isinstance(theirs, dict) or any(theirs.get(key) != value for key, value in mine.items()):
        other = theirs.get("video") if isinstance(theirs, dict) else None
        raise ValueError(
            f"{folder} holds the frames of another video ({other or f'its {SOURCE_MARK} does not read'});"
            f" importing {video_path} as video id {video_id!r} would overwrite them under the tasks that show"
            " them: give it another video id (--video-id)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    mark.write_text(json.dumps({**mine, "video": str(video_path.resolve())}), encoding="utf-8")


def import_video(
    client: LabelStudioClient,
    video_path: str | Path,
    project_id: int,
    *,
    every: int = 1,
    frames_root: str | Path,
    document_root: str | Path | None = None,
    url_mode: UrlMode = "local-files",
    video_id: str | None = None,
    progress: bool = True,
    batch_size: int = DEFAULT_BATCH,
) -> ImportSummary:
    """Extracts every `every`-th frame of a video and creates one LS task per frame.

    Frames go to `frames_root/<video_id>/%06d.jpg` (named by frame index), never over the frames of
    another video imported under the same id (see `_claim_frames`). In url_mode
    "local-files" (default) `frames_root` must lie under `document_root` and a local-files storage
    of the project covering `frames_root` is reused or created. url_mode "path" puts the absolute
    file path in the task instead (for backends on the same disk; LS cannot display it).

    Args:
        client: the LS client.
        video_path: a video file or a frame folder.
        project_id: the LS project.
        every: keep frames 0, every, 2*every, ...
        frames_root: where extracted frames are written.
        document_root: LS's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (needed for "local-files").
        url_mode: "local-files" or "path".
        video_id: the task's video id; defaults to the video file's stem.
        progress: show progress bars.
        batch_size: tasks per import request.

    Raises:
        ValueError: bad `every`/`url_mode`/`video_id`, frames_root outside the document root, or the
            video id's folder holding another video's frames.
        VideoError: the video cannot be read.
        LabelStudioError: LS refused a request (e.g. no such project).
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    video_path, frames_root = Path(video_path), Path(frames_root)
    root = _resolved_root(document_root, url_mode)
    if root is not None:
        _under_root(frames_root, root, "frames_root")
    video_id = video_id or video_path.stem
    _check_video_id(video_id)
    if video_path.is_dir() and video_path.resolve() == (frames_root / video_id).resolve():
        raise ValueError(
            f"{video_path} is the folder its frames would be extracted to (frames root/video id): they would"
            " be re-encoded over themselves; give another frames root or video id"
        )
    info = video_info(video_path)
    client.get_project(project_id)  # fails early (404) before any extraction
    summary = ImportSummary(project_id, [video_id])
    _claim_frames(frames_root / video_id, video_path, info, video_id)
    files = extract_frames(video_path, frames_root / video_id, step=every, progress=progress)
    if root is not None:
        summary.storage_id = ensure_local_storage(client, project_id, frames_root)
    done = existing_frames(client, project_id)
    tasks = []
    for file in files:
        index = int(file.stem)
        if (video_id, index) in done:
            summary.skipped += 1
            continue
        tasks.append({"data": task_data(image_url(file, root), video_id, index, info.num_frames, info.fps)})
    summary.task_ids = import_in_batches(client, project_id, tasks, batch_size=batch_size, progress=progress,
                                         desc=f"import {video_id}")  # fmt: skip
    summary.tasks_created = len(summary.task_ids)
    logger.info("%s", summary)
    return summary


# ----------------------------------------------------------------------------- PoseTrack


def posetrack_files(dataset_dir: Path) -> list[Path]:
    """The PoseTrack JSON files under `dataset_dir/annotations` (any depth), sorted."""
    folder = dataset_dir / "annotations"
    if not folder.is_dir():
        raise FileNotFoundError(f"{dataset_dir} has no annotations/ folder; pass the JSON files explicitly")
    files = sorted(folder.rglob("*.json"))
    if not files:
        raise FileNotFoundError(f"no *.json files under {folder}")
    return files


def _image_size(video: Video, images: Iterable[Path]) -> tuple[int, int]:
    """(width, height) of the video's frames: from the file when it says, else the first image as Label
    Studio shows it and the backend reads it (EXIF orientation applied, which IMREAD_UNCHANGED ignores; an
    oriented TIFF, which cv2.imread fails on, decoded from its bytes)."""
    if video.width and video.height:
        return video.width, video.height
    for path in images:
        image = imread_color(path)
        if image is not None:
            return image.shape[1], image.shape[0]
    raise VideoError(f"video {video.name}: none of its frame images decodes, so its size is unknown")


def _frame_task(video: Video, frame: Frame, image: Path, root: Path | None, config: LabelConfig,
                size: Callable[[], tuple[int, int]]) -> Task:  # fmt: skip
    """The task of one PoseTrack frame, with its labels as an annotation when it is labelled."""
    data = task_data(image_url(image, root), video.name, frame.index, video.num_frames, video.fps)
    task: Task = {"data": data}
    if frame.is_labeled:
        width, height = size()
        result = persons_to_results(frame.persons, width, height, config, id_prefix=f"f{frame.index}_")
        task["annotations"] = [{"result": result}]
    return task


def _video_tasks(video: Video, dataset_dir: Path, root: Path | None, config: LabelConfig,
                 done: set[tuple[str, int]], summary: ImportSummary) -> list[Task]:  # fmt: skip
    """Tasks of the frames of one PoseTrack video that are not in the project yet."""
    images = {f.index: dataset_dir / f.file_name for f in video.frames if f.file_name}
    images = {i: p for i, p in images.items() if p.is_file()}
    size = functools.cache(lambda: _image_size(video, images.values()))  # read once, only if needed
    tasks = []
    for frame in video.frames:
        if (video.name, frame.index) in done or frame.index not in images:
            if (video.name, frame.index) not in done:
                missing = dataset_dir / (frame.file_name or "<no file_name>")
                logger.warning("video %s frame %d: no image %s; skipped", video.name, frame.index, missing)
            summary.skipped += 1
            continue
        task = _frame_task(video, frame, images[frame.index], root, config, size)
        summary.annotations_created += len(task.get("annotations", ()))
        tasks.append(task)
    return tasks


def import_posetrack(
    client: LabelStudioClient,
    dataset_dir: str | Path,
    project_id: int,
    *,
    files: Iterable[str | Path] | None = None,
    document_root: str | Path | None = None,
    url_mode: UrlMode = "local-files",
    progress: bool = True,
    batch_size: int = DEFAULT_BATCH,
) -> ImportSummary:
    """Creates a task per frame of PoseTrack videos, with the labels of labelled frames as annotations.

    Every file is loaded (and validated) before anything is imported. Images are
    `dataset_dir/<file_name>`; in url_mode "local-files" the dataset must lie under `document_root`,
    and one local-files storage covering all imported image folders is reused or created. Labels
    are converted with the project's own labelling config. LS has no occlusion flag, so occluded
    joints (v=1) arrive as plain keypoints.

    Args:
        client: the LS client.
        dataset_dir: the dataset root (image `file_name`s are relative to it).
        project_id: the LS project.
        files: PoseTrack JSON files; default: every *.json under dataset_dir/annotations.
        document_root: LS's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (needed for "local-files").
        url_mode: "local-files" or "path".
        progress: show progress bars.
        batch_size: tasks per import request.

    Raises:
        FileNotFoundError: no annotation files.
        AnnotationFormatError: a malformed PoseTrack file, or a project config without pose controls.
        ValueError: bad url_mode, or the dataset outside the document root.
        LabelStudioError: LS refused a request.
    """
    dataset_dir = Path(dataset_dir)
    root = _resolved_root(document_root, url_mode)
    if root is not None:
        _under_root(dataset_dir, root, "PoseTrack dataset folder")
    paths = [Path(f) for f in files] if files is not None else posetrack_files(dataset_dir)
    videos = [posetrack.load(p) for p in paths]
    names = [v.name for v in videos]
    if len(set(names)) != len(names):
        raise AnnotationFormatError(f"two files describe the same video id: {names}", source=str(dataset_dir))
    images = [dataset_dir / f.file_name for v in videos for f in v.frames if f.file_name]
    if root is not None:
        for image in images:  # before anything is asked of LS: a "../../x.jpg" would widen the storage beyond
            _under_root(image, root, "image")
    config = project_config(client, project_id)
    summary = ImportSummary(project_id, names)
    if root is not None:
        folders = {image.resolve().parent for image in images}
        common = Path(os.path.commonpath(sorted(folders))) if folders else dataset_dir.resolve()
        summary.storage_id = ensure_local_storage(client, project_id, common)
    done = existing_frames(client, project_id)
    for video in videos:
        tasks = _video_tasks(video, dataset_dir, root, config, done, summary)
        summary.task_ids += import_in_batches(client, project_id, tasks, batch_size=batch_size,
                                              progress=progress, desc=f"import {video.name}")  # fmt: skip
    summary.tasks_created = len(summary.task_ids)
    logger.info("%s", summary)
    return summary


# ----------------------------------------------------------------------------- CLI


def _client_from_env(url: str | None) -> LabelStudioClient:
    url = url or os.environ.get("LABEL_STUDIO_URL") or ""
    key = os.environ.get("LABEL_STUDIO_API_KEY") or ""
    if not url:
        raise ValueError("no Label Studio URL: pass --ls-url or set LABEL_STUDIO_URL")
    if not key:
        raise ValueError("no Label Studio token: set LABEL_STUDIO_API_KEY (legacy or personal access token)")
    return LabelStudioClient(url, key)


def _document_root(arg: Path | None) -> Path | None:
    value = arg or os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    return Path(value) if value else None


def _run(args: argparse.Namespace, importer: Callable[..., ImportSummary], source: Path, **kw: Any) -> int:
    """Runs an import with the common options; prints its summary, or the error and returns 1."""
    try:
        root = _document_root(args.document_root)
        with _client_from_env(args.ls_url) as client:
            summary = importer(client, source, args.project, document_root=root, url_mode=args.url_mode,
                               progress=not args.no_progress, batch_size=args.batch_size, **kw)  # fmt: skip
    except (LabelStudioError, AnnotationFormatError, VideoError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0


def _missing_source(path: Path, what: str) -> bool:
    """Prints an error and returns True when `path` does not exist or cannot be looked at (a name too long)
    (checked before any setting or request)."""
    try:
        if path.exists():
            return False
        problem = "not found"
    except OSError as exc:
        problem = f"cannot be used ({exc.strerror or exc})"
    print(f"error: {what} {problem}: {path}", file=sys.stderr)
    return True


def run_import_video(args: argparse.Namespace) -> int:
    """`import-video` handler: returns the exit status."""
    if _missing_source(args.video, "video file or frame folder"):
        return 1
    root = _document_root(args.document_root)
    frames_root = args.frames_root or (root / "frames" if root is not None else None)
    if frames_root is None:
        print("error: pass --frames-root or set LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", file=sys.stderr)
        return 1
    kw = {"every": args.every, "frames_root": frames_root, "video_id": args.video_id}
    return _run(args, import_video, args.video, **kw)


def run_import_posetrack(args: argparse.Namespace) -> int:
    """`import-posetrack` handler: returns the exit status."""
    if _missing_source(args.dataset, "PoseTrack dataset folder"):
        return 1
    return _run(args, import_posetrack, args.dataset, files=args.files or None)


def _common_args(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--project", type=positive_int, required=True, help="Label Studio project id")
    add("--ls-url", default=None, help="Label Studio URL (default: $LABEL_STUDIO_URL)")
    add("--document-root", type=Path, default=None,
        help="LS local-files document root (default: $LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)")  # fmt: skip
    add("--url-mode", choices=URL_MODES, default="local-files",
        help="task image URLs: LS local files (default) or absolute paths")  # fmt: skip
    add("--batch-size", type=positive_int, default=DEFAULT_BATCH, help="tasks per import request")
    add("--no-progress", action="store_true", help="no progress bars")


def add_import_commands(subparsers: argparse._SubParsersAction) -> None:
    """Adds `import-video` and `import-posetrack`; each sets `func(args) -> exit status`."""
    video = subparsers.add_parser("import-video", help="extract a video's frames, create a task per frame")
    video.add_argument("video", type=Path, help="video file or frame folder")
    video.add_argument("--every", type=positive_int, default=1, help="keep every K-th frame (default 1)")
    video.add_argument("--frames-root", type=Path, default=None,
                       help="where frames are written (default: <document root>/frames)")  # fmt: skip
    video.add_argument("--video-id", default=None, help="video id in the tasks (default: file stem)")
    _common_args(video)
    video.set_defaults(func=run_import_video)
    pt = subparsers.add_parser("import-posetrack", help="create tasks and annotations from PoseTrack files")
    pt.add_argument("dataset", type=Path, help="dataset root (with annotations/ and the images)")
    pt.add_argument("--files", type=Path, nargs="*", default=None,
                    help="PoseTrack JSON files (default: all *.json under DATASET/annotations)")  # fmt: skip
    _common_args(pt)
    pt.set_defaults(func=run_import_posetrack)
