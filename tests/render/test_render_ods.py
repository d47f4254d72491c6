"""The geometry proofs for 360 output: mono reproduces the input; ODS disparity has the predicted sign and size;
the scanline renderer agrees with one-ray-at-a-time tracing and with open3d ray casting on the mesh."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ldm3d.render.geometry import pixel_lat, pixel_lon, prepare_panorama
from ldm3d.render.ods import render_equirect, render_ods
from ldm3d.render.reference import render_ods_reference

from .synth import random_pano, smooth_pano


def test_mono_from_origin_reproduces_the_panorama_exactly():
    rgb = random_pano(256, 128)
    depth = np.full((128, 256), 32768, np.uint16)  # d = 0.5: the undisplaced sphere
    pano = prepare_panorama(rgb, depth)
    np.testing.assert_array_equal(render_equirect(pano, (256, 128), "mono"), rgb)
    # The mono view does not depend on depth at all (a ray from the origin meets a radial surface in its own
    # direction), seam included.
    wobbly = prepare_panorama(rgb, random_pano(256, 128, seed=1)[..., 0].astype(np.uint16) * 257)
    np.testing.assert_array_equal(render_equirect(wobbly, (256, 128), "mono"), rgb)
    # At twice the size it is a bilinear resampling: compare with the smooth field it was drawn from.
    srgb, sdepth = smooth_pano(256, 128)
    big = render_equirect(prepare_panorama(srgb, sdepth), (512, 256), "mono").astype(int)
    ref, _ = smooth_pano(512, 256)
    err = np.abs(big - ref.astype(int))[16:-16]  # away from the poles
    assert err.mean() < 1.5 and np.percentile(err, 99) <= 6


def test_ods_with_zero_ipd_is_mono():
    rgb, depth = smooth_pano(128, 64, wobble=0.3)
    pano = prepare_panorama(rgb, depth)
    mono = render_equirect(pano, (128, 64), "mono")
    np.testing.assert_array_equal(render_ods(pano, (128, 64), ipd=0.0), np.concatenate([mono, mono]))


def _patch_scene(d_patch: float, w=512, h=256, radius=0.5):
    """Grey noise sphere (d = 0.5) with a red patch (±10°, given depth) ahead and a blue marker (d = 0.5) at 90°."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(60, 140, (h, w, 3), dtype=np.uint8)
    depth = np.full((h, w), 32768, np.uint16)
    lon, lat = np.meshgrid(np.degrees(pixel_lon(w)), np.degrees(pixel_lat(h)))
    patch = (np.abs(lon) < 10) & (np.abs(lat) < 10)
    marker = (np.abs(lon - 90) < 5) & (np.abs(lat - 30) < 5)
    rgb[patch] = (250, 0, 0)
    rgb[marker] = (0, 0, 250)
    depth[patch] = round(d_patch * 65535)
    return prepare_panorama(rgb, depth, radius=radius, depth_strength=1.0)


def _centroid(img, channel) -> float:
    """Sub-pixel column centroid of the saturated red (0) or blue (2) pixels, weighted by how saturated they are."""
    other = [c for c in range(3) if c != channel]
    wgt = np.clip(img[..., channel].astype(float) - img[..., other].max(axis=-1) - 100.0, 0.0, None)
    return float((wgt.sum(axis=0) * np.arange(img.shape[1])).sum() / wgt.sum())


