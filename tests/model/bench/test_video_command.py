"""Tests of the `bench-video` command's options (the benchmark itself is run by hand; it takes minutes)."""

from __future__ import annotations

import pytest

from model.cli.main import main


@pytest.mark.parametrize("count", ["0", "-2"])
def test_test_videos_below_one_is_refused(count: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench-video", "--sections", "propagation", "--test-videos", count]) == 2
    assert f"--test-videos must be at least 1, got {count}" in capsys.readouterr().err


def test_cost_section_keeps_hrnet_rows_when_blazepose_cannot_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA machine without mediapipe: BlazePose fails on first use, HRNet's cost rows still come back."""
    import model.backbones.blazepose_heatmaps as blaze
    import model.backbones.factory as factory
    from model.backbones.base import empty_heatmaps
    from model.backbones.tflite import MediaPipeUnavailableError
    from model.bench.video import BenchSettings, run_video_bench

    class NoMediapipe(blaze.BlazePoseHeatmaps):
        def heatmaps(self, crops, geoms, frames):  # noqa: ANN001, ANN202 - the Backbone protocol
            raise MediaPipeUnavailableError("importing it failed: No module named 'mediapipe'")

    class Zeros:  # stands in for random-weight HRNet-W48 (seconds per crop on these CPUs)
        name, version = "hrnet_w48", "hrnet_w48:zeros"

        def heatmaps(self, crops, geoms, frames):  # noqa: ANN001, ANN202
            return empty_heatmaps().new_zeros((len(crops), *empty_heatmaps().shape[1:]))

    monkeypatch.setattr(blaze, "BlazePoseHeatmaps", NoMediapipe)
    monkeypatch.setattr(factory, "build_backbone", lambda *a, **k: Zeros())
    result = run_video_bench(BenchSettings(cost_frames=2, people=1, repeats=1), sections=("cost",))
    assert sorted((row.backbone, row.variant) for row in result.cost) == [
        ("hrnet_w48", "backbone-only"), ("hrnet_w48", "cached"), ("hrnet_w48", "exact")]
    assert [f.backbone for f in result.floors] == ["hrnet_w48"]
    assert any(n.startswith("cost with blazepose skipped: MediaPipeUnavailableError") for n in result.notes)
