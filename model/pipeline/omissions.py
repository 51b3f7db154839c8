"""Joints the annotator left out stay out on the frames around their labels.

On a labelled frame (a complete label: every joint the annotator could see is placed), a joint left out
is a judgement: hidden, or not there to see. The backbone places every joint of every person with a
confident guess, so without this rule the frames between two labels carry back the joints the
annotator deleted on both, and each is a region to delete again. A predicted joint is left out when the
track's nearest complete labels on both sides (each within `MAX_REACH` frames) leave it out, or, before
the first label or after the last, when the one label within `ONE_SIDE_REACH` frames does: a joint
hidden behind a passer-by on the last label comes out again soon after (measured on synthetic walkers
labelled PoseTrack-style, covered joints left out: reaching 30 frames from one label cost 13 mAP on
the frames after the last label, 2 frames gained 1). Never where the annotator could not have seen the
joint: moved with the person to that label's frame (the median motion of the joints both place), it
lies at or beyond the frame's edge (`EDGE_MARGIN`), as for a person walking or panned into view. A joint
either label places is kept.

Joints predicted beyond the frame's edge (`off_frame`, by more than `EDGE_MARGIN`) are left out on every
frame, labelled or not: the landmark model guesses the legs of a person cut off at the waist, and Label
Studio, whose regions live inside the image, would show each such guess as a point on the border to
delete.

Figures (real stills filmed by a moving camera, `python -m model bench-real --clips`, and the synthetic
walkers): the README's "Propagation and tracking" section.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["EDGE_MARGIN", "MIN_LABEL_JOINTS", "ONE_SIDE_REACH", "left_out", "off_frame"]

EDGE_MARGIN = 0.02  # x the frame's long side: a joint this close to the edge may have been cut off
ONE_SIDE_REACH = 2  # frames from a label on one side only (before the first label, after the last)
MIN_LABEL_JOINTS = 3  # a label with fewer placed joints says nothing about the others
_MIN_SHARED = 2  # joints placed on both the prediction and the label to measure the person's motion


def left_out(keypoints: np.ndarray, labels: Sequence[np.ndarray], frame_size: tuple[int, int]) -> np.ndarray:
    """(K,) bool: the predicted joints that every label in `labels` leaves out where the annotator could
    have seen them.

    Args:
        keypoints: (K, 3) the predicted person (x, y, v; v > 0 = placed) on the frame predicted.
        labels: (K, 3) the track's nearest complete labels (at most one per side); labels with fewer
            than MIN_LABEL_JOINTS placed joints are ignored.
        frame_size: (width, height) of the labels' frames.
    """
    kps = np.asarray(keypoints, np.float64)
    placed = kps[:, 2] > 0
    used = [np.asarray(lab, np.float64) for lab in labels if (np.asarray(lab)[:, 2] > 0).sum() >= MIN_LABEL_JOINTS]
    if not used or not placed.any():
        return np.zeros(len(kps), bool)
    w, h = frame_size
    margin = EDGE_MARGIN * max(w, h)
    out = placed.copy()
    for lab in used:
        on_label = lab[:, 2] > 0
        shared = on_label & placed
        if shared.sum() < _MIN_SHARED:
            return np.zeros(len(kps), bool)  # no way to tell where the person stood on that label
        there = kps[:, :2] + np.median(lab[shared, :2] - kps[shared, :2], axis=0)
        inside = ((there[:, 0] >= margin) & (there[:, 0] < w - margin)
                  & (there[:, 1] >= margin) & (there[:, 1] < h - margin))
        out &= ~on_label & inside
    return out


def off_frame(keypoints: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """(K,) bool: the placed joints (v > 0) that lie beyond the frame's edge by more than `EDGE_MARGIN` x
    its long side (a joint just past the edge is a joint at the edge)."""
    kps = np.asarray(keypoints, np.float64)
    w, h = frame_size
    margin = EDGE_MARGIN * max(w, h)
    x, y = kps[:, 0], kps[:, 1]
    return (kps[:, 2] > 0) & ((x < -margin) | (x > w - 1 + margin) | (y < -margin) | (y > h - 1 + margin))
