"""poseval-compatible multi-person pose AP (PoseTrack `evaluateAP`) on Videos, plus its CLI.

Re-implements poseval's `eval_helpers.assignGTmulti` + `evaluateAP.computeMetrics`
(the released DCPose code) in numpy:

1. only ground-truth frames with at least one person count; the prediction frame with the same
   index is evaluated against it (other prediction frames are ignored);
2. points strictly inside a GT frame's ignore region are removed from GT and predictions;
3. distance = pixel distance / head size, head size = 0.6 * diagonal of the GT head box; a
   predicted joint matches a GT joint when the distance is <= 0.5 (PCKh@0.5);
4. pck[p, g] = matched joints / joints annotated in g; each prediction keeps only its best GT
   (first on ties), then each GT takes its best prediction (first on ties), none when that is 0;
5. every joint of a matched prediction contributes (score, matched?); every joint of an unmatched
   prediction contributes (score, False); GT joints count towards recall;
6. per joint: contributions sorted by `np.argsort(scores)[::-1]` (as poseval: ties are ordered by
   numpy's sort), VOC all-point AP x 100; Total = mean over the joints with GT.

Deviation from poseval, on purpose: a joint without any GT gets NaN (skipped in means) even when it
has no predictions either; poseval reports 0 there. Videos are processed in sorted name order
(poseval uses the file-system order of `glob`), which only matters for tied scores.

On top of AP, `within` is the share (%) of the predicted keypoints of matched predictions that lie
within PCKh@0.5 of the matched GT joint: the share an annotator can accept unchanged. A predicted
joint whose GT person lacks that joint counts as not within (it would have to be deleted).

CLI: ``python -m annotation_io.evaluate GT PRED [--json]`` with two PoseTrack 2017/2018 files or two
folders of them matched by file name; errors print to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from annotation_io.skeletons import POSEVAL_FROM_17, POSEVAL_GROUPS, POSEVAL_JOINTS
from annotation_io.types import Frame, Person, Video

logger = logging.getLogger(__name__)

MIN_SCORE = -9999.0  # poseval's score for a predicted joint without one
HEAD_SIZE_FACTOR = 0.6  # poseval getHeadSize: 0.6 * head-box diagonal
PCKH_THRESHOLD = 0.5
NUM_JOINTS = len(POSEVAL_JOINTS)  # 15
_SLOTS = np.asarray(POSEVAL_FROM_17)

Videos = Mapping[str, Video] | Sequence[Video] | Video


class EvaluationError(ValueError):
    """GT and predictions cannot be evaluated together; the message names the video and the fix."""


@dataclass(frozen=True)
class EvalResult:
    """poseval AP and acceptance figures; joint dicts are keyed by `POSEVAL_JOINTS` in id order.

    Attributes:
        ap: AP (%) per joint; NaN where the GT has no such joint.
        groups: AP (%) of the table columns Head .. Ankle (NaN-skipping means) and Total.
        total: mean AP (%) over joints with GT (poseval's "Total").
        within: share (%) of predicted keypoints of matched predictions within PCKh@0.5 of the
            matched GT joint; NaN where no matched prediction places the joint.
        within_groups: the same share pooled over each column's joints, and Total.
        within_total: the same share pooled over all joints.
        precision: precision (%) at the lowest score, per joint (poseval's preAll).
        recall: recall (%) at the lowest score, per joint (poseval's recAll).
        n_gt: annotated GT joints per joint (after ignore regions).
        n_pred: predicted joints evaluated per joint (after ignore regions).
        n_matched: predicted joints of matched predictions per joint (the `within` denominators).
        n_frames: GT frames evaluated (frames with at least one person).
        n_videos: videos evaluated.
    """

    ap: dict[str, float]
    groups: dict[str, float]
    total: float
    within: dict[str, float]
    within_groups: dict[str, float]
    within_total: float
    precision: dict[str, float]
    recall: dict[str, float]
    n_gt: dict[str, int]
    n_pred: dict[str, int]
    n_matched: dict[str, int]
    n_frames: int
    n_videos: int

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (NaN written as null)."""

        def clean(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            return None if isinstance(value, float) and math.isnan(value) else value

        return {f.name: clean(getattr(self, f.name)) for f in fields(self)}


@dataclass
class _Tally:
    """Contributions gathered over all frames (poseval's scoresAll/labelsAll/nGTall)."""

    scores: list[list[np.ndarray]] = field(default_factory=lambda: [[] for _ in range(NUM_JOINTS)])
    labels: list[list[np.ndarray]] = field(default_factory=lambda: [[] for _ in range(NUM_JOINTS)])
    n_gt: np.ndarray = field(default_factory=lambda: np.zeros(NUM_JOINTS, dtype=np.int64))
    within_hits: np.ndarray = field(default_factory=lambda: np.zeros(NUM_JOINTS, dtype=np.int64))
    within_total: np.ndarray = field(default_factory=lambda: np.zeros(NUM_JOINTS, dtype=np.int64))
    n_frames: int = 0


def polygon_contains(polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Which points lie strictly inside a polygon (shapely `Polygon.contains`: boundary is outside).

    Args:
        polygon: (N, 2) vertices, open or closed; fewer than 3 vertices has no interior.
        points: (M, 2) points.

    Returns:
        (M,) bool.
    """
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(poly) < 3:
        return np.zeros(len(pts), dtype=bool)
    a = poly[None, :, :]  # (1, N, 2) edge starts
    b = np.roll(poly, -1, axis=0)[None, :, :]  # (1, N, 2) edge ends
    p = pts[:, None, :]  # (M, 1, 2)
    cross = (b[..., 0] - a[..., 0]) * (p[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (
        p[..., 0] - a[..., 0]
    )
    lo, hi = np.minimum(a, b), np.maximum(a, b)  # (1, N, 2) edge bounding boxes
    in_bounds = ((p >= lo) & (p <= hi)).all(axis=-1)
    on_boundary = ((cross == 0) & in_bounds).any(axis=1)
    # Even-odd rule: count edges crossing the horizontal ray to the right of the point.
    straddles = (a[..., 1] > p[..., 1]) != (b[..., 1] > p[..., 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = a[..., 0] + (p[..., 1] - a[..., 1]) * (b[..., 0] - a[..., 0]) / (b[..., 1] - a[..., 1])
    crossings = (straddles & (p[..., 0] < x_cross)).sum(axis=1)
    return (crossings % 2 == 1) & ~on_boundary


def _joints(person: Person, regions: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(15, 2) poseval-order positions and (15,) presence, with ignored points removed."""
    kp = person.keypoints[_SLOTS]
    # poseval drops a point only when x = y = 0 and it is not visible; a prediction file that
    # writes [x, y, 0] with real coordinates still predicts that joint.
    present = kp[:, 2] > 0
    if person.is_prediction:
        present = present | (kp[:, 0] != 0) | (kp[:, 1] != 0)
    xy = kp[:, :2]
    for region in regions:
        present = present & ~polygon_contains(region, xy)
    return xy, present


def _head_size(person: Person, video: str, frame: int) -> float:
    if person.head_box is None:
        raise EvaluationError(
            f"video {video!r}, frame {frame}, track {person.track_id}: ground-truth person has keypoints "
            "but no head box (PoseTrack `bbox_head`), which poseval needs as the PCKh reference"
        )
    x1, y1, x2, y2 = person.head_box.xyxy
    return HEAD_SIZE_FACTOR * float(np.linalg.norm([x2 - x1, y2 - y1]))


def _match(
    pr_xy: np.ndarray, has_pr: np.ndarray, gt_xy: np.ndarray, has_gt: np.ndarray, head: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Assign predictions to GT persons as poseval does (steps 3-5 of the module docstring).

    Args:
        pr_xy: (P, 15, 2) predicted positions; has_pr: (P, 15) which are placed.
        gt_xy: (G, 15, 2) GT positions; has_gt: (G, 15) which are annotated; head: (G,) head sizes.

    Returns:
        labels: (P, 15) bool, True where a predicted joint is a true positive.
        matched: (P,) bool, predictions assigned to a GT person.
    """
    n_pr = len(pr_xy)
    both = has_pr[:, None, :] & has_gt[None, :, :]  # (P, G, 15)
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.linalg.norm(pr_xy[:, None] - gt_xy[None, :], axis=-1) / head[None, :, None]
    match = np.where(both, dist, np.inf) <= PCKH_THRESHOLD  # NaN (zero head size) never matches
    pck = match.sum(axis=2) / np.maximum(has_gt.sum(axis=1), 1)[None, :]  # (P, G)
    keep = np.zeros_like(pck, dtype=bool)
    keep[np.arange(n_pr), np.argmax(pck, axis=1)] = True  # each prediction keeps its best GT only
    pck = np.where(keep, pck, 0.0)
    pr_to_gt = np.argmax(pck, axis=0)  # (G,) then each GT takes its best prediction
    labels = np.zeros((n_pr, NUM_JOINTS), dtype=bool)
    matched = np.zeros(n_pr, dtype=bool)
    for g, p in enumerate(pr_to_gt):
        if pck[p, g] > 0:
            labels[p] = match[p, g]
            matched[p] = True
    return labels, matched


def _assign_frame(gt: Frame, pred: Frame | None, video: str, tally: _Tally) -> None:
    """poseval's assignGTmulti for one frame: append contributions and GT counts to `tally`."""
    regions = [np.asarray(r, dtype=np.float64).reshape(-1, 2) for r in gt.ignore_regions]
    gt_xy, gt_has, head = [], [], []
    for person in gt.persons:
        xy, has = _joints(person, regions)
        if has.any():  # poseval drops rects left without points; they could never match
            gt_xy.append(xy)
            gt_has.append(has)
            head.append(_head_size(person, video, gt.index))
    pr_xy, pr_has, pr_score = [], [], []
    for person in pred.persons if pred is not None else []:
        xy, has = _joints(person, regions)
        if has.any():
            pr_xy.append(xy)
            pr_has.append(has)
            scores = person.scores[_SLOTS] if person.scores is not None else np.full(NUM_JOINTS, MIN_SCORE)
            pr_score.append(scores)

    tally.n_frames += 1
    if gt_has:
        tally.n_gt += np.sum(gt_has, axis=0)
    if not pr_has:
        return
    has_pr, score = np.array(pr_has), np.array(pr_score)  # (P, 15)
    labels = np.zeros_like(has_pr)
    if gt_has:
        labels, matched = _match(np.array(pr_xy), has_pr, np.array(gt_xy), np.array(gt_has), np.array(head))
        tally.within_hits += labels[matched].sum(axis=0)
        tally.within_total += has_pr[matched].sum(axis=0)
    for j in range(NUM_JOINTS):
        rows = has_pr[:, j]
        tally.scores[j].append(score[rows, j])
        tally.labels[j].append(labels[rows, j])


def average_precision(scores: np.ndarray, labels: np.ndarray, n_gt: int) -> tuple[float, float, float]:
    """poseval's computeRPC + VOCap for one joint.

    Args:
        scores: (N,) contribution scores.
        labels: (N,) bool, True for a true positive.
        n_gt: number of GT joints (positives).

    Returns:
        (AP, final precision, final recall), each in percent; NaN when `n_gt` is 0, zeros when
        there are GT joints but no contributions.
    """
    if n_gt == 0:
        return math.nan, math.nan, math.nan
    if len(scores) == 0:
        return 0.0, 0.0, 0.0
    order = np.argsort(np.asarray(scores, dtype=np.float64))[::-1]  # exactly poseval's ordering
    tp = np.cumsum(np.asarray(labels, dtype=bool)[order])
    recall = tp / n_gt
    precision = tp / np.arange(1, len(tp) + 1)
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision made monotone from the right
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    ap = float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))
    return ap * 100.0, float(precision[-1]) * 100.0, float(recall[-1]) * 100.0


def _as_map(videos: Videos, role: str) -> dict[str, Video]:
    if isinstance(videos, Video):
        return {videos.name: videos}
    if isinstance(videos, Mapping):
        return dict(videos)
    if isinstance(videos, Sequence) and not isinstance(videos, str):
        out: dict[str, Video] = {}
        for video in videos:
            if video.name in out:
                raise EvaluationError(f"{role} holds two videos named {video.name!r}; names must be unique")
            out[video.name] = video
        return out
    raise TypeError(f"{role} must be a Video, a list of Videos or a dict name -> Video, got {type(videos)}")


def _pair_videos(gt: Videos, pred: Videos) -> list[tuple[str, Video, Video]]:
    if isinstance(gt, Video) and isinstance(pred, Video):
        return [(gt.name, gt, pred)]
    gt_map, pred_map = _as_map(gt, "GT"), _as_map(pred, "PRED")
    missing = sorted(set(gt_map) - set(pred_map))
    if missing:
        raise EvaluationError(f"no prediction for GT video(s) {missing}; predictions hold {sorted(pred_map)}")
    extra = sorted(set(pred_map) - set(gt_map))
    if extra:
        logger.warning("ignoring %d prediction video(s) without GT: %s", len(extra), extra)
    return [(name, gt_map[name], pred_map[name]) for name in sorted(gt_map)]


def _share(hits: np.ndarray, total: np.ndarray) -> float:
    n = int(np.sum(total))
    return 100.0 * float(np.sum(hits)) / n if n else math.nan


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def evaluate(gt: Videos, pred: Videos) -> EvalResult:
    """poseval multi-person AP of `pred` against `gt`, pooled over all videos.

    Args:
        gt: ground truth: one Video, a list of Videos (paired by name) or a dict name -> Video.
        pred: predictions in the same form; two single Videos are paired whatever their names.

    Returns:
        The AP table, acceptance shares and counts.

    Raises:
        EvaluationError: a GT video has no prediction, frame counts differ, or a GT person with
            keypoints has no head box.
    """
    tally = _Tally()
    pairs = _pair_videos(gt, pred)
    for name, gt_video, pred_video in pairs:
        if gt_video.num_frames != pred_video.num_frames:
            raise EvaluationError(
                f"video {name!r}: prediction has {pred_video.num_frames} frames, "
                f"ground truth has {gt_video.num_frames}"
            )
        pred_frames = pred_video.frame_map()
        for frame in gt_video.frames:
            if frame.persons:  # poseval keeps only GT frames with annotated rects
                _assign_frame(frame, pred_frames.get(frame.index), name, tally)

    ap, precision, recall, n_pred = {}, {}, {}, {}
    for j, joint in enumerate(POSEVAL_JOINTS):
        scores = np.concatenate(tally.scores[j]) if tally.scores[j] else np.zeros(0)
        labels = np.concatenate(tally.labels[j]) if tally.labels[j] else np.zeros(0, dtype=bool)
        ap[joint], precision[joint], recall[joint] = average_precision(scores, labels, int(tally.n_gt[j]))
        n_pred[joint] = len(scores)
    total = _nanmean(list(ap.values()))
    groups = {col: _nanmean([ap[POSEVAL_JOINTS[k]] for k in ids]) for col, ids in POSEVAL_GROUPS.items()}
    groups["Total"] = total
    hits, den = tally.within_hits, tally.within_total
    within = {joint: _share(hits[j], den[j]) for j, joint in enumerate(POSEVAL_JOINTS)}
    within_total = _share(hits, den)
    within_groups = {col: _share(hits[list(ids)], den[list(ids)]) for col, ids in POSEVAL_GROUPS.items()}
    within_groups["Total"] = within_total
    logger.info("evaluated %d videos, %d frames: total AP %.1f", len(pairs), tally.n_frames, total)
    return EvalResult(
        ap=ap,
        groups=groups,
        total=total,
        within=within,
        within_groups=within_groups,
        within_total=within_total,
        precision=precision,
        recall=recall,
        n_gt={joint: int(tally.n_gt[j]) for j, joint in enumerate(POSEVAL_JOINTS)},
        n_pred=n_pred,
        n_matched={joint: int(den[j]) for j, joint in enumerate(POSEVAL_JOINTS)},
        n_frames=tally.n_frames,
        n_videos=len(pairs),
    )


_HEADER = "& Head & Shou & Elb  & Wri  & Hip  & Knee & Ankl & Total\\\\"


def _row(values: Sequence[float]) -> str:
    # poseval's formatCell: right-aligned "%1.1f" in 5 characters, then the delimiter.
    cells = [f"{v:5.1f}" for v in values]
    return "&" + " &".join(cells) + " \\\\"


def format_table(result: EvalResult) -> str:
    """poseval's AP table followed by the same table of within-PCKh@0.5 shares."""
    counts = (
        f"{result.n_videos} video(s), {result.n_frames} frame(s), "
        f"{sum(result.n_gt.values())} GT joints, {sum(result.n_pred.values())} predicted joints"
    )
    return "\n".join(
        [
            "Average Precision (AP) metric:",
            _HEADER,
            _row(list(result.groups.values())),
            "Share of predicted keypoints within PCKh@0.5 of the matched GT joint (%):",
            _HEADER,
            _row(list(result.within_groups.values())),
            counts,
        ]
    )


def _load(path: Path, role: str) -> Video | dict[str, Video]:
    if not path.exists():
        raise FileNotFoundError(f"{role} path does not exist: {path}")
    from annotation_io import posetrack  # lazy: the evaluator core needs no file format

    if path.is_dir():
        videos = posetrack.load_dir(path)
        if not videos:
            raise EvaluationError(f"{role} folder {path} holds no PoseTrack JSON files")
        return videos
    return posetrack.load(path)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: print the AP tables (or JSON) of PRED against GT; 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m annotation_io.evaluate",
        description="poseval-compatible multi-person pose AP of PoseTrack 2017/2018 predictions.",
    )
    parser.add_argument("gt", type=Path, help="GT PoseTrack JSON file, or a folder of them")
    parser.add_argument("pred", type=Path, help="prediction file, or a folder with the same file names")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.gt.is_dir() != args.pred.is_dir() and args.gt.exists() and args.pred.exists():
            raise EvaluationError("GT and PRED must both be files or both be folders")
        result = evaluate(_load(args.gt, "GT"), _load(args.pred, "PRED"))
        if result.n_frames == 0:  # every AP would be NaN: an answer that says nothing
            raise EvaluationError(
                f"GT {args.gt} has no frame with an annotated person: nothing to evaluate (every AP would be NaN)"
            )
    except (OSError, ValueError) as exc:  # ValueError covers AnnotationFormatError and JSON errors
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(json.dumps(result.to_json(), indent=2) if args.json else format_table(result))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
