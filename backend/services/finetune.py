"""Fine-tuning on human corrections: DB labels -> samples -> head training -> version files -> gate.

The "train" job (`run_training`, queued on a `backend.jobs.runners` runner and run in a spawned child
process of the web process or RQ worker, `backend.jobs.child`, so that its memory is returned when it ends):

1. `backend.services.training_data.gather_project_data`: every human-checked frame of the project,
   i.e. the newest live, not cancelled annotation of each (video, frame) task, as persons (visibility = annotation joints,
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
4. The version directory MODEL_DIR/versions/<name>/ (`backend.services.version_files`) is written
   under a temporary name and renamed
   when complete (head.pt via the atomic `save_checkpoint`, config.json, training_data.json,
   metrics.json, curve.png); only then is the version registered, as a candidate.
5. `backend.services.gate`: the candidate and the serving version predict the held-out frames; the candidate
   is promoted (one DB transaction) only when its mAP beats the serving one by PROMOTE_MARGIN,
   otherwise it is kept as "rejected" with its figures and the job ends "rejected".

An exception or a kill anywhere leaves the serving version as it was: nothing is registered before
its files exist, and promotion is a single transaction. A cancel (``POST /jobs/<id>/cancel``) stops the
run at its next stored progress report up to the end of training (step 3); from step 4 on, the run is
committed to finishing (`ProgressReporter.commit_to_finish`) and a cancel is refused. Training options
come from MODEL_DIR/train_config.json when present (`backend.services.finetune_config.FinetuneConfig`), overridden by the job's
``config`` parameter (``POST /train {"project": 1, "config": {"epochs": 5}}``).
Triggers (START_TRAINING, POST /train, new corrections, timer) live in `backend.services.training`,
the HTTP routes in `backend.http.versions`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from annotation_io.jsonio import finite_json
from backend.context import HEATMAP_CACHE_DIR
from backend.db import versions as db_versions
from backend.db.session import session_scope
from backend.services.finetune_config import FinetuneConfig, load_config
from backend.services.training_data import ProjectData, gather_project_data
from backend.services.version_files import (
    METRICS_FILE,
    next_version_name,
    remove_stale_temporaries,
    version_files,
    versions_dir,
    write_json_atomic,
    write_version,
)

if TYPE_CHECKING:
    from backend.context import BackendContext
    from backend.jobs.execution import ProgressReporter

logger = logging.getLogger(__name__)


class FinetuneDataError(ValueError):
    """The project's labels cannot make a training run (too few frames, no persons); says what to do."""


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
    to the original LS video id of the alias (`model.backbones.base.bind_video`).
    """

    def __init__(self, backbone: Any, video_ids: Mapping[str, str]) -> None:
        self._backbone = backbone
        self._ids = dict(video_ids)

    def __getattr__(self, name: str) -> Any:  # name, version, sigma, heatmaps, ...
        return getattr(self._backbone, name)

    def for_video(self, alias: str) -> Any:
        from model.backbones.base import bind_video

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

    from model.training.heatmap_cache import BackboneHeatmapCache
    from model.training.loop import TrainConfig, train_head
    from model.training.samples import within_shots

    train, holdout = (within_shots(samples, readers) for samples in _samples(data, cfg))
    head, start_from = _initial_head(ctx, serving, backbone.name)
    cache = BackboneHeatmapCache(backbone, readers, directory=Path(ctx.settings.model_dir) / HEATMAP_CACHE_DIR)
    cache.prefetch(train + holdout, progress=lambda d, t: report(phase="cache", done=d, total=t))
    steps = math.ceil(len(train) / cfg.batch_size)
    report(phase="train", epoch=0, epochs=cfg.epochs, steps_per_epoch=steps)
    torch.manual_seed(cfg.seed)
    config = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, augment=cfg.augment,
                         amp=cfg.amp, device=device)  # fmt: skip
    result = train_head(head, backbone, readers, train, holdout=holdout, cache=cache, config=config,
                        progress=_epoch_tracker(report, cfg.epochs, steps))  # fmt: skip
    return _Trained(head, start_from, result, train, holdout)


def _training_summary(data: ProjectData, run: _Trained) -> dict[str, Any]:
    """What the version was trained on (its training_data.json)."""
    return {**data.summary(), "train_samples": len(run.train), "holdout_samples": len(run.holdout),
            "holdout_frames": run.holdout_frames(),
            "split": "by video" if len(data.videos) > 1 else "by frame range"}  # fmt: skip


def _save_candidate(ctx: BackendContext, job_id: str, project_id: int, data: ProjectData, cfg: FinetuneConfig,
                    run: _Trained, backbone: Any, serving: Any, device: str) -> tuple[str, dict[str, Path]]:  # fmt: skip
    """Writes the version files, then registers the version as a candidate; returns (name, files)."""
    model_dir = Path(ctx.settings.model_dir)
    summary = _training_summary(data, run)
    run_config = {"finetune": asdict(cfg), "device": device, "backbone": backbone.name,
                  "backbone_version": backbone.version, "start_from": run.start_from, "job": job_id}  # fmt: skip
    with session_scope(ctx.sessions) as session:
        name = next_version_name(session, model_dir, project_id)
    files = version_files(model_dir, name)
    write_version(files["dir"], versions_dir(model_dir) / f".tmp-{job_id}", run.head, backbone, name, run.result,
                   {"config.json": run_config, "training_data.json": summary,
                    METRICS_FILE: {"train": run.metrics(), "gate": None}})  # fmt: skip
    with session_scope(ctx.sessions) as session:  # registered only now that every file exists
        db_versions.create_model_version(
            session=session, name=name, backbone=backbone.version, project_id=project_id,
            head_path=str(files["head"].resolve()), state="candidate", metrics=finite_json({"train": run.metrics()}),
            config=finite_json(run_config), training_summary=finite_json(summary), parent=serving.name,
        )  # fmt: skip
    return name, files


def _gate(ctx: BackendContext, run: _Trained, data: ProjectData, readers: Mapping[str, Any], backbone: Any,
          serving: Any, name: str, files: Mapping[str, Path], project_id: int, device: str) -> tuple[Any, str]:  # fmt: skip
    """Scores the candidate against the serving version and applies the verdict; returns (decision, outcome)."""
    from backend.services import gate

    decision = gate.evaluate_candidate(
        backbone, run.head, _load_head(serving.spec.head, backbone.name, "serving"),
        gate.HoldoutFrames.build(data.videos, run.holdout_frames(), readers), candidate=name,
        serving=serving.name, margin=ctx.settings.promote_margin, device=device,
    )  # fmt: skip
    write_json_atomic(files["metrics"], finite_json({"train": run.metrics(), "gate": decision.to_json()}))
    with session_scope(ctx.sessions) as session:  # promotion (or rejection) is this one transaction
        outcome = gate.apply_decision(session, decision, candidate=name, project_id=project_id,
                                      backbone_version=backbone.version)  # fmt: skip
    return decision, outcome


def _gather(ctx: BackendContext, project_id: int, job_id: str) -> ProjectData:
    """The project's labelled frames; removes version folders half-written by jobs no longer running."""
    from backend.db.jobs import list_jobs

    with session_scope(ctx.sessions) as session:
        active = {j.id for j in list_jobs(session=session, state="running")} | {job_id}
        data = gather_project_data(session=session, project_id=project_id)
    remove_stale_temporaries(ctx.settings.model_dir, active)
    return data


