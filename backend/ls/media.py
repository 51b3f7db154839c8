"""Which task image URLs the service may read: Label Studio's media, listed hosts and local roots, nothing else.

A task's `data.image` comes from whoever can write tasks or call /predict, so it is not trusted:
- Label Studio's own media: `/data/local-files/?d=...` and `/data/upload/...` (joined to
  LABEL_STUDIO_URL) and absolute URLs on LABEL_STUDIO_URL's host; fetched with the token;
- http(s) URLs on a host listed in MEDIA_HOSTS (no token);
- local files (a path or file://) under a folder listed in MEDIA_ROOTS (resolved, so `..` and
  symbolic links cannot leave it).
Everything else (other hosts, other schemes, other paths, other LS routes) is refused with one
message that says nothing about the target (whether a file exists, its size). Downloads from listed
hosts follow no redirects; they and Label Studio's are capped in size (MAX_IMAGE_MB) and time while
they arrive.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import requests
import urllib3

REFUSED = "not a Label Studio media URL, nor on a host in MEDIA_HOSTS or a file under MEDIA_ROOTS"
LS_MEDIA_PREFIXES = ("/data/local-files/", "/data/local-files?", "/data/upload/")
Source = Literal["local", "label_studio", "host"]


class MediaRefusedError(Exception):
    """A URL the media policy does not allow, or a download beyond its caps or broken off (the message
    reveals nothing)."""


@dataclass(frozen=True)
class MediaPolicy:
    """Where task images may come from.

    Attributes:
        hosts: MEDIA_HOSTS: "host" or "host:port" entries (lower case) fetched without the token.
        roots: MEDIA_ROOTS: local folders task images may be read from.
        max_bytes: MAX_IMAGE_MB in bytes: the largest image downloaded or read.
        max_pixels: MAX_IMAGE_MEGAPIXELS in pixels: the most an image may declare (width x height).
        timeout_s: the most one download may take, all of it.
    """

    hosts: tuple[str, ...] = ()
    roots: tuple[Path, ...] = field(default=())
    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 50_000_000
    timeout_s: float = 10.0

    def classify(self, url: str, label_studio_url: str | None) -> tuple[Source, str]:
        """(source, what to read: a resolved path or a URL) of an allowed task image URL.

        Raises:
            MediaRefusedError: anything the policy does not allow.
        """
        try:
            return self._classify(url, label_studio_url)
        except ValueError:  # an unparsable URL or port
            raise MediaRefusedError(REFUSED) from None

    def _classify(self, url: str, label_studio_url: str | None) -> tuple[Source, str]:
        parts = urlsplit(url)
        if "\x00" in url or ".." in unquote(parts.path).split("/"):
            # "/data/upload/../../api/..." passes for Label Studio media, and the HTTP client would
            # fetch the API route it normalises to, with the token
            raise MediaRefusedError(REFUSED)
        if not parts.scheme and url.startswith(LS_MEDIA_PREFIXES):
            return "label_studio", url
        if parts.scheme == "file" or (not parts.scheme and not url.startswith("/data/")):
            return "local", str(self._local(Path(url2pathname(parts.path)) if parts.scheme else Path(url)))
        if parts.scheme in ("http", "https") and parts.hostname:
            if label_studio_url and _netloc(parts) == _netloc(urlsplit(label_studio_url)):
                return "label_studio", url
            if _netloc(parts) in self.hosts or parts.hostname.lower() in self.hosts:
                return "host", url
        raise MediaRefusedError(REFUSED)

    def _local(self, path: Path) -> Path:
        if not path.is_absolute() or not self.roots:
            raise MediaRefusedError(REFUSED)
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root.resolve()) for root in self.roots):
            raise MediaRefusedError(REFUSED)
        return resolved

    def read_local(self, path: str) -> bytes:
        """A file's bytes (from `classify`), within MAX_IMAGE_MB.

        Raises:
            OSError: unreadable. MediaRefusedError: larger than the cap.
        """
        with open(path, "rb") as handle:
            data = handle.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise MediaRefusedError(f"larger than MAX_IMAGE_MB ({self.max_bytes // (1024 * 1024)} MB)")
        return data

    def fetch(self, url: str) -> bytes:
        """Downloads from a listed host: no redirects, at most `max_bytes`, within `timeout_s` in all.

        Raises:
            MediaRefusedError: a redirect, an error status, too large or too slow.
            requests.RequestException: unreachable.
        """
        deadline = time.monotonic() + self.timeout_s
        with requests.get(url, timeout=self.timeout_s, allow_redirects=False, stream=True) as resp:
            if resp.is_redirect or 300 <= resp.status_code < 400:
                raise MediaRefusedError("redirects are not followed for task images")
            if resp.status_code >= 400:
                raise MediaRefusedError(f"HTTP {resp.status_code}")
            return self.capped(_arriving(resp), deadline)

    def read(self, resp: requests.Response) -> bytes:
        """The body of a streamed response (`stream=True`) as it arrives, within `max_bytes` and `timeout_s`
        from now: Label Studio's own downloads (`LabelStudioClient.download(read=...)`).

        Raises:
            MediaRefusedError: too large, too slow, or broken off.
        """
        return self.capped(_arriving(resp), time.monotonic() + self.timeout_s)

    def capped(self, chunks: object, deadline: float) -> bytes:
        """Joins downloaded chunks, refusing more than `max_bytes` or reading past `deadline`."""
        out = bytearray()
        for chunk in chunks:  # type: ignore[attr-defined]
            out += chunk
            if len(out) > self.max_bytes:
                raise MediaRefusedError(f"larger than MAX_IMAGE_MB ({self.max_bytes // (1024 * 1024)} MB)")
            if time.monotonic() > deadline:
                raise MediaRefusedError(f"download took longer than {self.timeout_s:g} s")
        return bytes(out)


def _arriving(resp: requests.Response) -> Iterator[bytes]:
    """The body in the pieces the socket delivers: `iter_content(n)` waits for n bytes, so a server
    sending a byte every few seconds would hold it (and the deadline check between chunks) for hours."""
    try:
        while chunk := resp.raw.read1(64 * 1024, decode_content=True):
            yield chunk
    except urllib3.exceptions.HTTPError as exc:  # raw reads bypass requests' own wrapping of these
        raise MediaRefusedError(f"the download broke off ({type(exc).__name__})") from None


def _netloc(parts: object) -> str:
    host = (getattr(parts, "hostname", None) or "").lower()
    port = getattr(parts, "port", None)
    return f"{host}:{port}" if port is not None else host
