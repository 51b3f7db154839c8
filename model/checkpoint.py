"""Save and load checkpoints: our own format, official DCPose checkpoints and bare HRNet state dicts.

Three kinds of file are accepted (detected from their content, never from the file name):

* ``"ours"``: ``{"format": "dcpose-ls/1", "model_config": {...}, "version": str, "state_dict": {...},
  "extra": {...}}``, written by :func:`save_checkpoint` (atomically).
* ``"official"``: a DCPose training checkpoint, ``{"state_dict", "begin_epoch", "optimizer", ...}`` with
  keys ``rough_pose_estimation_net.*`` (HRNet) plus the temporal head (the released DCPose code), possibly
  with ``module.`` prefixes from ``DataParallel``. A bare dict with those keys is accepted as well.
* ``"hrnet"``: a bare HRNet state dict (``conv1.weight`` ... ``final_layer.bias``), e.g. the HRNet pose
  weights or PoseWarper's ``pretrained_coco_model.pth``; it is loaded into the backbone.

Everything is read with ``torch.load(map_location="cpu", weights_only=True)``: no arbitrary pickle code runs.
The target model is inspected only through its ``state_dict()`` key prefixes, so any module that uses the
official DCPose names (or an :class:`~model.nets.hrnet.HRNet`) can be loaded into.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from annotation_io.jsonio import atomic_open

logger = logging.getLogger(__name__)

__all__ = [
    "BACKBONE_PREFIX",
    "FORMAT",
    "HEAD_PREFIXES",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointInfo",
    "CheckpointMismatchError",
    "CheckpointValueError",
    "load_checkpoint",
    "read_checkpoint_info",
    "save_checkpoint",
    "state_dict_kind",
    "strip_module_prefix",
]

FORMAT = "dcpose-ls/1"
BACKBONE_PREFIX = "rough_pose_estimation_net."
HEAD_PREFIXES = (
    "diff_temporal_fuse.",
    "support_temporal_fuse.",
    "offset_mask_combine_conv.",
    "offsets_list.",
    "masks_list.",
    "modulated_deform_conv_list.",
)
# Keys whose presence marks a bare HRNet state dict (stem and output layer of the official layout).
_HRNET_MARKERS = ("conv1.weight", "final_layer.weight")
# BatchNorm's step counter: absent from checkpoints written before torch 0.4.1 and unused in eval mode.
_OPTIONAL_SUFFIX = ".num_batches_tracked"
_LIST_LIMIT = 20

CheckpointKind = Literal["official", "hrnet", "ours"]
StateDictKind = Literal["dcpose", "head", "hrnet", "unknown"]


class CheckpointError(ValueError):
    """Base class of checkpoint problems."""


class CheckpointFormatError(CheckpointError):
    """The file is not a checkpoint we can read (not a torch file, unsafe pickle, unknown layout)."""


class CheckpointValueError(CheckpointError):
    """The checkpoint's weights hold NaN or infinite values (e.g. written by a training run that diverged)."""


