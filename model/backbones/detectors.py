"""Whole-frame person detectors, used where no box is known: BlazePose's person detector, then OpenCV HOG.

`PersonDetector` runs ``pose_detection.tflite`` (bundled in mediapipe 0.10.21) directly, on the whole
frame and on overlapping square tiles (small people), and decodes its SSD output itself. Model, measured
on 0.10.21: input 224x224 RGB in [-1, 1]; outputs (2254 x 12) regressors and (2254,) score logits.
Anchors are mediapipe's SSD anchors with its pose-detection options: strides 8, 16, 32, 32, 32 (layers
of equal stride share one grid), 2 anchors per cell per layer, offset 0.5, fixed size:
28x28x2 + 14x14x2 + 7x7x6 = 2254. Per anchor the 12 values are input-pixel offsets from the anchor
centre: box centre x, y, width, height, then 4 keypoints (hip centre, full-body scale point, shoulder
centre, upper-body scale point). Score = sigmoid(logit clipped to +-100) >= 0.5; overlapping hits are
merged by weighted non-maximum suppression (IoU 0.3, mediapipe's WEIGHTED mode).

`detect_people` confirms each detection with the landmark model on the detection's ROI (plus two
re-alignment passes) and returns the confirmed pose's body box (`PoseResult.body_box`: confident
landmarks, hands, feet and head top, as an annotator draws a person box). Measured on the
real stills (9 photographs, 21 people; limb joints within 0.1 x box diagonal): iterated single-person
BlazePose 49%; whole frame only 37.6%; + 2x2 tiles 55.1%; + 3x3 tiles 79.1% (~0.7 s per image on 2
cores); + 4x4 tiles 71.8% (tiles cut people apart).

The detector finds people who fill a good part of its 224-pixel input, so on large frames (PoseTrack's
1280x720 and 1920x1080) the 3x3 tiles miss people under ~250 px tall: on three PoseTrack 2018 val frames
(wheelchair dancers, a ballroom couple, wrestlers; 14 people) the 3x3 detector placed 22 of 141 limb
joints. Frames whose long side allows it also get a finer grid (`fine_tiles`: 5x5 to 7x7, no tile under
`MIN_TILE_SIDE` pixels, so a 640-pixel photograph gets none): 22 -> 62 of 141 on those frames, and the
detector takes 3-7x as long on them (49 more detector runs, 6-50 more landmark passes). A frame returns
up to 20 people (was 8; the dancers' frame alone has 11 annotated). Finer tiles also see parts of
people (a back, a wheel) as people: a person only the finer grid finds is dropped when their box
lies mostly inside a much larger one the coarser views found (`_is_part`); their pose score must be
0.8, not 0.5; and their box may be at most half a coarse tile long (a person larger than that is the
coarse views' to find, and the larger finds of the finer grid were mostly parts). On the nine real stills scaled to 1920 px, boxes matching nobody annotated (background
players, and some junk) went 6 -> 7 with the finer grid (11 without the size limit), all 21 people found
either way. The part rule applied to every find also dropped real people (an acrobat inside her
partner's box), so it is kept to the finer grid's finds.

The detector's alignment points of a poor hit can claim a person upside down or lying, and the landmark
model then rejects a crop turned that way around someone upright (seen on a wheelchair dancer of a
PoseTrack frame, hit at -173 degrees: pose score 0.36 aligned, 1.00 upright). A hit aligned more than
`UPRIGHT_RETRY` (1.5 rad) from upright whose pass is rejected gets one upright pass at the same place
(`_confirm`); a person it finds whose box lies mostly inside someone else's is a part of them (a leg on an
OCHuman still). Held-out images (12 photographs, 30 people): limb joints within 0.1 x box diagonal 60.9%
-> 63.2%, people found 22 -> 23, predictions 37 -> 38, poseval AP 41.0 -> 42.9; the nine stills unchanged
(78.2%, 24 predictions); landmark passes +10% (123 -> 135 and 240 -> 267), detector runs unchanged.

People the frame's edge cuts (a catcher half out of the shot, a skier leaving it) score under the
detector's threshold: their hits at 0.2-0.5 reach the edge. Such a weak hit whose region reaches the edge
and lies on nobody found gets the landmark pass too (`_confirm_edge`), and becomes a person when the pose
scores 0.8, stands upright, and its body box reaches the edge as well and lies on, inside or around
nobody found (sure poses lying across a synthetic frame, or around its walker, were false people). On
the real stills as 16-frame camera clips (no labels), person-frames found went 189 -> 207 of 336
(predictions 263 -> 290); on the photographs no annotated person was added, and the two people added on
the held-out ones (a spectator, someone at the edge of a curling shot) are real but not annotated;
landmark passes +22% in detector mode. A lower threshold everywhere (0.4, 0.3) added more false people
than people.

With the movenet backbone, the predictor also looks for the seated and small people this detector does
not fire on with MoveNet's person-centre heatmap over tiles (`model.backbones.movenet_people`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from annotation_io.types import Box
from model.backbones.blazepose import BlazePoseBackbone, check_image
from model.backbones.landmarks import LandmarkModel, PoseResult, Roi, box_iou
from model.backbones.tflite import TfliteGraph
from model.transforms import square_view_rgb

logger = logging.getLogger(__name__)

__all__ = ["Detection", "PersonDetector", "PersonFound", "detect_people", "find_people", "hog_hits", "hog_people",
           "lies_on", "mostly_inside", "ssd_anchors"]

DETECTOR_MODEL = "mediapipe/modules/pose_detection/pose_detection.tflite"
SIDE = 224  # detector input side
TILES = 3  # tiles per side (plus the whole frame)
TILE_OVERLAP = 0.35
FINE_TILES = (5, 7)  # a frame gets a finer grid of this many tiles per side at least and at most ...
MIN_TILE_SIDE = 256  # ... when its tiles are no smaller than this many pixels
PART_INSIDE = 0.8  # a person the finer grid alone finds, with this share of their box inside the box of ...
PART_AREA = 0.35  # ... someone the coarser views found that is over 1 / PART_AREA times larger, is a part of them
MIN_DETECTION_SCORE = 0.5
MIN_POSE_SCORE = 0.5
FINE_MIN_POSE_SCORE = 0.8  # the finer grid sees more clutter: its hits need a surer pose to be people
FINE_MAX_SIDE = 0.5  # and it adds only people whose box is at most this x a coarse tile's side
FINE_ROI_SKIP = 2.5  # its hits whose ROI is this x larger than that are not confirmed (their boxes would be)
DEDUPE_IOU = 0.5  # confirmed people whose boxes overlap more are one person
EDGE_MIN_DETECTION_SCORE = 0.2  # a weaker hit at the frame's edge is looked at too (a person the edge cuts) ...
EDGE_MIN_POSE_SCORE = 0.8  # ... and becomes a person when its pose is this sure ...
EDGE_MARGIN = 0.03  # ... and its box reaches within this x the frame's long side of the edge
UPRIGHT_RETRY = 1.5  # radians: a hit aligned this far from upright that its pass rejects gets an upright pass
_HOG_LONG_SIDE = 800  # HOG runs on the frame scaled to this long side
HOG_NEW_IOU = 0.3  # a HOG hit overlapping someone found by more (or inside them, or holding them) is theirs
HOG_ROI_SCALE = 1.1  # a HOG hit's landmark ROI: upright square on its centre, this x its height
HOG_MIN_POSE_SCORE = 0.9  # HOG fires on car doors and railings: its hits need a sure pose to be people
HOG_MIN_FIT = 0.3  # and the pose's body box must overlap the hit by this IoU (not a neighbour's pose)
HOG_MAX_HITS = 20  # the best this many HOG hits are looked at (real frames give 0-6; a crowd or a fence more)
_UPRIGHT_CHAIN = ((11, 12), (23, 24), (27, 28))  # BlazePose shoulders, hips, ankles: top to bottom when upright


def ssd_anchors(input_size: int = SIDE, strides: Sequence[int] = (8, 16, 32, 32, 32),
                offset: float = 0.5) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1], in mediapipe's SsdAnchorsCalculator order (fixed anchor size)."""
    centres: list[tuple[float, float]] = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        per_cell = 2 * (j - i)  # aspect ratio 1 and the interpolated scale, per layer
        cells = int(np.ceil(input_size / strides[i]))
        for y in range(cells):
            for x in range(cells):
                centres.extend([((x + offset) / cells, (y + offset) / cells)] * per_cell)
        i = j
    return np.asarray(centres, dtype=np.float64)


