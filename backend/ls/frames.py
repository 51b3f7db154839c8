"""Task images: Label Studio access, downloads with an on-disk LRU cache, and a FrameReader over a video's tasks.

Which URLs may be read is `backend.ls.media.MediaPolicy`'s decision: LS's media
(`/data/local-files/?d=...`, `/data/upload/...`, LABEL_STUDIO_URL's host), hosts in MEDIA_HOSTS,
files under MEDIA_ROOTS; anything else is refused with one message. LS URLs are downloaded through
`backend.ls.client.LabelStudioClient.download` (auth header, token refresh; redirects followed only
to allowed places; capped in size and time while the body arrives, as downloads from MEDIA_HOSTS are, and
in time in all: headers, redirects and retries included, see `backend.ls.media.Deadline`)
and cached on disk under FRAME_CACHE_DIR, keyed by the SHA-256 of the resolved
URL, the least recently used files evicted beyond FRAME_CACHE_MB; local files are read in place.
Only bytes that decode as an image are cached, so an error page never poisons the cache.

Errors name the URL through `safe_url` (no user-info, secret-looking query values masked); the
API key only ever travels in headers.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import cv2
import numpy as np
import PIL.Image
import requests

from annotation_io.jsonio import atomic_open
from annotation_io.video import ANIMATED_FORMATS, MIN_FRAME_SIDE
from backend.ls.client import LabelStudioClient, LabelStudioError, RedirectedError
from backend.ls.media import Deadline, MediaPolicy, MediaRefusedError, Source, deadline_session

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 10.0  # per attempt; LS gives /predict 100 s in all
DOWNLOAD_RETRIES = 1
MAX_REDIRECTS = 3
MIN_IMAGE_SIDE = MIN_FRAME_SIDE  # pixels; the backbones refuse thinner frames
# Formats that may hold an animation (Pillow's name -> ours); browsers play all three, cv2 reads the first frame
# of an APNG or a WebP (and no GIF).
_ANIMATED_FORMATS = {"GIF": "GIF", **ANIMATED_FORMATS}
_SECRET_PARAMS = ("token", "key", "sig", "signature", "password", "secret", "credential", "auth", "access")


class ImageUnavailableError(Exception):
    """A task image cannot be read; `url` is safe to show (see `safe_url`)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = safe_url(url)
        self.reason = reason
        super().__init__(f"image {self.url} cannot be read: {reason}")


def safe_url(url: str) -> str:
    """`url` without user-info and with secret-looking query values (token, signature, ...) masked."""
    text = str(url)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:  # "http://[::1", "http://h:99999/": it may still hold user-info; show none of it
        return "(an unparsable URL)"
    if not parts.scheme and not parts.query:
        return text[:500]
    netloc = parts.hostname or ""
    if port is not None:
        netloc = f"{netloc}:{port}"
    query = [(k, "***" if any(s in k.lower() for s in _SECRET_PARAMS) else v)
             for k, v in parse_qsl(parts.query, keep_blank_values=True)]  # fmt: skip
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="/*")))[:500]


class LabelStudioAccess:
    """Where Label Studio is and how to authenticate: settings first, else what `/setup` told us.

    LS sends its `hostname` and the project creator's legacy token with every `/setup`; they are
    used only when LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY are not set, kept in memory only.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None) -> None:
        self._configured = (url, api_key)
        self._learned: tuple[str | None, str | None] = (None, None)
        self._clients: dict[tuple[str, str, str], LabelStudioClient] = {}
        self._lock = threading.Lock()

    def learn(self, hostname: str | None, access_token: str | None) -> None:
        """Remembers /setup's hostname and token (ignored where settings give them)."""
        if isinstance(hostname, str) and urlsplit(hostname).scheme in ("http", "https"):
            self._learned = (hostname.rstrip("/"), self._learned[1])
        if isinstance(access_token, str) and access_token.strip():
            self._learned = (self._learned[0], access_token.strip())

    @property
    def url(self) -> str | None:
        return self._configured[0] or self._learned[0]

    @property
    def api_key(self) -> str | None:
        return self._configured[1] or self._learned[1]

    def client(self, purpose: str = "api") -> LabelStudioClient | None:
        """A client (cached per URL, key and purpose); None when URL or key is unknown.

        Args:
            purpose: "frames" (short timeouts: downloads must fit LS's predict timeout) or "api".
        """
        url, key = self.url, self.api_key
        if not url or not key:
            return None
        with self._lock:
            client = self._clients.get((url, key, purpose))
            if client is None:
                options = (  # frames: downloads a `Deadline` can cut (its socket timeouts bound one read only)
                    {
                        "timeout": DOWNLOAD_TIMEOUT_S,
                        "retries": DOWNLOAD_RETRIES,
                        "session": deadline_session(),
                    }
                    if purpose == "frames"
                    else {}
                )
                client = self._clients[(url, key, purpose)] = LabelStudioClient(url, key, **options)
            return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