def run_training(ctx: BackendContext, *, job_id: str, report: ProgressReporter, project_id: int,
                 config: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The "train" job (see the module docstring); returns its result, "state" "rejected" when gated out.

    Raises:
        FinetuneDataError: too few labelled frames or persons.
        ValueError: a bad training option.
    """
    from backend.ls.frames import VideoFrames
    from backend.predictor_cache import resolve_device
    from backend.services.prediction import serving_model

    cfg = load_config(ctx.settings.model_dir, config)
    device = resolve_device(cfg.device or ctx.settings.device)
    start = time.perf_counter()
    report(phase="gather", project=project_id)
    report.flush()
    data = _gather(ctx, project_id, job_id)
    serving = serving_model(ctx, project_id)
    backbone, owner = _training_backbone(ctx)
    backbone = _AliasedBackbone(backbone, {name: v.extra["video_id"] for name, v in data.videos.items()})
    try:
        readers = {name: VideoFrames(ctx.frames, data.images[name], video.num_frames)
                   for name, video in data.videos.items()}  # fmt: skip
        run = _train(ctx, data, cfg, serving, backbone, readers, report, device)
        report(phase="write", epoch_losses=[round(v, 8) for v in run.result.epoch_losses])
        report.commit_to_finish()  # a cancel stops the run up to here, before any version file or row exists
        name, files = _save_candidate(ctx, job_id, project_id, data, cfg, run, backbone, serving, device)
        report(phase="gate", version=name)
        decision, outcome = _gate(ctx, run, data, readers, backbone, serving, name, files, project_id, device)
    finally:
        if callable(getattr(owner, "close", None)):
            owner.close()
    report(phase="done", version=name, outcome=outcome)
    logger.info("project %s: %s %s (%s)", project_id, name, outcome, decision.reason)
    from backend.services.ls_sync import request_sync

    request_sync(ctx, project_id, note=f"training job {job_id}: {name} {outcome} ({decision.reason})")
    summary = {k: v for k, v in _training_summary(data, run).items() if k != "frames_by_video"}
    return finite_json({"state": outcome, "version": name, "gate": decision.to_json(), "train": run.metrics(),
                        "data": summary, "start_from": run.start_from,
                        "seconds": round(time.perf_counter() - start, 2)})  # fmt: skip
