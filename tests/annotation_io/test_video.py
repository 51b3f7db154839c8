"""Tests for annotation_io.video: files and folders written here with cv2, random access, errors."""

from __future__ import annotations

import os
import re
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from annotation_io.video import (
    MAX_FRAME_PIXELS,
    FileSource,
    FolderSource,
    VideoError,
    VideoInfo,
    count_frames,
    extract_frames,
    open_video,
    video_info,
)

W, H = 160, 96
BLOCK = 8  # frame i carries a white BLOCK-wide stripe at x = i * BLOCK and a grey level 20 + 10 * i


def make_frame(index: int) -> np.ndarray:
    frame = np.full((H, W, 3), 20 + 10 * index, dtype=np.uint8)
    frame[:, :, 1] //= 2  # not grey, so a BGR/RGB swap would show
    frame[16:80, index * BLOCK : (index + 1) * BLOCK] = 255
    return frame


def frame_index(frame: np.ndarray) -> int:
    """Decode the stripe position back into the frame index."""
    band = frame[16:80].astype(np.float64).mean(axis=(0, 2))  # (W,)
    return int(np.argmax(band.reshape(-1, BLOCK).mean(axis=1)))


def assert_is_frame(frame: np.ndarray, index: int) -> None:
    assert frame.shape == (H, W, 3) and frame.dtype == np.uint8
    assert frame_index(frame) == index
    expected = 20 + 10 * index
    assert abs(float(np.median(frame[:, -8:, 0])) - expected) <= 6  # codec tolerance
    assert abs(float(np.median(frame[:, -8:, 1])) - expected // 2) <= 6


def write_video(path: Path, fourcc: str, n: int = 16, fps: float = 12.5) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened(), f"cv2 cannot write {fourcc} here"
    for i in range(n):
        writer.write(make_frame(i))
    writer.release()
    return path


def write_folder(path: Path, n: int, name: str = "%06d.jpg", first: int = 0) -> Path:
    path.mkdir()
    for i in range(n):
        cv2.imwrite(str(path / (name % (i + first))), make_frame(i), [cv2.IMWRITE_JPEG_QUALITY, 98])
    return path


def mp4_faststart(data: bytes) -> bytes:
    """Move the 'moov' box before 'mdat' (fixing chunk offsets), so that a cut-off file still opens."""

    def boxes(buf: bytes | bytearray, start: int, end: int):
        i = start
        while i + 8 <= end:
            size, kind = struct.unpack(">I4s", buf[i : i + 8])
            if size < 8:
                return
            yield kind, i, size
            i += size

    top = {kind: (i, size) for kind, i, size in boxes(data, 0, len(data))}
    (mi, ms), (di, _) = top[b"moov"], top[b"mdat"]
    assert mi > di, "expected cv2's mp4 writer to put moov last"
    moov = bytearray(data[mi : mi + ms])

    def shift(start: int, end: int) -> None:
        for kind, i, size in boxes(moov, start, end):
            if kind in (b"trak", b"mdia", b"minf", b"stbl"):
                shift(i + 8, i + size)
            elif kind == b"stco":
                (n,) = struct.unpack(">I", moov[i + 12 : i + 16])
                for k in range(n):
                    at = i + 16 + 4 * k
                    struct.pack_into(">I", moov, at, struct.unpack(">I", moov[at : at + 4])[0] + ms)

    shift(8, ms)
    return data[:di] + bytes(moov) + data[di:mi] + data[mi + ms :]


@pytest.fixture()
def mp4(tmp_path: Path) -> Path:
    return write_video(tmp_path / "clip.mp4", "mp4v")


@pytest.mark.parametrize(
    ("name", "fourcc"), [("clip.mp4", "mp4v"), ("clip.avi", "MJPG"), ("clip.mkv", "MJPG")]
)
def test_file_count_fps_size_and_random_access(tmp_path: Path, name: str, fourcc: str) -> None:
    path = write_video(tmp_path / name, fourcc, n=16, fps=12.5)
    with open_video(path) as src:
        assert isinstance(src, FileSource)
        assert (src.num_frames, src.width, src.height, len(src)) == (16, W, H, 16)
        assert src.fps == pytest.approx(12.5)
        for index in (7, 2, 15, 0, 15, 8, 9, 3):  # backwards, repeats, forwards
            assert_is_frame(src.read(index), index)
    assert video_info(path) == VideoInfo(16, pytest.approx(12.5), W, H)
    assert count_frames(path) == 16


def test_read_returns_a_copy_of_the_cached_frame(mp4: Path) -> None:
    with open_video(mp4) as src:
        first = src.read(5)
        first[:] = 0
        assert_is_frame(src.read(5), 5)


def test_iter_frames_steps_start_stop(mp4: Path) -> None:
    with open_video(mp4) as src:
        got = [(i, frame_index(f)) for i, f in src.iter_frames(step=3, start=1, stop=12)]
        assert got == [(i, i) for i in range(1, 12, 3)]
        assert [i for i, _ in src.iter_frames(step=5)] == [0, 5, 10, 15]
        assert [i for i, _ in src.iter_frames(start=14, stop=100)] == [14, 15]
        assert [i for i, _ in src.iter_frames(step=20)] == [0]
        with pytest.raises(ValueError, match="step"):
            list(src.iter_frames(step=0))


def test_inexact_seeking_falls_back_to_sequential_decoding(mp4: Path) -> None:
    with open_video(mp4) as src:
        assert isinstance(src, FileSource)
        src._seek_ok = False  # as if the first seek had been found inexact
        for index in (12, 4, 13, 0):
            assert_is_frame(src.read(index), index)


@pytest.mark.parametrize(("name", "first"), [("%06d.jpg", 0), ("%08d.jpg", 1), ("frame_%d.png", 0)])
def test_folder_natural_order_and_access(tmp_path: Path, name: str, first: int) -> None:
    folder = write_folder(tmp_path / "frames", 12, name, first)
    (folder / "notes.txt").write_text("not a frame")
    with open_video(folder, fps=25) as src:
        assert isinstance(src, FolderSource)
        assert (src.num_frames, src.width, src.height, src.fps) == (12, W, H, 25)
        for index in (11, 0, 10, 2):  # frame_10.png must come after frame_9.png
            assert_is_frame(src.read(index), index)
        assert [i for i, f in src.iter_frames(step=4) if frame_index(f) == i] == [0, 4, 8]
    assert video_info(folder).fps is None


def test_extract_frames_names_are_indices_and_stable(mp4: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    files = extract_frames(mp4, out, step=4)
    assert [f.name for f in files] == ["000000.jpg", "000004.jpg", "000008.jpg", "000012.jpg"]
    for f in files:
        assert_is_frame(cv2.imread(str(f)), int(f.stem))
    first_bytes = [f.read_bytes() for f in files]
    again = extract_frames(mp4, out, step=4, progress=True)
    assert again == files and [f.read_bytes() for f in again] == first_bytes
    assert sorted(out.iterdir()) == files
    pngs = extract_frames(mp4, tmp_path / "png", pattern="f%03d.png", step=8)
    assert [f.name for f in pngs] == ["f000.png", "f008.png"]
    with pytest.raises(ValueError, match="integer field"):
        extract_frames(mp4, out, pattern="frame.jpg")


def test_extract_frames_from_folder(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "frames", 5, "%08d.jpg", 1)
    files = extract_frames(folder, tmp_path / "out", step=2)
    assert [f.name for f in files] == ["000000.jpg", "000002.jpg", "000004.jpg"]


def test_index_out_of_range(mp4: Path, tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "frames", 3)
    for path, n in ((mp4, 16), (folder, 3)):
        with open_video(path) as src:
            for bad in (n, -1, 1000):
                with pytest.raises(VideoError, match=rf"frame index {bad} out of range .*{n} frames"):
                    src.read(bad)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="no such video file or frame folder"):
        open_video(tmp_path / "nope.mp4")


def test_empty_and_garbage_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match=r"empty \(0 bytes\)"):
        open_video(empty)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="not a video"):
        count_frames(garbage)
    text = tmp_path / "notes.avi"
    text.write_text("hello " * 200)
    with pytest.raises(VideoError, match="cannot open as a video"):
        video_info(text)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (os.mkfifo, "a named pipe"),
        (os.mkdir, "a folder"),
        (lambda entry: entry.symlink_to(entry.parent.parent / "fifo"), r"a named pipe \(through a link\)"),
        (lambda entry: entry.symlink_to("/dev/null"), r"a character device \(through a link\)"),
    ],
    ids=["fifo", "folder", "link-to-fifo", "link-to-device"],
)
def test_a_frame_name_that_is_no_regular_file_is_refused(
    tmp_path: Path, make: Callable[[Path], object], kind: str
) -> None:
    """Before: the entry was skipped without a word, so frame 3 was read as index 2 (labels of frame 2 then
    sat on the wrong picture). A pipe is never opened: the check does not wait for a writer."""
    os.mkfifo(tmp_path / "fifo")
    folder = write_folder(tmp_path / "frames", 4)
    entry = folder / "000002.jpg"
    entry.unlink()
    make(entry)
    with pytest.raises(VideoError, match=rf"^{re.escape(str(entry))} is {kind}, not an image file; without it"):
        open_video(folder)


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="Unix sockets are POSIX")
def test_a_frame_name_that_is_a_socket_is_refused(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "f", 3)  # short: a socket path has at most 107 bytes
    entry = folder / "000001.jpg"
    entry.unlink()
    if len(str(entry).encode()) > 100:
        pytest.skip("temporary folder too deep for a Unix socket path")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(entry))
        with pytest.raises(VideoError, match=r"000001\.jpg is a socket, not an image file"):
            FolderSource(folder)


