"""Frames smeared by a steady motion (a pan, a shaken camera, a fast subject filling the frame) made sharp again
before anything looks at them: a blind estimate of the smear's length and direction, and Wiener deconvolution
where the frame shows it.

Motion blur is the largest loss measured on real pictures: the 9 real stills and 12 held-out images smeared
along a line of 3% of their long side, each at an angle of its own (`scripts.degrade_stills --kind smear`),
MoveNet with the annotated boxes placed 136 of 234 and 162 of 304 limb joints within 0.1 x box diagonal (212 and
257 on the images as they are), with its detector 73 and 127; read through this module, 195 and 194 with the
boxes, 173 and 162 with the detector ("Smeared footage" in docs/tracking.md).

- `motion_blur`: a uniform smear of length L along a line multiplies the picture's spectrum by a sinc whose
  zeros repeat every 1/L along the line; the log spectrum then ripples with period 1/L, and its inverse
  transform (the cepstrum) dips at L pixels along the line, and again at 2L, 3L. The log power spectrum is
  averaged over windowed patches of `PATCH` pixels (at most `MAX_PATCHES`, evenly spread), and the cepstrum's
  deepest dip from `MIN_LENGTH` to half a patch from its centre is scored against the cepstrum's spread (a
  robust z: how many median deviations below the median). A frame is read as smeared where the dip lies
  `MIN_STRENGTH` or more below (sharp photographs read 6-26, smeared ones 31-108), unless the dip is a grid's
  (codec blocks: straight across or down at 8 or 16 pixels, or dipping as deep along the other axis too), the
  second of a shorter smear (the cepstrum dips half as far out as well), or lies between the fields of an
  interlaced frame (`_in_one_field`). A frame that shows none is read again at half size, where a long smear
  dips deeper in a patch.
- `deblur`: a smeared frame is deconvolved (Wiener, noise-to-signal `NSR`, each channel, the frame mirrored at
  its edges so they do not ring) and the result is taken where the frame shows the smear: each patch's own
  cepstrum is read at the frame's dip, and a patch dipping `SURE` or more takes the deconvolved pixels, one
  dipping under `NONE` keeps its own, with the patches' windows blending between. A pan that follows a runner
  smears the background and leaves the runner sharp, and deconvolving a sharp person wrecks them (the sharp
  images deconvolved with a smear of 3% placed 17 of 234 limb joints): the runner's patches keep their pixels.
  A frame not read as smeared is returned as it is (not a copy).
- A frame's bars (`model.bars`) are left out of the estimate and the deconvolution, as the noise filter does.
- `DeblurredFrames`: a frame reader that hands out `deblur(frame)`; the predictor reads through it
  (`InferConfig.deblur`), after `model.denoise` (deconvolution lifts grain), and so does the training's heatmap
  cache.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from annotation_io.video import FilteredFrames, FrameReader
from model.bars import picture_area

__all__ = ["MAX_PATCHES", "MIN_LENGTH", "LONG", "MIN_STRENGTH", "NONE", "NSR", "PATCH", "SURE", "DeblurredFrames",
           "MotionBlur", "deblur", "line_kernel", "motion_blur", "smear"]

PATCH = 256  # pixels per side of the patches whose spectra are averaged (smears up to PATCH / 2 - 2 are read)
MAX_PATCHES = 48  # patches read per frame for the estimate, evenly spread (its cost stays a 1280x720 frame's)
MIN_LENGTH = 6.0  # pixels: shorter smears cost the pose models little, and JPEG's 8x8 blocks sit near there
MIN_STRENGTH = 30.0  # how deep the cepstrum's dip must lie (robust z) for a frame to be read as smeared
SURE, NONE = 9.0, 5.0  # a patch's own dip there: deconvolved pixels taken from SURE deep, none under NONE
LONG = 32.0  # pixels: smears longer than this are read in patches of the frame at half size
NSR = 0.005  # Wiener's noise-to-signal power ratio (0.002-0.05 tried on the smeared stills; docs/tracking.md)
_BLOCKS = (8, 16)  # pixels: codec blocks and macroblocks (and 8 px blocks enlarged twice) dip here, not smears
_EPS = 1e-3  # added to the power spectrum before the log (an all-flat patch stays finite)


@dataclass(frozen=True)
class MotionBlur:
    """A smear read off a frame: `length` pixels along `angle` degrees (0: sideways, 90: up and down; [0, 180)),
    and how deep the cepstrum dipped there (`strength`, median deviations)."""

    length: float
    angle: float
    strength: float

    @property
    def offset(self) -> tuple[int, int]:
        """The dip's place in the centred cepstrum, (dx, dy) pixels, dy >= 0."""
        a = np.radians(self.angle)
        dx, dy = round(self.length * np.cos(a)), round(-self.length * np.sin(a))
        return (-dx, -dy) if dy < 0 or (dy == 0 and dx < 0) else (dx, dy)


