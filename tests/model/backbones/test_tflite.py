"""Tests of model.backbones.tflite: the bundled models' XNNPACK threads, on real mediapipe graphs."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model.backbones.detectors import DETECTOR_MODEL
from model.backbones.landmarks import LANDMARK_MODEL
from model.backbones.tflite import MAX_THREADS, TfliteGraph, default_threads

STILLS = Path(__file__).resolve().parents[2] / "assets" / "real-stills"

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")


def _tasks() -> set[str]:
    return set(os.listdir("/proc/self/task"))


def _threads_running(threads: int | None) -> int:
    """The threads a detector graph made with `threads` starts, counted once it has run (XNNPACK makes its
    workers on the first pass); by thread id, so that other threads ending meanwhile do not count."""
    pytest.importorskip("mediapipe")
    before = _tasks()
    graph = TfliteGraph(DETECTOR_MODEL, (224, 224), (-1.0, 1.0), 2, threads=threads)
    try:
        graph.run(np.zeros((224, 224, 3), np.uint8))
        return len(_tasks() - before)
    finally:
        graph.close()


def test_xnnpack_runs_on_the_threads_asked_for() -> None:
    one = _threads_running(1)
    assert _threads_running(4) == one + 3  # three workers beside the calling thread
    assert _threads_running(1) == one


def test_the_default_is_torchs_thread_count_up_to_four() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(MAX_THREADS + 4)
        assert default_threads() == MAX_THREADS == 4
        torch.set_num_threads(3)
        assert default_threads() == 3
        assert _threads_running(None) == _threads_running(3)
        torch.set_num_threads(1)
        assert default_threads() == 1
        assert _threads_running(None) == _threads_running(1)
    finally:
        torch.set_num_threads(before)


def test_more_threads_give_the_same_answers_on_a_real_photograph() -> None:
    pytest.importorskip("mediapipe")
    path = sorted((STILLS / "images" / "val").glob("*/*.jpg"))[0]
    crop = cv2.cvtColor(cv2.resize(cv2.imread(str(path)), (256, 256)), cv2.COLOR_BGR2RGB)
    outputs = []
    for threads in (1, 2):
        graph = TfliteGraph(LANDMARK_MODEL, (256, 256), (0.0, 1.0), 5, threads=threads)
        try:
            outputs.append(graph.run(crop))
        finally:
            graph.close()
    assert len(outputs[0]) == 5 and outputs[0][0].size == 195  # 39 landmarks x 5: a real pass
    assert all(np.array_equal(a, b) for a, b in zip(*outputs, strict=True))


@pytest.mark.parametrize("threads", [0, -2])
def test_fewer_than_one_thread_is_refused(threads: int) -> None:
    with pytest.raises(ValueError, match="threads must be >= 1"):
        TfliteGraph(DETECTOR_MODEL, (224, 224), (-1.0, 1.0), 2, threads=threads)
