"""Tests of model.pipeline.propagation: labels carried by optical flow on rendered video, fusion, the predictor's use."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from annotation_io.skeletons import NUM_KEYPOINTS
from annotation_io.types import Box, Frame, Person, Video
from model.heatmaps import render_gaussians
from model.pipeline.config import InferConfig, with_propagation
from model.pipeline.predictor import Predictor
from model.pipeline.propagation import (
    PROPAGATION_TRUST,
    Propagated,
    dragged_joints,
    fuse_chains,
    fuse_with_backbone,
    label_pace,
    pace_label,
    propagate,
    propagate_people,
    track_chain,
)
from model.transforms import HEATMAP_SIZE, frame_to_heatmap

SIZE = (320, 240)  # (W, H)
# Joints on a person-like sprite (x, y within the 60x140 sprite): head, shoulders, elbows, hips, knees, feet.
SPRITE_JOINTS = np.array([[30, 12], [30, 30], [30, 8], [22, 14], [38, 14], [15, 38], [45, 38], [12, 60],
                          [48, 60], [10, 80], [50, 80], [22, 78], [38, 78], [20, 105], [40, 105], [18, 132],
                          [42, 132]], float)


def path(t: int) -> np.ndarray:
    """The sprite's top-left corner on frame t: 1.5 px/frame right, a slow vertical wave (sub-pixel)."""
    return np.array([60.0 + 1.5 * t, 50.0 + 6.0 * np.sin(t / 6.0)])


def _sprite_mask() -> np.ndarray:
    """(140, 60) float mask of the person-like sprite: head, torso and arms, legs."""
    mask = np.zeros((140, 60), np.float32)
    cv2.ellipse(mask, (30, 15), (12, 14), 0, 0, 360, 1.0, -1)
    cv2.rectangle(mask, (8, 28), (52, 85), 1.0, -1)
    cv2.rectangle(mask, (14, 80), (46, 139), 1.0, -1)
    return mask


