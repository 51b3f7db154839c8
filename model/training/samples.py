"""Training samples of the DCPose head: one human-checked person on one labelled frame, and the held-out split.

A `TrainSample` is one human-checked person on one labelled frame t with its neighbour frames
(p = max(t - d, 0), n = min(t + d, N - 1), as `model.pipeline` picks them; at the ends the current
frame stands in with margin 1). Only frame t needs a label: the head is supervised on t alone. All
three frames are cropped with t's box (the released design). Heatmaps for the samples come from
`model.training.heatmap_cache`; augmented batches from `model.training.augmentation`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from annotation_io.skeletons import LABELLED_SLOTS, UNLABELLED_SLOTS
from annotation_io.types import Box, Frame, Video

logger = logging.getLogger(__name__)

__all__ = ["BOX_DECIMALS", "TrainSample", "build_samples", "neighbour_frames", "round_box", "split_holdout",
           "within_shots"]

BOX_DECIMALS = 1  # boxes are rounded to 0.1 px before cropping and as cache keys


def round_box(box: Box) -> Box:
    """The box rounded to `BOX_DECIMALS` (what is cropped and what keys the cache)."""
    return Box(*(round(float(v), BOX_DECIMALS) for v in box.xywh))

# --------------------------------------------------------------------------------------------- samples


@dataclass(frozen=True, eq=False)
class TrainSample:
    """One human-checked person on one frame, with its neighbour frames.

    Attributes:
        video: video name (key of the readers).
        frame: labelled frame t.
        prev: previous frame p (t itself at the start of the video).
        next: next frame n (t itself at the end).
        margin: (margin_left, margin_right) = (t - p, n - t), 1 where the current frame stands in.
        box: person box on frame t (rounded to 0.1 px), which crops all three frames.
        keypoints: (17, 3) x, y, v labels in frame pixels.
        track_id: the person's track, where known.
        prev_keypoints, next_keypoints: (17, 3) human labels of the same track on p and n, where those
            frames are labelled (the head learns from them how far to trust a neighbour's label).
    """

    video: str
    frame: int
    prev: int
    next: int
    margin: tuple[float, float]
    box: Box
    keypoints: np.ndarray
    track_id: int | None = None
    prev_keypoints: np.ndarray | None = None
    next_keypoints: np.ndarray | None = None

    @property
    def key(self) -> tuple[str, int, int | None, tuple[float, ...]]:
        """Identity of the sample: (video, frame, track, box)."""
        return (self.video, self.frame, self.track_id, tuple(self.box.xywh))


def neighbour_frames(t: int, distance: int, num_frames: int) -> tuple[int, int, tuple[float, float]]:
    """(p, n, (margin_left, margin_right)) for frame t, as `model.pipeline.predictor` chooses them."""
    if distance < 1:
        raise ValueError(f"distance must be >= 1, got {distance}")
    if not 0 <= t < num_frames:
        raise ValueError(f"frame {t} is outside a video of {num_frames} frames")
    p, n = max(t - distance, 0), min(t + distance, num_frames - 1)
    return p, n, (float(t - p) or 1.0, float(n - t) or 1.0)


def build_samples(videos: Mapping[str, Video], *, distance: int = 1) -> list[TrainSample]:
    """Samples from the human-checked poses of labelled frames (neighbours need no labels).

    A frame counts when it is marked labelled (`Frame.is_labeled`); a person counts when it is a
    human label (not a prediction) with at least one of the 15 PoseTrack joints placed. Its box is
    the labelled box, else the box of its joints grown by 10% per side (as `model.pipeline.tracking` does
    roughly); persons without either are skipped.

    Args:
        videos: name -> Video with labels; `num_frames` bounds the neighbours.
        distance: neighbour distance d (1 as released).

    Returns:
        Samples in (video name, frame, person order).
    """
    samples = []
    for name in sorted(videos):
        video = videos[name]
        if video.num_frames < 1:
            raise ValueError(f"video {name!r} has num_frames={video.num_frames}; cannot pick neighbours")
        by_index = video.frame_map()
        for frame in video.labeled_frames():
            for person in frame.persons:
                if person.is_prediction or not person.present[list(LABELLED_SLOTS)].any():
                    continue
                box = person.box
                if box is None:
                    tight = person.keypoint_box()
                    box = tight.expand(1.2) if tight is not None else None
                box = round_box(box) if box is not None else None  # a box under 0.05 px rounds to none
                if box is None or box.w <= 0 or box.h <= 0:
                    logger.debug("%s frame %d: person without a usable box skipped", name, frame.index)
                    continue
                p, n, margin = neighbour_frames(frame.index, distance, video.num_frames)
                kps = person.keypoints.copy()
                kps[list(UNLABELLED_SLOTS)] = 0.0
                sides = [_neighbour_label(by_index.get(f), person.track_id) if f != frame.index else None
                         for f in (p, n)]
                samples.append(TrainSample(name, frame.index, p, n, margin, box, kps, person.track_id,
                                           *sides))
    logger.info("built %d training samples from %d videos", len(samples), len(videos))
    return samples


def within_shots(samples: Sequence[TrainSample], readers: Mapping[str, Any]) -> list[TrainSample]:
    """`samples` with each neighbour frame that lies across a cut to another shot (`model.pipeline.shots`)
    replaced by the current frame (margin 1, no neighbour label), as the predictor, which predicts each shot
    on its own, gives the head at a shot's ends. Samples in `build_samples`' order read each frame once.

    Args:
        samples: training samples.
        readers: video name -> FrameReader of its frames.
    """
    from model.pipeline.shots import changed, signature

    signatures: dict[tuple[str, int], Any] = {}

    def sig(video: str, frame: int) -> Any:
        if (video, frame) not in signatures:
            signatures[(video, frame)] = signature(readers[video].read(frame))
        return signatures[(video, frame)]

    out = []
    for s in samples:
        for key in [k for k in signatures if k[0] != s.video or k[1] < s.prev]:  # samples come frame by frame
            del signatures[key]
        cut_prev = s.prev != s.frame and changed(sig(s.video, s.prev), sig(s.video, s.frame))
        cut_next = s.next != s.frame and changed(sig(s.video, s.frame), sig(s.video, s.next))
        if cut_prev:
            s = replace(s, prev=s.frame, margin=(1.0, s.margin[1]), prev_keypoints=None)
        if cut_next:
            s = replace(s, next=s.frame, margin=(s.margin[0], 1.0), next_keypoints=None)
        out.append(s)
    cut = sum(a is not b for a, b in zip(samples, out))
    if cut:
        logger.info("%d of %d samples: a neighbour frame across a cut to another shot stands in by frame t",
                    cut, len(out))
    return out


def split_holdout(
    samples: Sequence[TrainSample], *, fraction: float = 0.2, seed: int = 0, distance: int = 1
) -> tuple[list[TrainSample], list[TrainSample]]:
    """Deterministic (train, holdout) split: by video, or by a frame range when there is one video.

    With several videos, round(fraction x videos) of them (at least 1, at most all but one) are held
    out, chosen by `seed` from the sorted names. With one video, a contiguous range of about
    `fraction` of its labelled frames is held out, its position chosen by `seed`; training samples
    whose neighbours reach into that range (within `distance`) are dropped, so no held-out frame is
    ever seen in training.

    Returns:
        (train, holdout), each in the input order; disjoint.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    samples = list(samples)
    if fraction == 0.0 or not samples:
        return samples, []
    rng = np.random.default_rng([seed, 0x401D])
    names = sorted({s.video for s in samples})
    if len(names) > 1:
        count = min(max(1, round(fraction * len(names))), len(names) - 1)
        held = set(rng.permutation(names)[:count].tolist())
        return [s for s in samples if s.video not in held], [s for s in samples if s.video in held]
    frames = sorted({s.frame for s in samples})
    if len(frames) < 2:
        raise ValueError(
            f"cannot hold out frames of video {names[0]!r}: it has {len(frames)} labelled frame(s); "
            "label more frames or use fraction=0"
        )
    count = min(max(1, round(fraction * len(frames))), len(frames) - 1)
    start = int(rng.integers(0, len(frames) - count + 1))
    lo, hi = frames[start], frames[start + count - 1]
    holdout = [s for s in samples if lo <= s.frame <= hi]
    train = [s for s in samples if s.frame + distance < lo or s.frame - distance > hi]
    dropped = len(samples) - len(holdout) - len(train)
    logger.info("held out frames %d..%d of %s (%d samples); %d training samples next to them dropped",
                lo, hi, names[0], len(holdout), dropped)
    return train, holdout


def _neighbour_label(frame: Frame | None, track_id: int | None) -> np.ndarray | None:
    """The human keypoints of `track_id` on a labelled frame, or None."""
    if track_id is None or frame is None or not frame.is_labeled:
        return None
    person = frame.person_by_track(track_id)
    if person is None or person.is_prediction or not person.present.any():
        return None
    kps = person.keypoints.copy()
    kps[list(UNLABELLED_SLOTS)] = 0.0
    return kps
