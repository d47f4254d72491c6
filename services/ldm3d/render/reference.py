"""A plain single-ray-at-a-time reference renderer: the floor the fast renderers are measured against.

Pure Python, one ray at a time: march along the ray in small steps until it leaves the surface
``|p| = r(lon(p), lat(p))`` (radius bilinear between pixel centres, wrapping in longitude), refine the crossing by
bisection, and colour it with the panorama's colour in the hit point's direction. No discontinuity handling: use it
on smooth depth. Slow on purpose — keep images tiny (e.g. 64×32).
"""

from __future__ import annotations

import math

import numpy as np

from .geometry import Panorama


def _radius_at(r: np.ndarray, lon: float, lat: float) -> float:
    h, w = r.shape
    x = (lon + math.pi) * w / (2 * math.pi) - 0.5
    y = min(max((math.pi / 2 - lat) * h / math.pi - 0.5, 0.0), h - 1.0)
    x0 = math.floor(x)
    fx = x - x0
    y0 = min(math.floor(y), h - 2)
    fy = y - y0
    a0, a1 = x0 % w, (x0 + 1) % w
    top = r[y0, a0] * (1 - fx) + r[y0, a1] * fx
    bot = r[y0 + 1, a0] * (1 - fx) + r[y0 + 1, a1] * fx
    return float(top * (1 - fy) + bot * fy)


def _color_at(rgb: np.ndarray, lon: float, lat: float) -> tuple[float, float, float]:
    h, w = rgb.shape[:2]
    x = (lon + math.pi) * w / (2 * math.pi) - 0.5
    y = min(max((math.pi / 2 - lat) * h / math.pi - 0.5, 0.0), h - 1.0)
    x0 = math.floor(x)
    fx = x - x0
    y0 = min(math.floor(y), h - 2)
    fy = y - y0
    a0, a1 = x0 % w, (x0 + 1) % w
    out = []
    for c in range(3):
        top = float(rgb[y0, a0, c]) * (1 - fx) + float(rgb[y0, a1, c]) * fx
        bot = float(rgb[y0 + 1, a0, c]) * (1 - fx) + float(rgb[y0 + 1, a1, c]) * fx
        out.append(top * (1 - fy) + bot * fy)
    return out[0], out[1], out[2]


def trace(pano: Panorama, origin, direction, step: float | None = None) -> tuple[float, float, float]:
    """Colour of one ray (origin inside the surface, any direction length)."""
    ox, oy, oz = (float(v) for v in origin)
    n = math.sqrt(sum(float(v) ** 2 for v in direction))
    dx, dy, dz = (float(v) / n for v in direction)
    r = pano.radius
    step = step or float(r.min()) / 150.0

    def outside(t: float) -> bool:
        x, y, z = ox + t * dx, oy + t * dy, oz + t * dz
        return math.sqrt(x * x + y * y + z * z) >= _radius_at(r, math.atan2(x, -z), math.atan2(y, math.hypot(x, z)))

    t0, t1 = 0.0, step
    while not outside(t1):
        t0, t1 = t1, t1 + step
    for _ in range(40):
        tm = 0.5 * (t0 + t1)
        if outside(tm):
            t1 = tm
        else:
            t0 = tm
    x, y, z = ox + t1 * dx, oy + t1 * dy, oz + t1 * dz
    return _color_at(pano.rgb, math.atan2(x, -z), math.atan2(y, math.hypot(x, z)))


def render_ods_reference(pano: Panorama, size: tuple[int, int], ipd: float = 0.064, eye: str = "left") -> np.ndarray:
    """One ODS eye (or ``mono``), ray by ray, ``uint8 [H, W, 3]``."""
    w, h = size
    sign = {"left": -1.0, "right": 1.0, "mono": 0.0}[eye]
    out = np.zeros((h, w, 3), dtype=np.uint8)
    for i in range(h):
        lat = math.pi / 2 - (i + 0.5) / h * math.pi
        for j in range(w):
            lon = (j + 0.5) / w * 2 * math.pi - math.pi
            a = sign * ipd / 2 * math.cos(lat)
            o = (a * math.cos(lon), 0.0, a * math.sin(lon))
            d = (math.cos(lat) * math.sin(lon), math.sin(lat), -math.cos(lat) * math.cos(lon))
            c = trace(pano, o, d)
            out[i, j] = [min(255, max(0, int(v + 0.5))) for v in c]
    return out
