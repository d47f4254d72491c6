"""The DepthFusion sphere: conventions, depth → radius, panorama preparation and the triangle mesh.

Conventions (the same as common 360 players and shared DESIGN.md §3), in metres, right-handed, OpenGL/glTF axes:

* ``+Y`` is up, ``-Z`` is forward (the centre of the equirectangular image), ``+X`` is the viewer's right.
* Longitude ``lon ∈ [-π, π)`` is 0 at the image centre and grows to the right (column ``x`` grows with it);
  latitude ``lat ∈ [-π/2, π/2]`` is +π/2 at the top row. Pixel ``(x, y)`` of a ``W×H`` panorama has its centre at
  ``lon = ((x + 0.5) / W) · 2π − π`` and ``lat = π/2 − ((y + 0.5) / H) · π``.
* ``direction(lon, lat) = (cos lat · sin lon, sin lat, −cos lat · cos lon)``.

Depth → radius, with ``d ∈ [0, 1]`` the 16-bit value / 65535 (larger = nearer, DESIGN.md §3), ``R`` the sphere
radius and ``s`` the depth strength (``0 ≤ s < 2`` keeps every radius positive and finite):

* ``linear`` (the paper's displacement, default): ``r = R · (1 + s · (0.5 − d))``; with ``s = 1`` r spans
  ``[0.5 R, 1.5 R]``.
* ``disparity`` (depth as inverse distance): ``1 / r = (1 / R) · (1 + s · (d − 0.5))``; with ``s = 1`` r spans
  ``[2/3 R, 2 R]``, and equal steps of ``d`` are equal steps of stereo disparity.

Both leave ``d = 0.5`` on the sphere, move ``d → 1`` towards the origin and ``d → 0`` away from it.

Depth discontinuities: an edge between two neighbouring samples is *stretched* when
``|r_a − r_b| / (min(r_a, r_b) · angle(a, b)) > edge_threshold`` — the tangent of the angle the edge makes with the
sphere (0 for a sphere, → ∞ across a jump). The renderers keep such triangles as geometry but colour them from their
far side (background extension), so a near object never smears into the background; mesh export drops them.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..codec import DEPTH_MAX, check_same_size
from ..errors import InvalidArgument, invalid

DEPTH_MAPPINGS = ("linear", "disparity")
PROJECTIONS = ("auto", "equirect", "cap")
# An equirectangular image must be 2:1 within this relative tolerance (1025×512 passes, 1000×512 does not).
EQUIRECT_ASPECT_TOLERANCE = 0.01


# --------------------------------------------------------------------------------------------- conventions
def pixel_lon(width: int, dtype=np.float64) -> np.ndarray:
    """Longitudes of the column centres of a ``width``-wide equirectangular image (radians)."""
    return ((np.arange(width, dtype=dtype) + 0.5) / width * 2.0 - 1.0) * dtype(math.pi)


def pixel_lat(height: int, dtype=np.float64) -> np.ndarray:
    """Latitudes of the row centres of a ``height``-tall equirectangular image (radians, top row first)."""
    return (0.5 - (np.arange(height, dtype=dtype) + 0.5) / height) * dtype(math.pi)


def direction(lon, lat) -> np.ndarray:
    """Unit direction(s) ``[..., 3]`` for longitude/latitude in radians (see the module docstring)."""
    lon, lat = np.broadcast_arrays(np.asarray(lon), np.asarray(lat))
    cl = np.cos(lat)
    return np.stack([cl * np.sin(lon), np.sin(lat), -cl * np.cos(lon)], axis=-1)


def lon_lat(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`direction` for vectors ``[..., 3]`` of any length."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    return np.arctan2(x, -z), np.arctan2(y, np.hypot(x, z))


def depth_to_radius(d: np.ndarray, mapping: str, strength: float, radius: float) -> np.ndarray:
    """Radius (metres) of each vertex for normalised depth ``d ∈ [0, 1]``; see the module docstring."""
    check_depth_params(mapping, strength, radius)
    d = np.asarray(d, dtype=np.float32)
    if mapping == "linear":
        return (radius * (1.0 + strength * (0.5 - d))).astype(np.float32)
    return (radius / (1.0 + strength * (d - 0.5))).astype(np.float32)


def check_depth_params(mapping: str, strength: float, radius: float) -> None:
    if mapping not in DEPTH_MAPPINGS:
        raise invalid("depth_mapping", mapping, f"use one of {', '.join(DEPTH_MAPPINGS)}")
    if not (0.0 <= strength < 2.0):
        raise invalid(
            "depth_strength", strength, "use 0 <= strength < 2 (2 would put d=1 at the origin or d=0 at infinity)"
        )
    if not (radius > 0.0 and math.isfinite(radius)):
        raise invalid("radius", radius, "use a positive sphere radius in metres")


# --------------------------------------------------------------------------------------------- the panorama
@dataclass
class Panorama:
    """An equirectangular RGBD panorama ready to render: colour, per-pixel radius and which pixels hold content.

    ``rgb`` uint8 ``[H, W, 3]``; ``radius`` float32 ``[H, W]`` in metres; ``valid`` bool ``[H, W]`` (False outside
    the cap of a non-panoramic input: rendered black, left out of meshes); ``stretched_h`` bool ``[H, W]`` marks the
    edge from pixel ``x`` to ``x + 1`` (wrapping) as a discontinuity, ``stretched_v`` ``[H - 1, W]`` the edge from
    row ``y`` to ``y + 1``. ``background_rgb`` is the colour that fills disocclusions: at each pixel, the colour of
    the farthest pixel within ±``BACKGROUND_REACH`` pixels, so the anti-aliased band along a depth edge (half near,
    half far colour) never tints the background extension.
    """

    rgb: np.ndarray
    radius: np.ndarray
    valid: np.ndarray
    stretched_h: np.ndarray
    stretched_v: np.ndarray
    sphere_radius: float
    projection: str
    edge_threshold: float
    background_rgb: np.ndarray | None = None

    def texture(self, background: bool = False) -> Texture:
        """The colours (or background colours) prepared for bilinear look-ups; built once per panorama."""
        cache = self.__dict__.setdefault("_textures", {})
        if background not in cache:
            cache[background] = Texture(self.background_rgb if background else self.rgb)
        return cache[background]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


def normalised_depth(depth: np.ndarray, normalize: bool) -> np.ndarray:
    """``uint16`` depth → float32 ``d ∈ [0, 1]``; with ``normalize`` the image's own min..max is stretched to 0..1."""
    d = depth.astype(np.float32) / DEPTH_MAX
    if normalize:
        lo, hi = float(d.min()), float(d.max())
        d = (d - lo) / (hi - lo) if hi > lo else np.full_like(d, 0.5)
    return d


