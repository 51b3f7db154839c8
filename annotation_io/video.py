"""Frame access for video files and frame folders: counts, fps, random access, iteration, extraction.

This is the only module of `annotation_io` that imports cv2. Frames are numpy arrays (H, W, 3) uint8
in BGR order, as cv2 gives them. Frame indices are 0-based positions: for a folder, the position of
the image in natural sort order (PoseTrack 2017's `00000001.jpg` is index 0).

Video files are read with cv2's FFmpeg backend. Two things make that less simple than it looks:
- `CAP_PROP_FRAME_COUNT` is what the container declares (or an estimate from duration x fps). A file
  cut off mid-write still declares the full count. `FileSource` therefore checks on open that the
  declared count decodes (all of it when that is cheap, else the last frame) and raises
  `VideoError` naming the number of frames that really decode.
- Seeking (`CAP_PROP_POS_FRAMES`) lands on the wrong frame for some codecs/containers. The first
  seek is verified against a sequential decode; if they differ, the source falls back to sequential
  decoding (re-opening to go backwards) for the rest of its life.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import struct
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import cv2
import numpy as np
import PIL.Image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# The most pixels a frame image may declare, checked from its header before it is decoded (8K UHD is
# 33 megapixels; a 1 MB PNG can declare 30000x30000, 2.7 GB once decoded).
MAX_FRAME_PIXELS = 100_000_000
HEADER_SCAN_ANNOUNCE = 5000  # frames from which a folder's header check is logged (start and time taken)
_EXIF_ORIENTATION = 0x0112
# Formats whose EXIF orientation cv2 (4.11) applies when it decodes but Pillow's header size does not (cv2
# ignores WebP's, as Chromium does; Pillow sizes a TIFF as oriented already); MPO is how Pillow names the
# multi-picture JPEGs many phones write.
_ORIENTED_FORMATS = ("JPEG", "MPO", "PNG")
# Formats that may hold an animation cv2 reads only the first frame of (Pillow's name -> ours); browsers play it.
ANIMATED_FORMATS = {"PNG": "PNG (APNG)", "WEBP": "WebP"}
MIN_FRAME_SIDE = 2  # pixels: the fewest a frame may have on a side (the backbones refuse thinner ones)
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"  # start and end of image markers
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")  # little- and big-endian TIFF headers
_JPEG_TAIL = 1024  # bytes at a JPEG's end searched for its end-of-image marker
# Declared counts up to this many frames are verified by decoding every frame on open (grab() only,
# about 0.1-0.5 ms per frame at PoseTrack sizes); longer files get a last-frame check instead.
FULL_VERIFY_MAX_FRAMES = 300
# The first seek is checked against a sequential decode only when the target is this close to 0.
SEEK_CHECK_MAX_INDEX = 300
# Frame rates a video file may declare; outside them the rate is a broken header's (an AVI's rate/scale
# of 10**6/1 or 3/10**6, FFmpeg's 90000 guess for a bad time base) and is treated as unknown: an
# overlay written at it cannot be opened (mp4v takes 0.01-65535 fps) or plays as a still.
MIN_FPS, MAX_FPS = 1 / 60, 1000.0


class VideoError(Exception):
    """A video file or frame folder cannot be read as asked (missing, unsupported, empty, truncated)."""


@dataclass(frozen=True)
class VideoInfo:
    """Basic facts about a video file or frame folder.

    Attributes:
        num_frames: frames that can be read.
        fps: frames per second; None for frame folders (unless given).
        width, height: frame size in pixels.
    """

    num_frames: int
    fps: float | None
    width: int
    height: int


class FrameReader(Protocol):
    """Random access to frames, as the predictor, the trainer and the renderer read them.

    `FrameSource` satisfies it; so does any object with `num_frames` and `read(index)` (a reader
    over Label Studio task images, a list of arrays in tests).
    """

    num_frames: int

    def read(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 BGR frame."""
        ...


