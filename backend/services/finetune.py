"""Fine-tuning on human corrections: DB labels -> samples -> head training -> version files -> gate.

The "train" job (`run_training`, run by `backend.jobs.runners` in a worker thread or an RQ worker):

1. `gather_project_data` (`backend.services.training_data`, re-exported here): every human-checked frame of the project, i.e. the newest live, not
   cancelled annotation of each (video, frame) task, as persons (visibility = annotation joints,
   the training weights), with the image URLs of every stored task of each video (neighbours t-1,
   t+1 are read through `backend.ls.frames.VideoFrames`; a neighbour no task shows is replaced by the
   current frame, margin 1, as at a video's ends).
2. `model.training.samples.build_samples` and `split_holdout`: a deterministic held-out split by video, or
   by a frame range when the project has one video.
3. `model.training.loop.train_head` on backbone heatmaps cached per (frame, box, backbone version) under
   MODEL_DIR/cache (videos named by `safe_video_name`), starting from the serving head when there
   is one (fine-tuning), else from the released DCPose head when BACKBONE_CHECKPOINT is the
   official checkpoint (it holds one), else from the released initialisation; progress (epoch,
   step, loss) goes into the job row.
4. The version directory MODEL_DIR/versions/<name>/ is written under a temporary name and renamed
   when complete (head.pt via the atomic `save_checkpoint`, config.json, training_data.json,
   metrics.json, curve.png); only then is the version registered, as a candidate.
5. `backend.services.gate`: the candidate and the serving version predict the held-out frames; the candidate
   is promoted (one DB transaction) only when its mAP beats the serving one by PROMOTE_MARGIN,
   otherwise it is kept as "rejected" with its figures and the job ends "rejected".

An exception or a kill anywhere leaves the serving version as it was: nothing is registered before
its files exist, and promotion is a single transaction. Training options come from
MODEL_DIR/train_config.json when present (keys of `FinetuneConfig`), overridden by the job's
``config`` parameter (``POST /train {"project": 1, "config": {"epochs": 5}}``).
Triggers (START_TRAINING, POST /train, new corrections, timer) and the HTTP routes live in
`backend.http.versions`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from annotation_io.jsonio import atomic_open
from backend.db import versions as db_versions
from backend.db.session import session_scope
from backend.db.tables import ModelVersion
from backend.services.training_data import ProjectData, gather_project_data
from backend.services.training_data import safe_video_name as safe_video_name  # re-exported (moved)

if TYPE_CHECKING:
    from backend.jobs.runners import BackendContext, ProgressReporter

logger = logging.getLogger(__name__)

JOB_KIND = "train"
CONFIG_FILE = "train_config.json"
VERSIONS_DIR = "versions"
CACHE_DIR = "cache"
HEAD_FILE = "head.pt"
CURVE_FILE = "curve.png"
METRICS_FILE = "metrics.json"


class FinetuneDataError(ValueError):
    """The project's labels cannot make a training run (too few frames, no persons); says what to do."""