@dataclass(frozen=True)
class Detection:
    """A detector hit in frame pixels: its box, 4 keypoints (4, 2) and score."""

    box: Box
    keypoints: np.ndarray
    score: float

    def roi(self) -> Roi:
        """The landmark model's ROI: square on the hip centre, side 2 x hip-to-scale-point x 1.25."""
        return Roi.from_alignment(self.keypoints[0], self.keypoints[1])


def weighted_nms(dets: list[Detection], iou: float = 0.3) -> list[Detection]:
    """mediapipe's weighted NMS: each cluster of overlapping hits becomes its score-weighted mean."""
    order = sorted(dets, key=lambda d: -d.score)
    out: list[Detection] = []
    while order:
        top = order[0]
        cluster = [d for d in order if box_iou(top.box, d.box) > iou]
        order = [d for d in order if box_iou(top.box, d.box) <= iou]
        w = np.array([d.score for d in cluster])
        xywh = np.sum([np.array(d.box.xywh) * s for d, s in zip(cluster, w)], axis=0) / w.sum()
        kps = np.sum([d.keypoints * s for d, s in zip(cluster, w)], axis=0) / w.sum()
        out.append(Detection(Box(*map(float, xywh)), kps, top.score))
    return out


def _views(width: int, height: int, tiles: int, overlap: float) -> list[tuple[float, float, float, float]]:
    """The whole frame and a tiles x tiles grid of overlapping squares (x, y, w, h)."""
    views = [(0.0, 0.0, float(width), float(height))]
    if tiles >= 2:
        side = _tile_side(width, height, tiles, overlap)
        ys = [0.0] if side >= height else np.linspace(0.0, height - side, tiles).tolist()
        xs = [0.0] if side >= width else np.linspace(0.0, width - side, tiles).tolist()
        views += [(x, y, side, side) for y in ys for x in xs]
    return views


