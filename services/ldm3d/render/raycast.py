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

import numpy as np

from .camera import Camera
from .geometry import Panorama, SphereMesh, build_mesh, lon_lat, pixel_lat, pixel_lon


def sample_directions(pano: Panorama, dirs: np.ndarray) -> np.ndarray:
    """Panorama colour (bilinear, wrapping at the ±180° seam) in each direction ``[..., 3]`` → ``uint8 [..., 3]``."""
    lon, lat = lon_lat(dirs)
    return sample_lonlat(pano.rgb, lon, lat)


def sample_lonlat(rgb: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    x = (lon + math.pi) * (w / (2 * math.pi)) - 0.5
    y = np.clip((math.pi / 2 - lat) * (h / math.pi) - 0.5, 0.0, h - 1.0)
    x0 = np.floor(x)
    fx = (x - x0).astype(np.float32)[..., None]
    x0 = x0.astype(np.int64) % w
    x1 = (x0 + 1) % w
    y0 = np.minimum(np.floor(y).astype(np.int64), max(h - 2, 0))
    y1 = np.minimum(y0 + 1, h - 1)
    fy = (y - y0).astype(np.float32)[..., None]
    flat = rgb.reshape(-1, 3).astype(np.float32)
    top = flat[y0 * w + x0] * (1 - fx) + flat[y0 * w + x1] * fx
    bot = flat[y1 * w + x0] * (1 - fx) + flat[y1 * w + x1] * fx
    return np.clip(top * (1 - fy) + bot * fy + 0.5, 0, 255).astype(np.uint8)


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
        lon, lat = lon_lat(fv)
        self._far_color = sample_lonlat(pano.background_rgb, lon, lat)  # [F, 3]

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
        tt = np.where(hit, t, 0.0).astype(np.float32)[..., None]
        p = rays[..., :3] + tt * rays[..., 3:]
        out = sample_directions(self.pano, p)
        out[~hit] = 0
        prim_ok = np.where(hit, prim, 0).astype(np.int64)
        stretched = hit & self.mesh.stretched[prim_ok]
        out[stretched] = self._far_color[prim_ok[stretched]]
        return out


def render_perspective(
    pano: Panorama, camera: Camera, size: tuple[int, int], scene: MeshScene | None = None, eye_offset: float = 0.0
) -> np.ndarray:
    """One pinhole frame ``uint8 [H, W, 3]``; ``scene`` is needed (built once) unless the eye is at the origin."""
    origin, dirs = camera.rays(size, eye_offset)
    if float(np.linalg.norm(origin)) < 1e-9:
        return sample_directions(pano, dirs)
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