def render(num_frames: int = 17, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames of a textured person-like shape moving along `path` over a textured background, and GT joints."""
    rng = np.random.default_rng(seed)
    w, h = SIZE
    background = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2.0)
    sprite = cv2.GaussianBlur(rng.integers(0, 256, (140, 60, 3), dtype=np.uint8), (0, 0), 1.5)
    mask = _sprite_mask()
    frames, gt = [], []
    for t in range(num_frames):
        x, y = path(t)
        m = np.float32([[1, 0, x], [0, 1, y]])
        layer = cv2.warpAffine(sprite, m, SIZE, flags=cv2.INTER_LINEAR).astype(np.float32)
        alpha = cv2.warpAffine(mask, m, SIZE, flags=cv2.INTER_LINEAR)[..., None]
        frames.append((alpha * layer + (1 - alpha) * background).round().astype(np.uint8))
        gt.append(SPRITE_JOINTS + [x, y])
    return frames, np.stack(gt)


@pytest.fixture(scope="module")
def video() -> tuple[list[np.ndarray], np.ndarray]:
    return render()


def _gray(frames: list[np.ndarray]):
    grays = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    return lambda i: grays[i]


def _label(gt: np.ndarray, t: int) -> np.ndarray:
    return np.hstack([gt[t], np.full((NUM_KEYPOINTS, 1), 2.0)])


def test_labels_are_carried_within_two_pixels(video) -> None:
    frames, gt = video
    labels = {0: _label(gt, 0), 8: _label(gt, 8), 16: _label(gt, 16)}
    targets = [t for t in range(17) if t not in labels]
    carried = propagate(_gray(frames), labels, targets, num_frames=len(frames))
    assert sorted(carried) == targets
    errors = np.stack([np.linalg.norm(carried[t].xy - gt[t], axis=1) for t in targets])
    conf = np.stack([carried[t].conf for t in targets])
    assert np.median(errors) < 1.0 and np.percentile(errors, 90) < 2.0, errors.max(axis=1)
    assert conf.min() > 0.5  # the flow is consistent everywhere here
    # Next to a label (one step) every joint is within 1.5 px (joints on the outline see the background too).
    for t in (1, 7, 9, 15):
        assert np.linalg.norm(carried[t].xy - gt[t], axis=1).max() < 1.5


def test_a_static_frame_pair_keeps_points_and_confidence_decays(video) -> None:
    frames, gt = video
    still = [frames[0]] * 4
    out = track_chain(_gray(still), 0, gt[0], np.ones(NUM_KEYPOINTS), [1, 3])
    np.testing.assert_allclose(out[3].xy, gt[0], atol=0.05)
    assert np.all(out[3].conf < out[1].conf) and np.all(out[1].conf <= 0.97 + 1e-9)
    # Unlabelled joints are never carried.
    conf = np.ones(NUM_KEYPOINTS)
    conf[4] = 0
    assert track_chain(_gray(still), 0, gt[0], conf, [2])[2].conf[4] == 0


def test_lost_points_get_a_weak_confidence_and_the_backbone_wins(video) -> None:
    frames, gt = video
    rng = np.random.default_rng(1)
    noise = [rng.integers(0, 256, frames[0].shape, dtype=np.uint8) for _ in range(3)]
    out = track_chain(_gray([frames[0], *noise]), 0, gt[0], np.ones(NUM_KEYPOINTS), [3])
    assert (out[3].conf < 0.3).mean() > 0.8  # pure noise: the forward-backward check fails
    assert (out[3].conf < 0.01).mean() > 0.8 and (out[3].conf > 0).all()  # nothing to move them with: a prior
    # The flow broke for the whole person: the backbone wins even far from the carried points.
    backbone = gt[0] + 50.0
    xy, scores, taken = fuse_with_backbone(backbone, np.full(NUM_KEYPOINTS, 0.6), out[3])
    assert (~taken).mean() > 0.8
    np.testing.assert_allclose(xy[~taken], backbone[~taken])
    assert np.all(scores[taken] == out[3].conf[taken])


def test_a_label_off_the_image_is_not_carried_and_disturbs_nothing(video) -> None:
    frames, gt = video
    clean = track_chain(_gray(frames), 0, gt[0], np.ones(NUM_KEYPOINTS), [4])[4]
    pts = gt[0].copy()
    pts[3] = [-500.0, 1e6]  # an annotator's hidden ear, far off the frame
    out = track_chain(_gray(frames), 0, pts, np.ones(NUM_KEYPOINTS), [4])[4]
    assert out.conf[3] == 0
    others = np.arange(NUM_KEYPOINTS) != 3
    np.testing.assert_allclose(out.conf[others], clean.conf[others])
    np.testing.assert_allclose(out.xy[others], clean.xy[others])


def test_two_chains_that_disagree_lose_confidence() -> None:
    a = Propagated(np.zeros((2, 2)), np.array([0.9, 0.9]))
    b = Propagated(np.array([[0.5, 0.0], [30.0, 0.0]]), np.array([0.9, 0.9]))
    fused = fuse_chains(a, b)
    assert fused.conf[0] > 0.9 and fused.conf[1] < 0.01
    np.testing.assert_allclose(fused.xy[0], [0.25, 0.0])
    assert fuse_chains(a, None) is a and fuse_chains(None, None) is None


def test_a_weak_chain_that_disagrees_still_lowers_the_followed_one() -> None:
    followed = Propagated(np.zeros((2, 2)), np.array([0.8, 0.8]), np.array([True, True]))
    lost = Propagated(np.array([[20.0, 20.0], [1.0, 0.0]]), np.array([0.05, 0.05]), np.array([False, False]))
    fused = fuse_chains(followed, lost)
    assert fused.followed.all()
    assert fused.conf[0] < 0.01 < PROPAGATION_TRUST < fused.conf[1]  # 28 px apart vs 1 px apart


class _FlatBackbone:
    """A backbone that always answers the crop centre with score 0.5 (it sees nothing)."""

    name, version, sigma = "flat", "flat", 2.0

    def heatmaps(self, crops, geoms, frame_indices):
        centre = torch.tensor([[HEATMAP_SIZE[0] / 2, HEATMAP_SIZE[1] / 2]]).repeat(NUM_KEYPOINTS, 1)
        xy = centre[None].repeat(len(crops), 1, 1).float()
        return render_gaussians(xy, torch.full((len(crops), NUM_KEYPOINTS), 0.5), size=HEATMAP_SIZE[::-1],
                                sigma=2.0).float()


class _Frames:
    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames, self.num_frames = frames, len(frames)
        self.height, self.width = frames[0].shape[:2]

    def read(self, index: int) -> np.ndarray:
        return self.frames[index]


def _person(gt: np.ndarray, t: int) -> Person:
    box = Box.from_xyxy(*(path(t) - 5), *(path(t) + [65, 145]))
    return Person(_label(gt, t), track_id=0, box=box)


def test_predictor_carries_labels_to_a_frame_between_two_labelled_frames(video) -> None:
    frames, gt = video
    known = Video("v", len(frames), [Frame(t, [_person(gt, t)], is_labeled=True) for t in (0, 8)],
                  width=SIZE[0], height=SIZE[1])
    video_ = Video("v", len(frames), width=SIZE[0], height=SIZE[1])
    predictor = Predictor(_FlatBackbone(), None, detector=lambda frame: [])
    out = predictor.predict_video(video_, known, frames=[4], reader=_Frames(frames))
    (person,) = out.frame(4).persons
    assert person.extra["source"] == "model+propagated" and out.extra["propagated"] is True
    assert sorted(person.extra["propagated"]) == list(range(NUM_KEYPOINTS))
    assert np.linalg.norm(person.xy - gt[4], axis=1).max() < 2.0
    assert np.all(person.scores > 0.5) and np.all(person.scores <= 1.0)
    # Without propagation the same frame is the backbone's (the crop centre for every joint).
    off = Predictor(_FlatBackbone(), None, config=InferConfig(propagate=False), detector=lambda frame: [])
    plain = off.predict_video(video_, known, frames=[4], reader=_Frames(frames)).frame(4).persons[0]
    assert plain.extra["source"] == "model" and np.linalg.norm(plain.xy - gt[4], axis=1).mean() > 10
    assert "propagated" not in off.predict_video(video_, known, frames=[4], reader=_Frames(frames)).extra


def test_version_names_say_propagation() -> None:
    assert with_propagation("blazepose2-base") == "blazepose2+prop-base"
    assert with_propagation("blazepose2+prop-base") == "blazepose2+prop-base"
    assert with_propagation("p1-v3") == "p1-v3"  # registered versions keep their exact names


def test_heatmap_geometry_helper_is_consistent(video) -> None:
    # The propagated pose is rendered in the crop's heatmap geometry like a human label.
    _, gt = video
    from model.transforms import crop_geometry

    geom = crop_geometry(_person(gt, 4).box)
    hm = frame_to_heatmap(gt[4], geom)
    assert np.all((hm >= 0) & (hm < [HEATMAP_SIZE[0], HEATMAP_SIZE[1]]))


def test_a_box_only_label_is_trusted_and_filled_with_keypoints(video) -> None:
    frames, gt = video
    box = _person(gt, 4).box
    known = Video("v", len(frames), [Frame(4, [Person(track_id=7, box=box)], is_labeled=True)],
                  width=SIZE[0], height=SIZE[1])
    predictor = Predictor(_FlatBackbone(), None, detector=lambda frame: [])
    (person,) = predictor.predict_video(Video("v", len(frames), width=SIZE[0], height=SIZE[1]), known,
                                        frames=[4], reader=_Frames(frames)).frame(4).persons
    assert person.box == box and person.track_id == 7
    assert person.extra == {"source": "model", "box_source": "human"} and person.present.all()
    assert all(box.contains(x, y) for x, y in person.xy)


# ------------------------------------------------------------------ lost joints, people passing in front


def _render_two(num_frames: int = 13, seed: int = 3) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Two textured person-like shapes on a textured background: A walks right (2 px/frame) and B, in
    front of A, walks left (2 px/frame) across A from frame ~3 on. Returns frames and GT joints of A and B."""
    rng = np.random.default_rng(seed)
    w, h = SIZE
    background = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2.0)
    sprites = [cv2.GaussianBlur(rng.integers(0, 256, (140, 60, 3), dtype=np.uint8), (0, 0), 1.5) for _ in range(2)]
    mask = _sprite_mask()
    frames, gt_a, gt_b = [], [], []
    for t in range(num_frames):
        image = background.astype(np.float32)
        corners = (np.array([90.0 + 2.0 * t, 50.0]), np.array([170.0 - 2.0 * t, 60.0]))  # A first: B on top
        for sprite, corner in zip(sprites, corners):
            m = np.float32([[1, 0, corner[0]], [0, 1, corner[1]]])
            layer = cv2.warpAffine(sprite, m, SIZE, flags=cv2.INTER_LINEAR).astype(np.float32)
            alpha = cv2.warpAffine(mask, m, SIZE, flags=cv2.INTER_LINEAR)[..., None]
            image = alpha * layer + (1 - alpha) * image
        frames.append(image.round().astype(np.uint8))
        gt_a.append(SPRITE_JOINTS + corners[0])
        gt_b.append(SPRITE_JOINTS + corners[1])
    return frames, np.stack(gt_a), np.stack(gt_b)