def _tile_side(width: int, height: int, tiles: int, overlap: float) -> float:
    """The side of a tiles x tiles grid's squares (the frame's long side for fewer than 2 tiles)."""
    long_side = float(max(width, height))
    return min(long_side / (tiles - (tiles - 1) * overlap), long_side) if tiles >= 2 else long_side


def fine_tiles(width: int, height: int, overlap: float = TILE_OVERLAP) -> int:
    """Tiles per side of a frame's finer grid (`FINE_TILES`), or 0 when its tiles would be under `MIN_TILE_SIDE`."""
    most = int((max(width, height) / MIN_TILE_SIDE - overlap) / (1.0 - overlap))
    n = min(most, FINE_TILES[1])
    return n if n >= FINE_TILES[0] else 0


class PersonDetector:
    """``pose_detection.tflite`` on letterboxed square views of a frame (whole frame + tiles)."""

    def __init__(self) -> None:
        self._graph = TfliteGraph(DETECTOR_MODEL, (SIDE, SIDE), (-1.0, 1.0), 2)
        self._anchors = ssd_anchors() * SIDE
        self.calls = 0

    def close(self) -> None:
        self._graph.close()

    def detect_view(self, frame_bgr: np.ndarray, view: Sequence[float],
                    min_score: float = MIN_DETECTION_SCORE) -> list[Detection]:
        """Detections inside one view (x, y, w, h) of the frame, letterboxed (black) into 224x224."""
        return weighted_nms(self._raw_view(frame_bgr, view, min_score))

    def _raw_view(self, frame_bgr: np.ndarray, view: Sequence[float], min_score: float) -> list[Detection]:
        """`detect_view` before non-maximum suppression."""
        x, y, w, h = (float(v) for v in view)
        k = SIDE / max(w, h)
        ox, oy = (SIDE - w * k) / 2.0, (SIDE - h * k) / 2.0
        raw, logits = self._graph.run(square_view_rgb(frame_bgr, k, (ox - k * x, oy - k * y), SIDE))
        self.calls += 1
        raw = raw.reshape(-1, 12).astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
        dets = []
        for i in np.flatnonzero(scores >= min_score):
            a = self._anchors[i]
            cx, cy, bw, bh = raw[i, 0] + a[0], raw[i, 1] + a[1], raw[i, 2], raw[i, 3]
            box = Box((cx - bw / 2 - ox) / k + x, (cy - bh / 2 - oy) / k + y, bw / k, bh / k)
            kps = (raw[i, 4:].reshape(4, 2) + a - [ox, oy]) / k + [x, y]
            dets.append(Detection(box, kps, float(scores[i])))
        return dets

    def detect(self, frame_bgr: np.ndarray, *, tiles: int = TILES, overlap: float = TILE_OVERLAP,
               min_score: float = MIN_DETECTION_SCORE) -> list[Detection]:
        """Detections on the whole frame and on `tiles` x `tiles` overlapping squares, merged."""
        h, w = frame_bgr.shape[:2]
        return self._detect_views(frame_bgr, _views(w, h, tiles, overlap), min_score)

    def detect_split(self, frame_bgr: np.ndarray, *, tiles: int = TILES, overlap: float = TILE_OVERLAP,
                     min_score: float = MIN_DETECTION_SCORE,
                     weak_score: float = EDGE_MIN_DETECTION_SCORE) -> tuple[list[Detection], list[Detection]]:
        """`detect`'s detections, and apart from them (merged among themselves only) the weaker hits
        scoring `weak_score` up to `min_score`, from the same runs of the model."""
        h, w = frame_bgr.shape[:2]
        sure: list[Detection] = []
        weak: list[Detection] = []
        for view in _views(w, h, tiles, overlap):
            raw = self._raw_view(frame_bgr, view, min(weak_score, min_score))
            sure += weighted_nms([d for d in raw if d.score >= min_score])
            weak += weighted_nms([d for d in raw if d.score < min_score])
        return weighted_nms(sure), weighted_nms(weak)

    def detect_fine(self, frame_bgr: np.ndarray, *, overlap: float = TILE_OVERLAP,
                    min_score: float = MIN_DETECTION_SCORE) -> list[Detection]:
        """Detections on the frame's finer grid of tiles (`fine_tiles`) alone; none where it has none."""
        h, w = frame_bgr.shape[:2]
        n = fine_tiles(w, h, overlap)
        return self._detect_views(frame_bgr, _views(w, h, n, overlap)[1:], min_score) if n else []

    def _detect_views(self, frame_bgr: np.ndarray, views: list[tuple[float, float, float, float]],
                      min_score: float) -> list[Detection]:
        dets: list[Detection] = []
        for view in views:
            dets += self.detect_view(frame_bgr, view, min_score)
        return weighted_nms(dets)


