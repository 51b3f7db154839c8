"""Loads an Ultralytics YOLO11-pose ``.pt`` file into our `model.nets.yolo_pose.YoloPoseNet`, without ultralytics.

The file is a pickled ``ultralytics.nn.tasks.PoseModel`` (the whole module, not a state dict), and a
pickle is code: unpickling may call any importable callable it names. `_SafeUnpickler` therefore
resolves only an allowlist: the torch pieces a module pickle needs (tensor rebuilders, ``torch.Size``,
the nn layers these networks use), ``collections.OrderedDict`` and ``set``; every ``ultralytics.*``
class becomes an inert stub (an empty ``nn.Module`` subclass: its attributes and submodules are
restored, none of its code exists), and ``getattr`` is honoured only on those stubs (the pickle reaches
``Detect.forward`` that way) and returns None. Anything else raises `UnsafeCheckpointError` naming the
file and the global.

From the unpickled module we take the ``ema`` entry (else ``model``), its state dict (stored as float16:
converted to float32) and the architecture: the ``yaml`` dict (layer lists, scales) plus the head's
attributes (classes, kpt_shape, reg_max, strides) as the stub kept them. The weights must be unfused
(Conv modules with BatchNorm). Our network is built from that and loaded strictly.
"""

from __future__ import annotations

import logging
import os
import pickle
import types
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model.checkpoint import CheckpointError, CheckpointMismatchError
from model.nets.yolo_pose import YoloPoseNet, YoloSpec

logger = logging.getLogger(__name__)

__all__ = ["UnsafeCheckpointError", "load_yolo_pose", "net_from_state", "read_yolo_checkpoint"]

# (module, name) pairs a module pickle of YOLO11-pose needs; nothing else outside ultralytics is resolved.
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("__builtin__", "set"),
        ("torch", "Size"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch.nn.modules.activation", "SiLU"),
        ("torch.nn.modules.batchnorm", "BatchNorm2d"),
        ("torch.nn.modules.container", "ModuleList"),
        ("torch.nn.modules.container", "Sequential"),
        ("torch.nn.modules.conv", "Conv2d"),
        ("torch.nn.modules.linear", "Identity"),
        ("torch.nn.modules.pooling", "MaxPool2d"),
        ("torch.nn.modules.upsampling", "Upsample"),
    }
)
_GETATTR = {("builtins", "getattr"), ("__builtin__", "getattr")}
_STUB_PACKAGE = "ultralytics"


class UnsafeCheckpointError(CheckpointError):
    """The pickle names a global outside the allowlist (it could run code when loaded)."""


class _Stub(nn.Module):
    """Stands in for an ultralytics class: restores attributes and submodules, has no behaviour."""


def _stub_getattr(obj: Any, name: str) -> None:
    """``getattr`` as the pickle may use it: only on stub classes (e.g. ``Detect.forward``), giving None."""
    if isinstance(obj, type) and issubclass(obj, _Stub) and isinstance(name, str):
        return None
    raise pickle.UnpicklingError(f"getattr on {obj!r} is not allowed")


def _pickle_module(source: str) -> types.ModuleType:
    """A pickle-like module for `torch.load` whose Unpickler resolves only the allowlist."""
    stubs: dict[tuple[str, str], type] = {}

    class _SafeUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module == _STUB_PACKAGE or module.startswith(_STUB_PACKAGE + "."):
                return stubs.setdefault((module, name), type(name, (_Stub,), {"__module__": module}))
            if (module, name) in _GETATTR:
                return _stub_getattr
            if (module, name) in _ALLOWED:
                return super().find_class(module, name)
            raise UnsafeCheckpointError(
                f"{source}: refuses to unpickle {module}.{name}: not a class a YOLO pose checkpoint needs "
                "(a pickle can run code; only torch tensors/layers and ultralytics classes, as inert stubs, "
                "are resolved)"
            )

    module = types.ModuleType("yolo_safe_pickle")
    module.Unpickler = _SafeUnpickler  # type: ignore[attr-defined]
    module.load = pickle.load  # type: ignore[attr-defined]
    return module


