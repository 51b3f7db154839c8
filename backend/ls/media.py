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
they arrive. The time cap covers the whole exchange, headers included (`Deadline`): a socket timeout
bounds one read only, so a server sending its headers a byte at a time could hold a download for hours.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import requests
import requests.adapters
import urllib3
import urllib3.connection

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
        try:
            resolved = path.resolve()
        except RuntimeError:  # a link loop (Python 3.11); refused like any other path, saying nothing of it
            raise MediaRefusedError(REFUSED) from None
        if not any(resolved.is_relative_to(root.resolve()) for root in self.roots):
            raise MediaRefusedError(REFUSED)
        return resolved

    def read_local(self, path: str) -> bytes:
        """A regular file's bytes (from `classify`), within MAX_IMAGE_MB.

        Raises:
            OSError: unreadable. MediaRefusedError: not a regular file, or larger than the cap.
        """
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a named pipe opens at once, not when a writer comes
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # reading a pipe would hold the request for ever
            os.close(fd)
            raise MediaRefusedError("not a regular file (a folder, pipe, socket or device)")
        with open(fd, "rb") as handle:
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
        with Deadline(self.timeout_s) as deadline, deadline_session() as session:
            try:
                with session.get(url, timeout=self.timeout_s, allow_redirects=False, stream=True) as resp:
                    if resp.is_redirect or 300 <= resp.status_code < 400:
                        raise MediaRefusedError("redirects are not followed for task images")
                    if resp.status_code >= 400:
                        raise MediaRefusedError(f"HTTP {resp.status_code}")
                    data = self.capped(_arriving(resp), deadline.at)
            except (requests.RequestException, MediaRefusedError):
                if deadline.expired:  # the cut connection surfaced as an error of its own
                    raise MediaRefusedError(self.too_slow) from None
                raise
            if deadline.expired:  # cut where a body without a length may end: what came is not all of it
                raise MediaRefusedError(self.too_slow)
            return data

    @property
    def too_slow(self) -> str:
        """The reason of a download cut at its deadline."""
        return f"download took longer than {self.timeout_s:g} s"

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
                raise MediaRefusedError(self.too_slow)
        return bytes(out)


_ACTIVE = threading.local()  # the deadlines running in this thread (`Deadline.__enter__`), innermost last


class Deadline:
    """Cuts the connections opened for task images in this thread once `seconds` have passed.

    requests' timeout bounds each socket read, not a download: a server that sends its status line
    and then a header byte every few seconds held a /predict (and its thread) for hours. Sockets of
    `deadline_session()` sessions register here when their response is awaited, and a timer shuts them
    down at the deadline; the blocked read then fails (or ends) and `expired` says why. Use as a context
    manager around the whole download (redirects and retries included), in the thread that makes it.

    Attributes:
        at: the deadline, in `time.monotonic()` seconds.
        expired: whether the deadline passed and the connections were cut.
    """

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        _ACTIVE.deadlines = [*getattr(_ACTIVE, "deadlines", []), self]
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _ACTIVE.deadlines = [d for d in getattr(_ACTIVE, "deadlines", []) if d is not self]

    def watch(self, sock: socket.socket | None) -> None:
        """Cuts `sock` at the deadline (at once when it has passed)."""
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _cut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _cut(sock)


def _cut(sock: socket.socket) -> None:
    """Shuts a socket down both ways: a read blocked on it returns at once (the owner still closes it)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # closed already
        pass


def _watched(sock: socket.socket | None) -> None:
    for deadline in getattr(_ACTIVE, "deadlines", ()):
        deadline.watch(sock)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def getresponse(self, *args: object, **kwargs: object) -> urllib3.response.HTTPResponse:  # type: ignore[override]
        _watched(self.sock)  # sent: the socket exists; the headers are read next
        return super().getresponse(*args, **kwargs)  # type: ignore[arg-type]


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def getresponse(self, *args: object, **kwargs: object) -> urllib3.response.HTTPResponse:  # type: ignore[override]
        _watched(self.sock)
        return super().getresponse(*args, **kwargs)  # type: ignore[arg-type]


class _WatchedPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedTLSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedPool, "https": _WatchedTLSPool}


class _DeadlineAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose connections (direct or through a proxy) obey the thread's `Deadline`s."""

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: object) -> urllib3.PoolManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        return manager


def deadline_session() -> requests.Session:
    """A requests session whose downloads a `Deadline` can cut (task images: listed hosts, Label Studio)."""
    session = requests.Session()
    session.mount("http://", _DeadlineAdapter())
    session.mount("https://", _DeadlineAdapter())
    return session


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