@dataclass(frozen=True)
class PersonFound:
    """A confirmed person: its body box (`PoseResult.body_box`), its pose and a score."""

    box: Box
    pose: PoseResult
    score: float


def find_people(detector: PersonDetector, landmarks: LandmarkModel, frame_bgr: np.ndarray, *,
                tiles: int = TILES, fine: bool = True, hog: bool | Sequence[tuple[Box, float]] = True,
                edge: bool = True, min_pose_score: float = MIN_POSE_SCORE, realign: int = 2) -> list[PersonFound]:
    """People on a frame: detector hits confirmed by the landmark model, duplicates merged, best first.

    A hit becomes a person when the landmark pass on its ROI (then up to `realign` passes on the
    pose's own alignment ROI, each kept when its score is >= 0.9 x the previous) has pose score >=
    `min_pose_score`. With `fine`, hits on the frame's finer grid (`PersonDetector.detect_fine`, where it
    is finer than `tiles`) add the people they confirm with pose score >= FINE_MIN_POSE_SCORE and a box
    no longer than FINE_MAX_SIDE x a coarse tile's side (people the coarse views miss are small; hits
    whose ROI is FINE_ROI_SKIP x that are not confirmed at all), except parts of people the coarser
    views found (`_is_part`). A hit aligned more than `UPRIGHT_RETRY` from upright whose pass is rejected
    gets a second pass on an upright ROI at the same place and size; the person it confirms is added
    unless their box lies mostly (`PART_INSIDE`) inside the box of someone found otherwise. People whose
    boxes overlap by IoU > 0.5 are merged (the higher score kept).

    With `edge`, the detector's weaker hits (`EDGE_MIN_DETECTION_SCORE` up to `MIN_DETECTION_SCORE`) that
    reach the frame's edge and overlap nobody found are looked at too (`_confirm_edge`): people the edge
    cuts (a catcher half out of the shot) score near the threshold. They become people when their pose
    scores `EDGE_MIN_POSE_SCORE` and stands upright, and its body box reaches the edge too and lies on,
    inside or around nobody found.

    With `hog`, OpenCV's HOG people detector looks for the upright people BlazePose's detector misses
    (people seen from behind, about 100-250 px tall, as on a street): each HOG hit that overlaps nobody
    found (`HOG_NEW_IOU`) gets the landmark pass on an upright ROI around it, and becomes a person when
    the pose scores `HOG_MIN_POSE_SCORE` and its body box overlaps the hit (`HOG_MIN_FIT`). Their score
    is the pose score x `MIN_DETECTION_SCORE`: after the detector's people of equal pose score. `hog` may
    also be the frame's `hog_hits`, found already by the caller.
    """
    hits, weak = (detector.detect_split(frame_bgr, tiles=tiles) if edge
                  else (detector.detect(frame_bgr, tiles=tiles), []))
    found, upright = _confirm(hits, landmarks, frame_bgr, min_pose_score, realign)
    if fine and fine_tiles(frame_bgr.shape[1], frame_bgr.shape[0]) > tiles:
        h, w = frame_bgr.shape[:2]
        most = FINE_MAX_SIDE * _tile_side(w, h, tiles, TILE_OVERLAP)  # the coarse views' own people are larger
        hits = [d for d in detector.detect_fine(frame_bgr) if d.roi().size <= FINE_ROI_SKIP * most]
        small, small_upright = _confirm(hits, landmarks, frame_bgr, max(min_pose_score, FINE_MIN_POSE_SCORE), realign)
        found += [p for p in small
                  if max(p.box.w, p.box.h) <= most and not any(_is_part(p.box, q.box) for q in found)]
        upright += [p for p in small_upright if max(p.box.w, p.box.h) <= most]
    found += [p for p in upright if not any(mostly_inside(p.box, q.box) for q in found)]
    found.sort(key=lambda p: -p.score)
    kept: list[PersonFound] = []
    for p in found:
        if all(box_iou(p.box, q.box) <= DEDUPE_IOU for q in kept):
            kept.append(p)
    if weak:
        kept += _confirm_edge(weak, kept, landmarks, frame_bgr, realign)
    if hog is not False:
        hog_found = hog_hits(frame_bgr) if hog is True else list(hog)
        kept += _confirm_hog(hog_found, kept, landmarks, frame_bgr, realign)
    kept.sort(key=lambda p: -p.score)
    return kept