def _non_finite_keys(state_dict: Mapping[str, Tensor]) -> list[str]:
    """Keys of the floating-point tensors holding NaN or infinity."""
    return [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _check_finite(state_dict: Mapping[str, Tensor], source: str, action: str) -> None:
    bad = _non_finite_keys(state_dict)
    if bad:
        raise CheckpointValueError(
            f"{source}: {len(bad)} tensor(s) hold NaN or infinite values, e.g. {bad[:5]}; weights like these "
            f"make every prediction NaN and are not {action} (a training run that diverged?)"
        )


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tensors do not fit the model.

    Attributes:
        kind: the detected checkpoint kind.
        missing: model keys the checkpoint lacks.
        unexpected: checkpoint keys the model lacks.
        shape_mismatches: ``(key, checkpoint shape, model shape)`` triples.
    """

    def __init__(
        self,
        source: str,
        kind: str,
        missing: list[str],
        unexpected: list[str],
        shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
        target: str,
    ) -> None:
        self.kind = kind
        self.missing = missing
        self.unexpected = unexpected
        self.shape_mismatches = shape_mismatches
        lines = [f"{source}: {kind} checkpoint does not fit the model ({target})"]
        lines += _listing("missing keys (in the model, not in the checkpoint)", missing)
        lines += _listing("unexpected keys (in the checkpoint, not in the model)", unexpected)
        lines += _listing(
            "shape mismatches (checkpoint vs model)",
            [f"{key}: {list(got)} vs {list(want)}" for key, got, want in shape_mismatches],
        )
        lines.append("Build the model with the backbone width / joint count the checkpoint was trained with.")
        super().__init__("\n".join(lines))


def _listing(title: str, items: list[str]) -> list[str]:
    if not items:
        return []
    shown = [f"    {item}" for item in items[:_LIST_LIMIT]]
    more = [f"    ... and {len(items) - _LIST_LIMIT} more"] if len(items) > _LIST_LIMIT else []
    return [f"  {len(items)} {title}:", *shown, *more]


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint file holds, besides the tensors.

    Attributes:
        kind: ``"official"`` (DCPose training file or bare DCPose state dict), ``"hrnet"`` (bare HRNet state
            dict) or ``"ours"``.
        version: our model version string; ``None`` for foreign files.
        model_config: our stored model configuration (plain types); ``None`` for foreign files.
        extra: our ``extra`` dict, or the scalar bookkeeping of an official file (e.g. ``begin_epoch``).
        content: what the tensors are: a full DCPose (``"dcpose"``), its head only (``"head"``), an HRNet.
        num_joints: heatmap channels found in the tensors, when they say.
        backbone_width: HRNet width (48 for W48) found in the tensors, when there is a backbone.
        missing_keys: with ``strict=False``, model keys left at their current values.
        skipped_keys: with ``strict=False``, checkpoint keys not loaded (unknown to the model or wrong shape).
    """

    kind: CheckpointKind
    version: str | None
    model_config: dict[str, Any] | None
    extra: dict[str, Any]
    content: StateDictKind
    num_joints: int | None = None
    backbone_width: int | None = None
    missing_keys: tuple[str, ...] = field(default=())
    skipped_keys: tuple[str, ...] = field(default=())


def strip_module_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove leading ``module.`` prefixes (``DataParallel`` / ``DistributedDataParallel`` wrappers)."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value
    return out


def state_dict_kind(state_dict: Mapping[str, Any]) -> StateDictKind:
    """Classify a state dict by its key prefixes.

    Returns:
        ``"dcpose"`` if it has ``rough_pose_estimation_net.*`` keys, ``"head"`` if it has only DCPose head
        keys, ``"hrnet"`` if it looks like a bare HRNet (``conv1.weight`` and ``final_layer.weight``),
        else ``"unknown"``. ``module.`` prefixes are ignored.
    """
    keys = strip_module_prefix(dict.fromkeys(state_dict)).keys()
    if any(k.startswith(BACKBONE_PREFIX) for k in keys):
        return "dcpose"
    if any(k.startswith(HEAD_PREFIXES) for k in keys):
        return "head"
    if all(marker in keys for marker in _HRNET_MARKERS):
        return "hrnet"
    return "unknown"


# --------------------------------------------------------------------------------------------- saving


def _check_plain(value: Any, where: str, allow_tensors: bool) -> None:
    """Reject values that ``weights_only`` loading could not read back (or that are not data)."""
    if value is None or isinstance(value, str | int | float | bool):
        return
    if allow_tensors and isinstance(value, Tensor):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]", allow_tensors)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{where}: dict keys must be str or int, got {type(key).__name__}")
            _check_plain(item, f"{where}[{key!r}]", allow_tensors)
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}; checkpoints store only plain types (dict, list, str, numbers"
        f"{', tensors' if allow_tensors else ''}). Convert it (e.g. dataclasses.asdict) before saving."
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    model_config: dict[str, Any],
    version: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights in our format, atomically.

    The file is written to a temporary file in the same directory, flushed and fsynced, then moved over
    ``path`` with ``os.replace``: readers see either the old file or the complete new one.

    Args:
        path: destination file.
        model: the module whose ``state_dict()`` is saved (tensors are copied to CPU).
        model_config: the configuration needed to rebuild the model; plain types only.
        version: model version label, e.g. ``"v3-finetune-2024-05-01"``.
        extra: optional plain-typed metadata (training steps, data counts, tensors allowed).

    Returns:
        The path written.

    Raises:
        TypeError: if ``model_config`` or ``extra`` holds non-plain values.
        ValueError: if ``version`` is empty.
        CheckpointValueError: if a weight is NaN or infinite (nothing is written).
    """
    if not isinstance(version, str) or not version.strip():
        raise ValueError(f"version must be a non-empty string, got {version!r}")
    if not isinstance(model_config, dict):
        raise TypeError(f"model_config must be a dict, got {type(model_config).__name__}")
    _check_plain(model_config, "model_config", allow_tensors=False)
    extra = {} if extra is None else extra
    _check_plain(extra, "extra", allow_tensors=True)
    path = Path(path)
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _check_finite(state_dict, str(path), "saved")
    payload = {"format": FORMAT, "model_config": model_config, "version": version, "state_dict": state_dict,
               "extra": extra}  # fmt: skip
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)
    logger.info("saved checkpoint %s (version %s, %d tensors)", path, version, len(payload["state_dict"]))
    return path


# -------------------------------------------------------------------------------------------- reading


def _torch_load(path: Path) -> Any:
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {path} is a folder; give the checkpoint file in it")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(exc))
        reason = detail.group(1).split(". Please use")[0] if detail else str(exc).splitlines()[0]
        raise CheckpointFormatError(
            f"{path}: cannot be read as a checkpoint with torch.load(weights_only=True): {reason}. "
            "Either it is not a PyTorch file, or it pickles Python objects beyond tensors, numbers, strings "
            "and containers (a whole nn.Module, numpy arrays, custom classes). Such files are refused on "
            "purpose because unpickling them can run arbitrary code; re-save the weights from a trusted "
            "environment with torch.save(model.state_dict(), path)."
        ) from exc
    # Broad on purpose: arbitrary bytes make the weights-only unpickler fail in many ways (IndexError,
    # KeyError, EOFError, RuntimeError from the zip reader ...); all mean "not a checkpoint".
    except Exception as exc:
        raise CheckpointFormatError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc).strip() or 'empty'})"
        ) from exc


def _unpack(raw: Any, source: str) -> tuple[CheckpointKind, dict[str, Tensor], dict[str, Any]]:
    """Split a loaded object into (kind, state dict without ``module.`` prefixes, metadata)."""
    if not isinstance(raw, Mapping):
        raise CheckpointFormatError(f"{source}: expected a dict of tensors, found a {type(raw).__name__}")
    if "format" in raw:
        if raw["format"] != FORMAT:
            raise CheckpointFormatError(
                f"{source}: unknown checkpoint format {raw['format']!r}, expected {FORMAT!r}"
            )
        missing = [k for k in ("model_config", "version", "state_dict") if k not in raw]
        if missing:
            raise CheckpointFormatError(f"{source}: {FORMAT} checkpoint lacks {missing}")
        meta = {
            "version": raw["version"],
            "model_config": raw["model_config"],
            "extra": dict(raw.get("extra") or {}),
        }
        return "ours", _tensor_dict(raw["state_dict"], source, "state_dict"), meta
    if "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        state_dict = strip_module_prefix(_tensor_dict(raw["state_dict"], source, "state_dict"))
        scalars = {k: v for k, v in raw.items() if isinstance(v, str | int | float | bool)}
        kind = state_dict_kind(state_dict)
        if kind == "hrnet":
            return "hrnet", state_dict, {"extra": scalars}
        if kind == "unknown":
            raise CheckpointFormatError(
                f"{source}: its 'state_dict' has neither DCPose keys ({BACKBONE_PREFIX}*, "
                f"{HEAD_PREFIXES[0]}*, ...) nor HRNet keys ({', '.join(_HRNET_MARKERS)}); first keys: "
                f"{list(state_dict)[:5]}"
            )
        return "official", state_dict, {"extra": scalars}
    if raw and all(isinstance(v, Tensor) for v in raw.values()):
        state_dict = strip_module_prefix(_tensor_dict(raw, source, "<root>"))
        kind = state_dict_kind(state_dict)
        if kind == "unknown":
            raise CheckpointFormatError(
                f"{source}: a state dict with neither DCPose nor HRNet keys; first keys: {list(state_dict)[:5]}"
            )
        return ("hrnet" if kind == "hrnet" else "official"), state_dict, {"extra": {}}
    raise CheckpointFormatError(
        f"{source}: not a checkpoint: expected our format (key 'format'), a DCPose training file (key "
        f"'state_dict') or a bare state dict of tensors; top-level keys: {list(raw)[:10]}"
    )


def _tensor_dict(obj: Any, source: str, where: str) -> dict[str, Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"{source}: {where} must be a dict of tensors, found {type(obj).__name__}"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointFormatError(f"{source}: {where} has non-tensor entries, e.g. {bad[:5]}")
    return dict(obj)


def _describe(state_dict: Mapping[str, Tensor]) -> tuple[int | None, int | None]:
    """(num_joints, backbone width) read off ``final_layer.weight`` or the DCN weight."""
    for key in (BACKBONE_PREFIX + "final_layer.weight", "final_layer.weight"):
        if key in state_dict and state_dict[key].dim() == 4:
            shape = state_dict[key].shape
            return int(shape[0]), int(shape[1])
    dcn = "modulated_deform_conv_list.0.deform_conv.weight"
    if dcn in state_dict and state_dict[dcn].dim() == 4:
        return int(state_dict[dcn].shape[0]), None
    return None, None


def _info(
    kind: CheckpointKind, state_dict: dict[str, Tensor], meta: dict[str, Any], **loaded: Any
) -> CheckpointInfo:
    num_joints, width = _describe(state_dict)
    return CheckpointInfo(
        kind=kind,
        version=meta.get("version"),
        model_config=meta.get("model_config"),
        extra=meta.get("extra", {}),
        content=state_dict_kind(state_dict),
        num_joints=num_joints,
        backbone_width=width,
        **loaded,
    )


def read_checkpoint_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Describe a checkpoint file without building a model.

    Raises:
        FileNotFoundError: if ``path`` does not exist (IsADirectoryError: it is a folder).
        CheckpointFormatError: if the file is not a checkpoint of a known kind.
    """
    path = Path(path)
    kind, state_dict, meta = _unpack(_torch_load(path), str(path))
    return _info(kind, state_dict, meta)


# -------------------------------------------------------------------------------------------- loading


def _map_to_target(
    state_dict: dict[str, Tensor], target_keys: set[str], source: str
) -> tuple[dict[str, Tensor], set[str], str]:
    """Rename checkpoint keys into the model's namespace.

    Returns:
        (renamed state dict, the model keys this checkpoint is expected to fill, target description).
    """
    content = state_dict_kind(state_dict)
    target = state_dict_kind(target_keys)
    has_backbone = any(k.startswith(BACKBONE_PREFIX) for k in target_keys)
    if target in ("dcpose", "head"):
        if content == "hrnet":
            if not has_backbone:
                reason = "the model has no backbone to load an HRNet into"
                raise CheckpointMismatchError(source, "hrnet", [], sorted(state_dict), [], reason)
            mapped = {BACKBONE_PREFIX + k: v for k, v in state_dict.items()}
            return mapped, {k for k in target_keys if k.startswith(BACKBONE_PREFIX)}, "DCPose backbone"
        if not has_backbone:
            # A head-only model takes the head part of a full DCPose checkpoint; the backbone is left out.
            mapped = {k: v for k, v in state_dict.items() if not k.startswith(BACKBONE_PREFIX)}
            return mapped, target_keys, "DCPose head without backbone"
        return state_dict, target_keys, "DCPose"
    if target == "hrnet":
        if content == "dcpose":
            mapped = {
                k[len(BACKBONE_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(BACKBONE_PREFIX)
            }
            return mapped, target_keys, "HRNet (backbone part of a DCPose checkpoint)"
        return state_dict, target_keys, "HRNet"
    return state_dict, target_keys, "model"


def load_checkpoint(path: str | os.PathLike[str], model: nn.Module, *, strict: bool = True) -> CheckpointInfo:
    """Load a checkpoint of any accepted kind into ``model`` (in place).

    Official DCPose checkpoints fill the whole DCPose model, or only its head when the model was built
    without a backbone. A bare HRNet state dict fills ``rough_pose_estimation_net.*`` of a DCPose model, or
    an :class:`~model.nets.hrnet.HRNet` directly. Our own files are matched the same way by their keys.

    Args:
        path: the checkpoint file.
        model: the module to fill; its parameters keep their device and dtype.
        strict: if true, any missing key, unexpected key or shape mismatch raises; if false, the tensors
            that fit are loaded and the rest is reported in the returned info (and logged).

    Returns:
        What was loaded.

    Raises:
        FileNotFoundError: if ``path`` does not exist (IsADirectoryError: it is a folder).
        CheckpointFormatError: if the file is not a checkpoint of a known kind.
        CheckpointMismatchError: if the tensors do not fit and ``strict`` is true.
        CheckpointValueError: if a tensor to load holds NaN or infinity (the model is left unchanged).
    """
    path = Path(path)
    source = str(path)
    kind, state_dict, meta = _unpack(_torch_load(path), source)
    own = model.state_dict()
    mapped, expected, target = _map_to_target(state_dict, set(own), source)

    missing = sorted(k for k in expected - mapped.keys() if not k.endswith(_OPTIONAL_SUFFIX))
    unexpected = sorted(mapped.keys() - own.keys())
    mismatched = [
        (k, tuple(v.shape), tuple(own[k].shape))
        for k, v in mapped.items()
        if k in own and v.shape != own[k].shape
    ]
    if strict and (missing or unexpected or mismatched):
        raise CheckpointMismatchError(source, kind, missing, unexpected, mismatched, target)
    bad = {k for k, _, _ in mismatched}
    loadable = {k: v for k, v in mapped.items() if k in own and k not in bad}
    _check_finite(loadable, source, "loaded")
    # load_state_dict copies values into the existing tensors, keeping the model's device and dtype.
    model.load_state_dict(loadable, strict=False)
    skipped = tuple(sorted(set(unexpected) | bad))
    if missing or skipped:
        counts = (len(loadable), target, len(missing), len(skipped))
        logger.warning(
            "%s: loaded %d tensors non-strictly into %s; %d keys missing, %d skipped", source, *counts
        )
    logger.info("loaded %s checkpoint %s into %s (%d tensors)", kind, source, target, len(loadable))
    return _info(kind, state_dict, meta, missing_keys=tuple(missing), skipped_keys=skipped)
