"""Predictor: a video and the human labels known so far in, keypoints for every person-frame out.

Pipeline of one `Predictor.predict_video` call (the released DCPose inference, §5.2-§6 of its paper):

Cuts to another shot among the frames the request reaches are found first (`InferConfig.shot_cuts`,
`model.pipeline.shots`); each shot holding requested frames then goes through the steps below on its own,
as a video of its own frames, and people new to a shot get ids that no other shot or label uses.

0. Frames are read through `model.interlace.DeinterlacedFrames` (`InferConfig.deinterlace`),
   `model.denoise.DenoisedFrames` (`InferConfig.denoise`) and `model.deblur.DeblurredFrames`
   (`InferConfig.deblur`): an interlaced frame's fields are aligned where a pan moved them and its combed
   blocks get one field's rows, a grainy frame is filtered, and a frame smeared by a steady motion is
   deconvolved where it shows the smear, before the detector, the backbone or the optical flow sees it; a
   progressive, clean, sharp one is used as it is.
1. Boxes and track ids come from `model.pipeline.tracking.plan_boxes` (human > interpolated > carried >
   detected). Carried boxes are moved frame by frame outward from their label: frame f is cropped
   with the box of frame f-1 (f+1 going backwards), the backbone heatmaps of that crop are decoded,
   and `update_with_keypoints` moves the box with the joint motion for the next frame. The carry uses
   backbone keypoints (the head's output for f needs f+1's pass, whose crop needs f's box). Detected
   people are followed the same way between full detections (`model.pipeline.follow`).
2. Neighbours as released: p = max(t - d, 0), n = min(t + d, N - 1) with d = `InferConfig.distance`;
   at the ends the current frame stands in with margin 1, otherwise the margins are the real deltas
   (the head weighs the previous frame right / (left + right)).
3. ``exact`` mode crops p, t and n with t's box (the released design: up to 3 backbone passes per
   person-frame). ``cached`` mode runs each (frame, track) crop once, keeps it in an LRU, and
   resamples it into the current crop's heatmap geometry (`heatmap_to_heatmap_affine` +
   `warp_heatmaps`) when it serves as a neighbour; a neighbour frame where the track has no box is
   cropped with t's box instead. Passes are keyed by (frame, crop geometry), so identical crops are
   never run twice in either mode.
4. Label-aware (`InferConfig.label_aware`): a neighbour holding a human pose of the same track gets
   Gaussians (peak 1) at the human joints, in t's heatmap geometry, instead of backbone heatmaps. A
   complete pose (its frame is marked labelled, or all 15 PoseTrack joints are placed) replaces the
   whole heatmap (absent joints are zeros, no backbone pass); a partial pose replaces only its
   joints' channels. Sigma: the backbone's own rendering sigma where it has one (BlazePose: 2),
   else 3, the sigma of the training targets that HRNet learns to reproduce. A current frame with a
   complete human pose is returned as is (its placed joints with v = 2 and score 1, as predictions
   are written; extra["source"] = "human"); on a partial one the placed joints overwrite the
   prediction (extra["source"] = "model+human"). With label_aware off, labels only provide boxes.
5. One person per box (`InferConfig.one_per_box`): where the backbone passes of two boxes of a frame
   (labelled, interpolated, carried or detected) hold one person's pose, the pair's crops are run again with
   that pose painted out and the sharing whose poses fit their boxes best is kept; a box holding the pose
   of a person labelled by hand there is run again with that person painted out
   (`model.pipeline.one_per_box`, `VideoJob._one_person_per_box`).
6. The head refines (hc, hp, hn, margin); without a head (cold start) the current backbone heatmaps
   are decoded directly and no neighbour is computed. Decoding is `decode_to_frame`; keypoint score
   = peak value clipped to [0, 1], v = 2 where the peak is > 0 (else 0 and x = y = 0); person score =
   box score x mean of the best 10 of the 15 PoseTrack joint scores.
7. Short detected tracks that are false people are dropped (`model.pipeline.track_filters.drop_flicker`), and
   each joint the model alone placed on a tracked person is put at the median of its positions on the frames
   before and after and its own (`InferConfig.temporal_median`, `model.pipeline.smoothing`).

This module is the facade (Predictor, load_head: creation, checks, frame access, progress); the
options are `model.pipeline.config.InferConfig`; the per-call work above lives in
`model.pipeline.video_job.VideoJob`, which is given the stages (backbone, head, detector), not the
Predictor.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from annotation_io.skeletons import NUM_KEYPOINTS
from annotation_io.types import Box, Frame, Person, Video
from annotation_io.video import FrameReader
from model.backbones.base import Backbone, file_digest
from model.backbones.blazepose_heatmaps import BlazePoseHeatmaps
from model.backbones.factory import build_backbone
from model.backbones.movenet import MoveNetBackbone
from model.backbones.yolo_pose import YoloPoseBackbone
from model.bars import picture_area
from model.deblur import DeblurredFrames
from model.denoise import DenoisedFrames
from model.interlace import DeinterlacedFrames
from model.nets.dcpose import DCPose
from model.nets.runtime import autocast, check_precision, place_module
from model.pipeline.config import InferConfig, Progress
from model.pipeline.read_ahead import ReadAheadReader
from model.pipeline.shots import ShotFrames, find_cuts, shots
from model.pipeline.smoothing import temporal_median
from model.pipeline.track_filters import drop_flicker
from model.pipeline.tracking import default_max_gap
from model.pipeline.video_job import JobStages, VideoJob, assemble_output

logger = logging.getLogger(__name__)

__all__ = ["Predictor", "load_head"]

PersonDetector = Callable[[np.ndarray], list[Box]]
MAX_PEOPLE = 20  # people per frame from the detector and the centre heatmap together


class Predictor:
    """Pre-annotates videos: boxes, tracks, backbone heatmaps, optional DCPose head, decoding.

    Args:
        backbone: the rough pose estimator.
        head: a trained DCPose head (only `refine` is used), or None for backbone-only output.
        device: where the head runs (the backbone has its own device).
        config: inference options.
        head_version: names the head's weights in `version`.
        detector: full-frame person detector (BGR frame -> boxes); None: the yolo11_pose backbone's
            own detections where it is the backbone, else `detect_people` (BlazePose's person detector
            over tiles, confirmed by the landmark model; OpenCV HOG if mediapipe cannot be used),
            created on first use.
    """

    def __init__(self, backbone: Backbone, head: DCPose | None, *, device: str | torch.device = "cpu",
                 config: InferConfig = InferConfig(), head_version: str | None = None,
                 detector: PersonDetector | None = None) -> None:
        self.backbone = backbone
        self.device = torch.device(device)
        self.config = config
        self.head = None if head is None else place_module(head, self.device)  # channels_last on CUDA
        check_precision(config.precision, self.device)
        # Denormals are not flushed here: `torch.set_flush_denormal` is process-wide (it changes every
        # float computation of the host, e.g. a web server's) and measured no faster for the head.
        self.head_version = None if head is None else (head_version or "custom")
        self._detector = detector
        self._owned_pose: Any = None  # a BlazePose graph for detection when the backbone is not BlazePose
        self._person_detector: Any = None  # BlazePose's person detector graph, made on first use
        self._centernet: Any = False  # CenterNet's person detector (None: its weights are not there), made on first use
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        """Model version (short: Label Studio's prediction tab truncates long ones): "<backbone version>-base" or "<backbone version>+head-<head version>"."""
        if self.head is None:
            return f"{self.backbone.version}-base"
        return f"{self.backbone.version}+head-{self.head_version}"

    @classmethod
    def create(cls, backbone: str | Backbone = "blazepose", checkpoint: str | os.PathLike[str] | None = None,
               head: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu",
               config: InferConfig = InferConfig()) -> Predictor:
        """A predictor for a model version: a backbone (with weights) and an optional trained head.

        Args:
            backbone: "blazepose", "hrnet_w48", ... or a Backbone instance.
            checkpoint: HRNet weights (bare HRNet, official DCPose or ours); for an HRNet backbone it
                defaults to `head` when that is an official DCPose checkpoint holding the backbone.
            head: a head checkpoint (ours, whose model_config["backbone"] must name this backbone, or
                the official DCPose one); None: backbone-only (cold start). A head is never built
                with untrained weights.
            device: where HRNet and the head run.
            config: inference options.
        """
        if isinstance(backbone, str):
            if checkpoint is None and head is not None and backbone.startswith("hrnet"):
                from model.checkpoint import read_checkpoint_info

                if read_checkpoint_info(head).content == "dcpose":
                    checkpoint = head
            bb: Backbone = build_backbone(backbone, checkpoint, device, batch_size=config.batch_size,
                                          precision=config.precision)  # type: ignore[arg-type]
        else:
            if checkpoint is not None:
                raise ValueError("checkpoint= applies to a backbone given by name, not to a Backbone instance")
            bb = backbone
        if head is None:
            return cls(bb, None, device=device, config=config)
        net, version = load_head(head, bb.name)
        return cls(bb, net, device=device, config=config, head_version=version)

    def detect(self, frame_bgr: np.ndarray) -> list[Box]:
        """Person boxes on a whole frame: the yolo11_pose backbone's own detections where it is the
        backbone, else BlazePose's person detector over tiles (HOG without mediapipe), followed, with the
        movenet backbone, by the people MoveNet's centre heatmap adds (`InferConfig.centre_people`,
        `model.backbones.movenet_people`), and those CenterNet's boxes split out of a box or add where its
        weights were fetched (`InferConfig.box_people`, `movenet_people.boxed_people`); at most `MAX_PEOPLE`
        in all. Where the frame has bars, black or soft (`InferConfig.trim_bars`, `model.bars`), all of that looks
        at the picture inside them."""
        area = picture_area(frame_bgr) if self.config.trim_bars else None
        if area is None:
            return self._detect(frame_bgr)
        x0, y0, x1, y1 = area
        boxes = self._detect(np.ascontiguousarray(frame_bgr[y0:y1, x0:x1]))
        return [Box(b.x + x0, b.y + y0, b.w, b.h) for b in boxes]

    def _detect(self, frame_bgr: np.ndarray) -> list[Box]:
        """`detect` on a frame or its picture."""
        if self._detector is not None:
            return self._detector(frame_bgr)
        if isinstance(self.backbone, YoloPoseBackbone):
            return self.backbone.detect_people(frame_bgr)
        from model.backbones.detectors import detect_people, hog_people
        from model.backbones.tflite import MediaPipeUnavailableError

        try:
            pose, finder = self._detection_models()
        except MediaPipeUnavailableError as exc:
            logger.warning("person detection falls back to OpenCV HOG: %s", exc)
            self._detector = hog_people
            return hog_people(frame_bgr)
        boxes = detect_people(frame_bgr, max_people=MAX_PEOPLE, backbone=pose, detector=finder)
        if self.config.centre_people and isinstance(self.backbone, MoveNetBackbone):
            from model.backbones.movenet_people import find_more_people

            more = find_more_people(self.backbone.model, frame_bgr, boxes, max_people=MAX_PEOPLE - len(boxes))
            boxes += [box for box, _ in more]
        if self.config.box_people and isinstance(self.backbone, MoveNetBackbone):
            centernet = self._centernet_model()
            if centernet is not None:
                from model.backbones.movenet_people import boxed_people

                boxes = boxed_people(self.backbone.model, frame_bgr, centernet.detect(frame_bgr), boxes,
                                     max_people=MAX_PEOPLE)
        return boxes

    def _centernet_model(self) -> Any:
        """CenterNet's person detector where its weights are beside MoveNet's or in ``weights/`` (else None),
        loaded on first use."""
        with self._lock:
            if self._centernet is False:
                from model.backbones.centernet import load_centernet

                beside = self.backbone.model.path.parent / "centernet.json"  # a MoveNet graph given elsewhere
                self._centernet = load_centernet(self.device, beside if beside.is_file() else None)
            return self._centernet

    def _detection_models(self) -> tuple[Any, Any]:
        """(BlazePose backbone, PersonDetector), made on first use (the backbone's own where it is BlazePose)."""
        from model.backbones.blazepose import BlazePoseBackbone
        from model.backbones.detectors import PersonDetector

        pose = self.backbone.pose if isinstance(self.backbone, BlazePoseHeatmaps) else None
        with self._lock:
            if pose is None:
                if self._owned_pose is None:
                    self._owned_pose = BlazePoseBackbone()
                pose = self._owned_pose
            if self._person_detector is None:
                self._person_detector = PersonDetector()
            return pose, self._person_detector

    def close(self) -> None:
        """Frees mediapipe graphs held by the predictor."""
        if self._owned_pose is not None:
            self._owned_pose.close()
            self._owned_pose = None
        if self._person_detector is not None:
            self._person_detector.close()
            self._person_detector = None
        if isinstance(self.backbone, BlazePoseHeatmaps):
            self.backbone.close()

    def _stages(self) -> JobStages:
        """What one call's job is given: the backbone, the head (if any), the detector, the options."""
        return JobStages(backbone=self.backbone, config=self.config, detect=self.detect,
                         refine=self.refine if self.head is not None else None)

    def refine(self, hc: torch.Tensor, hp: torch.Tensor, hn: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
        """The head on (B, K, H, W) CPU heatmaps, in batches on the device; returns CPU float32."""
        assert self.head is not None
        outs = []
        bs = self.config.batch_size
        with torch.inference_mode(), autocast(self.device, self.config.precision):  # type: ignore[arg-type]
            for s in range(0, len(hc), bs):
                args = [x[s : s + bs].to(self.device) for x in (hc, hp, hn, margin)]
                outs.append(self.head.refine(*args).to("cpu", torch.float32))
        return torch.cat(outs)

    def predict_video(self, video: Video, known: Video | None = None, *, frames: Iterable[int] | None = None,
                      reader: FrameReader | None = None, progress: Progress = False,
                      first_track_id: int = 0) -> Video:
        """Predicted persons for the requested frames of `video`.

        Args:
            video: the video (num_frames, size, source); its frames' file names and ids are kept.
            known: human labels so far (boxes and/or keypoints with track ids); None: none.
            frames: frame indices to predict; None: all.
            reader: frame access; default `annotation_io.video.open_video(video.source)`.
            progress: True for a tqdm bar, or a callable(done, total) called as frames finish.
            first_track_id: the least id a person new to this call gets (above every id in `known` in
                any case): the ids earlier calls gave in the same video, not all of which are in `known`.

        Returns:
            A Video with one Frame per requested index (sorted) holding the predicted persons.

        Raises:
            ValueError: a frame index outside the video, or no way to read the frames.
        """
        num_frames = video.num_frames
        requested = sorted(set(range(num_frames) if frames is None else (_index(f, video) for f in frames)))
        own_reader = reader is None
        if reader is None:
            if not video.source:
                raise ValueError(f"video {video.name!r} has no source; pass reader= to read its frames")
            from annotation_io.video import open_video

            reader = open_video(video.source)
        try:
            if reader.num_frames < num_frames:
                logger.warning("video %s: %d frames announced, %d readable", video.name, num_frames,
                               reader.num_frames)
                num_frames = reader.num_frames
                if requested and requested[-1] >= num_frames:
                    raise ValueError(f"frame {requested[-1]} cannot be read: the frames of video "
                                     f"{video.name!r} hold only {num_frames} images")
            return self._predict(video, known, requested, reader, num_frames, progress, first_track_id)
        finally:
            if own_reader and hasattr(reader, "close"):
                reader.close()

    def predict_frame(self, video: Video, index: int, known: Video | None = None,
                      reader: FrameReader | None = None) -> Frame:
        """Predicted persons of one frame; computes only what that frame needs.

        That is its crops and its neighbours' (and, for a carried box, the chain of frames back to
        the label it is carried from), so the result equals the same frame of `predict_video`
        wherever the boxes come from labels, before the temporal median (`InferConfig.temporal_median`),
        which needs the predictions of the frames on either side and leaves a one-frame request as it is.
        """
        return self.predict_video(video, known, frames=[index], reader=reader).frames[0]

    def _predict(self, video: Video, known: Video | None, requested: list[int], reader: FrameReader,
                 num_frames: int, progress: Progress, first_track_id: int = 0) -> Video:
        if not (video.width and video.height) and getattr(reader, "width", None):
            video = replace(video, width=int(reader.width), height=int(reader.height))  # type: ignore[attr-defined]
        if not requested:
            return assemble_output(video, requested, {})
        bar, report = _progress(progress, len(requested), video.name)
        try:
            cuts = self._cuts(known, requested, reader, num_frames) if self.config.shot_cuts else []
            if cuts:
                persons = self._predict_shots(video, known, requested, reader, num_frames, cuts, report,
                                              first_track_id)
            else:
                persons = self._predict_shot(video, known, requested, reader, num_frames, report, first_track_id)
        finally:
            if bar is not None:
                bar.close()
        return assemble_output(video, requested, persons)

    def _cuts(self, known: Video | None, requested: list[int], reader: FrameReader, num_frames: int) -> list[int]:
        """The shot cuts among the frames the request reaches (`model.pipeline.shots`): the requested frames,
        the head's neighbours and, on each side, the frames up to the farthest known frame (labels, earlier
        predictions) within a track's reach of them (`default_max_gap`: no label farther away gives them a
        box). Each of those frames is read once more, ahead on the read-ahead's threads."""
        d = self.config.distance if self.head is not None else 0
        lo, hi = max(requested[0] - d, 0), min(requested[-1] + d, num_frames - 1)
        if known is not None:
            labelled = sorted(f.index for f in known.frames if any(not p.is_prediction for p in f.persons))
            reach = default_max_gap(labelled)
            near = [f.index for f in known.frames if (f.persons or f.is_labeled)
                    and lo - reach <= f.index <= hi + reach and 0 <= f.index < num_frames]
            lo, hi = min([lo, *near]), max([hi, *near])
        if hi == lo:
            return []
        with ReadAheadReader(reader, range(lo, hi + 1)) as ahead:  # frame files: several decoded at once
            cuts = find_cuts(ahead.read, range(lo, hi + 1))
        if cuts:
            logger.info("shot cuts before frames %s", ", ".join(map(str, cuts)))
        return cuts

    def _predict_shots(self, video: Video, known: Video | None, requested: list[int], reader: FrameReader,
                       num_frames: int, cuts: list[int], report: Callable[[int, int], None],
                       first_track_id: int) -> dict[int, list[Person]]:
        """Each shot holding requested frames predicted on its own, as a video of its own frames; people
        new to a shot get ids no other shot or label uses."""
        persons: dict[int, list[Person]] = {}
        next_id = max(first_track_id, max(known.track_ids(), default=-1) + 1 if known is not None else 0)
        done = 0
        for shot in shots(cuts, 0, num_frames):
            wanted = [t - shot.start for t in requested if t in shot]
            if not wanted:
                continue
            sub_video = _shot_of(video, shot)
            sub_known = _shot_of(known, shot) if known is not None else None
            out = self._predict_shot(sub_video, sub_known, wanted, ShotFrames(reader, shot), len(shot),
                                     lambda n, _total, base=done: report(base + n, len(requested)), next_id,
                                     frame_offset=shot.start)
            done += len(wanted)
            for t, people in out.items():
                persons[t + shot.start] = people
                next_id = max([next_id, *(p.track_id + 1 for p in people if p.track_id is not None)])
        return persons

    def _predict_shot(self, video: Video, known: Video | None, requested: list[int], reader: FrameReader,
                      num_frames: int, report: Callable[[int, int], None], first_track_id: int, *,
                      frame_offset: int = 0) -> dict[int, list[Person]]:
        """Frame -> persons of the requested frames of one shot (steps 0-7 of the module doc); `frame_offset`:
        where the shot's frame 0 lies in the video."""
        # Ahead of the read-ahead, so its threads filter; the comb first (it reads as grain).
        if self.config.deinterlace:
            reader = DeinterlacedFrames(reader)
        if self.config.denoise:
            reader = DenoisedFrames(reader, self.config.trim_bars)
        if self.config.deblur:  # after the noise filter: deconvolution lifts grain
            reader = DeblurredFrames(reader, self.config.trim_bars)
        job = VideoJob(self._stages(), video, known, reader, num_frames, first_track_id=first_track_id,
                       frame_offset=frame_offset)
        job.plan(requested)
        # Frames the run will read, in order (each person-frame's own and, with a head, neighbours'),
        # decoded ahead on a thread while the networks run.
        d = self.config.distance if self.head is not None else 0
        # Frames still held from planning (carried boxes) are not read again.
        order = [f for t in requested if job.slots.get(t) for f in (t - d, t, t + d) if f not in job.images]
        with ReadAheadReader(reader, order) as ahead:
            job.reader = ahead
            persons = drop_flicker(job.run(requested, report))
            if self.config.temporal_median:
                persons = temporal_median(persons)
        logger.debug("%s: %d of %d frames decoded ahead", video.name, ahead.ahead_hits, len(set(order)))
        count = sum(len(v) for v in persons.values())
        logger.info("%s: %d frames, %d persons, %d backbone passes (%s, %s)", video.name, len(requested),
                    count, job.passes, self.config.mode, self.version)
        return persons


def _shot_of(video: Video, shot: range) -> Video:
    """`video` cut to the frames of `shot`, renumbered from 0."""
    frames = [replace(f, index=f.index - shot.start) for f in video.frames if f.index in shot]
    return replace(video, num_frames=len(shot), frames=frames)


def _index(value: Any, video: Video) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"frame indices must be integers, got {value!r}")
    if not 0 <= int(value) < video.num_frames:
        raise ValueError(f"frame {int(value)} is outside video {video.name!r}, which has {video.num_frames} "
                         f"frames (valid 0..{video.num_frames - 1})")
    return int(value)


def _progress(progress: Progress, total: int, name: str) -> tuple[Any, Callable[[int, int], None]]:
    if callable(progress):
        return None, progress
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"predict {name}", unit="frame")
        return bar, lambda done, _total: bar.update(done - bar.n)
    return None, lambda done, _total: None