def _carry_both_and_alone(frames: list[np.ndarray], gt_a: np.ndarray, gt_b: np.ndarray):
    """(targets, both carried together, A carried alone) from labels of A and B on frame 0."""
    labels = {0: {0: _label(gt_a, 0)}, 1: {0: _label(gt_b, 0)}}
    targets = list(range(1, len(frames)))
    carried = propagate_people(_gray(frames), labels, {0: targets, 1: targets}, num_frames=len(frames))
    return targets, carried, propagate(_gray(frames), labels[0], targets, num_frames=len(frames))


def test_a_joint_lost_by_the_flow_moves_on_with_its_person(video) -> None:
    frames, gt = video
    # A flat grey square, still on every frame, under the left wrist at frame 0: LK has no texture there.
    flat = [f.copy() for f in frames]
    x, y = gt[0][9].round().astype(int)
    for f in flat:
        f[y - 12 : y + 13, x - 12 : x + 13] = 128
    out = track_chain(_gray(flat), 0, gt[0], np.ones(NUM_KEYPOINTS), [4, 8])
    others = np.arange(NUM_KEYPOINTS) != 9
    for t in (4, 8):
        p = out[t]
        assert not p.followed[9] and p.strong[others].mean() > 0.8
        # It moved as the person did (the rest of the sprite), not stayed in the flat square; the person
        # moves rigidly, so it keeps most of its confidence and is trusted.
        np.testing.assert_allclose(p.xy[9], gt[t][9], atol=1.0)
        assert PROPAGATION_TRUST < p.conf[9] <= np.median(p.conf[others])
    assert out[8].conf[9] <= out[4].conf[9]
    # A trusted carried point replaces a backbone joint far from it (another person's wrist); a weak one
    # leaves a backbone joint that agrees with it, scored by the agreement.
    backbone = gt[8].copy()
    backbone[9] += [60.0, 0.0]
    backbone[10] += [3.0, 0.0]
    scores = np.full(NUM_KEYPOINTS, 0.8)
    xy, fused_scores, taken = fuse_with_backbone(backbone, scores, out[8])
    assert taken[9] and np.allclose(xy[9], out[8].xy[9]) and fused_scores[9] == out[8].conf[9]
    weak_near = Propagated(out[8].xy, np.where(np.arange(NUM_KEYPOINTS) == 10, 0.05, out[8].conf))
    xy, fused_scores, taken = fuse_with_backbone(backbone, scores, weak_near)
    assert not taken[10] and np.allclose(xy[10], backbone[10]) and 0.1 * 0.8 < fused_scores[10] < 0.8
    # Weak and far: the carried point still wins, unless the flow broke for the whole person.
    weak_far = Propagated(out[8].xy, np.where(np.arange(NUM_KEYPOINTS) == 9, 0.05, out[8].conf), out[8].followed)
    assert fuse_with_backbone(backbone, scores, weak_far)[2][9]
    # A backbone that misses most of the joints the flow is sure of does not see this person: every carried
    # joint wins, the weak ones too. One that misses a single sure joint still sees them.
    sure = out[8].conf >= PROPAGATION_TRUST
    assert sure.sum() >= 3
    elsewhere = gt[8] + [25.0, 0.0]
    assert fuse_with_backbone(elsewhere, scores, weak_near)[2].all()
    assert not fuse_with_backbone(backbone, scores, weak_near)[2][10]
    # A head's output agrees with the carried poses it was fed: the backbone's own joints are what is checked.
    assert fuse_with_backbone(backbone, scores, weak_near, check_xy=elsewhere)[2].all()
    assert not fuse_with_backbone(elsewhere, scores, weak_near, check_xy=backbone)[2][10]
    # A pass known to see another person does not see this one: every carried joint wins.
    assert fuse_with_backbone(backbone, scores, weak_near, unseen=True)[2].all()
    # A weak carried point also wins where the backbone is even less sure of its joint.
    unsure = np.where(np.arange(NUM_KEYPOINTS) == 10, 0.04, scores)
    xy, fused_scores, taken = fuse_with_backbone(backbone, unsure, weak_near)
    assert taken[10] and np.allclose(xy[10], out[8].xy[10]) and fused_scores[10] == 0.05


