"""Whole-frame person detectors, the last resort when no box is known: iterated BlazePose, then OpenCV HOG."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from annotation_io.types import Box
from model.backbones.blazepose import BlazePoseBackbone, check_image, posetrack_from_blazepose

logger = logging.getLogger(__name__)

__all__ = ["detect_people", "hog_people"]

# -- person detection on whole frames (last resort) ------------------------------------------------
_CORE_SLOTS = (0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)  # nose and limbs: joints BlazePose sees directly
_BOX_MARGIN = 1.2  # returned box = seen-joint box x 1.2 (joint centres lie inside the body outline)
_GREY_OUT_FACTOR = 1.25  # greyed area = returned box x 1.25
_HOG_LONG_SIDE = 800  # HOG runs on the frame scaled to this long side (measured on mediapipe 0.10.21)


def detect_people(
    frame_bgr: np.ndarray,
    max_people: int = 4,
    *,
    backbone: BlazePoseBackbone | None = None,
    min_visibility: float = 0.5,
    use_hog: bool = True,
) -> list[Box]:
    """Finds people on a whole frame: iterated BlazePose, then OpenCV HOG if BlazePose finds nobody.

    BlazePose sees one person per call, so the search repeats: detect, take the box around the joints
    with visibility >= `min_visibility` (head top included) enlarged x1.2, grey out that box enlarged
    x1.25, detect again. A detection is dropped (and still greyed out) when fewer than 3 of its 13 landmark
    joints are seen, neither shoulder is, its box is thinner than 1:6 or it lies mostly on greyed pixels.

    Limits (a fallback, not a real detector; boxes drawn in Label Studio or carried from the previous
    frame are better): BlazePose's detector is tuned for one prominent person and misses small, distant
    or heavily overlapped people; greying out a box also hides the parts of neighbours inside it; boxes
    follow the visible joints, so a person cut by the frame edge gets a clipped box; a few false positives
    on person-like objects get through the filters. HOG (Dalal-Triggs, upright full-body pedestrians of
    roughly 100-400 px) misses sitting, upper-body and close-up people and returns loose boxes. Measured
    here: astronaut, camera man, Grace Hopper alone: 1 correct box each, 50-85 ms; camera man + astronaut
    side by side: both, plus a false box on the model rocket when max_people >= 3 (~200 ms); two stick
    figures side by side: BlazePose none, HOG both; a temporary backbone adds ~0.5 s (pass one in).

    Args:
        frame_bgr: (H, W, 3) uint8 BGR frame.
        max_people: most boxes to return (>= 1).
        backbone: a BlazePose backbone to reuse; a temporary one is made (and closed) when None.
        min_visibility: landmark visibility that counts a joint as seen.
        use_hog: whether to run the HOG fallback when BlazePose finds nobody.

    Returns:
        Person boxes in frame pixels, clipped to the frame, in the order found (BlazePose's first, the most
        prominent person, first; HOG boxes by descending SVM score). Empty when nobody is found.
    """
    check_image(frame_bgr, "frame_bgr")
    if max_people < 1:
        raise ValueError(f"max_people must be >= 1, got {max_people}")
    owned = backbone is None
    bp = BlazePoseBackbone() if backbone is None else backbone
    try:
        boxes = _iterate_blazepose(bp, frame_bgr, max_people, min_visibility)
    finally:
        if owned:
            bp.close()
    if boxes:
        logger.debug("BlazePose found %d person(s) on a %dx%d frame", len(boxes), *frame_bgr.shape[1::-1])
        return boxes
    if not use_hog:
        return []
    boxes = hog_people(frame_bgr, max_people)
    logger.debug("BlazePose found nobody; HOG found %d person(s)", len(boxes))
    return boxes


def _iterate_blazepose(
    bp: BlazePoseBackbone, frame_bgr: np.ndarray, max_people: int, min_visibility: float
) -> list[Box]:
    height, width = frame_bgr.shape[:2]
    work = frame_bgr.copy()
    greyed = np.zeros((height, width), dtype=bool)
    boxes: list[Box] = []
    for _ in range(max_people + 2):  # a couple of extra tries for rejected detections
        found = bp.landmarks(work)
        if found is None:
            break
        xy, conf = posetrack_from_blazepose(found)
        seen = conf >= min_visibility
        box = Box.from_points(xy[seen])
        if box is None:
            break
        box = box.expand(_BOX_MARGIN).clip(width, height)
        x1, y1, x2, y2 = (int(round(v)) for v in box.xyxy)
        if x2 - x1 < 2 or y2 - y1 < 2:
            break
        already_grey = float(greyed[y1:y2, x1:x2].mean())
        # Grey out more than the box: clothing and hands beyond the seen joints otherwise come back
        # as a small phantom person (seen on the astronaut photograph).
        grey_box = box.expand(_GREY_OUT_FACTOR).clip(width, height)
        gx1, gy1, gx2, gy2 = (int(round(v)) for v in grey_box.xyxy)
        work[gy1:gy2, gx1:gx2] = bp.pad_value
        greyed[gy1:gy2, gx1:gx2] = True
        core_seen = int(seen[list(_CORE_SLOTS)].sum())
        thin = min(box.w, box.h) < max(box.w, box.h) / 6.0
        if core_seen < 3 or not (seen[5] or seen[6]) or thin or already_grey > 0.5:
            logger.debug("dropped detection %s (joints %d, grey %.2f)", box.xywh, core_seen, already_grey)
            continue
        boxes.append(box)
        if len(boxes) == max_people:
            break
    return boxes


def hog_people(frame_bgr: np.ndarray, max_people: int = 4) -> list[Box]:
    """OpenCV's HOG + linear SVM people detector (``HOGDescriptor_getDefaultPeopleDetector``).

    The frame is scaled to an 800 px long side first (the scale used in measured on mediapipe 0.10.21). Works only
    for upright, mostly full-body people; boxes include the detector window's margin around the person.

    Args:
        frame_bgr: (H, W, 3) uint8 BGR frame.
        max_people: most boxes to return.

    Returns:
        Boxes in frame pixels, clipped to the frame, by descending SVM score.
    """
    check_image(frame_bgr, "frame_bgr")
    height, width = frame_bgr.shape[:2]
    scale = _HOG_LONG_SIDE / max(height, width)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(frame_bgr, None, fx=scale, fy=scale, interpolation=interpolation)
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    rects, weights = hog.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.05)
    order = np.argsort(-np.ravel(weights)) if len(rects) else []
    boxes = []
    for i in order[:max_people]:
        x, y, w, h = (float(v) / scale for v in rects[i])
        boxes.append(Box(x, y, w, h).clip(width, height))
    return boxes
