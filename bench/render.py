"""Render benchmark: rays/s and frames/s of the DepthFusion renderers, with ratios against two references.

    .venv/bin/python bench/render.py                  # 4096x2048/eye ODS, 1920x1080 frames, median of 3
    .venv/bin/python bench/render.py --repeat 1 --eye 1024x512 --frame 640x360   # a quick smoke run

Measured in one run on one synthetic 1024×512 RGBD panorama (the size of Intel/ldm3d-pano's output) with smooth
relief and near boxes (so depth discontinuities are exercised):

* the plain single-ray-at-a-time reference (:mod:`ldm3d.render.reference`, pure Python, timed on a small image):
  the floor every fast path is compared with;
* the scanline ODS renderer (:mod:`ldm3d.render.ods`), a 4096×2048-per-eye stereo still (16.8 M rays), against
  open3d ``RaycastingScene`` casting the same rays at the mesh;
* 1920×1080 perspective frames: from the origin (a resampling) and from a moved camera, by open3d ray casting
  (the default) and by epipolar half-planes (:mod:`ldm3d.render.epipolar`, ``--renderer epipolar``).

Wall time is what a user waits; CPU time is printed beside it because on a shared 2-core machine other processes
inflate wall time (the targets are for an otherwise idle 2-core CPU). Targets: the stereo still ≤ 3 s, a frame
≤ 0.3 s.
"""

from __future__ import annotations

import _stdlib_first  # noqa: F401,I001  (first: bench/queue.py must not shadow the standard library)
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
from ldm3d.render.camera import Camera
from ldm3d.render.geometry import pixel_lat, pixel_lon, prepare_panorama
from ldm3d.render.ods import render_ods
from ldm3d.render.raycast import MeshScene, render_ods_raycast, render_perspective
from ldm3d.render.reference import render_ods_reference


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def scene(w: int = 1024, h: int = 512):
    rng = np.random.default_rng(0)
    lon, lat = np.meshgrid(pixel_lon(w), pixel_lat(h))
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    d = 0.5 + 0.2 * np.sin(3 * lon) * np.cos(lat) ** 2 + 0.05 * np.sin(17 * lon + 5 * lat)
    for c in (-2.0, 0.3, 1.9):  # three near boxes: discontinuities
        d[(np.abs(lon - c) < 0.25) & (np.abs(lat) < 0.3)] = 0.9
    return rgb, np.rint(np.clip(d, 0, 1) * 65535).astype(np.uint16)


def timed(fn, repeat: int):
    """(median wall s, median CPU s, result) over ``repeat`` runs after one warm-up run (first-touch page faults)."""
    fn()
    walls, cpus = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pano", type=_size, default=(1024, 512), help="input panorama size")
    ap.add_argument("--eye", type=_size, default=(4096, 2048), help="ODS size per eye")
    ap.add_argument("--frame", type=_size, default=(1920, 1080), help="perspective frame size")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ref", type=_size, default=(32, 16), help="image size for the one-ray-at-a-time reference")
    ap.add_argument("--skip-open3d-ods", action="store_true", help="skip casting the ODS rays with open3d")
    args = ap.parse_args()

    rgb, depth = scene(*args.pano)
    pano = prepare_panorama(rgb, depth)
    t0 = time.perf_counter()
    mesh_scene = MeshScene(pano)
    mesh_scene.cast(np.zeros(3, np.float32), np.array([[0, 0, -1]], np.float32))  # open3d builds its BVH lazily
    build = time.perf_counter() - t0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# panorama {args.pano[0]}x{args.pano[1]}, mesh {len(mesh_scene.mesh.faces):,} triangles "
        f"(build + BVH {build:.2f} s); {os.cpu_count()} cores, load average {load:.2f}"
    )
    res = {}

    # 1. The floor: one ray at a time in Python.
    rw, rh = args.ref
    t0 = time.perf_counter()
    render_ods_reference(pano, (rw, rh), eye="left")
    ref_rps = rw * rh / (time.perf_counter() - t0)
    res["reference_rays_per_s"] = ref_rps
    print(f"reference   one ray at a time, {rw}x{rh} ODS eye        {ref_rps:12,.0f} rays/s")

    # 2. The ODS stereo still.
    ew, eh = args.eye
    rays = 2 * ew * eh
    wall, cpu, _ = timed(lambda: render_ods(pano, (ew, eh)), args.repeat)
    res.update(ods_wall_s=wall, ods_cpu_s=cpu, ods_rays_per_s=rays / wall)
    print(
        f"scanline    ODS stereo {ew}x{eh}/eye ({rays / 1e6:.1f} M rays) {wall:6.2f} s wall {cpu:6.2f} s CPU "
        f"{rays / wall:12,.0f} rays/s  x{rays / wall / ref_rps:,.0f} vs reference  "
        f"[target <= 3 s: {'met' if wall <= 3 else 'MISSED'}]"
    )
    if not args.skip_open3d_ods:
        t0, c0 = time.perf_counter(), time.process_time()
        render_ods_raycast(mesh_scene, (ew, eh))
        o_wall, o_cpu = time.perf_counter() - t0, time.process_time() - c0
        res.update(ods_open3d_wall_s=o_wall, ods_open3d_rays_per_s=rays / o_wall)
        print(
            f"open3d      ODS stereo, RaycastingScene + shading    {o_wall:6.2f} s wall {o_cpu:6.2f} s CPU "
            f"{rays / o_wall:12,.0f} rays/s  scanline is x{o_wall / wall:.1f} faster"
        )

    # 3. Perspective frames.
    fw, fh = args.frame
    moved = Camera((0.25, 0.1, -0.4), yaw=20, pitch=5, hfov=75)
    for key, cam, renderer, how in (
        ("origin", Camera(yaw=30, pitch=5, hfov=75), "raycast", "camera at origin (resampling)     "),
        ("moved_raycast", moved, "raycast", "moved camera (open3d cast)        "),
        ("moved_epipolar", moved, "epipolar", "moved camera (epipolar half-planes)"),
    ):
        wall, cpu, _ = timed(
            lambda cam=cam, renderer=renderer: render_perspective(pano, cam, (fw, fh), mesh_scene, renderer=renderer),
            args.repeat,
        )
        res[f"frame_{key}_wall_s"] = wall
        print(
            f"perspective {fw}x{fh} {how} {wall:6.3f} s wall {cpu:6.3f} s CPU {1 / wall:6.2f} frames/s "
            f"{fw * fh / wall:12,.0f} rays/s  x{fw * fh / wall / ref_rps:,.0f} vs reference  "
            f"[target <= 0.3 s: {'met' if wall <= 0.3 else 'MISSED'}]"
        )
    print(json.dumps({k: round(v, 4) for k, v in res.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
