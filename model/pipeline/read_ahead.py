"""Frames decoded ahead on a background thread, in the order a prediction job will ask for them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from types import TracebackType

import numpy as np

from annotation_io.video import FrameReader

logger = logging.getLogger(__name__)

__all__ = ["ReadAheadReader"]


class ReadAheadReader:
    """A `FrameReader` that decodes the frames of `order` ahead of use while the network runs.

    Decoding (cv2 / image files) and the network (torch) both release the GIL, so a video is decoded
    while the backbone runs on the previous batch. At most `depth` decoded frames wait; a frame
    asked for out of order is read directly (the inner reader is only ever used under one lock, so
    a reader that is not thread-safe, like cv2.VideoCapture, is safe here). Use as a context
    manager, or call `close`.

    Args:
        reader: the inner reader.
        order: frame indices in the order they will be read (duplicates and out-of-range dropped).
        depth: decoded frames kept ahead at most.
    """

    def __init__(self, reader: FrameReader, order: Sequence[int], depth: int = 8) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._inner, self.num_frames = reader, reader.num_frames
        self._order = [i for i in dict.fromkeys(order) if 0 <= i < reader.num_frames]
        self._position = {index: pos for pos, index in enumerate(self._order)}
        self._ready: dict[int, np.ndarray] = {}
        self._depth, self._next, self._closed = depth, 0, False
        self._inflight: int | None = None  # the frame the thread is decoding now
        self._io = threading.Lock()
        self._cond = threading.Condition()
        self.ahead_hits = 0  # frames served from the read-ahead (for tests and logs)
        self._thread = threading.Thread(target=self._run, name="frame-read-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or len(self._ready) < self._depth)
                if self._closed or self._next >= len(self._order):
                    return
                index = self._inflight = self._order[self._next]
                self._next += 1
            try:
                with self._io:
                    frame = np.asarray(self._inner.read(index))
            except Exception as exc:  # noqa: BLE001 - the consumer reads the frame itself and sees the error
                logger.debug("read-ahead of frame %d failed: %s", index, exc)
                with self._cond:
                    self._inflight = None
                    self._cond.notify_all()
                return
            with self._cond:
                self._ready[index] = frame
                self._inflight = None
                self._cond.notify_all()

    def read(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 BGR frame `index`: decoded ahead where it was, else read now."""
        pos = self._position.get(index)
        with self._cond:
            if pos is not None:
                self._cond.wait_for(lambda: self._inflight != index)  # being decoded now: wait for it
                for stale in [i for i in self._ready if self._position[i] < pos]:  # skipped: never asked
                    del self._ready[stale]
                self._next = max(self._next, pos + 1)  # asked before the thread got there: skip it
            frame = self._ready.pop(index, None)
            self._cond.notify_all()
        if frame is not None:
            self.ahead_hits += 1
            return frame
        with self._io:
            return np.asarray(self._inner.read(index))

    def close(self) -> None:
        """Stops the thread (the inner reader is left open: its owner closes it)."""
        with self._cond:
            self._closed = True
            self._ready.clear()
            self._cond.notify_all()
        self._thread.join(timeout=30)

    def __enter__(self) -> ReadAheadReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
