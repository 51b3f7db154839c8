"""Video pipeline benchmark on synthetic videos: cost of backbone-only / cached / exact, and accuracy.

``python -m model bench-video [--json] [--quick] [--sections cost,accuracy,training]``

Everything runs on videos from `annotation_io.synth`, generated into a temporary folder: training
videos, separate test videos and a short cost clip.

- **cost**: wall time per person-frame of `model.pipeline.predictor.Predictor` with HRNet-W48 (random
  weights: cost only) and with BlazePose, backbone-only vs head in ``cached`` vs ``exact`` mode,
  measured in one run on the cost clip (boxes from its ground truth, label-aware off, no
  detector), as ratios to backbone-only (each variant timed `repeats` times, interleaved, the
  fastest counting: single runs on a shared machine are noisy). The floor is one backbone pass plus one head pass per
  person-frame, both timed on their own (the head on random heatmaps); the issue's goal is
  ``cached`` within 10% of it (by FLOPs about 1.33x backbone-only for HRNet-W48, against about
  3.33x for the released 3-crop ``exact`` design).
- **accuracy**: with `model.testing.simulated.SimulatedBackbone` (ground truth corrupted like a real
  backbone: per-joint bias, jitter, blur and occlusion misses, left/right swaps), poseval mAP and
  the share of keypoints within PCKh@0.5 (`annotation_io.evaluate`) on the *unlabelled* frames of
  the test videos, with labels every 4 and every 8 frames: backbone-only, the DCPose head (trained
  here with `model.training.loop.train_head` on the training videos, a few epochs on the CPU), and the head
  label-aware; then ``cached`` vs ``exact`` outputs of the label-aware head (mean pixel distance of
  matching joints, mAP of each).
- **training**: epoch time of `train_head` with cached heatmaps vs the backbone in the loop (same
  samples, batch size and augmentation), with BlazePose and HRNet-W48, plus the one-off cache fill.

The defaults fit a few minutes on 2 CPU cores; ``--quick`` is a smoke run of well under a minute
per section. Numbers on a shared machine vary with its load; ratios measured in one run are the
figures to compare.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from annotation_io import posetrack
from annotation_io.evaluate import evaluate
from annotation_io.synth import generate, sparsify, visible_only
from annotation_io.types import Frame, Video
from annotation_io.video import open_video
from model.cli.checks import check_device

logger = logging.getLogger(__name__)

__all__ = ["BenchSettings", "VideoBenchResult", "format_result", "handle", "register_parser", "run_video_bench"]

SECTIONS = ("cost", "accuracy", "training", "propagation")
LABEL_SPACINGS = (4, 8)
FLOP_RATIO_CACHED = 1.33  # (32.9 + 11.0) / 32.9 GMACs, the released DCPose code
FLOP_RATIO_EXACT = 3.33  # (3 * 32.9 + 11.0) / 32.9


@dataclass(frozen=True)
class BenchSettings:
    """Sizes of one benchmark run (the defaults fit a few minutes on 2 CPU cores).

    Attributes:
        seed: seed of the synthetic videos, the simulation and training.
        size: frame size (W, H) of the synthetic videos.
        people: walkers per video.
        cost_frames: frames of the cost clip.
        train_videos: videos to train the head on.
        train_frames: frames per training video.
        train_samples: training samples used (a deterministic subset of all person-frames).
        epochs: training epochs.
        batch_size: training batch size.
        lr: Adam learning rate.
        amp: bfloat16 autocast when training the head and when it predicts in the accuracy runs
            (about 2x faster on CPUs with AVX512-BF16; ignored where bfloat16 is not native, where
            it is several times slower; the cost section always runs float32).
        test_videos: videos to evaluate on.
        test_frames: frames per test video.
        timing_samples: samples of the training-time section.
        backbone_batch: crops per HRNet forward pass.
        repeats: timed runs per cost variant (interleaved; the fastest counts).
        visible_only: in the propagation section, labels and truth leave out the joints covered by the
            other walker, as PoseTrack annotators do (`annotation_io.synth.visible_only`); the
            backbones still see every joint.
        device: where HRNet-W48 and the head run in the cost section ("cpu", "cuda"); BlazePose
            always runs on the CPU (mediapipe).
    """

    seed: int = 0
    size: tuple[int, int] = (320, 240)
    people: int = 2
    cost_frames: int = 3
    train_videos: int = 3
    train_frames: int = 24
    train_samples: int = 80
    epochs: int = 2
    batch_size: int = 4
    lr: float = 1e-4
    amp: bool = True
    test_videos: int = 1
    test_frames: int = 16
    timing_samples: int = 4
    backbone_batch: int = 4
    repeats: int = 3
    device: str = "cpu"
    visible_only: bool = False

    @classmethod
    def quick(cls) -> BenchSettings:
        return cls(cost_frames=2, train_videos=1, train_frames=8, train_samples=8, epochs=1, test_frames=9,
                   timing_samples=2, people=1, batch_size=2)


@dataclass
class CostRow:
    """Predictor cost of one (backbone, variant) on the cost clip."""

    backbone: str
    variant: str  # "backbone-only", "cached", "exact"
    person_frames: int
    backbone_passes: int
    seconds: float
    ms_per_person_frame: float
    ratio: float  # to backbone-only of the same backbone


@dataclass
class CostFloor:
    """One backbone pass + one head pass per person-frame, timed separately."""

    backbone: str
    backbone_ms: float
    head_ms: float
    floor_ms: float
    cached_over_floor: float
    floor_ratio: float  # floor / backbone-only


@dataclass
class AccuracyRow:
    """Evaluation of one variant on the unlabelled frames of the test videos."""

    label_every: int
    variant: str  # "backbone-only", "head", "head+labels", "head+labels exact"
    mode: str
    map: float
    within: float
    frames: int
    person_frames: int


@dataclass
class ModeDiff:
    """cached vs exact outputs of the same predictor configuration."""

    label_every: int
    variant: str
    mean_px: float
    max_px: float
    joints: int
    map_cached: float
    map_exact: float


@dataclass
class TrainTiming:
    """Epoch time of train_head with cached heatmaps vs the backbone in the loop."""

    backbone: str
    samples: int
    cache_fill_s: float
    cached_epoch_s: float
    loop_epoch_s: float
    loop_over_cached: float


@dataclass
class VideoBenchResult:
    """Everything one run measured."""

    settings: dict[str, Any]
    machine: dict[str, Any]
    cost: list[CostRow] = field(default_factory=list)
    floors: list[CostFloor] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)
    accuracy: list[AccuracyRow] = field(default_factory=list)
    modes: list[ModeDiff] = field(default_factory=list)
    train_timing: list[TrainTiming] = field(default_factory=list)
    propagation: list[Any] = field(default_factory=list)  # model.bench.propagation.PropagationRow
    propagation_cost: list[Any] = field(default_factory=list)  # model.bench.propagation.PropagationCost
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        def clean(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [clean(v) for v in value]
            return None if isinstance(value, float) and math.isnan(value) else value

        return clean(asdict(self))


# ------------------------------------------------------------------------------------------ helpers


@dataclass
class _Data:
    """The synthetic videos of one run: GT per video (names prefixed by their group) and frame folders."""

    gt: dict[str, Video]
    folders: dict[str, Path]
    train: list[str]
    test: list[str]
    cost: str

    def reader(self, name: str) -> Any:
        return open_video(self.folders[name])


def _generate(root: Path, s: BenchSettings, need_cost: bool) -> _Data:
    """Train, test and cost videos in separate synth folders (video names would clash otherwise)."""
    groups = {"train": (s.train_videos, s.train_frames, 1), "test": (s.test_videos, s.test_frames, 2)}
    if need_cost:
        groups["cost"] = (1, s.cost_frames, 3)
    gt: dict[str, Video] = {}
    folders: dict[str, Path] = {}
    names: dict[str, list[str]] = {}
    for group, (count, frames, salt) in groups.items():
        generate(root / group, videos=count, frames=frames, people=s.people, seed=s.seed * 10 + salt, size=s.size)
        names[group] = []
        for path in sorted((root / group / "annotations").glob("*.json")):
            video = posetrack.load(path)
            key = f"{group}-{video.name}"
            gt[key] = replace(video, name=key)
            folders[key] = root / group / "images" / video.name
            names[group].append(key)
    return _Data(gt, folders, names["train"], names["test"], names.get("cost", [""])[0])


def _person_frames(video: Video) -> int:
    return sum(len(f.persons) for f in video.frames)


@contextmanager
def _timer() -> Iterator[list[float]]:
    out: list[float] = []
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - t0)


def _random_head() -> Any:
    from model.nets.dcpose import build_dcpose

    torch.manual_seed(0)
    return build_dcpose(backbone=None).eval()


# --------------------------------------------------------------------------------------------- cost


def _predict(backbone: Any, head: Any, video: Video, known: Video | None, reader: Any,
             frames: Sequence[int] | None = None, **cfg: Any) -> tuple[Video, int]:
    """Predictor output (no detector: boxes come from `known`) and the backbone crops it ran."""
    from model.pipeline.config import InferConfig
    from model.pipeline.predictor import Predictor

    device = cfg.pop("device", "cpu")
    predictor = Predictor(backbone, head, device=device, config=InferConfig(**cfg), detector=lambda frame: [])
    passes = _count_passes(predictor)
    out = predictor.predict_video(video, known, frames=frames, reader=reader)
    return out, passes()


def _bf16(s: BenchSettings) -> bool:
    """Whether the accuracy runs predict under bfloat16: asked for, and native on this CPU (emulated
    bfloat16 is several times slower than float32, `model.nets.runtime.native_bf16`)."""
    from model.nets.runtime import native_bf16

    return s.amp and native_bf16("cpu")


class _Bf16Head(torch.nn.Module):
    """A trained head whose `refine` runs under bfloat16 autocast (accuracy runs only, for speed)."""

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.inner = head

    def refine(self, *args: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.inner.refine(*args).float()


def _count_passes(predictor: Any) -> Callable[[], int]:
    """Crops the predictor's backbone saw (wraps `heatmaps`, also through `for_video` bindings)."""
    count = [0]
    inner = predictor.backbone

    class _Counting:
        name, version = inner.name, inner.version
        sigma = getattr(inner, "sigma", None)

        def heatmaps(self, crops: np.ndarray, geoms: Sequence[Any], frames: Sequence[int]) -> torch.Tensor:
            count[0] += len(crops)
            return inner.heatmaps(crops, geoms, frames)

    predictor.backbone = _Counting()
    return lambda: count[0]


