"""Tests for model/checkpoint.py: official DCPose files, bare HRNet dicts, our format, errors, atomic save."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import model.checkpoint as ckpt
from model.checkpoint import (
    FORMAT,
    CheckpointFormatError,
    CheckpointMismatchError,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
    state_dict_kind,
)
from model.nets.dcpose import DCPose, build_dcpose
from model.nets.hrnet import HRNet

BACKBONE = "hrnet_w8"  # tiny HRNet keeps the full DCPose fast on CPU


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    """Fill every parameter and BN buffer with seed-dependent values.

    Conv weights are scaled by 1/sqrt(fan_in) so activations stay O(1): with the DCPose init (std 0.001)
    the outputs are ~1e-30, and "identical outputs" would be a vacuous check.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                tensor.fill_(int(torch.randint(1, 100, (1,), generator=gen)))
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.2 + 0.9)
            elif tensor.dim() == 4:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=gen) / fan_in**0.5)
            else:
                base = (
                    1.0 if name.endswith("bn.weight") or (".bn" in name and name.endswith(".weight")) else 0.0
                )
                tensor.copy_(base + 0.1 * torch.randn(tensor.shape, generator=gen))
    return module


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, 3, 32, 32, generator=gen) for _ in range(3))  # type: ignore[return-value]


def _run(model: DCPose) -> torch.Tensor:
    model.eval()
    with torch.inference_mode():
        return model(*_inputs())


def _write_official(path: Path, model: nn.Module) -> Path:
    """A DCPose training checkpoint as `engine/defaults/checkpoints.py` writes it, plus DataParallel prefixes."""
    state = {"module." + k: v.clone() for k, v in model.state_dict().items()}
    optimizer = {
        "state": {0: {"step": 12, "exp_avg": torch.ones(3), "exp_avg_sq": torch.ones(3)}},
        "param_groups": [
            {
                "lr": 1e-4,
                "betas": (0.9, 0.999),
                "eps": 1e-8,
                "weight_decay": 0.0,
                "amsgrad": False,
                "params": [0],
            }
        ],
    }
    torch.save(
        {"begin_epoch": 7, "state_dict": state, "optimizer": optimizer, "tensorboard_global_steps": 4321},
        path,
    )
    return path


@pytest.fixture(scope="module")
def source() -> DCPose:
    return _randomise(build_dcpose(BACKBONE), seed=1).eval()


@pytest.fixture(scope="module")
def official_file(tmp_path_factory: pytest.TempPathFactory, source: DCPose) -> Path:
    return _write_official(tmp_path_factory.mktemp("official") / "PoseTrack17_DCPose.pth", source)


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []


# ------------------------------------------------------------------------------------- official files


def test_official_checkpoint_loads_strictly_with_identical_outputs(
    official_file: Path, source: DCPose
) -> None:
    fresh = build_dcpose(BACKBONE)
    key = "rough_pose_estimation_net.stage2.0.branches.0.0.conv1.weight"
    assert not torch.equal(fresh.state_dict()[key], source.state_dict()[key])  # a no-op load would fail below
    info = load_checkpoint(official_file, fresh)
    assert info.kind == "official" and info.content == "dcpose"
    assert info.version is None and info.model_config is None
    assert info.extra == {"begin_epoch": 7, "tensorboard_global_steps": 4321}
    assert (info.num_joints, info.backbone_width) == (17, 8)
    _assert_same_state(fresh.state_dict(), source.state_dict())
    assert torch.equal(_run(fresh), _run(source))


def test_official_checkpoint_fills_head_only_model(official_file: Path, source: DCPose) -> None:
    head = build_dcpose(None)
    info = load_checkpoint(official_file, head)
    assert info.kind == "official" and info.missing_keys == () and info.skipped_keys == ()
    expected = {
        k: v for k, v in source.state_dict().items() if not k.startswith("rough_pose_estimation_net.")
    }
    _assert_same_state(head.state_dict(), expected)
    gen = torch.Generator().manual_seed(3)
    heatmaps = [torch.randn(1, 17, 8, 8, generator=gen) for _ in range(3)]
    head.eval()
    with torch.inference_mode():
        assert torch.equal(head.refine(*heatmaps), source.refine(*heatmaps))


def test_read_checkpoint_info_without_model(official_file: Path) -> None:
    info = read_checkpoint_info(official_file)
    assert (info.kind, info.content, info.num_joints, info.backbone_width) == ("official", "dcpose", 17, 8)
    assert info.extra["begin_epoch"] == 7 and "optimizer" not in info.extra


def test_old_checkpoint_without_num_batches_tracked_loads(tmp_path: Path, source: DCPose) -> None:
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": state, "begin_epoch": 0}, tmp_path / "old.pth")
    fresh = build_dcpose(BACKBONE)
    load_checkpoint(tmp_path / "old.pth", fresh)
    assert torch.equal(_run(fresh), _run(source))


# ----------------------------------------------------------------------------------- bare HRNet dicts


