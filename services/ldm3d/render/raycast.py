"""Ray casting against the displaced-sphere mesh with open3d's ``RaycastingScene`` (CPU, no display).

Used for perspective frames from cameras away from the origin, for ODS from a moved centre (360 video along a
path) and as the independent cross-check of the scanline ODS renderer in :mod:`.ods`. Shading is the same as
there: a hit takes the panorama's colour in the direction of the hit point (the texture a radial surface carries),
a hit on a stretched face the background colour at its far vertex (background extension), a miss is black.

A camera at the origin needs no ray casting: a ray from the origin meets a radial surface in its own direction, so
the frame is a resampling of the panorama (:func:`sample_directions`).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .camera import Camera
from .geometry import Panorama, SphereMesh, build_mesh, pixel_lat, pixel_lon


def sample_directions(pano: Panorama, dirs: np.ndarray) -> np.ndarray:
    """Panorama colour (bilinear, wrapping at the ±180° seam) in each direction ``[..., 3]`` → ``uint8 [..., 3]``."""
    return Texture(pano.rgb).sample_directions(dirs)


def sample_lonlat(rgb: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    return Texture(rgb).sample(lon, lat)


class Texture:
    """An equirectangular image prepared for many bilinear look-ups: float32, the first column repeated at the end."""

    def __init__(self, rgb: np.ndarray):
        self.h, self.w = rgb.shape[:2]
        self.flat = np.concatenate([rgb, rgb[:, :1]], axis=1).astype(np.float32).reshape(-1, 3)

    def sample_directions(self, dirs: np.ndarray) -> np.ndarray:
        # Large frames are shaded in bands of rows, one per core (numpy releases the GIL in its loops).
        n = min(os.cpu_count() or 1, 8)
        if dirs.ndim < 3 or dirs.shape[0] < 2 * n or dirs[..., 0].size < 250_000:
            return self._sample_directions(dirs)
        bands = np.array_split(np.arange(dirs.shape[0]), n)
        with ThreadPoolExecutor(n) as pool:
            parts = pool.map(lambda b: self._sample_directions(dirs[b[0] : b[-1] + 1]), bands)
            return np.concatenate(list(parts))

    def _sample_directions(self, dirs: np.ndarray) -> np.ndarray:
        x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
        return self.sample(np.arctan2(x, -z), np.arctan2(y, np.hypot(x, z)))

    def sample(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        h, w = self.h, self.w
        x = (lon.astype(np.float32) + np.float32(math.pi)) * np.float32(w / (2 * math.pi)) - np.float32(0.5)
        x = np.where(x < 0, x + np.float32(w), x)  # the half pixel left of the first centre wraps to the last
        y = np.clip(
            (np.float32(math.pi / 2) - lat.astype(np.float32)) * np.float32(h / math.pi) - np.float32(0.5), 0.0, h - 1.0
        )
        x0 = np.minimum(x.astype(np.int32), w - 1)
        y0 = np.minimum(y.astype(np.int32), max(h - 2, 0))
        fx = (x - x0)[..., None]
        fy = (y - y0)[..., None]
        i00 = y0 * (w + 1) + x0
        i10 = i00 + (w + 1) if h > 1 else i00
        t = self.flat
        top = np.take(t, i00, axis=0)  # np.take gathers rows ~4x faster than fancy indexing
        top += (np.take(t, i00 + 1, axis=0) - top) * fx
        bot = np.take(t, i10, axis=0)
        bot += (np.take(t, i10 + 1, axis=0) - bot) * fx
        top += (bot - top) * fy
        top += np.float32(0.5)
        return np.clip(top, 0, 255).astype(np.uint8)


class MeshScene:
    """A displaced sphere in an open3d ``RaycastingScene``; build once, cast many frames."""

    def __init__(self, pano: Panorama, mesh: SphereMesh | None = None):
        import open3d as o3d  # imported here: open3d is the optional [render] extra and slow to import

        self._o3d = o3d
        self.pano = pano
        self.mesh = mesh if mesh is not None else build_mesh(pano)
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(
            o3d.core.Tensor(np.ascontiguousarray(self.mesh.vertices, dtype=np.float32)),
            o3d.core.Tensor(np.ascontiguousarray(self.mesh.faces, dtype=np.uint32)),
        )
        fv = self.mesh.vertices[self.mesh.far_vertex.astype(np.int64)]
        self._far_color = Texture(pano.background_rgb).sample_directions(fv)  # [F, 3]
        self._texture = Texture(pano.rgb)

    def cast(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Colours ``uint8 [..., 3]`` for rays with origins and directions ``[..., 3]`` (broadcast together)."""
        shape = dirs.shape[:-1]
        rays = np.empty(shape + (6,), dtype=np.float32)
        rays[..., :3] = origins
        rays[..., 3:] = dirs
        ans = self.scene.cast_rays(self._o3d.core.Tensor(rays.reshape(-1, 6)))
        t = ans["t_hit"].numpy().reshape(shape)
        prim = ans["primitive_ids"].numpy().reshape(shape)
        hit = np.isfinite(t)
        t[~hit] = 0.0
        p = rays[..., 3:] * t[..., None]
        p += rays[..., :3]
        out = self._texture.sample_directions(p)
        out[~hit] = 0
        prim = np.where(hit, prim, 0)
        stretched = hit & self.mesh.stretched[prim]
        out[stretched] = self._far_color[prim[stretched]]
        return out