def _at_edge(box: Box, width: int, height: int) -> bool:
    """Whether `box` reaches within `EDGE_MARGIN` x the frame's long side of one of its edges (or past it)."""
    x1, y1, x2, y2 = box.xyxy
    m = EDGE_MARGIN * max(width, height)
    return x1 <= m or y1 <= m or x2 >= width - m or y2 >= height - m


def _confirm_edge(weak: list[Detection], found: list[PersonFound], landmarks: LandmarkModel,
                  frame_bgr: np.ndarray, realign: int) -> list[PersonFound]:
    """The people the detector's weaker hits at the frame's edge add to `found` (see `find_people`), best
    hit first. A hit lying on someone found (IoU over `HOG_NEW_IOU`, or inside them) is not looked at: it
    is mostly a second, partial hit on them."""
    height, width = frame_bgr.shape[:2]
    added: list[PersonFound] = []
    for det in sorted(weak, key=lambda d: -d.score):
        roi = det.roi()
        if not roi.valid or _lies_on_found(det.box, found + added):
            continue
        square = Box(roi.cx - roi.size / 2.0, roi.cy - roi.size / 2.0, roi.size, roi.size)  # the body's region
        if not _at_edge(square, width, height):
            continue
        pose = _pose_at(landmarks, frame_bgr, roi, realign)
        body = pose.body_box()
        if (pose.score >= EDGE_MIN_POSE_SCORE and _upright(pose) and _at_edge(body, width, height)
                and not _lies_on_found(body, found + added)):
            added.append(PersonFound(body, pose, pose.score * det.score))
    return added


def _lies_on_found(box: Box, found: list[PersonFound]) -> bool:
    """Whether `box` overlaps someone found by IoU over `HOG_NEW_IOU`, lies inside them or holds them."""
    return lies_on(box, [p.box for p in found])


def lies_on(box: Box, others: Sequence[Box]) -> bool:
    """Whether `box` overlaps one of `others` by IoU over `HOG_NEW_IOU`, or `PART_INSIDE` of one lies in the other."""
    return any(box_iou(box, o) > HOG_NEW_IOU or mostly_inside(box, o) or mostly_inside(o, box) for o in others)


