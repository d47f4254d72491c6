"""Omni-directional stereo (ODS) and mono 360 rendering of a :class:`~.geometry.Panorama`, by scanlines.

ODS (Peleg et al. 2001; Google's "Rendering Omni-directional Stereo Content"): the ray of output pixel
``(lon, lat)`` for the left eye starts at ``−a · cos(lat) · right(lon)`` and for the right eye at
``+a · cos(lat) · right(lon)``, with ``a = ipd / 2`` and ``right(lon) = (cos lon, 0, sin lon)``, and points along
``direction(lon, lat)``; the ×cos(lat) shrinks the separation to zero at the poles. A point at distance ``r`` then
appears in the left eye ``asin(a / r)`` to the right of where the origin sees it and in the right eye as far to the
left: crossed disparity ``2 · asin(a / r)``, larger for nearer points.

Why scanlines: because the separation scales with cos(lat), every ray of an output row stays in that row of the
sphere (its latitude drifts by at most ``a² / (4 r²)`` radians: 0.17 px at 4096×2048 for ``r = 1 m``, ``a = 32 mm``)
and a surface point at radius ``r`` and longitude ``s`` is seen by the left eye at ``warp(s) = s + asin(a / r(s))``.
The ray of output longitude ``λ`` leaves the star-shaped surface at the first ``s`` (scanning from ``λ − π/2``
upwards) where ``warp(s) ≥ λ``, i.e. where the running maximum of ``warp`` reaches ``λ``: points hidden behind nearer
ones never raise that maximum. So one row costs a cumulative maximum over the source samples and one linear
interpolation per output pixel — exact visibility against the surface that is linear in ``(s, r)`` between samples,
with no per-pixel search. The right eye is the left eye of the mirrored panorama, mirrored back.

A segment between two samples flagged as stretched (a depth discontinuity) takes the background colour of its far
end (``Panorama.background_rgb``: background extension) instead of a smear between the near and the far colour.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .geometry import Panorama, pixel_lat, pixel_lon

EYES = ("mono", "left", "right")


def render_equirect(pano: Panorama, size: tuple[int, int], eye: str = "mono", ipd: float = 0.064) -> np.ndarray:
    """Render one equirectangular view ``uint8 [H, W, 3]`` of ``size = (W, H)`` from the origin (``mono``) or one ODS eye."""
    if eye not in EYES:
        raise ValueError(f"eye must be one of {EYES}, got {eye!r}")
    a = 0.0 if eye == "mono" else ipd / 2.0
    src = (pano.rgb, pano.background_rgb, pano.radius, pano.valid)
    if eye == "right":
        src = tuple(np.ascontiguousarray(x[:, ::-1]) for x in src)
    # Rows are independent and numpy releases the GIL in its loops: bands of rows on one thread per core. Bands of
    # at most ~2 M output pixels keep the temporaries (~100 bytes per pixel) small at any size.
    ho, wo = size[1], size[0]
    threads = max(1, min(os.cpu_count() or 1, 8, ho // 16))
    n = max(threads, -(-ho * wo // 2_000_000))
    bounds = [(ho * i // n, ho * (i + 1) // n) for i in range(n)]
    if threads == 1:
        out = np.concatenate([_left_eye(*src, pano.edge_threshold, size, a, b) for b in bounds])
    else:
        with ThreadPoolExecutor(threads) as pool:
            out = np.concatenate(list(pool.map(lambda b: _left_eye(*src, pano.edge_threshold, size, a, b), bounds)))
    return np.ascontiguousarray(out[:, ::-1]) if eye == "right" else out


def render_ods(pano: Panorama, size: tuple[int, int], ipd: float = 0.064) -> np.ndarray:
    """ODS pair stacked top-bottom, **left eye on top**: ``uint8 [2H, W, 3]`` for a per-eye ``size = (W, H)``."""
    return np.concatenate([render_equirect(pano, size, "left", ipd), render_equirect(pano, size, "right", ipd)], axis=0)


def _left_eye(rgb, bg_rgb, radius, valid, threshold, size, a, rows) -> np.ndarray:
    wo = size[0]
    h, w = radius.shape
    # 1. Each output row samples the surface along its own latitude: interpolate radius and colour between rows.
    lat_o = pixel_lat(size[1])[rows[0] : rows[1]]
    ho = len(lat_o)
    y = np.clip((0.5 - lat_o / math.pi) * h - 0.5, 0.0, h - 1.0)
    y0 = np.minimum(np.floor(y).astype(np.int64), max(h - 2, 0))
    y1 = np.minimum(y0 + 1, h - 1)
    fy = (y - y0).astype(np.float32)[:, None]
    r = radius[y0] * (1 - fy) + radius[y1] * fy  # [ho, w]
    tex = rgb[y0].astype(np.float32) * (1 - fy[..., None]) + rgb[y1].astype(np.float32) * fy[..., None]
    vrow = np.where(fy < 0.5, valid[y0], valid[y1])

    # 2. Extend each row to the left by the widest angular shift so rays near the seam find their surface.
    s = pixel_lon(w)
    shift_max = math.asin(min(a / float(radius.min()), 1.0)) if a > 0 else 0.0
    m = min(w, math.ceil(shift_max / (2 * math.pi / w)) + 2)
    # (plus one wrapped sample on the right, so the last column is the start of a segment, not its end).
    cols = np.concatenate([np.arange(w - m, w), np.arange(w), [0]])  # source column of each extended sample
    s_ext = np.concatenate([s[w - m :] - 2 * math.pi, s, s[:1] + 2 * math.pi])
    r_ext = r[:, cols]
    v_ext = vrow[:, cols]
    n = w + m + 1

    # 3. Where the left eye sees each sample, and the running maximum that decides visibility.
    shift = np.arcsin(np.minimum(a / r_ext, 1.0)) if a > 0 else np.zeros_like(r_ext)
    warp = (s_ext[None, :] + shift).astype(np.float32)
    run = np.maximum.accumulate(warp, axis=1)

    # 4. Output column k lies on segment j = max{j : run[j] <= λ_k}: scatter each segment's first column, then a
    #    running maximum over the output row (O(n), no search). run is non-decreasing, so k_start is too.
    k_start = np.ceil((run + np.float32(math.pi)) * np.float32(wo / (2 * math.pi)) - np.float32(0.5 + 1e-4))
    k_start = np.clip(k_start, 0, wo).astype(np.int32)
    seg = np.zeros((ho, wo + 1), dtype=np.int32)
    last = np.ones_like(k_start, dtype=bool)
    last[:, :-1] = k_start[:, :-1] != k_start[:, 1:]  # the largest j of each run of equal k_start wins
    rows, js = np.nonzero(last)
    seg[rows, k_start[rows, js]] = js
    seg = np.maximum.accumulate(seg[:, :wo], axis=1)
    np.minimum(seg, n - 2, out=seg)

    # 5. One record per segment, so each output pixel does a single gather: where the ray crosses the segment is
    #    frac = (λ − warp0) · inv, its colour c0 + frac · dc. A stretched segment (depth discontinuity, or the edge
    #    of a cap) shows the background colour of its far end: background extension, no smear.
    r0, r1 = r_ext[:, :-1], r_ext[:, 1:]
    ang = np.float32(2 * math.pi / w) * np.cos(lat_o).astype(np.float32)[:, None]
    cut = np.abs(r0 - r1) > np.float32(threshold) * np.minimum(r0, r1) * np.maximum(ang, np.float32(1e-6))
    cut |= v_ext[:, :-1] != v_ext[:, 1:]
    dw = warp[:, 1:] - warp[:, :-1]
    rec = np.empty((ho, n - 1, 8), dtype=np.float32)
    rec[..., 0] = warp[:, :-1]
    # On a stretched segment the colour jumps to the background right after the near sample (a ray that meets the
    # sample itself, as in a mono view at the input's size, still sees that sample's own colour).
    with np.errstate(divide="ignore"):
        rec[..., 1] = np.where(dw > 0, np.where(cut, np.float32(1e3), np.float32(1.0)) / dw, np.float32(0.0))
    t_ext = tex[:, cols]
    rec[..., 2:5] = t_ext[:, :-1]
    rec[..., 5:8] = t_ext[:, 1:] - t_ext[:, :-1]
    ci, cj = np.nonzero(cut)  # few: only these need the background colour of their far end
    if len(ci):
        cf = cols[np.where(r1[ci, cj] > r0[ci, cj], cj + 1, cj)]
        fyc = fy[ci]
        far = bg_rgb[y0[ci], cf].astype(np.float32) * (1 - fyc) + bg_rgb[y1[ci], cf].astype(np.float32) * fyc
        rec[ci, cj, 5:8] = far - rec[ci, cj, 2:5]

    # 6. The per-pixel pass.
    flat = (np.arange(ho, dtype=np.int32) * np.int32(n - 1))[:, None] + seg
    g = np.take(rec.reshape(-1, 8), flat.reshape(-1), axis=0).reshape(ho, wo, 8)
    lam = pixel_lon(wo).astype(np.float32)[None, :]  # rounded like s_ext: equal angles compare equal
    frac = np.clip((lam - g[..., 0]) * g[..., 1], np.float32(0.0), np.float32(1.0))
    out = g[..., 2:5] + g[..., 5:8] * frac[..., None]
    out += np.float32(0.5)
    return np.clip(out, 0, 255).astype(np.uint8)
