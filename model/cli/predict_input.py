"""Inputs of `python -m model predict`: a video file, a frame folder, an image file or a PoseTrack JSON, plus labels.

A PoseTrack JSON's images are found from their `file_name` relative to `--images-root`, the JSON's
folder, or the folders above it (PoseTrack's layout is `<root>/annotations/x.json` +
`<root>/images/...`, so the parent is usually the one).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from annotation_io import posetrack
from annotation_io.types import Video
from annotation_io.video import (
    IMAGE_SUFFIXES,
    MIN_FRAME_SIDE,
    FrameSource,
    VideoError,
    check_frame_images,
    open_video,
    read_image,
)

_ROOT_LEVELS = 3  # the JSON's folder and this many folders above it are searched for the images


class PredictInputError(ValueError):
    """The command's input cannot be used as given; the message says what to fix."""


@dataclass
class PredictInput:
    """What a prediction run reads.

    Attributes:
        video: the video to predict: name, frame count, size, fps and source; no persons.
        reader: its frames.
        known: human labels (persons without scores on labelled frames), or None.
        template: the annotation file whose image ids, file names and flags the output copies.
    """

    video: Video
    reader: FrameSource | _ListedFrames
    known: Video | None
    template: Video | None


class _ListedFrames:
    """Frames named one by one by an annotation file (index -> image path)."""

    concurrent_reads = True  # one file per frame, no state

    def __init__(self, files: dict[int, Path], num_frames: int) -> None:
        self.files = files
        self.num_frames = num_frames
        self.fps: float | None = None
        self.path = files[min(files)].parent
        check_frame_images([files[i] for i in sorted(files)], f"the frames listed by the annotation file in {self.path}")
        first = self.read(min(files))
        self.height, self.width = first.shape[:2]

    def read(self, index: int) -> np.ndarray:
        if index not in self.files:
            raise VideoError(f"frame {index} is not listed in the annotation file (0..{self.num_frames - 1})")
        return read_image(self.files[index], f"frame {index} of the frames listed by the annotation file")

    def close(self) -> None:
        """Nothing to release (images are read on demand)."""


# ------------------------------------------------------------------------------------------ input


def _labels_only(video: Video) -> Video | None:
    """The human-labelled frames of `video` (predictions dropped); None when there are none."""
    frames = []
    for frame in video.frames:
        persons = [p.copy() for p in frame.persons if not p.is_prediction]
        if frame.is_labeled or persons:
            frames.append(replace(frame, persons=persons, is_labeled=True))
    return replace(video, frames=frames) if frames else None


def _image_root(ann: Video, json_path: Path, images_root: Path | None) -> Path:
    """The folder that the JSON's `file_name`s are relative to."""
    named = [f.file_name for f in ann.frames if f.file_name]
    if not named:
        raise PredictInputError(
            f"{json_path}: its images carry no file_name, so their pixels cannot be found; give the video "
            "or frame folder as INPUT and this JSON as --labels"
        )
    if images_root is not None and not images_root.is_dir():  # else the search would quietly go on without it
        raise PredictInputError(f"--images-root {images_root}: not a folder (the folder the file names are relative to)")
    folder = json_path.resolve().parent
    tried = ([images_root] if images_root is not None else []) + [folder, *folder.parents[:_ROOT_LEVELS]]
    for root in tried:
        if (root / named[0]).is_file():  # an absolute file_name ignores the root
            return root
    raise PredictInputError(
        f"{json_path}: cannot find its first image {named[0]!r} under {', '.join(map(str, tried))}; "
        "pass --images-root (the folder the file names are relative to)"
    )


def _json_frames(ann: Video, json_path: Path, images_root: Path | None) -> FrameSource | _ListedFrames:
    """A reader for the frames an annotation file names (all of them, or their folder)."""
    root = _image_root(ann, json_path, images_root)
    files = {f.index: root / f.file_name for f in ann.frames if f.file_name}
    missing = [(i, p) for i, p in sorted(files.items()) if not p.is_file()]
    if missing:
        index, path = missing[0]
        raise PredictInputError(
            f"{json_path}: image of frame {index} not found: {path} ({len(missing)} missing)"
        )
    # every frame listed (no set(range(nframes)): a file may claim 10**12 frames)
    if len(files) == ann.num_frames and all(0 <= i < ann.num_frames for i in files):
        return _ListedFrames(files, ann.num_frames)
    # Only some frames are listed (PoseTrack 2017 files may list only labelled ones): read their folder.
    folders = {p.parent for p in files.values()}
    if len(folders) == 1:
        source = open_video(folders.pop())
        names = [p.name for p in getattr(source, "files", [])]
        if len(names) >= ann.num_frames and all(names[i] == p.name for i, p in files.items()):
            return source
        source.close()
    raise PredictInputError(
        f"{json_path}: lists images for {len(files)} of its {ann.num_frames} frames and their folder does not "
        "hold the others in order; give the frame folder as INPUT and this JSON as --labels"
    )


