"""Bars around the picture found (black ones: letterbox, pillarbox; soft ones: a blurred copy of the picture, a flat
colour), so that what looks at a whole frame looks at the picture.

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

Soft bars: phone video is as often shown on social media and in news re-uploads over a blurred, dimmed, enlarged
copy of itself (portrait video in 16:9, or 16:9 video in a portrait frame), or between flat bars of a colour
other than black. Such bars are neither flat nor dark, yet they hold no one a detector should find, and they cost
as black ones do. `picture_area` then looks, inside any black bars, for two soft bars of equal width on
opposite sides (left and right, else top and bottom): each side's seam is the column (row) where the most lines
step by more than `STEP` grey levels across 3 pixels, found on at least `SEAM` of the lines; the two bars'
widths agree within `SYMMETRY` x the side (3 pixels at least), each is at least `MIN_SOFT` of the side, each
holds under `SOFT` x the picture's detail (mean absolute difference of neighbouring pixels, both ways; a bar's:
the median of its lines' means, so that captions and a logo laid over some of its lines do not count, while someone
standing in it does), and one is brighter than `DARK` (a lit person pasted in the middle of a dark, smooth
backdrop is not trimmed). A straight edge at one column along most of the frame's height is rare in a scene, the
same edge mirrored about the centre rarer still, and smooth pixels outside both rarer again: of 237 real images
(the stills, the held-out images, their dark, grey, blurred, JPEG and noisy versions, mmpose's test images), 6
had such a pair of seams; two were bars (a white pillarbox, a black letterbox), the others' outer parts held
0.39 x the picture's detail or more, the blurred copies of `scripts.barred_stills` 0.01-0.19 x.

Measured (MoveNet, detector, limb joints within 0.1 x box diagonal, the real stills and held-out images written by
`scripts.barred_stills`, not trimmed -> trimmed, side by side): in 16:9 bars 75.3% -> 77.9% at 0.79x the time;
as 9:16 portrait strips in 16:9 72.6% -> 81.1% at 0.54x ("Black bars" in docs/tracking.md); the strips over a
blurred copy of themselves 71.4% -> 76.7% at 0.51x ("Soft bars").
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["DARK", "FLAT", "MIN_BAR", "MIN_DETAIL", "MIN_PICTURE", "MIN_SOFT", "MIN_SOFT_SIDE", "OFF_SHARE", "SEAM",
           "SOFT", "STEP", "SYMMETRY", "picture_area"]

DARK = 24  # grey levels: a bar's level (the median of the edge's outermost line, brightest channel) is at most this
FLAT = 3  # a bar's pixels lie within this many grey levels of its level ...
OFF_SHARE = 0.002  # ... all but this share of each of its lines (a stray pixel, a codec's ringing)
MIN_BAR = 0.02  # a bar narrower than this x its side (a scaler's dark edge line) is not trimmed
MIN_PICTURE = 0.2  # at least this x each side must remain, else the frame is left whole
STEP = 12  # grey levels: a seam line steps by more than this across 3 pixels ...
SEAM = 0.5  # ... on at least this share of the lines along it
SYMMETRY = 0.005  # two soft bars' widths agree within this x the side (3 pixels at least) ...
MIN_SOFT = 0.05  # ... each is at least this x the side ...
SOFT = 0.25  # ... and holds under this x the picture's detail
MIN_DETAIL = 1.0  # a picture with less detail than this (mean grey-level step; a dark scene) is not searched
MIN_SOFT_SIDE = 64  # pixels: a side shorter than this is not searched for soft bars


def picture_area(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """The picture inside an (H, W, 3) BGR or (H, W) grey uint8 frame's black or soft bars, as (x0, y0, x1, y1)
    pixel bounds (x1, y1 exclusive); None where the frame has no bar to trim (see the module doc)."""
    height, width = frame.shape[:2]
    if height < 4 or width < 4:
        return None
    # numpy takes the channels' strided views as they lie; cv2.max copies each first (1.8 against 4-6 ms at 1080p)
    peak = frame if frame.ndim == 2 else np.maximum(np.maximum(frame[..., 0], frame[..., 1]), frame[..., 2])
    x0 = _bar(peak[:, : width // 2], 0)
    x1 = width - _bar(peak[:, width // 2 :][:, ::-1], 0)
    y0 = _bar(peak[: height // 2], 1)
    y1 = height - _bar(peak[height // 2 :][::-1], 1)
    inner = peak[y0:y1, x0:x1]  # soft bars are looked for inside black ones (`_soft_bars` skips a small picture)
    left, right = _soft_bars(inner)
    if left or right:
        x0, x1 = x0 + left, x1 - right
    else:
        top, bottom = _soft_bars(inner.T)
        y0, y1 = y0 + top, y1 - bottom
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


def _soft_bars(picture: np.ndarray) -> tuple[int, int]:
    """The widths of two soft bars (see the module doc) at the left and right of a grey `picture`; (0, 0) where
    there are none."""
    height, width = picture.shape
    low, high = max(int(MIN_SOFT * width), 8), int((1 - MIN_PICTURE) / 2 * width)
    if width < MIN_SOFT_SIDE or high <= low:
        return 0, 0
    lines = picture[:: max(height // 540, 1)].astype(np.int16)  # at most ~1080 lines: a seam runs along them all
    steps = (np.abs(lines[:, 3:] - lines[:, :-3]) > STEP).mean(axis=0)  # [i]: from column i to i + 3
    # A picture starting at column c makes the spans i = c - 3 .. c - 1 step: `left` is i + 2, `_seam` finds c.
    left = low + int(np.argmax(steps[low - 2 : high - 2]))
    right = low + int(np.argmax(steps[::-1][low - 2 : high - 2]))  # the mirrored frame's, from its left edge
    if min(steps[left - 2], steps[width - right - 2]) < SEAM or abs(left - right) > max(3, SYMMETRY * width):
        return 0, 0
    detail = np.abs(np.diff(lines, axis=1))[:-1] + np.abs(np.diff(lines, axis=0))[:, :-1]  # [k, j]: at line k, column j
    inside = float(detail[:, left + 4 : width - right - 4].mean())  # 4 columns off each seam
    if inside < MIN_DETAIL:
        return 0, 0
    # A bar's detail: the median over its lines of each line's mean, so that captions and a logo laid over a few
    # of its lines do not count, where a person standing in it (along most of its lines) does.
    bars = (np.median(detail[:, : left - 4].mean(axis=1)), np.median(detail[:, width - right + 3 :].mean(axis=1)))
    if max(bars) >= SOFT * inside:
        return 0, 0
    if max(np.median(lines[:, : left - 4]), np.median(lines[:, width - right + 3 :])) <= DARK:
        return 0, 0  # dark and smooth is a dark scene's backdrop as often: black bars are only trimmed where flat
    return _seam(lines, left - 2), _seam(lines[:, ::-1], right - 2)


def _seam(lines: np.ndarray, start: int) -> int:
    """The picture's first column at a seam that the 3-pixel step from column `start` crosses: of columns
    `start` + 1 .. `start` + 3, the one that differs from its left neighbour by more than `STEP` / 2 on the most
    lines."""
    near = lines[:, start : start + 4]
    return start + 1 + int(np.argmax((np.abs(np.diff(near, axis=1)) > STEP // 2).mean(axis=0)))
