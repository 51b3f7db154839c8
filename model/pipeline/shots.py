"""Shot cuts: where footage jumps to another camera or scene, so that nothing is carried across.

Edited footage (a broadcast, a highlight reel, a phone clip stitched from takes) cuts from one shot to
another between two frames. Everything the pipeline carries from frame to frame assumes one scene: a
track matched by overlap, a box interpolated between two labels, a label carried by optical flow, a
person followed by their pose, the temporal median, the head's neighbour frames. Across a cut each of
them carries the last shot's people onto the new one. `Predictor.predict_video` therefore finds the cuts
among the frames a request can reach (`find_cuts`) and predicts each shot on its own, as a video of its
own (`ShotFrames`), with track ids that never continue across a cut. Training gives the head the same
neighbours (`model.training.samples.within_shots`).

A cut between frames t-1 and t is declared when both of these hold (`changed`), on 64x36 thumbnails:

- the colour changes: the Bhattacharyya distance of their hue-saturation histograms (12 x 4 bins), or of
  their grey-level histograms (16 bins: grey footage has no hue), exceeds `MIN_HISTOGRAM_CHANGE`;
- the picture changes: their grey thumbnails, each less its mean, correlate by less than
  `MAX_CUT_CORRELATION` at every shift of up to `SHIFT` pixels (a pan moves the picture, a cut replaces
  it; brightness and contrast do not change a correlation).

A cut must part the two frames before it from the two after it (`find_cuts`): a frame unlike the frames on
both sides of it is a flash or a one-frame glitch, not a cut. Measured on 21 real photographs filmed as
12-frame camera clips (pan, zoom, roll, JPEG; 231 frame pairs) and the 420 cuts between them: within shots,
the histogram distance is at most 0.14 and the correlation at least 0.76; 415 of the 420 cuts pass both
tests (the 5 others join photographs of the same colours and layout). A flash (brightness x1.8 + 40), frames
darkened to a quarter or grainy (sigma 25), a synthetic walk and a real street clip declare none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = ["MAX_CUT_CORRELATION", "MIN_HISTOGRAM_CHANGE", "ShotFrames", "Signature", "changed", "find_cuts",
           "shots", "signature"]

THUMB = (64, 36)  # thumbnail (width, height) the test compares
HUE_SAT_BINS = (12, 4)
GREY_BINS = 16
MIN_HISTOGRAM_CHANGE = 0.25  # Bhattacharyya distance: within shots <= 0.14, across cuts mostly 0.5-1
MAX_CUT_CORRELATION = 0.5  # within shots >= 0.76 at the best shift, across cuts mostly below 0.2
SHIFT = (4, 2)  # the thumbnail shifts (x, y) tried: 6% of the width, as a fast pan moves the picture


@dataclass(frozen=True)
class Signature:
    """What the cut test compares of one frame."""

    hue_sat: np.ndarray  # (12 * 4,) float32 hue-saturation histogram, summing to 1
    grey_hist: np.ndarray  # (16,) float32 grey-level histogram, summing to 1
    grey: np.ndarray  # (36, 64) float32 grey thumbnail


def signature(frame: np.ndarray) -> Signature:
    """The `Signature` of a BGR (H, W, 3) or grey (H, W) uint8 frame."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    small = cv2.resize(frame, THUMB, interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    hue_sat = cv2.calcHist([hsv], [0, 1], None, list(HUE_SAT_BINS), [0, 180, 0, 256]).ravel()
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    grey_hist = cv2.calcHist([grey], [0], None, [GREY_BINS], [0, 256]).ravel()
    return Signature(hue_sat / hue_sat.sum(), grey_hist / grey_hist.sum(), grey.astype(np.float32))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """The best correlation of two grey thumbnails, each less its mean, over shifts of up to `SHIFT`."""
    h, w = a.shape
    best = -1.0
    for dy in range(-SHIFT[1], SHIFT[1] + 1):
        for dx in range(-SHIFT[0], SHIFT[0] + 1):
            pa = a[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
            pb = b[max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)]
            pa, pb = pa - pa.mean(), pb - pb.mean()
            norm = float(np.sqrt((pa * pa).sum() * (pb * pb).sum()))
            if norm > 0:
                best = max(best, float((pa * pb).sum()) / norm)
            elif np.array_equal(pa, pb):  # two flat patches alike (black frames): the same picture
                best = 1.0
    return best


def changed(a: Signature, b: Signature) -> bool:
    """Whether frame `b` shows another shot than frame `a` (see the module doc)."""
    hist = max(cv2.compareHist(a.hue_sat, b.hue_sat, cv2.HISTCMP_BHATTACHARYYA),
               cv2.compareHist(a.grey_hist, b.grey_hist, cv2.HISTCMP_BHATTACHARYYA))
    return hist > MIN_HISTOGRAM_CHANGE and _correlation(a.grey, b.grey) < MAX_CUT_CORRELATION


def find_cuts(read: Callable[[int], np.ndarray], frames: Iterable[int]) -> list[int]:
    """The frames of `frames` (consecutive indices, in order) that begin a new shot: t where each of the
    two frames before it (t-2, t-1) is `changed` from each of t and t+1, those of them in `frames`. A
    frame unlike both its neighbours (a flash, a one-frame glitch) is thus no cut on either side. Each
    frame is read once, in order, and the signatures of the last four are kept."""
    order = list(frames)
    if any(b != a + 1 for a, b in zip(order, order[1:])):
        raise ValueError("find_cuts takes consecutive frame indices in order")
    window: dict[int, Signature] = {}

    def begins_shot(t: int) -> bool:
        before = [window[f] for f in (t - 2, t - 1) if f in window]
        after = [window[f] for f in (t, t + 1) if f in window]
        return all(changed(a, b) for a in before for b in after)

    cuts = []
    for k, t in enumerate(order):
        window[t] = signature(read(t))
        window.pop(t - 4, None)
        if k >= 2 and begins_shot(t - 1):  # frame t is the last one that tells about a cut before t - 1
            cuts.append(t - 1)
    if len(order) >= 2 and begins_shot(order[-1]):
        cuts.append(order[-1])
    return cuts


def shots(cuts: Iterable[int], start: int, stop: int) -> list[range]:
    """The shots of frames start..stop-1 cut before each of `cuts`, in order."""
    edges = [start, *sorted(c for c in set(cuts) if start < c < stop), stop]
    return [range(a, b) for a, b in zip(edges, edges[1:]) if b > a]


class ShotFrames:
    """A `FrameReader` showing frames start..start+n-1 of `reader` as frames 0..n-1; other attributes are
    `reader`'s (its owner closes it)."""

    def __init__(self, reader: Any, shot: range) -> None:
        self.inner, self.start, self.num_frames = reader, shot.start, len(shot)

    def read(self, index: int) -> np.ndarray:
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} is outside this shot of {self.num_frames} frames")
        return self.inner.read(self.start + index)

    def __getattr__(self, name: str) -> Any:  # width, height, concurrent_reads, ...: the inner reader's
        if name == "inner":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)