def test_a_swinging_hand_lost_by_the_flow_soon_counts_for_little(video) -> None:
    frames, gt = video
    # A textured hand moving 5 px/frame right of its person (who moves 1.5 px/frame) loses its texture on
    # frame 3 (a blurred fast hand): where it went after that, the person's motion cannot say.
    rng = np.random.default_rng(5)
    hand = cv2.GaussianBlur(rng.integers(0, 256, (31, 31, 3), dtype=np.uint8), (0, 0), 1.0)
    swung, start = [], gt[0][9].round().astype(int)
    for t, f in enumerate(frames):
        f = f.copy()
        x, y = start + [5 * t, 0]
        f[y - 15 : y + 16, x - 15 : x + 16] = hand if t < 3 else 128
        swung.append(f)
    out = track_chain(_gray(swung), 0, gt[0], np.ones(NUM_KEYPOINTS), [2, 6])
    assert out[2].followed[9] and out[2].conf[9] > PROPAGATION_TRUST
    assert not out[6].followed[9] and out[6].conf[9] < PROPAGATION_TRUST


def test_a_person_the_flow_loses_entirely_goes_on_at_their_last_pace(video) -> None:
    frames, gt = video
    # From frame 3 on, fresh noise over the whole person (as if behind a flickering screen): every joint is
    # lost at once, and the person goes on at the pace the flow last measured (1.5 px/frame right).
    rng = np.random.default_rng(2)
    hidden = [f.copy() for f in frames]
    x0, y0 = (gt[:8].min(axis=(0, 1)) - 15).astype(int)
    x1, y1 = (gt[:8].max(axis=(0, 1)) + 15).astype(int)
    for f in hidden[3:8]:
        f[y0:y1, x0:x1] = rng.integers(0, 256, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    out = track_chain(_gray(hidden), 0, gt[0], np.ones(NUM_KEYPOINTS), [2, 5, 7])
    assert out[2].followed.mean() > 0.8 and not out[5].followed.any()
    still = np.linalg.norm(out[2].xy - gt[7], axis=1)  # where a frozen pose would have stayed
    err = np.linalg.norm(out[7].xy - gt[7], axis=1)
    assert np.median(err) < 2.0 < 6.0 < np.median(still)
    assert out[7].conf.max() < out[5].conf.max() < out[2].conf.min()  # fading all the while


def test_a_joint_behind_another_person_is_not_carried_with_them() -> None:
    frames, gt_a, gt_b = _render_two()
    # Each track alone (no other person known) follows the pixels wherever they go.
    targets, carried, alone = _carry_both_and_alone(frames, gt_a, gt_b)
    for t in targets:
        a, b = carried[0][t], carried[1][t]
        err_a = np.linalg.norm(a.xy - gt_a[t], axis=1)
        err_alone = np.linalg.norm(alone[t].xy - gt_a[t], axis=1)
        err_b = np.linalg.norm(b.xy - gt_b[t], axis=1)
        assert np.all(err_a <= err_alone + 0.5), (t, err_a, err_alone)
        # B, in front, is carried as if alone (edge joints drift a little with the static background).
        assert (b.conf >= PROPAGATION_TRUST).all() and err_b.max() < 5.0, (t, err_b)
    # By the last frame B has crossed A's arm: alone, A's elbow went with B and is still trusted; knowing
    # both people, it was dropped from the flow and moved on with A, which keeps it right.
    last = targets[-1]
    err_a = np.linalg.norm(carried[0][last].xy - gt_a[last], axis=1)
    err_alone = np.linalg.norm(alone[last].xy - gt_a[last], axis=1)
    dragged = (alone[last].conf >= PROPAGATION_TRUST) & (err_alone > 8.0)
    assert dragged.any()
    assert np.all(err_a[dragged] < 3.0) and not carried[0][last].followed[dragged].any()


def test_dragged_joints_are_those_stepping_with_the_person_they_lie_on() -> None:
    start_a = SPRITE_JOINTS + [100.0, 50.0]
    start_b = SPRITE_JOINTS + [110.0, 50.0]  # B overlaps A
    prev = np.concatenate([start_a, start_b])
    people = np.repeat([0, 1], NUM_KEYPOINTS)
    alive = np.ones(2 * NUM_KEYPOINTS, bool)
    # Both step alike: the flow cannot tell them apart and nothing is dropped.
    assert not dragged_joints(prev, prev + 5.0, alive, people).any()
    # A's upper body steps like B (+6 px), A's legs like A (-4 px): the upper joints lying on B are dragged.
    new = prev.copy()
    new[:11] += [6.0, 0.0]
    new[11:NUM_KEYPOINTS] += [-4.0, 0.0]
    new[NUM_KEYPOINTS:] += [6.0, 0.0]
    dragged = dragged_joints(prev, new, alive, people)
    assert dragged[[0, 5, 6, 7, 8]].all() and not dragged[11:].any()
    # The same steps with B far away: nobody lies on B, nothing is dragged.
    far = new.copy()
    far[NUM_KEYPOINTS:] += [150.0, 0.0]
    assert not dragged_joints(prev, far, alive, people).any()
    # A (small, far away) wholly behind B's torso and carried with B: A's own step cannot be measured and
    # the flow there follows B, in front: A's joints are dropped from the flow (with or without A's last
    # known step), B's are not.
    centre = start_b[[5, 6, 11, 12]].mean(axis=0)
    small = centre + 0.3 * (SPRITE_JOINTS - SPRITE_JOINTS[[5, 6, 11, 12]].mean(axis=0))
    behind = np.concatenate([small, start_b])
    moved = behind + [6.0, 0.0]
    for fallback in (None, {0: np.array([-4.0, 0.0])}):
        dragged = dragged_joints(behind, moved, alive, people, fallback=fallback)
        assert dragged[:NUM_KEYPOINTS].all() and not dragged[NUM_KEYPOINTS:].any()
    # A wholly on B's body but stepping unlike B (A in front of B, the flow following A) is kept.
    assert not dragged_joints(behind, behind + np.r_[np.tile([-4.0, 0.0], (NUM_KEYPOINTS, 1)),
                                                      np.tile([6.0, 0.0], (NUM_KEYPOINTS, 1))],
                              alive, people)[:NUM_KEYPOINTS].any()
    # Nor is anything dropped where nobody's step can be measured: nothing says who is in front.
    assert not dragged_joints(behind, moved, alive, people, fallback=None,
                              shape=moved, placed=np.r_[alive[:NUM_KEYPOINTS], np.zeros(NUM_KEYPOINTS, bool)]).any()
    # One person alone: no check.
    assert not dragged_joints(prev[:NUM_KEYPOINTS], new[:NUM_KEYPOINTS], alive[:NUM_KEYPOINTS],
                              people[:NUM_KEYPOINTS]).any()


def test_joints_on_a_person_the_flow_lost_are_checked_against_where_that_person_is() -> None:
    # B is wholly lost to the flow (none of B's joints followed): B's body is where B's joints were carried
    # (`shape`, `placed`). A's joints on B that step far off A's own step (A: -4 px; the joints: +6 px) move
    # with something that is not A, and are dropped; A's joints that step like A are kept.
    start_a = SPRITE_JOINTS + [100.0, 50.0]
    start_b = SPRITE_JOINTS + [110.0, 50.0]
    prev = np.concatenate([start_a, start_b])
    people = np.repeat([0, 1], NUM_KEYPOINTS)
    alive = np.r_[np.ones(NUM_KEYPOINTS, bool), np.zeros(NUM_KEYPOINTS, bool)]
    placed = np.ones(2 * NUM_KEYPOINTS, bool)
    new = prev.copy()
    new[:NUM_KEYPOINTS] += [-4.0, 0.0]
    new[[5, 7]] = prev[[5, 7]] + [6.0, 0.0]
    new[[6]] = prev[[6]] + [-2.0, 0.0]  # within `stray_px` of A's step: kept
    dragged = dragged_joints(prev, new, alive, people, shape=prev, placed=placed)
    assert dragged[[5, 7]].all() and dragged.sum() == 2
    # Without B's carried joints there is no body to lie on, and nothing is dropped.
    assert not dragged_joints(prev, new, alive, people).any()
    # A body is its placed joints, followed or not: with B's hips lost to the flow, a joint of A at the
    # middle of B's torso (far from B's shoulders and arms) still lies on B.
    far_a = SPRITE_JOINTS + [200.0, 50.0]
    centre = start_b[[5, 6, 11, 12]].mean(axis=0)
    far_a[11] = centre
    prev = np.concatenate([far_a, start_b])
    alive = np.ones(2 * NUM_KEYPOINTS, bool)
    alive[NUM_KEYPOINTS + 11 : NUM_KEYPOINTS + 13] = False
    new = prev + np.repeat([[-4.0, 0.0], [6.0, 0.0]], NUM_KEYPOINTS, axis=0)
    new[11] = centre + [6.0, 0.0]  # A's hip steps like B, on B's torso
    with_hips = dragged_joints(prev, new, alive, people, shape=np.where(alive[:, None], new, prev + [6.0, 0.0]),
                               placed=placed)
    without = dragged_joints(prev, new, alive, people)
    assert with_hips[11] and not without[11]


def _render_behind(num_frames: int = 9, seed: int = 4) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """A small textured person (A, half size) walking right (2 px/frame) wholly behind a big one (B)
    walking left (2 px/frame) on frame 0; A comes out on B's right. Frames and GT joints of A and B."""
    rng = np.random.default_rng(seed)
    w, h = SIZE
    background = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2.0)
    mask = _sprite_mask()
    sprites = [cv2.GaussianBlur(rng.integers(0, 256, (140, 60, 3), dtype=np.uint8), (0, 0), 1.5) for _ in range(2)]
    frames, gt_a, gt_b = [], [], []
    for t in range(num_frames):
        image = background.astype(np.float32)
        # (scale, corner) of A then B: B is drawn last, on top
        for sprite, (scale, corner) in zip(sprites, ((0.5, np.array([140.0 + 2.0 * t, 85.0])),
                                                      (1.0, np.array([125.0 - 2.0 * t, 50.0])))):
            m = np.float32([[scale, 0, corner[0]], [0, scale, corner[1]]])
            layer = cv2.warpAffine(sprite, m, SIZE, flags=cv2.INTER_LINEAR).astype(np.float32)
            alpha = cv2.warpAffine(mask, m, SIZE, flags=cv2.INTER_LINEAR)[..., None]
            image = alpha * layer + (1 - alpha) * image
            (gt_a if scale < 1 else gt_b).append(scale * SPRITE_JOINTS + corner)
        frames.append(image.round().astype(np.uint8))
    return frames, np.stack(gt_a), np.stack(gt_b)


