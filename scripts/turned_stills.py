"""Real stills turned a quarter, half or three-quarter turn, for `bench-real --data`: lying and upside-down
people, the annotations turned with them.

In the real stills people stand, sit or walk upright. In footage they also lie (a fall, a wrestler, a
yoga mat, a patient), turn upside down (gymnasts, breakdancers, a trampoline), or the whole video lies on
its side (a phone held sideways whose rotation flag was lost). This script writes a folder in the
real-stills layout (``annotations/val/*.json`` + ``images/val/<name>/*.jpg``) whose every image is turned
clockwise by ``--turn`` degrees (90, 180 or 270); the keypoints, boxes, head boxes and ignore regions are
turned with the pixels, so ``python -m model bench-real --data OUT`` scores it as it scores the stills.

    python -m scripts.turned_stills --turn 90 --out /tmp/stills-90
    python -m model bench-real --data /tmp/stills-90
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from scripts.degrade_stills import folders_parser, moved_frames, read_for_copy, write_folder, write_still

TURNS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


class TurnedStillsError(Exception):
    """The source is not a stills folder, or --out holds something else."""


def turn_points(xy: np.ndarray, turn: int, width: int, height: int) -> np.ndarray:
    """(N, 2) pixel positions on a `width` x `height` image -> their places on it turned clockwise by `turn`."""
    x, y = xy[:, 0], xy[:, 1]
    if turn == 90:
        return np.stack([height - 1 - y, x], axis=1)
    if turn == 180:
        return np.stack([width - 1 - x, height - 1 - y], axis=1)
    if turn == 270:
        return np.stack([y, width - 1 - x], axis=1)
    raise ValueError(f"turn must be one of {sorted(TURNS)}, got {turn}")


def turned(data: Path, out: Path, turn: int) -> int:
    """Writes `data`'s stills turned by `turn` degrees to `out` (replaced); returns the number of images."""
    if turn not in TURNS:
        raise TurnedStillsError(f"--turn must be one of {sorted(TURNS)}, got {turn}")
    stills = read_for_copy(data, out, TurnedStillsError)
    for video, image in stills:
        height, width = image.shape[:2]
        frames = moved_frames(video, lambda xy, w=width, h=height: turn_points(xy, turn, w, h))
        write_still(out, replace(video, frames=frames), cv2.rotate(image, TURNS[turn]), TurnedStillsError)
    return len(stills)


def main(argv: Sequence[str] | None = None) -> int:
    parser = folders_parser("python -m scripts.turned_stills", __doc__.split("\n\n")[0])
    parser.add_argument("--turn", type=int, choices=sorted(TURNS), required=True,
                        help="degrees clockwise every image is turned")
    args = parser.parse_args(argv)
    return write_folder(args, lambda: f"{turned(args.data, args.out, args.turn)} images, turned {args.turn} "
                        f"degrees -> {args.out}", TurnedStillsError)


if __name__ == "__main__":
    raise SystemExit(main())