def load_labels(path: Path) -> Video:
    if not path.is_file():
        raise PredictInputError(f"labels file not found: {path}")
    return posetrack.load(path)  # AnnotationFormatError names the file and the bad field


def _open_frames(path: Path, template: Video | None, images_root: Path | None) -> FrameSource | _ListedFrames:
    if template is not None:
        return _json_frames(template, path, images_root)
    if path.is_dir() and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
        raise PredictInputError(
            f"{path}: a folder without frame images ({', '.join(IMAGE_SUFFIXES)}){_found_instead(path)}; "
            "expected a frame folder"
        )
    return open_video(path)


def _found_instead(folder: Path) -> str:
    """What a folder without frame images holds instead (", only .gif files"), or "" when nothing."""
    kinds = sorted({p.suffix.lower() or p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")})
    if not kinds:
        return ""
    return f", only {', '.join(kinds[:3])}{', ...' if len(kinds) > 3 else ''} files"


def load_input(
    input_path: str | Path,
    *,
    labels: str | Path | None = None,
    use_labels: bool = True,
    images_root: str | Path | None = None,
) -> PredictInput:
    """Open INPUT and the labels as the command does (the caller closes `reader`).

    Raises:
        PredictInputError: a missing input, labels that do not fit the video, images not found.
        annotation_io.video.VideoError: the video or frames cannot be read.
        annotation_io.errors.AnnotationFormatError: a JSON that does not parse (names the field).
    """
    path = Path(input_path)
    if not path.exists():
        raise PredictInputError(
            f"input not found: {path} (expected a video file, frame folder, image file or PoseTrack JSON)"
        )
    if labels is not None and not use_labels:
        raise PredictInputError("--labels and --no-labels contradict each other; give one")
    is_json = path.is_file() and path.suffix.lower() == ".json"
    ann = posetrack.load(path) if is_json else None
    label_video = load_labels(Path(labels)) if labels is not None else ann if use_labels else None
    template = label_video if labels is not None else ann
    known = _labels_only(label_video) if label_video is not None else None
    reader = _open_frames(path, ann, Path(images_root) if images_root is not None else None)
    n = reader.num_frames
    # before the model loads, in the user's terms: else the backbone's "frame_bgr is too small: (1, 1, 3)"
    if min(reader.width, reader.height) < MIN_FRAME_SIDE:
        reader.close()
        raise PredictInputError(
            f"{getattr(reader, 'path', path)}: {reader.width}x{reader.height} pixels, too small to show a person "
            f"(a frame needs at least {MIN_FRAME_SIDE} pixels a side)"
        )
    if known is not None and (known.num_frames > n or known.frames[-1].index >= n):
        reader.close()
        raise PredictInputError(
            f"labels {known.name!r} cover {known.num_frames} frames (last labelled: {known.frames[-1].index}) "
            f"but the video has {n}; they are not labels of this video"
        )
    declared = (template.width, template.height) if template is not None else (None, None)
    if None not in declared and declared != (reader.width, reader.height):  # labels in other pixels
        reader.close()
        raise PredictInputError(
            f"labels {template.name!r} are for {declared[0]}x{declared[1]} images (their width/height) but the "
            f"video's frames are {reader.width}x{reader.height}; they are not labels of these frames"
        )
    name = template.name if template is not None else (path.name if path.is_dir() else path.stem)
    source = str(getattr(reader, "path", path))
    video = Video(name, n, fps=reader.fps, source=source, width=reader.width, height=reader.height)
    if known is not None:
        known = replace(known, num_frames=n, width=reader.width, height=reader.height)
    return PredictInput(video=video, reader=reader, known=known, template=template)


def parse_frames(text: str) -> slice:
    """`a:b` (either side may be empty, negatives count from the end) or a single index `n`."""
    match = re.fullmatch(r"\s*(-?\d*)\s*(?::\s*(-?\d*)\s*)?", text)
    if match is None or (match.group(2) is None and not match.group(1)):
        raise PredictInputError(f"--frames must look like a:b, a: , :b or n, got {text!r}")
    start = int(match.group(1)) if match.group(1) else None
    if match.group(2) is None:
        assert start is not None
        return slice(start, start + 1 if start != -1 else None)
    return slice(start, int(match.group(2)) if match.group(2) else None)


def select_frames(spec: slice | Sequence[int] | None, num_frames: int) -> list[int]:
    """The frame indices a `--frames` value selects; every index must lie in the video."""
    if spec is None:
        return list(range(num_frames))
    if isinstance(spec, slice):
        for bound in (spec.start, spec.stop):
            if bound is not None and not -num_frames <= bound <= num_frames:
                raise PredictInputError(f"--frames bound {bound} is outside the video (0..{num_frames - 1})")
        indices = list(range(num_frames))[spec]
    else:
        indices = [int(i) for i in spec]
        bad = [i for i in indices if not 0 <= i < num_frames]
        if bad:
            raise PredictInputError(f"frame {bad[0]} is outside the video (0..{num_frames - 1})")
    if not indices:
        raise PredictInputError(f"--frames selects no frame of the video's {num_frames}")
    return indices
