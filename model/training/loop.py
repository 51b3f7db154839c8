"""Training of the DCPose head on frozen-backbone heatmaps, single process or DDP (`python -m model train`).

`train_head` trains only the temporal head (PRF, PTM, PCN): the backbone is frozen and never
trained (the released DCPose code), the optimiser is Adam over `DCPose.head_parameters()`
(lr 1e-4 by default, the PoseTrack18 setting), the loss is `model.nets.losses.weighted_mse` of
``head.refine(hc, hp, hn, margin)`` against `model.heatmaps.encode` targets of frame t. Backbone
heatmaps come from `model.training.heatmap_cache.BackboneHeatmapCache` (computed once before epoch 1, so epochs
never run the backbone), or, with ``use_cache=False``, from the backbone in the loop on augmented
crops. After every epoch the head's BatchNorm statistics are re-estimated on a few un-augmented
training samples (`TrainConfig.bn_samples`; see there why). The returned `TrainResult` holds the
epoch losses and times, the held-out loss per epoch and the best state dict (lowest held-out loss,
else lowest training loss), which is also loaded into the head at the end.

Multi-GPU / multi-process (DistributedDataParallel): launch the same command under torchrun, e.g.
``torchrun --nproc_per_node=4 -m model train --videos ... --device cuda``. When the environment says
WORLD_SIZE > 1, `train_head` initialises the process group itself (NCCL on CUDA, each rank on
``cuda:<LOCAL_RANK>``; gloo on CPU) unless the caller already did, wraps the head in
DistributedDataParallel (gradients averaged across ranks), shards the samples with a
DistributedSampler (reshuffled every epoch; batch_size is per rank), averages the reported losses
across ranks, and copies rank 0's BatchNorm statistics to every rank after each epoch so that all
ranks end with identical weights and buffers. Every rank fills the heatmap cache for all samples (with
``cache_dir`` on a shared disk they split the work and read each other's files). Only rank 0 writes
the checkpoint and the curve in the CLI.

The command line (argparse, checkpoint writing) lives in `model.cli.train`, the training-curve
picture in `model.training.curve`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from annotation_io.video import FrameReader
from model.backbones.base import Backbone
from model.nets.dcpose import DCPose
from model.nets.losses import weighted_mse
from model.nets.runtime import native_bf16
from model.training.augmentation import NO_AUGMENTATION, Batch, draw_augmentation, make_batch
from model.training.distributed import DistInfo, all_mean, any_rank, setup_distributed, sync_buffers
from model.training.heatmap_cache import BackboneHeatmapCache, CountingBackbone, CropSize
from model.training.samples import TrainSample

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "TrainingDivergedError", "train_head"]

ProgressFn = Callable[[int, int, float], None]


class TrainingDivergedError(ValueError):
    """The loss became NaN or infinite: the head's weights are broken and no state of it is kept."""


