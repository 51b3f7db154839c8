"""Tests of model.backbones.base and model.pipeline.predictor on synthetic videos with a ground-truth stub backbone."""

from __future__ import annotations

import itertools
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from annotation_io.posetrack import load
from annotation_io.synth import generate, sparsify
from annotation_io.types import Box, Frame, Person, Video
from annotation_io.video import open_video
from model.backbones.factory import build_backbone
from model.backbones.hrnet import HRNetBackbone
from model.checkpoint import CheckpointMismatchError, save_checkpoint
from model.heatmaps import decode_to_frame, render_gaussians
from model.nets.dcpose import build_dcpose
from model.nets.hrnet import HRNet
from model.pipeline.config import InferConfig
from model.pipeline.predictor import Predictor
from model.transforms import crop_geometry, frame_to_heatmap

SIZE = (160, 120)
OFFSET = np.array([3.0, -2.0])  # the stub backbone's systematic error, frame pixels


class GTBackbone:
    """Backbone stub: Gaussians at the ground-truth joints (+ OFFSET) of the person the crop shows.

    The person is the one whose box best matches the crop in centre and size. Every crop is logged
    as (frame, track id) so tests can count backbone passes.
    """

    name = "gt"
    version = "gt"
    sigma = 2.0

    def __init__(self, gt: Video) -> None:
        self.gt = gt
        self.calls: list[tuple[int, int]] = []

    def heatmaps(self, crops: np.ndarray, geoms: list, frames: list[int]) -> torch.Tensor:
        assert crops.shape == (len(geoms), 384, 288, 3) and crops.dtype == np.uint8
        xy, weight = np.zeros((len(geoms), 17, 2)), np.zeros((len(geoms), 17))
        for i, (g, f) in enumerate(zip(geoms, frames)):
            person = min(self.gt.frame(f).persons, key=lambda p, g=g: _mismatch(p, g))
            self.calls.append((f, person.track_id))
            xy[i] = frame_to_heatmap(person.xy + OFFSET, g)
            weight[i] = person.present
        return render_gaussians(torch.from_numpy(xy).float(), torch.from_numpy(weight).float(),
                                size=(96, 72), sigma=self.sigma)


def _mismatch(person: Person, geom) -> float:
    """How badly a person's box fits a crop: centre distance and log size ratio, in person heights."""
    height = geom.scale[1] * geom.pixel_std / 1.25
    fixed_h = max(person.box.h, person.box.w / 0.75)
    return float(np.hypot(*(np.array(person.box.center) - geom.center)) / height
                 + abs(np.log(fixed_h / height)))


class SpyHead(nn.Module):
    """Head stub: returns a fixed mix of its inputs and records every call."""

    def __init__(self, weights: tuple[float, float, float] = (0.5, 0.25, 0.25)) -> None:
        super().__init__()
        self.weights = weights
        self.calls: list[tuple[torch.Tensor, ...]] = []

    def refine(self, hc: torch.Tensor, hp: torch.Tensor, hn: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
        self.calls.append((hc.clone(), hp.clone(), hn.clone(), margin.clone()))
        a, b, c = self.weights
        return a * hc + b * hp + c * hn

    def inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.cat(parts) for parts in zip(*self.calls))


def _make(root: Path, people: int, frames: int, seed: int) -> tuple[Video, Path]:
    (path,) = generate(root, videos=1, frames=frames, people=people, seed=seed, size=SIZE)
    return load(path), root / "images" / "000001"


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Video, Path]:
    """8 frames, two walkers (apart on frames 0-3, close later)."""
    return _make(tmp_path_factory.mktemp("two"), people=2, frames=8, seed=5)


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> tuple[Video, Path]:
    """12 frames, one walker."""
    return _make(tmp_path_factory.mktemp("one"), people=1, frames=12, seed=1)


def _predict(data: tuple[Video, Path], known: Video | None, head: nn.Module | None = None,
             backbone: GTBackbone | None = None, **config) -> tuple[Video, GTBackbone, Predictor]:
    gt, images = data
    bb = backbone or GTBackbone(gt)
    frames = config.pop("frames", None)
    config.setdefault("propagate", False)  # propagation has its own tests (test_propagation.py)
    pred = Predictor(bb, head, config=InferConfig(**config))
    with open_video(images) as reader:
        out = pred.predict_video(gt, known, frames=frames, reader=reader)
    return out, bb, pred