def test_a_person_wholly_behind_another_on_the_labelled_frame_is_not_carried_with_them() -> None:
    frames, gt_a, gt_b = _render_behind()
    targets, carried, alone = _carry_both_and_alone(frames, gt_a, gt_b)
    last = targets[-1]
    # Alone, A's joints go with B's pixels (4 px/frame the wrong way) and stay trusted.
    err_alone = np.linalg.norm(alone[last].xy - gt_a[last], axis=1)
    assert ((alone[last].conf >= PROPAGATION_TRUST) & (err_alone > 15.0)).sum() >= 8
    # Knowing B, no joint of A is trusted: the backbone decides. B is carried as if alone.
    for t in targets:
        assert (carried[0][t].conf < PROPAGATION_TRUST).all(), t
        err_b = np.linalg.norm(carried[1][t].xy - gt_b[t], axis=1)
        assert (carried[1][t].conf >= PROPAGATION_TRUST).mean() > 0.8 and np.median(err_b) < 2.0, (t, err_b)


def test_a_carried_box_moves_with_the_propagated_pose(video) -> None:
    frames, gt = video
    # One label, on frame 0; the backbone sees nothing (it answers the crop centre), so without propagation
    # the box never moves. With it, the box moves with the carried human joints.
    known = Video("v", len(frames), [Frame(0, [_person(gt, 0)], is_labeled=True)], width=SIZE[0], height=SIZE[1])
    video_ = Video("v", len(frames), width=SIZE[0], height=SIZE[1])
    wanted = [4, 8]
    boxes = {}
    for on in (True, False):
        predictor = Predictor(_FlatBackbone(), None, config=InferConfig(propagate=on), detector=lambda frame: [])
        out = predictor.predict_video(video_, known, frames=wanted, reader=_Frames(frames))
        boxes[on] = {t: out.frame(t).persons[0].box for t in wanted}
    for t in wanted:
        expected = np.array(_person(gt, t).box.center)
        assert np.linalg.norm(np.array(boxes[True][t].center) - expected) < 2.0, t
    assert np.linalg.norm(np.array(boxes[False][8].center) - np.array(_person(gt, 8).box.center)) > 8.0