def line_kernel(length: float, angle: float) -> np.ndarray:
    """The point spread of a uniform smear: a line of `length` pixels at `angle` degrees through the kernel's
    centre, anti-aliased, summing to 1 (odd side, at least 3)."""
    length = max(float(length), 1.0)
    side = int(np.ceil(length)) + 2
    side += 1 - side % 2
    kernel = np.zeros((side, side), np.float64)
    centre = side // 2
    a = np.radians(angle)
    steps = np.linspace(-length / 2, length / 2, int(np.ceil(length * 4)) + 1)
    xs, ys = centre + steps * np.cos(a), centre - steps * np.sin(a)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (np.clip(y0 + dy, 0, side - 1), np.clip(x0 + dx, 0, side - 1)), w)
    return (kernel / kernel.sum()).astype(np.float32)


def smear(frame: np.ndarray, length: float, angle: float) -> np.ndarray:
    """`frame` smeared along a line (`line_kernel`), its edges mirrored: what a steady motion does to a
    picture (benchmarks, `scripts.degrade_stills --kind smear`, tests)."""
    return cv2.filter2D(frame, -1, line_kernel(length, angle), borderType=cv2.BORDER_REFLECT)


@functools.lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return np.outer(np.hanning(PATCH), np.hanning(PATCH)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _ring() -> np.ndarray:
    """The cepstrum's places a smear's dip is looked for: `MIN_LENGTH` - 2 to half a patch from the centre (a
    shorter smear's dip, found inside `MIN_LENGTH`, is not mistaken for a longer one on its slope), in the lower
    half (the cepstrum is symmetric), codec blocks' places (`_BLOCKS` straight across or down) left out."""
    centre = PATCH // 2
    dy, dx = np.mgrid[:PATCH, :PATCH] - centre
    radius = np.hypot(dx, dy)
    ring = (radius >= MIN_LENGTH - 2) & (radius <= centre - 2) & ((dy > 0) | ((dy == 0) & (dx > 0)))
    blocks = ((dx == 0) & np.isin(dy, _BLOCKS)) | ((dy == 0) & np.isin(dx, _BLOCKS))
    return ring & ~blocks


def _origins(height: int, width: int, limit: int | None) -> list[tuple[int, int]]:
    """Top-left corners of patches half overlapping over the frame; at most `limit`, evenly spread."""
    ys, xs = _starts(height), _starts(width)
    corners = [(y, x) for y in ys for x in xs]
    if limit is not None and len(corners) > limit:
        corners = [corners[i] for i in np.linspace(0, len(corners) - 1, limit).round().astype(int)]
    return corners


def _starts(length: int) -> list[int]:
    """Patch starts half a patch apart along a side of `length` >= PATCH, the last one flush with its end."""
    starts = list(range(0, length - PATCH + 1, PATCH // 2))
    return starts if starts[-1] == length - PATCH else [*starts, length - PATCH]


def _log_spectrum(grey: np.ndarray, y: int, x: int) -> np.ndarray:
    patch = grey[y : y + PATCH, x : x + PATCH]
    patch = (patch - patch.mean()) * _window()
    real, imaginary = cv2.split(cv2.dft(patch, flags=cv2.DFT_COMPLEX_OUTPUT))
    return cv2.log(cv2.magnitude(real, imaginary) ** 2 + _EPS)


def _cepstrum(log_spectrum: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.ifft2(log_spectrum).real)


def _spread(cepstrum: np.ndarray) -> tuple[float, float]:
    """Median and scaled median absolute deviation of the cepstrum over the ring."""
    values = cepstrum[_ring()]
    median = float(np.median(values))
    return median, float(np.median(np.abs(values - median))) * 1.4826 + 1e-12


def _grey(frame: np.ndarray) -> np.ndarray:
    grey = frame if frame.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGR2GRAY)
    return grey.astype(np.float32)


def motion_blur(frame: np.ndarray) -> MotionBlur | None:
    """The smear an (H, W, 3) BGR or (H, W) grey frame shows (see module), or None: no dip `MIN_STRENGTH` deep,
    or a frame under a patch on a side. A frame that shows none is read again at half size, where a long smear
    (beyond about `LONG` pixels) dips deeper in a patch."""
    grey = _grey(frame)
    for scale in (1, 2):
        if min(grey.shape) < PATCH * scale:
            return None
        small = grey if scale == 1 else cv2.resize(grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        blur = _dip(small)
        if blur is not None:
            return MotionBlur(blur.length * scale, blur.angle, blur.strength) if _in_one_field(small, blur) else None
    return None


def _in_one_field(grey: np.ndarray, blur: MotionBlur) -> bool:
    """Whether the frame's top field (its even rows, stretched back to the frame's height) dips at the same place
    at least half `MIN_STRENGTH` deep. A smear lies in each field; what is left of an interlaced frame's comb once
    `model.interlace` has mended it lies between the fields (the held-out images woven 8 px and mended dipped
    33-76 deep on the frame at a row's height, and 3 or less on the field; smeared ones 27-143 on the field)."""
    field = cv2.resize(grey[::2], (grey.shape[1], grey.shape[0]), interpolation=cv2.INTER_LINEAR)
    return _depth(_mean_cepstrum(field), blur) >= MIN_STRENGTH / 2


def _mean_cepstrum(grey: np.ndarray) -> np.ndarray:
    """The cepstrum of the log power spectrum averaged over at most `MAX_PATCHES` patches of `grey`."""
    return _cepstrum(np.mean([_log_spectrum(grey, y, x) for y, x in _origins(*grey.shape, MAX_PATCHES)], axis=0))


def _dip(grey: np.ndarray) -> MotionBlur | None:
    cepstrum = _mean_cepstrum(grey)
    median, spread = _spread(cepstrum)
    place = int(np.argmin(np.where(_ring(), cepstrum, np.inf)))
    y, x = np.unravel_index(place, cepstrum.shape)
    strength = (median - float(cepstrum[y, x])) / spread
    dx, dy = int(x) - PATCH // 2, int(y) - PATCH // 2
    level = median - 0.5 * strength * spread
    if strength < MIN_STRENGTH or np.hypot(dx, dy) < MIN_LENGTH or _grid(cepstrum, dx, dy, level):
        return None
    half = cepstrum[PATCH // 2 + round(dy / 2) - 1 : PATCH // 2 + round(dy / 2) + 2,
                    PATCH // 2 + round(dx / 2) - 1 : PATCH // 2 + round(dx / 2) + 2]
    if half.min() < level:  # the dip is a shorter smear's second one (a smear's cepstrum dips at L, 2L, ...)
        return None
    return MotionBlur(float(np.hypot(dx, dy)), float(np.degrees(np.arctan2(-dy, dx))) % 180.0, strength)


def _depth(cepstrum: np.ndarray, blur: MotionBlur) -> float:
    """How deep (robust z) `cepstrum` dips within a pixel of `blur`'s place."""
    dx, dy = blur.offset
    centre = PATCH // 2
    median, spread = _spread(cepstrum)
    near = cepstrum[centre + dy - 1 : centre + dy + 2, centre + dx - 1 : centre + dx + 2]
    return (median - float(near.min())) / spread


def _grid(cepstrum: np.ndarray, dx: int, dy: int, level: float) -> bool:
    """Whether a dip at (dx, dy) that lies straight across or down (within a pixel) is one of a grid's: the
    cepstrum dips below `level` as far along the other axis too. Codec blocks, and blocks enlarged with the
    picture (standard-definition video scaled up), dip along both axes; a pan's smear along one."""
    if min(abs(dx), abs(dy)) > 1:
        return False
    centre, length = PATCH // 2, max(abs(dx), abs(dy))
    near = slice(centre - 1, centre + 2)
    far = slice(centre + length - 1, centre + length + 2)  # the dip's distance along the other axis (dy >= 0)
    other = cepstrum[far, near] if abs(dy) <= 1 else cepstrum[near, far]
    return float(other.min()) < level


def _weights(grey: np.ndarray, blur: MotionBlur) -> np.ndarray:
    """(H, W) float32 in [0, 1]: how much of the deconvolved frame each pixel takes (see module). A smear longer
    than `LONG` is looked for in the patches of the frame at half size."""
    height, width = grey.shape
    scale = 2 if blur.length > LONG and min(height, width) >= 2 * PATCH else 1
    if scale == 2:
        grey = cv2.resize(grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        blur = MotionBlur(blur.length / 2, blur.angle, blur.strength)
    total = np.zeros(grey.shape, np.float32)
    mass = np.zeros(grey.shape, np.float32)
    blend = _window() + 1e-3  # a patch's own edge rows, where it is the only patch, still take its share
    for y, x in _origins(*grey.shape, None):
        depth = _depth(_cepstrum(_log_spectrum(grey, y, x)), blur)
        take = float(np.clip((depth - NONE) / (SURE - NONE), 0.0, 1.0))
        total[y : y + PATCH, x : x + PATCH] += take * blend
        mass[y : y + PATCH, x : x + PATCH] += blend
    weights = total / mass
    return weights if scale == 1 else cv2.resize(weights, (width, height), interpolation=cv2.INTER_LINEAR)


def _wiener(picture: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """`picture` (H, W, 3) uint8 deconvolved by `kernel`, float32, its edges mirrored first."""
    pad = 3 * kernel.shape[0]
    padded = cv2.copyMakeBorder(picture, pad, pad, pad, pad, cv2.BORDER_REFLECT).astype(np.float32)
    height, width = padded.shape[:2]
    spread = np.zeros((height, width), np.float32)
    k = kernel.shape[0]
    spread[:k, :k] = kernel
    spread = np.roll(spread, (-(k // 2), -(k // 2)), axis=(0, 1))
    response = np.fft.rfft2(spread)
    inverse = np.conj(response) / (np.abs(response) ** 2 + NSR)
    channels = [np.fft.irfft2(np.fft.rfft2(padded[..., c]) * inverse, s=(height, width)) for c in range(3)]
    return np.stack(channels, axis=-1)[pad : height - pad, pad : width - pad].astype(np.float32)


def deblur(frame: np.ndarray, trim_bars: bool = True) -> np.ndarray:
    """`frame` (H, W, 3) uint8 BGR deconvolved where it shows a steady smear (see module); else `frame` itself.
    With `trim_bars`, a frame's bars (`model.bars`) are left out of the estimate and the deconvolution."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        return frame
    area = picture_area(frame) if trim_bars else None
    x0, y0, x1, y1 = area or (0, 0, frame.shape[1], frame.shape[0])
    picture = frame[y0:y1, x0:x1]
    blur = motion_blur(picture)
    if blur is None:
        return frame
    weights = _weights(_grey(picture), blur)[..., None]
    sharp = _wiener(picture, line_kernel(blur.length, blur.angle))
    mixed = np.clip(weights * sharp + (1.0 - weights) * picture, 0, 255).round().astype(np.uint8)
    out = frame.copy()
    out[y0:y1, x0:x1] = mixed
    return out


class DeblurredFrames(FilteredFrames):
    """A `FrameReader` handing out `deblur(frame)` of `reader`'s frames (`FilteredFrames`)."""

    def __init__(self, reader: FrameReader, trim_bars: bool = True) -> None:
        super().__init__(reader)
        self.trim_bars = trim_bars

    def filter(self, frame: np.ndarray) -> np.ndarray:
        return deblur(frame, self.trim_bars)