class FilteredFrames:
    """A `FrameReader` handing out `self.filter(frame)` of `reader`'s frames; other attributes are `reader`'s.
    Subclasses give `filter` (the noise filter, the deinterlacer: `model.denoise`, `model.interlace`).

    It holds no frames and opens nothing: `reader`'s owner closes it. Reads from several threads at once are as
    safe as `reader`'s (`concurrent_reads`)."""

    def __init__(self, reader: FrameReader) -> None:
        self.inner = reader
        self.num_frames = reader.num_frames

    def filter(self, frame: np.ndarray) -> np.ndarray:
        return frame

    def read(self, index: int) -> np.ndarray:
        return self.filter(np.asarray(self.inner.read(index)))

    def __getattr__(self, name: str) -> Any:  # width, height, concurrent_reads, ...: the inner reader's
        if name == "inner":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


class FrameSource(ABC):
    """Random access to the frames of a video file or a frame folder. Use as a context manager.

    Attributes:
        path: the file or folder.
        num_frames: number of readable frames (> 0).
        fps: frames per second, or None where unknown.
        width, height: frame size in pixels.
        concurrent_reads: whether `read` may be called from several threads at once (image files
            are; a video file's decoder is not).
    """

    path: Path
    num_frames: int
    fps: float | None
    width: int
    height: int
    concurrent_reads: bool = False

    def __len__(self) -> int:
        return self.num_frames

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def info(self) -> VideoInfo:
        return VideoInfo(self.num_frames, self.fps, self.width, self.height)

    def _check_index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"frame index must be an int, got {type(index).__name__}")
        if not 0 <= index < self.num_frames:
            raise VideoError(
                f"{self.path}: frame index {index} out of range (the video has {self.num_frames} frames,"
                f" valid indices 0..{self.num_frames - 1})"
            )
        return int(index)

    def _check_range(self, step: int, start: int, stop: int | None) -> range:
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        return range(start, stop, step)

    @abstractmethod
    def read(self, index: int) -> np.ndarray:
        """The frame at `index` as (H, W, 3) uint8 BGR; raises VideoError if out of range or unreadable."""

    @abstractmethod
    def iter_frames(
        self, step: int = 1, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index, frame) for index in range(start, stop, step); `stop` is clamped to num_frames."""

    def close(self) -> None:
        """Release the underlying resources (idempotent)."""


def _natural_key(name: str) -> list[int | str]:
    """Sort key that orders digit runs numerically: 2.jpg < 10.jpg."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class FolderSource(FrameSource):
    """Frames stored as image files in one folder (PoseTrack `%06d.jpg`, `%08d.jpg`, any *.jpg/*.png).

    Hidden files are skipped and other non-image files ignored with a warning; an image name that is a
    broken link or no regular file (a named pipe, folder, socket or device) is an error (skipping it would
    shift the later frames' indices). Every image's header and last bytes are read on open (an image, of
    the first one's size, within MAX_FRAME_PIXELS, no JPEG cut off), so a stray, oversized or truncated
    file fails the open instead of a long run half-way;
    frames are decoded on demand, by several threads at once where the caller wants (`concurrent_reads`).

    Args:
        path: the folder.
        fps: frames per second to report (folders carry none).
    """

    concurrent_reads = True  # each frame is its own file; the last-frame cache is swapped whole

    def __init__(self, path: str | Path, *, fps: float | None = None) -> None:
        self.path = Path(path)
        # Hidden files are never frames (macOS writes a "._000001.jpg" beside each file on some drives).
        visible = [p for p in self.path.iterdir() if not p.name.startswith(".")]
        _check_frame_entries(visible)
        entries = [p for p in visible if p.is_file()]
        files = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise VideoError(
                f"{self.path}: empty frame folder: no image files ({', '.join(IMAGE_SUFFIXES)}) in it"
            )
        if len(files) < len(entries):
            others = sorted(p.name for p in entries if p.suffix.lower() not in IMAGE_SUFFIXES)
            logger.warning("%s: %d file(s) that are not frame images ignored: %s%s", self.path, len(others),
                           ", ".join(others[:3]), ", ..." if len(others) > 3 else "")  # fmt: skip
        self.files: list[Path] = sorted(files, key=lambda p: _natural_key(p.name))
        self.num_frames = len(self.files)
        self.fps = fps
        check_frame_images(self.files, f"folder {self.path}")
        first = self._load(0)
        self.height, self.width = first.shape[:2]
        self._cache: tuple[int, np.ndarray] | None = (0, first)

    def _load(self, index: int) -> np.ndarray:
        file = self.files[index]
        frame = read_image(file, f"frame {index} of folder {self.path}")
        if index and frame.shape[:2] != (self.height, self.width):
            raise VideoError(
                f"{file}: frame {index} is {frame.shape[1]}x{frame.shape[0]} but the folder's first frame is"
                f" {self.width}x{self.height}; all frames of a video must have one size"
            )
        return frame

    def read(self, index: int) -> np.ndarray:
        index = self._check_index(index)
        cached = self._cache  # one read of the attribute: another thread may replace it meanwhile
        if cached is None or cached[0] != index:
            cached = self._cache = (index, self._load(index))
        return cached[1].copy()

    def iter_frames(
        self, step: int = 1, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        for index in self._check_range(step, start, stop):
            yield index, self._load(index)

    def close(self) -> None:
        self._cache = None


def _check_frame_entries(entries: list[Path]) -> None:
    """Every image-named entry is a regular file (or a link to one): skipping a broken link, a named pipe, a
    folder, a socket or a device would shift every later frame's index. Entries are only stat()ed, never
    opened (opening a named pipe waits for ever on its writer).

    Raises:
        VideoError: the first entry at fault, named with what it is.
    """
    for path in sorted(entries):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.is_symlink() and not path.exists():
            raise VideoError(
                f"{path}: a frame image that is a broken link (to {os.readlink(path)}); without it every later"
                " frame would take the index of the one before"
            )
        try:
            mode = path.stat().st_mode  # follows a link: a link to a pipe is refused as the pipe is
        except OSError as exc:
            raise VideoError(f"{path}: cannot read the frame image ({exc.strerror or exc})") from None
        if not stat.S_ISREG(mode):
            link = " (through a link)" if path.is_symlink() else ""
            raise VideoError(
                f"{path} is {_file_kind(mode)}{link}, not an image file; without it every later frame would"
                " take the index of the one before"
            )


def _file_kind(mode: int) -> str:
    """What a file that is not a regular one is, in words ("a named pipe")."""
    kinds = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "a special file")