def _head_settings(net: nn.Module, yaml: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Classes, kpt_shape, reg_max and strides from the head stub (the yaml's nc is the pre-training one)."""
    head = list(net.model)[-1] if hasattr(net, "model") else None
    if head is None or type(head).__name__ != "Pose":
        raise CheckpointError(f"{source}: the last layer is not a YOLO Pose head")
    strides = getattr(head, "stride", None)
    if strides is None:
        raise CheckpointError(f"{source}: the Pose head has no strides")
    return {
        "num_classes": int(getattr(head, "nc", yaml.get("nc", 1))),
        "kpt_shape": tuple(int(v) for v in getattr(head, "kpt_shape", yaml.get("kpt_shape", (17, 3)))),
        "reg_max": int(getattr(head, "reg_max", 16)),
        "strides": tuple(float(s) for s in torch.as_tensor(strides).tolist()),
    }


def _spec(net: nn.Module, source: str) -> YoloSpec:
    yaml = getattr(net, "yaml", None)
    if not isinstance(yaml, Mapping) or "backbone" not in yaml or "head" not in yaml:
        raise CheckpointError(f"{source}: the model has no architecture (a 'yaml' dict with backbone/head)")
    scale = yaml.get("scale") or "n"
    try:
        depth, width, max_channels = yaml["scales"][scale]
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{source}: the yaml has no scale {scale!r} in 'scales'") from None
    layers = tuple(
        (row[0], int(row[1]), str(row[2]), tuple(row[3])) for row in [*yaml["backbone"], *yaml["head"]]
    )
    return YoloSpec(
        layers, float(depth), float(width), int(max_channels), **_head_settings(net, yaml, source)
    )


def read_yolo_checkpoint(path: str | os.PathLike[str]) -> tuple[YoloSpec, dict[str, Tensor]]:
    """(architecture, float32 state dict) of an Ultralytics pose ``.pt`` file.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle names a global outside the allowlist.
        CheckpointError: the file holds no YOLO pose model, or a fused one (no BatchNorm).
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"YOLO pose weights not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", pickle_module=_pickle_module(source), weights_only=False)
    except UnsafeCheckpointError:
        raise
    except Exception as exc:  # a corrupt pickle raises anything (OverflowError, ValueError, KeyError, ...)
        raise CheckpointError(f"{source}: cannot be read as a YOLO checkpoint: {type(exc).__name__}: {exc}") from exc
    net = (raw.get("ema") or raw.get("model")) if isinstance(raw, dict) else None
    if not isinstance(net, _Stub):
        raise CheckpointError(f"{source}: holds no ultralytics model under 'ema' or 'model'")
    state = OrderedDict((k, v.float() if v.is_floating_point() else v) for k, v in net.state_dict().items())
    if not any(k.endswith(".bn.weight") for k in state):
        raise CheckpointError(f"{source}: the model is fused (no BatchNorm); use the unfused .pt as released")
    return _spec(net, source), state


def load_yolo_pose(path: str | os.PathLike[str]) -> YoloPoseNet:
    """Our YOLO11-pose network with the file's weights, float32, in eval mode.

    Raises:
        FileNotFoundError, UnsafeCheckpointError, CheckpointError: see `read_yolo_checkpoint`.
        model.checkpoint.CheckpointMismatchError: see `net_from_state`.
    """
    spec, state = read_yolo_checkpoint(path)
    net = net_from_state(spec, state, str(path))
    logger.info("YOLO pose network loaded from %s (%d tensors)", path, len(state))
    return net


def net_from_state(spec: YoloSpec, state: Mapping[str, Tensor], source: str) -> YoloPoseNet:
    """The network of `spec` with `state` loaded strictly, in eval mode.

    Raises:
        model.checkpoint.CheckpointMismatchError: the weights do not fit the graph the spec describes
            (names `source` and the missing, unexpected and mis-shaped keys).
    """
    net = YoloPoseNet(spec)
    want = net.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [
        (k, tuple(state[k].shape), tuple(want[k].shape))
        for k in want
        if k in state and state[k].shape != want[k].shape
    ]
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(source, "yolo_pose", missing, unexpected, shapes, "YoloPoseNet")
    net.load_state_dict(state, strict=True)
    return net.eval()