class _SeesB:
    """A backbone that sees person B in every crop (B's ground-truth joints, score 0.9)."""

    name, version, sigma = "sees-b", "sees-b", 2.0

    def __init__(self, gt_b: np.ndarray) -> None:
        self.gt_b = gt_b

    def heatmaps(self, crops, geoms, frame_indices):
        xy = torch.tensor(np.stack([frame_to_heatmap(self.gt_b[f], g) for g, f in zip(geoms, frame_indices)]))
        return render_gaussians(xy.float(), torch.full((len(crops), NUM_KEYPOINTS), 0.9), size=HEATMAP_SIZE[::-1],
                                sigma=2.0).float()


def test_a_carried_box_does_not_move_onto_another_person_the_backbone_sees() -> None:
    frames, gt_a, gt_b = _render_two()
    # On frame 10 B, walking left, is 40 px right of A and inside A's crop. A is labelled with two joints
    # only (the flow cannot carry A's box), B in full; the backbone sees B wherever it looks. A's box,
    # carried with the backbone's joints, would move onto B; B's carried labels say those joints are B's,
    # and A's box holds.
    start, last = 10, len(frames) - 1
    two = _label(gt_a, start)
    two[2:, 2] = 0
    box_a = Box.from_xyxy(*(gt_a[start].min(axis=0) - 5), *(gt_a[start].max(axis=0) + 5))
    box_b = Box.from_xyxy(*(gt_b[start].min(axis=0) - 5), *(gt_b[start].max(axis=0) + 5))
    people = [Person(two, track_id=0, box=box_a), Person(_label(gt_b, start), track_id=1, box=box_b)]
    known = Video("v", len(frames), [Frame(start, people, is_labeled=True)], width=SIZE[0], height=SIZE[1])
    video_ = Video("v", len(frames), width=SIZE[0], height=SIZE[1])
    centre = {}
    for on in (True, False):
        predictor = Predictor(_SeesB(gt_b), None, config=InferConfig(propagate=on), detector=lambda frame: [])
        out = predictor.predict_video(video_, known, frames=[last], reader=_Frames(frames))
        centre[on] = {p.track_id: np.array(p.box.center) for p in out.frame(last).persons}
    assert np.linalg.norm(centre[True][0] - np.array(box_a.center)) < 1.0
    assert np.linalg.norm(centre[False][0] - np.array(box_a.center)) > 20.0  # without B's carried labels
    assert np.linalg.norm(centre[True][1] - np.array(box_b.center) - [2.0 * (start - last), 0.0]) < 3.0


