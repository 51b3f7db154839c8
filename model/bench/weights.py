"""Random weights with trained-like activation scales for the benchmarks (no weights ship with the project)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["variance_preserving_init"]


def variance_preserving_init(module: nn.Module, seed: int = 0) -> None:
    """Conv weights ~ N(0, 1/fan_in), BN at identity: activations stay O(1) like with trained weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            if param.dim() == 4:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=gen) / fan_in**0.5)
