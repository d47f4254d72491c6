"""The §4.3 depth protocol: scale/shift alignment in disparity space, AbsRel, RMSE, and every degenerate case."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from ldm3d.errors import InvalidArgument
from ldm3d.evaluation.depth_metrics import DepthMetrics, depth_metrics, fit_scale_shift, mean_metrics, valid_mask


def _synthetic(shape=(48, 64), scale=2.5e-5, shift=0.03, seed=1):
    """A metric depth map and a disparity-like prediction with r = scale·p + shift exactly."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 10.0, size=shape)
    pred = (1.0 / depth - shift) / scale
    return pred, depth


def test_known_scale_and_shift_are_recovered_and_metrics_are_zero():
    pred, depth = _synthetic()
    for samples in (pred.size, 500):  # all pixels, and a real random sample
        m = depth_metrics(pred, depth, samples=samples, seed=3)
        assert m.scale == pytest.approx(2.5e-5, rel=1e-6)
        assert m.shift == pytest.approx(0.03, rel=1e-6)
        assert m.abs_rel < 1e-9 and m.rmse < 1e-9
        assert m.valid_pixels == pred.size and m.evaluated_pixels == pred.size
        assert m.sampled_pixels == min(samples, pred.size)


def test_known_scale_and_shift_on_a_16_bit_prediction():
    # The real input type: uint16 disparity; the reference is built from it so the relation stays exact.
    rng = np.random.default_rng(2)
    pred = rng.integers(0, 65536, size=(32, 40), dtype=np.uint16)
    depth = 1.0 / (1.7e-5 * pred.astype(np.float64) + 0.1)
    m = depth_metrics(pred, depth)
    assert m.scale == pytest.approx(1.7e-5, rel=1e-6) and m.shift == pytest.approx(0.1, rel=1e-6)
    assert m.abs_rel < 1e-9 and m.rmse < 1e-9


def test_hand_worked_example():
    # p = [0, 1, 2, 3]; reference disparity r = [0.1, 0.3, 0.2, 0.5], i.e. depth [10, 10/3, 5, 2] m.
    # p̄ = 1.5, r̄ = 0.275; p − p̄ = [−1.5, −0.5, 0.5, 1.5]; r − r̄ = [−0.175, 0.025, −0.075, 0.225]
    # Σ(p−p̄)(r−r̄) = 0.2625 − 0.0125 − 0.0375 + 0.3375 = 0.55;  Σ(p−p̄)² = 5
    # s = 0.55 / 5 = 0.11;  t = 0.275 − 0.11·1.5 = 0.11
    # aligned disparity 0.11·(1 + p) = [0.11, 0.22, 0.33, 0.44] → depth [100/11, 50/11, 100/33, 25/11]
    # errors vs [10, 10/3, 5, 2]: [−10/11, 40/33, −65/33, 3/11]
    # relative errors: [1/11, 4/11, 13/33, 3/22] = [6, 24, 26, 9] / 66 → AbsRel = (65/66) / 4 = 65/264
    # squared errors: [900, 1600, 4225, 81] / 1089 → mean 6806/4356 → RMSE = √6806 / 66
    pred = np.array([[0, 1], [2, 3]], dtype=np.uint16)
    ref = np.array([[10.0, 10.0 / 3.0], [5.0, 2.0]])
    m = depth_metrics(pred, ref)
    assert m.scale == pytest.approx(0.11, abs=1e-12)
    assert m.shift == pytest.approx(0.11, abs=1e-12)
    assert m.abs_rel == pytest.approx(float(Fraction(65, 264)), rel=1e-12)  # 0.24621...
    assert m.rmse == pytest.approx(math.sqrt(6806) / 66, rel=1e-12)  # 1.24997...
    assert (m.valid_pixels, m.sampled_pixels, m.evaluated_pixels, m.nonpositive_pixels) == (4, 4, 4, 0)


def test_result_does_not_depend_on_image_size_or_pixel_order():
    pred = np.array([[0, 1], [2, 3]], dtype=np.float64)
    ref = np.array([[10.0, 10.0 / 3.0], [5.0, 2.0]])
    base = depth_metrics(pred, ref)
    tiled = depth_metrics(np.tile(pred, (3, 5)), np.tile(ref, (3, 5)))
    perm = np.random.default_rng(0).permutation(np.tile(pred, (3, 5)).size)
    shuffled = depth_metrics(
        np.tile(pred, (3, 5)).ravel()[perm].reshape(5, 12), np.tile(ref, (3, 5)).ravel()[perm].reshape(5, 12)
    )
    for other in (tiled, shuffled):
        for key in ("abs_rel", "rmse", "scale", "shift"):
            assert getattr(other, key) == pytest.approx(getattr(base, key), rel=1e-12)
    assert tiled.valid_pixels == 60


