"""Synthetic PoseTrack-style videos: walking cv2-drawn people with exact keypoints, boxes and track ids.

`python -m annotation_io.synth OUT --videos N --frames F --people P --seed S [--label-every K]
[--size WxH]` writes, per video `<vid>` ("000001", ...):
- `OUT/images/<vid>/%06d.jpg`: the frames;
- `OUT/annotations/<vid>.json`: PoseTrack 2018 ground truth on every frame (is_labeled everywhere);
- `OUT/sparse/<vid>.json` (with --label-every K): labels only on frames 0, K, 2K, ...; the other
  frames are listed without annotations, as in PoseTrack's sparsely labelled videos.

The scene model: each person is a 2.5-D walker seen in three-quarter view (the body yawed towards
the camera), moving along x at its own depth. Depth sets size and ground line (perspective) and the
drawing order (far first). Gait: thighs swing sinusoidally, knees flex in the swing phase, the
pelvis rides on the lower foot (so the body bobs), arms swing against the legs with the elbows bent
more when forward. The first two people walk towards each other and cross mid-video; the others
enter from outside the frame later. Some frames get a directional motion blur or a defocus blur.

Ground truth is the drawn geometry: v=2 visible, v=1 covered by a person drawn in front (tested per
joint against the front people's silhouettes; self-occlusion is not marked, as in PoseTrack), v=0
outside the frame (x, y = 0, 0). Ears (slots 3/4) are always v=0. A person is listed on a frame
when at least one joint lies inside it; track ids are given in order of first appearance. The box is
the tight box of the drawn silhouette clipped to the frame; the head box is not clipped (it is the
PCKh size reference). Everything comes from `np.random.default_rng`, so a seed fixes every byte.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from annotation_io.posetrack import dump_2018
from annotation_io.skeletons import KEYPOINT_INDEX
from annotation_io.types import Box, Frame, Person, Video, empty_keypoints

logger = logging.getLogger(__name__)

DEFAULT_SIZE = (480, 360)
FPS = 25.0
JPEG_QUALITY = 92
SHIFT = 3  # cv2 sub-pixel bits for drawing
_ONE = 1 << SHIFT
# PoseTrack 2018 image id: T * 10^10 + sequence * 10^4 + frame (T=1 as for mpii sequences).
_ID_DATASET, _ID_SEQ, _MAX_FRAMES = 10**10, 10**4, 10**4

# Body model, in units of standing height; a forward, b up, c lateral (+ = person's left).
_ANKLE_H, _THIGH, _SHIN, _TORSO, _UPPER_ARM, _FOREARM = 0.045, 0.245, 0.245, 0.285, 0.165, 0.145
_SHOULDER_HW, _HIP_HW, _HEAD_RX, _HEAD_RY = 0.105, 0.075, 0.052, 0.066
_LEG_SWING, _ARM_SWING, _LEAN = 0.38, 0.32, 0.06

_SKIN = ((190, 210, 240), (150, 180, 225), (105, 140, 190), (70, 100, 150), (45, 65, 100))
_HAIR = ((20, 20, 25), (30, 50, 80), (40, 80, 130), (120, 170, 210), (110, 110, 115))
_TROUSERS = ((110, 60, 30), (40, 35, 35), (120, 160, 180), (95, 95, 100), (60, 90, 60), (130, 40, 40))


# Per-frame blur: ("motion", kernel length px, angle deg), ("defocus", Gaussian sigma px, 0) or None.
BlurSpec = tuple[str, float, float] | None


@dataclass(frozen=True)
class Outfit:
    """BGR colours of one person, and whether the forearms are bare."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shirt: tuple[int, int, int]
    trousers: tuple[int, int, int]
    shoes: tuple[int, int, int]
    short_sleeves: bool