def test_bare_hrnet_dict_goes_into_the_backbone(tmp_path: Path) -> None:
    hrnet = _randomise(HRNet(width=8), seed=5)
    torch.save(
        {"module." + k: v for k, v in hrnet.state_dict().items()}, tmp_path / "pretrained_coco_model.pth"
    )
    model = build_dcpose(BACKBONE)
    head_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("rough_pose")}
    info = load_checkpoint(tmp_path / "pretrained_coco_model.pth", model)
    assert (info.kind, info.content, info.backbone_width) == ("hrnet", "hrnet", 8)
    _assert_same_state(model.backbone.state_dict(), hrnet.state_dict())
    _assert_same_state(
        {k: v for k, v in model.state_dict().items() if not k.startswith("rough_pose")}, head_before
    )

    plain = HRNet(width=8)
    load_checkpoint(tmp_path / "pretrained_coco_model.pth", plain)
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(plain.eval()(x), hrnet.eval()(x))

    with pytest.raises(CheckpointMismatchError, match="no backbone"):
        load_checkpoint(tmp_path / "pretrained_coco_model.pth", build_dcpose(None))


def test_dcpose_checkpoint_backbone_into_plain_hrnet(official_file: Path, source: DCPose) -> None:
    plain = HRNet(width=8)
    load_checkpoint(official_file, plain)
    _assert_same_state(plain.state_dict(), source.backbone.state_dict())


# -------------------------------------------------------------------------------------------- ours


def test_our_format_round_trip(tmp_path: Path, source: DCPose) -> None:
    config = {"backbone": BACKBONE, "num_joints": 17, "dilations": [3, 6, 9, 12, 15], "input_size": [32, 32]}
    path = save_checkpoint(
        tmp_path / "models" / "v2.pt",
        source,
        model_config=config,
        version="v2",
        extra={"steps": 10, "loss": 0.25, "note": None},
    )
    assert path == tmp_path / "models" / "v2.pt"
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["version"] == "v2" and set(raw) >= {"state_dict", "extra"}

    info = read_checkpoint_info(path)
    assert (info.kind, info.version, info.model_config, info.extra) == (
        "ours",
        "v2",
        config,
        {"steps": 10, "loss": 0.25, "note": None},
    )
    fresh = build_dcpose(info.model_config["backbone"], info.model_config["num_joints"])
    assert load_checkpoint(path, fresh).version == "v2"
    assert torch.equal(_run(fresh), _run(source))


def test_save_rejects_non_plain_config_and_empty_version(tmp_path: Path, source: DCPose) -> None:
    with pytest.raises(TypeError, match=r"model_config\['shape'\] is a ndarray"):
        save_checkpoint(tmp_path / "a.pt", source, model_config={"shape": np.zeros(2)}, version="v1")
    with pytest.raises(ValueError, match="version"):
        save_checkpoint(tmp_path / "a.pt", source, model_config={}, version=" ")
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------- mismatches


def test_wrong_shapes_are_listed(official_file: Path) -> None:
    with pytest.raises(CheckpointMismatchError) as caught:
        load_checkpoint(official_file, build_dcpose("hrnet_w16"))
    err = caught.value
    assert err.kind == "official" and err.missing == [] and err.unexpected == []
    mismatched = {key: (got, want) for key, got, want in err.shape_mismatches}
    assert mismatched["rough_pose_estimation_net.final_layer.weight"] == ((17, 8, 1, 1), (17, 16, 1, 1))
    text = str(err)
    assert f"{len(mismatched)} shape mismatches" in text and f"and {len(mismatched) - 20} more" in text
    assert "official checkpoint" in text


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path, source: DCPose) -> None:
    state = dict(source.state_dict())
    del state["masks_list.2.0.weight"]
    state["offsets_list.5.0.weight"] = torch.zeros(1)
    torch.save({"state_dict": state, "begin_epoch": 1}, tmp_path / "bad.pth")
    fresh = build_dcpose(BACKBONE)
    with pytest.raises(CheckpointMismatchError) as caught:
        load_checkpoint(tmp_path / "bad.pth", fresh)
    assert caught.value.missing == ["masks_list.2.0.weight"]
    assert caught.value.unexpected == ["offsets_list.5.0.weight"]
    assert "masks_list.2.0.weight" in str(caught.value) and "offsets_list.5.0.weight" in str(caught.value)

    info = load_checkpoint(tmp_path / "bad.pth", fresh, strict=False)
    assert info.missing_keys == ("masks_list.2.0.weight",) and info.skipped_keys == (
        "offsets_list.5.0.weight",
    )
    assert torch.equal(
        fresh.state_dict()["masks_list.1.0.weight"], source.state_dict()["masks_list.1.0.weight"]
    )


def test_head_only_checkpoint_into_full_model_needs_backbone(tmp_path: Path, source: DCPose) -> None:
    head = build_dcpose(None)
    load_checkpoint(_write_official(tmp_path / "full.pth", source), head)
    path = save_checkpoint(tmp_path / "head.pt", head, model_config={"backbone": None}, version="h1")
    assert read_checkpoint_info(path).content == "head"
    with pytest.raises(CheckpointMismatchError, match=r"missing keys.*\n.*rough_pose_estimation_net\."):
        load_checkpoint(path, build_dcpose(BACKBONE))


