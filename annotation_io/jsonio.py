"""Strict JSON reading and writing for annotation files: typed field access with error locations.

`FieldReader` reads fields from parsed JSON and raises AnnotationFormatError naming the file, the
entry and the field (e.g. ``x.json: annotations[3].keypoints: expected 51 numbers, got 48``);
`write_json` writes plain, stable JSON (no numpy types, NaN rejected); `atomic_open` replaces a file
all or nothing; `finite_json` makes a value JSON-ready (NaN/inf -> null).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from annotation_io.errors import AnnotationFormatError

JsonInput = str | os.PathLike[str] | dict[str, Any]


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "array", str: "string", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class FieldReader:
    """Shared: typed access to parsed JSON that raises AnnotationFormatError naming file and field."""

    source: str

    def error(self, message: str, where: str | None) -> AnnotationFormatError:
        return AnnotationFormatError(message, source=self.source, where=where or None)

    def dict_(self, value: Any, where: str | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(f"expected an object, got {_json_type(value)}", where)
        return value

    def list_(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.error(f"expected an array, got {_json_type(value)}", where)
        return value

    def req(self, obj: dict[str, Any], key: str, where: str | None) -> Any:
        if key not in obj:
            raise self.error(f"missing required field {key!r}", where)
        return obj[key]

    def int_(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"expected an integer, got {_json_type(value)} {value!r}", where)
        return value

    def num(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"expected a number, got {_json_type(value)} {value!r}", where)
        try:
            number = float(value)  # an integer of 309+ digits overflows a double
        except OverflowError:
            raise self.error(
                f"number too large: an integer of {len(str(abs(value)))} digits", where
            ) from None
        if not math.isfinite(number):
            raise self.error(f"expected a finite number, got {value!r}", where)
        return number

    def str_(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.error(f"expected a string, got {_json_type(value)} {value!r}", where)
        return value

    def nums(self, value: Any, where: str, count: int | None = None) -> list[float]:
        values = self.list_(value, where)
        if count is not None and len(values) != count:
            raise self.error(f"expected {count} numbers, got {len(values)}", where)
        return [self.num(v, f"{where}[{i}]") for i, v in enumerate(values)]


def read_json(path_or_dict: JsonInput, source: str | None = None) -> tuple[Any, str]:
    """Shared: the parsed JSON and the name errors use (`source`, else the path, else "<dict>")."""
    if isinstance(path_or_dict, dict):
        return path_or_dict, source or "<dict>"
    name = source or str(path_or_dict)
    try:
        with open(path_or_dict, encoding="utf-8") as f:
            return json.load(f), name
    except json.JSONDecodeError as exc:
        raise AnnotationFormatError(
            f"invalid JSON: {exc.msg}", source=name, where=f"line {exc.lineno} column {exc.colno}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise AnnotationFormatError(f"not UTF-8 text: {exc.reason}", source=name) from exc
    except RecursionError:  # "[[[[...": the decoder recurses once per level
        raise AnnotationFormatError(
            "invalid JSON: arrays or objects nested too deeply", source=name
        ) from None
    except ValueError as exc:  # an integer of more than 4300 digits (sys.get_int_max_str_digits)
        raise AnnotationFormatError(f"invalid JSON: {str(exc).split(';')[0]}", source=name) from None


def write_json(data: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Shared: write `data` as strict JSON (no NaN), one line, key order as built; atomically
    (`atomic_open`), so a run killed while writing leaves the previous file whole, never a torn one."""
    text = json.dumps(data, allow_nan=False)
    with atomic_open(path) as fh:
        fh.write(text + "\n")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", *, durable: bool = True,
                private: bool = False) -> Iterator[IO[Any]]:  # fmt: skip
    """Opens a temporary file beside `path` for writing; on success it replaces `path` in one step.

    Readers see the old file or the whole new one, never a torn one; on an exception the temporary
    file is removed. With `durable` (the default) the data is fsynced before the rename and the
    folder after it, so a crash or kill cannot lose it either; caches that can be recomputed pass
    ``durable=False``. `mode` is "w" (text, UTF-8) or "wb".

    The file gets the permissions a plain ``open(path, "w")`` gives it: an existing file's are kept, a new
    one gets 0o666 less the umask (the temporary file is created 0o600, so others could not read it).
    With `private` it stays 0o600 (copies of other people's images in a cache).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if not private:
            _chmod_as_open_would(fd, tmp, path)
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not durable:
        return
    with contextlib.suppress(OSError):  # make the rename durable (POSIX); not every folder opens
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _chmod_as_open_would(fd: int, tmp: str, path: Path) -> None:
    """Give the temporary file `fd` (at `tmp`) the permissions writing `path` in place would leave: the
    existing file's (through a link, its target's), else 0o666 less the umask. mkstemp's 0o600 made every
    output private to its writer, so a team sharing a results folder could not read them."""
    try:
        permissions = stat.S_IMODE(os.stat(path).st_mode) & 0o777  # setuid/setgid: a write clears them
    except OSError:  # a new file (or a broken link, which the rename replaces)
        permissions = 0o666 & ~_current_umask()
    if hasattr(os, "fchmod"):
        os.fchmod(fd, permissions)
    else:  # Windows (Python < 3.13): only the read-only flag exists
        os.chmod(tmp, permissions)


def _current_umask() -> int:
    """The process's umask, read without changing it where /proc tells it (Linux 4.7+); else by
    setting and restoring it, which is process-wide: a file another thread creates in between gets 0o077."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split(":", 1)[1].strip(), 8)
    old = os.umask(0o077)
    os.umask(old)
    return old


def json_number(value: Any) -> int | float:
    """Shared: a plain int (integral values) or float; raises ValueError for NaN/inf."""
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"cannot write the non-finite number {x} to JSON")
    return int(x) if x.is_integer() and abs(x) < 2**53 else x


def plain(value: Any) -> Any:
    """Shared: a copy of a passed-through `extra` value with numpy types made plain Python."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def finite_json(value: Any, where: str = "value") -> Any:
    """Shared: a JSON-ready copy of `value`: NaN/inf -> None, numpy -> plain, tuples -> lists, keys -> str.

    JSON has no NaN, and PostgreSQL's json type refuses it; every writer of floats that may be
    non-finite (stored persons, metrics, job results) goes through here.

    Raises:
        TypeError: a value JSON cannot hold (names where it is).
    """
    if isinstance(value, np.ndarray):
        return finite_json(value.tolist(), where)
    if isinstance(value, np.generic):
        return finite_json(value.item(), where)
    if isinstance(value, dict):
        return {str(k): finite_json(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    raise TypeError(f"{where}: {type(value).__name__} cannot be stored as JSON")


def add_extra(out: dict[str, Any], extra: dict[str, Any], skip: Iterable[str] = ()) -> dict[str, Any]:
    """Shared: copy `extra` fields into `out`, except ones already set, private, LS or in `skip`."""
    skip = set(skip)
    for key, value in extra.items():
        if key in out or key in skip or key.startswith(("_", "ls_")):
            continue
        out[key] = plain(value)
    return out