def _stand_ins(gt: Video) -> int:
    """Neighbour crops a track needs on frames where it is absent (cropped with the current box)."""
    count = 0
    for f in gt.frames:
        for p in f.persons:
            for n in {max(f.index - 1, 0), min(f.index + 1, gt.num_frames - 1)} - {f.index}:
                count += gt.frame(n).person_by_track(p.track_id) is None
    return count


def test_cached_mode_runs_each_person_frame_once_exact_mode_three_crops(two) -> None:
    gt, _ = two
    person_frames = [(f.index, p.track_id) for f in gt.frames for p in f.persons]
    assert _stand_ins(gt) == 0  # both walkers stay in view: every neighbour has its own box
    _, bb, _ = _predict(two, gt, SpyHead(), label_aware=False, mode="cached")
    assert sorted(bb.calls) == sorted(person_frames)  # each (frame, track) exactly once
    # Track 1 unlabelled on frame 3: frames 2 and 4 crop frame 3 with their own box of track 1.
    gap = replace(gt, frames=[replace(f, persons=[p for p in f.persons if (f.index, p.track_id) != (3, 1)])
                              for f in gt.frames])
    _, bb, _ = _predict(two, gap, SpyHead(), label_aware=False, mode="cached")
    assert _stand_ins(gap) == 2 and len(bb.calls) == len(person_frames) - 1 + 2
    assert bb.calls.count((3, 1)) == 2
    _, bb, _ = _predict(two, gt, SpyHead(), label_aware=False, mode="exact")
    # t-1, t, t+1 with t's box; at the two ends the current crop stands in for the missing neighbour.
    expected = sum(len({max(t - 1, 0), t, min(t + 1, gt.num_frames - 1)}) for t, _ in person_frames)
    assert len(bb.calls) == expected and expected > 2.5 * len(person_frames)


def test_cached_and_exact_agree(two) -> None:
    gt, _ = two
    known = sparsify(gt, 4)
    outs, heads = {}, {}
    for mode in ("cached", "exact"):
        heads[mode] = SpyHead()
        outs[mode], _, _ = _predict(two, known, heads[mode], label_aware=False, mode=mode)
    for a, b in zip(heads["cached"].inputs()[:3], heads["exact"].inputs()[:3]):
        assert (a - b).abs().max() < 0.1  # resampled Gaussians vs Gaussians rendered in place
    dist = [np.linalg.norm(p.xy - q.xy, axis=1)[p.present].mean()
            for fa, fb in zip(outs["cached"].frames, outs["exact"].frames)
            for p, q in zip(fa.persons, fb.persons)]
    assert len(dist) == 16 and np.mean(dist) < 0.5 and np.max(dist) < 1.5


def test_neighbours_margins_and_stand_in(two) -> None:
    gt, _ = two
    head = SpyHead()
    _predict(two, gt, head, label_aware=False, frames=[0, 3], distance=3)
    hc, hp, hn, margin = head.inputs()
    # Frame 0: no previous frame, the current one stands in (margin 1); next is frame 3 (margin 3).
    assert torch.equal(hp[:2], hc[:2]) and margin[:2].tolist() == [[1.0, 3.0]] * 2
    # Frame 3 with d=3: previous frame 0, next frame 6.
    assert margin[2:].tolist() == [[3.0, 3.0]] * 2 and not torch.equal(hn[2:], hc[2:])


def _rendered(person: Person, geom, sigma: float = 2.0) -> torch.Tensor:
    xy = torch.from_numpy(frame_to_heatmap(person.xy, geom)).float()[None]
    w = torch.from_numpy(person.present.astype(np.float32))[None]
    return render_gaussians(xy, w, size=(96, 72), sigma=sigma)[0]


def test_label_aware_feeds_human_pose_of_labelled_neighbour(two) -> None:
    gt, _ = two
    known = sparsify(gt, 4)  # labelled frames 0 and 4
    head = SpyHead()
    out, bb, _ = _predict(two, known, head, frames=[1, 3])
    _, hp, hn, _ = head.inputs()
    for i, (frame, side, labelled) in enumerate([(1, hp, 0), (1, hp, 0), (3, hn, 4), (3, hn, 4)]):
        person = out.frame(frame).persons[i % 2]
        human = gt.frame(labelled).person_by_track(person.track_id)
        geom = crop_geometry(person.box)
        assert torch.allclose(side[i], _rendered(human, geom), atol=1e-5)
    # Without label awareness the neighbour is the (biased) backbone heatmap instead.
    head_off = SpyHead()
    _predict(two, known, head_off, frames=[1], label_aware=False)
    assert (head_off.inputs()[1] - hp[:2]).abs().max() > 0.5
    # Complete labelled neighbours need no backbone pass: only frames 1, 2 (next of 1) and 3 ran.
    assert sorted({f for f, _ in bb.calls}) == [1, 2, 3]