@dataclass(frozen=True)
class TrainConfig:
    """Head training options.

    Attributes:
        epochs: passes over the training samples.
        batch_size: samples per step (per rank under DDP).
        lr: Adam learning rate (head parameters only).
        seed: seeds the sample order and the augmentation draws.
        augment: flip / scale / rotation augmentation (model.training.samples), identical for the 3 frames.
        use_cache: backbone heatmaps computed once and reused; False runs the backbone every step.
        device: "cpu", "cuda", "cuda:1" (under DDP with CUDA each rank uses cuda:<LOCAL_RANK>).
        num_workers: DataLoader worker processes building batches (cache mode only).
        cache_dir: store cached heatmaps as files here; None keeps them in memory.
        amp: bfloat16 autocast for the head's forward pass (about 2-3x faster on CPUs with
            AVX512-BF16 and on recent GPUs; the weights and the loss stay float32). Ignored, with a
            warning, where the device has no native bfloat16 (`model.nets.runtime.native_bf16`).
        input_size: crop (W, H); DCPose's 288x384 unless testing with the simulated backbone.
        heatmap_size: heatmap (W, H); 72x96 as released.
        bn_samples: training samples (un-augmented) whose forward pass re-estimates the head's
            BatchNorm statistics after every epoch; 0 keeps the running averages of training.
            Why: the head starts from weights of std 0.001 that Adam changes by ~10% per step,
            so the running averages (momentum 0.1) lag far behind the weights; measured on the
            simulated backbone after 40 steps, eval-mode held-out loss 0.0036 (no better than
            predicting zeros) with the running averages vs 0.0009 re-estimated.
        label_neighbours: chance, per sample and side, that a neighbour frame holding a human label
            of the same track is fed as that label's Gaussians instead of backbone heatmaps, as the
            predictor feeds human and propagated poses; the head thus learns how far to trust them
            (0: backbone heatmaps only, as released).
    """

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 0
    augment: bool = True
    use_cache: bool = True
    device: str = "cpu"
    num_workers: int = 0
    cache_dir: str | None = None
    amp: bool = False
    input_size: tuple[int, int] = (288, 384)
    heatmap_size: tuple[int, int] = (72, 96)
    bn_samples: int = 32
    label_neighbours: float = 0.5

    @property
    def crop(self) -> CropSize:
        return CropSize(tuple(self.input_size), tuple(self.heatmap_size))  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.bn_samples, int) and self.bn_samples >= 0):
            raise ValueError(f"TrainConfig.bn_samples must be an integer >= 0, got {self.bn_samples!r}")
        if not (isinstance(self.num_workers, int) and self.num_workers >= 0):
            raise ValueError(f"TrainConfig.num_workers must be an integer >= 0, got {self.num_workers!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be a positive number, got {self.lr!r}")
        if not 0.0 <= self.label_neighbours <= 1.0:
            raise ValueError(f"TrainConfig.label_neighbours must be in [0, 1], got {self.label_neighbours!r}")
        for name in ("input_size", "heatmap_size"):
            size = tuple(getattr(self, name))
            if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
                raise ValueError(f"TrainConfig.{name} must be two positive integers (W, H), got {size}")
        if self.input_size[0] * self.heatmap_size[1] != self.input_size[1] * self.heatmap_size[0]:
            raise ValueError(f"TrainConfig input_size {self.input_size} and heatmap_size {self.heatmap_size} "
                             "must have the same aspect (one stride for x and y)")


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        epoch_losses: mean training loss per completed epoch.
        epoch_times: seconds per completed epoch (training steps only).
        holdout_losses: held-out loss after each completed epoch (empty without holdout).
        best_epoch: 0-based epoch of `best_state_dict` (-1: no epoch completed, initial weights).
        best_state_dict: head state dict (CPU tensors) of the best epoch.
        holdout_loss: held-out loss of the best epoch (None without holdout); before training when
            no epoch completed.
        initial_holdout_loss: held-out loss before training (None without holdout).
        cache_seconds: time spent filling the heatmap cache.
        backbone_calls: backbone.heatmaps calls made by this run.
        steps: optimiser steps taken.
        stopped: training ended early because `should_stop` said so.
    """

    epoch_losses: list[float] = field(default_factory=list)
    epoch_times: list[float] = field(default_factory=list)
    holdout_losses: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_state_dict: dict[str, Tensor] = field(default_factory=dict)
    holdout_loss: float | None = None
    initial_holdout_loss: float | None = None
    cache_seconds: float = 0.0
    backbone_calls: int = 0
    steps: int = 0
    stopped: bool = False


# ------------------------------------------------------------------------------------------ plumbing


class _RefineModule(nn.Module):
    """The head's `refine` as `forward`, so DistributedDataParallel can wrap it."""

    def __init__(self, head: DCPose) -> None:
        super().__init__()
        self.head = head

    def forward(self, current: Tensor, previous: Tensor, next_: Tensor, margin: Tensor) -> Tensor:
        return self.head.refine(current, previous, next_, margin)


