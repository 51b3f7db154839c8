"""Real stills as small people on a large frame, for `bench-real --data`: each image shrunk and laid, four to
a frame, on a grey 1280x960 canvas, the annotations moved with them.

The real stills are photographs in which people fill a good part of the frame. In footage, people are
often small on a large frame (a street, a stadium, a dance floor filmed from afar): 40-150 px tall on
1280x720 or 1920x1080. This script writes a folder in the real-stills layout (``annotations/val/*.json`` +
``images/val/<name>/000000.jpg``) whose every image is a 2x2 mosaic: four stills, in name order, each
scaled by ``--scale`` (at most to fit its 640x480 quarter) and placed at the quarter's top left. The
people's keypoints, boxes, head boxes and ignore regions are scaled and moved the same way; their track
ids are numbered anew per mosaic. ``python -m model bench-real --data OUT`` scores it as it scores the
stills.

    python -m scripts.small_stills --out /tmp/stills-small
    python -m model bench-real --data /tmp/stills-small
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from annotation_io.types import Frame, Person, Video
from scripts.degrade_stills import folders_parser, moved_person, read_for_copy, write_folder, write_still

CANVAS = (1280, 960)  # width, height of each mosaic
GREY = 114  # the canvas's colour
PER_MOSAIC = 4  # stills per mosaic, 2x2


class SmallStillsError(Exception):
    """The source is not a stills folder, --scale is out of range, or --out holds something else."""


def mosaics(data: Path, out: Path, scale: float) -> tuple[int, int]:
    """Writes the mosaics of `data`'s stills to `out` (replaced); returns (mosaics, people)."""
    if not 0.05 <= scale <= 1.0:
        raise SmallStillsError(f"--scale must lie in 0.05..1, got {scale}")
    stills = read_for_copy(data, out, SmallStillsError)
    width, height = CANVAS
    quarter_w, quarter_h = width // 2, height // 2
    count = people = 0
    for start in range(0, len(stills), PER_MOSAIC):
        canvas = np.full((height, width, 3), GREY, np.uint8)
        persons: list[Person] = []
        regions: list[np.ndarray] = []
        for slot, (video, image) in enumerate(stills[start : start + PER_MOSAIC]):
            dx, dy = (slot % 2) * quarter_w, (slot // 2) * quarter_h
            k = min(scale, quarter_w / image.shape[1], quarter_h / image.shape[0])
            small = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
            canvas[dy : dy + small.shape[0], dx : dx + small.shape[1]] = small
            frame = video.frames[0]
            move = lambda xy, k=k, dx=dx, dy=dy: xy * k + (dx, dy)  # noqa: E731
            persons += [replace(moved_person(p, move), track_id=len(persons) + i, extra={})  # annotation ids anew
                        for i, p in enumerate(frame.persons)]
            regions += [move(np.asarray(r, float).reshape(-1, 2)) for r in frame.ignore_regions]
        name = f"mosaic_{count:02d}"
        frame = Frame(0, persons, is_labeled=True, ignore_regions=regions, file_name=f"images/val/{name}/000000.jpg")
        write_still(out, Video(name, 1, [frame]), canvas, SmallStillsError)
        count += 1
        people += len(persons)
    return count, people


def main(argv: Sequence[str] | None = None) -> int:
    parser = folders_parser("python -m scripts.small_stills", __doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.5, help="each still's scale (default 0.5)")
    args = parser.parse_args(argv)

    def make() -> str:
        count, people = mosaics(args.data, args.out, args.scale)
        return f"{count} mosaics, {people} people, scale {args.scale:g} -> {args.out}"

    return write_folder(args, make, SmallStillsError)


if __name__ == "__main__":
    raise SystemExit(main())