def test_sampling_is_seeded_and_recorded():
    pred, depth = _synthetic(seed=5)
    noisy = pred * (1 + 0.05 * np.random.default_rng(9).standard_normal(pred.shape))
    a = depth_metrics(noisy, depth, samples=200, seed=11)
    b = depth_metrics(noisy, depth, samples=200, seed=11)
    c = depth_metrics(noisy, depth, samples=200, seed=12)
    assert a == b
    assert a.scale != c.scale
    assert (a.samples, a.seed, a.sampled_pixels) == (200, 11, 200)
    assert a.to_dict()["seed"] == 11 and 0 < a.abs_rel < 1


def test_invalid_pixels_are_ignored():
    pred, depth = _synthetic(shape=(20, 20))
    depth = depth.copy()
    pred = pred.copy()
    depth[0, :5] = np.nan  # unknown reference
    depth[1, :5] = -1.0  # negative reference
    depth[2, :5] = 0.0  # zero reference: no inverse
    pred[3, :5] = np.inf
    pred[4, :5] = -3.0
    m = depth_metrics(pred, depth)
    assert m.valid_pixels == 400 - 25
    assert m.abs_rel < 1e-9 and m.scale == pytest.approx(2.5e-5, rel=1e-6)
    assert valid_mask(pred, depth).sum() == 375


def test_nonpositive_aligned_disparity_is_excluded_and_counted():
    # p = [0, 1, 2, 3], r = [0.01, 0.01, 0.01, 1.0]: s = 1.485/5 = 0.297, t = 0.2575 − 0.4455 = −0.188,
    # so the pixel with p = 0 gets aligned disparity −0.188 and has no depth.
    pred = np.array([[0, 1], [2, 3]], dtype=np.uint16)
    ref = 1.0 / np.array([[0.01, 0.01], [0.01, 1.0]])
    m = depth_metrics(pred, ref)
    assert m.scale == pytest.approx(0.297) and m.shift == pytest.approx(-0.188)
    assert (m.valid_pixels, m.evaluated_pixels, m.nonpositive_pixels) == (4, 3, 1)
    d = 1.0 / np.array([0.109, 0.406, 0.703])
    r = np.array([100.0, 100.0, 1.0])
    assert m.abs_rel == pytest.approx(np.mean(np.abs(d - r) / r))
    assert math.isfinite(m.abs_rel) and math.isfinite(m.rmse)


def test_constant_prediction_is_refused():
    with pytest.raises(InvalidArgument, match="constant") as exc:
        depth_metrics(np.full((8, 8), 1234, np.uint16), np.random.default_rng(0).uniform(1, 5, (8, 8)))
    assert exc.value.field == "pred"


def test_constant_reference_gives_zero_scale_and_zero_error():
    pred, _ = _synthetic(shape=(8, 8))
    m = depth_metrics(pred, np.full((8, 8), 3.0))
    assert m.scale == 0.0 and m.shift == pytest.approx(1 / 3) and m.abs_rel == pytest.approx(0.0, abs=1e-15)


def test_size_mismatch_is_refused():
    with pytest.raises(InvalidArgument, match="64x48 but reference is 32x48") as exc:
        depth_metrics(np.zeros((48, 64)), np.ones((48, 32)))
    assert exc.value.field == "reference"
    with pytest.raises(InvalidArgument, match="2-D"):
        depth_metrics(np.zeros((4, 4, 3)), np.ones((4, 4, 3)))


@pytest.mark.parametrize(
    "pred, ref, field",
    [
        (np.arange(16.0).reshape(4, 4), np.full((4, 4), np.nan), "reference"),
        (np.arange(16.0).reshape(4, 4), -np.ones((4, 4)), "reference"),
        (-np.ones((4, 4)), np.ones((4, 4)), "pred"),
        (np.full((4, 4), np.nan), np.ones((4, 4)), "pred"),
    ],
)
def test_all_invalid_maps_are_refused(pred, ref, field):
    with pytest.raises(InvalidArgument, match="valid in both maps") as exc:
        depth_metrics(pred, ref)
    assert exc.value.field == field


@pytest.mark.parametrize("samples", [1, 0, -5, 2.5, True])
def test_bad_sample_size_is_refused(samples):
    with pytest.raises(InvalidArgument) as exc:
        depth_metrics(np.arange(4.0).reshape(2, 2), np.ones((2, 2)), samples=samples)
    assert exc.value.field == "samples"


def test_fit_scale_shift_and_mean_metrics():
    s, t = fit_scale_shift(np.array([1.0, 2.0, 4.0]), np.array([3.0, 5.0, 9.0]))
    assert (s, t) == pytest.approx((2.0, 1.0))
    with pytest.raises(InvalidArgument):
        fit_scale_shift(np.array([1.0]), np.array([1.0]))
    ms = [DepthMetrics(0.1, 1.0, 1, 0, 4, 4, 4, 0, 10, 0), DepthMetrics(0.3, 2.0, 1, 0, 4, 4, 4, 0, 10, 0)]
    assert mean_metrics(ms) == pytest.approx({"abs_rel": 0.2, "rmse": 1.5, "images": 2})
    with pytest.raises(InvalidArgument):
        mean_metrics([])