def is_equirect_shape(width: int, height: int) -> bool:
    return abs(width / height - 2.0) <= 2.0 * EQUIRECT_ASPECT_TOLERANCE


def check_panorama(
    width: int,
    height: int,
    *,
    projection: str = "auto",
    cap_hfov: float = 90.0,
    depth_mapping: str = "linear",
    depth_strength: float = 1.0,
    radius: float = 2.0,
    edge_threshold: float = 10.0,
) -> str:
    """Every check of :func:`prepare_panorama`'s parameters, without building anything; returns the projection
    ``auto`` resolves to. Errors name the :class:`~ldm3d.render.RenderSpec` field."""
    if projection not in PROJECTIONS:
        raise invalid("projection", projection, f"use one of {', '.join(PROJECTIONS)}")
    if min(height, width) < 2:
        raise invalid("rgb", f"{width}x{height}", "images must be at least 2x2 pixels")
    if projection == "auto":
        projection = "equirect" if is_equirect_shape(width, height) else "cap"
    if projection == "equirect" and not is_equirect_shape(width, height):
        raise InvalidArgument(
            f"projection=equirect needs a 2:1 image but rgb is {width}x{height} (aspect {width / height:.3f}): give "
            "a 2:1 panorama or use projection 'cap' (with cap_hfov) for a normal photo",
            field="projection",
        )
    if projection == "cap" and not (1.0 <= cap_hfov <= 179.0):
        raise invalid("cap_hfov", cap_hfov, "use a horizontal field of view between 1 and 179 degrees")
    check_depth_params(depth_mapping, depth_strength, radius)
    if not (edge_threshold > 0):
        raise invalid(
            "edge_threshold", edge_threshold, "use a positive threshold (tangent of the edge's slope), e.g. 10"
        )
    return projection