def _cost_section(data: _Data, s: BenchSettings, result: VideoBenchResult) -> None:
    from model.backbones.blazepose_heatmaps import BlazePoseHeatmaps
    from model.backbones.factory import build_backbone

    video = data.gt[data.cost]
    template = replace(video, frames=[Frame(f.index, [], False) for f in video.frames])
    head = _random_head()
    backbones: list[tuple[str, Callable[[], Any]]] = [
        ("hrnet_w48", lambda: build_backbone("hrnet_w48", None, s.device, batch_size=s.backbone_batch,
                                             allow_random=True)),
        ("blazepose", BlazePoseHeatmaps),
    ]
    head = head.to(s.device)
    for name, make in backbones:
        reader = data.reader(data.cost)
        try:  # BlazePose loads mediapipe on first use, so the warm-up is where a missing one shows
            backbone = make()
            _warm_up(backbone, head, video, reader)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other backbone
            result.notes.append(f"cost with {name} skipped: {type(exc).__name__}: {exc}")
            reader.close()
            continue
        cuda = torch.device(s.device).type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(s.device)
        base: dict[str, Any] = {"label_aware": False, "detect": False, "batch_size": s.backbone_batch,
                                "device": s.device}
        rows: dict[str, CostRow] = {}
        variants = (("backbone-only", None, "cached"), ("cached", head, "cached"), ("exact", head, "exact"))
        for _ in range(s.repeats):  # interleaved repeats; the fastest of each variant counts
            for variant, net, mode in variants:
                with _timer() as took:
                    out, passes = _predict(backbone, net, template, video, reader, mode=mode, **base)
                pf = _person_frames(out)
                if variant not in rows or took[0] < rows[variant].seconds:
                    rows[variant] = CostRow(name, variant, pf, passes, took[0], 1000 * took[0] / max(pf, 1),
                                            math.nan)
        for row in rows.values():
            row.ratio = row.ms_per_person_frame / rows["backbone-only"].ms_per_person_frame
            result.cost.append(row)
        pf = rows["backbone-only"].person_frames
        head_ms = _time_head(head, pf, s.backbone_batch, s.repeats)
        base_ms = rows["backbone-only"].ms_per_person_frame
        floor = base_ms + head_ms
        result.floors.append(CostFloor(name, base_ms, head_ms, floor, rows["cached"].ms_per_person_frame / floor,
                                       floor / base_ms))
        if cuda:
            result.notes.append(f"{name}: peak GPU memory {torch.cuda.max_memory_allocated(s.device) / 2**20:.0f} MB")
        reader.close()
        if hasattr(backbone, "close"):
            backbone.close()


