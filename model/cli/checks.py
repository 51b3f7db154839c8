"""Checks the model's command lines make before the slow part runs: the device and the output paths.

A command that writes a file (a prediction JSON, an overlay video, a checkpoint) refuses a path that is
one of its inputs (it would overwrite the data it reads), a folder, or a place it cannot create files
in, and a device that is not there, before it predicts or trains anything: otherwise the failure would
come only once the work is done, or as a traceback from deep inside torch.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from annotation_io.video import IMAGE_SUFFIXES
from model.device import DeviceUnavailableError, check_device_present

__all__ = ["CheckError", "check_device", "check_frames_not_outputs", "check_outputs"]

_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


class CheckError(ValueError):
    """A device or output path cannot be used; the message names it and what to do."""


def check_device(device: str) -> None:
    """`device` is cpu, or a CUDA device that is there (`model.device.check_device_present`).

    Raises:
        CheckError: another spelling ("gpu"), CUDA asked for without CUDA, or an index beyond the devices.
    """
    if _DEVICE.fullmatch(device) is None:
        raise CheckError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    try:
        check_device_present(device)
    except DeviceUnavailableError as exc:
        if not exc.available:
            raise CheckError(
                f"--device {device} asked for, but CUDA is not available here; use --device cpu"
            ) from None
        raise CheckError(f"--device {device}: only {exc.available} CUDA device(s) here") from None


def check_outputs(inputs: Sequence[str | Path | None], outputs: Sequence[str | Path | None]) -> None:
    """Refuse to overwrite an input; create the output folders and check that they take files.

    Args:
        inputs: the files the command reads (None entries are skipped).
        outputs: the files it will write (None entries are skipped).

    Raises:
        CheckError: the first output at fault.
    """
    sources = {_resolved(Path(p)) for p in inputs if p is not None}
    taken: set[Path] = set()
    for out in (Path(p) for p in outputs if p is not None):
        resolved = _resolved(out)
        if resolved in sources:
            raise CheckError(f"{out} is an input of this run; write the output elsewhere")
        if resolved in taken:
            raise CheckError(f"{out} is given for two outputs of this run; give each its own file")
        taken.add(resolved)
        if out.is_dir():
            raise CheckError(f"{out} is a folder; give a file name")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".probe"):
                pass
        except OSError as exc:
            raise CheckError(
                f"{out}: cannot write into {out.parent} ({exc.strerror or exc}); write it elsewhere"
            ) from None


def check_frames_not_outputs(frames: Iterable[Path], outputs: Sequence[str | Path | None]) -> None:
    """Refuse an output that is one of the frame images the run reads (a folder's frames, the images a
    PoseTrack file lists), or an image beside them: `check_outputs` knows the folder, not the files in it.
    `--out FOLDER/000000.jpg` replaced that frame with the prediction JSON, and `train`'s curve
    (`<out>_curve.png`) written among the frames was a frame of another size to every later run. Entries are
    compared, not link targets: a written output replaces the entry (`atomic_open`).

    Raises:
        CheckError: the first output at fault.
    """
    wanted = {_entry(Path(p)): p for p in outputs if p is not None}
    names = {entry.name for entry in wanted}
    folders: set[Path] = set()
    for frame in frames:  # a frame's folder is resolved only when its name is an output's or it is a new one
        if frame.name in names and (out := wanted.get(_entry(frame))) is not None:
            raise CheckError(f"{out} is a frame image this run reads; write the output elsewhere")
        folders.add(frame.parent)
    resolved = {_resolved(folder) for folder in folders}
    for entry, out in wanted.items():
        if entry.parent in resolved and entry.suffix.lower() in IMAGE_SUFFIXES:
            raise CheckError(f"{out}: an image written among the frames of {entry.parent} would be read as one of"
                             " them; write it elsewhere")  # fmt: skip


def _entry(path: Path) -> Path:
    """`path`'s folder with its links followed, joined to its name (the folder entry a write replaces)."""
    return _resolved(path.parent) / path.name


def _resolved(path: Path) -> Path:
    """`path` with its links followed.

    Raises:
        CheckError: a link that leads back to itself (Python 3.11's resolve() raises RuntimeError on it).
    """
    try:
        return path.resolve()
    except RuntimeError:
        raise CheckError(
            f"{path}: a symbolic link that loops (it leads back to itself); give the file it should name"
        ) from None