class _BatchSet(Dataset):
    """Builds whole batches: item = list of sample indices -> `Batch` (augmented per epoch)."""

    def __init__(self, samples: Sequence[TrainSample], config: TrainConfig, source: dict[str, Any]) -> None:
        self.samples = list(samples)
        self.config = config
        self.source = source
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, indices: list[int]) -> Batch:
        chosen = [self.samples[i] for i in indices]
        if self.config.augment:
            # One generator per (seed, epoch, sample): the draws do not depend on batching or workers.
            augs = [draw_augmentation(np.random.default_rng([self.config.seed, self.epoch, i])) for i in indices]
        else:
            augs = [NO_AUGMENTATION] * len(indices)
        q = self.config.label_neighbours
        sides = [tuple(np.random.default_rng([self.config.seed, self.epoch, i, 1]).random(2) < q) for i in indices]
        return make_batch(chosen, augs, batch_size=max(3 * len(chosen), 1), crop=self.config.crop,
                          label_sides=sides if q > 0 else None, **self.source)


def _as_batch(item: Batch) -> Batch:
    return item


def _cpu_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------------------ training


def _holdout_loss(head: DCPose, holdout: Sequence[TrainSample], source: dict[str, Any], config: TrainConfig,
                  info: DistInfo, device: torch.device) -> float:
    """Mean loss over the held-out samples (no augmentation, eval mode); ranks split the work."""
    head.eval()
    mine = list(holdout)[info.rank :: info.world]
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(mine), config.batch_size):
            chunk = mine[start : start + config.batch_size]
            batch = make_batch(chunk, None, batch_size=3 * len(chunk), crop=config.crop, **source).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp):
                out = head.refine(batch.current, batch.previous, batch.next, batch.margin)
            total += float(weighted_mse(out.float(), batch.target, batch.weight)) * len(chunk)
            count += len(chunk)
    if info.active:
        t = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        total, count = float(t[0]), int(t[1])
    head.train()
    return total / count if count else math.nan


