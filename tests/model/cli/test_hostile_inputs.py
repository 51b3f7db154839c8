"""`python -m model predict` and `python -m model train` on hostile inputs: each is refused with one line
and exit status 2 before any model runs, never a traceback, a silently damaged frame or lost data."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import pytest

from annotation_io import posetrack
from annotation_io.posetrack import dump_2018
from annotation_io.types import Frame, Video
from model.cli.main import main as model_main
from model.cli.predict import EXIT_USAGE

SIZE = (64, 48)


def _never(options: object):  # noqa: ANN202 (a PredictorFactory / BackboneFactory)
    raise AssertionError("the model was built although the input is refused")


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run `python -m model ARGV` expecting exit status 2; returns its one-line message."""
    seam = {"predictor_factory": _never} if argv[0] == "predict" else {"backbone_factory": _never}
    assert model_main(argv, **seam) == EXIT_USAGE
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in err, err
    return err


def _frames(folder: Path, count: int = 3) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:06d}.jpg"
        cv2.imwrite(str(path), np.full((SIZE[1], SIZE[0], 3), 40 * i, np.uint8))
        paths.append(path)
    return paths


def _listing(root: Path, count: int = 3, nframes: int | None = None) -> Path:
    """A PoseTrack 2018 file naming the frames images/v/00000i.jpg under `root`."""
    frames = [Frame(i, [], False, file_name=f"images/v/{i:06d}.jpg", image_id=10000 + i) for i in range(count)]
    path = root / "v.json"
    dump_2018(Video("v", count, frames), path)
    if nframes is not None:
        data = json.loads(path.read_text())
        for image in data["images"]:
            image["nframes"] = nframes
        path.write_text(json.dumps(data))
    return path