def test_zero_frame_video_and_empty_folder(tmp_path: Path) -> None:
    path = write_video(tmp_path / "zero.avi", "MJPG", n=0)
    with pytest.raises(VideoError, match=r"empty|cannot open"):
        open_video(path)
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "readme.txt").write_text("x")
    with pytest.raises(VideoError, match="empty frame folder"):
        open_video(tmp_path / "frames")


def test_corrupt_image_in_folder(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "frames", 4)
    (folder / "000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoError, match=r"000002\.jpg: cannot decode image \(frame 2"):
        open_video(folder)  # every header is read on open
    with open_video(write_folder(tmp_path / "cut", 4)) as src:
        (src.files[2]).write_bytes(src.files[2].read_bytes()[:300])  # a header, then nothing
        assert_is_frame(src.read(1), 1)
        with pytest.raises(VideoError, match=r"000002\.jpg: cannot decode image \(frame 2"):
            src.read(2)


def test_mp4_cut_before_its_index(mp4: Path, tmp_path: Path) -> None:
    data = mp4.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])  # cv2 writes moov last: the cut removes it
    with pytest.raises(VideoError, match="incomplete MP4.*'moov'"):
        open_video(cut)


@pytest.mark.parametrize("keep", [0.5, 0.8])
def test_truncated_mp4_reports_decodable_count(mp4: Path, tmp_path: Path, keep: float) -> None:
    fast = mp4_faststart(mp4.read_bytes())
    whole = tmp_path / "fast.mp4"
    whole.write_bytes(fast)
    assert count_frames(whole) == 16  # the helper keeps the file valid
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast[: int(len(fast) * keep)])
    with pytest.raises(VideoError, match=r"truncated .*declares 16 frames but only (\d+) decode") as info:
        open_video(cut)
    decoded = int(info.value.args[0].split("only ")[1].split(" ")[0])
    assert 0 < decoded < 16
    with open_video(cut, strict=False) as src:  # lenient: use what decodes
        assert src.num_frames == decoded
        # FFmpeg conceals the cut frame (the last one may be part-damaged); those before it are intact
        for index in range(decoded - 1):
            assert_is_frame(src.read(index), index)
        src.read(decoded - 1)
        with pytest.raises(VideoError, match="out of range"):
            src.read(decoded)


