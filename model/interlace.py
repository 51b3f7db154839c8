"""Interlaced footage read as one picture: a combing test; the second field aligned onto the first where the
whole picture moved (a pan), and interpolated in the blocks still combed.

Broadcast archives (1080i, DV, SD television) hold two fields per frame, the even rows and the odd rows, taken a
field period apart (1/50 or 1/60 s). OpenCV decodes them woven into one frame, so wherever the picture moved
between the fields every other row is shifted: a comb along each moving edge. Limb joints are what it costs: the
9 real stills and 12 held-out images with their odd rows taken from a copy moved 8 px sideways (a panning
camera), MoveNet with the annotated boxes placed 400 of 538 limb joints within 0.1 x box diagonal against 459 on
the images as they are (both JPEG 90), 449 with the combed blocks interpolated and 461 with the fields aligned
("Interlaced footage" in docs/tracking.md).

- `comb_map`: per block of `BLOCK` x `BLOCK` pixels, the share of its pixels where a row stands out from both
  rows next to it, the same way (the two steps' geometric mean over `STEP` grey levels), less the share where
  it stands out so from the rows two away. A woven frame's neighbouring rows belong to the other field, so
  moving texture zig-zags across one row and not across two; a progressive frame's texture and edges do both
  or neither (what real frames read: `COMBED`).
- `field_motion`, `align_fields`: how far the whole picture moved from the top field (even rows) to the bottom
  one (odd rows), read as one shift by phase correlation of the two fields, and the bottom field moved back
  by it onto the top field's moment.
- `deinterlace`: where any block is combed (`COMBED`), the bottom field is aligned (`field_motion`); if that
  leaves at most `ALIGNED` of the combed blocks combed (read stricter, `ALIGNED_COMBED`), the picture moved as
  one (a pan, a tilt) and the blocks the alignment mended take the aligned rows: both fields' detail, not
  half the rows. The odd rows of the blocks still combed (people moving against the pan, or everything that
  moved where the camera stood still), and of the blocks around them, are replaced by the mean of the even
  rows above and below: the top field is kept and made whole there. What stood still keeps both fields as
  they are. A frame without a combed block, a progressive frame or a still interlaced one, is returned as it
  is (not a copy).
- `DeinterlacedFrames`: a frame reader that hands out `deinterlace(frame)`; the predictor reads through it
  (`InferConfig.deinterlace`), ahead of `model.denoise` (a comb reads as grain), and so does the training's
  heatmap cache.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from annotation_io.video import FilteredFrames

__all__ = ["ALIGNED", "ALIGNED_COMBED", "BLOCK", "COMBED", "MIN_MOTION", "STEP", "DeinterlacedFrames",
           "align_fields", "comb_map", "deinterlace", "field_motion"]

STEP = 10  # grey levels by which a row stands out from both rows next to it (geometric mean of the two steps)
BLOCK = 32  # pixels per side of the blocks judged combed or not
# A block is combed where the zig-zags across one row outnumber those across two by this share of its pixels.
# Measured, the most combed block: 267 real images and video frames (mmpose's test data, the real stills, the
# held-out images and their noisy, JPEG-15, blurred and dark versions) 0.22 at most, but for a backpack strap
# woven in stripes 2 px apart (0.32: its blocks are interpolated, harmlessly); the 21 stills and held-out
# images woven with a shift of 2 px or more between the fields (a pan, people moving) 0.27 or more.
COMBED = 0.25
MIN_MOTION = 0.25  # px: fields that moved less are not aligned (it would change next to nothing)
# An aligned block is taken where it reads at most this: stricter than `COMBED`, as fields aligned a pixel off
# (where a zoom or a roll moved the picture unevenly) comb less than woven ones but blur edges. Measured on 11
# of the stills and held-out images filmed as interlaced camera clips (mean error of the odd rows against the
# clips' progressive frames, 66 frames, JPEG 70): 6.40 grey levels with aligned blocks taken under 0.25, 5.73
# under 0.10, 5.73 interpolating alone; on the same images panned 8 px (JPEG 90), 3.06, 3.09 and 5.77.
ALIGNED_COMBED = 0.10
# The fields are aligned where that leaves at most this share of the combed blocks combed: the picture moved as
# one (a pan, a tilt). Where the people moved and the camera did not, aligning by them combs the background.
ALIGNED = 0.5


def _zigzags(grey: np.ndarray, gap: int) -> np.ndarray:
    """(H, W) bool: rows that stand out from the rows `gap` above and below, the same way, by `STEP`
    (geometric mean); False on the `gap` rows at each edge."""
    up = cv2.subtract(grey[gap:-gap], grey[: -2 * gap], dtype=cv2.CV_16S)
    down = cv2.subtract(grey[gap:-gap], grey[2 * gap :], dtype=cv2.CV_16S)
    out = np.zeros(grey.shape, bool)
    out[gap:-gap] = cv2.multiply(up, down, dtype=cv2.CV_32F) > STEP * STEP  # > 0: both steps the same way
    return out


def comb_map(frame: np.ndarray) -> np.ndarray:
    """(ceil(H / BLOCK), ceil(W / BLOCK)) float32: each block's share of pixels zig-zagging across one row less
    its share across two (see module); the last row and column of blocks may be partial (their share is of a
    full block). (H, W, 3) BGR or (H, W) grey uint8; all zeros for a frame under 5 rows."""
    grey = frame if frame.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGR2GRAY)
    height, width = grey.shape
    rows, cols = -(-height // BLOCK), -(-width // BLOCK)
    if height < 5:
        return np.zeros((rows, cols), np.float32)
    grey = np.ascontiguousarray(grey[:, ::2])  # every other column: a comb runs along the rows (the same shares)
    excess = _zigzags(grey, 1).astype(np.int16) - _zigzags(grey, 2)
    half = BLOCK // 2
    padded = np.zeros((rows * BLOCK, cols * half), np.int16)
    padded[:height, : grey.shape[1]] = excess
    counts = padded.reshape(rows, BLOCK, cols, half).sum(axis=(1, 3), dtype=np.int32)
    return (counts / float(BLOCK * half)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _window(width: int, rows: int) -> np.ndarray:
    return cv2.createHanningWindow((width, rows), cv2.CV_32F)


def field_motion(frame: np.ndarray) -> tuple[float, float]:
    """(dx, dy): how far the picture moved, in pixels, from the top field (even rows) to the bottom one (odd
    rows), as one shift over the whole frame (a panning or tilting camera): the phase correlation of the two
    fields, less the half field row by which the bottom one lies lower. `dy` is in whole rows: a field's rows
    are two apart, so a fraction of a row is read from the fields' aliasing (0.1-0.3 on panned photographs
    that did not move up or down), and aligning by it would blur. (H, W, 3) BGR or (H, W) grey uint8;
    (0, 0) for a frame under 4 rows or 2 columns."""
    grey = frame if frame.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGR2GRAY)
    rows = grey.shape[0] // 2
    if rows < 2 or grey.shape[1] < 2:
        return 0.0, 0.0
    top = grey[0 : 2 * rows : 2].astype(np.float32)
    bottom = grey[1 : 2 * rows : 2].astype(np.float32)
    (dx, dy), _ = cv2.phaseCorrelate(top, bottom, _window(grey.shape[1], rows))
    return float(dx), float(round(2.0 * dy + 1.0))


def align_fields(frame: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """`frame` with its bottom field (odd rows) moved back by (`dx`, `dy`) pixels, onto the top field's
    moment (bilinear; the frame's edge columns and rows repeated where the move reaches past them)."""
    odd = frame[1::2]
    back = np.float32([[1.0, 0.0, dx], [0.0, 1.0, dy / 2.0]])  # output pixel (x, k) reads (x + dx, k + dy / 2)
    out = frame.copy()
    out[1::2] = cv2.warpAffine(odd, back, (odd.shape[1], odd.shape[0]),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return out


def _block_rows(blocks: np.ndarray, odd: np.ndarray, width: int) -> np.ndarray:
    """(odd rows, W) bool: the pixels of the odd rows `odd` lying in the blocks set in `blocks`."""
    cols = np.repeat(blocks, BLOCK, axis=1)[:, :width]  # (block rows, W)
    return cols[odd // BLOCK]


def deinterlace(frame: np.ndarray) -> np.ndarray:
    """`frame` (H, W, 3) uint8 BGR with its bottom field aligned onto the top one where the whole picture
    moved as one, and the odd rows of the blocks still combed, and the blocks around them, interpolated from
    the even rows above and below (see module); `frame` itself where no block is combed, or where it is not
    an (H, W, 3) uint8 frame."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        return frame
    grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGR2GRAY)  # read by the comb test and the motion
    combed = comb_map(grey) > COMBED
    if not combed.any():
        return frame
    around = np.ones((3, 3), np.uint8)
    region = cv2.dilate(combed.astype(np.uint8), around) > 0
    height, width = frame.shape[:2]
    odd = np.arange(1, height, 2)
    out = frame.copy()
    rows = out[odd]
    dx, dy = field_motion(grey)
    if max(abs(dx), abs(dy)) >= MIN_MOTION:
        aligned = align_fields(frame, dx, dy)
        still = comb_map(aligned) > ALIGNED_COMBED
        if still.sum() <= ALIGNED * combed.sum():  # the fields moved as one: keep both, aligned
            still = cv2.dilate(still.astype(np.uint8), around) > 0
            mask = _block_rows(~still, odd, width)
            rows[mask] = aligned[1::2][mask]
            region &= still  # what did not move with the rest (a person, a caption) is interpolated
    above = frame[odd - 1].astype(np.uint16)
    below = frame[np.where(odd + 1 < height, odd + 1, odd - 1)].astype(np.uint16)  # a last odd row: the one above
    filled = ((above + below + 1) >> 1).astype(np.uint8)
    mask = _block_rows(region, odd, width)
    rows[mask] = filled[mask]
    out[odd] = rows
    return out


class DeinterlacedFrames(FilteredFrames):
    """A `FrameReader` handing out `deinterlace(frame)` of `reader`'s frames (`FilteredFrames`)."""

    def filter(self, frame: np.ndarray) -> np.ndarray:
        return deinterlace(frame)
