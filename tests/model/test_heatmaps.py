"""Tests for model.heatmaps: encode targets, render sub-pixel Gaussians, decode peaks back to frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from annotation_io.types import Box
from model.heatmaps import decode, decode_to_frame, encode, render_gaussians
from model.transforms import crop_geometry, frame_to_crop, heatmap_to_frame

# ---------------------------------------------------------------- encode


def test_encode_puts_unit_peak_at_rounded_integer_centre() -> None:
    joints = np.array([[101.0, 57.9], [10.0, 10.0]])
    hm, w = encode(joints, np.array([2, 1]))
    assert hm.shape == (2, 96, 72) and hm.dtype == np.float32 and w.dtype == np.float32
    np.testing.assert_array_equal(w, [1, 1])
    mu_x, mu_y = int(101 / 4 + 0.5), int(57.9 / 4 + 0.5)  # 25, 14
    assert np.unravel_index(hm[0].argmax(), hm[0].shape) == (mu_y, mu_x)
    assert hm[0, mu_y, mu_x] == pytest.approx(1.0)
    assert hm[0, mu_y, mu_x + 3] == pytest.approx(math.exp(-9 / 18))
    assert hm[0, mu_y + 2, mu_x - 1] == pytest.approx(math.exp(-5 / 18))
    # The window is 3 sigma = 9 px each side: 9 is inside, 10 is cut.
    assert hm[0, mu_y, mu_x + 9] == pytest.approx(math.exp(-81 / 18))
    assert hm[0, mu_y, mu_x + 10] == 0 and hm[0, mu_y + 10, mu_x] == 0
    assert (hm[0] > 0).sum() == 19 * 19


def test_encode_zeroes_unlabelled_and_far_outside_joints() -> None:
    joints = np.array([[100.0, 100.0], [-60.0, 100.0], [-30.0, 100.0], [100.0, 400.0], [np.nan, 0.0]])
    hm, w = encode(joints, np.array([0, 1, 1, 1, 0]))
    # unlabelled; window fully left; window partly inside (mu = -7); partly below; NaN but unlabelled
    np.testing.assert_array_equal(w, [0, 0, 1, 1, 0])
    assert not hm[[0, 1, 4]].any()
    mu_x = int(-30 / 4 + 0.5)  # truncation towards zero, as HRNet: -7
    assert mu_x == -7
    assert hm[2, 25, 0] == pytest.approx(math.exp(-49 / 18))
    assert hm[2, 25, 2] == pytest.approx(math.exp(-81 / 18))
    assert hm[2, 25, 3] == 0
    assert hm[3, 95, 25] == pytest.approx(math.exp(-(100 - 95) ** 2 / 18))  # mu_y = 100
    hm_far, w_far = encode(np.array([[100.0, 420.0]]), np.array([1]))  # mu_y = 105: 96..114, all off
    assert w_far[0] == 0 and not hm_far.any()


def test_encode_follows_int_truncation_for_small_negative_coordinates() -> None:
    hm, w = encode(np.array([[-3.0, 40.0]]), np.array([1]))
    # int(-0.75 + 0.5) = int(-0.25) = 0, so the peak sits on column 0 (floor would give -1).
    assert w[0] == 1 and hm[0, 10, 0] == pytest.approx(1.0)


def test_encode_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="joints_crop"):
        encode(np.zeros((17, 3)), np.ones(17))
    with pytest.raises(ValueError, match="visible"):
        encode(np.zeros((17, 2)), np.ones(15))
    with pytest.raises(ValueError, match=r"labelled joints \[2\]"):
        encode(np.array([[0, 0], [1, 1], [np.inf, 3]]), np.ones(3))


def test_encode_custom_size_sigma_and_stride() -> None:
    hm, w = encode(np.array([[20.0, 30.0]]), np.array([1]), heatmap_size=(12, 16), sigma=1.0, stride=4)
    assert hm.shape == (1, 16, 12)
    assert hm[0, 8, 5] == pytest.approx(1.0) and hm[0, 8, 8] == pytest.approx(math.exp(-9 / 2))
    assert hm[0, 8, 9] == 0


# ---------------------------------------------------------------- codec round trip


@pytest.mark.parametrize("rotation", [0.0, 25.0])
def test_codec_round_trip_is_within_half_a_heatmap_pixel(rotation: float) -> None:
    rng = np.random.default_rng(0)
    box = Box(213.3, 87.1, 96.0, 250.0)
    geom = crop_geometry(box, rotation=rotation)
    frame_pts = rng.uniform([box.x, box.y], [box.x + box.w, box.y + box.h], size=(64, 17, 2))
    heatmaps = []
    for pts in frame_pts:
        hm, w = encode(frame_to_crop(pts, geom), np.full(17, 2))
        assert w.all()
        heatmaps.append(hm)
    batch = np.stack(heatmaps)
    coords, maxvals = decode(batch)
    np.testing.assert_allclose(maxvals, 1.0, atol=1e-6)
    true_hm = frame_to_crop(frame_pts, geom) / 4
    assert np.abs(coords - true_hm).max() <= 0.5 + 1e-9
    back = np.stack([heatmap_to_frame(c, geom) for c in coords])
    k = geom.frame_per_heatmap_px
    assert np.linalg.norm(back - frame_pts, axis=-1).max() <= 0.5 * math.sqrt(2) * k + 1e-9
    xy, mv = decode_to_frame(torch.from_numpy(batch), [geom] * len(batch))
    np.testing.assert_allclose(xy, back, atol=1e-9)
    np.testing.assert_array_equal(mv, maxvals)


# ---------------------------------------------------------------- render_gaussians


def test_render_matches_encode_at_integer_centres() -> None:
    joints = np.array([[101.0, 57.0], [40.0, 300.0]])
    target, _ = encode(joints, np.ones(2))
    mu = np.trunc(joints / 4 + 0.5)
    rendered = render_gaussians(torch.tensor(mu[None]), torch.ones(1, 2))
    assert rendered.shape == (1, 2, 96, 72) and rendered.dtype == torch.float64
    np.testing.assert_allclose(rendered[0].numpy(), target, atol=1e-6)


def test_render_sub_pixel_peaks_decode_within_a_quarter_pixel() -> None:
    rng = np.random.default_rng(1)
    xy = torch.tensor(rng.uniform([3, 3], [68, 92], size=(4, 17, 2)), dtype=torch.float32)
    weight = torch.tensor(rng.uniform(0.2, 2.0, size=(4, 17)), dtype=torch.float32)
    hm = render_gaussians(xy, weight, sigma=2.0)
    coords, maxvals = decode(hm)
    assert np.abs(coords - xy.numpy()).max() <= 0.25 + 1e-6
    np.testing.assert_allclose(maxvals, weight.numpy() * np.exp(
        -((np.round(xy.numpy()) - xy.numpy()) ** 2).sum(-1) / 8), rtol=1e-5)
    # Directly evaluated values off the peak.
    x0, y0 = xy[2, 5].tolist()
    assert hm[2, 5, 40, 30].item() == pytest.approx(
        weight[2, 5].item() * math.exp(-((30 - x0) ** 2 + (40 - y0) ** 2) / 8) * (abs(30 - x0) <= 6)
        * (abs(40 - y0) <= 6), abs=1e-6)


def test_render_zeroes_non_finite_centres_and_honours_window() -> None:
    xy = torch.tensor([[[10.0, 10.0], [float("nan"), 5.0], [20.0, 20.0]]])
    hm = render_gaussians(xy, torch.tensor([[1.0, 1.0, 0.0]]), size=(32, 24), window=None)
    assert hm.shape == (1, 3, 32, 24)
    assert torch.isfinite(hm).all() and not hm[0, 1:].any()
    assert hm[0, 0, 10, 23] > 0  # untruncated
    assert render_gaussians(xy[:, :1], torch.ones(1, 1), size=(32, 24))[0, 0, 10, 23] == 0
    with pytest.raises(ValueError, match="weight"):
        render_gaussians(xy, torch.ones(3))
    with pytest.raises(ValueError, match="xy"):
        render_gaussians(xy[0], torch.ones(3))


# ---------------------------------------------------------------- decode


def _peak_map(h: int, w: int, x: int, y: int) -> np.ndarray:
    hm = np.zeros((h, w), np.float32)
    hm[y, x] = 1.0
    return hm


def test_decode_quarter_offset_by_hand() -> None:
    a = _peak_map(96, 72, 10, 20)
    a[20, 11], a[20, 9], a[21, 10], a[19, 10] = 0.5, 0.2, 0.3, 0.3  # right larger, y tie
    b = _peak_map(96, 72, 30, 40)
    b[40, 29], b[39, 30] = 0.4, 0.4  # left and up larger
    c = _peak_map(96, 72, 1, 50)  # px = 1: not strictly inside, no offset
    c[50, 2] = 0.9
    d = _peak_map(96, 72, 2, 94)  # px = 2 inside, py = 94 = H - 2 inside
    d[94, 3], d[95, 2] = 0.9, 0.9
    e = np.full((96, 72), -0.5, np.float32)  # maxval <= 0: coordinates zeroed
    e[30, 30] = -0.1
    coords, maxvals = decode(np.stack([a, b, c, d, e])[None])
    np.testing.assert_allclose(
        coords[0], [[10.25, 20.0], [29.75, 39.75], [1.0, 50.0], [2.25, 94.25], [0.0, 0.0]])
    np.testing.assert_allclose(maxvals[0], [1, 1, 1, 1, -0.1], rtol=1e-6)


def test_decode_torch_and_numpy_agree_and_bad_input_fails() -> None:
    hm = torch.rand(3, 4, 16, 12)
    c1, m1 = decode(hm)
    c2, m2 = decode(hm.numpy())
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(m1, m2)
    assert c1.shape == (3, 4, 2) and m1.shape == (3, 4)
    with pytest.raises(ValueError, match="NaN"):
        decode(np.full((1, 1, 4, 4), np.nan))
    with pytest.raises(ValueError, match="B, K, H, W"):
        decode(np.zeros((4, 4)))


def test_decode_to_frame_checks_geometries() -> None:
    geom = crop_geometry(Box(0, 0, 30, 40))
    with pytest.raises(ValueError, match="2 crop geometries"):
        decode_to_frame(np.zeros((1, 17, 96, 72)), [geom, geom])
    with pytest.raises(ValueError, match="heatmap_size"):
        decode_to_frame(np.zeros((1, 17, 64, 48)), [geom])