def test_near_patch_has_crossed_disparity_of_predicted_size():
    w, h, radius, ipd = 512, 256, 0.5, 0.064
    px_per_rad = w / (2 * math.pi)
    ods = render_ods(_patch_scene(1.0, w, h, radius), (w, h), ipd)
    left, right = ods[:h], ods[h:]  # left eye on top
    mono = render_equirect(_patch_scene(1.0, w, h, radius), (w, h), "mono")
    r_patch = radius * (1 + 1.0 * (0.5 - 1.0))  # linear mapping, d = 1 → R/2
    expect_patch = 2 * math.asin(ipd / 2 / r_patch) * px_per_rad  # 20.9 px
    expect_sphere = 2 * math.asin(ipd / 2 / radius) * px_per_rad  # 10.4 px
    d_patch = _centroid(left, 0) - _centroid(right, 0)
    d_sphere = _centroid(left, 2) - _centroid(right, 2)
    assert d_patch > 0, "crossed disparity: a near point lies further right in the left eye"
    assert d_patch == pytest.approx(expect_patch, abs=0.6)
    assert d_sphere == pytest.approx(expect_sphere, abs=0.6)
    assert d_patch > d_sphere + 8
    # Each eye shifts by half of it, symmetrically about the mono view.
    assert _centroid(left, 0) - _centroid(mono, 0) == pytest.approx(expect_patch / 2, abs=0.4)
    # The same patch left at d = 0.5 shows only the sphere's disparity.
    flat = render_ods(_patch_scene(0.5, w, h, radius), (w, h), ipd)
    assert _centroid(flat[:h], 0) - _centroid(flat[h:], 0) == pytest.approx(expect_sphere, abs=0.6)


def test_eye_separation_shrinks_towards_the_poles():
    # With the ×cos(lat) separation a point's longitude shift is asin(a / r) at every latitude, so its angular
    # disparity on the sphere, Δlon · cos(lat), falls to zero at the poles (no pole artefacts).
    w, h, radius, ipd = 512, 256, 0.5, 0.064
    rng = np.random.default_rng(4)
    rgb = rng.integers(60, 140, (h, w, 3), dtype=np.uint8)
    lon, lat = np.meshgrid(np.degrees(pixel_lon(w)), np.degrees(pixel_lat(h)))
    rgb[(np.abs(lon) < 5) & (np.abs(lat - 60) < 4)] = (0, 0, 250)
    pano = prepare_panorama(rgb, np.full((h, w), 32768, np.uint16), radius=radius)
    ods = render_ods(pano, (w, h), ipd)
    shift_px = _centroid(ods[:h], 2) - _centroid(ods[h:], 2)
    assert shift_px == pytest.approx(2 * math.asin(ipd / 2 / radius) * w / (2 * math.pi), abs=0.6)


def test_scanline_matches_one_ray_at_a_time_tracing():
    rgb, depth = smooth_pano(48, 24, wobble=0.35)
    pano = prepare_panorama(rgb, depth, radius=0.5)
    for eye in ("left", "right"):
        fast = render_equirect(pano, (48, 24), eye).astype(int)
        slow = render_ods_reference(pano, (48, 24), eye=eye).astype(int)
        err = np.abs(fast - slow)[3:-3]
        assert err.max() <= 2, eye
    # ...and the stereo shift is real: the eyes differ from the mono view by far more than that.
    assert np.abs(render_equirect(pano, (48, 24), "mono").astype(int) - slow)[3:-3].mean() > 8


def test_scanline_matches_open3d_raycasting_on_the_mesh():
    from ldm3d.render.raycast import MeshScene, render_ods_raycast

    rgb, depth = smooth_pano(256, 128, wobble=0.35)
    pano = prepare_panorama(rgb, depth, radius=0.5)
    scan = render_ods(pano, (256, 128)).astype(int)
    cast = render_ods_raycast(MeshScene(pano), (256, 128)).astype(int)
    err = np.abs(scan - cast).reshape(2, 128, 256, 3)[:, 12:-12]
    assert err.mean() < 0.5 and err.max() <= 3


def test_discontinuity_is_filled_with_background_not_smeared():
    # A red near patch over a uniform green sphere: the disoccluded strip beside it must be green, not pink.
    w, h = 512, 256
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[...] = (0, 200, 0)
    depth = np.full((h, w), 32768, np.uint16)
    lon = np.degrees(pixel_lon(w))
    cols = np.abs(lon) < 10
    rgb[:, cols] = (250, 0, 0)
    depth[:, cols] = 65535
    pano = prepare_panorama(rgb, depth, radius=0.5)
    left = render_equirect(pano, (w, h), "left", ipd=0.064)
    row = left[h // 2].astype(int)
    mixed = (row[:, 0] > 30) & (row[:, 1] > 30)  # neither pure red nor pure green
    assert mixed.sum() <= 2