@dataclass(frozen=True)
class FinetuneConfig:
    """Options of one fine-tuning run.

    Attributes:
        epochs: passes over the training samples.
        batch_size: samples per optimiser step.
        lr: Adam learning rate (head parameters only).
        holdout_fraction: share of videos (or of the frame range of a single video) held out for the gate.
        seed: seeds the split, the sample order and the augmentation.
        distance: neighbour frame distance (1 as released).
        augment: flip / scale / rotation augmentation.
        amp: bfloat16 autocast for the head (2-3x faster on CPUs with AVX512-BF16 and recent GPUs).
        device: "cpu", "cuda", "cuda:N"; None: the service's DEVICE.
    """

    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-4
    holdout_fraction: float = 0.2
    seed: int = 0
    distance: int = 1
    augment: bool = True
    amp: bool = False
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "distance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"train config '{name}' must be an integer >= 1, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"train config 'lr' must be a positive number, got {self.lr!r}")
        if not (isinstance(self.holdout_fraction, (int, float)) and 0 < self.holdout_fraction < 1):
            raise ValueError(f"train config 'holdout_fraction' must be in (0, 1), got {self.holdout_fraction!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, base: FinetuneConfig | None = None,
                     source: str = "train config") -> FinetuneConfig:  # fmt: skip
        """`base` (default: defaults) with the keys of `values` replaced.

        Raises:
            ValueError: an unknown key or a bad value (names the key and `source`).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; known: {sorted(known)}")
        try:
            return replace(base or cls(), **dict(values))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from None


def load_config(model_dir: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> FinetuneConfig:
    """Defaults, then MODEL_DIR/train_config.json (if present), then `overrides`.

    Raises:
        ValueError: the file is not a JSON object, or a key or value is bad (names it).
    """
    config = FinetuneConfig()
    path = Path(model_dir) / CONFIG_FILE
    if path.is_file():
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not readable JSON: {exc}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a JSON object of training options")
        config = FinetuneConfig.from_mapping(values, base=config, source=str(path))
    if overrides:
        config = FinetuneConfig.from_mapping(overrides, base=config, source="job config")
    return config


# ----------------------------------------------------------------------------- samples from the project data


def fit_neighbours(samples: list[Any], images: Mapping[str, Mapping[int, str]]) -> list[Any]:
    """Samples whose neighbour frames have no task image get the current frame instead (margin 1)."""
    out = []
    for s in samples:
        known = images.get(s.video, {})
        prev, nxt = s.prev, s.next
        left, right = s.margin
        if prev not in known:
            prev, left = s.frame, 1.0
        if nxt not in known:
            nxt, right = s.frame, 1.0
        out.append(s if (prev, nxt) == (s.prev, s.next) else replace(s, prev=prev, next=nxt, margin=(left, right)))
    return out


# ----------------------------------------------------------------------------- version files


def versions_dir(model_dir: str | os.PathLike[str]) -> Path:
    return Path(model_dir) / VERSIONS_DIR


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON written to a temporary file in the same folder, fsynced, then moved over `path`."""
    with atomic_open(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, allow_nan=False)


def clean_json(value: Any) -> Any:
    """NaN/inf -> None, recursively (JSON and the database refuse them)."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def next_version_name(session: Session, model_dir: Path, project_id: int) -> str:
    """"p<project>-v<n>": n one past the highest of the project's names, skipping names taken on disk."""
    pattern = re.compile(rf"p{project_id}-v(\d+)")
    names = session.scalars(select(ModelVersion.name).where(ModelVersion.name.like(f"p{project_id}-v%")))
    n = 1 + max((int(m.group(1)) for m in map(pattern.fullmatch, names) if m), default=0)
    while (versions_dir(model_dir) / f"p{project_id}-v{n}").exists():  # left by a run killed after writing
        n += 1
    return f"p{project_id}-v{n}"


def version_files(model_dir: str | os.PathLike[str], name: str) -> dict[str, Path]:
    """Paths of a version's files."""
    folder = versions_dir(model_dir) / name
    return {"dir": folder, "head": folder / HEAD_FILE, "config": folder / "config.json",
            "training_data": folder / "training_data.json", "metrics": folder / METRICS_FILE,
            "curve": folder / CURVE_FILE}  # fmt: skip


def remove_stale_temporaries(model_dir: str | os.PathLike[str], active_jobs: set[str]) -> int:
    """Deletes version folders half-written by jobs that are no longer active; returns how many."""
    root = versions_dir(model_dir)
    removed = 0
    for tmp in root.glob(".tmp-*") if root.is_dir() else []:
        if tmp.name.removeprefix(".tmp-") not in active_jobs:
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
    return removed


# ----------------------------------------------------------------------------- the job


