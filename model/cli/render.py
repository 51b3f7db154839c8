"""Overlay drawing: skeletons, confidence-coloured joints, boxes and track ids on frames and videos.

Colours (BGR, as cv2 draws):
- a joint is coloured by its confidence on a red (0) -> yellow (0.5) -> green (1) ramp; human
  labels (no `scores`) count as confidence 1 when visible (v=2) and 0.5 when occluded (v=1), and
  are drawn with a white ring so they stand apart from predictions;
- limbs (`annotation_io.skeletons.DRAW_LIMBS`) take the mean colour of their two joints, thinner
  than the joints, so a low-confidence limb reads as such;
- the box and the "id N" label take a colour fixed per track id (golden-ratio hue steps), so a
  track keeps its colour through the video and neighbouring ids differ.
Absent joints (v=0) are not drawn, nor limbs touching them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from annotation_io.skeletons import DRAW_LIMBS, UNLABELLED_SLOTS
from annotation_io.types import Person, Video
from annotation_io.video import FrameReader

logger = logging.getLogger(__name__)

__all__ = [
    "RenderError",
    "confidence_colour",
    "draw_frame",
    "render_video",
    "track_colour",
]

FOURCC = "mp4v"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".m4v", ".mkv")  # containers OpenCV writes FOURCC into
_UNTRACKED_COLOUR = (200, 200, 200)
_LABEL_RING = (255, 255, 255)


class RenderError(OSError):
    """An overlay video cannot be written (codec unavailable, folder not writable, bad frame)."""


def confidence_colour(score: float) -> tuple[int, int, int]:
    """BGR colour of a confidence in [0, 1]: red at 0, yellow at 0.5, green at 1 (clipped; NaN is red)."""
    s = 0.0 if not math.isfinite(score) else min(max(float(score), 0.0), 1.0)
    red = 255.0 * min(1.0, 2.0 * (1.0 - s))
    green = 255.0 * min(1.0, 2.0 * s)
    return (0, round(green), round(red))


def track_colour(track_id: int | None) -> tuple[int, int, int]:
    """A bright BGR colour fixed per track id; grey when the id is unknown."""
    if track_id is None:
        return _UNTRACKED_COLOUR
    hue = (0.6 + int(track_id) * 0.618033988749895) % 1.0  # id 0 blue: red/green mean confidence
    hsv = np.array([[[round(hue * 179), 220, 255]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return (int(b), int(g), int(r))


def _joint_confidences(person: Person) -> np.ndarray:
    """(17,) confidences used for colouring (see the module docstring for labels)."""
    if person.scores is not None:
        return np.nan_to_num(np.clip(person.scores, 0.0, 1.0), nan=0.0)
    return np.where(person.keypoints[:, 2] >= 2, 1.0, 0.5)


def _sizes(image: np.ndarray) -> tuple[int, int, float]:
    """(joint radius, line thickness, font scale) that read well at the frame's size."""
    side = min(image.shape[:2])
    radius = max(2, round(side / 160))
    thickness = max(1, round(side / 320))
    return radius, thickness, max(0.35, side / 900)


def _point(xy: np.ndarray) -> tuple[int, int]:
    return round(float(xy[0])), round(float(xy[1]))


def _draw_person(image: np.ndarray, person: Person) -> None:
    radius, thickness, font_scale = _sizes(image)
    kps = person.keypoints
    drawn = (kps[:, 2] > 0) & np.isfinite(kps[:, :2]).all(axis=1)
    drawn[list(UNLABELLED_SLOTS)] &= person.scores is None  # ears: only where a human placed them
    conf = _joint_confidences(person)
    colour = track_colour(person.track_id)
    if person.box is not None and all(math.isfinite(v) for v in person.box.xywh):
        x1, y1, x2, y2 = person.box.xyxy
        cv2.rectangle(image, _point((x1, y1)), _point((x2, y2)), colour, thickness, cv2.LINE_8)
    for a, b in DRAW_LIMBS:
        if drawn[a] and drawn[b]:
            limb = confidence_colour(float(conf[a] + conf[b]) / 2.0)
            cv2.line(image, _point(kps[a, :2]), _point(kps[b, :2]), limb, thickness, cv2.LINE_AA)
    for j in np.flatnonzero(drawn):
        centre = _point(kps[j, :2])
        cv2.circle(image, centre, radius, confidence_colour(float(conf[j])), -1, cv2.LINE_AA)
        if person.scores is None:
            cv2.circle(image, centre, radius + 1, _LABEL_RING, 1, cv2.LINE_AA)
    _draw_label(image, person, colour, font_scale, thickness, drawn)


