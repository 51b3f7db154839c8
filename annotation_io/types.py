"""The in-memory vocabulary used everywhere: Box, Person, Frame, Video.

Conventions (hold in every package of the project):
- Coordinates are pixels of the original frame, x to the right, y down. Percentages (Label
  Studio) and heatmap/crop coordinates exist only inside their converter modules.
- Keypoints use the 17-slot PoseTrack COCO order of `annotation_io.skeletons`.
- `Person.keypoints` is (17, 3): x, y, v. For human labels v is the visibility code
  (0 absent/unlabelled, 1 labelled but occluded, 2 labelled and visible). For predictions v is 2
  for every joint the model placed (0 where it placed none) and the confidences live in
  `Person.scores`. A person is a prediction exactly when `scores is not None`.
- Frame indices are 0-based positions in the video (PoseTrack 2017's 1-based `imgnum` is
  converted at the file boundary).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from annotation_io.skeletons import NUM_KEYPOINTS

Visibility = int  # 0 absent, 1 occluded, 2 visible


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in pixels: top-left corner (x, y), width w, height h."""

    x: float
    y: float
    w: float
    h: float

    @classmethod
    def from_xyxy(cls, x1: float, y1: float, x2: float, y2: float) -> Box:
        return cls(float(x1), float(y1), float(x2 - x1), float(y2 - y1))

    @classmethod
    def from_points(cls, points: np.ndarray) -> Box | None:
        """Tight box around (N, 2) points; None when there are none."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if len(pts) == 0:
            return None
        (x1, y1), (x2, y2) = pts.min(axis=0), pts.max(axis=0)
        return cls.from_xyxy(x1, y1, x2, y2)

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    @property
    def xywh(self) -> list[float]:
        return [self.x, self.y, self.w, self.h]

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.w / 2.0, self.y + self.h / 2.0)

    @property
    def area(self) -> float:
        return max(self.w, 0.0) * max(self.h, 0.0)

    def contains(self, x: float, y: float) -> bool:
        return self.x <= x <= self.x + self.w and self.y <= y <= self.y + self.h

    def distance_to(self, x: float, y: float) -> float:
        """Euclidean distance from a point to the box (0 inside)."""
        dx = max(self.x - x, 0.0, x - (self.x + self.w))
        dy = max(self.y - y, 0.0, y - (self.y + self.h))
        return float(np.hypot(dx, dy))

    def iou(self, other: Box) -> float:
        ax1, ay1, ax2, ay2 = self.xyxy
        bx1, by1, bx2, by2 = other.xyxy
        iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
        ih = max(0.0, min(ay2, by2) - max(ay1, by1))
        inter = iw * ih
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def expand(self, factor: float) -> Box:
        """Same centre, sides multiplied by `factor`."""
        cx, cy = self.center
        w, h = self.w * factor, self.h * factor
        return Box(cx - w / 2.0, cy - h / 2.0, w, h)

    def clip(self, width: int, height: int) -> Box:
        x1, y1, x2, y2 = self.xyxy
        x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
        y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
        return Box.from_xyxy(x1, y1, x2, y2)


def empty_keypoints() -> np.ndarray:
    """(17, 3) zeros: every joint absent."""
    return np.zeros((NUM_KEYPOINTS, 3), dtype=np.float64)


@dataclass
class Person:
    """One person on one frame.

    Attributes:
        keypoints: (17, 3) x, y, v in frame pixels (see the module docstring for v).
        scores: (17,) per-keypoint confidence for predictions; None for human labels.
        track_id: identity across frames of the video; None when unknown.
        box: person box; None when unknown.
        head_box: head box (PoseTrack `bbox_head`, poseval's head size); None when unknown.
        score: person (box) score; None for human labels.
        region_id: id of the source region (Label Studio box id), kept for round trips.
        extra: format-specific fields passed through unchanged (e.g. PoseTrack annotation `id`).
    """

    keypoints: np.ndarray = field(default_factory=empty_keypoints)
    scores: np.ndarray | None = None
    track_id: int | None = None
    box: Box | None = None
    head_box: Box | None = None
    score: float | None = None
    region_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kp = np.asarray(self.keypoints, dtype=np.float64)
        if kp.shape != (NUM_KEYPOINTS, 3):
            raise ValueError(f"Person.keypoints must have shape ({NUM_KEYPOINTS}, 3), got {kp.shape}")
        self.keypoints = kp
        if self.scores is not None:
            sc = np.asarray(self.scores, dtype=np.float64)
            if sc.shape != (NUM_KEYPOINTS,):
                raise ValueError(f"Person.scores must have shape ({NUM_KEYPOINTS},), got {sc.shape}")
            self.scores = sc

    @property
    def is_prediction(self) -> bool:
        return self.scores is not None

    @property
    def present(self) -> np.ndarray:
        """(17,) bool: joints that carry a position (v > 0)."""
        return self.keypoints[:, 2] > 0

    @property
    def xy(self) -> np.ndarray:
        """(17, 2) positions (meaningless where not `present`)."""
        return self.keypoints[:, :2]

    def keypoint_box(self) -> Box | None:
        """Tight box around the present joints; None if none is present."""
        return Box.from_points(self.xy[self.present])

    def copy(self) -> Person:
        return replace(
            self,
            keypoints=self.keypoints.copy(),
            scores=None if self.scores is None else self.scores.copy(),
            extra=dict(self.extra),
        )


@dataclass
class Frame:
    """One frame of a video and the persons on it.

    Attributes:
        index: 0-based position in the video.
        persons: persons on this frame (labels or predictions).
        is_labeled: whether humans labelled this frame (PoseTrack `is_labeled`).
        ignore_regions: polygons, each (N, 2) pixels, whose points evaluation ignores.
        file_name: image path as the annotation file names it (PoseTrack `file_name`).
        image_id: the annotation file's image id (PoseTrack 2018 `id`/`frame_id`).
        extra: format-specific fields passed through unchanged.
    """

    index: int
    persons: list[Person] = field(default_factory=list)
    is_labeled: bool = False
    ignore_regions: list[np.ndarray] = field(default_factory=list)
    file_name: str | None = None
    image_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def person_by_track(self, track_id: int) -> Person | None:
        for p in self.persons:
            if p.track_id == track_id:
                return p
        return None


@dataclass
class Video:
    """A video (or frame sequence) and its per-frame annotations.

    Attributes:
        name: video id (PoseTrack `vid_id`, Label Studio `video_id`).
        num_frames: number of frames in the video.
        frames: annotated frames, sorted by index; may hold only some of the video's frames.
        fps: frames per second where known.
        source: where the pixels are: a video file or a frame folder path (None if unknown).
        width, height: frame size in pixels where known.
        extra: format-specific fields passed through unchanged (e.g. PoseTrack `categories`).
    """

    name: str
    num_frames: int
    frames: list[Frame] = field(default_factory=list)
    fps: float | None = None
    source: str | None = None
    width: int | None = None
    height: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.frames = sorted(self.frames, key=lambda f: f.index)

    def frame(self, index: int) -> Frame | None:
        """The annotated frame at `index`, or None."""
        for f in self.frames:
            if f.index == index:
                return f
        return None

    def frame_map(self) -> dict[int, Frame]:
        return {f.index: f for f in self.frames}

    def labeled_frames(self) -> Iterator[Frame]:
        return (f for f in self.frames if f.is_labeled)

    def track_ids(self) -> list[int]:
        ids = {p.track_id for f in self.frames for p in f.persons if p.track_id is not None}
        return sorted(ids)