def _training_backbone(ctx: BackendContext) -> tuple[Any, Any]:
    """(backbone, its predictor) built for this run: the serving path's backbone, a private instance.

    The predictor factory is the service's (tests inject simulated backbones through it); training
    must not hold the serving predictor's lease for minutes, hence a private instance.
    """
    from backend.services.prediction import base_spec

    predictor = ctx.predictors.factory(base_spec(ctx))
    return predictor.backbone, predictor


class _AliasedBackbone:
    """The training backbone seen under the runs' safe video names (`safe_video_name`).

    Real backbones look only at pixels; one that needs its video (the simulated backbone) is bound
    to the original LS video id of the alias (`model.testing.simulated.bind_video`).
    """

    def __init__(self, backbone: Any, video_ids: Mapping[str, str]) -> None:
        self._backbone = backbone
        self._ids = dict(video_ids)

    def __getattr__(self, name: str) -> Any:  # name, version, sigma, heatmaps, ...
        return getattr(self._backbone, name)

    def for_video(self, alias: str) -> Any:
        from model.testing.simulated import bind_video

        return bind_video(self._backbone, self._ids.get(alias, alias))


def _load_head(path: str | None, backbone_name: str, what: str) -> Any | None:
    """A stored head, or None (with a warning) when there is none or it does not fit the backbone."""
    if not path:
        return None
    from model.checkpoint import CheckpointError
    from model.pipeline.predictor import load_head

    try:
        return load_head(path, backbone_name)[0]
    except (OSError, ValueError, CheckpointError) as exc:
        logger.warning("%s head %s not used: %s", what, path, exc)
        return None


def _initial_head(ctx: BackendContext, serving: Any, backbone_name: str) -> tuple[Any, str]:
    """(head, where it comes from): the serving head (fine-tuning), else the released DCPose head when
    BACKBONE_CHECKPOINT is the official checkpoint (it holds one), else the released initialisation."""
    from model.checkpoint import CheckpointError, read_checkpoint_info
    from model.nets.dcpose import build_dcpose

    head = _load_head(serving.spec.head, backbone_name, "serving")
    if head is not None:
        return head, serving.name
    official = ctx.settings.backbone_checkpoint
    if official is not None:
        try:
            holds_head = read_checkpoint_info(official).content == "dcpose"
        except (OSError, CheckpointError) as exc:
            logger.warning("BACKBONE_CHECKPOINT %s not read for a head: %s", official, exc)
            holds_head = False
        head = _load_head(str(official), backbone_name, "released") if holds_head else None
        if head is not None:
            return head, f"released:{Path(official).name}"
    return build_dcpose(backbone=None), "released-init"


def _split(samples: list[Any], config: FinetuneConfig) -> tuple[list[Any], list[Any]]:
    from model.training.samples import split_holdout

    try:
        train, holdout = split_holdout(samples, fraction=config.holdout_fraction, seed=config.seed,
                                       distance=config.distance)  # fmt: skip
    except ValueError as exc:
        raise FinetuneDataError(f"cannot hold out frames for the gate: {exc}") from None
    if not train or not holdout:
        raise FinetuneDataError(
            f"{len(samples)} labelled person-frames give {len(train)} for training and {len(holdout)} held out; "
            "label more frames (the gate holds out a video, or a frame range of a single video)"
        )
    return train, holdout


def _epoch_tracker(report: ProgressReporter, epochs: int, steps: int) -> Any:
    """A train_head progress callback that also keeps the mean loss of each finished epoch."""
    state: dict[str, Any] = {"epoch": 0, "sum": 0.0, "n": 0, "losses": []}

    def progress(epoch: int, step: int, loss: float) -> None:
        if epoch != state["epoch"]:
            state["losses"].append(state["sum"] / max(state["n"], 1))
            state.update(epoch=epoch, sum=0.0, n=0)
        state["sum"] += loss
        state["n"] += 1
        report(phase="train", epoch=epoch + 1, epochs=epochs, step=step + 1, steps_per_epoch=steps,
               loss=round(float(loss), 8), epoch_losses=[round(v, 8) for v in state["losses"]])  # fmt: skip

    return progress