def test_a_hidden_person_s_box_keeps_the_pace_of_their_labels() -> None:
    frames, gt_a, gt_b = _render_two(num_frames=19)
    # As above, and A's box was also drawn on frame 4: A walked 2 px/frame right between the labels. From
    # frame 10 on the backbone sees only B (who walks over A); A's box walks on at A's pace instead of
    # holding, and ends on A, where A's joints are still followed by nothing.
    start, last = 10, len(frames) - 1

    def box(joints: np.ndarray) -> Box:
        return Box.from_xyxy(*(joints.min(axis=0) - 5), *(joints.max(axis=0) + 5))

    two = _label(gt_a, start)
    two[2:, 2] = 0
    people = [Person(two, track_id=0, box=box(gt_a[start])), Person(_label(gt_b, start), track_id=1, box=box(gt_b[start]))]
    earlier = Frame(4, [Person(track_id=0, box=box(gt_a[4]))], is_labeled=True)
    known = Video("v", len(frames), [earlier, Frame(start, people, is_labeled=True)], width=SIZE[0], height=SIZE[1])
    predictor = Predictor(_SeesB(gt_b), None, config=InferConfig(propagate=True), detector=lambda frame: [])
    out = predictor.predict_video(Video("v", len(frames), width=SIZE[0], height=SIZE[1]), known, frames=[last],
                                  reader=_Frames(frames))
    centre = {p.track_id: np.array(p.box.center) for p in out.frame(last).persons}
    assert np.linalg.norm(centre[0] - np.array(box(gt_a[last]).center)) < 1.0  # held, it would be 16 px behind
    assert np.linalg.norm(centre[1] - np.array(box(gt_b[last]).center)) < 3.0


