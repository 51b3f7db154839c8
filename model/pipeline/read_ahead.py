"""Frames decoded ahead on background threads, in the order a prediction job will ask for them."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from types import TracebackType

import numpy as np

from annotation_io.video import FrameReader

logger = logging.getLogger(__name__)

__all__ = ["READ_AHEAD_WORKERS", "ReadAheadReader"]

# Reading threads for readers of one file per frame. Not capped by the CPU count: a task image from
# Label Studio is a download first (48 frames of 1280x720 with 20 ms of latency, 2 cores: 35 frames/s
# on 1 thread, 66 on 2, 130 on 4; with no latency 145, 244, 240).
READ_AHEAD_WORKERS = 4


class ReadAheadReader:
    """A `FrameReader` that decodes the frames of `order` ahead of use while the network runs.

    Decoding (cv2 / image files) and the network (torch) both release the GIL, so a video is decoded
    while the backbone runs on the previous batch. At most `depth` decoded frames wait (or are being
    read); a frame asked for out of order is read directly. A reader whose `concurrent_reads` is true
    (frame folders, the frames an annotation file lists, Label Studio's task images: one image file
    each) is read by `workers` threads at once: one thread decodes about 220 JPEG frames of 1280x720 a
    second (90 of 1920x1080), fewer than a GPU predicts with one person per frame, and waits on one
    download at a time. Any other reader (cv2.VideoCapture is not thread-safe) is only ever used by
    one thread at a time, under one lock. Use as a context manager, or call `close`.

    Args:
        reader: the inner reader.
        order: frame indices in the order they will be read (duplicates and out-of-range dropped).
        depth: decoded frames kept ahead at most.
        workers: reading threads for a reader with `concurrent_reads` (default `READ_AHEAD_WORKERS`);
            1 for any other reader.
    """

    def __init__(self, reader: FrameReader, order: Sequence[int], depth: int = 8,
                 workers: int | None = None) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._inner, self.num_frames = reader, reader.num_frames
        self._order = [i for i in dict.fromkeys(order) if 0 <= i < reader.num_frames]
        self._position = {index: pos for pos, index in enumerate(self._order)}
        self._ready: dict[int, np.ndarray] = {}
        self._depth, self._next, self._closed, self._failed = depth, 0, False, False
        self._inflight: set[int] = set()  # the frames the threads are decoding now
        self._floor = 0  # position in `order` of the last frame asked for: earlier ones are not kept
        concurrent = bool(getattr(reader, "concurrent_reads", False))
        if concurrent:
            count = workers if workers is not None else READ_AHEAD_WORKERS
        else:
            count = 1
        self.workers = max(1, min(count, depth, len(self._order) or 1))
        self._io: threading.Lock | contextlib.nullcontext[None] = (
            contextlib.nullcontext() if concurrent else threading.Lock())
        self._cond = threading.Condition()
        self.ahead_hits = 0  # frames served from the read-ahead (for tests and logs)
        self._threads = [threading.Thread(target=self._run, name=f"frame-read-ahead-{i}", daemon=True)
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._failed
                                    or len(self._ready) + len(self._inflight) < self._depth)
                if self._closed or self._failed or self._next >= len(self._order):
                    return
                index = self._order[self._next]
                self._next += 1
                self._inflight.add(index)
            try:
                with self._io:
                    frame = np.asarray(self._inner.read(index))
            except Exception as exc:  # noqa: BLE001 - the consumer reads the frame itself and sees the error
                logger.debug("read-ahead of frame %d failed: %s", index, exc)
                with self._cond:
                    self._inflight.discard(index)
                    self._failed = True  # every thread stops; reads go on directly
                    self._cond.notify_all()
                return
            with self._cond:
                self._inflight.discard(index)
                if self._position[index] >= self._floor:  # not skipped by the consumer meanwhile
                    self._ready[index] = frame
                self._cond.notify_all()

    def read(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 BGR frame `index`: decoded ahead where it was, else read now."""
        pos = self._position.get(index)
        with self._cond:
            if pos is not None:
                self._cond.wait_for(lambda: index not in self._inflight)  # being decoded now: wait for it
                for stale in [i for i in self._ready if self._position[i] < pos]:  # skipped: never asked
                    del self._ready[stale]
                self._floor = max(self._floor, pos)
                self._next = max(self._next, pos + 1)  # asked before the threads got there: skip it
            frame = self._ready.pop(index, None)
            self._cond.notify_all()
        if frame is not None:
            self.ahead_hits += 1
            return frame
        with self._io:
            return np.asarray(self._inner.read(index))

    def close(self) -> None:
        """Stops the threads (the inner reader is left open: its owner closes it)."""
        with self._cond:
            self._closed = True
            self._ready.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)

    def __enter__(self) -> ReadAheadReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
