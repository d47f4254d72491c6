"""Pinhole frames: orientation, agreement of the two paths, and perspective growth when the camera moves closer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ldm3d.render.camera import Camera, look_at_angles, path_cameras
from ldm3d.render.geometry import pixel_lat, pixel_lon, prepare_panorama
from ldm3d.render.raycast import MeshScene, render_perspective

from .synth import random_pano, smooth_pano


def test_camera_orientation_pins_yaw_and_pitch():
    w, h = 256, 128
    rgb = random_pano(w, h) // 2
    lon, lat = np.meshgrid(np.degrees(pixel_lon(w)), np.degrees(pixel_lat(h)))
    rgb[(np.abs(lon - 90) < 4) & (np.abs(lat - 45) < 4)] = (255, 255, 0)  # right and up
    rgb[(np.abs(lon) < 4) & (np.abs(lat) < 4)] = (0, 255, 255)  # straight ahead
    pano = prepare_panorama(rgb, np.full((h, w), 32768, np.uint16))
    ahead = render_perspective(pano, Camera(hfov=60), (64, 48))
    assert tuple(ahead[24, 32]) == (0, 255, 255)
    right_up = render_perspective(pano, Camera(yaw=90, pitch=45, hfov=60), (64, 48))
    assert tuple(right_up[24, 32]) == (255, 255, 0)
    # Image right is world right: with yaw = 80 the marker at 90° lies right of the centre.
    frame = render_perspective(pano, Camera(yaw=80, pitch=45, hfov=60), (64, 48))
    cols = np.nonzero((frame[..., 0] == 255) & (frame[..., 1] == 255) & (frame[..., 2] == 0))[1]
    assert cols.mean() > 36
    assert look_at_angles((0, 0, 0), (1, 0, 0)) == pytest.approx((90.0, 0.0))


def test_raycast_and_resampling_agree_at_the_origin():
    rgb, depth = smooth_pano(256, 128, wobble=0.3)
    pano = prepare_panorama(rgb, depth)
    cam = Camera(yaw=30, pitch=-10, hfov=80)
    direct = render_perspective(pano, cam, (96, 64)).astype(int)  # no ray casting at the origin
    origin, dirs = cam.rays((96, 64))
    cast = MeshScene(pano).cast(origin.astype(np.float32), dirs).astype(int)
    assert np.abs(direct - cast).mean() < 0.5


@pytest.mark.parametrize("renderer", ["raycast", "epipolar"])
def test_moving_closer_enlarges_a_near_region_as_perspective_predicts(renderer):
    w, h, radius = 512, 256, 2.0
    rgb = np.full((h, w, 3), 40, np.uint8)
    depth = np.full((h, w), 32768, np.uint16)
    lon, lat = np.meshgrid(pixel_lon(w), pixel_lat(h))
    half = math.radians(8)
    patch = (np.abs(lon) < half) & (np.abs(lat) < half)
    rgb[patch] = (255, 255, 255)
    depth[patch] = 52428  # d = 0.8 → r = R·(1 + 0.5 − 0.8) = 1.4 m
    pano = prepare_panorama(rgb, depth, radius=radius)
    r_patch = radius * (1 + 0.5 - 0.8)
    scene = MeshScene(pano)
    size, hfov = (400, 300), 60.0
    f = size[0] / 2 / math.tan(math.radians(hfov) / 2)
    # Where the patch ends: its surface stops at its outermost vertex (pixel centre); from the origin, which sees
    # the panorama itself, the bilinear texture fades over the next half pixel on each side.
    n = int(patch[h // 2].sum())
    half_surface = (n - 1) / 2 * (2 * math.pi / w)
    half_texture = n / 2 * (2 * math.pi / w)
    widths = []
    for dz in (0.0, 0.4, 0.8):
        frame = render_perspective(pano, Camera((0.0, 0.0, -dz), hfov=hfov), size, scene, renderer=renderer)
        row = frame[size[1] // 2, :, 0].astype(float)
        measured = (row - 40).clip(0).sum() / (255 - 40)  # sub-pixel width of the white run
        # The patch's side edges: points at longitude ±a on the patch's surface, seen from z = -dz.
        a = half_texture if dz == 0 else half_surface
        predicted = 2 * f * r_patch * math.sin(a) / (r_patch * math.cos(a) - dz)
        # Ray casting meets the mesh exactly; the epipolar renderer samples each half-plane every half panorama
        # pixel and puts a depth edge at the last sample before it: each edge may move inwards by up to that.
        half_sample = f * (math.pi / w) * r_patch / (r_patch - dz)
        assert measured == pytest.approx(predicted, abs=0.6 if renderer == "raycast" else max(1.0, half_sample)), dz
        widths.append(measured)
    assert widths[0] < widths[1] < widths[2]
    # Twice the move, more than twice the growth: 1 / distance.
    assert (widths[2] - widths[1]) > (widths[1] - widths[0]) * 1.2


def test_camera_paths_stay_inside_and_move():
    for name in ("orbit", "dolly", "look-around"):
        cams = path_cameras(name, 24, 12.0, 2.0, 75.0)
        assert len(cams) == 24
        assert max(np.linalg.norm(c.position) for c in cams) <= 0.5 + 1e-9  # well inside r_min = R/2
        assert len({(c.position, c.yaw, c.pitch) for c in cams}) > 12
    cap = path_cameras("look-around", 8, 8.0, 2.0, 60.0, cap_hfov=90.0)
    assert max(abs(c.yaw) for c in cap) <= 15.0 + 1e-9


def test_keyframes_file(tmp_path):
    import json

    from ldm3d.errors import InvalidArgument

    p = tmp_path / "move.json"
    p.write_text(
        json.dumps(
            {
                "keyframes": [
                    {"t": 0, "position": [0, 0, 0], "yaw": 0},
                    {"t": 1, "position": [0, 0, -0.5], "yaw": 40, "hfov": 50},
                ]
            }
        )
    )
    cams = path_cameras(str(p), 5, 4.0, 2.0, 70.0)
    assert cams[2].position == pytest.approx((0, 0, -0.25)) and cams[2].yaw == pytest.approx(20.0)
    assert cams[2].hfov == pytest.approx(60.0) and cams[4].position == pytest.approx((0, 0, -0.5))
    p.write_text('{"keyframes": [{"t": 0, "position": [0, 0]}]}')
    with pytest.raises(InvalidArgument, match="keyframe 0"):
        path_cameras(str(p), 5, 4.0, 2.0, 70.0)


@pytest.mark.parametrize(
    "camera",
    [
        Camera((0.2, 0.1, -0.3), yaw=20, pitch=5, hfov=75),  # the epipole is in the frame
        Camera((0.0, 0.0, -0.5), hfov=75),  # dolly: the epipole is the frame's centre
        Camera((0.3, 0.0, 0.0), hfov=75),  # orbit-like: the epipole is off to the side
        Camera((0.3, 0.2, 0.1), yaw=150, pitch=-30, hfov=90),  # looking back, away from it
        Camera((0.0, 0.0, -0.5), yaw=180, hfov=75),  # the anti-epipole (towards the origin) is the centre
    ],
)
def test_epipolar_renderer_agrees_with_ray_casting(camera):
    from ldm3d.render.epipolar import render_perspective_epipolar

    rgb, depth = smooth_pano(256, 128, wobble=0.3)
    depth[50:65, 120:140] = 62000  # a near box: discontinuities and disocclusions
    pano = prepare_panorama(rgb, depth)
    origin, dirs = camera.rays((160, 120))
    cast = MeshScene(pano).cast(origin.astype(np.float32), dirs).astype(int)
    epi = render_perspective_epipolar(pano, origin, dirs).astype(int)
    err = np.abs(cast - epi).max(axis=-1)
    # Equal everywhere but along the box's silhouette, which may move by a fraction of a panorama pixel.
    assert err.mean() < 1.0 and np.median(err) <= 1 and (err > 8).mean() < 0.04


def test_missing_open3d_is_a_clear_precondition_error(monkeypatch):
    import sys

    from ldm3d.errors import FailedPrecondition

    monkeypatch.setitem(sys.modules, "open3d", None)  # what `import open3d` sees when it is not installed
    rgb, depth = smooth_pano(64, 32)
    with pytest.raises(FailedPrecondition, match="libusb-1.0-0"):
        MeshScene(prepare_panorama(rgb, depth))
