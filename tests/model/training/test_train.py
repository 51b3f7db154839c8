"""Tests for model/training/samples.py and model/training/loop.py: samples, split, targets, augmentation, cache, head training, DDP."""

from __future__ import annotations

import copy
import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from annotation_io.skeletons import FLIP_PAIRS, NUM_KEYPOINTS
from annotation_io.synth import make_scene, render_video
from annotation_io.types import Box, Frame, Person, Video
from model.heatmaps import decode, render_gaussians
from model.nets.dcpose import DCPose, build_dcpose
from model.testing.simulated import SimulatedBackbone, SimulationConfig
from model.training.augmentation import (
    NO_AUGMENTATION,
    Augmentation,
    augment_heatmaps,
    draw_augmentation,
    make_batch,
    make_targets,
    target_keypoints,
)
from model.training.heatmap_cache import DEFAULT_CROP, BackboneHeatmapCache, CropSize, sample_geometry
from model.training.loop import TrainConfig, train_head
from model.training.samples import TrainSample, build_samples, split_holdout

SMALL = {"input_size": (72, 96), "heatmap_size": (18, 24)}  # 16x cheaper head steps than 288x384 / 72x96
EXACT = SimulationConfig(
    joint_bias_px=0.0, jitter_px=0.0, swap_prob=0.0, drop_prob=0.0, blur_drop_prob=0.0,
    occluded_pull_prob=0.0, occluded_jitter_px=0.0, peak_spread=0.0, blur_peak_loss=0.0,
)  # fmt: skip
AUGS = (
    Augmentation(flip=True),
    Augmentation(scale=1.25),
    Augmentation(scale=0.8, rotation=30.0),
    Augmentation(flip=True, scale=1.1, rotation=-40.0),
)


class ListReader:
    """Frames held in memory (a FrameReader)."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.num_frames = len(frames)

    def read(self, index: int) -> np.ndarray:
        return self.frames[index]


class CountingBackbone:
    """Wraps a backbone and counts heatmaps calls (binding to videos keeps the count)."""

    def __init__(self, inner: SimulatedBackbone, counter: list[int] | None = None) -> None:
        self.inner, self.counter = inner, counter if counter is not None else [0]
        self.name, self.version = inner.name, inner.version

    def for_video(self, name: str) -> CountingBackbone:
        return CountingBackbone(self.inner.for_video(name), self.counter)

    def heatmaps(self, crops, geoms, frame_indices):
        self.counter[0] += 1
        return self.inner.heatmaps(crops, geoms, frame_indices)


class TinyBackbone(nn.Module):
    """A stand-in backbone with BatchNorm, to check that training leaves it untouched."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 17, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture(scope="module")
def synth() -> tuple[dict[str, Video], dict[str, ListReader]]:
    """Two 8-frame synthetic videos with two walkers each, frames in memory."""
    videos, readers = {}, {}
    for k in range(2):
        scene = make_scene(np.random.default_rng([5, k]), frames=8, people=2, size=(240, 180))
        images, frames = [], []
        for t, (image, persons) in enumerate(render_video(scene)):
            images.append(image)
            frames.append(Frame(t, persons, is_labeled=True))
        name = f"v{k}"
        videos[name] = Video(name, 8, frames, width=240, height=180)
        readers[name] = ListReader(images)
    return videos, readers


