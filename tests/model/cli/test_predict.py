"""The prediction CLI (model.cli.predict) and the overlay renderer (model.cli.render) on tiny synthetic videos."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from annotation_io import posetrack
from annotation_io.evaluate import evaluate
from annotation_io.synth import generate
from annotation_io.types import Box, Person, Video
from annotation_io.video import open_video
from model.cli.main import main as model_main
from model.cli.predict import (
    EXIT_USAGE,
    PredictOptions,
    build_predictor,
    parse_frames,
    run_predict,
    select_frames,
)
from model.cli.render import confidence_colour, draw_frame, render_video, track_colour

FRAMES, PEOPLE, SIZE = 6, 2, (320, 240)
VID = "000001"


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 6-frame, 2-person 320x240 synthetic video: images/, annotations/ (full GT), sparse/ (every 3rd)."""
    root = tmp_path_factory.mktemp("synth")
    generate(root, videos=1, frames=FRAMES, people=PEOPLE, seed=4, label_every=3, size=SIZE)
    return root


@pytest.fixture(scope="module")
def mp4(synth: Path) -> Path:
    """The synthetic frames as an mp4v video file."""
    path = synth / "video.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, SIZE)
    for image in sorted((synth / "images" / "000001").glob("*.jpg")):
        writer.write(cv2.imread(str(image)))
    writer.release()
    return path


def _person(
    points: dict[int, tuple[float, float, float]], track_id: int | None = 1, box: Box | None = None
) -> Person:
    kps = np.zeros((17, 3))
    scores = np.zeros(17)
    for j, (x, y, s) in points.items():
        kps[j] = (x, y, 2)
        scores[j] = s
    return Person(keypoints=kps, scores=scores, track_id=track_id, box=box, score=0.9)


# ------------------------------------------------------------------------------------------ render


def test_confidence_colour_runs_red_to_green() -> None:
    assert confidence_colour(0.0) == (0, 0, 255)
    assert confidence_colour(1.0) == (0, 255, 0)
    assert confidence_colour(0.5) == (0, 255, 255)  # yellow half way
    assert confidence_colour(-3.0) == confidence_colour(0.0)
    assert confidence_colour(7.0) == confidence_colour(1.0)
    assert confidence_colour(float("nan")) == confidence_colour(0.0)
    greens = [confidence_colour(s)[1] for s in np.linspace(0, 1, 11)]
    reds = [confidence_colour(s)[2] for s in np.linspace(0, 1, 11)]
    assert greens == sorted(greens) and reds == sorted(reds, reverse=True)


def test_track_colours_differ_between_neighbouring_ids() -> None:
    colours = [track_colour(i) for i in range(6)]
    assert len(set(colours)) == 6
    assert track_colour(3) == track_colour(3)
    assert track_colour(None) != track_colour(0)


def test_draw_frame_colours_joints_and_limbs_by_confidence() -> None:
    image = np.full((200, 200, 3), 90, np.uint8)
    # left_shoulder (5) sure, left_elbow (7) sure, right_shoulder (6) unsure; limb 5-7 is in DRAW_LIMBS.
    person = _person({5: (50, 40, 1.0), 7: (50, 160, 1.0), 6: (150, 150, 0.0)}, box=Box(20, 20, 160, 170))
    out = draw_frame(image, [person])
    assert np.all(image == 90), "the input frame must be left unchanged"
    b, g, r = (int(v) for v in out[40, 50])
    assert g > 200 and r < 60, f"a confident joint is green, got {(b, g, r)}"
    b, g, r = (int(v) for v in out[150, 150])
    assert r > 200 and g < 60, f"an unsure joint is red, got {(b, g, r)}"
    b, g, r = (int(v) for v in out[100, 50])
    assert g > 200 and r < 60, "the limb between two confident joints is drawn green"
    assert np.all(out[100, 150] == 90), "no limb joins right_shoulder to anything placed"
    assert tuple(int(v) for v in out[120, 20]) == track_colour(1), "the box edge has the track colour"


