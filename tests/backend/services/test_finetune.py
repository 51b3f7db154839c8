"""Tests of backend.services.finetune: training options, neighbour frames, the starting head."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from annotation_io.types import Frame, Video
from backend.services.finetune import fit_neighbours
from backend.services.finetune_config import FinetuneConfig, load_config
from tests.backend.services.test_training_data import labelled_person

# ----------------------------------------------------------------------------- config


def test_training_options_come_from_defaults_the_model_dir_file_and_the_job(tmp_path: Path) -> None:
    assert load_config(tmp_path) == FinetuneConfig()
    (tmp_path / "train_config.json").write_text(json.dumps({"epochs": 2, "lr": 0.001, "amp": True}))
    cfg = load_config(tmp_path, {"epochs": 3, "batch_size": 2})
    assert (cfg.epochs, cfg.lr, cfg.amp, cfg.batch_size, cfg.holdout_fraction) == (3, 0.001, True, 2, 0.2)
    (tmp_path / "train_config.json").write_text(json.dumps({"epoch": 2}))
    with pytest.raises(ValueError, match=r"train_config.json: unknown key\(s\) \['epoch'\]"):
        load_config(tmp_path)
    (tmp_path / "train_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_config(tmp_path)
    (tmp_path / "train_config.json").unlink()
    for bad, key in (({"epochs": 0}, "epochs"), ({"lr": -1}, "lr"), ({"holdout_fraction": 1.0}, "holdout_fraction"),
                     ({"batch_size": True}, "batch_size")):  # fmt: skip
        with pytest.raises(ValueError, match=f"job config: train config '{key}'"):
            load_config(tmp_path, bad)


def test_neighbours_without_a_task_image_are_replaced_by_the_current_frame() -> None:
    from model.training.samples import build_samples

    frames = [Frame(t, [labelled_person(float(t))], is_labeled=True) for t in (0, 3, 7)]
    samples = build_samples({"v": Video("v", 8, frames)})
    fitted = fit_neighbours(samples, {"v": {0: "a", 1: "b", 2: "c", 3: "d", 7: "e"}})
    got = [(s.frame, s.prev, s.next, s.margin) for s in fitted]
    assert got == [(0, 0, 1, (1.0, 1.0)), (3, 2, 3, (1.0, 1.0)), (7, 7, 7, (1.0, 1.0))]
    assert fitted[0] is samples[0], "samples whose neighbours are known are kept as they are"


def test_training_starts_from_the_serving_head_else_the_released_one_else_the_init(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import torch

    from backend.services.finetune import _initial_head
    from model.checkpoint import save_checkpoint
    from model.nets.dcpose import build_dcpose

    def marked(net: Any, value: float) -> Any:
        with torch.no_grad():
            net.diff_temporal_fuse.layers[0].conv_bn_relu1.bn.bias.fill_(value)
        return net

    def mark(net: Any) -> float:
        return float(net.diff_temporal_fuse.layers[0].conv_bn_relu1.bn.bias[0].detach())

    official = (
        tmp_path / "official.pth"
    )  # the released file's layout: {"state_dict": backbone + head}, tiny HRNet
    torch.save({"state_dict": marked(build_dcpose(backbone="hrnet_w8"), 0.25).state_dict()}, official)
    serving_head = tmp_path / "p1-v1.pt"
    save_checkpoint(serving_head, marked(build_dcpose(backbone=None), 0.75), version="p1-v1",
                    model_config={"backbone": "hrnet_w8", "num_joints": 17})  # fmt: skip

    def start(head: Path | None, checkpoint: Path | None, backbone: str = "hrnet_w8") -> tuple[float, str]:
        ctx = SimpleNamespace(settings=SimpleNamespace(backbone_checkpoint=checkpoint))
        serving = SimpleNamespace(
            name="p1-v1" if head else "cold", spec=SimpleNamespace(head=str(head) if head else None)
        )
        net, source = _initial_head(ctx, serving, backbone)
        return mark(net), source

    assert start(serving_head, official) == (0.75, "p1-v1")
    assert start(None, official) == (0.25, "released:official.pth")
    assert start(None, None) == (0.0, "released-init")
    assert start(serving_head, None, backbone="blazepose") == (0.0, "released-init"), (
        "a head of another backbone"
    )
