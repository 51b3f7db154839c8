"""Interlaced footage read as one picture: a combing test, and the combed blocks' second field interpolated.

Broadcast archives (1080i, DV, SD television) hold two fields per frame, the even rows and the odd rows, taken a
field period apart (1/50 or 1/60 s). OpenCV decodes them woven into one frame, so wherever the picture moved
between the fields every other row is shifted: a comb along each moving edge. Limb joints are what it costs: the
9 real stills and 12 held-out images with their odd rows taken from a copy moved 8 px sideways (a panning
camera), MoveNet with the annotated boxes placed 400 of 538 limb joints within 0.1 x box diagonal against 459 on
the images as they are (both JPEG 90), and 449 deinterlaced ("Interlaced footage" in docs/tracking.md).

- `comb_map`: per block of `BLOCK` x `BLOCK` pixels, the share of its pixels where a row stands out from both
  rows next to it, the same way (the two steps' geometric mean over `STEP` grey levels), less the share where
  it stands out so from the rows two away. A woven frame's neighbouring rows belong to the other field, so
  moving texture zig-zags across one row and not across two; a progressive frame's texture and edges do both
  or neither (what real frames read: `COMBED`).
- `deinterlace`: where any block is combed (`COMBED`), the odd rows of the combed blocks and the blocks around
  them are replaced by the mean of the even rows above and below: the top field is kept, made whole where
  the picture moved, and the still parts keep both fields' detail. A frame without a combed block, a progressive
  frame or a still interlaced one, is returned as it is (not a copy).
- `DeinterlacedFrames`: a frame reader that hands out `deinterlace(frame)`; the predictor reads through it
  (`InferConfig.deinterlace`), ahead of `model.denoise` (a comb reads as grain), and so does the training's
  heatmap cache.
"""

from __future__ import annotations

import cv2
import numpy as np

from annotation_io.video import FilteredFrames

__all__ = ["BLOCK", "COMBED", "STEP", "DeinterlacedFrames", "comb_map", "deinterlace"]

STEP = 10  # grey levels by which a row stands out from both rows next to it (geometric mean of the two steps)
BLOCK = 32  # pixels per side of the blocks judged combed or not
# A block is combed where the zig-zags across one row outnumber those across two by this share of its pixels.
# Measured, the most combed block: 267 real images and video frames (mmpose's test data, the real stills, the
# held-out images and their noisy, JPEG-15, blurred and dark versions) 0.22 at most, but for a backpack strap
# woven in stripes 2 px apart (0.32: its blocks are interpolated, harmlessly); the 21 stills and held-out
# images woven with a shift of 2 px or more between the fields (a pan, people moving) 0.27 or more.
COMBED = 0.25


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


def deinterlace(frame: np.ndarray) -> np.ndarray:
    """`frame` (H, W, 3) uint8 BGR with the odd rows of its combed blocks, and the blocks around them,
    interpolated from the even rows above and below (see module); `frame` itself where no block is combed, or
    where it is not an (H, W, 3) uint8 frame."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        return frame
    combed = comb_map(frame) > COMBED
    if not combed.any():
        return frame
    region = cv2.dilate(combed.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    height = frame.shape[0]
    out = frame.copy()
    odd = np.arange(1, height, 2)
    above = frame[odd - 1].astype(np.uint16)
    below = frame[np.where(odd + 1 < height, odd + 1, odd - 1)].astype(np.uint16)  # a last odd row: the one above
    filled = ((above + below + 1) >> 1).astype(np.uint8)
    cols = np.repeat(region, BLOCK, axis=1)[:, : frame.shape[1]]  # (block rows, W)
    mask = cols[odd // BLOCK]  # (odd rows, W): the odd row's block row
    rows = out[odd]
    rows[mask] = filled[mask]
    out[odd] = rows
    return out


class DeinterlacedFrames(FilteredFrames):
    """A `FrameReader` handing out `deinterlace(frame)` of `reader`'s frames (`FilteredFrames`)."""

    def filter(self, frame: np.ndarray) -> np.ndarray:
        return deinterlace(frame)