def _confirm_hog(hits: list[tuple[Box, float]], found: list[PersonFound], landmarks: LandmarkModel,
                 frame_bgr: np.ndarray, realign: int) -> list[PersonFound]:
    """The people HOG hits add to `found` (see `find_people`), best hit first."""
    added: list[PersonFound] = []
    for box, _ in sorted(hits, key=lambda hit: -hit[1])[:HOG_MAX_HITS]:  # a bounded number of landmark passes
        if _lies_on_found(box, found + added):
            continue
        roi = Roi(box.x + box.w / 2.0, box.y + box.h / 2.0, HOG_ROI_SCALE * box.h, 0.0)
        pose = _pose_at(landmarks, frame_bgr, roi, realign)
        body = pose.body_box()
        if (pose.score >= HOG_MIN_POSE_SCORE and box_iou(body, box) >= HOG_MIN_FIT and _upright(pose)
                and all(box_iou(body, p.box) <= DEDUPE_IOU for p in found + added)):
            added.append(PersonFound(body, pose, pose.score * MIN_DETECTION_SCORE))
    return added


def _upright(pose: PoseResult) -> bool:
    """Whether the pose's shoulders, hips and ankles lie top to bottom in the frame, as on the upright
    people HOG looks for (seated people too). On a HOG hit over two men leaning together, the pass
    found a sure pose (0.96-0.99) spread across both of them, its ankles above its hips."""
    heights = [float(pose.xy[list(pair), 1].mean()) for pair in _UPRIGHT_CHAIN]
    return heights[0] < heights[1] < heights[2]


def _confirm(hits: list[Detection], landmarks: LandmarkModel, frame_bgr: np.ndarray, min_pose_score: float,
             realign: int) -> tuple[list[PersonFound], list[PersonFound]]:
    """The hits the landmark model confirms as people (see `find_people`): those confirmed on their own
    alignment, and those confirmed only on the upright second chance (`UPRIGHT_RETRY`)."""
    found: list[PersonFound] = []
    upright: list[PersonFound] = []
    for det in hits:
        roi = det.roi()
        if not roi.valid:
            continue
        pose = _pose_at(landmarks, frame_bgr, roi, realign)
        if pose.score >= min_pose_score:
            found.append(PersonFound(pose.body_box(), pose, pose.score * det.score))
        elif abs(roi.rotation) >= UPRIGHT_RETRY:
            pose = _pose_at(landmarks, frame_bgr, Roi(roi.cx, roi.cy, roi.size, 0.0), realign)
            if pose.score >= min_pose_score:
                upright.append(PersonFound(pose.body_box(), pose, pose.score * det.score))
    return found, upright


def _pose_at(landmarks: LandmarkModel, frame_bgr: np.ndarray, roi: Roi, realign: int) -> PoseResult:
    """The landmark pass on `roi`, then up to `realign` passes on each pose's own alignment ROI, each kept
    when its score is >= 0.9 x the previous."""
    pose = landmarks.run(frame_bgr, roi)
    for _ in range(realign):
        nxt = pose.next_roi()
        if not nxt.valid:
            break
        cand = landmarks.run(frame_bgr, nxt)
        if cand.score >= 0.9 * pose.score:
            pose = cand
    return pose


def mostly_inside(box: Box, of: Box) -> bool:
    """Whether `PART_INSIDE` of `box`'s area lies inside `of`."""
    x1, y1, x2, y2 = box.xyxy
    ox1, oy1, ox2, oy2 = of.xyxy
    inside = max(0.0, min(x2, ox2) - max(x1, ox1)) * max(0.0, min(y2, oy2) - max(y1, oy1))
    return inside > PART_INSIDE * box.w * box.h


def _is_part(box: Box, of: Box) -> bool:
    """Whether `box` is a part of the person in `of`: mostly inside it (PART_INSIDE) and much smaller (PART_AREA)."""
    return mostly_inside(box, of) and box.w * box.h < PART_AREA * of.w * of.h