def patched_avi(
    path: Path, *, rate: tuple[int, int] | None = None, size: tuple[int, int] | None = None
) -> Path:
    """A 16-frame MJPG AVI whose headers declare `rate` (frames, per seconds) or frames of `size` (every
    frame's JPEG header too), as a broken or hostile file may."""
    data = bytearray(write_video(path, "MJPG").read_bytes())
    if rate is not None:  # strh: type, handler, flags, priority+language, initial frames, then scale, rate
        struct.pack_into("<II", data, data.find(b"strh") + 28, rate[1], rate[0])
    if size is not None:
        width, height = size
        struct.pack_into("<II", data, data.find(b"avih") + 40, width, height)  # dwWidth, dwHeight
        struct.pack_into("<ii", data, data.find(b"strf") + 12, width, height)  # biWidth, biHeight
        at = data.find(b"\xff\xc0")  # each frame's SOF0: length, precision, height, width
        while at >= 0:
            struct.pack_into(">HH", data, at + 5, height, width)
            at = data.find(b"\xff\xc0", at + 2)
    path.write_bytes(bytes(data))
    return path


def test_frames_beyond_max_frame_pixels_are_refused_from_the_header(tmp_path: Path) -> None:
    """Before: a video's frame size was not checked at all; this one was called "empty video: no frame
    decodes", and a real one of 12000x9000 would have been decoded at 324 MB a frame."""
    path = patched_avi(tmp_path / "huge.avi", size=(12000, 9000))
    assert 12000 * 9000 > MAX_FRAME_PIXELS
    with pytest.raises(VideoError, match=r"huge\.avi: the video's frames are 12000x9000 pixels, more than a"
                                         r" frame may have \(100 megapixels\)"):  # fmt: skip
        open_video(path)