def test_labelled_frames_are_returned_and_partial_poses_overwrite(two) -> None:
    gt, _ = two
    known = sparsify(gt, 4)
    partial = gt.frame(2).persons[0].copy()
    partial.keypoints[5:, 2] = 0  # only the head joints and ears placed
    known.frames[2] = replace(known.frames[2], persons=[partial], is_labeled=False)
    head = SpyHead()
    out, _, _ = _predict(two, known, head, frames=[0, 1, 2])
    for p in out.frame(0).persons:
        human = gt.frame(0).person_by_track(p.track_id)
        assert p.extra["source"] == "human" and np.array_equal(p.xy[human.present], human.xy[human.present])
        assert np.array_equal(p.scores, human.present.astype(float)) and p.score == 1.0
    p2 = out.frame(2).person_by_track(partial.track_id)
    placed = partial.present
    assert p2.extra["source"] == "model+human" and np.array_equal(p2.xy[placed], partial.xy[placed])
    assert np.all(p2.scores[placed] == 1.0) and np.all(p2.scores[~placed] < 1.0)
    # As frame 1's next neighbour the partial pose replaces only its own joints' channels.
    item = [p.track_id for p in out.frame(1).persons].index(partial.track_id)
    hn = head.inputs()[2][item]
    geom = crop_geometry(out.frame(1).persons[item].box)
    assert torch.allclose(hn[placed], _rendered(partial, geom)[placed], atol=1e-5)
    assert (hn[~placed].amax(dim=(1, 2)) > 0.9).sum() == (~placed & gt.frame(2).persons[0].present).sum()


def test_cold_start_decodes_backbone_heatmaps(two) -> None:
    gt, _ = two
    known = sparsify(gt, 4)
    out, bb, pred = _predict(two, known, None, frames=[1, 2])
    assert pred.version == "gt-base"
    assert sorted(bb.calls) == [(1, 0), (1, 1), (2, 0), (2, 1)]  # no neighbour passes
    for frame in out.frames:
        for p in frame.persons:
            geom = crop_geometry(p.box)
            ref = GTBackbone(gt).heatmaps(np.zeros((1, 384, 288, 3), np.uint8), [geom], [frame.index])
            xy, maxvals = decode_to_frame(ref, [geom])
            assert np.allclose(p.xy[p.present], xy[0][p.present], atol=1e-9)
            assert np.allclose(p.scores, np.clip(maxvals[0], 0, 1))
            assert np.array_equal(p.present, maxvals[0] > 0)
            # The stub's bias shows: the output is the backbone's, not the truth.
            truth = gt.frame(frame.index).person_by_track(p.track_id)
            assert np.allclose((p.xy - truth.xy)[p.present].mean(axis=0), OFFSET, atol=0.6)


@pytest.mark.parametrize("mode", ["cached", "exact"])
def test_predict_frame_equals_predict_video(two, mode: str) -> None:
    gt, images = two
    known = sparsify(gt, 4)
    video, _, pred = _predict(two, known, SpyHead(), mode=mode, temporal_median=False)
    with open_video(images) as reader:
        single = pred.predict_frame(gt, 2, known, reader=reader)
        smoothed = Predictor(GTBackbone(gt), SpyHead(), config=replace(pred.config, temporal_median=True))
        alone = smoothed.predict_frame(gt, 2, known, reader=reader)
    full = video.frame(2)
    assert [p.track_id for p in single.persons] == [p.track_id for p in full.persons] == [0, 1]
    for a, b, c in zip(single.persons, full.persons, alone.persons, strict=True):
        assert np.allclose(a.keypoints, b.keypoints) and np.allclose(a.scores, b.scores) and a.box == b.box
        assert np.array_equal(a.keypoints, c.keypoints)  # one frame: no neighbours, no median