def test_draw_frame_skips_absent_joints_and_draws_labels() -> None:
    image = np.zeros((120, 120, 3), np.uint8)
    kps = np.zeros((17, 3))
    kps[0] = (60, 60, 0)  # absent: not drawn
    kps[5] = (30, 30, 2)  # a visible human label: confidence 1 -> green
    label = Person(keypoints=kps, track_id=None)
    out = draw_frame(image, [label])
    assert np.all(out[60, 60] == 0)
    assert out[30, 30, 1] > 200 and out[30, 30, 2] < 60


def test_draw_frame_rejects_bad_images() -> None:
    with pytest.raises(ValueError, match="H, W, 3"):
        draw_frame(np.zeros((10, 10), np.uint8), [])
    with pytest.raises(ValueError, match="uint8"):
        draw_frame(np.zeros((10, 10, 3), np.float32), [])


def test_render_video_writes_every_frame_with_overlay(synth: Path, tmp_path: Path) -> None:
    gt = posetrack.load(synth / "annotations" / "000001.json")
    with open_video(synth / "images" / "000001") as reader:
        out = render_video(reader, gt, tmp_path / "sub" / "overlay.mp4", 25.0)
        original = reader.read(2)
    with open_video(out) as written:
        assert written.num_frames == FRAMES
        assert (written.width, written.height) == SIZE
        frame = written.read(2)
    # mp4v is lossy: compare the drawn joints' neighbourhoods, not exact pixels.
    joint = gt.frame(2).persons[0].keypoints[5, :2].round().astype(int)
    patch = (slice(joint[1] - 1, joint[1] + 2), slice(joint[0] - 1, joint[0] + 2))
    assert np.abs(frame[patch].astype(int) - original[patch].astype(int)).mean() > 20


def test_render_video_rejects_frames_outside_the_video(synth: Path, tmp_path: Path) -> None:
    gt = posetrack.load(synth / "annotations" / "000001.json")
    with open_video(synth / "images" / "000001") as reader:
        with pytest.raises(ValueError, match="outside the video"):
            render_video(reader, gt, tmp_path / "o.mp4", 25.0, frames=[0, FRAMES])
        with pytest.raises(ValueError, match="nothing to render"):
            render_video(reader, Video("empty", FRAMES), tmp_path / "o.mp4", 25.0)


# ----------------------------------------------------------------------------------- frame choice


def test_parse_and_select_frames() -> None:
    assert select_frames(parse_frames("1:4"), 6) == [1, 2, 3]
    assert select_frames(parse_frames("4:"), 6) == [4, 5]
    assert select_frames(parse_frames(":2"), 6) == [0, 1]
    assert select_frames(parse_frames("-2:"), 6) == [4, 5]
    assert select_frames(parse_frames("3"), 6) == [3]
    assert select_frames(None, 3) == [0, 1, 2]
    for text in ("x", "1:2:3", "", "a:b"):
        with pytest.raises(ValueError, match="--frames must look like"):
            parse_frames(text)
    with pytest.raises(ValueError, match="outside the video"):
        select_frames(parse_frames("2:9"), 6)
    with pytest.raises(ValueError, match="selects no frame"):
        select_frames(parse_frames("4:2"), 6)


# ------------------------------------------------------------------------------------------- CLI


def _paths(synth: Path) -> tuple[Path, Path]:
    """(full GT, labels on frames 0 and 3) of the synthetic video."""
    return synth / "annotations" / f"{VID}.json", synth / "sparse" / f"{VID}.json"


def main(argv: list[str], **seams: object) -> int:
    """`python -m model predict ARGV`."""
    return model_main(["predict", *argv], **seams)


def _sim(gt: Path):  # noqa: ANN202 (a PredictorFactory)
    """A predictor factory with the GT-derived test backbone (fast, deterministic, errs like a real one)."""
    from model.pipeline.config import InferConfig
    from model.pipeline.predictor import Predictor, load_head
    from model.testing.simulated import SimulatedBackbone

    def factory(options: PredictOptions) -> Predictor:
        net, version = load_head(options.head, "simulated") if options.head is not None else (None, None)
        config = InferConfig(mode=options.mode, label_aware=options.label_aware,  # type: ignore[arg-type]
                             redetect_every=options.redetect_every, denoise=options.denoise)
        return Predictor(SimulatedBackbone(posetrack.load(gt)), net, config=config, head_version=version)

    return factory