def load_head(path: str | os.PathLike[str], backbone_name: str) -> tuple[DCPose, str]:
    """A trained DCPose head from our checkpoint or the official one, checked against the backbone.

    Returns:
        (head in eval mode, head version).

    Raises:
        ValueError: the file holds no head, or a head trained on another backbone's heatmaps.
        model.checkpoint.CheckpointMismatchError: the tensors do not fit.
    """
    from model.checkpoint import load_checkpoint, read_checkpoint_info
    from model.nets.dcpose import DILATIONS, build_dcpose

    path = Path(path)
    info = read_checkpoint_info(path)
    if info.content not in ("dcpose", "head"):
        raise ValueError(f"{path}: holds {info.content} weights, not a DCPose head; pass backbone weights "
                         "as checkpoint= and a trained head as head=")
    num_joints, dilations = info.num_joints or NUM_KEYPOINTS, DILATIONS
    if info.kind == "ours":
        cfg = info.model_config or {}
        trained_on = cfg.get("backbone")
        if trained_on is None:
            raise ValueError(f"{path}: model_config has no 'backbone' field; cannot tell which backbone's "
                             "heatmaps the head was trained on")
        num_joints = int(cfg.get("num_joints", num_joints))
        dilations = tuple(cfg.get("dilations", DILATIONS))
        version = str(info.version)
    else:
        trained_on = f"hrnet_w{info.backbone_width or 48}"
        version = f"dcpose-official:{file_digest(path)}"
    if trained_on != backbone_name:
        raise ValueError(f"{path}: the head was trained on {trained_on} heatmaps but the backbone is "
                         f"{backbone_name}; use a head trained for {backbone_name}")
    head = build_dcpose(backbone=None, num_joints=num_joints, dilations=dilations)
    load_checkpoint(path, head)
    logger.info("head %s loaded from %s", version, path)
    return head.eval(), version