def _person(x: float, kps_v: int = 2, **kw: object) -> Person:
    kps = np.zeros((NUM_KEYPOINTS, 3))
    kps[:, 0], kps[:, 1], kps[:, 2] = x + np.arange(NUM_KEYPOINTS), 50 + 5 * np.arange(NUM_KEYPOINTS), kps_v
    return Person(kps, box=Box(x - 10, 40, 50, 120), **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- samples


def test_build_samples_takes_labelled_human_poses_and_picks_neighbours() -> None:
    frames = [
        Frame(0, [_person(10, track_id=1), _person(90, scores=np.ones(17), track_id=2)], is_labeled=True),
        Frame(3, [_person(20, track_id=1)], is_labeled=False),  # not labelled: ignored
        Frame(4, [_person(30, track_id=1), Person(track_id=3)], is_labeled=True),  # no joints: skipped
        Frame(9, [_person(40, track_id=1)], is_labeled=True),
    ]
    video = Video("v", 10, frames)
    samples = build_samples({"v": video})
    assert [(s.frame, s.prev, s.next, s.margin, s.track_id) for s in samples] == [
        (0, 0, 1, (1.0, 1.0), 1),  # first frame: the current frame stands in, margin 1
        (4, 3, 5, (1.0, 1.0), 1),
        (9, 8, 9, (1.0, 1.0), 1),  # last frame
    ]
    assert not samples[0].keypoints[[3, 4]].any()  # ears never supervised
    far = build_samples({"v": video}, distance=2)
    assert [(s.prev, s.next, s.margin) for s in far] == [(0, 2, (1.0, 2.0)), (2, 6, (2.0, 2.0)), (7, 9, (2.0, 1.0))]
    assert samples[1].box == Box(20, 40, 50, 120)


def test_a_box_too_thin_to_crop_skips_its_person_not_the_run() -> None:
    """Before: a box 0.04 px wide passed the w > 0 check, was rounded to 0.0 px for the sample, and the
    heatmap cache then failed the whole run ("box has no extent (w=0.0, h=0.0)")."""
    thin = Person(_person(10).keypoints, box=Box(10, 40, 0.04, 120), track_id=2)
    video = Video("v", 3, [Frame(1, [_person(50, track_id=1), thin], is_labeled=True)])
    samples = build_samples({"v": video})
    assert [(s.track_id, s.box) for s in samples] == [(1, Box(40, 40, 50, 120))]


def test_split_holdout_by_video_is_deterministic_and_disjoint() -> None:
    videos = {f"v{k}": Video(f"v{k}", 5, [Frame(t, [_person(10 + t)], True) for t in range(5)]) for k in range(5)}
    samples = build_samples(videos)
    train, held = split_holdout(samples, fraction=0.4, seed=7)
    again = split_holdout(samples, fraction=0.4, seed=7)
    assert [s.key for s in again[0]] == [s.key for s in train] and [s.key for s in again[1]] == [s.key for s in held]
    assert len({s.video for s in held}) == 2 and not {s.video for s in held} & {s.video for s in train}
    assert len(train) + len(held) == len(samples)
    others = {tuple(sorted({s.video for s in split_holdout(samples, fraction=0.4, seed=s)[1]})) for s in range(8)}
    assert len(others) > 1  # the seed picks which videos


def test_split_holdout_single_video_uses_a_frame_range_with_a_gap() -> None:
    video = Video("v", 40, [Frame(t, [_person(10)], True) for t in range(40)])
    samples = build_samples({"v": video})
    train, held = split_holdout(samples, fraction=0.2, seed=3)
    held_frames = sorted(s.frame for s in held)
    assert held_frames == list(range(held_frames[0], held_frames[0] + 8))  # contiguous, 20%
    lo, hi = held_frames[0], held_frames[-1]
    assert all(s.frame < lo - 1 or s.frame > hi + 1 for s in train)  # neighbours never reach held-out frames
    assert [s.key for s in split_holdout(samples, fraction=0.2, seed=3)[1]] == [s.key for s in held]
    with pytest.raises(ValueError, match="1 labelled frame"):
        split_holdout(samples[:1], fraction=0.2)


# --------------------------------------------------------------------------- targets, augmentation


def _sample(kps: np.ndarray) -> TrainSample:
    return TrainSample("v", 5, 4, 6, (1.0, 1.0), Box(100, 50, 80, 160), kps, 0)


def _kps() -> np.ndarray:
    rng = np.random.default_rng(0)
    kps = np.zeros((NUM_KEYPOINTS, 3))
    kps[:, 0] = rng.uniform(110, 170, NUM_KEYPOINTS)
    kps[:, 1] = rng.uniform(60, 200, NUM_KEYPOINTS)
    kps[:, 2] = 2
    return kps


def test_targets_and_weights() -> None:
    kps = _kps()
    kps[7, 2] = 1  # occluded but labelled: supervised
    kps[8] = 0  # unlabelled
    kps[11, :2] = (400, 100)  # outside the crop
    sample = _sample(kps)
    geom = sample_geometry(sample)
    xy, vis = target_keypoints(sample.keypoints, geom)
    target, weight = make_targets(xy, vis, geom)
    assert target.shape == (NUM_KEYPOINTS, 96, 72) and weight.shape == (NUM_KEYPOINTS,)
    expected = np.ones(NUM_KEYPOINTS)
    expected[[3, 4, 8, 11]] = 0  # ears, unlabelled, outside
    np.testing.assert_array_equal(weight, expected)
    assert not target[[3, 4, 8, 11]].any()
    for j in np.flatnonzero(expected):
        peak = np.unravel_index(target[j].argmax(), target[j].shape)
        assert target[j].max() == pytest.approx(1.0)
        assert peak == (int(xy[j, 1] + 0.5), int(xy[j, 0] + 0.5))


@pytest.mark.parametrize("aug", AUGS)
def test_augmented_heatmaps_stay_aligned_with_augmented_keypoints(aug: Augmentation) -> None:
    sample = _sample(_kps())
    geom = sample_geometry(sample)
    xy0, vis0 = target_keypoints(sample.keypoints, geom)
    hm = render_gaussians(torch.from_numpy(xy0)[None].float(), torch.from_numpy(vis0)[None].float(), sigma=2.0)
    warped = augment_heatmaps(hm, geom, aug)
    xy, vis = target_keypoints(sample.keypoints, geom, aug)
    decoded, peaks = decode(warped)
    placed = vis > 0
    assert placed.sum() >= 12
    np.testing.assert_array_less(np.linalg.norm(decoded[0] - xy, axis=-1)[placed], 0.5)
    assert (peaks[0, placed] > 0.5).all()


def test_flip_swaps_left_and_right_channels() -> None:
    hm = torch.zeros(1, NUM_KEYPOINTS, 96, 72)
    hm[0, 5, 40, 10] = 1.0  # left shoulder
    hm[0, 0, 20, 30] = 1.0  # nose (no partner)
    out = augment_heatmaps(hm, sample_geometry(_sample(_kps())), Augmentation(flip=True))
    assert out[0, 6, 40, 71 - 10] == 1.0 and out[0, 6].sum() == 1.0 and not out[0, 5].any()
    assert out[0, 0, 20, 71 - 30] == 1.0
    kps = _kps()
    geom = sample_geometry(_sample(kps))
    xy, _ = target_keypoints(kps, geom)
    flipped, _ = target_keypoints(kps, geom, Augmentation(flip=True))
    for a, b in FLIP_PAIRS[1:]:
        np.testing.assert_allclose(flipped[b], [71 - xy[a, 0], xy[a, 1]])


def test_augmentation_draws_stay_in_range() -> None:
    draws = [draw_augmentation(np.random.default_rng([0, i])) for i in range(400)]
    scales = np.array([d.scale for d in draws])
    rots = np.array([d.rotation for d in draws])
    assert scales.min() >= 0.75 and scales.max() <= 1.25 and scales.std() > 0.15
    assert np.abs(rots).max() <= 45 and 0.5 < (rots != 0).mean() < 0.7  # rotation with p = 0.6
    assert 0.4 < np.mean([d.flip for d in draws]) < 0.6


def test_cached_and_backbone_in_the_loop_batches_agree(synth) -> None:
    videos, readers = synth
    samples = build_samples(videos)[:4]
    sim = SimulatedBackbone(videos, config=EXACT)
    cache = BackboneHeatmapCache(sim, readers)
    cache.prefetch(samples)
    augs = [NO_AUGMENTATION, *AUGS[1:]]
    cached = make_batch(samples, augs, cache=cache)
    loop = make_batch(samples, augs, backbone=sim, readers=readers)
    torch.testing.assert_close(cached.target, loop.target)
    torch.testing.assert_close(cached.weight, loop.weight)
    for name in ("current", "previous", "next"):
        a, pa = decode(getattr(cached, name))
        b, pb = decode(getattr(loop, name))
        both = (pa > 0.3) & (pb > 0.3)
        assert both.mean() > 0.7
        assert np.median(np.linalg.norm(a - b, axis=-1)[both]) <= 0.5
    # Without augmentation the cached heatmaps are the backbone's output itself.
    torch.testing.assert_close(cached.current[0], loop.current[0], atol=1e-3, rtol=0)


def test_cache_computes_once_per_key_and_reads_back_from_disk(synth, tmp_path: Path) -> None:
    videos, readers = synth
    samples = build_samples(videos)[:3]
    counting = CountingBackbone(SimulatedBackbone(videos))
    cache = BackboneHeatmapCache(counting, readers, directory=tmp_path, batch_size=4)
    seen: list[tuple[int, int]] = []
    n = cache.prefetch(samples, progress=lambda done, total: seen.append((done, total)))
    expected = len({cache.key(s.video, f, s.box) for s in samples for f in (s.frame, s.prev, s.next)})
    assert n == expected and cache.computed == expected and seen[-1] == (expected, expected)
    assert cache.prefetch(samples) == 0
    calls = counting.counter[0]
    again = BackboneHeatmapCache(counting, readers, directory=tmp_path)
    assert again.prefetch(samples) == 0 and counting.counter[0] == calls
    assert again.triplet(samples[0]).dtype == torch.float32
    other = CountingBackbone(SimulatedBackbone(videos, seed=1))  # another version: other keys
    assert BackboneHeatmapCache(other, readers, directory=tmp_path).prefetch(samples) == expected
    with pytest.raises(KeyError, match="prefetch"):
        BackboneHeatmapCache(counting, readers).triplet(samples[0])


def test_a_backbone_whose_passes_changed_never_reads_the_old_passes_entries(synth, tmp_path: Path) -> None:
    """A backbone of the same weights whose passes changed (MoveNet's `passes`: turned passes for lying people
    since 2026-12-06) computes its own entries in a kept cache directory; each kind keeps reading its own."""
    videos, readers = synth
    samples = build_samples(videos)[:2]

    def backbone(passes: str) -> SimulatedBackbone:
        simulated = SimulatedBackbone(videos)
        simulated.passes = passes  # type: ignore[attr-defined]
        return simulated

    old = BackboneHeatmapCache(backbone("flip"), readers, directory=tmp_path)
    n = old.prefetch(samples)
    new = BackboneHeatmapCache(backbone("flip+turn1"), readers, directory=tmp_path)
    assert n > 0 and new.key("v", 0, samples[0].box) != old.key("v", 0, samples[0].box)
    assert new.prefetch(samples) == n
    assert BackboneHeatmapCache(backbone("flip"), readers, directory=tmp_path).prefetch(samples) == 0
    assert BackboneHeatmapCache(backbone("flip+turn1"), readers, directory=tmp_path).prefetch(samples) == 0


# ------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def trained(synth):
    """One short run: DCPose with a stand-in backbone, 2 samples (B=2), 3 epochs, 1 held-out sample.

    Small crops (72x96, heatmaps 18x24) keep it fast: the head is fully convolutional.
    """
    videos, readers = synth
    samples = build_samples(videos)
    counting = CountingBackbone(SimulatedBackbone(videos, seed=0))
    torch.manual_seed(0)
    head = DCPose(TinyBackbone())
    before = {k: v.clone() for k, v in head.state_dict().items()}
    calls_at_step: list[tuple[int, int]] = []
    config = TrainConfig(epochs=3, batch_size=2, augment=False, **SMALL)
    result = train_head(head, counting, readers, samples[:2], config=config, holdout=samples[-1:],
                        progress=lambda epoch, step, loss: calls_at_step.append((epoch, counting.counter[0])))
    return head, before, result, calls_at_step, counting


def test_batchnorm_statistics_are_re_estimated_after_training(trained, synth) -> None:
    head, _, _, _, counting = trained
    head = copy.deepcopy(head)  # a train-mode forward updates the running statistics
    videos, readers = synth
    samples = build_samples(videos)[:2]  # the training samples, all used for the statistics
    batch = make_batch(samples, None, backbone=counting.inner, readers=readers, crop=CropSize(**SMALL))
    args = (batch.current, batch.previous, batch.next, batch.margin)
    with torch.no_grad():
        head.eval()
        running = head.refine(*args)
        head.train()
        batch_stats = head.refine(*args)
        head.eval()
    scale = batch_stats.abs().max()
    assert scale > 0
    torch.testing.assert_close(running, batch_stats, atol=0.02 * float(scale), rtol=0)


def test_training_lowers_the_loss_on_a_fixed_batch(trained) -> None:
    _, _, result, _, _ = trained
    assert len(result.epoch_losses) == 3 and result.steps == 3
    assert result.epoch_losses[2] < result.epoch_losses[1] < result.epoch_losses[0]
    assert len(result.holdout_losses) == 3 and result.initial_holdout_loss is not None
    assert result.best_epoch == int(np.argmin(result.holdout_losses))
    assert result.holdout_loss == min(result.holdout_losses)
    assert all(t > 0 for t in result.epoch_times)


def test_backbone_is_not_called_again_after_the_cache_is_filled(trained) -> None:
    _, _, result, calls_at_step, counting = trained
    assert {epoch for epoch, _ in calls_at_step} == {0, 1, 2}
    assert {calls for _, calls in calls_at_step} == {counting.counter[0]}  # no call during any epoch
    assert result.backbone_calls == counting.counter[0] > 0


def test_only_head_parameters_change_and_the_best_state_is_loaded(trained) -> None:
    head, before, result, _, _ = trained
    after = head.state_dict()
    for key, value in after.items():
        if key.startswith("rough_pose_estimation_net."):
            assert torch.equal(value, before[key]), f"backbone tensor {key} changed"
    head_params = [n for n, p in head.named_parameters() if not n.startswith("rough_pose_estimation_net.")]
    changed = [n for n in head_params if not torch.equal(head.state_dict()[_flat(n)], before[_flat(n)])]
    assert changed == head_params, f"unchanged head parameters: {sorted(set(head_params) - set(changed))[:5]}"
    assert all(not p.requires_grad for p in head.backbone.parameters())
    for key, value in result.best_state_dict.items():
        torch.testing.assert_close(after[key].cpu(), value)
    assert not head.training


def _flat(name: str) -> str:
    """named_parameters() name -> state_dict() key (the PCN keys are flat in state dicts)."""
    return name.removeprefix("pose_correction.")


def test_backbone_in_the_loop_and_should_stop(synth) -> None:
    videos, readers = synth
    samples = build_samples(videos)[:2]
    counting = CountingBackbone(SimulatedBackbone(videos))
    steps: list[int] = []
    config = TrainConfig(epochs=3, batch_size=2, use_cache=False, bn_samples=0, **SMALL)
    result = train_head(build_dcpose(backbone=None), counting, readers, samples, config=config,
                        progress=lambda e, s, loss: steps.append(e), should_stop=lambda: len(steps) >= 1)
    # 2 samples, B=2: epoch 0 is one step; the stop request comes before epoch 1's step.
    assert result.stopped and result.steps == 1 and len(result.epoch_losses) == 1 and result.best_epoch == 0
    assert counting.counter[0] == 1 == result.backbone_calls  # the backbone ran for that step's batch
    with pytest.raises(ValueError, match="at least one training sample"):
        train_head(build_dcpose(backbone=None), counting, readers, [], config=config)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="same aspect"):
        TrainConfig(input_size=(72, 96), heatmap_size=(24, 24))