@dataclass(frozen=True)
class Walker:
    """One simulated person: size, path, gait and clothes; `x(t) = x0 + direction * speed * t`."""

    height: float  # standing height, px
    ground_y: float  # image row of the feet
    depth: float  # 0 far .. 1 near; decides the drawing order
    direction: int  # +1 walks right, -1 walks left
    x0: float  # pelvis x at frame 0
    speed: float  # px per frame
    stride: float  # px per gait cycle (two steps)
    phase0: float
    yaw: float  # rotation towards the camera, rad (three-quarter view)
    outfit: Outfit


@dataclass(frozen=True)
class Scene:
    """Everything random about one video; rendering it is deterministic."""

    size: tuple[int, int]  # (W, H)
    background: np.ndarray  # (H, W, 3) uint8 BGR
    walkers: tuple[Walker, ...]
    blur: tuple[BlurSpec, ...]  # one per frame


def _colour(
    rng: np.random.Generator, hue: float, sat: tuple[int, int], val: tuple[int, int]
) -> tuple[int, int, int]:
    hsv = np.array([[[hue % 180, rng.integers(*sat), rng.integers(*val)]]], dtype=np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _outfit(rng: np.random.Generator, hue: float) -> Outfit:
    return Outfit(
        skin=_SKIN[rng.integers(len(_SKIN))],
        hair=_HAIR[rng.integers(len(_HAIR))],
        shirt=_colour(rng, hue, (150, 256), (140, 256)),
        trousers=_TROUSERS[rng.integers(len(_TROUSERS))],
        shoes=_colour(rng, rng.uniform(0, 180), (0, 120), (20, 70)),
        short_sleeves=bool(rng.random() < 0.5),
    )


def simulate_tracks(
    rng: np.random.Generator, *, frames: int, people: int, size: tuple[int, int]
) -> list[Walker]:
    """Draw the walkers of one video: a crossing pair first, then people entering from outside."""
    width, height = size
    hue0 = rng.uniform(0, 180)
    walkers = []
    near_first = rng.random() < 0.5
    t_cross, x_cross = frames * rng.uniform(0.35, 0.65), width * rng.uniform(0.35, 0.65)
    for i in range(people):
        if i < 2 and people >= 2:  # the pair that crosses: clearly different depths
            depth = rng.uniform(0.6, 1.0) if (i == 0) == near_first else rng.uniform(0.0, 0.35)
        else:
            depth = rng.uniform(0.0, 1.0)
        tall = height * (0.38 + 0.42 * depth)
        speed = tall * rng.uniform(0.02, 0.034)  # ~0.5-0.85 body heights per second at 25 fps
        direction = int(rng.choice((-1, 1)))
        if i < 2 and people >= 2:
            direction = (1 if i == 0 else -1) * (1 if hue0 < 90 else -1)
            x0 = x_cross - direction * speed * t_cross
        elif people == 1:
            x0 = width * (rng.uniform(0.15, 0.35) if direction > 0 else rng.uniform(0.65, 0.85))
        else:  # enters through the left/right edge at t_enter
            t_enter = frames * rng.uniform(0.1, 0.45)  # hands and feet reach ~0.27 heights from the pelvis
            x_enter = -0.3 * tall if direction > 0 else width + 0.3 * tall
            x0 = x_enter - direction * speed * t_enter
        walkers.append(
            Walker(
                height=tall,
                ground_y=height * (0.78 + 0.2 * depth),
                depth=depth,
                direction=direction,
                x0=x0,
                speed=speed,
                stride=tall * rng.uniform(0.75, 0.9),
                phase0=rng.uniform(0, 2 * math.pi),
                yaw=rng.uniform(0.35, 0.6),
                outfit=_outfit(rng, hue0 + i * 180 * 0.618),
            )
        )
    return walkers


def make_background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A textured (H, W, 3) uint8 backdrop: two gradients split at a horizon, blobs, boxes, poles, noise."""
    width, height = size
    horizon = int(height * rng.uniform(0.45, 0.7))
    cols = rng.uniform(40, 200, size=(4, 1)) + rng.uniform(-30, 30, size=(4, 3))
    ramp_top = np.linspace(0, 1, horizon)[:, None]
    ramp_bot = np.linspace(0, 1, height - horizon)[:, None]
    column = np.concatenate(
        [cols[0] + (cols[1] - cols[0]) * ramp_top, cols[2] + (cols[3] - cols[2]) * ramp_bot]
    )
    img = np.repeat(column[:, None, :], width, axis=1)
    grid = (height // 40 + 2, width // 40 + 2)
    coarse = rng.normal(0, 16, size=(*grid, 1)) + rng.normal(0, 5, size=(*grid, 3))  # mostly brightness
    img += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(5, 12))):  # buildings, windows, signs above the horizon
        x1, y1 = int(rng.integers(0, width)), int(rng.integers(0, horizon))
        w, h = int(rng.integers(width // 20, width // 4)), int(rng.integers(height // 20, height // 3))
        colour = _colour(rng, rng.uniform(0, 180), (20, 120), (50, 220))
        cv2.rectangle(img, (x1, y1), (x1 + w, min(y1 + h, horizon)), colour, -1)
    for _ in range(int(rng.integers(3, 8))):  # bushes, stones
        centre = (int(rng.integers(0, width)), int(horizon + rng.integers(-height // 10, height // 10)))
        axes = (int(rng.integers(10, width // 8)), int(rng.integers(6, height // 10)))
        colour = _colour(rng, rng.uniform(30, 90), (40, 200), (40, 160))
        cv2.ellipse(img, centre, axes, 0, 0, 360, colour, -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(1, 4))):  # poles
        x = int(rng.integers(0, width))
        cv2.line(
            img, (x, int(rng.integers(0, horizon))), (x, horizon + 5), (60, 60, 60), int(rng.integers(2, 6))
        )
    fine = rng.normal(0, 5, size=img.shape)
    return np.clip(img + fine, 0, 255).astype(np.uint8)


def make_scene(rng: np.random.Generator, *, frames: int, people: int, size: tuple[int, int]) -> Scene:
    """Draw all random choices of one video: background, walkers and per-frame blur."""
    background = make_background(rng, size)
    walkers = simulate_tracks(rng, frames=frames, people=people, size=size)
    blur: list[BlurSpec] = []
    for _ in range(frames):
        u = rng.random()
        if u < 0.12:
            blur.append(("motion", float(rng.uniform(5, 13)), float(rng.uniform(0, 180))))
        elif u < 0.2:
            blur.append(("defocus", float(rng.uniform(1.0, 2.5)), 0.0))
        else:
            blur.append(None)
    return Scene(size, background, tuple(walkers), tuple(blur))


def body_points(w: Walker, t: float) -> dict[str, np.ndarray]:
    """Image positions (x, y) of the body parts of walker `w` at frame `t` (joints, head, feet)."""
    phi = w.phase0 + 2 * math.pi * w.speed * t / w.stride
    x, s, h = w.x0 + w.direction * w.speed * t, w.direction, w.height
    cos_y, sin_y = math.cos(w.yaw), math.sin(w.yaw)

    def at(a: float, b: float, c: float = 0.0) -> np.ndarray:
        return np.array([x + h * (s * a * cos_y + c * sin_y), w.ground_y - h * b])

    legs = {}
    for side, ph in (("l", phi), ("r", phi + math.pi)):
        th = _LEG_SWING * math.sin(ph)
        shin = th - (0.12 + 0.7 * max(0.0, math.cos(ph)) ** 2)  # knee flexes in the swing phase
        knee = (_THIGH * math.sin(th), -_THIGH * math.cos(th))
        legs[side] = (knee, (knee[0] + _SHIN * math.sin(shin), knee[1] - _SHIN * math.cos(shin)), shin, ph)
    hip_b = _ANKLE_H - min(legs["l"][1][1], legs["r"][1][1])  # the lower foot is on the ground
    sh_a, sh_b = _TORSO * math.sin(_LEAN), hip_b + _TORSO * math.cos(_LEAN)
    pts = {"hip_c": at(0, hip_b), "sh_c": at(sh_a, sh_b), "neck": at(sh_a + 0.01, sh_b + 0.05)}
    head_a, head_b = sh_a + 0.022, sh_b + 0.112
    pts.update(
        head=at(head_a, head_b), head_top=at(head_a, head_b + 0.062), nose=at(head_a + 0.05, head_b - 0.01)
    )
    pts["eye"] = at(head_a + 0.034, head_b + 0.012)
    for side, c_sign in (("l", 1.0), ("r", -1.0)):
        knee, ankle, shin, ph = legs[side]
        hc, sc = c_sign * _HIP_HW, c_sign * _SHOULDER_HW
        pts[f"{side}_hip"] = at(0, hip_b, hc)
        pts[f"{side}_knee"] = at(knee[0], hip_b + knee[1], hc)
        pts[f"{side}_ankle"] = at(ankle[0], hip_b + ankle[1], hc)
        pitch = 0.4 * (shin + 0.12)
        pts[f"{side}_toe"] = at(
            ankle[0] + 0.075 * math.cos(pitch), hip_b + ankle[1] - 0.03 + 0.075 * math.sin(pitch), hc
        )
        pts[f"{side}_heel"] = at(ankle[0] - 0.02, hip_b + ankle[1] - 0.03, hc)
        alpha = -_ARM_SWING * math.sin(ph)  # arms swing against the same-side leg
        fore = alpha + 0.25 + 0.45 * max(0.0, alpha / _ARM_SWING)
        elbow = (sh_a + _UPPER_ARM * math.sin(alpha), sh_b - 0.02 - _UPPER_ARM * math.cos(alpha))
        wrist = (elbow[0] + _FOREARM * math.sin(fore), elbow[1] - _FOREARM * math.cos(fore))
        pts[f"{side}_shoulder"] = at(sh_a, sh_b - 0.02, sc)
        pts[f"{side}_elbow"], pts[f"{side}_wrist"] = at(*elbow, sc), at(*wrist, sc)
        pts[f"{side}_hand"] = at(wrist[0] + 0.025 * math.sin(fore), wrist[1] - 0.025 * math.cos(fore), sc)
    return pts


_GT_PARTS = {  # 17-slot name -> body_points key (the ears stay absent)
    "nose": "nose",
    "head_bottom": "neck",
    "head_top": "head_top",
    **{
        f"{lr}_{j}": f"{lr[0]}_{j}"
        for lr in ("left", "right")
        for j in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
    },
}


def _fixed(p: np.ndarray | tuple[float, float]) -> tuple[int, int]:
    """Point in cv2's fixed-point sub-pixel coordinates (SHIFT fractional bits)."""
    return math.floor(p[0] * _ONE + 0.5), math.floor(p[1] * _ONE + 0.5)


def _draw_person(img: np.ndarray, w: Walker, pts: dict[str, np.ndarray], mask: np.ndarray | None) -> None:
    """Paint walker `w` (back parts first) onto `img`, or its silhouette onto `mask` when given."""
    h, o = w.height, w.outfit
    target, aa = (mask, cv2.LINE_8) if mask is not None else (img, cv2.LINE_AA)

    def col(c: tuple[int, int, int]) -> tuple[int, ...]:
        return (255,) if mask is not None else c

    def disc(p: np.ndarray, r: float, c: tuple[int, int, int]) -> None:
        cv2.circle(target, _fixed(p), max(1, round(r * h * _ONE)), col(c), -1, aa, SHIFT)

    def limb(p: np.ndarray, q: np.ndarray, wp: float, wq: float, c: tuple[int, int, int]) -> None:
        (px, py), (qx, qy) = p, q
        norm = max(math.hypot(qx - px, qy - py), 1e-6)
        nx, ny = -(qy - py) / norm * h / 2, (qx - px) / norm * h / 2
        quad = [
            (px + nx * wp, py + ny * wp),
            (qx + nx * wq, qy + ny * wq),
            (qx - nx * wq, qy - ny * wq),
            (px - nx * wp, py - ny * wp),
        ]
        cv2.fillConvexPoly(target, np.array([_fixed(v) for v in quad], np.int32), col(c), aa, SHIFT)
        disc(p, wp / 2, c)
        disc(q, wq / 2, c)

    def leg(side: str) -> None:
        limb(pts[f"{side}_hip"], pts[f"{side}_knee"], 0.085, 0.062, o.trousers)
        limb(pts[f"{side}_knee"], pts[f"{side}_ankle"], 0.06, 0.042, o.trousers)
        limb(pts[f"{side}_heel"], pts[f"{side}_toe"], 0.045, 0.035, o.shoes)

    def arm(side: str) -> None:
        limb(pts[f"{side}_shoulder"], pts[f"{side}_elbow"], 0.058, 0.046, o.shirt)
        limb(pts[f"{side}_elbow"], pts[f"{side}_wrist"], 0.044, 0.034, o.skin if o.short_sleeves else o.shirt)
        disc(pts[f"{side}_hand"], 0.026, o.skin)

    near, far = ("r", "l") if w.direction > 0 else ("l", "r")
    arm(far)
    leg(far)
    leg(near)
    limb(pts["hip_c"], pts["hip_c"] + (pts["sh_c"] - pts["hip_c"]) * 0.25, 0.17, 0.165, o.trousers)
    limb(pts["hip_c"] + (pts["sh_c"] - pts["hip_c"]) * 0.2, pts["sh_c"], 0.165, 0.19, o.shirt)
    limb(pts["sh_c"], pts["neck"], 0.05, 0.045, o.skin)
    axes = (max(1, round(_HEAD_RX * h * _ONE)), max(1, round(_HEAD_RY * h * _ONE)))
    cv2.ellipse(target, _fixed(pts["head"]), axes, 0, 0, 360, col(o.skin), -1, aa, SHIFT)
    hair_span = (150, 385) if w.direction > 0 else (-205, 30)  # back of the head and the top
    hair_axes = (int(axes[0] * 1.08), int(axes[1] * 1.05))
    cv2.ellipse(
        target, _fixed(pts["head"] + (0, -0.006 * h)), hair_axes, 0, *hair_span, col(o.hair), -1, aa, SHIFT
    )
    if mask is None:
        disc(pts["eye"], 0.006, (30, 30, 30))
    arm(near)


def _blur(img: np.ndarray, spec: BlurSpec) -> np.ndarray:
    if spec is None:
        return img
    kind, amount, angle = spec
    if kind == "defocus":
        return cv2.GaussianBlur(img, (0, 0), amount)
    size = math.ceil(amount) | 1
    kernel = np.zeros((size, size), np.float32)
    d = np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))]) * (amount - 1) / 2
    c = np.array([size // 2, size // 2], dtype=np.float64)
    cv2.line(kernel, _fixed(c - d), _fixed(c + d), 1.0, 1, cv2.LINE_AA, SHIFT)
    return cv2.filter2D(img, -1, kernel / kernel.sum())


def render_video(scene: Scene) -> Iterator[tuple[np.ndarray, list[Person]]]:
    """Yield (frame BGR uint8, ground-truth persons sorted by track id) for every frame of `scene`."""
    width, height = scene.size
    order = sorted(range(len(scene.walkers)), key=lambda i: scene.walkers[i].depth)  # far first
    track_ids: dict[int, int] = {}
    for t, blur in enumerate(scene.blur):
        img = scene.background.copy()
        top = np.zeros((height, width), np.int16)  # 1 + draw rank of the front-most person per pixel
        drawn = []
        for rank, i in enumerate(order):
            w = scene.walkers[i]
            pts = body_points(w, t)
            if not -0.4 * w.height < pts["hip_c"][0] < width + 0.4 * w.height:
                continue  # far outside: nothing to draw (limbs reach < 0.3 heights from the pelvis)
            mask = np.zeros((height, width), np.uint8)
            _draw_person(img, w, pts, mask)
            bx, by, bw, bh = cv2.boundingRect(mask)
            if bw == 0 or bh == 0:
                continue
            _draw_person(img, w, pts, None)
            roi = (slice(by, by + bh), slice(bx, bx + bw))
            top[roi][mask[roi] > 0] = rank + 1
            drawn.append((rank, i, pts, Box(bx, by, bw, bh)))
        persons: list[tuple[int, Person]] = []
        for rank, i, pts, box in drawn:
            kp = empty_keypoints()
            for name, part in _GT_PARTS.items():
                x, y = pts[part]
                if 0 <= x < width and 0 <= y < height:
                    front = top[min(round(y), height - 1), min(round(x), width - 1)] > rank + 1
                    kp[KEYPOINT_INDEX[name]] = (round(x, 2), round(y, 2), 1 if front else 2)
            if not kp[:, 2].any():
                continue
            tid = track_ids.setdefault(i, len(track_ids))
            hw, hh = _HEAD_RX * scene.walkers[i].height, _HEAD_RY * scene.walkers[i].height
            (hx, hy) = pts["head"]
            head = Box(*(round(v, 2) for v in (hx - hw, hy - hh, 2 * hw, 2 * hh)))
            persons.append((tid, Person(keypoints=kp, track_id=tid, box=box, head_box=head)))
        yield _blur(img, blur), [p for _, p in sorted(persons, key=lambda tp: tp[0])]


def visible_only(video: Video) -> Video:
    """A copy of `video` labelled as PoseTrack annotators label: joints covered by a person in front
    (v = 1) are left out (0, 0, 0), visible ones kept."""
    frames = []
    for f in video.frames:
        persons = []
        for p in f.persons:
            person = p.copy()
            person.keypoints[person.keypoints[:, 2] == 1] = 0.0
            persons.append(person)
        frames.append(replace(f, persons=persons))
    return replace(video, frames=frames)


def sparsify(video: Video, every: int) -> Video:
    """A copy of `video` labelled only on frames 0, every, 2*every, ...; other frames keep no persons."""
    frames = [
        replace(f, persons=[p.copy() for p in f.persons], is_labeled=True)
        if f.index % every == 0
        else replace(f, persons=[], is_labeled=False)
        for f in video.frames
    ]
    return replace(video, frames=frames)


def _check_args(
    videos: int, frames: int, people: int, seed: int, label_every: int | None, size: tuple[int, int]
) -> None:
    checks = (
        (
            1 <= videos < 10**6,
            f"--videos must be in 1..999999 (PoseTrack image ids hold 6 sequence digits), got {videos}",
        ),
        (
            1 <= frames < _MAX_FRAMES,
            f"--frames must be in 1..{_MAX_FRAMES - 1} (image ids hold 4 frame digits), got {frames}",
        ),
        (1 <= people <= 50, f"--people must be in 1..50, got {people}"),
        (seed >= 0, f"--seed must be >= 0, got {seed}"),
        (label_every is None or label_every >= 1, f"--label-every must be >= 1, got {label_every}"),
        (
            len(size) == 2 and min(size) >= 64 and max(size) <= 4096,
            f"--size must be WxH with sides in 64..4096, got {size}",
        ),
    )
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def generate(
    out_dir: str | Path,
    *,
    videos: int,
    frames: int,
    people: int,
    seed: int,
    label_every: int | None = None,
    size: tuple[int, int] = DEFAULT_SIZE,
    progress: bool = False,
) -> list[Path]:
    """Write synthetic videos (frames, full PoseTrack 2018 GT, optional sparse GT) under `out_dir`.

    Args:
        out_dir: output root; gets `images/`, `annotations/` and (with `label_every`) `sparse/`.
        videos: number of videos; video k (0-based) is named f"{k+1:06d}".
        frames: frames per video.
        people: people per video (0 and 1 cross, the rest enter from outside the frame).
        seed: seed of everything; video k uses `np.random.default_rng([seed, k])`, so a video does
            not depend on how many others are generated.
        label_every: also write `sparse/<vid>.json` labelled on every `label_every`-th frame.
        size: frame size (W, H).
        progress: show a tqdm progress bar over all frames.

    Returns:
        The full-annotation JSON paths, one per video.

    Raises:
        ValueError: an argument is out of range.
    """
    size = (int(size[0]), int(size[1]))
    _check_args(videos, frames, people, seed, label_every, size)
    out = Path(out_dir)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=videos * frames, desc="synth", unit="frame")
    paths = []
    for k in range(videos):
        name = f"{k + 1:06d}"
        scene = make_scene(np.random.default_rng([seed, k]), frames=frames, people=people, size=size)
        image_dir = out / "images" / name
        image_dir.mkdir(parents=True, exist_ok=True)
        labelled = []
        for t, (image, persons) in enumerate(render_video(scene)):
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError(f"cv2 could not encode frame {t} of video {name} as JPEG")
            (image_dir / f"{t:06d}.jpg").write_bytes(jpeg.tobytes())
            image_id = _ID_DATASET + (k + 1) * _ID_SEQ + t
            labelled.append(
                Frame(t, persons, True, file_name=f"images/{name}/{t:06d}.jpg", image_id=image_id)
            )
            if bar is not None:
                bar.update(1)
        video = Video(name, frames, labelled, fps=FPS, source=f"images/{name}", width=size[0], height=size[1])
        path = out / "annotations" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        dump_2018(video, path)
        paths.append(path)
        if label_every is not None:
            (out / "sparse").mkdir(parents=True, exist_ok=True)
            dump_2018(sparsify(video, label_every), out / "sparse" / f"{name}.json")
        logger.info("video %s: %d frames, %d tracks", name, frames, len(video.track_ids()))
    if bar is not None:
        bar.close()
    return paths


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 480x360, got {text!r}") from exc
    return w, h


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (2 for bad arguments)."""
    parser = argparse.ArgumentParser(
        prog="python -m annotation_io.synth", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out", type=Path, help="output folder (gets images/, annotations/, sparse/)")
    parser.add_argument("--videos", type=int, default=1, help="number of videos (default 1)")
    parser.add_argument("--frames", type=int, default=30, help="frames per video (default 30)")
    parser.add_argument("--people", type=int, default=3, help="people per video (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--label-every", type=int, default=None, help="also write sparse/ labelled every K frames"
    )
    parser.add_argument(
        "--size", type=_parse_size, default=DEFAULT_SIZE, help="frame size WxH (default 480x360)"
    )
    try:
        args = parser.parse_args(argv)
        try:
            _check_args(args.videos, args.frames, args.people, args.seed, args.label_every, args.size)
        except ValueError as exc:
            parser.error(str(exc))
        if args.out.exists() and not args.out.is_dir():
            parser.error(
                f"{args.out} is a file; OUT must be a folder (it gets images/, annotations/, sparse/)"
            )
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 on --help
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.out.mkdir(parents=True, exist_ok=True)  # a file in the way fails here, before the progress bar
        paths = generate(
            args.out,
            videos=args.videos,
            frames=args.frames,
            people=args.people,
            seed=args.seed,
            label_every=args.label_every,
            size=args.size,
            progress=True,
        )
    except OSError as exc:  # OUT (or a folder above it) is a file, or cannot be written
        sys.stderr.write(f"error: cannot write under {args.out}: {exc.strerror or exc} ({exc.filename})\n")
        return 2
    logger.info("wrote %d videos under %s", len(paths), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
