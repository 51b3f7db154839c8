"""The training curve of a head: loss per epoch (and held-out loss) as a PNG beside its checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from model.training.loop import TrainResult

__all__ = ["curve_path", "save_training_curve"]


def save_training_curve(result: TrainResult, path: str | os.PathLike[str], *, title: str = "DCPose head") -> Path:
    """Write the training (and held-out) loss per epoch of `result` as a PNG (matplotlib Agg backend)."""
    path = Path(path)
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    epochs = np.arange(1, len(result.epoch_losses) + 1)
    ax.plot(epochs, result.epoch_losses, marker="o", label="training loss")
    if result.holdout_losses:
        ax.plot(epochs, result.holdout_losses, marker="s", label="held-out loss")
    if result.best_epoch >= 0:
        ax.axvline(result.best_epoch + 1, color="grey", linestyle=":", label="best epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weighted heatmap MSE")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def curve_path(checkpoint: str | os.PathLike[str]) -> Path:
    """Where the training curve of a checkpoint goes: next to it, ``<stem>_curve.png``."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}_curve.png")