class NaNBackbone(CountingBackbone):
    """A backbone whose heatmaps of one joint are NaN (a half-precision overflow, broken weights)."""

    def for_video(self, name: str) -> NaNBackbone:
        return NaNBackbone(self.inner.for_video(name), self.counter)

    def heatmaps(self, crops, geoms, frame_indices):
        out = super().heatmaps(crops, geoms, frame_indices)
        out[:, 3] = float("nan")
        return out


def test_a_loss_that_becomes_nan_fails_the_run(synth) -> None:
    """Before: NaN never beat the best score, so the run ended as if trained (best_epoch -1), holding its
    initial weights, which the CLI and the service then saved as a trained head."""
    videos, readers = synth
    samples = build_samples(videos)
    config = TrainConfig(epochs=2, batch_size=2, augment=False, bn_samples=0, **SMALL)
    with pytest.raises(ValueError, match=r"training diverged: the loss of epoch 1 is nan \(lr 0.0001\)"):
        train_head(build_dcpose(backbone=None), NaNBackbone(SimulatedBackbone(videos)), readers, samples[:2],
                   holdout=samples[-1:], config=config)  # fmt: skip


def test_amp_is_turned_off_where_bfloat16_is_not_native(synth, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    import model.nets.runtime as runtime

    videos, readers = synth
    samples = build_samples(videos)[:2]
    config = TrainConfig(epochs=1, batch_size=2, use_cache=False, bn_samples=0, amp=True, **SMALL)

    def autocast_seen(native: bool) -> list[bool]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)  # the CPU's answer
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert runtime.native_bf16("cpu") is native
        head, seen = build_dcpose(backbone=None), []
        head.register_forward_pre_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
        result = train_head(head, SimulatedBackbone(videos), readers, samples, config=config)
        assert result.steps == 1
        return seen

    with caplog.at_level("WARNING", logger="model.training.loop"):
        assert not any(autocast_seen(native=False))  # an AVX2-only CPU: emulated bfloat16, so float32
    assert "no native bfloat16" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="model.training.loop"):
        assert all(autocast_seen(native=True))  # AVX512-BF16: amp as asked
    assert "no native bfloat16" not in caplog.text


