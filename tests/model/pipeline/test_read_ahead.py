"""Tests for model/pipeline/read_ahead.py: frames decoded ahead, in order, out of order, with failures."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from model.pipeline.read_ahead import ReadAheadReader


class _Frames:
    """A reader over synthetic frames that records its reads and refuses concurrent use."""

    def __init__(self, n: int, fail: int | None = None) -> None:
        self.num_frames, self.fail = n, fail
        self.reads: list[int] = []
        self._busy = threading.Lock()
        self.released = threading.Event()

    def read(self, index: int) -> np.ndarray:
        assert self._busy.acquire(blocking=False), "inner reader used by two threads at once"
        try:
            self.reads.append(index)
            if index == self.fail:
                raise OSError(f"cannot decode frame {index}")
            return np.full((4, 5, 3), index, dtype=np.uint8)
        finally:
            self._busy.release()


def test_frames_come_back_right_and_are_decoded_ahead_once() -> None:
    inner = _Frames(10)
    order = [0, 1, 2, 1, 2, 3, 2, 3, 4, 99, -1]  # neighbours repeat; out-of-range indices are dropped
    with ReadAheadReader(inner, order, depth=2) as ahead:
        got = [int(ahead.read(i)[0, 0, 0]) for i in (0, 1, 2, 3, 4)]
        assert ahead.num_frames == 10
    assert got == [0, 1, 2, 3, 4]
    assert sorted(inner.reads) == [0, 1, 2, 3, 4]  # each frame decoded once
    assert ahead.ahead_hits >= 1


def test_out_of_order_and_repeated_reads_still_work() -> None:
    inner = _Frames(8)
    with ReadAheadReader(inner, range(8), depth=3) as ahead:
        assert int(ahead.read(5)[0, 0, 0]) == 5  # jumps past the read-ahead
        assert int(ahead.read(2)[0, 0, 0]) == 2  # behind it: read directly
        assert int(ahead.read(6)[0, 0, 0]) == 6
        assert int(ahead.read(6)[0, 0, 0]) == 6  # again (a cache evicted it): read directly
        assert int(ahead.read(7)[0, 0, 0]) == 7


def test_a_failing_frame_raises_for_the_consumer_not_the_thread() -> None:
    inner = _Frames(5, fail=2)
    with ReadAheadReader(inner, range(5)) as ahead:
        assert int(ahead.read(1)[0, 0, 0]) == 1
        with pytest.raises(OSError, match="frame 2"):
            ahead.read(2)
        assert int(ahead.read(3)[0, 0, 0]) == 3  # the read-ahead stopped; direct reads go on


def test_bad_depth_is_named() -> None:
    with pytest.raises(ValueError, match="depth"):
        ReadAheadReader(_Frames(2), [0], depth=0)
