"""Tests for model/bench/gpu_check.py: the GPU parity checks (marked gpu, skipped without CUDA) and its CLI."""

from __future__ import annotations

import pytest
import torch

from model.bench import gpu_check

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_without_cuda_the_check_says_so_and_exits_2(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "x.json")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.gpu
@needs_cuda
def test_hrnet_and_head_cpu_vs_cuda() -> None:
    result = gpu_check.check_parity("cuda")
    assert result["ok"], result


@pytest.mark.gpu
@needs_cuda
def test_torchvision_dcn_on_cuda_vs_pure() -> None:
    result = gpu_check.check_dcn("cuda")
    assert result["ok"], result


@pytest.mark.gpu
@needs_cuda
def test_finetune_on_cuda_loads_on_cpu_and_keeps_its_keypoints_under_autocast(tmp_path) -> None:
    trained: list = []
    result = gpu_check.check_finetune("cuda", workdir=tmp_path, trained=trained)
    assert result["epoch_losses"][-1] < result["epoch_losses"][0]
    assert result["ok"], result
    autocast = gpu_check.check_autocast("cuda", trained[0])
    assert autocast["ok"], autocast


def test_each_step_is_reported_as_it_finishes_and_one_failure_keeps_the_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_check, "check_parity", lambda device: {"ok": True, "max_rel_diff": 0.0})

    def broken(device: str) -> dict:
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(gpu_check, "check_dcn", broken)
    monkeypatch.setattr(gpu_check, "check_finetune", lambda device, trained: {"ok": True})
    monkeypatch.setattr(gpu_check, "check_autocast", lambda device, head: {"ok": True})
    monkeypatch.setattr(gpu_check, "throughput", lambda device: {"batch": 32})
    monkeypatch.setattr(gpu_check, "check_movenet", lambda device: {"ok": True})
    seen: list[tuple[list[str], bool, bool]] = []
    report = gpu_check.run_gpu_check("cpu", video=False,
                                     on_step=lambda r: seen.append((list(r["checks"]), r["ok"], r["complete"])))
    assert [names for names, _, _ in seen] == [
        ["parity"], ["parity", "dcn"], ["parity", "dcn", "finetune"],
        ["parity", "dcn", "finetune", "autocast"], ["parity", "dcn", "finetune", "autocast", "throughput"],
        ["parity", "dcn", "finetune", "autocast", "throughput", "movenet"]]
    assert [ok for _, ok, _ in seen] == [True, False, False, False, False, False]
    assert [complete for _, _, complete in seen] == [False, False, False, False, False, True]
    assert report["checks"]["dcn"]["error"] == "RuntimeError: CUDA error: out of memory"
    assert not report["ok"]


@pytest.mark.gpu
def test_movenet_on_cuda_matches_the_cpu() -> None:
    result = gpu_check.check_movenet("cuda")
    assert result["ok"], result
