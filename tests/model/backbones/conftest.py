"""Fixtures shared by the BlazePose tests: one landmark model per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from model.backbones.blazepose import BlazePoseBackbone


@pytest.fixture(scope="module")
def backbone() -> Iterator[BlazePoseBackbone]:
    pytest.importorskip("mediapipe")
    with BlazePoseBackbone() as bp:
        yield bp