class ImageSource(FrameSource):
    """One image file (named with a suffix of IMAGE_SUFFIXES) as a one-frame video, read as folder frames are.

    Its header is checked on open as a folder's frames are (an image, within MAX_FRAME_PIXELS, no JPEG cut
    off), and it is decoded with its EXIF orientation applied, as Label Studio shows it. FFmpeg, which
    reads such a file as a video too, does neither: it decodes a truncated JPEG with grey rows and gives
    a phone photo stored sideways as stored.

    Args:
        path: the image file.
        fps: frames per second to report (an image carries none).
    """

    concurrent_reads = True  # the decoded frame is kept whole; a read hands out a copy

    def __init__(self, path: str | Path, *, fps: float | None = None) -> None:
        self.path = Path(path)
        self.num_frames = 1
        self.fps = fps
        check_frame_images([self.path], f"the image {self.path.name}")
        self._frame: np.ndarray | None = self._load()
        self.height, self.width = self._frame.shape[:2]

    def _load(self) -> np.ndarray:
        return read_image(self.path, f"the only frame of the image {self.path.name}")

    def read(self, index: int) -> np.ndarray:
        self._check_index(index)
        frame = self._frame  # one read of the attribute: close() may drop it meanwhile
        if frame is None:
            frame = self._frame = self._load()
        return frame.copy()

    def iter_frames(
        self, step: int = 1, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        for index in self._check_range(step, start, stop):
            yield index, self.read(index)

    def close(self) -> None:
        self._frame = None


class FileSource(FrameSource):
    """A video file read with cv2.VideoCapture (mp4, avi, mkv, ... whatever cv2's FFmpeg reads).

    Args:
        path: the video file.
        fps: overrides the fps the file declares (a declared rate outside MIN_FPS..MAX_FPS counts as
            none).
        strict: if True (default) a file whose declared frame count does not decode raises
            VideoError; if False the decodable count is used and a warning is logged. FFmpeg
            conceals a frame cut in the middle, so the last decodable frame may be part-damaged.
    """

    def __init__(self, path: str | Path, *, fps: float | None = None, strict: bool = True) -> None:
        self.path = Path(path)
        self._closed = False
        self._cap = self._open()
        declared = round(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.fps = fps if fps is not None else self._declared_fps()
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if self.width * self.height > MAX_FRAME_PIXELS:  # from the header, before a frame is decoded
            self._cap.release()
            raise VideoError(
                f"{self.path}: the video's frames are {self.width}x{self.height} pixels, more than a frame"
                f" may have ({MAX_FRAME_PIXELS / 1e6:g} megapixels)"
            )
        self._pos = 0  # index of the frame the next grab() decodes
        self._cache: tuple[int, np.ndarray] | None = None
        self._seek_ok: bool | None = None  # None: not yet verified
        try:
            self.num_frames = self._verified_count(declared, strict)
        except VideoError:
            self._cap.release()
            raise

    def _declared_fps(self) -> float | None:
        """The file's frame rate; None where it declares none, or one outside MIN_FPS..MAX_FPS."""
        value = float(self._cap.get(cv2.CAP_PROP_FPS))
        if not math.isfinite(value) or value <= 0:
            return None
        if not MIN_FPS <= value <= MAX_FPS:
            logger.warning("%s: declares %g frames per second, not a frame rate a video has (%g..%g);"
                           " treated as unknown", self.path, value, MIN_FPS, MAX_FPS)  # fmt: skip
            return None
        return value

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise VideoError(f"{self.path}: cannot open as a video: {_diagnose_unopenable(self.path)}")
        # Phones record portrait video as landscape frames plus a rotation in the container; players
        # and browsers apply it, cv2 (4.11) does not unless asked. Frame width/height then follow it.
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        return cap

    def _reopen(self) -> None:
        self._cap.release()
        self._cap = self._open()
        self._pos = 0

    def _count_by_decoding(self) -> int:
        self._reopen()
        count = 0
        while self._cap.grab():
            count += 1
        self._reopen()
        return count

    def _verified_count(self, declared: int, strict: bool) -> int:
        if 0 < declared <= FULL_VERIFY_MAX_FRAMES:
            decoded = self._count_by_decoding()
        elif declared > 0:
            # Long file: trust the declaration if its last frame decodes.
            try:
                self.num_frames = declared
                self._cache = (declared - 1, self._seek_read(declared - 1))
                return declared
            except VideoError:
                decoded = self._count_by_decoding()
        else:  # the container declares nothing (some streams): count
            decoded = self._count_by_decoding()
        if decoded == 0:
            raise VideoError(f"{self.path}: empty video: no frame decodes (declared frame count {declared})")
        if declared > 0 and decoded < declared:
            message = (
                f"{self.path}: truncated or corrupt video: it declares {declared} frames but only"
                f" {decoded} decode (frames 0..{decoded - 1})"
            )
            if strict:
                raise VideoError(message + "; re-encode or re-download it, or open with strict=False")
            logger.warning(
                "%s; using the %d decodable frames (the last may be part-damaged)", message, decoded
            )
        elif declared > 0 and decoded > declared:
            logger.info("%s: declares %d frames, %d decode; using %d", self.path, declared, decoded, decoded)
        return decoded

    def _grab_to(self, index: int) -> None:
        """Decode forward (re-opening when behind) until the next grab() yields `index`."""
        if index < self._pos:
            self._reopen()
        while self._pos < index:
            if not self._cap.grab():
                self._truncated_at(self._pos)
            self._pos += 1

    def _next(self) -> np.ndarray:
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._truncated_at(self._pos)
        self._pos += 1
        return frame

    def _truncated_at(self, index: int) -> None:
        raise VideoError(
            f"{self.path}: truncated or corrupt video: frame {index} does not decode"
            f" (expected {self.num_frames} frames)"
        )

    def _seek_read(self, index: int) -> np.ndarray:
        """Read `index` by seeking (if seeking is trusted) or by sequential decoding."""
        if index == self._pos or self._seek_ok is False or (0 <= index - self._pos <= 16):
            self._grab_to(index)
            return self._next()
        if self._seek_ok is None and index <= SEEK_CHECK_MAX_INDEX:
            return self._verify_seek(index)
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        landed = round(self._cap.get(cv2.CAP_PROP_POS_FRAMES))
        if landed != index:
            logger.info(
                "%s: seek to %d landed at %d; switching to sequential decoding", self.path, index, landed
            )
            self._seek_ok = False
            self._grab_to(index)
            return self._next()
        self._pos = index
        try:
            return self._next()
        except VideoError:
            if self._seek_ok:
                raise
            # A failed unverified seek says nothing about the file: retry sequentially before blaming it.
            self._seek_ok = False
            self._grab_to(index)
            return self._next()

    def _verify_seek(self, index: int) -> np.ndarray:
        """First seek: compare the seeked frame with the sequentially decoded one."""
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, seeked = self._cap.read()
        self._reopen()
        self._grab_to(index)
        frame = self._next()
        self._seek_ok = bool(ok) and seeked is not None and np.array_equal(seeked, frame)
        if not self._seek_ok:
            logger.info("%s: seeking is inexact for this file; using sequential decoding", self.path)
        return frame

    def _require_open(self) -> None:
        if self._closed:
            raise VideoError(f"{self.path}: the video was closed; open it again to read frames")

    def read(self, index: int) -> np.ndarray:
        self._require_open()
        index = self._check_index(index)
        if self._cache is None or self._cache[0] != index:
            self._cache = (index, self._seek_read(index))
        return self._cache[1].copy()

    def iter_frames(
        self, step: int = 1, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        indices = self._check_range(step, start, stop)
        for index in indices:
            self._require_open()
            if self._cache is not None and self._cache[0] == index:
                frame = self._cache[1].copy()
            else:
                frame = self._seek_read(index)
            yield index, frame

    def close(self) -> None:
        self._cap.release()
        self._closed = True
        self._cache = None


def read_image(file: Path, what: str) -> np.ndarray:
    """An image file as (H, W, 3) uint8 BGR, as cv2 decodes it (EXIF orientation applied, see `imread_color`).

    Args:
        file: the image.
        what: which frame it is, for messages ("frame 3 of folder x").

    A JPEG cut off before its end is refused when the frames are opened (`check_frame_images`), not at
    every read: cv2 would fill its missing rows with grey and only warn on stderr.

    Raises:
        VideoError: not an image.
    """
    image = imread_color(file)
    if image is None:
        raise VideoError(f"{file}: cannot decode image ({what}); corrupt or not an image")
    return image


def imread_color(file: Path) -> np.ndarray | None:
    """cv2's (H, W, 3) uint8 BGR decode of an image file, EXIF orientation applied; None if it does not decode.

    cv2.imread (4.11) fails on a TIFF carrying an EXIF orientation other than 1 ("Internal imread issue")
    that cv2.imdecode reads, rotated as it should be: such a file is decoded from its bytes (TIFFs only: a
    large file that is no image is not read whole).
    """
    image = cv2.imread(str(file), cv2.IMREAD_COLOR)
    if image is not None:
        return image
    try:
        with open(file, "rb") as fh:
            if fh.read(4) not in _TIFF_MAGIC:
                return None
        return cv2.imdecode(np.fromfile(file, dtype=np.uint8), cv2.IMREAD_COLOR)
    except (OSError, cv2.error):
        return None


def _jpeg_truncated(file: Path) -> bool:
    """Whether a JPEG file lacks the end of its image: its last `_JPEG_TAIL` bytes hold no EOI marker
    (FF D9; in the entropy-coded data an FF byte is always followed by 00 or a restart marker) and a
    full decode by Pillow fails. Files padded or carrying data after the marker pass cheaply when the
    marker lies in the tail, and through the decode otherwise."""
    with file.open("rb") as fh:
        if fh.read(2) != _JPEG_SOI:
            return False
        size = fh.seek(0, 2)
        fh.seek(max(size - _JPEG_TAIL, 2))
        if _JPEG_EOI in fh.read():
            return False
    try:
        with PIL.Image.open(file) as image:
            image.load()
    except (OSError, ValueError, SyntaxError):
        return True
    return False


def check_frame_images(files: Sequence[Path], where: str) -> None:
    """Every file is an image of the first one's size, within MAX_FRAME_PIXELS, and no JPEG is cut off,
    read from the headers and the last two bytes: a stray file, an oversized image, a truncated JPEG or
    a frame of another size fails the open of a video's frames, not a long run half-way (or the
    machine's memory).

    Args:
        files: the frame images in frame order.
        where: what the frames are, for messages ("folder x", "the images of y.json").

    Raises:
        VideoError: the first file at fault, named with its frame index.
    """
    first: tuple[int, int] | None = None
    announce = len(files) >= HEADER_SCAN_ANNOUNCE
    if announce:  # 3-8 s per 10,000 frames: say what the wait is before a long folder's run starts
        logger.info("checking the headers of %d frames of %s ...", len(files), where)
        start = time.perf_counter()
    for index, file in enumerate(files):
        width, height = _declared_size(file, f"frame {index} of {where}")
        if width * height > MAX_FRAME_PIXELS:
            raise VideoError(
                f"{file}: frame {index} of {where} declares {width}x{height} pixels, more than a"
                f" frame may have ({MAX_FRAME_PIXELS / 1e6:g} megapixels)"
            )
        if _jpeg_truncated(file):  # after the size check: a JPEG not ending in its marker is decoded
            raise VideoError(f"{file}: truncated JPEG (frame {index} of {where}): the file ends before the image"
                             " does; re-extract the frame")  # fmt: skip
        if first is None:
            first = (width, height)
        elif (width, height) != first:
            raise VideoError(
                f"{file}: frame {index} is {width}x{height} but the first frame of {where} is"
                f" {first[0]}x{first[1]}; all frames of a video must have one size"
            )
    if announce:
        logger.info("%d frames of %s checked in %.1f s", len(files), where, time.perf_counter() - start)


def _declared_size(file: Path, what: str) -> tuple[int, int]:
    """(width, height) of an image file as cv2 decodes it (EXIF orientation applied, see `_ORIENTED_FORMATS`),
    from its header.

    Raises:
        VideoError: not an image, or an animated one (`what` says which frame it was to be).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)  # the caller checks the size
            with PIL.Image.open(file) as header:
                width, height = header.size
                orientation = _exif_orientation(header) if header.format in _ORIENTED_FORMATS else 1
                kind = ANIMATED_FORMATS.get(header.format or "")
                frames = header.n_frames if kind else 1  # from the header (APNG's acTL chunk, WebP's ANIM)
    except PIL.Image.DecompressionBombError:  # Pillow's own cap (179 megapixels) came first
        raise VideoError(
            f"{file}: {what} declares more pixels than a frame may have ({MAX_FRAME_PIXELS / 1e6:g} megapixels)"
        ) from None
    except (OSError, ValueError, SyntaxError):  # PIL.UnidentifiedImageError is an OSError
        raise VideoError(f"{file}: cannot decode image ({what}); corrupt or not an image") from None
    if frames > 1:  # cv2 would read its first frame without a word; which one is the video's frame is unclear
        raise VideoError(f"{file}: {what} is an animated {kind} of {frames} frames, of which only the first would be"
                         " read; give its frames as images or as a video")  # fmt: skip
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _exif_orientation(header: PIL.Image.Image) -> int:
    """The orientation in an image's own EXIF block (a JPEG's APP1, a PNG's eXIf chunk), 1 where there is none.

    Not Pillow's `getexif()`, which disagrees with cv2 (4.11) and Chromium (156, measured) both ways: it takes
    an orientation from XMP's tiff:Orientation or from a PNG's "Raw profile type exif" text when the EXIF block
    has none, which neither applies (a mixed folder of one shown size was refused as of two sizes), and it
    raises on an EXIF block that is not TIFF-encoded, which both ignore (the image was called corrupt).
    """
    raw = header.info.get("exif")
    if not isinstance(raw, bytes) or not raw:
        return 1
    exif = PIL.Image.Exif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Pillow's "Corrupt EXIF data": read what parses
            exif.load(raw)
            orientation = exif.get(_EXIF_ORIENTATION, 1)
    except (SyntaxError, ValueError, OSError, struct.error):  # not TIFF-encoded: no orientation
        return 1
    return orientation if isinstance(orientation, int) else 1


def _diagnose_unopenable(path: Path) -> str:
    """Best explanation for a file cv2 cannot open."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    with path.open("rb") as fh:
        head = fh.read(64)
    if len(head) >= 8 and head[4:8] in (b"ftyp", b"mdat", b"moov", b"free", b"wide"):
        boxes = _mp4_top_level_boxes(path)
        if b"moov" not in boxes:
            return (
                "incomplete MP4/MOV: its 'moov' index box is missing (recording interrupted or file cut off);"
                " re-download it or re-mux the complete original"
            )
        return "MP4/MOV container that FFmpeg rejects (corrupt index or unsupported codec)"
    return "not a video or an unsupported/corrupt format (cv2's FFmpeg backend cannot read it)"


def _mp4_top_level_boxes(path: Path) -> list[bytes]:
    """Types of the top-level ISO-BMFF boxes, stopping at the first box that runs past the end."""
    types: list[bytes] = []
    size_total = path.stat().st_size
    with path.open("rb") as fh:
        offset = 0
        while offset + 8 <= size_total:
            fh.seek(offset)
            size, kind = struct.unpack(">I4s", fh.read(8))
            if size == 1:
                size = struct.unpack(">Q", fh.read(8))[0]
            elif size == 0:
                size = size_total - offset
            if size < 8 or offset + size > size_total:
                break
            types.append(kind)
            offset += size
    return types


def open_video(path: str | Path, *, fps: float | None = None, strict: bool = True) -> FrameSource:
    """Open a video file or a frame folder (or one image file, as a one-frame video) for reading.

    Args:
        path: a video file (anything cv2's FFmpeg backend reads), a folder of images, or an image file
            named with a suffix of IMAGE_SUFFIXES (`ImageSource`: read as a folder's frames are).
        fps: frames per second to report; overrides the file's value (folders have none otherwise).
        strict: for files, raise VideoError when the declared frame count does not decode
            (default); with False, use the frames that decode and log a warning.

    Returns:
        A FrameSource; close it (or use `with`).

    Raises:
        VideoError: the path is missing, a pipe or device, not a video (or an image file that is no
            image), empty or truncated, or its frames are larger than MAX_FRAME_PIXELS.
    """
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such video file or frame folder")
    if path.is_dir():
        return FolderSource(path, fps=fps)
    if not path.is_file():  # cv2 waits for ever on a pipe's writer, and a file is opened several times
        raise VideoError(
            f"{path}: not a regular file (a pipe, socket or device); save the video to a file first"
        )
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(path, fps=fps)
    return FileSource(path, fps=fps, strict=strict)


def video_info(path: str | Path) -> VideoInfo:
    """Frame count, fps and size of a video file or frame folder (VideoError if unreadable)."""
    with open_video(path) as source:
        return source.info


def count_frames(path: str | Path) -> int:
    """Number of readable frames of a video file or frame folder (VideoError if unreadable)."""
    return video_info(path).num_frames


def extract_frames(
    path: str | Path,
    out_dir: str | Path,
    *,
    step: int = 1,
    pattern: str = "%06d.jpg",
    quality: int = 95,
    progress: bool = False,
) -> list[Path]:
    """Write every `step`-th frame of a video (or frame folder) as an image named by its frame index.

    Names are `pattern % index` (PoseTrack 2018 style `000000.jpg` by default), so re-running
    writes the same files.

    Args:
        path: the video file or frame folder.
        out_dir: the folder to write into (created if missing).
        step: keep frames 0, step, 2*step, ...
        pattern: printf-style file name with one integer field; its suffix picks the format.
        quality: JPEG quality 0..100 (ignored for other formats).
        progress: show a tqdm progress bar.

    Returns:
        The written files, in frame order.

    Raises:
        VideoError: the video cannot be read (see `open_video`) or a file cannot be written.
        ValueError: bad `step`, `pattern` or `quality`.
    """
    try:
        example = pattern % 0
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"pattern must hold exactly one integer field like '%06d.jpg', got {pattern!r}"
        ) from exc
    if pattern % 1 == example:
        raise ValueError(f"pattern must hold exactly one integer field like '%06d.jpg', got {pattern!r}")
    if Path(example).suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"pattern {pattern!r} must end in one of {', '.join(IMAGE_SUFFIXES)}")
    if not 0 <= quality <= 100:
        raise ValueError(f"quality must be in 0..100, got {quality}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    written: list[Path] = []
    with open_video(path) as source:
        indices = source._check_range(step, 0, None)
        frames = source.iter_frames(step=step)
        if progress:
            from tqdm import tqdm

            frames = tqdm(frames, total=len(indices), desc=f"extract {Path(path).name}", unit="frame")
        for index, frame in frames:
            target = out / (pattern % index)
            if not cv2.imwrite(str(target), frame, params):
                raise VideoError(f"{target}: cv2 could not write the frame image")
            written.append(target)
    logger.info("extracted %d frames of %s to %s", len(written), path, out)
    return written