# ------------------------------------------------------------------------------------ not checkpoints


def test_non_checkpoint_files_give_clear_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointFormatError, match=r"notes\.txt: not a readable PyTorch checkpoint"):
        load_checkpoint(text, HRNet(width=8))

    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointFormatError, match=r"empty\.pth: not a readable PyTorch checkpoint"):
        read_checkpoint_info(empty)

    pickled = tmp_path / "numpy.pth"
    torch.save({"conv1.weight": np.zeros(3)}, pickled)
    with pytest.raises(CheckpointFormatError, match=r"numpy.*arbitrary code"):
        read_checkpoint_info(pickled)

    other = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(CheckpointFormatError, match=r"neither DCPose nor HRNet keys.*fc\.weight"):
        read_checkpoint_info(other)

    foreign = tmp_path / "foreign.pth"
    torch.save({"format": "other/9", "state_dict": {}}, foreign)
    with pytest.raises(CheckpointFormatError, match="unknown checkpoint format 'other/9'"):
        read_checkpoint_info(foreign)

    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_checkpoint_info(tmp_path / "missing.pth")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
def test_a_folder_and_a_bare_pickle_are_named_as_such(tmp_path: Path) -> None:
    """Before: a folder was "checkpoint file not found" (it is there); a plain pickle's reason was empty
    ("...weights_only=True): . Either it is not ...")."""
    with pytest.raises(IsADirectoryError, match=f"checkpoint {tmp_path} is a folder; give the checkpoint file"):
        load_checkpoint(tmp_path, HRNet(width=8))
    plain = tmp_path / "dict.pkl"
    plain.write_bytes(pickle.dumps({"conv1.weight": 1}, protocol=4))
    with pytest.raises(CheckpointFormatError, match=r"weights_only=True\): Unsupported operand \d+\. Either"):
        read_checkpoint_info(plain)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_holding_nan_or_inf_are_neither_saved_nor_loaded(tmp_path: Path, source: DCPose,
                                                                 bad: float) -> None:  # fmt: skip
    """Before: a head with a NaN weight was saved and loaded without a word; it then predicted NaN for
    every joint."""
    broken = build_dcpose(None)
    key = "modulated_deform_conv_list.0.deform_conv.weight"
    with torch.no_grad():
        broken.state_dict()[key][0, 0, 0, 0] = bad
    with pytest.raises(ckpt.CheckpointError, match=rf"1 tensor\(s\) hold NaN or infinite values, e.g. \['{key}'\]"):
        save_checkpoint(tmp_path / "head.pt", broken, model_config={}, version="v")
    assert list(tmp_path.iterdir()) == [], "nothing written, no temporary file left"

    state = {"module." + k: v.clone() for k, v in source.state_dict().items()}  # an official file, damaged
    state["module." + key].view(-1)[5] = bad
    torch.save({"state_dict": state}, tmp_path / "official.pth")
    target = build_dcpose(None)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ckpt.CheckpointError, match="are not loaded"):
        load_checkpoint(tmp_path / "official.pth", target)
    _assert_same_state(target.state_dict(), before)


def test_state_dict_kind() -> None:
    assert (
        state_dict_kind({"module.rough_pose_estimation_net.conv1.weight": 0, "masks_list.0.0.weight": 0})
        == "dcpose"
    )
    assert state_dict_kind({"diff_temporal_fuse.layers.0.conv_bn_relu1.conv.weight": 0}) == "head"
    assert state_dict_kind({"module.conv1.weight": 0, "final_layer.weight": 0, "stage2.0.x": 0}) == "hrnet"
    assert state_dict_kind({"conv1.weight": 0}) == "unknown"
    assert state_dict_kind({}) == "unknown"


# ----------------------------------------------------------------------------------------- atomicity


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = HRNet(width=4, num_joints=3)
    target = save_checkpoint(tmp_path / "model.pt", small, model_config={"width": 4}, version="v1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    before = target.read_bytes()

    def broken_save(obj: object, handle: object) -> None:
        handle.write(b"partial bytes")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(
            target, _randomise(HRNet(width=4, num_joints=3), seed=9), model_config={"width": 4}, version="v2"
        )
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    monkeypatch.undo()
    assert read_checkpoint_info(target).version == "v1"
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_saved_checkpoint_gets_the_mode_open_would_give(tmp_path: Path) -> None:
    """Before: `python -m model train --out head.pt` left a 0o600 file whatever the umask (mkstemp's mode), so
    the head could not be shared; a replaced one keeps the mode it had."""
    small = HRNet(width=4, num_joints=3)
    old = os.umask(0o027)
    try:
        target = save_checkpoint(tmp_path / "head.pt", small, model_config={"width": 4}, version="v1")
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
        target.chmod(0o644)
        save_checkpoint(target, small, model_config={"width": 4}, version="v2")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert read_checkpoint_info(target).version == "v2"
