"""Tests for model.transforms: box -> centre/scale, affine maps, crops, flips, input tensors, warps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from annotation_io.skeletons import FLIP_PAIRS
from annotation_io.types import Box
from model.heatmaps import decode, render_gaussians
from model.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CropGeometry,
    apply_affine,
    box_to_center_scale,
    crop_frames,
    crop_geometry,
    crop_image,
    crop_to_frame,
    flip_heatmaps,
    flip_image,
    flip_keypoints,
    frame_to_crop,
    frame_to_heatmap,
    get_affine_transform,
    heatmap_to_frame,
    heatmap_to_heatmap_affine,
    inside_crop,
    to_input_tensor,
    warp_heatmaps,
)

# ---------------------------------------------------------------- box -> centre / scale


def test_square_box_grows_height_to_aspect_then_enlarges() -> None:
    center, scale = box_to_center_scale(Box(10, 20, 100, 100))
    np.testing.assert_allclose(center, [60.0, 70.0])
    # w = 100 stays; h = 100 / 0.75 = 133.33; both / 200 * 1.25.
    np.testing.assert_allclose(scale, [100 / 200 * 1.25, (100 / 0.75) / 200 * 1.25])
    np.testing.assert_allclose(scale, [0.625, 0.8333333333333334])


def test_tall_box_grows_width_and_exact_aspect_box_is_unchanged() -> None:
    _, scale = box_to_center_scale(Box(0, 0, 60, 200))
    np.testing.assert_allclose(scale, [150 / 200 * 1.25, 200 / 200 * 1.25])
    _, scale = box_to_center_scale(Box(0, 0, 75, 100), enlarge=1.0, pixel_std=100.0)
    np.testing.assert_allclose(scale, [0.75, 1.0])


@pytest.mark.parametrize("box", [Box(0, 0, 0, 0), Box(0, 0, -5, 0), Box(0, 0, float("nan"), 10)])
def test_degenerate_box_is_rejected(box: Box) -> None:
    with pytest.raises(ValueError, match="box"):
        box_to_center_scale(box)


def test_crop_geometry_takes_aspect_from_input_size() -> None:
    geom = crop_geometry(Box(0, 0, 100, 100), input_size=(64, 64), heatmap_size=(16, 16))
    np.testing.assert_allclose(geom.scale, [0.625, 0.625])
    assert geom.stride == (4.0, 4.0)


def test_crop_geometry_validates_fields() -> None:
    with pytest.raises(ValueError, match="scale"):
        CropGeometry(np.zeros(2), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="center"):
        CropGeometry(np.zeros(3), np.ones(2))
    with pytest.raises(ValueError, match="heatmap_size"):
        CropGeometry(np.zeros(2), np.ones(2), heatmap_size=(72, 0))


def test_crop_geometry_equality_hash_and_helpers() -> None:
    a = crop_geometry(Box(10, 20, 100, 100))
    b = crop_geometry(Box(10, 20, 100, 100))
    assert a == b and hash(a) == hash(b)
    assert a.scaled(2.0) != a
    np.testing.assert_allclose(a.scaled(2.0).scale, a.scale * 2)
    assert a.rotated(30).rotation == 30.0
    np.testing.assert_allclose(a.flipped(640).center, [640 - 1 - 60, 70])
    assert a.frame_per_heatmap_px == pytest.approx(200 * 0.625 / 72)


# ---------------------------------------------------------------- affine maps


def test_affine_maps_box_centre_to_crop_centre_and_corners_inside() -> None:
    box = Box(10, 20, 100, 100)
    geom = crop_geometry(box)
    np.testing.assert_allclose(frame_to_crop(np.array(box.center), geom), [144.0, 192.0], atol=1e-9)
    corners = np.array([[10, 20], [110, 20], [10, 120], [110, 120]], dtype=float)
    crop = frame_to_crop(corners, geom)
    a = 288 / 125.0  # crop px per frame px: the 100 px width enlarged to 125 fills 288
    np.testing.assert_allclose(crop[0], [144 - 50 * a, 192 - 50 * a], atol=1e-9)
    np.testing.assert_allclose(crop[3], [144 + 50 * a, 192 + 50 * a], atol=1e-9)
    assert inside_crop(crop).all()
    # The enlarged, aspect-fixed box fills the crop exactly.
    big = np.array([[60 - 62.5, 70 - 250 / 3], [60 + 62.5, 70 + 250 / 3]])
    np.testing.assert_allclose(frame_to_crop(big, geom), [[0, 0], [288, 384]], atol=1e-9)


def test_heatmap_to_frame_is_the_reference_formula() -> None:
    geom = crop_geometry(Box(37.5, 12.25, 81.0, 190.0))
    rng = np.random.default_rng(0)
    hm = rng.uniform([0, 0], [71, 95], size=(50, 2))
    k = 200 * geom.scale[0] / 72
    expected = np.stack([geom.center[0] + (hm[:, 0] - 36) * k, geom.center[1] + (hm[:, 1] - 48) * k], 1)
    np.testing.assert_allclose(heatmap_to_frame(hm, geom), expected, atol=1e-9)
    assert k == pytest.approx(200 * geom.scale[1] / 96)


@pytest.mark.parametrize("rotation", [0.0, 17.0, -90.0])
def test_round_trips_are_exact(rotation: float) -> None:
    geom = crop_geometry(Box(200, 100, 50, 160), rotation=rotation)
    pts = np.random.default_rng(1).uniform(0, 640, size=(40, 2))
    np.testing.assert_allclose(heatmap_to_frame(frame_to_heatmap(pts, geom), geom), pts, atol=1e-9)
    np.testing.assert_allclose(crop_to_frame(frame_to_crop(pts, geom), geom), pts, atol=1e-9)
    # Heatmap pixels are crop pixels / stride (no half-pixel term).
    np.testing.assert_allclose(frame_to_heatmap(pts, geom) * 4, frame_to_crop(pts, geom), atol=1e-9)


def test_rotation_follows_hrnet_direction_and_is_isotropic() -> None:
    geom = crop_geometry(Box(0, 0, 150, 200), rotation=90.0)
    a = 288 / (200 * geom.scale[0])
    d = 20.0
    # With rot=90 the frame direction +x (HRNet's rotated "up" vector) becomes crop "up".
    got = frame_to_crop(geom.center + np.array([[d, 0.0], [0.0, d]]), geom)
    np.testing.assert_allclose(got, [[144, 192 - d * a], [144 + d * a, 192]], atol=1e-9)


def test_shift_and_inverse_options() -> None:
    center, scale = np.array([50.0, 60.0]), np.array([1.0, 4 / 3])
    fwd = get_affine_transform(center, scale, 0.0, (288, 384), shift=(0.1, 0.0))
    np.testing.assert_allclose(apply_affine(center + [20.0, 0.0], fwd), [144, 192], atol=1e-9)
    inv = get_affine_transform(center, scale, 0.0, (288, 384), inv=True)
    np.testing.assert_allclose(apply_affine(np.array([144.0, 192.0]), inv), center, atol=1e-9)
    with pytest.raises(ValueError, match="points"):
        apply_affine(np.zeros((3, 3)), fwd)


def test_heatmap_to_heatmap_affine_goes_through_the_frame() -> None:
    src = crop_geometry(Box(100, 80, 60, 150))
    dst = crop_geometry(Box(110, 70, 70, 170), rotation=12.0)
    pts = np.random.default_rng(2).uniform(0, 70, size=(20, 2))
    via_frame = frame_to_heatmap(heatmap_to_frame(pts, src), dst)
    np.testing.assert_allclose(apply_affine(pts, heatmap_to_heatmap_affine(src, dst)), via_frame, atol=1e-9)
    np.testing.assert_allclose(heatmap_to_heatmap_affine(src, src), [[1, 0, 0], [0, 1, 0]], atol=1e-12)


# ---------------------------------------------------------------- crops


def _coordinate_image(h: int = 240, w: int = 320) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([xs, ys, np.ones_like(xs)], axis=-1)


def test_crop_image_samples_the_frame_at_crop_to_frame_positions() -> None:
    img = _coordinate_image()
    geom = crop_geometry(Box(120, 60, 60, 100), rotation=20.0)
    crop = crop_image(img, geom)
    assert crop.shape == (384, 288, 3) and crop.dtype == np.float32
    # Bilinear sampling of a linear image is exact: every crop pixel holds its frame position.
    vs, us = np.mgrid[0:384:37, 0:288:29]
    uv = np.stack([us.ravel(), vs.ravel()], 1).astype(float)
    np.testing.assert_allclose(crop[vs.ravel(), us.ravel(), :2], crop_to_frame(uv, geom), atol=2e-2)


def test_crop_image_border_is_black_and_channels_are_kept() -> None:
    img = np.full((50, 60, 3), 200, dtype=np.uint8)
    geom = crop_geometry(Box(0, 0, 60, 50))  # the enlarged crop reaches beyond the frame
    crop = crop_image(img, geom)
    assert crop.dtype == np.uint8 and crop.shape == (384, 288, 3)
    assert crop[0, 0].tolist() == [0, 0, 0] and crop[192, 144].tolist() == [200, 200, 200]
    assert crop_image(img[..., 0], geom).shape == (384, 288)
    assert crop_image(img[..., :1], geom).shape == (384, 288, 1)
    with pytest.raises(ValueError, match="image"):
        crop_image(np.zeros((0, 5, 3), np.uint8), geom)


def test_crop_frames_uses_one_transform_for_all_frames() -> None:
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(3)]
    geom = crop_geometry(Box(40, 20, 50, 80), input_size=(48, 64), heatmap_size=(12, 16))
    crops = crop_frames(frames, geom)
    assert crops.shape == (3, 64, 48, 3)
    for f, c in zip(frames, crops):
        np.testing.assert_array_equal(c, crop_image(f, geom))
    with pytest.raises(ValueError, match="at least one"):
        crop_frames([], geom)


# ---------------------------------------------------------------- flips


def test_flip_keypoints_mirrors_x_and_swaps_pairs() -> None:
    rng = np.random.default_rng(4)
    kp = np.concatenate([rng.integers(0, 100, (17, 2)), np.full((17, 1), 2)], 1).astype(float)
    kp[4, 2] = 0  # right ear absent
    flipped = flip_keypoints(kp, 100)
    for a, b in FLIP_PAIRS:
        assert flipped[a, 0] == 99 - kp[b, 0] or kp[b, 2] == 0
        assert flipped[b, 1] == kp[a, 1]
    assert flipped[0, 0] == 99 - kp[0, 0] and flipped[1, 1] == kp[1, 1]
    np.testing.assert_array_equal(flipped[3], [0, 0, 0])  # the absent joint landed in slot 3
    # The flipped point sees the same content in the flipped image.
    img = rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)
    f_img = flip_image(img)
    for j in range(17):
        if kp[j, 2] > 0:
            jj = {a: b for p in FLIP_PAIRS for a, b in (p, p[::-1])}.get(j, j)
            x, y = int(flipped[jj, 0]), int(flipped[jj, 1])
            np.testing.assert_array_equal(f_img[y, x], img[int(kp[j, 1]), int(kp[j, 0])])
    with pytest.raises(ValueError, match="out of range"):
        flip_keypoints(np.zeros((5, 2)), 10)


def test_flipped_geometry_mirrors_crop_with_hrnet_one_pixel_bias() -> None:
    geom = crop_geometry(Box(100, 50, 70, 180))
    pts = np.random.default_rng(5).uniform(100, 170, size=(10, 2))
    u = frame_to_crop(pts, geom)
    u_f = frame_to_crop(flip_keypoints(pts, 640, flip_pairs=()), geom.flipped(640))
    np.testing.assert_allclose(u_f[:, 0], 288 - u[:, 0], atol=1e-9)  # = (W-1) - u + 1
    np.testing.assert_allclose(u_f[:, 1], u[:, 1], atol=1e-9)


def test_flip_heatmaps_numpy_and_torch_agree() -> None:
    hm = np.random.default_rng(6).random((2, 17, 6, 5)).astype(np.float32)
    out = flip_heatmaps(hm)
    np.testing.assert_array_equal(out[:, 5], hm[:, 6, :, ::-1])
    np.testing.assert_array_equal(out[:, 0], hm[:, 0, :, ::-1])
    np.testing.assert_array_equal(flip_heatmaps(out), hm)
    np.testing.assert_array_equal(flip_heatmaps(torch.from_numpy(hm)).numpy(), out)
    shifted = flip_heatmaps(hm, shift=True)
    np.testing.assert_array_equal(shifted[..., 1:], out[..., :-1])
    assert not shifted[..., 0].any()
    np.testing.assert_array_equal(flip_heatmaps(torch.from_numpy(hm), shift=True).numpy(), shifted)


# ---------------------------------------------------------------- input tensor


def test_to_input_tensor_converts_bgr_to_normalised_rgb() -> None:
    crops = np.zeros((2, 4, 3, 3), dtype=np.uint8)
    crops[..., 0], crops[..., 1], crops[..., 2] = 10, 128, 250  # B, G, R
    crops[1, 0, 0] = (0, 0, 255)
    x = to_input_tensor(crops)
    assert x.shape == (2, 3, 4, 3) and x.dtype == torch.float32
    rgb = np.array([250, 128, 10]) / 255.0
    expected = (rgb - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(x[0, :, 2, 1].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(x[1, 0, 0, 0].item(), (1.0 - 0.485) / 0.229, rtol=1e-6)
    np.testing.assert_allclose(to_input_tensor(list(crops)).numpy(), x.numpy())
    with pytest.raises(TypeError, match="uint8"):
        to_input_tensor(crops.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        to_input_tensor(crops[0])


# ---------------------------------------------------------------- heatmap warps


def test_identity_warp_reproduces_input() -> None:
    hm = torch.rand(2, 3, 12, 9)
    eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3)
    torch.testing.assert_close(warp_heatmaps(hm, eye), hm, atol=1e-5, rtol=0)


def test_integer_translation_and_scaling_hit_pixel_centres() -> None:
    hm = torch.rand(1, 2, 10, 8)
    shift = torch.tensor([[[1.0, 0, 2.0], [0, 1.0, 1.0]]])  # src (x, y) -> (x + 2, y + 1)
    out = warp_heatmaps(hm, shift)
    torch.testing.assert_close(out[..., 1:, 2:], hm[..., :-1, :-2], atol=1e-5, rtol=0)
    assert out[..., 0, :].abs().max() < 1e-6 and out[..., :, :2].abs().max() < 1e-6
    double = warp_heatmaps(hm, np.array([[[2.0, 0, 0], [0, 2.0, 0]]]), size=(20, 16))
    assert double.shape == (1, 2, 20, 16)
    torch.testing.assert_close(double[..., ::2, ::2][..., :10, :8], hm, atol=1e-5, rtol=0)
    # Half-way samples are bilinear averages of the neighbours.
    torch.testing.assert_close(double[..., 4, 3], (hm[..., 2, 1] + hm[..., 2, 2]) / 2, atol=1e-5, rtol=0)


def test_warp_moves_a_rendered_peak_where_the_affine_says() -> None:
    src = crop_geometry(Box(100, 80, 60, 150))
    dsts = [crop_geometry(Box(95, 90, 70, 160)), crop_geometry(Box(105, 75, 55, 140), rotation=15.0)]
    rng = np.random.default_rng(7)
    p = rng.uniform([25, 35], [45, 60], size=(2, 5, 2))  # well inside both crops
    hm = render_gaussians(torch.tensor(p, dtype=torch.float32), torch.ones(2, 5))
    affines = np.stack([heatmap_to_heatmap_affine(src, d) for d in dsts])
    warped = warp_heatmaps(hm, torch.tensor(affines, dtype=torch.float32))
    coords, maxvals = decode(warped)
    expected = np.stack([apply_affine(p[i], affines[i]) for i in range(2)])
    assert np.abs(coords - expected).max() <= 0.5
    assert (maxvals > 0.8).all()


def test_warp_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="affines"):
        warp_heatmaps(torch.zeros(2, 1, 4, 4), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="heatmaps"):
        warp_heatmaps(torch.zeros(1, 4, 4), torch.zeros(1, 2, 3))


def test_reference_scale_is_consistent() -> None:
    geom = crop_geometry(Box(0, 0, 150, 200))
    assert geom.frame_per_heatmap_px == pytest.approx(math.hypot(*(
        heatmap_to_frame(np.array([37.0, 48.0]), geom) - heatmap_to_frame(np.array([36.0, 48.0]), geom))))