def _recalibrate_batchnorm(head: DCPose, samples: Sequence[TrainSample], source: dict[str, Any],
                           config: TrainConfig, info: DistInfo, device: torch.device) -> None:
    """Re-estimate the head's BatchNorm statistics on `config.bn_samples` training samples.

    A cumulative average (momentum None) over un-augmented batches in train mode, without
    gradients; the frozen backbone's BatchNorms are not touched. Every rank uses the same samples
    and rank 0's result is broadcast, so all ranks hold identical statistics.
    """
    step = max(1, len(samples) // max(config.bn_samples, 1))
    chosen = list(samples)[::step][: config.bn_samples]  # spread over the videos and frames
    norms = [m for part in (head.diff_temporal_fuse, head.support_temporal_fuse, head.pose_correction)
             for m in part.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not chosen or not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    head.train()
    with torch.no_grad():
        for start in range(0, len(chosen), config.batch_size):
            chunk = chosen[start : start + config.batch_size]
            batch = make_batch(chunk, None, batch_size=3 * len(chunk), crop=config.crop, **source).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp):
                head.refine(batch.current, batch.previous, batch.next, batch.margin)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    sync_buffers(head, info)


def _fill_cache(cache: BackboneHeatmapCache, samples: Sequence[TrainSample], info: DistInfo,
                device: torch.device) -> None:
    """Every rank needs every entry; with a shared directory ranks split the work first."""
    if info.active and cache.directory is not None:
        cache.prefetch(list(samples)[info.rank :: info.world])
        dist.barrier()
    cache.prefetch(samples)


def train_head(
    head: DCPose,
    backbone: Backbone,
    readers: Mapping[str, FrameReader],
    samples: Sequence[TrainSample],
    *,
    config: TrainConfig = TrainConfig(),
    holdout: Sequence[TrainSample] | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    cache: BackboneHeatmapCache | None = None,
) -> TrainResult:
    """Train the DCPose head on backbone heatmaps of `samples` (backbone frozen, head params only).

    Args:
        head: the model; only `head.head_parameters()` are optimised; a backbone inside it stays
            frozen in eval mode. Moved to the config's device; ends in eval mode holding the best
            weights.
        backbone: the frozen heatmap source (`model.backbones.base.Backbone`; the simulated one too).
        readers: video name -> frame reader for every sample's video.
        samples: training samples (`model.training.samples.build_samples`).
        config: options.
        holdout: held-out samples, evaluated after every epoch (and before training); they pick
            the best epoch.
        progress: callable(epoch, step, loss) after every step (epoch and step 0-based).
        should_stop: polled before every step; True ends training (the best completed epoch is
            kept). Under DDP any rank stopping stops all.
        cache: a heatmap cache to use (and fill) for this backbone and crop size; by default one is
            made from `config.cache_dir`.

    Returns:
        Losses, times and the best state dict.

    Seeds torch's global generator with `config.seed`.

    Raises:
        ValueError: no samples, or a cache made for another backbone or crop size.
        TrainingDivergedError: an epoch's training or held-out loss is NaN or infinite.
    """
    if not samples:
        raise ValueError("train_head needs at least one training sample; label some frames first")
    holdout = list(holdout or [])
    info, device = setup_distributed(config.device)
    if config.amp and not native_bf16(device):
        logger.warning("amp (bfloat16 autocast) is off: %s has no native bfloat16 (AVX512-BF16, AMX or a recent "
                       "GPU), where it is several times slower than float32", device)  # fmt: skip
        config = replace(config, amp=False)
    try:
        return _train(head, backbone, readers, list(samples), config, holdout, progress, should_stop, cache,
                      info, device)
    finally:
        if info.owned:
            dist.destroy_process_group()


def _heatmap_source(backbone: Backbone, readers: Mapping[str, FrameReader], samples: list[TrainSample],
                    holdout: list[TrainSample], config: TrainConfig, cache: BackboneHeatmapCache | None,
                    info: DistInfo, device: torch.device, result: TrainResult) -> tuple[dict[str, Any], Callable[[], int]]:
    """Where batches get their heatmaps (a filled cache, or the backbone in the loop) and a call counter."""
    if cache is not None and (cache.backbone.version != backbone.version or cache.crop != config.crop):
        raise ValueError(
            f"the cache holds {cache.backbone.version} heatmaps of {cache.crop.label} crops but training uses "
            f"{backbone.version} and {config.crop.label}; pass a matching cache or none"
        )
    if not config.use_cache:
        source: dict[str, Any] = {"backbone": backbone, "readers": readers}
        return source, _count_loop_calls(source)
    if cache is None:
        cache_dir = Path(config.cache_dir) if config.cache_dir else None
        cache = BackboneHeatmapCache(backbone, readers, directory=cache_dir, crop=config.crop)
    before = cache.backbone_calls
    t0 = time.perf_counter()
    _fill_cache(cache, samples + holdout, info, device)
    result.cache_seconds = time.perf_counter() - t0
    filled = cache
    return {"cache": filled}, lambda: filled.backbone_calls - before


def _run_epoch(module: nn.Module, loader: DataLoader, steps: int, optimizer: torch.optim.Optimizer,
               config: TrainConfig, info: DistInfo, device: torch.device, epoch: int, result: TrainResult,
               progress: ProgressFn | None, should_stop: Callable[[], bool] | None) -> tuple[float, int, bool]:
    """One pass over the batches: (summed loss, samples seen, stopped on request)."""
    total, count = 0.0, 0
    batch_iter = iter(loader)
    for step in range(steps):
        # Polled before the batch is built, so a stop never waits for a backbone pass.
        if any_rank(bool(should_stop and should_stop()), info, device):
            return total, count, True
        batch = next(batch_iter).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp):
            out = module(batch.current, batch.previous, batch.next, batch.margin)
        loss = weighted_mse(out.float(), batch.target, batch.weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        result.steps += 1
        value = float(loss.detach())
        total += value * len(batch)
        count += len(batch)
        if progress is not None:
            progress(epoch, step, value)
    return total, count, False


def _train(head: DCPose, backbone: Backbone, readers: Mapping[str, FrameReader], samples: list[TrainSample],
           config: TrainConfig, holdout: list[TrainSample], progress: ProgressFn | None,
           should_stop: Callable[[], bool] | None, cache: BackboneHeatmapCache | None, info: DistInfo,
           device: torch.device) -> TrainResult:
    torch.manual_seed(config.seed)
    result = TrainResult()
    head.to(device)
    head.freeze_backbone(True)
    head.train()  # keeps a frozen backbone in eval (DCPose.train)
    params = [p for p in head.head_parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    source, backbone_calls = _heatmap_source(backbone, readers, samples, holdout, config, cache, info, device,
                                             result)
    module: nn.Module = _RefineModule(head)
    if info.active:
        ids = [device.index] if device.type == "cuda" else None
        module = nn.parallel.DistributedDataParallel(module, device_ids=ids)
    dataset = _BatchSet(samples, config, source)
    sampler = DistributedSampler(range(len(samples)), num_replicas=info.world, rank=info.rank, shuffle=True,
                                 seed=config.seed, drop_last=False)
    workers = config.num_workers if config.use_cache else 0
    if config.num_workers and not config.use_cache:
        logger.info("num_workers ignored: the backbone in the loop runs in the main process")
    if holdout:
        result.initial_holdout_loss = _holdout_loss(head, holdout, source, config, info, device)
        result.holdout_loss = result.initial_holdout_loss
        logger.info("held-out loss before training: %.6f", result.initial_holdout_loss)
    best_score = math.inf
    result.best_state_dict = _cpu_state(head)
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        dataset.epoch = epoch
        order = list(sampler)
        batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        loader = DataLoader(dataset, sampler=batches, batch_size=None, num_workers=workers, collate_fn=_as_batch)
        t0 = time.perf_counter()
        total, count, stopped = _run_epoch(module, loader, len(batches), optimizer, config, info, device, epoch,
                                           result, progress, should_stop)
        if stopped:
            result.stopped = True
            logger.info("training stopped on request in epoch %d after %d steps", epoch, result.steps)
            break
        elapsed = time.perf_counter() - t0
        if config.bn_samples:
            _recalibrate_batchnorm(head, samples, source, config, info, device)
        else:
            sync_buffers(head, info)
        epoch_loss, elapsed = all_mean([total / max(count, 1), elapsed], info, device)
        result.epoch_losses.append(epoch_loss)
        result.epoch_times.append(elapsed)
        score = _holdout_loss(head, holdout, source, config, info, device) if holdout else epoch_loss
        if holdout:
            result.holdout_losses.append(score)
        logger.info("epoch %d: loss %.6f%s, %.1f s", epoch, epoch_loss,
                    f", held-out {score:.6f}" if holdout else "", elapsed)
        if not (math.isfinite(epoch_loss) and math.isfinite(score)):
            # NaN never compares below the best score: the run would go on and end "trained" on an earlier
            # epoch's or its initial weights. Every rank sees the same averaged figures, so all ranks raise.
            what, bad = ("held-out loss", score) if math.isfinite(epoch_loss) else ("loss", epoch_loss)
            raise TrainingDivergedError(
                f"training diverged: the {what} of epoch {epoch + 1} is {bad} (lr {config.lr:g}); lower the "
                "learning rate, or check the backbone's heatmaps and the labels for NaN"
            )
        if score < best_score:
            best_score, result.best_epoch = score, epoch
            result.best_state_dict = _cpu_state(head)
            if holdout:
                result.holdout_loss = score
    head.load_state_dict(result.best_state_dict)
    head.eval()
    result.backbone_calls = backbone_calls()
    return result


def _count_loop_calls(source: dict[str, Any]) -> Callable[[], int]:
    """Counts backbone calls in loop mode by wrapping the source's backbone."""
    if "backbone" not in source:
        return lambda: 0
    wrapped = CountingBackbone(source["backbone"])
    source["backbone"] = wrapped
    return lambda: wrapped.calls

