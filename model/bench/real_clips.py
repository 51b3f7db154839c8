"""`python -m model bench-real --clips`: label propagation on real pixels, the real stills filmed by a moving camera.

The synthetic videos of `bench-video` move flat sprites; here every still of the real-stills data becomes
a short clip (`camera_clip`): a window of 85% of the photograph that pans across it, zooms in by 15%
and rolls by up to 3 degrees, each frame re-encoded as JPEG (quality 70) like a video's frames. The
people stand still in the scene, so the motion is the camera's: what hand-held footage adds to every
frame. The annotations follow the camera exactly (joints that leave the frame are dropped, as an
annotator would leave them out), so the flow, the boxes and the backbone meet real textures, real
people and a known truth.

With human labels every 4 and every 8 frames, it scores the unlabelled frames for backbone only
(propagation and the temporal median off: the backbone frame by frame), backbone + temporal median
(`model.pipeline.smoothing`, propagation off), propagation only
(`model.bench.propagation.propagation_only`) and propagation + backbone (the cold-start default): the
share of annotated limb joints within 0.1 x the person box diagonal (`model.bench.real_score.score_frame`),
poseval mAP and the share of predicted joints within PCKh@0.5 (`annotation_io.evaluate`; every predicted
joint counts, so a joint the truth leaves out is a miss: one an annotator would delete). The head boxes are the data's proxies, so mAP and PCKh are
comparable between runs on these files only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from annotation_io.evaluate import evaluate
from annotation_io.synth import sparsify
from annotation_io.types import Box, Frame, Video
from model.bench.real_score import RealScore, score_frame

logger = logging.getLogger(__name__)

__all__ = ["ClipRow", "FollowRow", "camera_clip", "format_clips", "format_follow", "run_clip_bench",
           "run_follow_bench"]

CLIP_FRAMES = 16
WINDOW = 0.85  # the camera sees this share of the photograph's width and height
ZOOM = 0.15  # zoom-in over the clip
PAN = 0.8  # share of the free margin the window sweeps, left-right (one sine period)
ROLL_DEG = 3.0  # camera roll amplitude
JPEG_QUALITY = 70
CLIP_VARIANTS = ("backbone only", "backbone + temporal median", "propagation only", "propagation + backbone")


@dataclass
class ClipRow:
    """One (backbone, label spacing, variant) on the unlabelled clip frames."""

    backbone: str
    label_every: int
    variant: str
    within: float  # limb joints within 0.1 x box diagonal, %
    joints: int
    map: float
    within_pckh: float  # predicted joints within PCKh@0.5 of the truth, %: the rest are to move or delete


@dataclass
class FollowRow:
    """One backbone on the clips with no labels at all: the person detector and following alone."""

    backbone: str
    found: int  # person-frames on which a prediction places at least half of the person's limb joints
    found_any: int  # ... at least one of them
    person_frames: int  # annotated person-frames
    predictions: int  # predicted person-frames (unannotated bystanders count here too)
    tracks: int  # predicted track ids, over all clips
    joints_ok: int  # annotated limb joints within 0.1 x box diagonal of the matched prediction
    joints: int  # annotated limb joints


class ClipReader:
    """A FrameReader over frames held in memory."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames, self.num_frames = frames, len(frames)
        self.height, self.width = frames[0].shape[:2]

    def read(self, index: int) -> np.ndarray:
        return self.frames[index]

    def close(self) -> None:
        pass


def camera_matrix(t: float, width: int, height: int) -> np.ndarray:
    """(2, 3) affine from photograph pixels to clip pixels at clip time `t` in [0, 1]."""
    zoom = 1.0 + ZOOM * t
    seen_w, seen_h = WINDOW * width / zoom, WINDOW * height / zoom
    cx = width / 2.0 + (width - seen_w) / 2.0 * PAN * np.sin(2.0 * np.pi * t)
    cy = height / 2.0 + (height - seen_h) / 2.0 * 0.5 * np.sin(np.pi * t)
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), ROLL_DEG * float(np.sin(2.0 * np.pi * t)), zoom)
    m[:, 2] += (WINDOW * width / 2.0 - cx, WINDOW * height / 2.0 - cy)
    return m


def _map_box(box: Box | None, m: np.ndarray) -> Box | None:
    if box is None:
        return None
    x1, y1, x2, y2 = box.xyxy
    corners = np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]]) @ m[:, :2].T + m[:, 2]
    return Box.from_xyxy(*corners.min(axis=0), *corners.max(axis=0))