def test_track_ids_follow_known_labels_and_metadata_is_kept(two) -> None:
    gt, _ = two
    known = sparsify(gt, 4)
    out, _, _ = _predict(two, known, SpyHead(), frames=range(4))
    for frame in out.frames:
        src = gt.frame(frame.index)
        assert (frame.file_name, frame.image_id) == (src.file_name, src.image_id)
        assert [p.track_id for p in frame.persons] == [0, 1]
        for p in frame.persons:
            err = {q.track_id: np.linalg.norm(p.xy - q.xy, axis=1)[q.present].mean() for q in src.persons}
            assert err[p.track_id] < 6 and err[p.track_id] < min(err.values()) + 1e-9
            assert p.is_prediction and 0.0 < p.score <= 1.0 and np.all((p.scores >= 0) & (p.scores <= 1))


def test_carried_box_follows_the_walker(one) -> None:
    gt, _ = one
    known = replace(gt, frames=[gt.frames[0]])  # one label, on frame 0
    out, bb, _ = _predict(one, known, SpyHead())
    assert sorted(bb.calls) == [(f, 0) for f in range(1, 12)]  # one pass per carried frame
    last, truth = out.frames[-1].persons[0], gt.frames[-1].persons[0]
    assert last.extra["box_source"] == "carried"
    assert last.box.iou(truth.box) > 0.6 > gt.frames[0].persons[0].box.iou(truth.box)
    assert np.linalg.norm(last.xy - truth.xy, axis=1)[truth.present].mean() < 8


def test_detector_finds_people_when_nothing_is_known(two) -> None:
    gt, images = two
    with open_video(images) as reader:
        by_image = {reader.read(f.index).tobytes(): f for f in gt.frames}

    def detector(image: np.ndarray) -> list[Box]:
        return [p.box for p in by_image[image.tobytes()].persons][::-1]

    pred = Predictor(GTBackbone(gt), SpyHead(), detector=detector)
    with open_video(images) as reader:
        out = pred.predict_video(gt, None, frames=range(4), reader=reader)
        nothing = Predictor(GTBackbone(gt), None, config=InferConfig(detect=False)).predict_video(
            gt, None, frames=[0], reader=reader)
    ids = {}
    for frame in out.frames:
        assert len(frame.persons) == 2 and {p.extra["box_source"] for p in frame.persons} == {"detected"}
        for p in frame.persons:
            gt_id = min(gt.frame(frame.index).persons, key=lambda q: np.abs(q.xy - p.xy).mean()).track_id
            assert ids.setdefault(p.track_id, gt_id) == gt_id  # ids stay with their person
    assert nothing.frames[0].persons == []


def test_bad_requests_raise(two) -> None:
    gt, images = two
    pred = Predictor(GTBackbone(gt), None)
    with open_video(images) as reader:
        with pytest.raises(ValueError, match="frame 8 is outside video"):
            pred.predict_video(gt, gt, frames=[8], reader=reader)
        with pytest.raises(ValueError, match="frame -1 is outside"):
            pred.predict_frame(gt, -1, reader=reader)
    with pytest.raises(ValueError, match="no source; pass reader="):
        pred.predict_video(replace(gt, source=None), gt)
    with pytest.raises(ValueError, match="mode must be"):
        InferConfig(mode="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distance"):
        InferConfig(distance=0)


