"""Conventions, depth → radius, the mesh (seam, poles, winding, texture coordinates) and cap projection."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ldm3d.errors import InvalidArgument
from ldm3d.render.geometry import (
    build_mesh,
    depth_to_radius,
    direction,
    lon_lat,
    pixel_lat,
    pixel_lon,
    prepare_panorama,
)

from .synth import smooth_pano


def test_axes_follow_360_player_conventions():
    # The image centre is forward (-Z), longitude grows to the right (+X), the top row is up (+Y).
    np.testing.assert_allclose(direction(0.0, 0.0), [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(direction(math.pi / 2, 0.0), [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(direction(0.0, math.pi / 2), [0, 1, 0], atol=1e-12)
    lon, lat = pixel_lon(8), pixel_lat(4)
    assert lon[0] < 0 < lon[-1] and lat[0] > 0 > lat[-1]
    assert lon[4] == pytest.approx(math.pi / 8) and lat[0] == pytest.approx(3 * math.pi / 8)
    v = direction(lon[None, :], lat[:, None]) * 3.0
    lo, la = lon_lat(v)
    np.testing.assert_allclose(lo, np.broadcast_to(lon[None, :], lo.shape), atol=1e-12)
    np.testing.assert_allclose(la, np.broadcast_to(lat[:, None], la.shape), atol=1e-12)


@pytest.mark.parametrize(
    "mapping, s, near, far",
    [("linear", 1.0, 1.0, 3.0), ("linear", 0.5, 1.5, 2.5), ("disparity", 1.0, 4 / 3, 4.0)],
)
def test_depth_to_radius(mapping, s, near, far):
    r = depth_to_radius(np.array([0.5, 1.0, 0.0]), mapping, s, 2.0)
    np.testing.assert_allclose(r, [2.0, near, far], rtol=1e-6)  # d = 0.5 stays on the sphere; 1 nearer; 0 farther
    assert depth_to_radius(np.array([0.9]), mapping, 0.0, 2.0)[0] == 2.0  # strength 0: a plain sphere


def test_disparity_mapping_is_linear_in_inverse_distance():
    d = np.linspace(0, 1, 11)
    inv = 1.0 / depth_to_radius(d, "disparity", 1.5, 2.0)
    assert np.allclose(np.diff(inv), np.diff(inv)[0], rtol=1e-5)


@pytest.mark.parametrize("bad", [2.0, -0.1])
def test_depth_strength_range(bad):
    with pytest.raises(InvalidArgument, match="depth_strength"):
        depth_to_radius(np.array([0.5]), "linear", bad, 2.0)


def test_mesh_is_closed_faces_inward_and_uvs_are_exact():
    rgb, depth = smooth_pano(32, 16, wobble=0.2)
    pano = prepare_panorama(rgb, depth)
    mesh = build_mesh(pano)
    v = mesh.vertices[mesh.faces.astype(np.int64)]
    normal = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    assert (np.einsum("ij,ij->i", normal, v.mean(axis=1)) < 0).all()  # every face faces the viewer at the origin
    # Closed: weld vertices by position (seam duplicates, per-column pole vertices) → every edge has two faces.
    _, weld = np.unique(np.round(mesh.vertices, 5), axis=0, return_inverse=True)
    f = weld.reshape(-1)[mesh.faces.astype(np.int64)]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()
    # Texture coordinates are pixel centres; the seam column repeats u + 1 so it wraps exactly.
    h, w = depth.shape
    grid_uv = mesh.uvs[: h * (w + 1)].reshape(h, w + 1, 2)
    np.testing.assert_allclose(grid_uv[0, :w, 0], (np.arange(w) + 0.5) / w, atol=1e-7)
    np.testing.assert_allclose(grid_uv[:, w, 0], 1 + 0.5 / w, atol=1e-7)
    np.testing.assert_allclose(grid_uv[:, 0, 1], (np.arange(h) + 0.5) / h, atol=1e-7)
    # Each vertex sits at its pixel's radius, in its pixel's direction.
    grid_v = mesh.vertices[: h * (w + 1)].reshape(h, w + 1, 3)[:, :w]
    np.testing.assert_allclose(np.linalg.norm(grid_v, axis=-1), pano.radius, rtol=1e-5)
    lo, _la = lon_lat(grid_v)
    np.testing.assert_allclose(lo[0], pixel_lon(w), atol=1e-5)
    assert not mesh.stretched.any()


def test_mesh_step_and_discontinuity_flags():
    rgb, depth = smooth_pano(256, 128)
    depth[40:80, 80:120] = 65535  # a near box (r = R/2): its sides are discontinuities
    pano = prepare_panorama(rgb, depth)
    assert pano.stretched_h[40:80, 79].all() and pano.stretched_h[40:80, 119].all()
    assert pano.stretched_v[39, 80:120].all() and not pano.stretched_h[100].any()
    full, coarse = build_mesh(pano), build_mesh(pano, step=2)
    assert full.stretched.sum() > 0 and coarse.stretched.sum() > 0
    assert len(coarse.faces) < len(full.faces) / 3
    kept = full.without_stretched()
    assert len(kept.faces) == (~full.stretched).sum()
    with pytest.raises(InvalidArgument, match="mesh_step"):
        build_mesh(pano, step=3)


def test_non_panoramic_input_maps_onto_a_cap():
    h, w = 64, 64
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2] = 255  # a white centre
    rgb[:, :4] = (255, 0, 0)  # the photo's left edge is red
    depth = np.full((h, w), 32768, np.uint16)
    pano = prepare_panorama(rgb, depth, hfov_deg=90.0)
    assert pano.projection == "cap" and pano.width == 2 * pano.height
    ph, pw = pano.height, pano.width
    assert pano.rgb[ph // 2, pw // 2].min() > 200  # photo centre → forward
    # The cap spans ±45° in longitude: red at its left edge, nothing beyond it.
    lon = np.degrees(pixel_lon(pw))
    red_cols = np.nonzero((pano.rgb[ph // 2, :, 0] > 200) & (pano.rgb[ph // 2, :, 1] < 50))[0]
    assert -46 < lon[red_cols].min() < -42 and lon[red_cols].max() < -40
    assert not pano.valid[:, np.abs(lon) > 46].any() and pano.valid[ph // 2, np.abs(lon) < 44].all()


def test_bad_geometry_inputs():
    rgb, depth = smooth_pano(64, 32)
    with pytest.raises(InvalidArgument, match="same size"):
        prepare_panorama(rgb[:, :32], depth)
    with pytest.raises(InvalidArgument, match="2:1"):
        prepare_panorama(rgb[:, :48], depth[:, :48], projection="equirect")
    with pytest.raises(InvalidArgument, match="hfov"):
        prepare_panorama(rgb[:, :48], depth[:, :48], hfov_deg=200)
