"""Noisy frames made clean before anything looks at them: a noise estimate, and non-local means where it is high.

Low-light and cheap cameras give grainy frames, and the person detector is what suffers: on the real stills with
Gaussian noise of 10 grey levels per channel, MoveNet with the detector placed 72.6% of the limb joints within
0.1 x box diagonal (80.3% on the clean photographs), and on the held-out images 62.5% (76.0%). The pose models
given a box hold up. Non-local means (OpenCV's `fastNlMeansDenoisingColored`) on the frame first took those to
79.1% and 74.0% ("Grainy footage" in docs/tracking.md).

- `noise_sigma`: Immerkaer's estimate (1996) of the luminance noise: the frame filtered by a kernel that
  cancels planes and ramps, the median of its magnitude scaled to a Gaussian's sigma. The median keeps edges
  and texture out of it (clean photographs: 0-2 grey levels, an old film photograph 4.9; the photographs with
  noise of 10 grey levels per channel: 4.4-9.6, 20: 8.4-14.6). Codec output (JPEG, H.264) reads low:
  compression removes grain.
- `denoise`: frames whose estimate exceeds `NOISE_FLOOR` by `MIN_STRENGTH` or more are filtered with a
  strength of the excess (so the strength grows from nothing as a video gets noisier, and frames of one video
  around the floor are treated alike); any other frame is returned as it is.
- A frame's bars, black (letterbox, pillarbox) or soft (a blurred copy of the picture, a flat colour;
  `model.bars`), are left out of the estimate and the filtering.
- `DenoisedFrames`: a frame reader that hands out `denoise(frame)`; the predictor reads through it
  (`InferConfig.denoise`), and so does the training's heatmap cache, so the head learns on what it is shown.
"""

from __future__ import annotations

import cv2
import numpy as np

from annotation_io.video import FilteredFrames, FrameReader
from model.bars import picture_area

__all__ = ["MIN_STRENGTH", "NOISE_FLOOR", "DenoisedFrames", "denoise", "noise_sigma"]

NOISE_FLOOR = 4.5  # grey levels of luminance noise left alone (an old film photograph of the stills reads 4.9)
MIN_STRENGTH = 1.0  # the least filter strength applied (grey levels): below, the filter changes next to nothing
TEMPLATE_WINDOW = 7  # OpenCV's defaults: 7x7 patches compared within 21x21 (5 / 11: 2.3x faster, less clean)
SEARCH_WINDOW = 21
ESTIMATE_PIXELS = 1920 * 1080  # larger frames are read in bands of rows (see `noise_sigma`)
_BAND_ROWS = 64

# Immerkaer's kernel: the diagonal Laplacian less twice the 4-neighbour one; zero on planes and ramps. The sum of
# its squared taps is 36, so Gaussian noise of sigma s gives a response of sigma 6 s.
_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_MEDIAN_OF_ABS = 0.6745  # the median of |x| for a standard normal x


def noise_sigma(frame: np.ndarray) -> float:
    """The luminance noise of an (H, W, 3) BGR or (H, W) grey uint8 frame, in grey levels (0 for a frame under 3x3).

    A frame of more than `ESTIMATE_PIXELS` is read in evenly spaced bands of rows holding about that many
    pixels, so the estimate's time and memory stay those of a 1920x1080 frame."""
    height, width = frame.shape[:2]
    if min(height, width) < 3:
        return 0.0
    if height * width > ESTIMATE_PIXELS:
        bands = max(1, ESTIMATE_PIXELS // (_BAND_ROWS * width))
        starts = np.linspace(0, height - 3, bands).astype(int)
        responses = np.concatenate([_responses(frame[y : y + _BAND_ROWS]) for y in starts])
    else:
        responses = _responses(frame)
    return float(np.median(responses)) / (_MEDIAN_OF_ABS * 6.0)


def _responses(frame: np.ndarray) -> np.ndarray:
    """|Immerkaer kernel response| on every other row and column of the frame's interior (a flat array)."""
    grey = frame if frame.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGR2GRAY)
    response = cv2.filter2D(grey.astype(np.float32), -1, _KERNEL)[1:-1, 1:-1]
    return np.abs(response[::2, ::2]).ravel()


def denoise(frame: np.ndarray, trim_bars: bool = True) -> np.ndarray:
    """`frame` (H, W, 3) uint8 BGR with its noise filtered out where it is noisy (see module); else `frame` itself.
    With `trim_bars`, a frame's bars (`model.bars`) are left out of the estimate and the filtering: flat black or
    a blurred copy pulls the median down (a portrait video pillarboxed in 16:9 is two thirds bars)."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        return frame
    area = picture_area(frame) if trim_bars else None
    x0, y0, x1, y1 = area or (0, 0, frame.shape[1], frame.shape[0])
    picture = frame[y0:y1, x0:x1]
    strength = noise_sigma(picture) - NOISE_FLOOR
    if strength < MIN_STRENGTH:
        return frame
    clean = cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(picture), None, strength, strength,
                                            TEMPLATE_WINDOW, SEARCH_WINDOW)
    if area is None:
        return clean
    out = frame.copy()
    out[y0:y1, x0:x1] = clean
    return out


class DenoisedFrames(FilteredFrames):
    """A `FrameReader` handing out `denoise(frame)` of `reader`'s frames (`FilteredFrames`)."""

    def __init__(self, reader: FrameReader, trim_bars: bool = True) -> None:
        super().__init__(reader)
        self.trim_bars = trim_bars

    def filter(self, frame: np.ndarray) -> np.ndarray:
        return denoise(frame, self.trim_bars)
