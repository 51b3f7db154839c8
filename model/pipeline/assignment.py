"""Assignment math for tracking: box IoU matrices, minimum-cost assignment, thresholded IoU matching.

Generic: boxes in, index pairs out; `model.pipeline.tracking` turns the matches into track ids.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from annotation_io.types import Box

logger = logging.getLogger(__name__)

__all__ = ["hungarian", "iou_matrix", "match_by_iou"]


def iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    """(len(a), len(b)) IoU of every pair of boxes (`torchvision.ops.box_iou`; 0 where both are empty)."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    import torch
    from torchvision.ops import box_iou

    pa = torch.tensor([x.xyxy for x in a], dtype=torch.float64)  # (A, 4)
    pb = torch.tensor([x.xyxy for x in b], dtype=torch.float64)  # (B, 4)
    return torch.nan_to_num(box_iou(pa, pb), nan=0.0).numpy()  # 0/0 (two empty boxes) -> 0


def hungarian(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost assignment of rows to columns (Kuhn-Munkres with potentials, O(n^2 m)).

    Returns:
        (row, col) pairs, min(rows, cols) of them, sorted by row.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or not np.all(np.isfinite(cost)):
        raise ValueError(f"cost must be a finite 2-D matrix, got shape {cost.shape}")
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    n, m = cost.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)  # row and column potentials; index 0 is a sentinel
    owner = np.zeros(m + 1, dtype=int)  # owner[j]: row (1-based) assigned to column j, 0 = none
    way = np.zeros(m + 1, dtype=int)
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        minv, used = np.full(m + 1, np.inf), np.zeros(m + 1, dtype=bool)
        while owner[j0] != 0:  # grow an alternating tree from row i until a free column is reached
            used[j0] = True
            i0 = owner[j0]
            reduced = cost[i0 - 1] - u[i0] - v[1:]
            better = ~used[1:] & (reduced < minv[1:])
            minv[1:][better], way[1:][better] = reduced[better], j0
            free_minv = np.where(used[1:], np.inf, minv[1:])
            j1 = int(np.argmin(free_minv)) + 1
            delta = free_minv[j1 - 1]
            u[owner[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
        while j0:  # flip the augmenting path
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    pairs = [(int(owner[j]) - 1, j - 1) for j in range(1, m + 1) if owner[j]]
    return sorted((c, r) if transposed else (r, c) for r, c in pairs)


def match_by_iou(prev: Sequence[Box], boxes: Sequence[Box], iou_threshold: float) -> dict[int, int]:
    """Index of `boxes` -> index of `prev` it continues: best total IoU, each pair >= `iou_threshold`.

    Pairs under the threshold cost as much as no match (1), so they never steer the assignment
    and are dropped from the result.
    """
    iou = iou_matrix(prev, boxes)
    cost = np.where(iou >= iou_threshold, 1.0 - iou, 1.0)
    return {c: r for r, c in hungarian(cost) if iou[r, c] >= iou_threshold}