def test_a_person_wholly_behind_another_walks_on_at_the_pace_of_their_labels() -> None:
    frames, gt_a, gt_b = _render_behind(num_frames=13)
    # A is labelled on frames 0 and 4 (2 px/frame right, both times wholly behind B), B on frame 4. The flow
    # cannot follow A from frame 4 on; A's joints walk on at the pace of A's two labels instead of staying
    # where labelled, and stay weak (the backbone still decides where it sees A).
    targets = list(range(5, len(frames)))
    err = {}
    for labels_a in ({0: _label(gt_a, 0), 4: _label(gt_a, 4)}, {4: _label(gt_a, 4)}):
        carried = propagate_people(_gray(frames), {0: labels_a, 1: {4: _label(gt_b, 4)}},
                                   {0: targets, 1: targets}, num_frames=len(frames))
        assert (carried[0][targets[-1]].conf < PROPAGATION_TRUST).all()
        err[len(labels_a)] = np.median(np.linalg.norm(carried[0][targets[-1]].xy - gt_a[targets[-1]], axis=1))
    assert err[2] < 2.0 and err[1] > 12.0, err
    assert np.allclose(label_pace({0: _label(gt_a, 0), 4: _label(gt_a, 4)}, 4, 1), [2.0, 0.0])
    assert np.allclose(label_pace({0: _label(gt_a, 0), 4: _label(gt_a, 4)}, 0, -1), [-2.0, 0.0])
    assert label_pace({4: _label(gt_a, 4)}, 4, 1) is None


def test_a_pace_is_measured_over_at_least_a_few_frames_where_labels_allow() -> None:
    # Labels on consecutive frames: one frame of a hand-placed joint's noise would be that much drift per
    # frame; the nearest label at least PACE_MIN_SPAN frames away measures the pace instead.
    assert pace_label([0, 7, 8], 8, 1) == 0 and pace_label([3, 4, 7, 8], 8, 1) == 4
    assert pace_label([5, 7, 8], 8, 1) == 5  # none that far: the farthest
    assert pace_label([8, 9, 20], 8, -1) == 20 and pace_label([8], 8, -1) is None
    walk = {f: np.hstack([SPRITE_JOINTS + [2.0 * f, 0.0], np.full((NUM_KEYPOINTS, 1), 2.0)]) for f in (0, 7, 8)}
    walk[7][:, 0] += 3.0  # the label on frame 7 placed 3 px off
    assert np.allclose(label_pace(walk, 8, 1), [2.0, 0.0])