def test_a_truncated_jpeg_frame_is_refused_not_predicted_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: cv2 decoded a JPEG cut in half with its missing rows grey ("Premature end of JPEG file" on
    stderr only) and the run predicted on it and exited 0."""
    frames = _frames(tmp_path / "images" / "v")
    rng = np.random.default_rng(0)  # noise: a JPEG large enough that half of it still decodes
    cv2.imwrite(str(frames[1]), rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8))
    frames[1].write_bytes(frames[1].read_bytes()[: frames[1].stat().st_size // 2])
    assert cv2.imread(str(frames[1])) is not None  # cv2 alone does not notice
    out = tmp_path / "p.json"
    for source, where in ((tmp_path / "images" / "v", "frame 1 of folder"),
                          (_listing(tmp_path), "frame 1 of the frames listed by the annotation file")):
        err = _error(capsys, ["predict", str(source), "--out", str(out), "--no-progress"])
        assert f"error: {frames[1]}: truncated JPEG ({where}" in err, err
    assert not out.exists()


def test_a_truncated_jpeg_given_as_input_is_refused_not_predicted_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a single image file went to FFmpeg as a one-frame video, which decoded a JPEG cut in half with
    grey rows: the run predicted on it and exited 0 (a frame folder holding the same file was refused)."""
    photo = tmp_path / "photo.jpg"
    rng = np.random.default_rng(0)  # noise: a JPEG large enough that half of it still decodes
    cv2.imwrite(str(photo), rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8))
    photo.write_bytes(photo.read_bytes()[: photo.stat().st_size // 2])
    out = tmp_path / "p.json"
    err = _error(capsys, ["predict", str(photo), "--out", str(out), "--no-progress"])
    assert f"error: {photo}: truncated JPEG (frame 0 of the image photo.jpg)" in err, err
    assert not out.exists()


def test_a_jpeg_with_data_after_its_end_marker_is_read(tmp_path: Path) -> None:
    """Camera JPEGs may carry data after the end-of-image marker: those are whole images, not truncated."""
    from annotation_io.video import open_video

    frames = _frames(tmp_path / "v")
    frames[2].write_bytes(frames[2].read_bytes() + b"trailer written by a camera")
    with open_video(tmp_path / "v") as source:
        assert source.read(2).shape == (SIZE[1], SIZE[0], 3)


def test_a_posetrack_file_claiming_a_huge_frame_count_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `nframes: 10**12` built set(range(10**12)) and the process was killed for memory."""
    _frames(tmp_path / "images" / "v")
    labels = _listing(tmp_path, nframes=10**12)
    err = _error(capsys, ["predict", str(labels), "--out", str(tmp_path / "p.json"), "--no-progress"])
    assert f"error: {labels}: lists images for 3 of its 1000000000000 frames" in err, err


def test_one_file_for_two_outputs_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: --out x.mp4 --render x.mp4 wrote the prediction JSON, then the overlay video over it."""
    _frames(tmp_path / "v")
    both = tmp_path / "x.mp4"
    err = _error(capsys, ["predict", str(tmp_path / "v"), "--out", str(both), "--render", str(both), "--no-progress"])
    assert f"error: {both} is given for two outputs of this run" in err, err
    assert not both.exists()


def test_an_output_onto_a_frame_image_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: --out FOLDER/000001.jpg (a frame of the input folder, or of those a PoseTrack JSON lists)
    replaced that frame with the prediction JSON and exited 0: the video lost a frame."""
    frames = _frames(tmp_path / "images" / "v")
    before = frames[1].read_bytes()
    listing = _listing(tmp_path)
    for source, out in ((tmp_path / "images" / "v", frames[1]),
                        (listing, tmp_path / "images" / "v" / ".." / "v" / "000001.jpg"),  # another spelling
                        (listing, frames[1])):  # fmt: skip
        err = _error(capsys, ["predict", str(source), "--out", str(out), "--no-progress"])
        assert err == f"error: {out} is a frame image this run reads; write the output elsewhere", err
    assert frames[1].read_bytes() == before


# -------------------------------------------------------------------------------------------- train


@pytest.fixture()
def labelled(tmp_path: Path) -> tuple[Path, Path]:
    """(frames root, labels file) of a 3-frame video."""
    _frames(tmp_path / "images" / "v")
    return tmp_path, _listing(tmp_path)


def _train_error(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, argv: list[str]) -> str:
    """Run `python -m model train ARGV` expecting exit status 2; returns the error it logged."""
    _error(capsys, ["train", *argv])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "Traceback" not in errors[0], errors
    caplog.clear()
    return errors[0]


def test_train_refuses_an_output_that_overwrites_its_labels_or_is_a_folder(
    labelled: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Before: --out LABELS.json trained, then replaced the labels file with the checkpoint (the labels
    were lost); --out FOLDER trained, then failed with a traceback (IsADirectoryError)."""
    root, labels = labelled
    before = labels.read_bytes()
    args = ["--videos", str(root), "--labels", str(labels), "--epochs", "1"]
    assert "is an input of this run" in _train_error(capsys, caplog, [*args, "--out", str(labels)])
    assert "is an input of this run" in _train_error(capsys, caplog, [
        "--videos", str(root), "--labels", str(root), "--out", str(labels)])  # a folder of labels  # fmt: skip
    assert labels.read_bytes() == before
    folder = tmp_path / "head.pt"
    folder.mkdir()
    assert f"{folder} is a folder; give a file name" in _train_error(capsys, caplog, [*args, "--out", str(folder)])


def test_train_refuses_a_device_that_is_not_one(
    labelled: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Before: --device gpu loaded the labels and the backbone, then died in torch with a traceback
    (RuntimeError: Expected one of cpu, cuda, ... device type at start of device string: gpu)."""
    root, labels = labelled
    argv = ["--videos", str(root), "--labels", str(labels), "--out", str(tmp_path / "h.pt"), "--device", "gpu"]
    assert "--device must be cpu, cuda or cuda:N, got 'gpu'" in _train_error(capsys, caplog, argv)


def test_train_refuses_frames_that_do_not_decode(
    labelled: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a VideoError from the frame folder was not caught: a traceback instead of the one line."""
    from model.testing.simulated import SimulatedBackbone

    root, labels = labelled
    (root / "images" / "v" / "000001.jpg").write_bytes(b"")
    data = json.loads(labels.read_text())  # a labelled person, so that there is something to train on
    data["images"][1]["is_labeled"] = True
    data["annotations"] = [{"id": 1, "image_id": 10001, "track_id": 0, "bbox": [10, 10, 30, 30],
                            "keypoints": [20, 20, 2] * 17}]
    labels.write_text(json.dumps(data))
    argv = ["train", "--videos", str(root), "--labels", str(labels), "--out", str(tmp_path / "h.pt"),
            "--holdout", "0"]
    assert model_main(argv, backbone_factory=lambda args: SimulatedBackbone(posetrack.load(labels))) == EXIT_USAGE
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "000001.jpg: cannot decode image" in errors[0], errors
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "h.pt").exists()


def test_train_refuses_a_checkpoint_or_curve_onto_a_frame_image(
    labelled: tuple[Path, Path], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Before: --out FRAMES/000001.jpg trained, then replaced that frame with the checkpoint; --out FRAMES/h.pt
    wrote its curve h_curve.png among the frames, where every later run took it for a frame of another size
    ("frame 3 is 600x400 but the first frame ... is 64x48")."""
    from model.testing.simulated import SimulatedBackbone

    root, labels = labelled
    frames = root / "images" / "v"
    _label(labels, [0, 2])
    before = {p.name: p.read_bytes() for p in frames.iterdir()}
    factory = functools.partial(lambda gt, args: SimulatedBackbone(gt), posetrack.load(labels))
    cases = ((frames / "000001.jpg", f"{frames / '000001.jpg'} is a frame image this run reads; write the output "
                                     "elsewhere"),
             (frames / "h.pt", f"{frames / 'h_curve.png'}: an image written among the frames of {frames.resolve()} "
                               "would be read as one of them; write it elsewhere"))  # fmt: skip
    for out, message in cases:
        argv = ["train", "--videos", str(root), "--labels", str(labels), "--out", str(out), "--holdout", "0",
                "--epochs", "1"]  # fmt: skip
        assert model_main(argv, backbone_factory=factory) == EXIT_USAGE
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert errors == [message], errors
        caplog.clear()
    assert {p.name: p.read_bytes() for p in frames.iterdir()} == before


def _label(labels: Path, frames: list[int]) -> None:
    """One person labelled on each of `frames` of the listing."""
    data = json.loads(labels.read_text())
    for i in frames:
        data["images"][i]["is_labeled"] = True
    data["annotations"] = [{"id": i, "image_id": 10000 + i, "track_id": 0, "bbox": [10, 10, 30, 30],
                            "keypoints": [20, 20, 2] * 17} for i in frames]  # fmt: skip
    labels.write_text(json.dumps(data))


def test_train_without_frames_left_to_train_on_names_the_option(
    labelled: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Before: two neighbouring labelled frames, one held out and the other dropped beside it, were refused
    with "train_head needs at least one training sample; label some frames first" (they are labelled); one
    labelled frame with "use fraction=0", an option the command does not have."""
    from model.testing.simulated import SimulatedBackbone

    root, labels = labelled
    argv = ["train", "--videos", str(root), "--labels", str(labels), "--out", str(tmp_path / "h.pt")]
    cases = (([1, 2], "none of the 2 labelled persons is left to train on: 1 held out (--holdout 0.2), the rest "
                      "within --distance 1 of them; label more frames or use --holdout 0"),
             ([1], "cannot hold out frames of video 'v': it has 1 labelled frame(s); label more frames or use "
                   "fraction=0 (--holdout 0)"))  # fmt: skip
    for frames, message in cases:
        _label(labels, frames)
        factory = functools.partial(lambda gt, args: SimulatedBackbone(gt), posetrack.load(labels))
        assert model_main(argv, backbone_factory=factory) == EXIT_USAGE
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert errors == [f"{labels}: {message}"], errors
        caplog.clear()
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "h.pt").exists()


class NaNHeatmaps:
    """A backbone whose heatmaps of one joint are NaN (a half-precision overflow, broken weights)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:  # name, version, ...
        return getattr(self.inner, name)

    def for_video(self, name: str) -> NaNHeatmaps:
        return NaNHeatmaps(self.inner.for_video(name))

    def heatmaps(self, *args: object) -> object:
        out = self.inner.heatmaps(*args)
        out[:, 3] = float("nan")
        return out


def test_train_whose_loss_becomes_nan_fails_and_writes_no_checkpoint(
    labelled: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the NaN loss never beat the best score, so the run ended "trained" on its initial weights,
    wrote them as the checkpoint and exited 0."""
    from model.testing.simulated import SimulatedBackbone

    root, labels = labelled
    _label(labels, [0, 2])
    out = tmp_path / "h.pt"
    argv = ["train", "--videos", str(root), "--labels", str(labels), "--out", str(out), "--holdout", "0",
            "--epochs", "1", "--no-augment", "--lr", "1e6"]  # fmt: skip
    backbone = NaNHeatmaps(SimulatedBackbone(posetrack.load(labels)))
    assert model_main(argv, backbone_factory=lambda args: backbone) == EXIT_USAGE
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["training diverged: the loss of epoch 1 is nan (lr 1e+06); lower the learning rate, or "
                      "check the backbone's heatmaps and the labels for NaN"], errors  # fmt: skip
    assert "Traceback" not in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--epochs", "0", "must be at least 1, got 0"),
    ("--batch-size", "-4", "must be at least 1, got -4"),
    ("--distance", "two", "expected a whole number of frames, got 'two'"),
    ("--lr", "nan", "must be a finite number above 0, got nan"),
    ("--holdout", "1.5", "must be at least 0 and below 1, got 1.5"),
    ("--workers", "-1", "must be at least 0, got -1"),
    ("--workers", "100000", "must be at most "),  # the CPUs here
    ("--seed", "-1", "must be at least 0, got -1"),
    ("--seed", str(2**64), f"must be at most 4294967295, got {2**64}"),
])  # fmt: skip
def test_train_options_out_of_range_are_usage_errors(
    option: str, value: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: --lr nan, --holdout 1.5, --workers -1 failed only after the labels and backbone loaded, in
    terms of TrainConfig / "fraction"; --epochs 0 and --batch-size -4 the same. --seed -1 and 2**64 failed
    once the backbone had run, in numpy's and torch's words ("expected non-negative integer", "Overflow when
    unpacking long long"); --workers 100000 hung, the DataLoader starting 100,000 processes."""
    argv = ["train", "--videos", str(tmp_path), "--labels", str(tmp_path), "--out", str(tmp_path / "h.pt"),
            option, value]
    assert model_main(argv, backbone_factory=_never) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"argument {option}: {message}" in err, err


def test_an_images_root_that_is_not_a_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a missing or file --images-root was skipped without a word and the images were looked for
    (and found) elsewhere, so a typo went unnoticed."""
    _frames(tmp_path / "images" / "v")
    labels = _listing(tmp_path)
    for root in (labels, tmp_path / "typo"):
        argv = ["predict", str(labels), "--images-root", str(root), "--out", str(tmp_path / "p.json")]
        assert f"error: --images-root {root}: not a folder" in _error(capsys, argv)


def test_a_frame_that_is_a_broken_link_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: the broken link was skipped without a word, so frame 2 became frame 1 (labels of frame 1
    then sat on the wrong picture) and the run exited 0."""
    frames = _frames(tmp_path / "v")
    frames[1].unlink()
    frames[1].symlink_to(tmp_path / "gone.jpg")
    err = _error(capsys, ["predict", str(tmp_path / "v"), "--out", str(tmp_path / "p.json"), "--no-progress"])
    assert f"error: {frames[1]}: a frame image that is a broken link" in err, err
    assert not (tmp_path / "p.json").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_frame_name_that_is_a_pipe_or_a_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a named pipe or a folder named like a frame was skipped without a word, so every later frame
    took the index of the one before (labels then sat on the wrong picture) and the run exited 0."""
    frames = _frames(tmp_path / "v", count=4)
    frames[1].unlink()
    os.mkfifo(frames[1])  # never opened: reading it would wait for a writer for ever
    frames[2].unlink()
    frames[2].mkdir()
    out = tmp_path / "p.json"
    err = _error(capsys, ["predict", str(tmp_path / "v"), "--out", str(out), "--no-progress"])
    assert err.endswith(f"error: {frames[1]} is a named pipe, not an image file; without it every later frame"
                        " would take the index of the one before"), err  # fmt: skip
    frames[1].unlink()
    cv2.imwrite(str(frames[1]), np.zeros((SIZE[1], SIZE[0], 3), np.uint8))
    err = _error(capsys, ["predict", str(tmp_path / "v"), "--out", str(out), "--no-progress"])
    assert f"error: {frames[2]} is a folder, not an image file" in err, err
    assert not out.exists()


def test_labels_declaring_another_image_size_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: labels whose images declare 1920x1080 were used on 64x48 frames without a word (their
    keypoints far outside the picture) and the run exited 0."""
    _frames(tmp_path / "images" / "v")
    labels = _listing(tmp_path)
    data = json.loads(labels.read_text())
    for image in data["images"]:
        image.update(width=1920, height=1080)
    labels.write_text(json.dumps(data))
    argv = ["predict", str(tmp_path / "images" / "v"), "--labels", str(labels), "--out", str(tmp_path / "p.json")]
    err = _error(capsys, argv)
    assert "labels 'v' are for 1920x1080 images (their width/height) but the video's frames are 64x48" in err, err


def test_a_folder_of_gif_frames_says_which_frames_are_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: "a folder without images", of a folder holding 3 images (GIFs, which frames may not be)."""
    folder = tmp_path / "gifs"
    folder.mkdir()
    for i in range(3):
        PIL.Image.new("RGB", SIZE, (40 * i,) * 3).save(folder / f"{i:06d}.gif")
    err = _error(capsys, ["predict", str(folder), "--out", str(tmp_path / "p.json")])
    assert "a folder without frame images (.jpg, .jpeg, .png" in err and "only .gif files" in err, err


def test_an_image_too_small_to_show_a_person_is_refused_in_user_terms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the model loaded, then the run failed with the backbone's "frame_bgr is too small: (1, 1, 3)",
    which named neither the file nor what is wrong with it."""
    image = tmp_path / "one pixel.png"
    cv2.imwrite(str(image), np.zeros((1, 1, 3), np.uint8))
    folder = tmp_path / "thin"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"{i:06d}.png"), np.zeros((1, 40, 3), np.uint8))
    for source, size in ((image, "1x1"), (folder, "40x1")):
        err = _error(capsys, ["predict", str(source), "--out", str(tmp_path / "p.json"), "--no-progress"])
        assert err.startswith(f"error: {source}: {size} pixels, too small to show a person"), err
        assert err.endswith("(a frame needs at least 2 pixels a side)"), err
    assert not (tmp_path / "p.json").exists()