def test_json_input_gives_predictions_that_evaluate_scores(synth: Path, tmp_path: Path) -> None:
    gt_path, sparse = _paths(synth)
    out = tmp_path / "pred" / f"{VID}.json"
    assert main([str(sparse), "--out", str(out), "--no-progress"], predictor_factory=_sim(gt_path)) == 0
    gt, pred = posetrack.load(gt_path), posetrack.load(out)
    assert (pred.name, pred.num_frames) == (gt.name, gt.num_frames)
    raw_gt, raw_pred = json.loads(gt_path.read_text()), json.loads(out.read_text())
    ids = [(i["id"], i["file_name"]) for i in raw_gt["images"]]
    assert [(i["id"], i["file_name"]) for i in raw_pred["images"]] == ids
    for frame in pred.frames:
        assert {p.track_id for p in frame.persons} == {p.track_id for p in gt.frame(frame.index).persons}
        for person in frame.persons:
            assert person.scores is not None and person.scores.shape == (17,)
            assert 0.0 <= person.scores.min() and person.scores.max() <= 1.0
    # The labelled frames (0, 3) come back as the human labels.
    for index in (0, 3):
        for person in pred.frame(index).persons:
            truth = gt.frame(index).person_by_track(person.track_id)
            placed = truth.present
            np.testing.assert_allclose(person.xy[placed], truth.xy[placed], atol=1e-6)
    result = evaluate(gt, pred)
    assert 0.0 <= result.total <= 100.0
    assert result.total > 50.0, f"simulated backbone + labels should score well, got {result.total:.1f}"
    # The file is what the evaluation CLI reads too.
    from annotation_io.evaluate import main as evaluate_main

    assert evaluate_main([str(gt_path), str(out), "--json"]) == 0


def test_labels_matter_and_no_labels_ignores_them(synth: Path, tmp_path: Path) -> None:
    from model.pipeline.config import InferConfig
    from model.pipeline.predictor import Predictor
    from model.testing.simulated import SimulatedBackbone

    gt_path, sparse = _paths(synth)
    gt = posetrack.load(gt_path)
    with_labels = run_predict(sparse, tmp_path / "a.json", predictor_factory=_sim(gt_path))
    human = with_labels.frame(0).persons[0]
    assert human.extra.get("source") == "human" and np.all(human.scores[human.present] == 1.0)
    # Without labels the boxes come from the detector (here: GT boxes of frame 0 in reverse order).
    seen: list[tuple[int, int]] = []

    def detector(image: np.ndarray) -> list[Box]:
        seen.append(image.shape[:2])
        return [p.box for p in reversed(gt.frame(0).persons)]

    predictor = Predictor(SimulatedBackbone(gt), None, config=InferConfig(), detector=detector)
    without = run_predict(sparse, tmp_path / "b.json", use_labels=False, frames=[0],
                          predictor_factory=lambda _options: predictor)
    assert seen and seen[0] == (SIZE[1], SIZE[0])
    persons = without.frame(0).persons
    assert len(persons) == PEOPLE and all(p.extra.get("source") != "human" for p in persons)
    assert not np.allclose(persons[0].scores[persons[0].present], 1.0)


def test_frame_folder_input(synth: Path, tmp_path: Path) -> None:
    gt_path, sparse = _paths(synth)
    out = tmp_path / "pred.json"
    argv = [
        str(synth / "images" / VID),
        "--labels",
        str(sparse),
        "--out",
        str(out),
    ]
    assert main(argv, predictor_factory=_sim(gt_path)) == 0  # with the tqdm progress bar
    pred = posetrack.load(out)
    assert pred.name == VID and [f.index for f in pred.frames] == list(range(FRAMES))
    assert evaluate(posetrack.load(gt_path), pred).total > 50.0