def prepare_panorama(
    rgb: np.ndarray,
    depth: np.ndarray,
    *,
    projection: str = "auto",
    hfov_deg: float = 90.0,
    depth_mapping: str = "linear",
    depth_strength: float = 1.0,
    normalize_depth: bool = False,
    radius: float = 2.0,
    edge_threshold: float = 10.0,
) -> Panorama:
    """Turn an RGB + 16-bit depth pair into a :class:`Panorama`.

    ``projection``: ``equirect`` needs a 2:1 image; ``cap`` treats the image as a pinhole photo with horizontal
    field of view ``hfov_deg`` looking forward and reprojects it onto the matching cap of the sphere (the rest of the
    sphere is empty); ``auto`` picks ``equirect`` for 2:1 images and ``cap`` otherwise.
    """
    check_same_size(rgb, depth)
    h, w = depth.shape
    projection = check_panorama(
        w,
        h,
        projection=projection,
        cap_hfov=hfov_deg,
        depth_mapping=depth_mapping,
        depth_strength=depth_strength,
        radius=radius,
        edge_threshold=edge_threshold,
    )
    d = normalised_depth(depth, normalize_depth)
    r = depth_to_radius(d, depth_mapping, depth_strength, radius)
    if projection == "equirect":
        valid = np.ones((h, w), dtype=bool)
        pano_rgb = np.ascontiguousarray(rgb)
    else:
        pano_rgb, r, valid = _cap_to_equirect(rgb, r, hfov_deg, radius)
    sh, sv = stretched_edges(r, edge_threshold)
    # Edges leaving the cap are boundaries, not discontinuities between content: mark them so nothing smears.
    sh |= valid != np.roll(valid, -1, axis=1)
    sv |= valid[:-1] != valid[1:]
    bg = background_colors(pano_rgb, np.where(valid, r, -1.0))
    return Panorama(pano_rgb, r, valid, sh, sv, float(radius), projection, float(edge_threshold), bg)


BACKGROUND_REACH = 2


def background_colors(rgb: np.ndarray, r: np.ndarray, reach: int = BACKGROUND_REACH) -> np.ndarray:
    """At each pixel, the colour of the farthest pixel in its ``(2·reach + 1)²`` window (wrapping in longitude)."""
    h = r.shape[0]
    best_r = r.copy()
    best = rgb.copy()
    rows = np.arange(h)
    for dy in range(-reach, reach + 1):
        ys = np.clip(rows + dy, 0, h - 1)
        r_y, c_y = r[ys], rgb[ys]
        for dx in range(-reach, reach + 1):
            if dx == 0 and dy == 0:
                continue
            rr = np.roll(r_y, -dx, axis=1)
            take = rr > best_r
            best_r = np.where(take, rr, best_r)
            best = np.where(take[..., None], np.roll(c_y, -dx, axis=1), best)
    return best


