"""Black bars around the picture (letterbox, pillarbox) found, so that what looks at a whole frame looks at the picture.

Footage is often shown inside black bars: a phone's portrait video in a 16:9 frame, 4:3 footage pillarboxed,
a film letterboxed to 2.39:1. The bars hold no one, yet the person detectors' tiles and grids are laid over the
whole frame: their tiles grow with it (fewer pixels of each person at the networks' inputs), and the bars
cost passes. The noise estimate's median (`model.denoise`) is pulled down by flat black too.

`picture_area` trims, from each edge inward, the run of rows or columns that are flat and dark: the edge's
outermost line sets the bar's level (its median, in the brightest channel), which must be at most `DARK` (bars
are coded at 0-16), and a line belongs to the bar where at most `OFF_SHARE` of its pixels differ from that level
by more than `FLAT` grey levels. A bar is trimmed only where it is at least `MIN_BAR` of its side, and the
picture is kept only where at least `MIN_PICTURE` of each side remains. Flatness is what tells bars from a dark
scene: a stage's black backdrop, darkened, still varies by a few grey levels (on a held-out photograph of two
men on a stage, darkened by `scripts.degrade_stills`, half the pixels of the dark margin left of them differ
from its level by more than 3, where a darkness test alone trimmed into the men), and a person reaching into a
bar's lines ends it there. Footage whose bars carry grain (an analogue capture) is left whole, as before.
Subtitles in a bar end that bar where they start.

Measured (MoveNet, detector, limb joints within 0.1 x box diagonal, the real stills and held-out images written by
`scripts.barred_stills`, not trimmed -> trimmed, side by side): in 16:9 bars 75.3% -> 77.9% at 0.79x the time;
as 9:16 portrait strips in 16:9 72.6% -> 81.1% at 0.54x ("Black bars" in docs/tracking.md).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["DARK", "FLAT", "MIN_BAR", "MIN_PICTURE", "OFF_SHARE", "picture_area"]

DARK = 24  # grey levels: a bar's level (the median of the edge's outermost line, brightest channel) is at most this
FLAT = 3  # a bar's pixels lie within this many grey levels of its level ...
OFF_SHARE = 0.002  # ... all but this share of each of its lines (a stray pixel, a codec's ringing)
MIN_BAR = 0.02  # a bar narrower than this x its side (a scaler's dark edge line) is not trimmed
MIN_PICTURE = 0.2  # at least this x each side must remain, else the frame is left whole


def picture_area(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """The picture inside an (H, W, 3) BGR or (H, W) grey uint8 frame's black bars, as (x0, y0, x1, y1) pixel
    bounds (x1, y1 exclusive); None where the frame has no bar to trim (see the module doc)."""
    height, width = frame.shape[:2]
    if height < 4 or width < 4:
        return None
    peak = frame if frame.ndim == 2 else cv2.max(cv2.max(frame[..., 0], frame[..., 1]), frame[..., 2])
    x0 = _bar(peak[:, : width // 2], 0)
    x1 = width - _bar(peak[:, width // 2 :][:, ::-1], 0)
    y0 = _bar(peak[: height // 2], 1)
    y1 = height - _bar(peak[height // 2 :][::-1], 1)
    if (x0, y0, x1, y1) == (0, 0, width, height):
        return None
    if x1 - x0 < MIN_PICTURE * width or y1 - y0 < MIN_PICTURE * height:
        return None
    return x0, y0, x1, y1


def _bar(half: np.ndarray, axis: int) -> int:
    """The width of the bar at the start of `half` (a half frame, its edge first): columns (`axis` 0) or rows (1)
    from the first on, as long as they are flat at the first one's dark level; 0 where that run is under
    `MIN_BAR` of the whole side (twice the half's)."""
    first = half[:, 0] if axis == 0 else half[0]
    level = float(np.median(first))
    if level > DARK:
        return 0
    off = cv2.threshold(cv2.absdiff(half, np.full_like(half, int(level))), FLAT, 1, cv2.THRESH_BINARY)[1]
    lines = cv2.reduce(off, axis, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
    along = half.shape[0] if axis == 0 else half.shape[1]  # pixels per line
    broken = np.flatnonzero(lines > OFF_SHARE * along)
    run = int(broken[0]) if len(broken) else len(lines)
    return run if run >= MIN_BAR * 2 * len(lines) else 0
