"""Acceptance statistics: per model version and joint, what annotators kept, moved, deleted, added."""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from annotation_io.skeletons import POSETRACK_KEYPOINTS
from backend.db.queries import (
    NO_MODEL_VERSION,
)
from backend.db.tables import (
    Annotation,
    Correction,
    Prediction,
    Task,
)

logger = logging.getLogger(__name__)


def _summary(counts: Mapping[str, int], moved: Sequence[tuple[float, float | None]]) -> dict[str, Any]:
    kept, n_moved, deleted, added = (int(counts.get(k, 0)) for k in ("kept", "moved", "deleted", "added"))
    predicted, final = kept + n_moved + deleted, kept + n_moved + added
    px = [d for d, _ in moved]
    heads = [d / h for d, h in moved if h]

    def share(n: int, total: int) -> float | None:
        return n / total if total else None

    return {
        "predicted": predicted,
        "kept": kept,
        "moved": n_moved,
        "deleted": deleted,
        "added": added,
        "kept_share": share(kept, predicted),
        "moved_share": share(n_moved, predicted),
        "deleted_share": share(deleted, predicted),
        "added_share": share(added, final),  # of the final keypoints, how many were drawn by hand
        "moved_mean_px": statistics.fmean(px) if px else None,
        "moved_median_px": statistics.median(px) if px else None,
        "moved_with_head_size": len(heads),
        "moved_mean_head": statistics.fmean(heads) if heads else None,
        "moved_median_head": statistics.median(heads) if heads else None,
    }


def acceptance_metrics(*, session: Session, project_id: int | None = None) -> dict[str, Any]:
    """What annotators did with the predictions, per model version and per joint.

    Shares of kept/moved/deleted are of the predicted keypoints; `added_share` is of the final
    ones. Moved distances are in pixels and, where the head box is known, in head sizes (PCKh's
    unit). Deleted annotations are left out; annotations made without a stored prediction are
    under the key `NO_MODEL_VERSION`.
    """
    live = Annotation.deleted.is_(False)
    scope = [Correction.project_id == project_id] if project_id is not None else []
    base = select(Correction).join(Annotation, Annotation.id == Correction.annotation_id).where(live, *scope)
    c = base.subquery()
    counts: dict[str, dict[int | None, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for version, joint, kind, n in session.execute(
        select(c.c.model_version, c.c.joint, c.c.kind, func.count()).group_by(
            c.c.model_version, c.c.joint, c.c.kind
        )
    ):
        counts[version or NO_MODEL_VERSION][joint][kind] = int(n)
    moved: dict[str, dict[int | None, list[tuple[float, float | None]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for version, joint, dist, head in session.execute(
        select(c.c.model_version, c.c.joint, c.c.distance_px, c.c.head_size_px).where(c.c.kind == "moved")
    ):
        moved[version or NO_MODEL_VERSION][joint].append((float(dist), head))
    received_stmt = select(c.c.model_version, func.count(func.distinct(c.c.annotation_id))).group_by(
        c.c.model_version
    )
    received = {version: int(n) for version, n in session.execute(received_stmt)}
    served_stmt = select(Prediction.model_version, func.count()).join(Task, Task.id == Prediction.task_id)
    if project_id is not None:
        served_stmt = served_stmt.where(Task.project_id == project_id)
    served = {
        version: int(n) for version, n in session.execute(served_stmt.group_by(Prediction.model_version))
    }

    versions: dict[str, Any] = {}
    for version in sorted(set(counts) | set(served) | {v or NO_MODEL_VERSION for v in received}):
        total: dict[str, int] = defaultdict(int)
        for per_kind in counts[version].values():
            for kind, n in per_kind.items():
                total[kind] += n
        all_moved = [m for rows in moved[version].values() for m in rows]
        versions[version] = {
            "predictions_served": int(served.get(version, 0)),
            "annotations_received": int(received.get(None if version == NO_MODEL_VERSION else version, 0)),
            "overall": _summary(total, all_moved),
            "joints": {
                POSETRACK_KEYPOINTS[j]: _summary(counts[version][j], moved[version][j])
                for j in sorted(counts[version])
            },
        }
    ann_stmt = select(func.count()).select_from(Annotation).where(live)
    if project_id is not None:
        ann_stmt = ann_stmt.where(Annotation.project_id == project_id)
    return {
        "project_id": project_id,
        "annotations_received": int(session.scalar(ann_stmt) or 0),
        "predictions_served": int(sum(served.values())),
        "model_versions": versions,
    }
