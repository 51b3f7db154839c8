"""People the whole-frame detector misses, found by MoveNet's person-centre heatmap over tiles (backbone movenet).

BlazePose's person detector (`model.backbones.detectors`) fires weakly or not at all on seated people. On
a PoseTrack frame of wheelchair dancers (1920x1080) it gave the seated dancers hits under its 0.5
threshold or none, and 4 of the 11 annotated people were never found. MoveNet's person-centre heatmap (64x64, one sigmoid per
cell) fires on every person in its square, not only on the one its decoding picks, seated people
included, when the person fills a good part of the square. Over 5x5 tiles of that frame (533 px) it had
no peak on three of the four missed dancers; over tiles of 310 px it peaked at 0.62-0.82 on all three.

`find_more_people` runs the network on a grid of overlapping square tiles (`centre_grid`, `grid_tiles`):
`GRID_MAX` along the long side where those tiles are `FINE_TILE_SIDE` pixels or more (frames of 930 px and
more), else tiles of at least `GRID_MIN_SIDE` pixels, 3 or more along the long side; along the short side as
many rows as overlap as much (45 tiles on a 1920x1080, 1280x720 or 960x540 frame). Frames too small for that
get `GRID_MIN` tiles per side while these keep the network's 256 px (`SMALL_GRID_SIDE`: 6 tiles on a 640x480
frame; none under 589 px). On a tile only the centre heatmap is computed (`MoveNetModel.centres`; the peak
scan 1.13x faster than whole passes, the same peaks). Each
heatmap peak of at least `MIN_CENTRE` is a candidate, unless it lies near the centre of someone found.
The network then looks at a tile-sized square centred on the candidate (its decoding prefers the person
at the centre), as it is and mirrored. The candidate becomes a person when:
- the chosen person's presence reaches `MIN_PRESENCE`;
- their upper body (shoulders, elbows, wrists, hips) scores `MIN_UPPER` on average;
- their box (the keypoints scoring `BOX_MIN_SCORE`, grown by `BOX_MARGIN`) lies on, inside or around
  nobody found (`detectors.lies_on`: IoU 0.3, 80% inside, as for the detector's weaker finds).
Seated people score low on their legs (0.3-0.45 over all limb joints on the dancers), so the limbs are not
asked to be sure.

The finer grid on frames of 930 to about 1900 px (2026-12-06; before, tiles of 300 px or more everywhere: 24
on 1280x720, 12 on 960x540): a person as tall relative to the frame fills a tile as much on 960x540 as on
1920x1080. The held-out images scaled to 2/3 and 1/2 (their PoseTrack frames 1280x720 and 960x540), with the
detector, old and new code alternated in one run: 225 -> 233 and 206 -> 222 of 304 limb joints within 0.1 x
box diagonal (the full-size images and the 640 px stills unchanged), the detection 1.13x and 1.3x slower.
Frames under 930 px keep the coarser grid: on the 640 px stills made noisy, dark and blurred, tiles of 150 px
placed 181 / 179 / 166 of 234 instead of 174 / 182 / 172, at 1.35x the time.

Measured with `Predictor.detect` (MoveNet backbone), before -> after, one run each:
- held-out real images, detector: limb joints within 0.1 x box diagonal 224 -> 231 of 304 (73.7% -> 76.0%),
  people found 25 -> 26 of 30, predictions 35 -> 39 (the others are unannotated spectators), AP 48.4 -> 47.7;
  time 19.4 -> 34.3 s for the 12 images (1.8x).
- real stills: unchanged (their 640 px frames get no grid).
- synthetic walks (480x360): unchanged.
A 9x9 grid (81 tiles on 1080p, rows overlapping far more) placed 235 of 304 at 2.1x; which dancers are
found depends on where the tiles fall.

Frames of 589-689 px got no grid at first: their tiles would be over half the frame, what the detector's own
views see. On clean photographs that holds (the real stills: 80.3% of limb joints with or without), but on
grey, noisy or dark ones the person detector loses people the centre heatmap still finds: real stills made
so (`scripts.degrade_stills`), limb joints placed with the detector, before -> after: grey 57.7% -> 62.4%,
noisy 51.7% -> 65.0%, dark 73.5% -> 77.8%; blurred (55.1%) and JPEG-15 (59.4%) unchanged; the held-out
images unchanged. It costs about 0.3 s more per 640 px frame (1.6 -> 1.9 s per still).

Scenes of small people on frames under 930 px (2026-12-07, twentieth session): where most of the people the
detector found are under half the usual tile's side (`small_people`), the usual grid's peaks are joined by those
of a finer grid, as many tiles of at least `SMALL_TILE_SIDE` pixels as fit (9 of 103 px along a 640x360 frame's
long side; 6 on 426x240, which gets no grid otherwise), looked at after the usual grid's own. On PoseTrack's
wheelchair dancers at 640x360 (people 60-120 px tall) the looks at the 278 px tiles' peaks found none of the six
the detector missed, the finer grid's four. The held-out images scaled to a long side of 640 and of 426 px
(`scripts.scaled_stills`), with the detector, before -> after: 202 -> 222 and 207 -> 217 of 304 limb joints
within 0.1 x box diagonal (the dancers 42 -> 62 and 49 -> 59 of 110, the other images unchanged),
`Predictor.detect` 1.14x and 1.09x the time; as no-label clips at 640 px 3058 -> 3200 of 4306 joints at 1.05x
the time; at 854 px 229 -> 230; the real stills, clean, grey, noisy, dark and
blurred, unchanged (no frame of theirs is such a scene: 1.0x). Asked of any one small person found, the finer
grid cost the stills 1.32x for nothing; asked of frames where nobody was found, a blank 640x360 frame 3.8x.

`MIN_PRESENCE` was 0.6. On blurred and grey stills the heatmap peaks on the people the detector lost, but the
look at them gives small people and people cut by the frame's edge a presence of 0.52-0.56; at 0.5 the
blurred stills went from 55.1% to 63.2% and the grey ones from 62.4% to 67.1%, the clean stills and held-out
images unchanged. No look at the animals of mmpose's test images reached 0.4, clean or degraded, and the
people it adds that were looked at (held-out images, the stills' camera clips) are real, unannotated ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from annotation_io.types import Box
from model.backbones.detectors import DEDUPE_IOU, lies_on, mostly_inside
from model.backbones.landmarks import box_iou
from model.backbones.movenet import INPUT_SIDE, MoveNetModel, average_flip
from model.transforms import square_view_rgb

__all__ = ["boxed_people", "centre_grid", "find_more_people", "grid_tiles", "small_people"]

GRID_MIN_SIDE = 300  # tiles are at least this many pixels ...
GRID_MAX = 9  # ... and at most this many per side ...
GRID_MIN = 3  # ... and at least this many (fewer, larger tiles see what the detector's whole-frame and 3x3 views see)
FINE_TILE_SIDE = 150  # but a frame whose GRID_MAX tiles are this large gets GRID_MAX (people as large in a tile as on 1080p)
SMALL_TILE_SIDE = 100  # where the people found are small (`small_people`), as many tiles as are this large, up to GRID_MAX
SMALL_PERSON = 0.5  # a person whose box's long side is under this x the frame's usual tile is small
GRID_OVERLAP = 0.35  # neighbouring tiles share this share of their side
SMALL_GRID_SIDE = INPUT_SIDE  # smaller frames get GRID_MIN tiles per side while these are no smaller than this
MIN_CENTRE = 0.4  # a centre-heatmap peak this high is a candidate
PEAK_APART = 0.125  # peaks closer than this x the tile side are one candidate
CENTRE_OF_FOUND = 0.25  # a peak within this x a found box's size of its centre is that person
MIN_PRESENCE = 0.5  # the looked-at person's centre heatmap value to be a person ...
MIN_UPPER = 0.35  # ... and the mean score of their shoulders, elbows, wrists and hips
BOX_MIN_SCORE = 0.2  # keypoints scoring this much make the person's box ...
BOX_MARGIN = 0.1  # ... grown by this x its long side on each side
BOX_LOOK = 1.25  # a box is looked at on a square of this x its long side, centred on it
MIN_BOX_SCORE = 0.3  # a box detector's boxes scoring this much are looked at
MIN_POSE_FIT = 0.3  # and the pose's box must overlap the box by this IoU (not a neighbour's pose)
MIN_PAIR_SCORE = 0.4  # a found box holding two boxes that score this much ...
PAIR_APART = 0.3  # ... overlapping each other by less than this IoU ...
PAIR_FIT = 0.6  # ... whose joint extent overlaps it by this IoU ...
PAIR_GAIN = 0.1  # ... and by this much more than either alone, holds two people
SAME_JOINT = 0.1  # two looks whose shared joints lie this close (x the poses' extent) found one person
PAIR_TRIES = 2  # the best fitting this many pairs in a found box are looked at
MAX_LOOKS = 20  # the best this many candidates are looked at (two passes each; a crowd has many peaks)
_UPPER = slice(5, 13)  # COCO shoulders, elbows, wrists, hips


def centre_grid(width: int, height: int, small: bool = False) -> int:
    """Tiles along the long side of a frame's grid: `GRID_MAX` where those tiles are `FINE_TILE_SIDE` pixels or
    more (a long side of 930 px or more), else as many as keep tiles of `GRID_MIN_SIDE` pixels; `GRID_MIN` on
    smaller frames whose tiles would still be `SMALL_GRID_SIDE` pixels or more; 0 on frames too small for that.
    With `small` (the people found are small, `small_people`), as many as keep tiles of `SMALL_TILE_SIDE`
    pixels where that is more (up to `GRID_MAX`, `GRID_MIN` at least)."""
    long_side = max(width, height)
    if _tile_side(long_side, GRID_MAX) >= FINE_TILE_SIDE:
        return GRID_MAX
    n = min(_tiles_of(long_side, GRID_MIN_SIDE), GRID_MAX)
    if n < GRID_MIN:
        n = GRID_MIN if _tile_side(long_side, GRID_MIN) >= SMALL_GRID_SIDE else 0
    if small:
        finer = min(_tiles_of(long_side, SMALL_TILE_SIDE), GRID_MAX)
        if finer >= max(n + 1, GRID_MIN):
            return finer
    return n


def _tiles_of(long_side: float, side: float) -> int:
    """How many tiles of at least `side` pixels, neighbours overlapping by `GRID_OVERLAP`, span `long_side`."""
    return int((long_side / side - GRID_OVERLAP) / (1.0 - GRID_OVERLAP))


def small_people(width: int, height: int, found: Sequence[Box]) -> bool:
    """Whether most of the people found on a frame (more than half) are small for its usual grid (`centre_grid`
    without `small`): their box's long side is under `SMALL_PERSON` x that grid's tile (x `SMALL_GRID_SIDE` on
    frames with none). People that small fill too little of a tile for the centre heatmap to peak on them, and
    a scene of small people (a crowd filmed from afar) holds more of them. A frame with nobody found is not such
    a scene: an empty frame would pay the finer grid for nothing."""
    n = centre_grid(width, height)
    tile = _tile_side(max(width, height), n) if n else float(SMALL_GRID_SIDE)
    small = sum(max(b.w, b.h) < SMALL_PERSON * tile for b in found)
    return 2 * small > len(found)


def _tile_side(long_side: float, n: int) -> float:
    """The side of `n` tiles along a frame's long side, neighbours overlapping by `GRID_OVERLAP`."""
    return long_side / (n - (n - 1) * GRID_OVERLAP)