class FrameStore:
    """Reads task images as BGR arrays: allowed local files in place, downloads through the LRU disk cache.

    Args:
        cache_dir: FRAME_CACHE_DIR (created on first download).
        access: Label Studio location and credentials.
        policy: where images may come from (default: Label Studio's media only).
        cache_bytes: FRAME_CACHE_MB in bytes; beyond it the least recently used files go.
    """

    def __init__(self, cache_dir: str | os.PathLike[str], access: LabelStudioAccess,
                 policy: MediaPolicy | None = None, cache_bytes: int = 2 * 1024**3) -> None:  # fmt: skip
        self.cache = FrameCache(Path(cache_dir), cache_bytes)
        self.cache_dir = Path(cache_dir)
        self.access = access
        self.policy = policy or MediaPolicy()

    def cache_path(self, absolute_url: str) -> Path:
        return self.cache.path(absolute_url)

    def image(self, url: str) -> np.ndarray:
        """(H, W, 3) uint8 BGR image of a task URL or path.

        Raises:
            ImageUnavailableError: not allowed, not found, unreachable, refused, or not an image.
        """
        if not isinstance(url, str) or not url:
            raise ImageUnavailableError(str(url), "the task has no image URL")
        try:
            source, target = self.policy.classify(url, self.access.url)
        except MediaRefusedError as exc:
            raise ImageUnavailableError(url, str(exc)) from None
        if source == "local":
            try:
                return _decode(self.policy.read_local(target), url, self.policy.max_pixels)
            except OSError:
                raise ImageUnavailableError(url, "cannot read the file") from None
            except MediaRefusedError as exc:
                raise ImageUnavailableError(url, str(exc)) from None
        absolute = self._absolute(url)
        cached = self.cache.read(absolute)
        if cached is not None:
            try:
                return _decode(cached, url, self.policy.max_pixels)
            except ImageUnavailableError:
                pass
        data = self._timed_download(url, source)
        image = _decode(data, url, self.policy.max_pixels)
        self.cache.write(absolute, data)
        return image

    def _absolute(self, url: str) -> str:
        if urlsplit(url).scheme in ("http", "https"):
            return url
        base = self.access.url
        if base is None:
            raise ImageUnavailableError(url, "a Label Studio-relative URL needs LABEL_STUDIO_URL (or a /setup "
                                             "from Label Studio) to be downloaded")  # fmt: skip
        return base + url

    def _timed_download(self, url: str, source: Source) -> bytes:
        """`_download` within the policy's time cap in all: redirects, retries and headers included.

        Raises:
            ImageUnavailableError: as `_download`; "download took longer than ..." when cut at the deadline.
        """
        with Deadline(self.policy.timeout_s) as deadline:
            try:
                data = self._download(url, source)
            except ImageUnavailableError:
                if deadline.expired:  # the cut connection failed in its own words ("cannot be reached")
                    raise ImageUnavailableError(url, self.policy.too_slow) from None
                raise
        if deadline.expired:  # cut where a body without a length may end: what came is not all of it
            raise ImageUnavailableError(url, self.policy.too_slow)
        return data

    def _download(self, url: str, source: Source, hops: int = 0) -> bytes:
        try:
            if source == "host":
                return self.policy.fetch(url)
            client = self.access.client("frames")
            if client is None:
                raise ImageUnavailableError(url, "downloading from Label Studio needs LABEL_STUDIO_API_KEY")
            return client.download(url, allow_redirects=False, read=self.policy.read)
        except RedirectedError as exc:
            if hops >= MAX_REDIRECTS:  # a loop, or a chain too long to follow within LS's predict timeout
                raise ImageUnavailableError(
                    url, f"more than {MAX_REDIRECTS} redirects (a redirect loop?)"
                ) from None
            try:
                target = self.policy.classify(exc.location, self.access.url)
            except MediaRefusedError:
                target = None
            if target is None or target[0] == "local":
                raise ImageUnavailableError(
                    url, "redirected to a place task images may not come from"
                ) from None
            return self._download(target[1], target[0], hops + 1)
        except MediaRefusedError as exc:
            raise ImageUnavailableError(url, str(exc)) from None
        except LabelStudioError as exc:
            reason = f"HTTP {exc.status}" if exc.status else "Label Studio cannot be reached"
            raise ImageUnavailableError(url, f"{reason}: {exc.reason or exc}") from None
        except requests.RequestException as exc:
            raise ImageUnavailableError(url, f"cannot be reached ({type(exc).__name__})") from None
        except (FileNotFoundError, ValueError) as exc:
            raise ImageUnavailableError(url, str(exc)) from None