def test_video_file_with_labels_and_render(synth: Path, mp4: Path, tmp_path: Path) -> None:
    gt_path, sparse = _paths(synth)
    out, overlay = tmp_path / "pred.json", tmp_path / "overlay.mp4"
    calls: list[tuple[int, int]] = []
    pred = run_predict(
        mp4,
        out,
        labels=sparse,
        predictor_factory=_sim(gt_path),
        render=overlay,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls and calls[-1] == (FRAMES, FRAMES)
    assert [f.index for f in pred.frames] == list(range(FRAMES))
    # Names and ids come from the labels file, so the GT scores the file directly.
    assert (
        pred.name == VID
        and posetrack.load(out).frame(2).image_id == posetrack.load(gt_path).frame(2).image_id
    )
    assert 0.0 <= evaluate(posetrack.load(gt_path), posetrack.load(out)).total <= 100.0
    with open_video(overlay) as video:
        assert video.num_frames == FRAMES and (video.width, video.height) == SIZE
        video.read(FRAMES - 1)


def test_an_overlay_name_without_a_video_suffix_is_refused_before_predicting(synth: Path, mp4: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """On main, `--render overlay` ran the whole prediction, then failed to open OpenCV's writer."""
    gt_path, sparse = _paths(synth)
    out = tmp_path / "pred.json"
    argv = [str(mp4), "--labels", str(sparse), "--out", str(out), "--render", str(tmp_path / "overlay"), "--no-progress"]
    assert main(argv, predictor_factory=_sim(gt_path)) == 2
    assert "give a video file name ending in .mp4" in capsys.readouterr().err
    assert not out.exists()  # refused before the slow part
    assert main([*argv[:-3], "--render", str(tmp_path / "overlay.MP4"), "--no-progress"],
                predictor_factory=_sim(gt_path)) == 0  # fmt: skip
    assert out.exists() and (tmp_path / "overlay.MP4").stat().st_size > 0


def test_frames_option_predicts_only_those_frames(synth: Path, mp4: Path, tmp_path: Path) -> None:
    gt_path, sparse = _paths(synth)
    out, overlay = tmp_path / "pred.json", tmp_path / "o.mp4"
    argv = [str(mp4), "--labels", str(sparse), "--out", str(out), "--frames", "1:4", "--render", str(overlay)]
    assert main([*argv, "--no-progress", "--mode", "exact"], predictor_factory=_sim(gt_path)) == 0
    pred = posetrack.load(out)
    assert [f.index for f in pred.frames] == [1, 2, 3] and pred.num_frames == FRAMES
    with open_video(overlay) as video:
        assert video.num_frames == 3


def test_a_video_declaring_a_frame_rate_no_video_has_is_rendered_at_25_fps(
    synth: Path, tmp_path: Path
) -> None:
    """Before: an AVI whose header says 10**6 frames per second ran the whole prediction, wrote the JSON, then
    failed with exit 2: OpenCV's writer does not open at 10**6 fps."""
    gt_path, sparse = _paths(synth)
    video = tmp_path / "odd.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, SIZE)
    for image in sorted((synth / "images" / VID).glob("*.jpg")):
        writer.write(cv2.imread(str(image)))
    writer.release()
    data = bytearray(video.read_bytes())
    struct.pack_into("<II", data, data.find(b"strh") + 28, 1, 10**6)  # dwScale, dwRate: 10**6 fps
    video.write_bytes(bytes(data))
    out, overlay = tmp_path / "pred.json", tmp_path / "overlay.mp4"
    argv = [str(video), "--labels", str(sparse), "--out", str(out), "--render", str(overlay), "--no-progress"]
    assert main(argv, predictor_factory=_sim(gt_path)) == 0
    with open_video(overlay) as rendered:
        assert rendered.num_frames == FRAMES and rendered.fps == 25.0


def test_json_images_found_through_images_root(synth: Path, tmp_path: Path) -> None:
    gt_path, sparse = _paths(synth)
    moved = tmp_path / "elsewhere" / "labels.json"
    moved.parent.mkdir()
    shutil.copy(sparse, moved)
    out = tmp_path / "pred.json"
    assert main([str(moved), "--out", str(out), "--no-progress"], predictor_factory=_sim(gt_path)) == EXIT_USAGE
    assert main([str(moved), "--out", str(out), "--images-root", str(synth), "--no-progress"],
                predictor_factory=_sim(gt_path)) == 0
    assert len(posetrack.load(out).frames) == FRAMES


def test_default_blazepose_backbone_runs(synth: Path, tmp_path: Path) -> None:
    """The real default path (mediapipe BlazePose on CPU): a score in [0, 100], every frame written."""
    gt_path, sparse = _paths(synth)
    out = tmp_path / "pred.json"
    assert main([str(sparse), "--out", str(out), "--no-progress"]) == 0
    pred = posetrack.load(out)
    assert len(pred.frames) == FRAMES
    assert 0.0 <= evaluate(posetrack.load(gt_path), pred).total <= 100.0


def test_a_phone_photo_stored_sideways_is_predicted_as_shown(tmp_path: Path) -> None:
    """A JPEG stored rotated with EXIF orientation 6 or 8, given as INPUT: keypoints in the frame Label Studio
    shows, as for the upright photo. Before: FFmpeg read the file as stored (425x640), so the person lay on
    her side for the model and every keypoint was in a frame no viewer shows (the nose at 170,218, not
    365,83)."""
    import PIL.Image

    photo = Path(__file__).resolve().parents[2] / "assets/real-stills/images/val/coco_000000000785/000000.jpg"
    upright = PIL.Image.open(photo)  # 640x425, one skier
    upright.save(tmp_path / "upright.jpg", quality=95)
    noses = {}
    for name, orientation, turn in (("upright", 1, None), ("cw", 6, PIL.Image.Transpose.ROTATE_90),
                                    ("ccw", 8, PIL.Image.Transpose.ROTATE_270)):  # fmt: skip
        if turn is not None:
            exif = PIL.Image.Exif()
            exif[0x0112] = orientation
            upright.transpose(turn).save(tmp_path / f"{name}.jpg", quality=95, exif=exif.tobytes())
        out = tmp_path / f"{name}.json"
        assert model_main(["predict", str(tmp_path / f"{name}.jpg"), "--out", str(out), "--no-progress"]) == 0
        (frame,) = posetrack.load(out).frames
        assert len(frame.persons) == 1, (name, frame.persons)
        noses[name] = frame.persons[0].keypoints[0, :2]
    assert 300 < noses["upright"][0] < 420 and 40 < noses["upright"][1] < 130, noses  # on the skier's face
    for name in ("cw", "ccw"):
        assert np.abs(noses[name] - noses["upright"]).max() < 6, noses


def test_head_checkpoint_is_used_and_checked_against_the_backbone(
    synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from model.checkpoint import save_checkpoint
    from model.nets.dcpose import build_dcpose

    gt_path, sparse = _paths(synth)
    torch.manual_seed(0)
    head = build_dcpose(backbone=None)
    ckpt = save_checkpoint(tmp_path / "head.pt", head, model_config={"backbone": "simulated"}, version="t1")
    options = {"predictor_factory": _sim(gt_path), "frames": [0, 1]}  # the head is slow on CPU
    plain = run_predict(sparse, tmp_path / "a.json", **options)
    headed = run_predict(sparse, tmp_path / "b.json", options=PredictOptions(head=ckpt), **options)
    # Frame 1 lies between the labels: the (untrained) head changes the backbone's answer there.
    moved = [np.abs(a.xy - b.xy).max() for a, b in zip(plain.frame(1).persons, headed.frame(1).persons)]
    assert max(moved) > 0.5
    np.testing.assert_array_equal(plain.frame(0).persons[0].xy, headed.frame(0).persons[0].xy)  # human
    save_checkpoint(tmp_path / "bp.pt", head, model_config={"backbone": "blazepose"}, version="t2")
    argv = [str(sparse), "--out", str(tmp_path / "c.json"), "--head", str(tmp_path / "bp.pt"), "--no-progress"]
    assert "trained on blazepose heatmaps" in _error(capsys, argv, predictor_factory=_sim(gt_path))


@pytest.mark.parametrize(
    "device",
    [
        pytest.param("cpu", marks=pytest.mark.slow),
        pytest.param(
            "cuda",
            marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")],
        ),
    ],
)
def test_hrnet_w48_backbone_from_a_checkpoint(synth: Path, mp4: Path, tmp_path: Path, device: str) -> None:
    """HRNet-W48 (random weights saved as a checkpoint: this checks the plumbing, not accuracy)."""
    from model.nets.hrnet import HRNet

    gt_path, sparse = _paths(synth)
    ckpt = tmp_path / "w48.pt"
    torch.save(HRNet(width=48, num_joints=17).state_dict(), ckpt)
    out = tmp_path / "pred.json"
    argv = [str(mp4), "--labels", str(sparse), "--out", str(out), "--backbone", "hrnet_w48"]
    assert main([*argv, "--checkpoint", str(ckpt), "--device", device, "--no-progress"]) == 0
    pred = posetrack.load(out)
    assert len(pred.frames) == FRAMES
    assert 0.0 <= evaluate(posetrack.load(gt_path), pred).total <= 100.0


# ------------------------------------------------------------------------------------------ errors


def _error(capsys: pytest.CaptureFixture[str], argv: list[str], **seams: object) -> str:
    """Run the CLI expecting exit status 2; returns its one-line message."""
    assert main(argv, **seams) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_missing_and_unreadable_inputs(
    synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "p.json")
    assert "input not found" in _error(capsys, [str(tmp_path / "nope.mp4"), "--out", out])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 20)
    assert "cannot open as a video" in _error(capsys, [str(broken), "--out", out])
    assert "input of this run" in _error(capsys, [str(broken), "--out", str(broken)])
    assert not (tmp_path / "p.json").exists()


def test_a_link_loop_as_input_or_output_is_refused_with_its_name(
    mp4: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: Path.resolve() raised RuntimeError ("Symlink loop from ...") out of the command."""
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    out = tmp_path / "p.json"
    assert f"{loop}: a symbolic link that loops" in _error(capsys, [str(loop), "--out", str(out)])
    render = [str(mp4), "--out", str(out), "--render", str(loop)]
    assert f"{loop}: a symbolic link that loops" in _error(capsys, render)
    assert not out.exists()


def test_a_pipe_named_like_a_video_is_refused_not_waited_on(mp4: Path, tmp_path: Path) -> None:
    """Before: OpenCV opened the pipe and waited for a writer for ever (and a video file is opened more than
    once, so even a pipe someone writes to could not be read)."""
    pipe = tmp_path / "stream.mp4"
    os.mkfifo(pipe)
    out = tmp_path / "p.json"
    argv = [sys.executable, "-m", "model", "predict", str(pipe), "--out", str(out), "--no-progress"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[3])
    assert done.returncode == EXIT_USAGE, done.stderr
    assert f"error: {pipe}: not a regular file (a pipe, socket or device)" in done.stderr
    assert "Traceback" not in done.stderr


def test_labels_that_do_not_parse_name_the_field(
    synth: Path, mp4: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, sparse = _paths(synth)
    data = json.loads(sparse.read_text())
    data["annotations"][1]["keypoints"] = data["annotations"][1]["keypoints"][:50]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    out = str(tmp_path / "p.json")
    err = _error(capsys, [str(mp4), "--labels", str(bad), "--out", out])
    assert "annotations[1].keypoints" in err and "51" in err
    bad.write_text("{not json")
    assert "invalid JSON" in _error(capsys, [str(mp4), "--labels", str(bad), "--out", out])
    data = json.loads(sparse.read_text())
    for image in data["images"]:
        image["nframes"] = 50
    bad.write_text(json.dumps(data))
    assert "not labels of this video" in _error(capsys, [str(mp4), "--labels", str(bad), "--out", out])
    assert "contradict" in _error(capsys, [str(mp4), "--labels", str(sparse), "--no-labels", "--out", out])


def test_checkpoint_that_does_not_fit_the_backbone(
    mp4: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from model.nets.hrnet import HRNet

    ckpt = tmp_path / "w8.pt"
    torch.save(HRNet(width=8).state_dict(), ckpt)
    argv = [str(mp4), "--out", str(tmp_path / "p.json"), "--backbone", "hrnet_w48", "--checkpoint", str(ckpt)]
    err = _error(capsys, argv)
    assert str(ckpt) in err and "does not fit" in err and "shape mismatches" in err
    assert "its only checkpoint is a second BlazePose landmark model" in _error(
        capsys, [str(mp4), "--out", str(tmp_path / "p.json"), "--backbone", "blazepose", "--checkpoint", str(ckpt)]
    )
    assert "movenet's checkpoint is MoveNet's graph" in _error(
        capsys, [str(mp4), "--out", str(tmp_path / "p.json"), "--backbone", "movenet", "--checkpoint", str(ckpt)]
    )
    fake = tmp_path / "pose_landmark_heavy.tflite"  # blazepose's checkpoint must be a landmark model
    fake.write_bytes(b"\0" * 64)
    err = _error(capsys, [str(mp4), "--out", str(tmp_path / "p.json"), "--checkpoint", str(fake)])
    assert f"{fake} is not a BlazePose landmark model" in err and "not a TFLite file" in err


def test_cuda_unavailable_and_bad_options(
    mp4: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = str(tmp_path / "p.json")
    assert "CUDA is not available" in _error(capsys, [str(mp4), "--out", out, "--device", "cuda"])
    assert "--device must be" in _error(capsys, [str(mp4), "--out", out, "--device", "gpu"])
    assert "outside the video" in _error(capsys, [str(mp4), "--out", out, "--frames", "3:10"])
    assert main([str(mp4), "--out", out, "--backbone", "resnet"]) == EXIT_USAGE  # argparse's own usage error
    for bad in ("0", "two"):
        assert main([str(mp4), "--out", out, "--redetect-every", bad]) == EXIT_USAGE
        assert "--redetect-every" in capsys.readouterr().err


def test_redetect_every_reaches_the_predictor_and_follows_people(synth: Path, tmp_path: Path) -> None:
    gt_path, _ = _paths(synth)
    calls: dict[int, int] = {}

    def factory(options: PredictOptions):  # noqa: ANN202
        predictor = _sim(gt_path)(options)
        detect, every = predictor.detect, options.redetect_every
        calls[every] = 0

        def counted(frame):  # noqa: ANN001, ANN202
            calls[every] += 1
            return detect(frame)

        predictor.detect = counted  # type: ignore[method-assign]
        return predictor

    folder = synth / "images" / VID
    for every in ("1", "5"):
        argv = [str(folder), "--out", str(tmp_path / f"e{every}.json"), "--no-progress", "--redetect-every", every]
        assert main(argv, predictor_factory=factory) == 0
    assert calls[1] == FRAMES and 1 <= calls[5] < FRAMES  # people followed between detections
    assert build_predictor(PredictOptions(redetect_every=10)).config.redetect_every == 10


def test_no_denoise_reaches_the_predictor(synth: Path, tmp_path: Path) -> None:
    gt_path, _ = _paths(synth)
    seen: list[bool] = []

    def factory(options: PredictOptions):  # noqa: ANN202
        predictor = _sim(gt_path)(options)
        seen.append(predictor.config.denoise)
        return predictor

    folder = synth / "images" / VID
    for extra in ([], ["--no-denoise"]):
        argv = [str(folder), "--out", str(tmp_path / f"d{len(extra)}.json"), "--no-progress", "--frames", "0:2", *extra]
        assert main(argv, predictor_factory=factory) == 0
    assert seen == [True, False]


@pytest.mark.parametrize(("flag", "option"), [("--no-temporal-median", "temporal_median"),
                                              ("--no-shot-cuts", "shot_cuts"), ("--no-trim-bars", "trim_bars"),
                                              ("--no-deinterlace", "deinterlace"), ("--no-deblur", "deblur")])
def test_no_median_and_no_cuts_reach_the_predictor(synth: Path, tmp_path: Path, flag: str, option: str) -> None:
    seen: list[bool] = []

    def factory(options: PredictOptions):  # noqa: ANN202
        seen.append(getattr(options, option))
        return _sim(_paths(synth)[0])(options)

    folder = synth / "images" / VID
    for extra in ([], [flag]):
        argv = [str(folder), "--out", str(tmp_path / f"m{len(extra)}.json"), "--no-progress", "--frames", "0:2", *extra]
        assert main(argv, predictor_factory=factory) == 0
    assert seen == [True, False]
    built = build_predictor(PredictOptions(backbone="blazepose", **{option: False}))  # type: ignore[arg-type]
    assert getattr(built.config, option) is False


def test_help_names_every_input_kind(capsys: pytest.CaptureFixture[str]) -> None:
    """README: "pre-annotate a video, a frame folder, one image or a PoseTrack JSON"; the help says so too."""
    assert model_main(["--help"]) == 0
    assert "keypoints for a video, frame folder, image or PoseTrack JSON" in " ".join(capsys.readouterr().out.split())
    assert model_main(["predict", "--help"]) == 0
    assert "video file, frame folder, image file or PoseTrack JSON" in " ".join(capsys.readouterr().out.split())
