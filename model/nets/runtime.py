"""How a network runs on its device: precision (autocast), memory format and denormals, in one place.

- **Precision**: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` autocast for inference. Weights stay
  float32; convolutions and matmuls run in the lower precision, and the outputs are cast back to
  float32 by the callers. DCNv2 under autocast: torchvision's CUDA op runs it in float32 (see
  `model.nets.blocks.deform_conv2d`), the pure CPU path in bfloat16. ``fp16`` needs CUDA.
- **Memory format**: on CUDA, weights and activations in ``channels_last`` (NHWC), the layout of
  cuDNN's tensor-core convolutions. Crops from `model.transforms.to_input_tensor` are NHWC
  already (a permuted HWC image).
- **Denormals**: an untrained DCPose head (released N(0, 0.001) initialisation) computes values
  down to ~1e-30, where x86 arithmetic on subnormal floats is many times slower;
  `flush_denormals` makes the CPU treat them as zero (``torch.set_flush_denormal``), which changes
  no value above 1.2e-38.

torch is imported inside the functions so that `model.pipeline.config` can name the precisions
without importing torch.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["PRECISIONS", "Precision", "autocast", "check_precision", "flush_denormals", "native_bf16", "place_module"]

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def check_precision(precision: str, device: torch.device | str) -> Precision:
    """Validates a precision name for a device; returns it typed.

    Raises:
        ValueError: an unknown name, or fp16 on a device other than CUDA.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and str(device).split(":")[0] != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU")
    return precision  # type: ignore[return-value]


def native_bf16(device: torch.device | str) -> bool:
    """Whether the device computes bfloat16 natively: a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 or AMX. Elsewhere bfloat16 autocast is emulated and several times slower than float32
    (measured on an AVX2-only CPU: one tiny training test of 1 epoch took over 6 minutes with it)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type == "cpu":
        cpu = torch.cpu
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    return False


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: Precision) -> Iterator[None]:
    """Autocast to the precision's dtype on the device's type; a no-op for fp32."""
    import torch

    if precision == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield


def place_module(module: nn.Module, device: torch.device | str) -> nn.Module:
    """Moves a network to its device for inference: eval mode, and channels_last on CUDA."""
    import torch

    dev = torch.device(device)
    module = module.to(dev).eval()
    if dev.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    return module


def flush_denormals() -> bool:
    """Flush subnormal floats to zero on this CPU (process-wide); returns whether it is supported."""
    import torch

    supported = torch.set_flush_denormal(True)
    if not supported:
        logger.debug("this CPU cannot flush denormals (no SSE3)")
    return supported