def _warm_up(backbone: Any, head: Any, video: Video, reader: Any) -> None:
    """One crop through the backbone and one sample through the head (graph creation, allocation)."""
    from model.transforms import crop_geometry, crop_image

    person = next(p for f in video.frames for p in f.persons if p.box is not None)
    frame = next(f.index for f in video.frames if person in f.persons)
    geom = crop_geometry(person.box)
    backbone.heatmaps(crop_image(reader.read(frame), geom)[None], [geom], [frame])
    dev = next(head.parameters()).device
    x = torch.zeros(1, 17, 96, 72, device=dev)
    with torch.inference_mode():
        head.refine(x, x, x, torch.ones(1, 2, device=dev))


def _time_head(head: Any, n: int, batch: int, repeats: int) -> float:
    """ms per sample of head.refine on random (n, 17, 96, 72) heatmaps, batched like the predictor."""
    dev = next(head.parameters()).device
    x = torch.rand(max(n, 1), 17, 96, 72).to(dev)
    margin = torch.ones(len(x), 2, device=dev)
    best = math.inf
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(0, len(x), batch):
                head.refine(x[i : i + batch], x[i : i + batch], x[i : i + batch], margin[i : i + batch])
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            best = min(best, time.perf_counter() - t0)
    return 1000 * best / len(x)


