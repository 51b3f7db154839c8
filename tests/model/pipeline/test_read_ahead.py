"""Tests for model/pipeline/read_ahead.py: frames decoded ahead, in order, out of order, with failures."""

from __future__ import annotations

import threading
import time

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


class _Files:
    """A reader of one file per frame (`concurrent_reads`): each read takes 20 ms; records overlap."""

    concurrent_reads = True

    def __init__(self, n: int, fail: int | None = None) -> None:
        self.num_frames, self.fail = n, fail
        self.reads: list[int] = []
        self.busy = self.most_busy = 0
        self._lock = threading.Lock()

    def read(self, index: int) -> np.ndarray:
        with self._lock:
            self.reads.append(index)
            self.busy += 1
            self.most_busy = max(self.most_busy, self.busy)
        try:
            time.sleep(0.02)
            if index == self.fail:
                raise OSError(f"cannot decode frame {index}")
            return np.full((4, 5, 3), index, dtype=np.uint8)
        finally:
            with self._lock:
                self.busy -= 1


def test_files_are_decoded_by_several_threads_in_order_of_use() -> None:
    inner = _Files(24)
    with ReadAheadReader(inner, range(24), depth=8, workers=4) as ahead:
        assert ahead.workers == 4
        got = [int(ahead.read(i)[0, 0, 0]) for i in range(24)]
    assert got == list(range(24))
    assert sorted(inner.reads) == list(range(24))  # each frame decoded once
    assert inner.most_busy >= 2, inner.most_busy  # decoded side by side


def test_a_reader_that_is_not_thread_safe_gets_one_thread_whatever_is_asked() -> None:
    inner = _Frames(12)  # asserts it is never used by two threads at once
    with ReadAheadReader(inner, range(12), workers=4) as ahead:
        assert ahead.workers == 1
        assert [int(ahead.read(i)[0, 0, 0]) for i in range(12)] == list(range(12))


def test_with_several_threads_a_failing_frame_still_raises_for_the_consumer() -> None:
    inner = _Files(10, fail=4)
    with ReadAheadReader(inner, range(10), workers=3) as ahead:
        assert [int(ahead.read(i)[0, 0, 0]) for i in range(4)] == [0, 1, 2, 3]
        with pytest.raises(OSError, match="frame 4"):
            ahead.read(4)
        assert [int(ahead.read(i)[0, 0, 0]) for i in range(5, 10)] == [5, 6, 7, 8, 9]


def test_skipped_frames_are_not_kept() -> None:
    inner = _Files(30)
    with ReadAheadReader(inner, range(30), depth=6, workers=3) as ahead:
        assert int(ahead.read(20)[0, 0, 0]) == 20  # the consumer jumps ahead
        time.sleep(0.1)  # threads finish what they had started
        assert all(i > 20 for i in ahead._ready), sorted(ahead._ready)
        assert [int(ahead.read(i)[0, 0, 0]) for i in range(21, 30)] == list(range(21, 30))


def test_bad_workers_is_named() -> None:
    with pytest.raises(ValueError, match="workers"):
        ReadAheadReader(_Files(2), [0], workers=0)


def test_the_pipeline_profile_script_times_each_variant_and_stage(capsys: pytest.CaptureFixture[str]) -> None:
    """`scripts/profile_pipeline.py` (README "Speed on CPU and GPU"), its instant backbone and head: the
    pipeline's own cost, with 1 and 2 decoding threads side by side."""
    from scripts import profile_pipeline

    assert profile_pipeline.main(["--instant", "--size", "320x240", "--frames", "3", "--people", "2",
                                  "--repeats", "1", "--decode-workers", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "3 frames x 2 people = 6 person-frames" in out
    for variant in ("backbone-only", "cached", "exact"):
        for workers in (1, 2):
            assert f"{variant} ({workers} decoding)" in out
    for stage in (*profile_pipeline.STAGES, "other"):
        assert f"\n  {stage} " in out
