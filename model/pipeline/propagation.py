"""Label propagation: human keypoints carried by optical flow to nearby unlabelled frames, fused with the backbone.

Each joint of a labelled pose is tracked frame to frame (chained) on the real pixels with OpenCV's
pyramidal Lucas-Kanade (21x21 window, 3 levels), forwards from the previous label and backwards from the
next one. Every step is checked forward-backward: the point is tracked back and its distance to where
it started is the step's error e. After n steps a joint's confidence is

    conf = decay**n x exp(-(sum of e) / fb_scale)      (decay 0.97, fb_scale 4 px)

and the joint is lost once LK loses it or one step's e exceeds `max_fb` (1 px). A lost joint is not
frozen: it moves on with the median step of its person's joints LK still follows (`Propagated.followed`
says which joints their own flow carried), and its confidence fades further as it may have strayed from
that motion:

    conf = decay**n x exp(-(sum of e until lost + max_fb) / fb_scale) x exp(-(drift / (lost_frac x height))^2)
                                                                                   (lost_frac 0.05)

where drift adds up, per frame since the loss, the larger of the person's non-rigid motion (mean distance
of their followed joints' steps from the median step) and the joint's own step off its person's just
before the loss (a swinging hand, lost to blur, drifts fast; a point on a plain sleeve of a walking person
barely). A person the flow no longer follows at all (wholly behind another, or blurred) goes on at their
last measured step, their joints fading at their last non-rigid rate; one never followed (wholly behind
another on the labelled frame) walks at the pace of their labels (`label_pace`: the median motion of their
joints between the label carried and the track's label `pace_label` picks on the other side), fading by
`pace_wobble` (0.015) of their height per frame, and with one label stays where it was and soon counts
for nothing (over 24 test videos, labels every 8 frames: carried labels alone 64.5 -> 71.4 mAP, with the
simulated backbone 82.8 -> 84.8). On the synthetic benchmark (flat-coloured sprites: LK loses a third of
the joints within two frames, sliding along plain limbs) this took the share of carried joints trusted,
with labels every 4 frames, from 57% to 89%, and cold start with BlazePose and labels every 8 frames from
34.8 to 63.8 mAP (seed 0; seed 1: 57.0 to 63.9), against lost joints frozen with a confidence of at most
0.1.

The two directions are merged per joint by confidence-weighted mean; where both reach, the merged
confidence is 1 - (1 - c_fwd)(1 - c_bwd), times exp(-(gap / 8 px)^2) of the gap between the two chains:
both chains can pass their own checks while one stuck to the wrong surface (an arm swinging over the
torso), and only their disagreement shows it. Measured on a rendered video (every 8th frame labelled,
4 px/frame): mean error 1.6 px, body joints 0-0.6 px; mean confidence of points off by more than 5 px
0.04-0.22 vs 0.94 for the others; ~5 ms per person-frame (both chains), against 34-49 ms for one
landmark pass. DIS dense flow was 15-40x slower for a similar error.

People who overlap: LK follows pixels, and a joint hidden behind another person follows that person's
pixels while every check passes (the motion is smooth and consistent both ways). `propagate_people`
tracks all people labelled on a frame together and, at each step, loses a joint that lies on another
person's body (within `FlowConfig.body_px_frac` of their height from their limbs and torso; a body is all
of that person's carried joints, followed or not) and stepped like that person rather than like the rest
of its own person; it then moves with its own person, as a lost joint (`dragged_joints`). Two cases have
no such comparison: a person wholly behind another (none of their followed joints lies on nobody else),
whose joints on the other are lost where they step like the other (within `FlowConfig.stray_px`), and a
person lying on someone the flow lost, whose joints there are lost where they step unlike their own
person. On the synthetic benchmark's test video (two walkers who overlap, labels every 8 frames), the
90th percentile error of the joints carried with confidence >= PROPAGATION_TRUST went from 13.9 px (each
person tracked alone) to 3.7 px. Over 24 test videos (6 seeds; a walker is often wholly behind the other
on a labelled frame), the two cases and whole bodies took the carried labels alone from 51.5 to 64.5 mAP
with labels every 8 frames, and from 85.6 to 91.5 every 4.

`fuse_with_backbone` keeps a propagated joint where its confidence reaches `PROPAGATION_TRUST` or the
backbone's score, or wherever the backbone's pose misses most of the joints the flow is sure of (it does
not see this person here), and the backbone's estimate elsewhere (the flow broke: occlusion, blur, fast
limbs), except where the backbone's joint lies farther than FAR_FRAC (0.3) of the person's height from
the carried one (another person's limb, a left/right swap) while the flow still follows a third of the
person: there the carried point, weak as it is, wins. A backbone joint kept beside a carried point is
scored by their agreement (AGREE_FRAC), so that the joints a prediction is surest of are the ones the
labels on both sides support.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from annotation_io.skeletons import SKELETON_1BASED

__all__ = ["AGREE_FRAC", "CHECK_FRAC", "FAR_FRAC", "PROPAGATION_TRUST", "FlowConfig", "Propagated", "dragged_joints",
           "fuse_chains", "fuse_with_backbone", "label_pace", "pace_label", "propagate", "propagate_people", "sees_pose", "track_chain"]

PROPAGATION_TRUST = 0.3  # least propagated confidence that replaces the backbone's joint
# A backbone joint farther than this fraction of the person's height from the carried pose is replaced by
# the carried point, even a weak one: the backbone took another person's limb or swapped sides.
FAR_FRAC = 0.3
# A backbone joint kept beside a carried pose scores score x exp(-(d / (AGREE_FRAC x height))^2) (at least
# x 0.1), d its distance to the carried point: agreeing with the labels on both sides is evidence, and a
# joint that does not agree should rank below the carried ones.
AGREE_FRAC = 0.2
# A backbone joint within this fraction of the person's height of a sure carried joint agrees with it (about
# PCKh@0.5 for a standing person: half of 0.6 x a head box diagonal of ~0.2 x height). A backbone pose that
# agrees with fewer than half of the sure carried joints does not see the person, and the carried pose wins.
CHECK_FRAC = 0.07
MAX_REACH = 30  # most frames a label is carried
# A pace is measured against the nearest label at least this many frames away where there is one: over
# one frame, a hand-drawn box's or joint's few pixels of noise would be a few pixels per frame of drift.
PACE_MIN_SPAN = 4
MIN_CONF = 1e-3  # a lost joint's confidence never fades below this: still carried, as a prior
# Limbs and torso of a body (0-based slot pairs): the skeleton plus the torso's diagonals, so that a point
# inside the torso is near a segment too.
_BODY = tuple((a - 1, b - 1) for a, b in SKELETON_1BASED) + ((5, 12), (6, 11))


@dataclass(frozen=True)
class FlowConfig:
    """Point-tracking settings.

    Attributes:
        win: LK window side (px).
        levels: LK pyramid levels above the base.
        decay: confidence kept per frame of distance to the label.
        fb_scale: px of accumulated forward-backward error that divide the confidence by e.
        max_fb: px of one step's forward-backward error beyond which the point is lost.
        agree_px: px scale of the disagreement between the two chains.
        body_px_frac: a point within this fraction of a person's height (the extent of their carried
            joints) of their limbs or torso lies on their body.
        drag_margin_px: a joint on another person's body is dragged by them when its step is closer to
            theirs than to its own person's by at least this many px.
        lost_frac: a lost joint's confidence falls by e once it may have strayed this fraction of its
            person's height (the extent of their labelled joints) from their motion.
        stray_px: px within which a joint's step is taken for a person's step where the two people's
            steps cannot be compared (one of them wholly hidden or lost; `dragged_joints`).
        pace_wobble: until the flow measures a person's step, they move at the pace of their labels
            (`track_chain`'s `paces`), trusted to within this fraction of their height per frame.
    """

    win: int = 21
    levels: int = 3
    decay: float = 0.97
    fb_scale: float = 4.0
    max_fb: float = 1.0
    agree_px: float = 8.0
    body_px_frac: float = 0.1
    drag_margin_px: float = 1.0
    lost_frac: float = 0.05
    stray_px: float = 4.0
    pace_wobble: float = 0.015


@dataclass(frozen=True)
class Propagated:
    """A pose carried onto one frame: xy (K, 2) frame pixels and conf (K,) in [0, 1] (0: not carried).

    `followed` (K,): joints their own flow carried all the way; the others with conf > 0 were lost on the
    way and moved with the rest of their person since (their confidence fading with that). None: all
    joints with conf > 0 were followed.
    """

    xy: np.ndarray
    conf: np.ndarray
    followed: np.ndarray | None = None

    @property
    def strong(self) -> np.ndarray:
        """(K,) joints carried by their own flow."""
        return (self.conf > 0) if self.followed is None else (self.conf > 0) & self.followed


def _height(points: np.ndarray) -> float:
    """A person's size in px: the larger side of the extent of their (M, 2) points."""
    return float(np.ptp(points, axis=0).max())


def _lk(a: np.ndarray, b: np.ndarray, pts: np.ndarray, cfg: FlowConfig) -> tuple[np.ndarray, np.ndarray]:
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
    out, status, _ = cv2.calcOpticalFlowPyrLK(a, b, pts.astype(np.float32).reshape(-1, 1, 2), None,
                                              winSize=(cfg.win, cfg.win), maxLevel=cfg.levels, criteria=crit)
    return out.reshape(-1, 2).astype(np.float64), status.reshape(-1).astype(bool)


def _step(a: np.ndarray, b: np.ndarray, pts: np.ndarray, cfg: FlowConfig) -> tuple[np.ndarray, np.ndarray]:
    """(points on b, their forward-backward error in px; inf where lost) for points on grey frame a."""
    fwd, ok_f = _lk(a, b, pts, cfg)
    back, ok_b = _lk(b, a, fwd, cfg)
    h, w = a.shape[:2]
    inside = (fwd[:, 0] >= 0) & (fwd[:, 0] < w) & (fwd[:, 1] >= 0) & (fwd[:, 1] < h)
    err = np.linalg.norm(back - pts, axis=1)
    return fwd, np.where(ok_f & ok_b & inside, err, np.inf)


def track_chain(gray: Callable[[int], np.ndarray], start: int, pts: np.ndarray, conf: np.ndarray,
                stops: Sequence[int], cfg: FlowConfig = FlowConfig(),
                groups: np.ndarray | None = None, paces: Mapping[int, np.ndarray] | None = None,
                ) -> dict[int, Propagated]:
    """Carries points from frame `start` through consecutive frames up to the farthest of `stops`.

    A point LK loses moves on with the median step of the points of its group (its person) that LK
    still follows, its confidence fading with how far it may have strayed (`FlowConfig.lost_frac`;
    `Propagated.followed` False). With `groups`, a point another person's step dragged
    (`dragged_joints`) is lost too.

    Args:
        gray: frame index -> (H, W) uint8 grey frame.
        start: the labelled frame.
        pts: (K, 2) labelled joints; conf: (K,) their confidence (0: not labelled). Points off the image
            are not carried.
        stops: frames wanted, all on one side of `start`.
        cfg: tracking settings.
        groups: (K,) the person of each point (each person's points the 17 PoseTrack joints); None: one
            person, no drag check.
        paces: person -> (2,) px per step their labels show (`label_pace`): their step until the flow
            measures one, so that a person wholly hidden on the labelled frame walks on (lost joints
            moved with it fade by `FlowConfig.pace_wobble`); without, such a person stays where labelled.

    Returns:
        {frame: Propagated} for each frame of `stops`.
    """
    if not stops:
        return {}
    end = max(stops) if max(stops) > start else min(stops)
    step = 1 if end > start else -1
    xy = np.asarray(pts, np.float64).copy()
    h, w = gray(start).shape[:2]
    finite = np.all(np.isfinite(xy), axis=1)
    xy[~finite] = 0.0
    # a labelled point off the image (annotators place hidden joints there) has no pixels to follow
    inside = finite & (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    alive = (np.asarray(conf, np.float64) > 0) & inside
    labelled = alive.copy()
    base = np.where(alive, conf, 0.0)
    people = np.zeros(len(xy), int) if groups is None else np.asarray(groups)
    members = {int(p): people == p for p in np.unique(people[labelled])}
    height = np.ones(len(xy))
    for mine in members.values():
        if (labelled & mine).sum() >= 2:
            height[mine] = max(_height(xy[labelled & mine]), 1.0)
    total_err = np.zeros(len(xy))
    drift = np.zeros(len(xy))  # px a lost joint may have strayed from its person's motion since
    own = np.zeros(len(xy))  # each followed joint's last step off its person's (px)
    # each person's last step (median of their followed joints) and non-rigid motion: a person the flow
    # no longer follows at all (wholly behind another) goes on at that pace
    velocity: dict[int, np.ndarray] = {}
    wobble: dict[int, float] = {}
    pace = {int(p): np.asarray(v, np.float64) for p, v in (paces or {}).items() if int(p) in members}
    wanted = set(stops)
    out: dict[int, Propagated] = {}
    body = np.zeros_like(xy)  # each point's person's last step (0 where none was measured yet)
    for n, t in enumerate(range(start, end, step), start=1):
        new, err = _step(gray(t), gray(t + step), xy, cfg)
        was = alive.copy()
        alive &= err <= cfg.max_fb
        if groups is not None:
            # the bodies checked against: followed joints where the flow took them, lost ones moved on with
            # their person's last step
            bodies = np.where(alive[:, None], new, xy + body)
            alive &= ~dragged_joints(xy, new, alive, people, cfg, velocity, bodies, labelled)
        # the step that loses a joint counts as max_fb of error (its own is meaningless); then total_err stays
        total_err += np.where(was & ~alive, cfg.max_fb, 0.0)
        body = np.zeros_like(xy)
        spread = np.zeros(len(xy))
        for person, mine in members.items():
            ok = mine & alive
            if ok.sum() >= 2:
                velocity[person] = np.median(new[ok] - xy[ok], axis=0)
                off = np.linalg.norm(new[ok] - xy[ok] - velocity[person], axis=1)
                wobble[person] = float(np.mean(off))
                own[ok] = off
            if person in velocity:
                body[mine] = velocity[person]
                spread[mine] = wobble[person]
            elif person in pace:  # not measured yet: the labels' pace
                body[mine] = pace[person]
                spread[mine] = cfg.pace_wobble * height[mine]
            else:
                spread[mine] = height[mine]  # nothing to move it with: it stays, and soon counts for nothing
        drift = np.where(labelled & ~alive, drift + np.maximum(spread, own), 0.0)
        xy = np.where(alive[:, None], new, xy + body)
        total_err += np.where(alive, err, 0.0)
        if t + step in wanted:
            strong = base * cfg.decay**n * np.exp(-total_err / cfg.fb_scale)
            weak = np.maximum(strong * np.exp(-((drift / (cfg.lost_frac * height)) ** 2)), MIN_CONF)
            c = np.where(alive, strong, np.where(labelled, weak, 0.0))
            out[t + step] = Propagated(xy.copy(), c, alive.copy())
    return out


def fuse_chains(a: Propagated | None, b: Propagated | None, agree_px: float = 8.0) -> Propagated | None:
    """The two directions merged per joint (confidence-weighted; penalised where they disagree).

    A chain that only carried a joint weakly (lost on the way) still counts against the other where the
    two disagree: LK can slide along a plain limb with every check passing, and the other side's prior
    is what shows it (on the synthetic benchmark, ignoring weak chains here cost 3-7 mAP points).
    """
    if a is None or b is None:
        return a if b is None else b
    w = a.conf + b.conf
    safe = np.where(w > 0, w, 1.0)[:, None]
    xy = np.where((w > 0)[:, None], (a.xy * a.conf[:, None] + b.xy * b.conf[:, None]) / safe, (a.xy + b.xy) / 2)
    conf = 1.0 - (1.0 - a.conf) * (1.0 - b.conf)
    both = (a.conf > 0) & (b.conf > 0)
    gap = np.linalg.norm(a.xy - b.xy, axis=1)
    conf = np.where(both, conf * np.exp(-((gap / agree_px) ** 2)), conf)
    return Propagated(xy, conf, a.strong | b.strong)


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, S) distance of each point to each segment a[s]-b[s]."""
    ab = b - a  # (S, 2)
    ap = points[:, None, :] - a[None]  # (N, S, 2)
    length2 = np.maximum((ab**2).sum(axis=1), 1e-9)
    u = np.clip((ap * ab[None]).sum(axis=2) / length2, 0.0, 1.0)
    return np.linalg.norm(ap - u[..., None] * ab[None], axis=2)


def _on_body(points: np.ndarray, body: np.ndarray, alive: np.ndarray, frac: float) -> np.ndarray:
    """(N,) whether each point lies on a body (near the limbs and torso between its `alive` joints)."""
    pairs = [(a, b) for a, b in _BODY if alive[a] and alive[b]]
    if not pairs:
        return np.zeros(len(points), bool)
    height = _height(body[alive])
    ia, ib = np.array(pairs).T
    dist = _segment_distance(points, body[ia], body[ib]).min(axis=1)
    return dist <= max(frac * height, 2.0)


def dragged_joints(prev: np.ndarray, new: np.ndarray, alive: np.ndarray, people: np.ndarray,
                   cfg: FlowConfig = FlowConfig(), fallback: Mapping[int, np.ndarray] | None = None,
                   shape: np.ndarray | None = None, placed: np.ndarray | None = None) -> np.ndarray:
    """(N,) joints that one flow step moved with another person rather than with their own.

    A joint of person A that lies on person B's body after the step is dragged when
    - its step is closer to B's step than to A's by `cfg.drag_margin_px` (a person's step: the median
      step of their followed joints that lie on nobody else; people who step alike are left alone);
    - A's own step cannot be measured (every followed joint of A lies on someone) and B's can, and the
      joint stepped within `cfg.stray_px` of B's step: A is behind B, whose pixels the flow follows (a
      joint of A in front of B steps unlike B and is kept);
    - B's step cannot be measured (B is hidden, or lost to the flow) and the joint's step is more than
      `cfg.stray_px` off A's: it moves with something that is not A.
    A person's step where it cannot be measured is `fallback`'s (their last known step), if any.

    Args:
        prev, new: (N, 2) points before and after the step; alive: (N,) points the flow still follows.
        people: (N,) person of each point; each person's points are the 17 PoseTrack joints.
        cfg: tracking settings.
        fallback: person -> (2,) step to assume where their own cannot be measured.
        shape, placed: (N, 2) where each person's joints are after the step (followed or not) and (N,)
            which of them exist; the bodies the joints are checked against. None: `new` and `alive`.
    """
    shape = new if shape is None else shape
    placed = alive if placed is None else placed
    out = np.zeros(len(new), bool)
    movers = [int(p) for p in np.unique(people[alive])]
    bodies = [int(p) for p in np.unique(people[placed]) if (placed & (people == p)).sum() >= 2]
    if not movers or len(set(movers) | set(bodies)) < 2:
        return out
    step = new - prev
    rows = {p: np.flatnonzero(people == p) for p in set(movers) | set(bodies)}

    def extent(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        margin = max(cfg.body_px_frac * _height(pts), 2.0)
        return pts.min(axis=0) - margin, pts.max(axis=0) + margin

    # only people whose extents (grown by the body margin) meet are compared
    moving = {p: extent(new[rows[p]][alive[rows[p]]]) for p in movers}
    body = {p: extent(shape[rows[p]][placed[rows[p]]]) for p in bodies}
    on: dict[tuple[int, int], np.ndarray] = {}
    on_other = {p: np.zeros(len(rows[p]), bool) for p in movers}
    for a in movers:
        for b in bodies:
            if a == b or np.any(moving[a][1] < body[b][0]) or np.any(body[b][1] < moving[a][0]):
                continue
            hit = _on_body(new[rows[a]], shape[rows[b]], placed[rows[b]], cfg.body_px_frac) & alive[rows[a]]
            if hit.any():
                on[a, b] = hit
                on_other[a] |= hit
    own: dict[int, np.ndarray | None] = {}
    for p in rows:
        mine = alive[rows[p]] & ~on_other.get(p, False)
        own[p] = np.median(step[rows[p]][mine], axis=0) if mine.sum() >= 2 else (fallback or {}).get(p)
    for (a, b), hit in on.items():
        own_a, own_b = own[a], own[b]
        mine = step[rows[a]]
        if own_a is None:
            if own_b is not None:
                out[rows[a]] |= hit & (np.linalg.norm(mine - own_b, axis=1) <= cfg.stray_px)
        elif own_b is None:
            out[rows[a]] |= hit & (np.linalg.norm(mine - own_a, axis=1) > cfg.stray_px)
        elif np.linalg.norm(own_a - own_b) > cfg.drag_margin_px:
            closer = np.linalg.norm(mine - own_b, axis=1) + cfg.drag_margin_px <= np.linalg.norm(mine - own_a, axis=1)
            out[rows[a]] |= hit & closer
    return out


def propagate_people(gray: Callable[[int], np.ndarray], labels: Mapping[int, Mapping[int, np.ndarray]],
                     targets: Mapping[int, Sequence[int]], *, num_frames: int, cfg: FlowConfig = FlowConfig(),
                     max_reach: int = MAX_REACH) -> dict[int, dict[int, Propagated]]:
    """Each track's labelled joints carried to its target frames from the nearest labels on both sides.

    People labelled on the same frame are tracked together (one LK call per step) and joints dragged by
    another person are lost (`dragged_joints`).

    Args:
        gray: frame index -> grey frame.
        labels: track id -> {labelled frame: (K, 3) x, y, v} (v > 0 = placed).
        targets: track id -> unlabelled frames wanted.
        num_frames: frames in the video.
        cfg: tracking settings.
        max_reach: most frames a label is carried.

    Returns:
        track id -> {target: Propagated} for the targets some label reaches.
    """
    # (start frame, direction) -> track id -> stops
    chains: dict[tuple[int, int], dict[int, list[int]]] = {}
    for tid, track in labels.items():
        keys = sorted(track)
        for t in targets.get(tid, ()):
            if t in track or not 0 <= t < num_frames:
                continue
            i = int(np.searchsorted(keys, t))
            if i > 0 and t - keys[i - 1] <= max_reach:
                chains.setdefault((keys[i - 1], 1), {}).setdefault(tid, []).append(t)
            if i < len(keys) and keys[i] - t <= max_reach:
                chains.setdefault((keys[i], -1), {}).setdefault(tid, []).append(t)
    carried: dict[int, dict[int, list[Propagated]]] = {}
    for (start, direction), wanted in chains.items():
        tids = sorted(wanted)
        lab = {tid: np.asarray(labels[tid][start], np.float64) for tid in tids}
        pts = np.concatenate([lab[tid][:, :2] for tid in tids])
        conf = np.concatenate([(lab[tid][:, 2] > 0).astype(float) for tid in tids])
        stops = sorted({f for fs in wanted.values() for f in fs})
        bounds = np.cumsum([0] + [len(lab[tid]) for tid in tids])
        groups = np.repeat(np.arange(len(tids)), np.diff(bounds))
        paces = {g: pace for g, tid in enumerate(tids)
                 if (pace := label_pace(labels[tid], start, direction)) is not None}
        for f, prop in track_chain(gray, start, pts, conf, stops, cfg, groups, paces).items():
            strong = prop.strong
            for tid, lo, hi in zip(tids, bounds[:-1], bounds[1:]):
                if f in wanted[tid]:
                    part = Propagated(prop.xy[lo:hi], prop.conf[lo:hi], strong[lo:hi])
                    carried.setdefault(tid, {}).setdefault(f, []).append(part)
    out: dict[int, dict[int, Propagated]] = {}
    for tid, frames in carried.items():
        for f, props in frames.items():
            merged = fuse_chains(props[0], props[1] if len(props) > 1 else None, cfg.agree_px)
            if merged is not None:
                out.setdefault(tid, {})[f] = merged
    return out


def pace_label(labelled: Iterable[int], start: int, direction: int) -> int | None:
    """The label a pace going `direction` (+1 later, -1 earlier) from the label on `start` is measured
    from: among the track's `labelled` frames on the other side of `start`, the nearest at least
    PACE_MIN_SPAN frames away, else the farthest; None where there is none."""
    behind = sorted((abs(f - start), f) for f in labelled if (f < start if direction > 0 else f > start))
    if not behind:
        return None
    return next((f for span, f in behind if span >= PACE_MIN_SPAN), behind[-1][1])


def label_pace(track: Mapping[int, np.ndarray], start: int, direction: int) -> np.ndarray | None:
    """(2,) px per frame a track's labelled joints move going `direction` (+1 later, -1 earlier) from
    the label on `start`: the median motion of the joints placed on both it and the track's label that
    `pace_label` picks; None without such a label or with fewer than 2 joints in common."""
    other = pace_label(track, start, direction)
    if other is None:
        return None
    a, b = np.asarray(track[start], np.float64), np.asarray(track[other], np.float64)
    both = (a[:, 2] > 0) & (b[:, 2] > 0) & np.isfinite(a[:, :2]).all(axis=1) & np.isfinite(b[:, :2]).all(axis=1)
    if both.sum() < 2:
        return None
    return np.median(a[both, :2] - b[both, :2], axis=0) / abs(start - other)


def propagate(gray: Callable[[int], np.ndarray], labels: dict[int, np.ndarray], targets: Sequence[int], *,
              num_frames: int, cfg: FlowConfig = FlowConfig(), max_reach: int = MAX_REACH,
              ) -> dict[int, Propagated]:
    """One track's labelled joints carried to each target frame from the nearest labels on both sides.

    Args:
        gray: frame index -> grey frame.
        labels: {labelled frame: (K, 3) x, y, v} of the track (v > 0 = placed).
        targets: unlabelled frames wanted.
        num_frames: frames in the video.
        cfg: tracking settings.
        max_reach: most frames a label is carried.

    Returns:
        {target: Propagated} for the targets some label reaches.
    """
    return propagate_people(gray, {0: labels}, {0: targets}, num_frames=num_frames, cfg=cfg,
                            max_reach=max_reach).get(0, {})


def sees_pose(xy: np.ndarray, ref: np.ndarray, mask: np.ndarray, height: float | None = None) -> bool:
    """Whether joints `xy` (K, 2+) are the pose `ref` (K, 2+): within CHECK_FRAC of `height` (default: the
    size of ref's `mask` joints) of at least half of ref's `mask` joints."""
    if height is None:
        height = max(_height(np.asarray(ref, np.float64)[mask, :2]), 1.0)
    gap = np.linalg.norm(np.asarray(xy, np.float64)[mask, :2] - np.asarray(ref, np.float64)[mask, :2], axis=1)
    return bool((gap <= CHECK_FRAC * height).mean() >= 0.5)


def fuse_with_backbone(xy: np.ndarray, scores: np.ndarray, prop: Propagated, trust: float = PROPAGATION_TRUST,
                       check_xy: np.ndarray | None = None, unseen: bool = False,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per joint: the propagated point where its confidence >= `trust` or >= the backbone's score (a weak
    carried point still beats a backbone even less sure), else the backbone's, unless the backbone's lies
    farther than FAR_FRAC of the person's height from the carried point and the flow still follows a third
    of the person's joints (then the carried one, with its low confidence). Where the backbone's pose
    misses most of the joints the flow is sure of (>= 3 of them; CHECK_FRAC), every carried joint wins. A
    backbone joint kept where a carried point exists has its score scaled by how well the two agree
    (AGREE_FRAC).

    Args:
        xy: (K, 2) backbone (or head) joints; scores: (K,) their scores.
        prop: the propagated pose.
        trust: least carried confidence that wins outright.
        check_xy: (K, 2) the backbone's own joints, checked against the sure carried ones, where `xy` is a
            head's output (fed the carried poses, it agrees with them by construction); None: `xy`.
        unseen: the caller knows the backbone does not see this person (it sees another): every carried
            joint wins.

    Returns:
        (xy, scores, taken): fused joints, their scores (the propagated confidence where taken) and
        the (K,) mask of propagated joints.
    """
    carried = prop.conf > 0
    scores = np.asarray(scores, np.float64)
    taken = (prop.conf >= trust) | (carried & (prop.conf >= scores))
    if unseen:
        taken |= carried
    if carried.sum() >= 2:
        height = max(_height(prop.xy[carried]), 1.0)
        gap = np.linalg.norm(np.asarray(xy, np.float64) - prop.xy, axis=1)
        # Only a pose whose flow still holds (a third of its joints followed) locates the person well
        # enough to overrule the backbone; where the flow broke everywhere the backbone wins.
        if prop.strong.sum() >= max(2, carried.sum() / 3):
            taken |= carried & (gap > FAR_FRAC * height)
        # The joints the flow is sure of check the backbone's pose: where it misses most of them it does not
        # see this person here (another person, a pose it cannot read), and every carried joint wins.
        sure = prop.conf >= trust
        if sure.sum() >= 3 and not sees_pose(xy if check_xy is None else check_xy, prop.xy, sure, height):
            taken |= carried
        agree = np.maximum(np.exp(-((gap / (AGREE_FRAC * height)) ** 2)), 0.1)
        scores = np.where(carried, scores * agree, scores)
    return (np.where(taken[:, None], prop.xy, xy), np.where(taken, prop.conf, scores), taken)