# --------------------------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_writes_a_checkpoint_that_inference_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from annotation_io import posetrack
    from annotation_io.synth import generate
    from model.cli.main import main
    from model.pipeline.predictor import load_head
    from model.training.curve import curve_path

    generate(tmp_path / "syn", videos=1, frames=6, people=1, seed=2, label_every=3, size=(160, 120))
    gt = {v.name: v for v in posetrack.load_dir(tmp_path / "syn" / "annotations").values()}
    out = tmp_path / "head.pt"
    status = main([
        "train", "--videos", str(tmp_path / "syn"), "--labels", str(tmp_path / "syn" / "sparse"),
        "--epochs", "1", "--batch-size", "2", "--holdout", "0", "--out", str(out), "--version", "test-v1",
    ], backbone_factory=lambda args: SimulatedBackbone(gt, seed=args.seed))  # fmt: skip
    assert status == 0 and out.is_file() and curve_path(out).is_file()
    bars = capsys.readouterr().err  # the heatmap cache fills with its own bar before the steps' bar moves
    assert re.search(r"backbone heatmaps: 100%\|[^\n]*\| (\d+)/\1 ", bars), bars
    assert bars.index("backbone heatmaps") < bars.index("train head")
    head, version = load_head(out, "simulated")
    assert version == "test-v1" and isinstance(head, DCPose)
    assert main(["train", "--videos", str(tmp_path), "--labels", str(tmp_path / "none"), "--out", str(out)]) == 2