def grid_tiles(width: int, height: int, n: int) -> list[tuple[float, float, float]]:
    """The grid's squares as (centre x, centre y, side): `n` along the long side, and along the short side
    as few as overlap by `GRID_OVERLAP` or more (5 rows, not 9, on a 1920x1080 frame)."""
    side = _tile_side(max(width, height), n)
    step = side * (1.0 - GRID_OVERLAP)

    def centres(length: int) -> list[float]:
        if side >= length:
            return [length / 2.0]
        count = int(np.ceil((length - side) / step - 1e-9)) + 1
        return np.linspace(side / 2.0, length - side / 2.0, count).tolist()

    return [(x, y, side) for y in centres(height) for x in centres(width)]


def _square(frame_bgr: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
    """The frame's square of `side` pixels centred on (cx, cy) as network input (RGB, black outside)."""
    k = INPUT_SIDE / side
    return square_view_rgb(frame_bgr, k, (INPUT_SIDE / 2.0 - k * cx, INPUT_SIDE / 2.0 - k * cy), INPUT_SIDE)


def _peaks(model: MoveNetModel, frame_bgr: np.ndarray, n: int) -> list[tuple[float, float, float, float]]:
    """Centre-heatmap peaks over the grid: (x, y, peak, tile side), highest first."""
    height, width = frame_bgr.shape[:2]
    peaks = []
    for cx, cy, side in grid_tiles(width, height, n):
        centres = model.centres(_square(frame_bgr, cx, cy, side))
        local = centres == cv2.dilate(centres, np.ones((5, 5), np.uint8))
        cell = side / centres.shape[0]
        for r, c in zip(*np.nonzero(local & (centres >= MIN_CENTRE))):
            peaks.append((cx - side / 2.0 + (c + 0.5) * cell, cy - side / 2.0 + (r + 0.5) * cell,
                          float(centres[r, c]), side))
    peaks.sort(key=lambda p: -p[2])
    return peaks


def _at_centre_of(x: float, y: float, boxes: Sequence[Box]) -> bool:
    return any(abs(x - (b.x + b.w / 2.0)) <= CENTRE_OF_FOUND * b.w
               and abs(y - (b.y + b.h / 2.0)) <= CENTRE_OF_FOUND * b.h for b in boxes)


def _look_at(model: MoveNetModel, frame_bgr: np.ndarray, cx: float, cy: float,
             side: float) -> tuple[np.ndarray, float]:
    """The person MoveNet picks on the square of `side` centred on (cx, cy), as it is and mirrored,
    averaged: (17, 3) x, y in frame pixels and score; and the lower of the two presences."""
    square = _square(frame_bgr, cx, cy, side)
    kp, _, presence = model.look(square)
    mirrored, _, presence_m = model.look(np.ascontiguousarray(square[:, ::-1]))
    kp = average_flip(kp, mirrored, INPUT_SIDE)
    scale = side / INPUT_SIDE
    kp[:, 0] = cx + (kp[:, 0] - INPUT_SIDE / 2.0) * scale
    kp[:, 1] = cy + (kp[:, 1] - INPUT_SIDE / 2.0) * scale
    return kp, min(presence, presence_m)


def _person(kp: np.ndarray, presence: float) -> tuple[Box, float] | None:
    """A look's pose as a person: the box of its keypoints scoring `BOX_MIN_SCORE` (3 at least) and its
    upper-body score, where the presence and upper body reach `MIN_PRESENCE` and `MIN_UPPER`; else None."""
    upper = float(kp[_UPPER, 2].mean())
    sure = kp[kp[:, 2] >= BOX_MIN_SCORE, :2]
    if presence < MIN_PRESENCE or upper < MIN_UPPER or len(sure) < 3:
        return None
    (x1, y1), (x2, y2) = sure.min(0), sure.max(0)
    return Box.from_xyxy(x1, y1, x2, y2), upper


def find_more_people(model: MoveNetModel, frame_bgr: np.ndarray, found: Sequence[Box],
                     max_people: int = 20) -> list[tuple[Box, float]]:
    """People MoveNet's centre heatmap finds on the frame beside `found` (see the module doc).

    Args:
        model: MoveNet Thunder.
        frame_bgr: (H, W, 3) uint8 BGR frame.
        found: boxes of the people found already (frame pixels).
        max_people: most people to add.

    Returns:
        (box clipped to the frame, score) per person added, surest first; the score is presence x upper-body
        score. Empty on frames too small for a grid (`centre_grid`), unless most people found are small.
    """
    if max_people < 1:
        return []
    height, width = frame_bgr.shape[:2]
    usual = centre_grid(width, height)
    finer = centre_grid(width, height, small=True) if small_people(width, height, found) else usual
    candidates: list[tuple[float, float, float, float]] = []
    for n in dict.fromkeys(g for g in (usual, finer) if g):  # the usual grid's peaks first: larger people
        for p in _peaks(model, frame_bgr, n):
            if all(np.hypot(p[0] - q[0], p[1] - q[1]) > PEAK_APART * p[3] for q in candidates):
                candidates.append(p)
    added: list[tuple[Box, float]] = []
    looks = 0
    for x, y, _, side in candidates:
        taken = list(found) + [b for b, _ in added]
        if _at_centre_of(x, y, taken):
            continue
        if looks == MAX_LOOKS:
            break
        looks += 1
        kp, presence = _look_at(model, frame_bgr, x, y, side)
        person = _person(kp, presence)
        if person is None:
            continue
        tight, upper = person
        pad = BOX_MARGIN * max(tight.w, tight.h)
        box = Box(tight.x - pad, tight.y - pad, tight.w + 2 * pad, tight.h + 2 * pad).clip(width, height)
        if box.w < 2 or box.h < 2 or lies_on(box, taken):
            continue
        added.append((box, presence * upper))
        if len(added) == max_people:
            break
    added.sort(key=lambda a: -a[1])
    return added


def _confirmed(model: MoveNetModel, frame_bgr: np.ndarray, box: Box) -> tuple[np.ndarray, float] | None:
    """MoveNet's look at a box detector's `box` (a square of `BOX_LOOK` x its long side on its centre): the
    pose ((17, 3) COCO keypoints in frame pixels) and its upper-body score where the look's presence, upper
    body and fit to the box (the box of its keypoints scoring `BOX_MIN_SCORE`) pass (`MIN_PRESENCE`,
    `MIN_UPPER`, `MIN_POSE_FIT`), else None."""
    kp, presence = _look_at(model, frame_bgr, box.x + box.w / 2.0, box.y + box.h / 2.0, BOX_LOOK * max(box.w, box.h))
    person = _person(kp, presence)
    if person is None or box_iou(person[0], box) < MIN_POSE_FIT:
        return None
    return kp, person[1]


def _one_pose(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two looks found one person: of the joints both score `BOX_MIN_SCORE`, at least 3, half lie
    within `SAME_JOINT` x the poses' joint extent of each other."""
    both = (a[:, 2] >= BOX_MIN_SCORE) & (b[:, 2] >= BOX_MIN_SCORE)
    if both.sum() < 3:
        return False
    xy = np.concatenate([a[both, :2], b[both, :2]])
    extent = float(np.max(xy.max(0) - xy.min(0)))
    return float(np.median(np.hypot(*(a[both, :2] - b[both, :2]).T))) <= SAME_JOINT * extent


def _pairs_in(box: Box, hits: Sequence[tuple[Box, float]]) -> list[tuple[Box, Box]]:
    """Pairs of sure hits (`MIN_PAIR_SCORE`) that `box` may hold as one (see `boxed_people`), best fitting first."""
    inside = [b for b, s in hits if s >= MIN_PAIR_SCORE and mostly_inside(b, box)]
    pairs: list[tuple[float, tuple[Box, Box]]] = []
    for i, a in enumerate(inside):
        for b in inside[i + 1:]:
            if box_iou(a, b) >= PAIR_APART:
                continue
            x1, y1, x2, y2 = min(a.x, b.x), min(a.y, b.y), max(a.x + a.w, b.x + b.w), max(a.y + a.h, b.y + b.h)
            fit = box_iou(Box.from_xyxy(x1, y1, x2, y2), box)
            if fit >= PAIR_FIT and fit >= max(box_iou(a, box), box_iou(b, box)) + PAIR_GAIN:
                pairs.append((fit, (a, b)))
    pairs.sort(key=lambda p: -p[0])
    return [pair for _, pair in pairs]


def boxed_people(model: MoveNetModel, frame_bgr: np.ndarray, hits: Sequence[tuple[Box, float]], found: Sequence[Box],
                 max_people: int = 20) -> list[Box]:
    """`found` with what a box detector's `hits` (CenterNet's, `model.backbones.centernet`) add, at most
    `max_people` in all.

    - A found box that holds two people as one is split: two sure hits (`MIN_PAIR_SCORE`) mostly inside it
      (`detectors.mostly_inside`) that overlap each other little (IoU under `PAIR_APART`), whose joint extent fits
      the box (IoU `PAIR_FIT`) better than either alone does (by `PAIR_GAIN`), that MoveNet's look
      confirms each (`_confirmed`) as someone else (`_one_pose`: two parts of one person, an upper body and
      legs, give one pose twice), replace it (the second dropped where it is someone found already, IoU
      over `DEDUPE_IOU`). Seen on four cross-country skiers of 80-120 px who overlap two by two:
      BlazePose's detector boxed each pair as one person.
    - Each hit scoring `MIN_BOX_SCORE` that lies on nobody (`detectors.lies_on`) and that the look confirms
      is added, surest first (its score: hit score x upper-body score).
    """
    height, width = frame_bgr.shape[:2]
    boxes = list(found)
    looks = 0
    for k, box in enumerate(list(boxes)):
        for pair in _pairs_in(box, hits)[:PAIR_TRIES]:
            if looks + 2 > MAX_LOOKS:
                break
            looks += 2
            first, second = (_confirmed(model, frame_bgr, b) for b in pair)
            if first is None or second is None or _one_pose(first[0], second[0]):
                continue  # not two people (two parts of one, as the looks find one pose in both)
            others = boxes[:k] + boxes[k + 1:]
            boxes[k] = pair[0].clip(width, height)
            if all(box_iou(pair[1], o) <= DEDUPE_IOU for o in others):  # not someone found already
                boxes.append(pair[1].clip(width, height))
            break
    added: list[tuple[Box, float]] = []
    for box, score in sorted(hits, key=lambda h: -h[1]):
        if score < MIN_BOX_SCORE or len(boxes) + len(added) >= max_people or looks == MAX_LOOKS:
            break
        if lies_on(box, boxes + [b for b, _ in added]):
            continue
        looks += 1
        seen = _confirmed(model, frame_bgr, box)
        if seen is not None:
            added.append((box.clip(width, height), score * seen[1]))
    added.sort(key=lambda a: -a[1])
    return (boxes + [b for b, _ in added])[:max_people]
