"""Tests for annotation_io.synth: determinism, GT on the drawn figures, occlusion, ids, files, CLI."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from annotation_io.posetrack import load_2018
from annotation_io.skeletons import KEYPOINT_INDEX, UNLABELLED_SLOTS
from annotation_io.synth import generate, main, make_scene, render_video, sparsify, visible_only
from annotation_io.types import Frame, Person, Video

SIZE = (192, 144)
WRISTS_ANKLES = [KEYPOINT_INDEX[n] for n in ("left_wrist", "right_wrist", "left_ankle", "right_ankle")]


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def rendered(seed: int, *, frames: int, people: int, size: tuple[int, int] = SIZE):
    scene = make_scene(np.random.default_rng(seed), frames=frames, people=people, size=size)
    return scene, list(render_video(scene))


def test_same_seed_same_bytes_and_different_seed_differs(tmp_path: Path) -> None:
    kwargs = {"videos": 2, "frames": 5, "people": 3, "label_every": 2, "size": SIZE}
    generate(tmp_path / "a", seed=7, **kwargs)
    generate(tmp_path / "b", seed=7, **kwargs)
    generate(tmp_path / "c", seed=8, **kwargs)
    a, b, c = digests(tmp_path / "a"), digests(tmp_path / "b"), digests(tmp_path / "c")
    assert len(a) == 2 * 5 + 2 + 2 and a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a)  # every frame and file changes with the seed


def test_a_video_does_not_depend_on_how_many_are_generated(tmp_path: Path) -> None:
    generate(tmp_path / "one", videos=1, frames=4, people=2, seed=3, size=SIZE)
    generate(tmp_path / "two", videos=2, frames=4, people=2, seed=3, size=SIZE)
    one, two = digests(tmp_path / "one"), digests(tmp_path / "two")

    def of_video(files: dict[str, str], name: str) -> dict[str, str]:
        return {k: v for k, v in files.items() if Path(k).parts[1] in (name, f"{name}.json")}

    assert len(one) == 5 and one == of_video(two, "000001")
    assert set(of_video(two, "000002").values()).isdisjoint(one.values())


def test_visible_wrists_and_ankles_are_on_the_figure() -> None:
    checked = differ = 0
    for seed in range(3):
        scene, frames = rendered(seed, frames=12, people=3)
        for (image, persons), blur in zip(frames, scene.blur):
            if blur is not None:
                continue
            for person in persons:
                for j in WRISTS_ANKLES:
                    x, y, v = person.keypoints[j]
                    if v == 2:
                        px = (round(y), round(x))
                        diff = np.abs(image[px].astype(int) - scene.background[px].astype(int)).max()
                        checked += 1
                        differ += diff > 12
    assert checked > 50
    assert differ / checked > 0.95, (differ, checked)


def test_keypoints_boxes_and_frame_edges() -> None:
    width, height = SIZE
    _scene, frames = rendered(11, frames=30, people=4)
    seen_v0 = False
    for image, persons in frames:
        assert image.shape == (height, width, 3) and image.dtype == np.uint8
        for person in persons:
            kp, box = person.keypoints, person.box
            assert person.scores is None and person.head_box is not None
            assert (kp[list(UNLABELLED_SLOTS)] == 0).all()  # ears never labelled
            present = kp[:, 2] > 0
            assert present.any(), "a person listed on a frame has a joint inside it"
            inside = (kp[:, 0] >= 0) & (kp[:, 0] < width) & (kp[:, 1] >= 0) & (kp[:, 1] < height)
            assert inside[present].all()
            absent = ~present & ~np.isin(np.arange(17), UNLABELLED_SLOTS)
            seen_v0 |= bool(absent.any())
            assert (kp[absent, :2] == 0).all()
            x1, y1, x2, y2 = box.xyxy
            assert 0 <= x1 and 0 <= y1 and x2 <= width and y2 <= height  # clipped to the frame
            assert (
                (kp[present, 0] >= x1 - 1) & (kp[present, 0] <= x2 + 1)
            ).all()  # tight box holds the joints
            assert ((kp[present, 1] >= y1 - 1) & (kp[present, 1] <= y2 + 1)).all()
            head_top, nose = kp[KEYPOINT_INDEX["head_top"]], kp[KEYPOINT_INDEX["nose"]]
            if head_top[2] and kp[KEYPOINT_INDEX["left_ankle"], 2]:
                assert head_top[1] < nose[1] < kp[KEYPOINT_INDEX["left_ankle"], 1]  # upright
    assert seen_v0, "someone should be partly outside the frame (entering people)"


def test_occlusion_flags_when_people_cross() -> None:
    frames_with_occlusion = 0
    for seed in range(3):
        _, frames = rendered(seed, frames=20, people=2)
        for _, persons in frames:
            for person in persons:
                occluded = person.keypoints[:, 2] == 1
                if not occluded.any():
                    continue
                others = [p.box for p in persons if p is not person]
                for x, y, _ in person.keypoints[occluded]:  # covered by the front person
                    assert any(b.contains(x, y) for b in others)
            frames_with_occlusion += any((p.keypoints[:, 2] == 1).any() for p in persons)
    assert frames_with_occlusion >= 6


def test_occluded_joint_shows_the_front_person() -> None:
    hits = total = 0
    for seed in range(3):
        scene, frames = rendered(seed, frames=20, people=2)
        near = max(scene.walkers, key=lambda w: w.depth).outfit
        palette = np.array([near.shirt, near.trousers, near.skin, near.shoes, near.hair])
        for (image, persons), blur in zip(frames, scene.blur):
            for person in persons:
                for x, y, v in person.keypoints:
                    if v == 1 and blur is None:
                        pixel = image[round(y), round(x)].astype(int)
                        total += 1
                        hits += (
                            np.abs(palette - pixel).max(axis=1).min() < 40
                        )  # one of the front person's colours
    assert total > 10 and hits / total > 0.8, (hits, total)


def test_track_ids_stable_and_entering_people_get_new_ids() -> None:
    width, _ = SIZE
    for seed in range(3):
        _scene, frames = rendered(seed, frames=30, people=4)
        first_seen: dict[int, int] = {}
        centres: dict[int, list[tuple[int, float]]] = {}
        for t, (_, persons) in enumerate(frames):
            ids = [p.track_id for p in persons]
            assert ids == sorted(set(ids))
            for p in persons:
                first_seen.setdefault(p.track_id, t)
                centres.setdefault(p.track_id, []).append((t, p.box.center[0]))
        ids = sorted(first_seen)
        assert ids == list(range(len(ids))) and len(ids) >= 3
        assert [first_seen[i] for i in ids] == sorted(first_seen.values())  # ids in order of appearance
        late = [i for i in ids if first_seen[i] > 0]
        assert late, "someone enters after the first frame"
        for i in late:  # enters at an edge
            entry_box = next(p.box for p in frames[first_seen[i]][1] if p.track_id == i)
            assert entry_box.x <= 1 or entry_box.x + entry_box.w >= width - 1
        for track in centres.values():  # one identity = one smooth path
            ts, xs = zip(*track)
            assert list(ts) == list(range(ts[0], ts[0] + len(ts)))  # no gaps: nobody re-enters
            assert np.abs(np.diff(xs)).max(initial=0) < 0.12 * width


def test_files_layout_ids_and_posetrack_fields(tmp_path: Path) -> None:
    paths = generate(tmp_path, videos=2, frames=6, people=2, seed=1, size=SIZE)
    assert paths == [tmp_path / "annotations" / "000001.json", tmp_path / "annotations" / "000002.json"]
    assert not (tmp_path / "sparse").exists()
    for seq, path in enumerate(paths, start=1):
        data = json.loads(path.read_text())
        assert [im["id"] for im in data["images"]] == [10**10 + seq * 10**4 + t for t in range(6)]
        for t, image in enumerate(data["images"]):
            assert image["file_name"] == f"images/{seq:06d}/{t:06d}.jpg"
            assert image["vid_id"] == f"{seq:06d}" and image["nframes"] == 6 and image["is_labeled"]
            frame = cv2.imread(str(tmp_path / image["file_name"]))
            assert frame.shape == (SIZE[1], SIZE[0], 3)
        assert all(
            len(a["keypoints"]) == 51 and a["bbox_head"] and a["scores"] == [] for a in data["annotations"]
        )
        video = load_2018(path)
        assert video.name == f"{seq:06d}" and video.num_frames == 6
        assert [f.index for f in video.labeled_frames()] == list(range(6))
        assert video.track_ids() == list(range(len(video.track_ids())))


def test_files_hold_exactly_what_was_rendered(tmp_path: Path) -> None:
    generate(tmp_path, videos=1, frames=5, people=3, seed=4, size=SIZE)
    _, frames = rendered_from_generate_seed(4, frames=5, people=3)
    other_seed = rendered_from_generate_seed(5, frames=1, people=3)[1][0][0].astype(int)
    video = load_2018(tmp_path / "annotations" / "000001.json")
    for frame, (image, persons) in zip(video.frames, frames):
        assert [p.track_id for p in frame.persons] == [p.track_id for p in persons]
        for got, want in zip(frame.persons, persons):
            np.testing.assert_allclose(got.keypoints, want.keypoints, atol=1e-6)
            assert got.box == want.box and got.head_box == want.head_box
        disk = cv2.imread(str(tmp_path / frame.file_name)).astype(int)
        assert np.abs(disk - image).mean() < 8  # JPEG of the same frame (noisy background)
        assert np.abs(disk - other_seed).mean() > 2 * np.abs(disk - image).mean()


def rendered_from_generate_seed(seed: int, *, frames: int, people: int, video: int = 0):
    scene = make_scene(np.random.default_rng([seed, video]), frames=frames, people=people, size=SIZE)
    return scene, list(render_video(scene))


@pytest.mark.parametrize("every", [1, 3])
def test_sparse_labels_exactly_every_kth_frame(tmp_path: Path, every: int) -> None:
    generate(tmp_path, videos=1, frames=10, people=3, seed=2, label_every=every, size=SIZE)
    full = load_2018(tmp_path / "annotations" / "000001.json")
    sparse = load_2018(tmp_path / "sparse" / "000001.json")
    assert sparse.num_frames == 10 and [f.index for f in sparse.frames] == list(range(10))
    assert [f.index for f in sparse.labeled_frames()] == list(range(0, 10, every))
    for f_full, f_sparse in zip(full.frames, sparse.frames):
        assert f_sparse.file_name == f_full.file_name and f_sparse.image_id == f_full.image_id
        if f_sparse.index % every:
            assert f_sparse.persons == []
        else:
            assert len(f_sparse.persons) == len(f_full.persons) > 0
            for a, b in zip(f_sparse.persons, f_full.persons):
                np.testing.assert_array_equal(a.keypoints, b.keypoints)


def test_sparsify_copies_and_keeps_frames() -> None:
    _, frames = rendered(5, frames=4, people=1)
    from annotation_io.types import Frame, Video

    video = Video("v", 4, [Frame(t, persons, True) for t, (_, persons) in enumerate(frames)])
    sparse = sparsify(video, 2)
    assert [(f.index, f.is_labeled, len(f.persons) > 0) for f in sparse.frames] == [
        (0, True, True),
        (1, False, False),
        (2, True, True),
        (3, False, False),
    ]
    sparse.frames[0].persons[0].keypoints[:] = -1
    assert (video.frames[0].persons[0].keypoints >= 0).all()


def test_blur_only_changes_the_frames_it_marks() -> None:
    scene = make_scene(np.random.default_rng(9), frames=40, people=2, size=SIZE)
    kinds = {b[0] for b in scene.blur if b is not None}
    assert kinds == {"motion", "defocus"}
    sharp = list(render_video(replace(scene, blur=(None,) * 40)))
    for (blurred, persons), (clean, clean_persons), spec in zip(render_video(scene), sharp, scene.blur):
        assert [p.track_id for p in persons] == [p.track_id for p in clean_persons]  # GT unaffected
        lap = cv2.Laplacian(cv2.cvtColor(blurred, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
        lap_clean = cv2.Laplacian(cv2.cvtColor(clean, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
        if spec is None:
            assert np.array_equal(blurred, clean)
        else:
            assert lap < 0.5 * lap_clean  # blurred frames lose fine detail


def test_one_person_walks_inside_the_frame() -> None:
    _, frames = rendered(0, frames=10, people=1)
    assert all(len(persons) == 1 and persons[0].track_id == 0 for _, persons in frames)
    assert all((p.keypoints[:, 2] != 1).all() for _, persons in frames for p in persons)


def test_generate_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--frames must be in 1..9999"):
        generate(tmp_path, videos=1, frames=10_000, people=1, seed=0)
    with pytest.raises(ValueError, match="--people"):
        generate(tmp_path, videos=1, frames=2, people=0, seed=0)
    with pytest.raises(ValueError, match="--size"):
        generate(tmp_path, videos=1, frames=2, people=1, seed=0, size=(32, 480))
    with pytest.raises(ValueError, match="--label-every"):
        generate(tmp_path, videos=1, frames=2, people=1, seed=0, label_every=0)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "0"], "--frames must be"),
        (["--size", "640by480"], "size must look like 480x360"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--videos", "two"], "invalid int value"),
    ],
)
def test_cli_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main([str(tmp_path / "out"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_writes_videos(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [
        str(out),
        "--videos",
        "1",
        "--frames",
        "3",
        "--people",
        "2",
        "--seed",
        "5",
        "--label-every",
        "2",
        "--size",
        "160x128",
    ]
    assert main(argv) == 0
    assert sorted(p.name for p in (out / "images" / "000001").iterdir()) == [
        "000000.jpg",
        "000001.jpg",
        "000002.jpg",
    ]
    assert cv2.imread(str(out / "images" / "000001" / "000002.jpg")).shape == (128, 160, 3)
    sparse = load_2018(out / "sparse" / "000001.json")
    assert [f.index for f in sparse.labeled_frames()] == [0, 2]
    assert isinstance(sparse.frames[0].persons[0], Person)


def test_visible_only_leaves_out_covered_joints_and_keeps_the_rest() -> None:
    videos = []
    for seed in range(3):
        _, frames = rendered(seed, frames=20, people=2)
        videos.append(Video(f"v{seed}", 20, [Frame(i, persons, is_labeled=True) for i, (_, persons) in enumerate(frames)]))
    covered = 0
    for video in videos:
        out = visible_only(video)
        for frame, kept in zip(video.frames, out.frames):
            assert kept.is_labeled and len(kept.persons) == len(frame.persons)
            for person, person_kept in zip(frame.persons, kept.persons):
                v = person.keypoints[:, 2]
                covered += int((v == 1).sum())
                assert (person_kept.keypoints[v == 1] == 0).all()  # left out, as PoseTrack annotators do
                np.testing.assert_array_equal(person_kept.keypoints[v != 1], person.keypoints[v != 1])
                assert person_kept.box == person.box and person_kept.track_id == person.track_id
    assert covered > 0  # and the input kept its covered joints (copies were changed)


def test_cli_out_that_is_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: NotADirectoryError from mkdir (a traceback, exit 1) once the progress bar had started."""
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    assert main([str(afile), "--frames", "2", "--people", "1"]) == 2
    assert f"{afile} is a file; OUT must be a folder" in capsys.readouterr().err
    assert main([str(afile / "sub"), "--frames", "2", "--people", "1"]) == 2
    err = capsys.readouterr().err
    assert f"error: cannot write under {afile / 'sub'}: Not a directory" in err and "Traceback" not in err, err
    assert afile.read_text() == "keep me"
