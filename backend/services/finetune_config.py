"""Options of a fine-tuning run: `FinetuneConfig`, from defaults, MODEL_DIR/train_config.json and the job."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

CONFIG_FILE = "train_config.json"


@dataclass(frozen=True)
class FinetuneConfig:
    """Options of one fine-tuning run.

    Attributes:
        epochs: passes over the training samples.
        batch_size: samples per optimiser step.
        lr: Adam learning rate (head parameters only).
        holdout_fraction: share of videos (or of the frame range of a single video) held out for the gate.
        seed: seeds the split, the sample order and the augmentation.
        distance: neighbour frame distance (1 as released).
        augment: flip / scale / rotation augmentation.
        amp: bfloat16 autocast for the head (2-3x faster on CPUs with AVX512-BF16 and recent GPUs).
        device: "cpu", "cuda", "cuda:N"; None: the service's DEVICE.
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
        for name in ("epochs", "batch_size", "distance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"train config '{name}' must be an integer >= 1, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"train config 'lr' must be a positive number, got {self.lr!r}")
        if not (isinstance(self.holdout_fraction, (int, float)) and 0 < self.holdout_fraction < 1):
            raise ValueError(f"train config 'holdout_fraction' must be in (0, 1), got {self.holdout_fraction!r}")

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
