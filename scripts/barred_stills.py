"""Real stills shown inside black bars, for `bench-real --data`: footage letterboxed or pillarboxed, and a phone's
portrait video shown in 16:9, the annotations moved with the pixels.

Much footage reaches annotators inside black bars: 4:3 or 3:2 pictures pillarboxed in 16:9, wide ones
letterboxed, and portrait phone video in a 16:9 frame with two thirds of it black. This script writes a folder in
the real-stills layout (``annotations/val/*.json`` + ``images/val/<name>/*.jpg``):

- ``--layout bars``: each image centred in a black 16:9 frame where it is narrower than 16:9, else in a 4:3 one;
- ``--layout portrait``: a 9:16 strip of each image (its full height), centred on its largest annotated person
  as far as the image allows, centred in a black 16:9 frame. People the strip cuts keep the joints inside it and
  their box clipped to it; those with under half of their box or under `MIN_JOINTS` joints inside are left out.
  Images already as narrow as 9:16 are left out;
- ``--layout blurred``: that strip in 16:9 over a blurred, darkened copy of itself enlarged to fill the frame, as
  phone video is shown on social media and in news re-uploads (`soft_background`);
- ``--layout tall``: each image whole, centred in a 9:16 portrait frame over such a copy of itself (landscape
  video shown in a phone's portrait format). Images already as narrow as 9:16 are left out.

    python -m scripts.barred_stills --layout portrait --out /tmp/stills-portrait
    python -m model bench-real --data /tmp/stills-portrait
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from annotation_io.types import Box, Person, Video
from scripts.degrade_stills import folders_parser, moved_frames, read_for_copy, write_folder, write_still

LAYOUTS = ("bars", "portrait", "blurred", "tall")
WIDE = 16 / 9
MIN_JOINTS = 4  # a person the portrait strip cuts keeps at least this many joints inside it, or is left out
BLUR = 0.02  # the blurred background's Gaussian sigma, x the frame's long side (38 px on 1920)
DIM = 0.6  # ... and its brightness, x the picture's


class BarredStillsError(Exception):
    """The source is not a stills folder, or --out holds something else."""


def barred(data: Path, out: Path, layout: str) -> int:
    """Writes `data`'s stills in black bars (`layout`, see the module doc) to `out` (replaced); returns the number of
    images written."""
    if layout not in LAYOUTS:
        raise BarredStillsError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    written = 0
    for video, image in read_for_copy(data, out, BarredStillsError):
        if layout in ("portrait", "blurred"):
            strip = _strip(video, image)
            if strip is None:
                continue
            video, image = strip
        height, width = image.shape[:2]
        if layout == "tall":
            if width / height <= 9 / 16:
                continue
            frame_w, frame_h = width, round(width * 16 / 9)
        elif width / height < WIDE:
            frame_w, frame_h = round(height * WIDE), height
        else:
            frame_w, frame_h = width, round(width * 3 / 4)
        left, top = (frame_w - width) // 2, (frame_h - height) // 2
        if layout in ("blurred", "tall"):
            frame = soft_background(image, frame_w, frame_h)
        else:
            frame = np.zeros((frame_h, frame_w, 3), np.uint8)
        frame[top : top + height, left : left + width] = image
        frames = moved_frames(video, lambda xy, at=(left, top): xy + at)
        write_still(out, replace(video, frames=frames), frame, BarredStillsError)
        written += 1
    return written


def soft_background(picture: np.ndarray, frame_w: int, frame_h: int) -> np.ndarray:
    """A `frame_w` x `frame_h` frame filled by the picture enlarged to cover it (its middle kept), blurred (sigma
    `BLUR` x the frame's long side) and dimmed (`DIM`): what the picture is then centred on."""
    height, width = picture.shape[:2]
    scale = max(frame_w / width, frame_h / height)
    big_w, big_h = max(round(width * scale), frame_w), max(round(height * scale), frame_h)
    big = cv2.resize(picture, (big_w, big_h), interpolation=cv2.INTER_LINEAR)
    left, top = (big_w - frame_w) // 2, (big_h - frame_h) // 2
    soft = cv2.GaussianBlur(big[top : top + frame_h, left : left + frame_w], (0, 0), BLUR * max(frame_w, frame_h))
    return cv2.convertScaleAbs(soft, alpha=DIM)


def _strip(video: Video, image: np.ndarray) -> tuple[Video, np.ndarray] | None:
    """The 9:16 strip of the image around its largest annotated person, with the people in it; None where the
    image is no wider than that."""
    height, width = image.shape[:2]
    side = round(height * 9 / 16)
    if side >= width:
        return None
    boxed = [p for p in video.frames[0].persons if p.box is not None]
    centre = max(boxed, key=lambda p: p.box.area).box.center[0] if boxed else width / 2  # type: ignore[union-attr]
    x0 = int(np.clip(round(centre - side / 2), 0, width - side))
    frames = moved_frames(video, lambda xy: xy - (x0, 0))
    people = [p for p in (_inside(p, side) for p in frames[0].persons) if p is not None]
    frame = replace(frames[0], persons=people)
    return replace(video, frames=[frame], width=side), np.ascontiguousarray(image[:, x0 : x0 + side])


def _inside(person: Person, side: int) -> Person | None:
    """`person` as a strip `side` pixels wide shows them: joints outside it unseen, the box clipped to it; None
    where under half of the box or under `MIN_JOINTS` joints lie inside."""
    kps = person.keypoints.copy()
    kps[(kps[:, 2] > 0) & ((kps[:, 0] < 0) | (kps[:, 0] >= side))] = 0.0
    box = person.box
    if box is None or (kps[:, 2] > 0).sum() < MIN_JOINTS:
        return None
    x1, x2 = max(box.x, 0.0), min(box.x + box.w, float(side))
    if x2 - x1 < 0.5 * box.w:
        return None
    return replace(person, keypoints=kps, box=Box.from_xyxy(x1, box.y, x2, box.y + box.h))


def main(argv: Sequence[str] | None = None) -> int:
    parser = folders_parser("python -m scripts.barred_stills", __doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=LAYOUTS, required=True,
                        help="bars: each image in a 16:9 (or 4:3) frame; portrait: a 9:16 strip of it in 16:9; "
                        "blurred: that strip over a blurred copy of itself; tall: the image in a 9:16 frame "
                        "over such a copy")
    args = parser.parse_args(argv)
    return write_folder(args, lambda: f"{barred(args.data, args.out, args.layout)} images, {args.layout} -> "
                        f"{args.out}", BarredStillsError)


if __name__ == "__main__":
    raise SystemExit(main())