# --------------------------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    videos, readers = {}, {}
    scene = make_scene(np.random.default_rng([5, 0]), frames=4, people=1, size=(160, 120))
    images, frames = [], []
    for t, (image, persons) in enumerate(render_video(scene)):
        images.append(image)
        frames.append(Frame(t, persons, is_labeled=True))
    videos["v"] = Video("v", 4, frames)
    readers["v"] = ListReader(images)
    samples = build_samples(videos)[:4]
    torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
    head = build_dcpose(backbone=None)
    result = train_head(head, SimulatedBackbone(videos), readers, samples,
                        config=TrainConfig(epochs=1, batch_size=1, augment=True, **SMALL))
    torch.save({"state": result.best_state_dict, "losses": result.epoch_losses, "steps": result.steps},
               os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.slow
def test_ddp_two_cpu_processes_end_with_identical_weights(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == 2  # 4 samples, 2 ranks, batch 1 per rank
    assert r0["losses"] == r1["losses"]  # averaged across ranks
    for key in r0["state"]:
        torch.testing.assert_close(r0["state"][key], r1["state"][key], rtol=0, atol=0, msg=key)
    torch.manual_seed(0)
    initial = build_dcpose(backbone=None).state_dict()  # rank 0's start, which DDP broadcast
    assert any(not torch.equal(r0["state"][k], initial[k]) for k in initial)  # it trained


def test_neighbour_labels_are_fed_as_label_heatmaps(synth) -> None:
    videos, readers = synth
    samples = [s for s in build_samples(videos) if s.prev_keypoints is not None and s.next_keypoints is not None]
    assert samples, "fully labelled synthetic videos give samples with labelled neighbours"
    s = samples[0]
    sim = SimulatedBackbone(videos, config=EXACT)
    plain = make_batch([s], [NO_AUGMENTATION], backbone=sim, readers=readers)
    fed = make_batch([s], [AUGS[1]], backbone=sim, readers=readers, label_sides=[(True, False)])
    # The previous neighbour is now the human label (peak 1 at its joints, in the augmented crop) ...
    xy, vis = target_keypoints(s.prev_keypoints, sample_geometry(s, DEFAULT_CROP), AUGS[1])
    peaks_xy, peaks = decode(fed.previous)
    placed = vis > 0
    assert placed.sum() >= 10 and np.all(peaks[0, placed] > 0.95)  # a Gaussian of peak 1, sampled off-centre
    assert np.abs(peaks_xy[0, placed] - xy[placed]).max() <= 1.0
    # ... while the next neighbour and the current frame stay the backbone's (same as without labels,
    # up to the augmentation), and a sample without that neighbour's label is left alone.
    same = make_batch([s], [AUGS[1]], backbone=sim, readers=readers)
    torch.testing.assert_close(fed.next, same.next)
    torch.testing.assert_close(fed.current, same.current)
    assert not torch.equal(plain.previous, fed.previous)
    bare = TrainSample(s.video, s.frame, s.prev, s.next, s.margin, s.box, s.keypoints, s.track_id)
    torch.testing.assert_close(make_batch([bare], [AUGS[1]], backbone=sim, readers=readers,
                                          label_sides=[(True, True)]).previous, same.previous)