def test_progress_reports_every_frame(two) -> None:
    gt, images = two
    seen: list[tuple[int, int]] = []
    with open_video(images) as reader:
        Predictor(GTBackbone(gt), None, config=InferConfig(batch_size=3)).predict_video(
            gt, gt, reader=reader, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (8, 8) and len(seen) > 1 and all(a[0] < b[0] for a, b in itertools.pairwise(seen))


def _tiny_hrnet(seed: int = 0) -> HRNet:
    torch.manual_seed(seed)
    return HRNet(width=4, stem_width=8, layer1_blocks=1)


def test_hrnet_backbone_batches_on_cpu() -> None:
    crops = np.random.default_rng(0).integers(0, 256, (3, 384, 288, 3), dtype=np.uint8)
    bb = HRNetBackbone(_tiny_hrnet(), "cpu", batch_size=2)
    out = bb.heatmaps(crops, [], [])
    assert out.shape == (3, 17, 96, 72) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.allclose(out[2:], bb.heatmaps(crops[2:]), atol=1e-5)  # batching changes nothing
    assert not torch.allclose(out[0], out[1])
    assert bb.name == "hrnet_w4" and bb.version == "hrnet_w4:random"
    with pytest.raises(ValueError, match="crops_bgr must be an"):
        bb.heatmaps(crops[:, :100])


def test_build_backbone_checks_names_and_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet'"):
        build_backbone("resnet")
    with pytest.raises(ValueError, match="its only checkpoint is a second BlazePose landmark model"):
        build_backbone("blazepose", tmp_path / "x.pt")
    with pytest.raises(ValueError, match=r"x\.tflite: no such file"):
        build_backbone("blazepose", tmp_path / "x.tflite")
    with pytest.raises(ValueError, match="needs weights"):
        build_backbone("hrnet_w48")
    assert build_backbone("blazepose").name == "blazepose"  # lazy: no mediapipe graph yet
    path = tmp_path / "hrnet_w4.pt"
    torch.save(HRNet(width=4).state_dict(), path)
    bb = build_backbone("hrnet_w4", path)
    assert bb.version.startswith("hrnet_w4:") and len(bb.version) == len("hrnet_w4:") + 8
    with pytest.raises(CheckpointMismatchError, match=str(path).replace("\\", "\\\\")):
        build_backbone("hrnet_w8", path)


def _trained_like(module: nn.Module) -> nn.Module:
    """Conv weights at a variance-preserving scale: DCPose's init (std 0.001) leaves activations in
    float32 denormals, which are very slow on CPU and unlike a trained head."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 4:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
    return module


def test_create_loads_a_trained_head_and_never_an_untrained_one(one, tmp_path: Path) -> None:
    gt, images = one
    head = _trained_like(build_dcpose(backbone=None, dilations=(3,)))  # one PCN branch: cheap on CPU
    config = {"backbone": "hrnet_w4", "dilations": [3]}
    ckpt = save_checkpoint(tmp_path / "head.pt", head, model_config=config, version="v7")
    backbone = HRNetBackbone(_tiny_hrnet())
    assert Predictor.create(backbone).version == "hrnet_w4:random-base"
    pred = Predictor.create(backbone, head=ckpt)
    assert pred.version == "hrnet_w4:random+head-v7" and not pred.head.training
    with pytest.raises(ValueError, match="trained on hrnet_w4 heatmaps but the backbone is gt"):
        Predictor.create(GTBackbone(gt), head=ckpt)
    hrnet_file = tmp_path / "hrnet.pt"
    torch.save(HRNet(width=4).state_dict(), hrnet_file)
    with pytest.raises(ValueError, match="not a DCPose head"):
        Predictor.create(backbone, head=hrnet_file)
    official = tmp_path / "PoseTrack17_DCPose.pth"  # official layout: backbone + head, one file
    torch.save({"state_dict": build_dcpose(backbone="hrnet_w4").state_dict(), "begin_epoch": 20}, official)
    both = Predictor.create("hrnet_w4", head=official)
    assert both.backbone.version.startswith("hrnet_w4:") and "+head-dcpose-official:" in both.version
    with pytest.raises(ValueError, match="trained on hrnet_w4 heatmaps but the backbone is gt"):
        Predictor.create(GTBackbone(gt), head=official)
    with open_video(images) as reader:  # the real network path end to end, on one frame
        frame = pred.predict_frame(gt, 1, sparsify(gt, 4), reader=reader)
    assert [p.extra["source"] for p in frame.persons] == ["model+propagated"]  # labels on frames 0 and 4
    assert all(np.all((p.scores >= 0) & (p.scores <= 1)) for p in frame.persons)


def test_importing_model_and_the_predictor_is_light() -> None:
    code = ("import sys, model, model.pipeline.config, model.backbones.names, model.cli.main; "
            "assert 'torch' not in sys.modules and 'mediapipe' not in sys.modules, 'torch or mediapipe'; "
            "from model.pipeline.predictor import Predictor; from model.nets.dcpose import DCPose, build_dcpose; "
            "from model.checkpoint import load_checkpoint, save_checkpoint; "
            "assert 'mediapipe' not in sys.modules; print(Predictor.__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "model.pipeline.predictor"


def test_frames_of_the_output_are_sorted_and_complete(two) -> None:
    gt, _ = two
    out, _, _ = _predict(two, gt, None, frames=[3, 1, 3])
    assert [f.index for f in out.frames] == [1, 3] and isinstance(out.frames[0], Frame)
    assert out.num_frames == gt.num_frames and out.name == gt.name


class _Frames:
    """Frame reader over in-memory images."""

    def __init__(self, images: list[np.ndarray]) -> None:
        self.images, self.num_frames = images, len(images)
        self.height, self.width = images[0].shape[:2]

    def read(self, index: int) -> np.ndarray:
        return self.images[index]


def test_default_blazepose_predictor_on_a_photograph() -> None:
    data = pytest.importorskip("skimage.data")
    image = np.ascontiguousarray(data.astronaut()[:, :, ::-1])  # RGB -> BGR
    video = Video("astronaut", 2)
    pred = Predictor.create()  # blazepose, no head: cold start, detector on
    try:
        out = pred.predict_video(video, None, reader=_Frames([image, image.copy()]))
    finally:
        pred.close()
    assert pred.version == "blazepose2-base"
    a, b = (f.persons[0] for f in out.frames)
    assert a.track_id == b.track_id and a.extra["box_source"] == "detected"
    assert a.scores[[0, 5, 6]].min() > 0.5  # nose and shoulders (the photograph ends at the waist)
    nose, shoulders = a.xy[0], a.xy[[5, 6]]
    assert nose[1] < shoulders[:, 1].min() and shoulders[:, 0].min() < nose[0] < shoulders[:, 0].max()
    assert np.allclose(a.keypoints, b.keypoints)  # same picture, same track, same pose


def test_label_aware_outputs_match_the_human_keypoints_of_a_labelled_neighbour(two) -> None:
    """End to end (render, crop geometry, head, decode, map back): next to a labelled frame, with a
    head that follows the previous frame, outputs land on the human keypoints up to the motion."""
    gt, _ = two
    known = sparsify(gt, 4)  # frame 0 labelled; frame 1 predicted
    follow_previous = SpyHead(weights=(0.0, 1.0, 0.0))
    out, _, _ = _predict(two, known, follow_previous, frames=[1])
    for person in out.frame(1).persons:
        human = gt.frame(0).person_by_track(person.track_id)
        now = gt.frame(1).person_by_track(person.track_id)
        joints = human.present & now.present & (person.keypoints[:, 2] > 0)
        motion = np.linalg.norm(now.xy - human.xy, axis=1)[joints]
        error = np.linalg.norm(person.xy - human.xy, axis=1)[joints]
        assert joints.sum() >= 10 and np.median(motion) < 4.0, "small motion between frames 0 and 1"
        assert np.median(error) < 1.0, f"label-aware output is off the human pose: {error}"
    # The same head without label awareness follows the biased backbone instead (OFFSET is 3.6 px).
    biased, _, _ = _predict(two, known, SpyHead(weights=(0.0, 1.0, 0.0)), frames=[1], label_aware=False)
    person = biased.frame(1).persons[0]
    human = gt.frame(0).person_by_track(person.track_id)
    assert np.median(np.linalg.norm(person.xy - human.xy, axis=1)[human.present]) > 2.0


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Video, Path]:
    """25 frames, one walker."""
    return _make(tmp_path_factory.mktemp("walk"), people=1, frames=25, seed=3)


@pytest.mark.parametrize(("every", "detected"), [(10, [0, 10, 20]), (1, list(range(25)))])
def test_detector_runs_every_n_frames_and_the_person_is_followed_between(walk, every, detected) -> None:
    gt, images = walk
    with open_video(images) as reader:
        by_image = {reader.read(f.index).tobytes(): f.index for f in gt.frames}
    calls: list[int] = []

    def detector(image: np.ndarray) -> list[Box]:
        calls.append(by_image[image.tobytes()])
        return [p.box for p in gt.frame(calls[-1]).persons]

    pred = Predictor(GTBackbone(gt), None, config=InferConfig(redetect_every=every, propagate=False),
                     detector=detector)
    with open_video(images) as reader:
        out = pred.predict_video(gt, None, reader=reader)
    assert calls == detected
    assert {p.track_id for f in out.frames for p in f.persons} == {0}  # one id throughout
    for frame in out.frames:
        (person,) = frame.persons
        truth = gt.frame(frame.index).persons[0]
        assert person.box.iou(truth.box) > 0.5
        assert np.linalg.norm(person.xy - truth.xy, axis=1)[truth.present].mean() < 8
