"""Whether a device named by the user is there: the one check the service's DEVICE and the command lines' --device share.

A CUDA device that is not there fails every prediction and training run later, as a traceback from deep
inside torch; callers check it at start-up (`backend.context.build_context`) or before the model loads
(`model.cli.checks.check_device`) and word the refusal for their own setting or option. The spelling
(``cpu``, ``auto``, ``cuda``, ``cuda:N``) is each caller's to validate: the service takes ``auto``, the
command lines do not. torch is imported only for a CUDA device.
"""

from __future__ import annotations

import re

__all__ = ["DeviceUnavailableError", "check_device_present"]

_CUDA = re.compile(r"cuda(?::(\d+))?")


class DeviceUnavailableError(ValueError):
    """A CUDA device that is not here.

    Attributes:
        device: the device asked for (``cuda`` or ``cuda:N``).
        available: how many CUDA devices torch sees here (0: CUDA is not available).
    """

    def __init__(self, device: str, available: int) -> None:
        here = f"there are {available} CUDA device(s) here" if available else "CUDA is not available here"
        super().__init__(f"{device}: {here}")
        self.device = device
        self.available = available


def check_device_present(device: str) -> None:
    """`device` is there: ``cpu`` and ``auto`` always are; ``cuda`` and ``cuda:N`` need that CUDA device.

    Raises:
        DeviceUnavailableError: CUDA asked for without CUDA, or an index beyond the devices.
        ValueError: a spelling that starts with ``cuda`` but is not ``cuda`` or ``cuda:N``.
    """
    if not device.startswith("cuda"):
        return
    match = _CUDA.fullmatch(device)
    if match is None:
        raise ValueError(f"{device!r} is not a device: expected cuda or cuda:N")
    import torch  # lazy: only for a CUDA device

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if int(match.group(1) or 0) >= available:
        raise DeviceUnavailableError(device, available)