def camera_clip(gt: Video, image: np.ndarray, num_frames: int = CLIP_FRAMES,
                size: tuple[int, int] | None = None, *, interlaced: bool = False) -> tuple[Video, ClipReader]:  # fmt: skip
    """A still (one-frame ground truth `gt` and its BGR `image`) filmed by the moving camera: the clip's
    ground truth (every frame labelled, track id = the person's index) and its frames, `size` (W, H) pixels
    (default `WINDOW` x the photograph's: what the camera sees, unscaled). `interlaced`: each frame's odd rows
    are what the camera sees half a frame later (the second field, as interlaced footage decodes), so they
    comb wherever the pan, zoom and roll moved the picture; the truth is the even rows' (the first field)."""
    h, w = image.shape[:2]
    natural = (int(WINDOW * w), int(WINDOW * h))
    size = size or natural
    scale = np.diag([size[0] / natural[0], size[1] / natural[1]])
    frames, truth = [], []
    for i in range(num_frames):
        m = scale @ camera_matrix(i / max(num_frames - 1, 1), w, h)
        shot = cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        if interlaced:
            later = scale @ camera_matrix((i + 0.5) / max(num_frames - 1, 1), w, h)
            shot[1::2] = cv2.warpAffine(image, later, size, flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REFLECT101)[1::2]
        frames.append(cv2.imdecode(cv2.imencode(".jpg", shot, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1],
                                   cv2.IMREAD_COLOR))
        persons = []
        for tid, p in enumerate(gt.frames[0].persons):
            kps = p.keypoints.copy()
            placed = kps[:, 2] > 0
            kps[placed, :2] = kps[placed, :2] @ m[:, :2].T + m[:, 2]
            outside = placed & ((kps[:, 0] < 0) | (kps[:, 1] < 0) | (kps[:, 0] >= size[0]) | (kps[:, 1] >= size[1]))
            kps[outside] = 0.0
            persons.append(replace(p, keypoints=kps, track_id=tid, box=_map_box(p.box, m),
                                   head_box=_map_box(p.head_box, m)))
        truth.append(Frame(i, persons, is_labeled=True))
    return Video(gt.name, num_frames, truth, width=size[0], height=size[1]), ClipReader(frames)


def _score(gts: dict[str, Video], outs: dict[str, Video]) -> tuple[float, int]:
    """Limb joints within 0.1 x box diagonal (%) and the joints scored, over all clips' frames."""
    total = RealScore()
    for name, gt in gts.items():
        pred = {f.index: f for f in outs[name].frames}
        for frame in gt.frames:
            total.add(score_frame(frame, pred.get(frame.index)))
    return total.within, total.joints


def run_clip_bench(predictor: Any, stills: list[tuple[Video, np.ndarray]], every: int) -> list[ClipRow]:
    """The variants (`CLIP_VARIANTS`) on the clips of `stills` with labels every `every` frames (propagation
    and the temporal median off and on through `predictor.config`, restored after)."""
    from model.bench.propagation import propagation_only

    clips = {gt.name: camera_clip(gt, image) for gt, image in stills}
    unlabelled = [i for i in range(CLIP_FRAMES) if i % every]
    gts = {k: replace(v, frames=[f for f in v.frames if f.index % every]) for k, (v, _) in clips.items()}
    rows, config = [], predictor.config
    try:
        for variant in CLIP_VARIANTS:
            outs = {}
            for name, (gt, reader) in clips.items():
                known = sparsify(gt, every)
                if variant == "propagation only":
                    outs[name] = propagation_only(gt, known, reader, unlabelled)
                    continue
                predictor.config = replace(config, propagate=variant.startswith("propagation"),
                                           temporal_median=variant != "backbone only")
                template = replace(gt, frames=[Frame(f.index, [], False) for f in gt.frames])
                outs[name] = predictor.predict_video(template, known, frames=unlabelled, reader=reader)
            within, joints = _score(gts, outs)
            ev = evaluate(list(gts.values()), [outs[k] for k in gts])
            rows.append(ClipRow(predictor.version, every, variant, within, joints, ev.total, ev.within_total))
            logger.info("clips, labels every %d, %s: %.1f%% within, mAP %.1f", every, variant, within, ev.total)
    finally:
        predictor.config = config
    return rows


def format_clips(rows: list[ClipRow]) -> str:
    """The figures as a Markdown table."""
    lines = [f"Real stills filmed by a moving camera ({CLIP_FRAMES}-frame clips; unlabelled frames):", "",
             "| backbone | labels every | variant | limb joints within 0.1 diag | mAP | predicted joints within PCKh@0.5 |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.backbone} | {r.label_every} | {r.variant} | {r.within:.1f}% ({r.joints} joints) | {r.map:.1f} "
              f"| {r.within_pckh:.1f}% |"
              for r in rows]
    return "\n".join(lines)


def run_follow_bench(predictor: Any, stills: list[tuple[Video, np.ndarray]],
                     num_frames: int = CLIP_FRAMES) -> FollowRow:
    """The clips of `stills` predicted with no labels (people found by the detector and followed): how
    many annotated person-frames are found, and their limb joints placed, as `model.bench.real_score.score_frame`
    matches them."""
    total, tracks = RealScore(), 0
    for gt, image in stills:
        clip, reader = camera_clip(gt, image, num_frames)
        template = replace(clip, frames=[Frame(f.index, [], False) for f in clip.frames])
        out = {f.index: f for f in predictor.predict_video(template, None, reader=reader).frames}
        for frame in clip.frames:
            total.add(score_frame(frame, out.get(frame.index)))
        tracks += len({p.track_id for f in out.values() for p in f.persons})
    logger.info("clips, no labels: %d/%d person-frames found", total.found_half, total.people)
    return FollowRow(predictor.version, total.found_half, total.found, total.people, total.predictions, tracks,
                     total.joints_ok, total.joints)


def format_follow(rows: list[FollowRow]) -> str:
    """The no-label figures as a Markdown table."""
    lines = [f"No labels ({CLIP_FRAMES}-frame clips, every frame; people found by the detector and followed):", "",
             "| backbone | person-frames found (>= half / >= 1 limb joint) | limb joints within 0.1 x box diagonal "
             "| predicted person-frames | track ids |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.backbone} | {r.found}/{r.person_frames} / {r.found_any}/{r.person_frames} "
              f"| {100.0 * r.joints_ok / max(r.joints, 1):.1f}% ({r.joints_ok}/{r.joints}) | {r.predictions} "
              f"| {r.tracks} |" for r in rows]
    return "\n".join(lines)