def stretched_edges(r: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Flags for horizontal (wrapping) and vertical edges whose slope against the sphere exceeds ``threshold``."""
    h, w = r.shape
    lat = pixel_lat(h, np.float32)
    rn = np.roll(r, -1, axis=1)
    # The angle between horizontal neighbours shrinks with cos(lat); between rows it is π/H everywhere.
    ang_h = np.maximum(np.float32(2 * math.pi / w) * np.cos(lat)[:, None], np.float32(1e-6))
    sh = np.abs(r - rn) > threshold * np.minimum(r, rn) * ang_h
    sv = np.abs(r[:-1] - r[1:]) > threshold * np.minimum(r[:-1], r[1:]) * np.float32(math.pi / h)
    return sh, sv


def _cap_to_equirect(rgb: np.ndarray, r: np.ndarray, hfov_deg: float, radius: float):
    """Reproject a pinhole image (forward, horizontal FOV ``hfov_deg``) onto an equirect canvas at matching scale."""
    h, w = r.shape
    f = (w / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    # Equirect resolution that matches the photo's pixel pitch at its centre (1/f radians per pixel).
    pw = round(2.0 * math.pi * f / 2.0) * 2
    pw = max(64, min(pw, 8192))
    ph = pw // 2
    vfov = 2.0 * math.atan((h / 2.0) / f)
    lat = pixel_lat(ph)
    rows = np.nonzero(np.abs(lat) <= vfov / 2.0 + 2.0 * math.pi / pw)[0]
    lon = pixel_lon(pw)
    hfov = math.radians(hfov_deg)
    cols = np.nonzero(np.abs(lon) <= hfov / 2.0 + 2.0 * math.pi / pw)[0]
    out_rgb = np.zeros((ph, pw, 3), dtype=np.uint8)
    out_r = np.full((ph, pw), radius, dtype=np.float32)
    valid = np.zeros((ph, pw), dtype=bool)
    v = direction(lon[None, cols], lat[rows, None])  # [rows, cols, 3]
    z = -v[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        px = f * v[..., 0] / z + w / 2.0 - 0.5
        py = -f * v[..., 1] / z + h / 2.0 - 0.5
    inside = (z > 0) & (px >= -0.5) & (px <= w - 0.5) & (py >= -0.5) & (py <= h - 0.5)
    px = np.clip(np.nan_to_num(px), 0, w - 1)
    py = np.clip(np.nan_to_num(py), 0, h - 1)
    src = np.concatenate([rgb.astype(np.float32), r[..., None]], axis=-1)
    samp = bilinear(src, px, py)
    # A pinhole photo's depth is along rays from its centre, so its radius maps straight onto those directions.
    block_rgb = np.where(inside[..., None], np.clip(np.rint(samp[..., :3]), 0, 255), 0).astype(np.uint8)
    block_r = np.where(inside, samp[..., 3], radius).astype(np.float32)
    out_rgb[np.ix_(rows, cols)] = block_rgb
    out_r[np.ix_(rows, cols)] = block_r
    valid[np.ix_(rows, cols)] = inside
    return out_rgb, out_r, valid


def bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear sample of ``img [H, W, C]`` at float pixel coordinates (clamped; no wrap)."""
    h, w = img.shape[:2]
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2 if w > 1 else 0)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2 if h > 1 else 0)
    fx = (x - x0)[..., None].astype(np.float32)
    fy = (y - y0)[..., None].astype(np.float32)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bot * fy


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


# --------------------------------------------------------------------------------------------- the mesh
@dataclass
class SphereMesh:
    """A triangle mesh of the displaced sphere.

    ``vertices`` float32 ``[N, 3]``, ``uvs`` float32 ``[N, 2]`` (glTF convention: ``v = 0`` at the image top;
    ``u > 1`` on the duplicated seam column, so samplers must wrap/repeat), ``colors`` uint8 ``[N, 3]``,
    ``faces`` uint32 ``[F, 3]`` wound so normals face the origin (the viewer is inside), ``stretched`` bool ``[F]``
    (spans a depth discontinuity), ``far_vertex`` int ``[F]`` (the face's vertex farthest from the origin).
    """

    vertices: np.ndarray
    uvs: np.ndarray
    colors: np.ndarray
    faces: np.ndarray
    stretched: np.ndarray
    far_vertex: np.ndarray

    def without_stretched(self) -> SphereMesh:
        keep = ~self.stretched
        return SphereMesh(
            self.vertices, self.uvs, self.colors, self.faces[keep], self.stretched[keep], self.far_vertex[keep]
        )