@pytest.mark.parametrize("rate", [(10**6, 1), (3, 10**6), (2**32 - 1, 1)])
def test_a_declared_frame_rate_no_video_has_counts_as_unknown(
    tmp_path: Path, rate: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    """Before: 10**6, 3e-6 and 90000 fps (FFmpeg's guess for 2**32-1/1) were taken as the rate; an overlay
    video written at it cannot be opened, after the whole prediction has run."""
    path = patched_avi(tmp_path / "odd.avi", rate=rate)
    with open_video(path) as src:
        assert src.fps is None and src.num_frames == 16
    assert "frames per second, not a frame rate a video has" in caplog.text
    with open_video(path, fps=30.0) as src:  # the caller's rate stands
        assert src.fps == 30.0
    with open_video(patched_avi(tmp_path / "slow.avi", rate=(1, 60))) as src:  # time-lapse: a frame a minute
        assert src.fps == pytest.approx(1 / 60)


def test_truncated_avi_reports_decodable_count(tmp_path: Path) -> None:
    data = write_video(tmp_path / "clip.avi", "MJPG").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.8)])
    with pytest.raises(VideoError, match=r"declares 16 frames but only \d+ decode"):
        open_video(cut)


@pytest.mark.parametrize("seek_check", [0, 300])
def test_long_file_path_checks_the_last_frame(
    mp4: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seek_check: int
) -> None:
    """Files longer than FULL_VERIFY_MAX_FRAMES are trusted if their last frame reads."""
    from annotation_io import video

    monkeypatch.setattr(video, "FULL_VERIFY_MAX_FRAMES", 4)
    monkeypatch.setattr(video, "SEEK_CHECK_MAX_INDEX", seek_check)
    with open_video(mp4) as src:
        assert src.num_frames == 16
        for index in (15, 3, 9, 0):
            assert_is_frame(src.read(index), index)
    fast = mp4_faststart(mp4.read_bytes())
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast[: int(len(fast) * 0.6)])
    with pytest.raises(VideoError, match=r"declares 16 frames but only \d+ decode"):
        open_video(cut)


def test_reading_a_closed_file_says_so(mp4: Path) -> None:
    src = open_video(mp4)
    assert_is_frame(src.read(3), 3)
    src.close()
    src.close()  # idempotent
    with pytest.raises(VideoError, match="closed"):
        src.read(3)
