"""Ray casting against the displaced-sphere mesh with open3d's ``RaycastingScene`` (CPU, no display).

Used for perspective frames from cameras away from the origin, for ODS from a moved centre (360 video along a
path) and as the independent cross-check of the scanline ODS renderer in :mod:`.ods`. Shading is the same as
there: a hit takes the panorama's colour in the direction of the hit point (the texture a radial surface carries),
a hit on a stretched face the background colour at its far vertex (background extension), a miss is black.

A camera at the origin needs no ray casting: a ray from the origin meets a radial surface in its own direction, so
the frame is a resampling of the panorama (:func:`sample_directions`).
"""

from __future__ import annotations

import numpy as np

from ..errors import FailedPrecondition
from .camera import Camera
from .geometry import Panorama, SphereMesh, Texture, build_mesh, pixel_lat, pixel_lon


def sample_directions(pano: Panorama, dirs: np.ndarray) -> np.ndarray:
    """Panorama colour (bilinear, wrapping at the ±180° seam) in each direction ``[..., 3]`` → ``uint8 [..., 3]``."""
    return pano.texture().sample_directions(dirs)


def sample_lonlat(rgb: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    return Texture(rgb).sample(lon, lat)


class MeshScene:
    """A displaced sphere in an open3d ``RaycastingScene``; build once, cast many frames."""

    def __init__(self, pano: Panorama, mesh: SphereMesh | None = None):
        try:
            import open3d as o3d  # imported here: open3d is the optional [render] extra and slow to import
        except (ImportError, OSError) as exc:  # e.g. libusb-1.0.so.0 missing: open3d links it even on servers
            raise FailedPrecondition(
                f"open3d cannot be imported ({exc}): `apt-get install libusb-1.0-0` and `pip install -e '.[render]'`; "
                "perspective frames also render without it with --renderer epipolar"
            ) from None

        self._o3d = o3d
        self.pano = pano
        self.mesh = mesh if mesh is not None else build_mesh(pano)
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(
            o3d.core.Tensor(np.ascontiguousarray(self.mesh.vertices, dtype=np.float32)),
            o3d.core.Tensor(np.ascontiguousarray(self.mesh.faces, dtype=np.uint32)),
        )
        fv = self.mesh.vertices[self.mesh.far_vertex.astype(np.int64)]
        self._far_color = pano.texture(background=True).sample_directions(fv)  # [F, 3]
        self._texture = pano.texture()

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