def build_mesh(pano: Panorama, step: int = 1) -> SphereMesh:
    """One vertex per pixel centre (or per ``step×step`` block), a duplicated seam column and closed poles.

    Faces touching pixels outside the cap of a non-panoramic input are left out. A face is ``stretched`` when any
    of its edges is (slope test of :func:`stretched_edges` on the sampled grid).
    """
    h, w = pano.height, pano.width
    if step < 1 or w % step or h % step:
        raise invalid("mesh_step", step, f"use a step >= 1 that divides the panorama size {w}x{h}")
    ys = np.arange(0, h, step) + (step - 1) // 2
    xs = np.arange(0, w, step) + (step - 1) // 2
    gh, gw = len(ys), len(xs)
    lon = pixel_lon(w)[xs]
    lat = pixel_lat(h)[ys]
    r = pano.radius[np.ix_(ys, xs)]
    valid = pano.valid[np.ix_(ys, xs)]
    rgb = pano.rgb[np.ix_(ys, xs)]
    grid = direction(lon[None, :], lat[:, None]) * r[..., None]  # [gh, gw, 3]
    u = (xs + 0.5) / w
    v = (ys + 0.5) / h
    # Grid vertices with the first column repeated at the end (u + 1) so the seam's texture coordinates are exact.
    gv = np.concatenate([grid, grid[:, :1]], axis=1).reshape(-1, 3)
    guv = np.stack(np.broadcast_arrays(np.concatenate([u, u[:1] + 1.0])[None, :], v[:, None]), axis=-1).reshape(-1, 2)
    gcol = np.concatenate([rgb, rgb[:, :1]], axis=1).reshape(-1, 3)
    gvalid = np.concatenate([valid, valid[:, :1]], axis=1).reshape(-1)
    gr = np.concatenate([r, r[:, :1]], axis=1).reshape(-1)
    gw1 = gw + 1
    idx = np.arange(gh * gw1).reshape(gh, gw1)
    # Poles: one vertex per column (so each fan triangle has its own u), at the mean radius of the nearest row.
    n_grid = gh * gw1
    top_r, bot_r = float(r[0].mean()), float(r[-1].mean())
    pole_u = (xs + 0.5 + step / 2.0) / w  # midway between the two columns the fan triangle joins
    top = np.tile(np.array([0.0, top_r, 0.0]), (gw, 1))
    bot = np.tile(np.array([0.0, -bot_r, 0.0]), (gw, 1))
    verts = np.concatenate([gv, top, bot]).astype(np.float32)
    uvs = np.concatenate([guv, np.stack([pole_u, np.zeros(gw)], -1), np.stack([pole_u, np.ones(gw)], -1)]).astype(
        np.float32
    )
    cols = np.concatenate([gcol, np.tile(rgb[0].mean(0), (gw, 1)), np.tile(rgb[-1].mean(0), (gw, 1))])
    cols = np.clip(np.rint(cols), 0, 255).astype(np.uint8)
    radii = np.concatenate([gr, np.full(gw, top_r), np.full(gw, bot_r)])
    vvalid = np.concatenate([gvalid, np.full(gw, bool(valid[0].all())), np.full(gw, bool(valid[-1].all()))])
    a, b = idx[:-1, :-1], idx[:-1, 1:]
    c, d = idx[1:, :-1], idx[1:, 1:]
    # Seen from the origin (x right, y up) (a, c, b) runs counter-clockwise, so its normal faces the origin.
    quads = [np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)]
    tp = n_grid + np.arange(gw)
    bp = n_grid + gw + np.arange(gw)
    quads.append(np.stack([tp, idx[0, :-1], idx[0, 1:]], -1))
    quads.append(np.stack([bp, idx[-1, 1:], idx[-1, :-1]], -1))
    faces = np.concatenate(quads).astype(np.int64)
    faces = faces[vvalid[faces].all(axis=1)]
    stretched = _stretched_faces(verts, radii, faces, pano.edge_threshold)
    far = faces[np.arange(len(faces)), np.argmax(radii[faces], axis=1)]
    return SphereMesh(verts, uvs, cols, faces.astype(np.uint32), stretched, far)


def _stretched_faces(verts, radii, faces, threshold: float) -> np.ndarray:
    """The slope test of :func:`stretched_edges` on each edge of each face (so it also holds for ``step > 1``)."""
    p = verts[faces].astype(np.float64)  # [F, 3, 3]
    rr = radii[faces].astype(np.float64)
    out = np.zeros(len(faces), dtype=bool)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        ua = p[:, i] / rr[:, i, None]
        ub = p[:, j] / rr[:, j, None]
        ang = 2.0 * np.arcsin(np.clip(np.linalg.norm(ua - ub, axis=1) / 2.0, 0.0, 1.0))
        slope = np.abs(rr[:, i] - rr[:, j]) / (np.minimum(rr[:, i], rr[:, j]) * np.maximum(ang, 1e-9))
        out |= slope > threshold
    return out
