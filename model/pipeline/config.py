"""How a Predictor runs: `InferConfig` (mode, label-aware refinement, neighbour distance, batching)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from model.nets.runtime import PRECISIONS

__all__ = ["MODES", "PROPAGATION_TAG", "InferConfig", "Mode", "Progress", "with_propagation"]

Mode = Literal["cached", "exact"]
MODES: tuple[str, ...] = get_args(Mode)
Progress = bool | Callable[[int, int], None]  # True: a tqdm bar; a callable gets (done, total)


@dataclass(frozen=True)
class InferConfig:
    """How a Predictor runs.

    Attributes:
        mode: "cached" (one backbone pass per person-frame) or "exact" (released 3-crop design).
        label_aware: feed human poses of neighbour frames to the head and keep human poses.
        distance: neighbour frame distance d (t - d, t + d), 1 as released.
        batch_size: crops per backbone call and samples per head call.
        detect: run the person detector on frames no label reaches.
        label_sigma: sigma of the label Gaussians in heatmap pixels; None: the backbone's (see module).
        cache_size: backbone heatmaps kept for reuse (17x96x72 float32 = 470 kB each).
        propagate: carry human keypoints by optical flow to nearby unlabelled frames and fuse them
            with the prediction (`model.pipeline.propagation`).
        precision: "fp32", "bf16" or "fp16" (CUDA only) autocast for HRNet and the head
            (`model.nets.runtime`); decoded keypoints are checked against fp32 by the GPU check.
        redetect_every: on frames no label reaches, the full person detector runs at most this many
            frames apart; between, detected people are followed with their keypoints
            (`model.pipeline.follow`). 1 (the default): detect on every frame, which found more
            people in crowds; 10 is 2.3x faster on one person at the same result.
        follow_min_score: a followed person whose pose confidence (mean of the best 10 joint scores)
            drops below this is dropped and the detector runs on that frame.
        follow_omissions: joints the track's nearest complete labels on both sides leave out (or, past
            its first or last label, the label at most 2 frames away) are left out of the prediction
            too, where the annotator could have seen them (`model.pipeline.omissions`).
        one_per_box: where two boxes of a frame (known or detected) get one person's pose, or a box
            gets the pose of a person labelled by hand there, the crops are run again with that person
            painted out, and a clearly different person found there is taken (`model.pipeline.one_per_box`).
        centre_people: with the movenet backbone, the detector's people are joined by those MoveNet's
            person-centre heatmap finds over tiles of the frame (seated people, small people;
            `model.backbones.movenet_people`).
        box_people: with the movenet backbone and CenterNet's weights fetched (`make movenet`), a found box
            holding two people CenterNet boxes one by one is split, and the people its other boxes hold are
            added, each confirmed by MoveNet (`model.backbones.centernet`, `movenet_people.boxed_people`).
        trim_bars: the person detectors and the noise estimate look at the picture inside a frame's black
            bars (letterbox, pillarbox) or soft ones (a blurred copy of the picture, a flat colour; `model.bars`),
            not at the bars.
        deinterlace: an interlaced frame (both fields woven into one) that combs where the picture moved
            between the fields has its second field aligned onto the first where the whole picture moved (a
            pan), and its blocks still combed given one field's rows, before anything looks at it
            (`model.interlace`); progressive frames, and interlaced ones that did not move, are used as
            they are.
        denoise: frames whose noise estimate is high are filtered (non-local means) before anything looks
            at them (`model.denoise`); clean frames are used as they are.
        deblur: frames smeared by a steady motion (a pan, a shaken camera) are deconvolved where they show
            it, after the noise filter and before anything looks at them (`model.deblur`); frames that show
            no smear are used as they are.
        temporal_median: each joint the model alone placed on a tracked person is put at the median of its
            positions on the frames before and after and its own, taking out one-frame slips
            (`model.pipeline.smoothing`); human and carried joints are kept.
        shot_cuts: the frames a request reaches are searched for cuts to another shot, and each shot is
            predicted on its own: no track, box, label or neighbour frame is carried across a cut
            (`model.pipeline.shots`).
    """

    mode: Mode = "cached"
    label_aware: bool = True
    distance: int = 1
    batch_size: int = 32
    detect: bool = True
    label_sigma: float | None = None
    cache_size: int = 256
    propagate: bool = True
    precision: str = "fp32"
    redetect_every: int = 1  # recall first: following (e.g. 10) is faster but found 352 vs 374 of 401 (3-person walks)
    follow_min_score: float = 0.3
    follow_omissions: bool = True
    one_per_box: bool = True
    centre_people: bool = True
    box_people: bool = True
    trim_bars: bool = True
    deinterlace: bool = True
    denoise: bool = True
    deblur: bool = True
    temporal_median: bool = True
    shot_cuts: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"InferConfig.mode must be 'cached' or 'exact', got {self.mode!r}")
        for name in ("distance", "batch_size", "cache_size", "redetect_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"InferConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"InferConfig.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not 0.0 <= self.follow_min_score <= 1.0:
            raise ValueError(f"InferConfig.follow_min_score must be in [0, 1], got {self.follow_min_score}")
        if self.label_sigma is not None and not self.label_sigma > 0:
            raise ValueError(f"InferConfig.label_sigma must be positive, got {self.label_sigma}")


PROPAGATION_TAG = "+prop"
_COLD_START = "-base"  # Predictor.version without a head


def with_propagation(version: str) -> str:
    """The cold-start model version of predictions that hold propagated joints (kept short for Label Studio).

    "blazepose2-base" -> "blazepose2+prop-base". Other names (versions registered in
    the database, heads) are returned unchanged: Label Studio and the bulk pre-annotation match them
    exactly, and a served head always sees carried labels as its neighbours.
    """
    if version.endswith(_COLD_START) and PROPAGATION_TAG not in version:
        return version[: -len(_COLD_START)] + PROPAGATION_TAG + _COLD_START
    return version
