"""Real stills scaled to a given long side, for `bench-real --data`: the people as footage of that size shows them,
the annotations scaled with them.

The held-out images are PoseTrack frames of 1920x1080 and photographs of 600-1000 px. Footage is often smaller:
web video and phones' low settings give 640x360 and 426x240, where the people of the same scene are a third or a
quarter as tall. This script writes a folder in the real-stills layout (``annotations/val/*.json`` +
``images/val/<name>/*.jpg``) whose every image is scaled (down with OpenCV's area filter, up bilinearly) so that
its long side is ``--long-side`` pixels; the keypoints, boxes, head boxes and ignore regions are scaled with the
pixels, so ``python -m model bench-real --data OUT`` scores it as it scores the stills.

    python -m scripts.scaled_stills --data DIR --long-side 640 --out /tmp/stills-640
    python -m model bench-real --data /tmp/stills-640
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2

from scripts.degrade_stills import folders_parser, moved_frames, read_for_copy, write_folder, write_still

MIN_LONG_SIDE = 64  # smaller images hold no person a model could read
MAX_LONG_SIDE = 8192


class ScaledStillsError(Exception):
    """The source is not a stills folder, or --out holds something else."""


def scaled(data: Path, out: Path, long_side: int) -> int:
    """Writes `data`'s stills scaled to `long_side` pixels along their long side to `out` (replaced); returns the
    number of images."""
    if not MIN_LONG_SIDE <= long_side <= MAX_LONG_SIDE:
        raise ScaledStillsError(f"--long-side must be {MIN_LONG_SIDE} to {MAX_LONG_SIDE} pixels, got {long_side}")
    stills = read_for_copy(data, out, ScaledStillsError)
    for video, image in stills:
        height, width = image.shape[:2]
        k = long_side / max(width, height)
        size = (max(1, round(width * k)), max(1, round(height * k)))
        kx, ky = size[0] / width, size[1] / height  # each axis as the pixels are scaled (rounded sizes)
        still = cv2.resize(image, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        frames = moved_frames(video, lambda xy, k=(kx, ky): xy * k)
        write_still(out, replace(video, frames=frames), still, ScaledStillsError)
    return len(stills)


def main(argv: Sequence[str] | None = None) -> int:
    parser = folders_parser("python -m scripts.scaled_stills", __doc__.split("\n\n")[0])
    parser.add_argument("--long-side", type=int, required=True,
                        help=f"pixels along every image's long side ({MIN_LONG_SIDE}-{MAX_LONG_SIDE})")
    args = parser.parse_args(argv)
    return write_folder(args, lambda: f"{scaled(args.data, args.out, args.long_side)} images, long side "
                        f"{args.long_side} px -> {args.out}", ScaledStillsError)


if __name__ == "__main__":
    raise SystemExit(main())