# ----------------------------------------------------------------------------------------- accuracy


def _train_for_accuracy(data: _Data, s: BenchSettings, result: VideoBenchResult, sim: Any) -> Any:
    from model.nets.dcpose import build_dcpose
    from model.training.loop import TrainConfig, train_head
    from model.training.samples import build_samples

    train_gt = {k: data.gt[k] for k in data.train}
    samples = build_samples(train_gt)
    rng = np.random.default_rng([s.seed, 7])
    chosen = sorted(rng.permutation(len(samples))[: s.train_samples].tolist())
    samples = [samples[i] for i in chosen]
    readers = {k: data.reader(k) for k in data.train}
    torch.manual_seed(s.seed)
    head = build_dcpose(backbone=None)
    config = TrainConfig(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, seed=s.seed, amp=s.amp)
    with _timer() as took:
        res = train_head(head, sim, readers, samples, config=config)
    for r in readers.values():
        r.close()
    result.training = {
        "samples": len(samples), "epochs": len(res.epoch_losses), "steps": res.steps, "batch_size": s.batch_size,
        "lr": s.lr, "amp": s.amp, "epoch_losses": res.epoch_losses, "epoch_seconds": res.epoch_times,
        "cache_seconds": res.cache_seconds, "seconds": took[0],
    }  # fmt: skip
    return head


def _unlabelled_gt(gt: Video, every: int) -> Video:
    """GT restricted to the frames a human did not label (the ones pre-annotation serves)."""
    return replace(gt, frames=[f for f in gt.frames if f.index % every != 0])


def _mode_diff(a: Video, b: Video) -> tuple[float, float, int]:
    """Mean / max pixel distance between joints placed in both predictions (same frame, same track)."""
    dists = []
    bmap = b.frame_map()
    for fa in a.frames:
        fb = bmap.get(fa.index)
        if fb is None:
            continue
        for pa in fa.persons:
            pb = fb.person_by_track(pa.track_id) if pa.track_id is not None else None
            if pb is None:
                continue
            both = pa.present & pb.present
            dists.append(np.linalg.norm(pa.xy[both] - pb.xy[both], axis=-1))
    d = np.concatenate(dists) if dists else np.zeros(0)
    return (float(d.mean()) if len(d) else math.nan, float(d.max()) if len(d) else math.nan, len(d))