def _draw_label(
    image: np.ndarray,
    person: Person,
    colour: tuple[int, int, int],
    font_scale: float,
    thickness: int,
    drawn: np.ndarray,
) -> None:
    """`id N` on a filled tag above the box (or above the top-most joint without a box)."""
    if person.track_id is None:
        return
    if person.box is not None and all(math.isfinite(v) for v in person.box.xywh):
        anchor = (person.box.x, person.box.y)
    elif drawn.any():
        pts = person.keypoints[drawn, :2]
        anchor = (float(pts[:, 0].min()), float(pts[:, 1].min()))
    else:
        return
    text = f"id {person.track_id}"
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, font_scale, thickness)
    x = int(min(max(round(anchor[0]), 0), max(image.shape[1] - tw - 2, 0)))
    y = int(max(round(anchor[1]), th + base + 2))  # keep the tag inside the frame at the top edge
    cv2.rectangle(image, (x, y - th - base - 2), (x + tw + 2, y), colour, -1)
    cv2.putText(image, text, (x + 1, y - base - 1), font, font_scale, (0, 0, 0), thickness, cv2.LINE_AA)


def draw_frame(image: np.ndarray, persons: Iterable[Person]) -> np.ndarray:
    """Draw persons (predictions or labels) onto a copy of a frame.

    Args:
        image: (H, W, 3) uint8 BGR frame; left unchanged.
        persons: the persons to draw, in frame pixel coordinates.

    Returns:
        The annotated copy.

    Raises:
        ValueError: `image` is not an (H, W, 3) uint8 array.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"image must be an (H, W, 3) BGR array, got {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    out = np.ascontiguousarray(image).copy()
    for person in persons:
        _draw_person(out, person)
    return out


def render_video(
    reader: FrameReader,
    video_pred: Video,
    out_path: str | Path,
    fps: float | None,
    *,
    frames: Sequence[int] | None = None,
    progress: bool = False,
) -> Path:
    """Write an mp4v overlay video of predictions drawn on their frames.

    Args:
        reader: the source frames (`annotation_io.video.open_video(...)` or any FrameReader).
        video_pred: the predictions; frames it lacks are written without overlay.
        out_path: the video file to write (its folder is created).
        fps: frames per second of the output; None or <= 0 falls back to 25.
        frames: frame indices to write, in order; default: the frames of `video_pred`.
        progress: show a tqdm progress bar.

    Returns:
        The path written.

    Raises:
        ValueError: no frame to write, or an index outside the reader.
        RenderError: the writer cannot be opened or a frame cannot be written.
    """
    indices = [f.index for f in video_pred.frames] if frames is None else [int(i) for i in frames]
    if not indices:
        raise ValueError(f"nothing to render: video {video_pred.name!r} has no predicted frames")
    bad = [i for i in indices if not 0 <= i < reader.num_frames]
    if bad:
        raise ValueError(f"frame index {bad[0]} is outside the video (0..{reader.num_frames - 1})")
    fps = float(fps) if fps is not None and fps > 0 else 25.0
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    by_index = video_pred.frame_map()
    first = reader.read(indices[0])
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*FOURCC), fps, (width, height))
    if not writer.isOpened():
        raise RenderError(f"{out}: cannot open an {FOURCC} video writer ({width}x{height} at {fps} fps)")
    steps: Iterable[int] = indices
    if progress:
        from tqdm import tqdm

        steps = tqdm(indices, desc=f"render {out.name}", unit="frame")
    try:
        for n, index in enumerate(steps):
            image = first if n == 0 else reader.read(index)
            if image.shape[:2] != (height, width):
                raise RenderError(
                    f"{out}: frame {index} is {image.shape[1]}x{image.shape[0]}, the first is {width}x{height}"
                )
            frame = by_index.get(index)
            writer.write(draw_frame(image, frame.persons) if frame is not None else image)
    finally:
        writer.release()
    logger.info("wrote overlay video %s (%d frames, %.1f fps)", out, len(indices), fps)
    return out