def _write_version(folder: Path, tmp: Path, head: Any, backbone: Any, name: str, result: Any,
                   documents: Mapping[str, Any]) -> None:  # fmt: skip
    """Writes every file of a version into `tmp`, then renames it to `folder` (all or nothing)."""
    from model.checkpoint import save_checkpoint
    from model.training.loop import save_training_curve

    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model_config = {"backbone": backbone.name, "num_joints": int(head.num_joints),
                        "dilations": list(head.pose_correction.dilations), "head": "dcpose"}  # fmt: skip
        save_checkpoint(tmp / HEAD_FILE, head, model_config=model_config, version=name,
                        extra={"backbone_version": backbone.version, "best_epoch": result.best_epoch})  # fmt: skip
        for file_name, doc in documents.items():
            write_json_atomic(tmp / file_name, clean_json(doc))
        save_training_curve(result, tmp / CURVE_FILE, title=f"{name}: DCPose head on {backbone.name}")
        os.rename(tmp, folder)  # atomic: the version folder appears complete or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass
class _Trained:
    """What the training step of a run produced."""

    head: Any
    start_from: str
    result: Any
    train: list[Any]
    holdout: list[Any]

    def metrics(self) -> dict[str, Any]:
        r = self.result
        return {"epoch_losses": r.epoch_losses, "holdout_losses": r.holdout_losses,
                "initial_holdout_loss": r.initial_holdout_loss, "best_epoch": r.best_epoch,
                "epoch_times_s": r.epoch_times, "cache_seconds": r.cache_seconds, "steps": r.steps,
                "train_samples": len(self.train), "holdout_samples": len(self.holdout)}  # fmt: skip

    def holdout_frames(self) -> dict[str, list[int]]:
        videos = sorted({s.video for s in self.holdout})
        return {v: sorted({s.frame for s in self.holdout if s.video == v}) for v in videos}


def _samples(data: ProjectData, cfg: FinetuneConfig) -> tuple[list[Any], list[Any]]:
    """(training, held-out) samples of the project's labelled frames."""
    from model.training.samples import build_samples

    samples = build_samples(data.videos, distance=cfg.distance)
    samples = fit_neighbours([s for s in samples if s.frame in data.images.get(s.video, {})], data.images)
    if not samples:
        raise FinetuneDataError(f"project {data.project_id} has no human-checked person on a stored frame task "
                                "yet; submit annotations in Label Studio first")  # fmt: skip
    return _split(samples, cfg)


def _train(ctx: BackendContext, data: ProjectData, cfg: FinetuneConfig, serving: Any, backbone: Any,
           readers: Mapping[str, Any], report: ProgressReporter, device: str) -> _Trained:  # fmt: skip
    import torch

    from model.training.samples import BackboneHeatmapCache
    from model.training.loop import TrainConfig, train_head

    train, holdout = _samples(data, cfg)
    head, start_from = _initial_head(ctx, serving, backbone.name)
    cache = BackboneHeatmapCache(backbone, readers, directory=Path(ctx.settings.model_dir) / CACHE_DIR)
    cache.prefetch(train + holdout, progress=lambda d, t: report(phase="cache", done=d, total=t))
    steps = math.ceil(len(train) / cfg.batch_size)
    report(phase="train", epoch=0, epochs=cfg.epochs, steps_per_epoch=steps)
    torch.manual_seed(cfg.seed)
    config = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, augment=cfg.augment,
                         amp=cfg.amp, device=device)  # fmt: skip
    result = train_head(head, backbone, readers, train, holdout=holdout, cache=cache, config=config,
                        progress=_epoch_tracker(report, cfg.epochs, steps))  # fmt: skip
    return _Trained(head, start_from, result, train, holdout)