def _accuracy_section(data: _Data, s: BenchSettings, result: VideoBenchResult, trained: dict[str, Any]) -> None:
    from model.testing.simulated import SimulatedBackbone

    sim = SimulatedBackbone(data.gt, seed=s.seed)
    head = _train_for_accuracy(data, s, result, sim)
    trained["simulated"] = head
    if _bf16(s):
        head = _Bf16Head(head)
    variants = (("backbone-only", None, "cached", True), ("head", head, "cached", False),
                ("head+labels", head, "cached", True), ("head+labels", head, "exact", True))
    for every in LABEL_SPACINGS:
        preds: dict[tuple[str, str], list[Video]] = {}
        gts = [_unlabelled_gt(data.gt[k], every) for k in data.test]
        for variant, net, mode, aware in variants:
            outs = []
            for key in data.test:
                gt = data.gt[key]
                known = sparsify(gt, every)
                template = replace(gt, frames=[Frame(f.index, [], False) for f in gt.frames])
                reader = data.reader(key)
                out, _ = _predict(sim.for_video(key), net, template, known, reader, mode=mode, label_aware=aware,
                                  detect=False, frames=[f.index for f in gt.frames if f.index % every])
                reader.close()
                outs.append(out)
            preds[(variant, mode)] = outs
            ev = evaluate({g.name: g for g in gts}, {o.name: o for o in outs})
            pf = sum(_person_frames(g) for g in gts)
            result.accuracy.append(AccuracyRow(every, variant, mode, ev.total, ev.within_total, ev.n_frames, pf))
            logger.info("labels every %d, %s (%s): mAP %.1f, within %.1f%%", every, variant, mode, ev.total,
                        ev.within_total)
        cached, exact = preds[("head+labels", "cached")], preds[("head+labels", "exact")]
        diffs = [_mode_diff(_only(c, g), _only(e, g)) for c, e, g in zip(cached, exact, gts)]
        n = sum(d[2] for d in diffs)
        mean = sum(d[0] * d[2] for d in diffs if d[2]) / n if n else math.nan
        acc = {(r.variant, r.mode): r.map for r in result.accuracy if r.label_every == every}
        result.modes.append(ModeDiff(every, "head+labels", mean, max((d[1] for d in diffs if d[2]), default=math.nan),
                                     n, acc[("head+labels", "cached")], acc[("head+labels", "exact")]))


def _only(pred: Video, gt: Video) -> Video:
    keep = {f.index for f in gt.frames}
    return replace(pred, frames=[f for f in pred.frames if f.index in keep])


# -------------------------------------------------------------------------------------- propagation


def _propagation_section(data: _Data, s: BenchSettings, result: VideoBenchResult, trained: dict[str, Any]) -> None:
    """Label propagation vs backbone vs head, simulated and real BlazePose (`model.bench.propagation`)."""
    from model.backbones.blazepose_heatmaps import BlazePoseHeatmaps
    from model.bench.propagation import score_variants, time_propagation
    from model.testing.simulated import SimulatedBackbone

    test = {k: visible_only(data.gt[k]) if s.visible_only else data.gt[k] for k in data.test}
    sim = SimulatedBackbone(data.gt, seed=s.seed)
    kinds: list[tuple[str, Callable[[str], Any], Any]] = []
    head_sim = trained.get("simulated") or _train_for_accuracy(data, s, result, sim)
    kinds.append(("simulated", sim.for_video, head_sim))
    try:
        blaze = BlazePoseHeatmaps()
        head_bp = _train_for_accuracy(data, s, VideoBenchResult(settings={}, machine={}), blaze)
        kinds.append(("blazepose (real, rendered frames)", lambda key: blaze, head_bp))
    except Exception as exc:  # noqa: BLE001 - report and go on with the simulated backbone
        result.notes.append(f"propagation with BlazePose skipped: {type(exc).__name__}: {exc}")
    for name, backbone_for, head in kinds:
        net = _Bf16Head(head) if _bf16(s) else head

        def predict(key: str, template: Video, known: Video, reader: Any, frames: list[int], head_: Any,
                    _backbone_for: Callable[[str], Any] = backbone_for, **cfg: Any) -> Video:
            return _predict(_backbone_for(key), head_, template, known, reader, frames=frames, detect=False,
                            **cfg)[0]

        for every in LABEL_SPACINGS:
            result.propagation += score_variants(name, test, data.reader, predict, net, every)
        if name.startswith("blazepose"):
            result.propagation_cost.append(time_propagation(name, test, data.reader, predict, 8, s.repeats))