RENDERERS = ("raycast", "epipolar")


def render_perspective(
    pano: Panorama,
    camera: Camera,
    size: tuple[int, int],
    scene: MeshScene | None = None,
    eye_offset: float = 0.0,
    renderer: str = "raycast",
) -> np.ndarray:
    """One pinhole frame ``uint8 [H, W, 3]``.

    At the origin it is a resampling. Elsewhere ``renderer="raycast"`` casts rays at ``scene`` (built once per
    panorama; built here if None) and ``"epipolar"`` uses :mod:`.epipolar` (no mesh, slightly softer texture).
    """
    origin, dirs = camera.rays(size, eye_offset)
    if float(np.linalg.norm(origin)) < 1e-9:
        return scene._texture.sample_directions(dirs) if scene is not None else sample_directions(pano, dirs)
    if renderer == "epipolar":
        from .epipolar import render_perspective_epipolar

        return render_perspective_epipolar(pano, origin, dirs)
    if scene is None:
        scene = MeshScene(pano)
    return scene.cast(origin.astype(np.float32), dirs)


def render_ods_raycast(
    scene: MeshScene, size: tuple[int, int], ipd: float = 0.064, centre=(0.0, 0.0, 0.0), eyes=("left", "right")
) -> np.ndarray:
    """ODS by casting every ray against the mesh, from any ``centre``: the eyes stacked top-bottom (left on top)."""
    w, h = size
    lon = pixel_lon(w, np.float32)[None, :]
    lat = pixel_lat(h, np.float32)[:, None]
    cl = np.cos(lat)
    dirs = np.empty((h, w, 3), dtype=np.float32)
    dirs[..., 0] = cl * np.sin(lon)
    dirs[..., 1] = np.sin(lat)
    dirs[..., 2] = -cl * np.cos(lon)
    a = np.float32(ipd / 2.0) * cl  # [h, 1]
    right = np.zeros((h, w, 3), dtype=np.float32)
    right[..., 0] = np.cos(lon) * a
    right[..., 2] = np.sin(lon) * a
    c = np.asarray(centre, dtype=np.float32)
    views = []
    for eye in eyes:
        sign = {"left": -1.0, "right": 1.0, "mono": 0.0}[eye]
        views.append(scene.cast(c + np.float32(sign) * right, dirs))
    return np.concatenate(views, axis=0)
