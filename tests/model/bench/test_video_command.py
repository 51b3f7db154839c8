"""Tests of the `bench-video` command's options (the benchmark itself is run by hand; it takes minutes)."""

from __future__ import annotations

import pytest

from model.cli.main import main


@pytest.mark.parametrize("count", ["0", "-2"])
def test_test_videos_below_one_is_refused(count: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench-video", "--sections", "propagation", "--test-videos", count]) == 2
    assert f"--test-videos must be at least 1, got {count}" in capsys.readouterr().err