# ----------------------------------------------------------------------------------------- training


def _training_section(data: _Data, s: BenchSettings, result: VideoBenchResult) -> None:
    from model.backbones.blazepose_heatmaps import BlazePoseHeatmaps
    from model.backbones.factory import build_backbone
    from model.nets.dcpose import build_dcpose
    from model.training.loop import TrainConfig, train_head
    from model.training.samples import build_samples

    samples = build_samples({k: data.gt[k] for k in data.train})[: s.timing_samples]
    makers: list[tuple[str, Callable[[], Any]]] = [
        ("blazepose", BlazePoseHeatmaps),
        ("hrnet_w48", lambda: build_backbone("hrnet_w48", None, "cpu", batch_size=s.backbone_batch, allow_random=True)),
    ]
    for name, make in makers:
        try:
            backbone = make()
        except Exception as exc:  # noqa: BLE001 - report and go on
            result.notes.append(f"training timing with {name} skipped: {type(exc).__name__}: {exc}")
            continue
        readers = {k: data.reader(k) for k in data.train}
        times = {}
        fill = 0.0
        for use_cache in (True, False):
            torch.manual_seed(s.seed)
            config = TrainConfig(epochs=1, batch_size=s.batch_size, lr=s.lr, seed=s.seed, amp=s.amp,
                                 use_cache=use_cache)
            res = train_head(build_dcpose(backbone=None), backbone, readers, samples, config=config)
            times[use_cache] = res.epoch_times[0]
            fill = res.cache_seconds if use_cache else fill
        for r in readers.values():
            r.close()
        if hasattr(backbone, "close"):
            backbone.close()
        result.train_timing.append(TrainTiming(name, len(samples), fill, times[True], times[False],
                                               times[False] / times[True]))


# ---------------------------------------------------------------------------------------------- run


def run_video_bench(settings: BenchSettings = BenchSettings(), *, sections: Sequence[str] = SECTIONS,
                    workdir: str | Path | None = None) -> VideoBenchResult:
    """Generate the videos and measure the chosen sections.

    Args:
        settings: sizes of the run.
        sections: any of "cost", "accuracy", "training".
        workdir: where to generate the videos; default a temporary folder (removed afterwards).
    """
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "python": platform.python_version()}
    result = VideoBenchResult(settings=asdict(settings), machine=machine)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_video_") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        data = _generate(root, settings, need_cost="cost" in sections)
        if "cost" in sections:
            _cost_section(data, settings, result)
        trained: dict[str, Any] = {}
        if "accuracy" in sections:
            _accuracy_section(data, settings, result, trained)
        if "propagation" in sections:
            _propagation_section(data, settings, result, trained)
        if "training" in sections:
            _training_section(data, settings, result)
    result.seconds = time.perf_counter() - t0
    return result


