"""Options of a fine-tuning run: `FinetuneConfig`, from defaults, MODEL_DIR/train_config.json and the job."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from backend.settings import DEVICE_PATTERN

CONFIG_FILE = "train_config.json"
# Bounds no real run comes near: a typo such as 100000000 epochs is refused at the request instead of
# queueing a run that holds the project's training until someone cancels it.
INTEGER_RANGES = {"epochs": (1, 10_000), "batch_size": (1, 1024), "distance": (1, 100),
                  "seed": (0, 2**32 - 1)}  # fmt: skip
MAX_LR = 1.0


@dataclass(frozen=True)
class FinetuneConfig:
    """Options of one fine-tuning run (integers within INTEGER_RANGES).

    Attributes:
        epochs: passes over the training samples (at most 10,000).
        batch_size: samples per optimiser step (at most 1024).
        lr: Adam learning rate (head parameters only; at most MAX_LR).
        holdout_fraction: share of videos (or of the frame range of a single video) held out for the gate.
        seed: seeds the split, the sample order and the augmentation (0 to 2**32-1, numpy's range).
        distance: neighbour frame distance (1 as released; at most 100).
        augment: flip / scale / rotation augmentation.
        amp: bfloat16 autocast for the head (2-3x faster on CPUs with AVX512-BF16 and recent GPUs).
        device: "cpu", "cuda", "cuda:N" or "auto"; None: the service's DEVICE.
    """

    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-4
    holdout_fraction: float = 0.2
    seed: int = 0
    distance: int = 1
    augment: bool = True
    amp: bool = False
    device: str | None = None

    def __post_init__(self) -> None:
        for name, (low, high) in INTEGER_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"train config '{name}' must be an integer from {low} to {high}, "
                                 f"got {value!r}")  # fmt: skip
        lr, number = self.lr, isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool)
        if not (number and math.isfinite(lr) and 0 < lr <= MAX_LR):
            raise ValueError(f"train config 'lr' must be a number above 0 and at most {MAX_LR:g}, got {lr!r}")
        if not (isinstance(self.holdout_fraction, (int, float)) and 0 < self.holdout_fraction < 1):
            raise ValueError(f"train config 'holdout_fraction' must be in (0, 1), got {self.holdout_fraction!r}")
        for name in ("augment", "amp"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"train config '{name}' must be true or false, got {getattr(self, name)!r}")
        # Checked here so that a typo ("tpu", "gpu") gets its 400 instead of a job failing in torch.
        device = self.device
        if device is not None and not (isinstance(device, str) and DEVICE_PATTERN.fullmatch(device)):
            raise ValueError(f"train config 'device' must be cpu, cuda, cuda:N or auto, got {device!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, base: FinetuneConfig | None = None,
                     source: str = "train config") -> FinetuneConfig:  # fmt: skip
        """`base` (default: defaults) with the keys of `values` replaced.

        Raises:
            ValueError: an unknown key or a bad value (names the key and `source`).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; known: {sorted(known)}")
        try:
            return replace(base or cls(), **dict(values))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from None


def load_config(model_dir: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> FinetuneConfig:
    """Defaults, then MODEL_DIR/train_config.json (if present), then `overrides`.

    Raises:
        ValueError: the file is not a JSON object, or a key or value is bad (names it).
    """
    config = FinetuneConfig()
    path = Path(model_dir) / CONFIG_FILE
    if path.is_file():
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not readable JSON: {exc}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a JSON object of training options")
        config = FinetuneConfig.from_mapping(values, base=config, source=str(path))
    if overrides:
        config = FinetuneConfig.from_mapping(overrides, base=config, source="job config")
    return config