def run_training(ctx: BackendContext, *, job_id: str, report: ProgressReporter, project_id: int,
                 config: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The "train" job (see the module docstring); returns its result, "state" "rejected" when gated out.

    Raises:
        FinetuneDataError: too few labelled frames or persons.
        ValueError: a bad training option.
    """
    from backend.services import gate
    from backend.db.jobs import list_jobs
    from backend.ls.frames import VideoFrames
    from backend.services.prediction import serving_model
    from backend.services.predictor_cache import resolve_device

    cfg = load_config(ctx.settings.model_dir, config)
    model_dir = Path(ctx.settings.model_dir)
    device = resolve_device(cfg.device or ctx.settings.device)
    start = time.perf_counter()
    report(phase="gather", project=project_id)
    report.flush()
    with session_scope(ctx.sessions) as session:
        active = {j.id for j in list_jobs(session=session, state="running")} | {job_id}
        data = gather_project_data(session=session, project_id=project_id)
    remove_stale_temporaries(model_dir, active)
    serving = serving_model(ctx, project_id)
    backbone, owner = _training_backbone(ctx)
    backbone = _AliasedBackbone(backbone, {name: v.extra["video_id"] for name, v in data.videos.items()})
    try:
        readers = {name: VideoFrames(ctx.frames, data.images[name], video.num_frames)
                   for name, video in data.videos.items()}  # fmt: skip
        run = _train(ctx, data, cfg, serving, backbone, readers, report, device)
        report(phase="write", epoch_losses=[round(v, 8) for v in run.result.epoch_losses])
        summary = {**data.summary(), "train_samples": len(run.train), "holdout_samples": len(run.holdout),
                   "holdout_frames": run.holdout_frames(),
                   "split": "by video" if len(data.videos) > 1 else "by frame range"}  # fmt: skip
        run_config = {"finetune": asdict(cfg), "device": device, "backbone": backbone.name,
                      "backbone_version": backbone.version, "start_from": run.start_from, "job": job_id}  # fmt: skip
        with session_scope(ctx.sessions) as session:
            name = next_version_name(session, model_dir, project_id)
        files = version_files(model_dir, name)
        _write_version(files["dir"], versions_dir(model_dir) / f".tmp-{job_id}", run.head, backbone, name, run.result,
                       {"config.json": run_config, "training_data.json": summary,
                        METRICS_FILE: {"train": run.metrics(), "gate": None}})  # fmt: skip
        with session_scope(ctx.sessions) as session:  # registered only now that every file exists
            db_versions.create_model_version(
                session=session, name=name, backbone=backbone.version, project_id=project_id,
                head_path=str(files["head"].resolve()), state="candidate", metrics=clean_json({"train": run.metrics()}),
                config=clean_json(run_config), training_summary=clean_json(summary), parent=serving.name,
            )  # fmt: skip
        report(phase="gate", version=name)
        decision = gate.evaluate_candidate(
            backbone, run.head, _load_head(serving.spec.head, backbone.name, "serving"),
            gate.HoldoutFrames.build(data.videos, run.holdout_frames(), readers), candidate=name,
            serving=serving.name, margin=ctx.settings.promote_margin, device=device,
        )  # fmt: skip
        write_json_atomic(files["metrics"], clean_json({"train": run.metrics(), "gate": decision.to_json()}))
        with session_scope(ctx.sessions) as session:  # promotion (or rejection) is this one transaction
            outcome = gate.apply_decision(session, decision, candidate=name, project_id=project_id,
                                          backbone_version=backbone.version)  # fmt: skip
    finally:
        if callable(getattr(owner, "close", None)):
            owner.close()
    report(phase="done", version=name, outcome=outcome)
    logger.info("project %s: %s %s (%s)", project_id, name, outcome, decision.reason)
    return clean_json({"state": outcome, "version": name, "gate": decision.to_json(), "train": run.metrics(),
                       "data": {k: v for k, v in summary.items() if k != "frames_by_video"},
                       "start_from": run.start_from, "seconds": round(time.perf_counter() - start, 2)})  # fmt: skip