class FrameCache:
    """Downloaded images on disk, keyed by URL; the least recently read files are evicted beyond `max_bytes`."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root, self.max_bytes = root, max_bytes
        self._lock = threading.Lock()
        self._size: int | None = None  # bytes on disk, counted on first write

    def path(self, absolute_url: str) -> Path:
        digest = hashlib.sha256(absolute_url.encode("utf-8")).hexdigest()
        return self.root / digest[:2] / digest

    def read(self, absolute_url: str) -> bytes | None:
        path = self.path(absolute_url)
        try:
            data = path.read_bytes()
            os.utime(path)  # recently used: evicted last
            return data
        except OSError:
            return None

    def write(self, absolute_url: str, data: bytes) -> None:
        _cache_write(self.path(absolute_url), data)
        with self._lock:
            if self._size is None:
                self._size = sum(f.stat().st_size for f in self._files())
            else:
                self._size += len(data)
            if self._size > self.max_bytes:
                self._size = self._evict()

    def _files(self) -> list[Path]:
        return [f for f in self.root.glob("??/*") if f.is_file()] if self.root.is_dir() else []

    def _evict(self) -> int:
        """Removes the least recently used files until the cache is at 90 % of its cap; returns its size."""
        entries = []
        for f in self._files():
            try:
                st = f.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, f))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        for _, size, f in entries:
            if total <= self.max_bytes * 0.9:
                break
            f.unlink(missing_ok=True)
            total -= size
        logger.info("frame cache %s trimmed to %.1f MB (FRAME_CACHE_MB)", self.root, total / 1024**2)
        return total


def _decode(data: bytes, url: str, max_pixels: int) -> np.ndarray:
    """(H, W, 3) uint8 BGR image of `data`, whose declared size is checked before anything is decoded.

    Raises:
        ImageUnavailableError: not an image, larger than `max_pixels` (MAX_IMAGE_MEGAPIXELS) or smaller
            than MIN_IMAGE_SIDE on a side, or an animation (GIF, APNG, WebP: Label Studio shows it moving, so no
            one frame is what the annotator sees).
    """
    not_an_image = ImageUnavailableError(
        url, f"the {len(data)} bytes are not a decodable image{_what_else(data)}"
    )
    try:  # only the header is read: a few-KB PNG may declare 100000 x 100000 pixels (30 GB decoded)
        with PIL.Image.open(io.BytesIO(data)) as header:
            width, height = header.size
            image_format = header.format
            # a GIF's frames are counted by walking the file, an APNG's and a WebP's read from its header
            frames = header.n_frames if image_format in _ANIMATED_FORMATS else 1
    except PIL.Image.DecompressionBombError as exc:  # Pillow's own cap (179 megapixels) came first
        raise ImageUnavailableError(url, str(exc)) from None
    except (OSError, ValueError, SyntaxError):  # PIL.UnidentifiedImageError is an OSError
        raise not_an_image from None
    if width * height > max_pixels:
        raise ImageUnavailableError(url, f"{width}x{height} pixels is more than MAX_IMAGE_MEGAPIXELS "
                                         f"({max_pixels / 1e6:g})")  # fmt: skip
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageUnavailableError(url, f"{width}x{height} pixels is too small to show a person")
    # cv2 would read an APNG's or a WebP's first frame, though Label Studio shows them moving too
    if frames > 1:
        raise ImageUnavailableError(url, f"an animated {_ANIMATED_FORMATS[image_format]} ({frames} frames): Label "
                                         "Studio shows it moving, so no one picture is what annotators label; "
                                         "import its frames as images")  # fmt: skip
    if image_format == "GIF":  # this cv2 build reads no GIF; Label Studio shows them
        return _decode_gif(data, url)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None:
        raise not_an_image
    return image


def _decode_gif(data: bytes, url: str) -> np.ndarray:
    """(H, W, 3) uint8 BGR picture of a still GIF (its size and frame count already checked by `_decode`).

    Raises:
        ImageUnavailableError: one that does not decode.
    """
    try:
        with PIL.Image.open(io.BytesIO(data)) as gif:
            rgb = np.asarray(gif.convert("RGB"))
    except (OSError, ValueError, SyntaxError):
        raise ImageUnavailableError(url, f"the {len(data)} bytes are not a decodable GIF") from None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _what_else(data: bytes) -> str:
    """What bytes that are no image look like, where it helps the reader ("" otherwise)."""
    head = data[:1024].lstrip().lower()
    if b"<svg" in head:
        return ": an SVG (vector) image, which is not read; give it as PNG or JPEG"
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return ": an HTML page (an error or login page?)"
    return ""


def _cache_write(path: Path, data: bytes) -> None:
    try:
        with atomic_open(path, "wb", private=True) as handle:  # task images: readable by the service alone
            handle.write(data)
    except OSError as exc:  # a full or read-only cache must not fail the prediction
        logger.warning("frame cache %s not written: %s", path.parent, exc)


class VideoFrames:
    """`model.pipeline.predictor.FrameReader` over the tasks of one video: frame index -> task image.

    A frame no task shows yet (or whose image fails) is stood in for by the `anchor` frame (the
    frame being predicted), else by the nearest known frame; images of another size are resized
    to the video's size.

    Args:
        store: where images come from.
        urls: frame index -> image URL of the known tasks.
        num_frames: frames in the video.
        anchor: the stand-in frame (must be in `urls`); None: nearest known frame.

    Raises:
        ImageUnavailableError: the anchor's (else the first known frame's) image cannot be read.
        ValueError: no URL at all, or an anchor without a URL.
    """

    # One image per task: the prediction's read-ahead downloads and decodes several at once (the
    # FrameStore's disk cache and the client are shared by the service's threads already).
    concurrent_reads = True

    def __init__(self, store: FrameStore, urls: Mapping[int, str], num_frames: int, *,
                 anchor: int | None = None) -> None:  # fmt: skip
        if not urls:
            raise ValueError("a video needs at least one known frame")
        if anchor is not None and anchor not in urls:
            raise ValueError(f"anchor frame {anchor} has no image URL")
        self.store = store
        self.urls = dict(urls)
        self.num_frames = int(num_frames)
        self.anchor = anchor
        self.stand_ins = 0
        first = anchor if anchor is not None else min(self.urls)
        probe = store.image(self.urls[first])
        self.height, self.width = probe.shape[:2]
        self._last: tuple[int, np.ndarray] = (first, probe)
        self._count = threading.Lock()  # stand_ins is counted by several reading threads

    def _source(self, index: int) -> int:
        if index in self.urls:
            return index
        if self.anchor is not None:
            return self.anchor
        return min(self.urls, key=lambda k: (abs(k - index), k))

    def read(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 BGR frame `index` (or its stand-in)."""
        source = self._source(index)
        if source != index:
            self._stand_in()
            logger.debug("frame %d: no task image, frame %d stands in", index, source)
        last = self._last  # one read: another thread may replace it meanwhile
        if last[0] == source:
            return last[1]
        try:
            image = self.store.image(self.urls[source])
        except ImageUnavailableError as exc:
            fallback = self.anchor if self.anchor is not None and source != self.anchor else None
            if fallback is None:
                raise
            logger.warning("frame %d: %s; frame %d stands in", index, exc, fallback)
            self._stand_in()
            return self.read(fallback)
        if image.shape[:2] != (self.height, self.width):
            logger.warning("frame %d is %dx%d, the video %dx%d: resized", source, image.shape[1], image.shape[0],
                           self.width, self.height)  # fmt: skip
            image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
        self._last = (source, image)
        return image

    def _stand_in(self) -> None:
        with self._count:
            self.stand_ins += 1
