"""`model.device.check_device_present`: the one check of a named device, for the service and the command lines."""

from __future__ import annotations

import pytest
import torch

from model.cli.checks import CheckError, check_device
from model.device import DeviceUnavailableError, check_device_present

COUNT = torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.parametrize("device", ["cpu", "auto", *(f"cuda:{i}" for i in range(COUNT))])
def test_devices_that_are_here_pass(device: str) -> None:
    check_device_present(device)


def test_a_cuda_index_beyond_the_devices_says_how_many_there_are() -> None:
    with pytest.raises(DeviceUnavailableError) as caught:
        check_device_present(f"cuda:{COUNT}")
    assert (caught.value.device, caught.value.available) == (f"cuda:{COUNT}", COUNT)
    here = f"there are {COUNT} CUDA device(s) here" if COUNT else "CUDA is not available here"
    assert str(caught.value) == f"cuda:{COUNT}: {here}"


def test_without_cuda_plain_cuda_is_not_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the machine has no CUDA, whatever it has
    with pytest.raises(DeviceUnavailableError, match=r"^cuda: CUDA is not available here$"):
        check_device_present("cuda")


def test_a_misspelt_cuda_device_is_refused() -> None:
    with pytest.raises(ValueError, match="expected cuda or cuda:N"):
        check_device_present("cuda:one")


def test_the_command_lines_keep_their_own_words() -> None:
    """`python -m model predict|train|bench` word the shared check's refusal for --device, as before."""
    expected = (f"--device cuda:{COUNT}: only {COUNT} CUDA device(s) here" if COUNT else
                f"--device cuda:{COUNT} asked for, but CUDA is not available here; use --device cpu")  # fmt: skip
    with pytest.raises(CheckError) as caught:
        check_device(f"cuda:{COUNT}")
    assert str(caught.value) == expected
    with pytest.raises(CheckError, match="--device must be cpu, cuda or cuda:N, got 'auto'"):
        check_device("auto")