def detect_people(
    frame_bgr: np.ndarray,
    max_people: int = 20,
    *,
    backbone: BlazePoseBackbone | None = None,
    detector: PersonDetector | None = None,
    tiles: int = TILES,
    fine: bool = True,
    use_hog: bool = True,
) -> list[Box]:
    """Person boxes on a whole frame: BlazePose's detector over the frame and tiles, and HOG's confirmed hits;
    HOG's own boxes if nobody is found.

    Args:
        frame_bgr: (H, W, 3) uint8 BGR frame.
        max_people: most boxes to return (>= 1).
        backbone: a BlazePose backbone whose landmark model confirms the hits; a temporary one is made
            (and closed) when None.
        detector: the person detector to reuse; a temporary one is made (and closed) when None.
        tiles: tiles per side besides the whole frame (0: whole frame only, with `fine` off).
        fine: also the frame's finer grid of tiles (`fine_tiles`) where the frame is large enough.
        use_hog: add the upright people OpenCV HOG finds and the landmark model confirms (`find_people`),
            and return HOG's own boxes when nobody is confirmed.

    Returns:
        Boxes in frame pixels, clipped to the frame, most confident first; empty when nobody is found.
    """
    check_image(frame_bgr, "frame_bgr")
    if max_people < 1:
        raise ValueError(f"max_people must be >= 1, got {max_people}")
    height, width = frame_bgr.shape[:2]
    bp = BlazePoseBackbone() if backbone is None else backbone
    det = PersonDetector() if detector is None else detector
    try:
        hog = hog_hits(frame_bgr) if use_hog else []  # searched once: confirmed hits, or the fallback below
        found = find_people(det, bp.model, frame_bgr, tiles=tiles, fine=fine, hog=hog if use_hog else False)
    finally:
        if backbone is None:
            bp.close()
        if detector is None:
            det.close()
    boxes = [p.box.clip(width, height) for p in found[:max_people]]
    boxes = [b for b in boxes if b.w >= 2 and b.h >= 2]
    if boxes or not use_hog:
        logger.debug("detector found %d person(s) on a %dx%d frame", len(boxes), width, height)
        return boxes
    boxes = [b.clip(width, height) for b, _ in hog[: min(max_people, 8)]]  # HOG is poor: at most as many as before
    logger.debug("detector found nobody; HOG found %d person(s)", len(boxes))
    return boxes


def hog_people(frame_bgr: np.ndarray, max_people: int = 4) -> list[Box]:
    """OpenCV's HOG + linear SVM people detector (``HOGDescriptor_getDefaultPeopleDetector``), unconfirmed.

    Works only for upright, mostly full-body people; boxes include the detector window's margin around
    the person.

    Args:
        frame_bgr: (H, W, 3) uint8 BGR frame.
        max_people: most boxes to return.

    Returns:
        Boxes in frame pixels, clipped to the frame, by descending SVM score.
    """
    hits = hog_hits(frame_bgr)
    height, width = frame_bgr.shape[:2]
    return [box.clip(width, height) for box, _ in hits[:max_people]]


def hog_hits(frame_bgr: np.ndarray) -> list[tuple[Box, float]]:
    """HOG's hits on the frame scaled to an 800 px long side: (box in frame pixels, SVM score), best first."""
    check_image(frame_bgr, "frame_bgr")
    height, width = frame_bgr.shape[:2]
    scale = _HOG_LONG_SIDE / max(height, width)
    size = (round(width * scale), round(height * scale))  # what cv2.resize makes of fx=fy=scale
    hog = cv2.HOGDescriptor()
    if size[0] < hog.winSize[0] or size[1] < hog.winSize[1]:
        # Nobody fits the 64x128 window, and OpenCV 4.11's detectMultiScale corrupts memory on such
        # images (segfault, "double free"), taking the whole server down: a 1920x60 strip, a 2x500 image.
        # Checked before resizing: a 20000x10 panorama scales to 800x0, which cv2.resize refuses (cv2.error).
        logger.debug("frame %dx%d is smaller than HOG's window once scaled: not searched", width, height)
        return []
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(frame_bgr, None, fx=scale, fy=scale, interpolation=interpolation)
    if small.shape[1] < hog.winSize[0] or small.shape[0] < hog.winSize[1]:  # a rounding at the window's edge
        return []
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    rects, weights = hog.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.05)
    scores = np.ravel(weights) if len(rects) else np.zeros(0)
    return [(Box(*(float(v) / scale for v in rects[i])), float(scores[i])) for i in np.argsort(-scores)]