def _f(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def format_result(r: VideoBenchResult) -> str:
    """A readable report of a run."""
    lines = [
        f"bench_video: {r.machine['threads']} torch threads, torch {r.machine['torch']}, {r.seconds:.0f} s in all"
    ]
    if r.settings.get("device", "cpu") != "cpu":
        lines.append(f"HRNet-W48 and the head on {r.settings['device']} (peak GPU memory in the notes)")
    if r.cost:
        lines += ["", "Cost per person-frame (Predictor on the cost clip; ratio to backbone-only of the same backbone)",
                  f"{'backbone':<10} {'variant':<14} {'pf':>3} {'passes':>6} {'pass/pf':>7} {'ms/pf':>9} {'ratio':>6} "
                  f"{'pf/s':>7}"]
        for c in r.cost:
            lines.append(f"{c.backbone:<10} {c.variant:<14} {c.person_frames:>3} {c.backbone_passes:>6} "
                         f"{c.backbone_passes / max(c.person_frames, 1):>7.2f} {c.ms_per_person_frame:>9.0f} "
                         f"{c.ratio:>6.2f} {1e3 / c.ms_per_person_frame:>7.2f}")
        for f in r.floors:
            lines.append(f"{f.backbone}: floor = backbone {f.backbone_ms:.0f} + head {f.head_ms:.0f} = "
                         f"{f.floor_ms:.0f} ms/pf ({f.floor_ratio:.2f}x backbone-only); cached / floor = "
                         f"{f.cached_over_floor:.2f} (goal <= 1.10); head alone {1e3 / f.head_ms:.1f} pf/s")
        lines.append(f"FLOP model for HRNet-W48: cached {FLOP_RATIO_CACHED}x, exact {FLOP_RATIO_EXACT}x backbone-only "
                     "(exact: 3 passes per person-frame inside a clip, fewer at its ends where the current "
                     "frame stands in)")
    if r.training:
        t = r.training
        losses = ", ".join(f"{x:.5f}" for x in t["epoch_losses"])
        lines += ["", (f"Head training (simulated backbone): {t['samples']} samples, {t['epochs']} epochs, "
                       f"{t['steps']} steps of {t['batch_size']}, lr {t['lr']}, amp {t['amp']}: "
                       f"{t['seconds']:.0f} s; epoch losses {losses}")]
    if r.accuracy:
        lines += ["", "Accuracy on unlabelled test frames (simulated backbone; mAP and % of keypoints within PCKh@0.5)",
                  f"{'labels':>6} {'variant':<14} {'mode':<7} {'mAP':>6} {'within':>7} {'frames':>6}"]
        for a in r.accuracy:
            lines.append(f"{'1/' + str(a.label_every):>6} {a.variant:<14} {a.mode:<7} {_f(a.map):>6} "
                         f"{_f(a.within):>7} {a.frames:>6}")
    for m in r.modes:
        lines.append(f"labels 1/{m.label_every}, {m.variant}: cached vs exact mean {_f(m.mean_px, 2)} px "
                     f"(max {_f(m.max_px, 1)}) over {m.joints} joints; mAP {_f(m.map_cached)} vs {_f(m.map_exact)}")
    if r.train_timing:
        lines += ["", "Training epoch time, cached heatmaps vs backbone in the loop"]
        for t in r.train_timing:
            lines.append(f"{t.backbone:<10} {t.samples} samples: cache fill {t.cache_fill_s:.1f} s, epoch cached "
                         f"{t.cached_epoch_s:.1f} s vs loop {t.loop_epoch_s:.1f} s ({t.loop_over_cached:.2f}x)")
    if r.propagation:
        from model.bench.propagation import format_propagation

        lines += format_propagation(r.propagation, r.propagation_cost)
        if r.settings.get("visible_only"):
            lines.append("labels and truth: visible joints only (covered joints left out, PoseTrack-style)")
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)


def register_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    """Adds the `bench-video` command."""
    parser = subparsers.add_parser(name, help="cached/exact cost and accuracy on synthetic videos",
                                   description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)} (default all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the videos, the simulation and training (default 0)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (accuracy section)")
    parser.add_argument("--train-samples", type=int, default=None, help="training samples (accuracy section)")
    parser.add_argument("--test-videos", type=int, default=None,
                        help="test videos (accuracy and propagation sections; default 1)")
    parser.add_argument("--visible-only", action="store_true",
                        help="propagation section: labels and truth leave out covered joints (PoseTrack-style)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated videos here")
    parser.add_argument("--device", default="cpu", help="where HRNet-W48 and the head run in the cost section")
    parser.set_defaults(handle=handle, log_level="WARNING")


def handle(args: argparse.Namespace) -> int:
    """Runs the benchmark and prints its figures; 2 for bad options."""
    settings = BenchSettings.quick() if args.quick else BenchSettings()
    overrides: dict[str, Any] = {"seed": args.seed, "device": args.device, "visible_only": args.visible_only}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.train_samples is not None:
        overrides["train_samples"] = args.train_samples
    if args.test_videos is not None:
        if args.test_videos < 1:
            print(f"error: --test-videos must be at least 1, got {args.test_videos}", file=sys.stderr)
            return 2
        overrides["test_videos"] = args.test_videos
    settings = replace(settings, **overrides)
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    try:
        check_device(args.device)
        result = run_video_bench(settings, sections=sections, workdir=args.workdir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_json(), indent=2) if args.json else format_result(result))
    return 0
