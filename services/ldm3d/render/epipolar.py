"""Perspective frames from a camera away from the origin, by epipolar half-planes (no ray casting).

Every ray from the camera centre ``c`` lies in a half-plane bounded by the line through the origin and ``c``. In
such a half-plane, with ``e = c / |c|`` and ``θ`` the angle from ``e``, the surface is a polar curve ``r(θ)``
(the sphere is star-shaped around the origin) and a surface point at ``θ`` is seen from ``c`` at the angle
``β(θ) = atan2(r sin θ, r cos θ − |c|)`` from ``e``. ``β(θ) ≥ θ`` because ``c`` is inside, and the ray leaving ``c``
at angle ``ψ`` exits the surface at the first ``θ`` where ``β(θ) ≥ ψ``: where the running maximum of ``β`` reaches
``ψ`` — the argument of :mod:`.ods`, with half-planes for rows.

So: sample ``r`` along ``K`` half-planes at twice the panorama's angular pitch, take the running maximum of ``β``
along each, read off the exit angle ``θ`` for a uniform grid of ``ψ`` per half-plane (an intermediate "epipolar
image" at about the output's angular resolution), interpolate it at each output pixel's ``(half-plane angle, ψ)``
and look the colour up at the exact hit direction, as ray casting does. Near the epipole, where half-planes crowd together, pixels use every 2nd … 64th one, and
each half-plane is only evaluated over the ψ its pixels need, so the work follows the frame's pixel count.
Stretched segments (depth discontinuities) show the background colour of their far end, as everywhere else.

Compared with ray casting (:mod:`.raycast`) the image is the same (tests compare the two) except that a depth edge
sits at the last half-plane sample before it, up to half a panorama pixel inside the mesh's edge; no mesh or BVH
is built and no open3d is needed. Opt-in: ``--renderer epipolar``.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .geometry import Panorama

# The epipolar image's ψ pitch in units of the frame's central pixel angle (finer = sharper, slower).
GRID_PIXELS = 1.0
# Samples along each half-plane per panorama pixel. Colours are looked up per output pixel at its exact hit
# direction, but a depth edge is placed at the last sample before it: two per pixel keep that within half a
# panorama pixel.
THETA_OVERSAMPLE = 2


def render_perspective_epipolar(pano: Panorama, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Colours ``uint8 [H, W, 3]`` of rays from ``origin`` (inside the surface, not at the origin) along ``dirs``."""
    c = np.asarray(origin, dtype=np.float64)
    rho = float(np.linalg.norm(c))
    e = c / rho
    helper = np.array([0.0, 1.0, 0.0]) if abs(e[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    b1 = np.cross(e, helper)
    b1 /= np.linalg.norm(b1)
    b2 = np.cross(e, b1)

    # 1. Each pixel's half-plane angle χ (about e) and its angle ψ from e.
    d = dirs.astype(np.float32)
    x1 = d @ b1.astype(np.float32)
    x2 = d @ b2.astype(np.float32)
    x3 = d @ e.astype(np.float32)
    chi = np.arctan2(x2, x1)
    psi = np.arctan2(np.hypot(x1, x2), x3)

    # 2. The epipolar grid: ψ pitch from the frame's central pixel angle; χ spacing so neighbouring half-planes are
    #    that far apart where they are widest apart in the frame (sin ψ). A frame around the epipole (ψ = 0) or
    #    the anti-epipole (ψ = π) sees every half-plane: then χ covers the full circle.
    h, w = d.shape[:2]
    pix = _angle(d[h // 2, w // 2], d[h // 2, w // 2 - 1])  # the largest pixel angle: the centre's
    dpsi = GRID_PIXELS * pix
    chi_c = float(chi[h // 2, w // 2])
    rel = np.remainder(chi - chi_c + np.float32(math.pi), np.float32(2 * math.pi)) - np.float32(math.pi)
    full = bool(rel.min() < -0.9 * math.pi or rel.max() > 0.9 * math.pi or psi.min() < 2 * dpsi)
    dchi = dpsi / max(float(np.sin(psi).max()), 1e-6)
    if full:
        kn = max(8, math.ceil(2 * math.pi / dchi / 64)) * 64  # a multiple of every level's step (below)
        dchi = 2 * math.pi / kn
        chi_lo = -math.pi
        kf = np.remainder((chi - np.float32(chi_lo)) / np.float32(dchi), np.float32(kn))
    else:
        chi_lo = chi_c + float(rel.min()) - dchi
        kn = math.ceil((float(rel.max()) - float(rel.min())) / dchi) + 3
        kf = (rel + np.float32(chi_c - chi_lo)) / np.float32(dchi)
    psi_lo = max(0.0, float(psi.min()) - dpsi)
    mn = math.ceil((float(psi.max()) - psi_lo) / dpsi) + 2
    mf = (psi - np.float32(psi_lo)) / np.float32(dpsi)

    # 3. Each half-plane only needs the ψ that pixels next to it use (a ragged range per half-plane): without this
    #    a frame that holds the epipole would pay for the whole disc of half-planes around it.
    #    Near the epipole (small sin ψ) half-planes crowd together, so pixels there use every 2nd, 4th, … 64th
    #    half-plane: the spacing they need is dpsi / sin ψ.
    kf = kf.reshape(-1)
    level = np.log2(np.float32(np.sin(psi).max()) / np.maximum(np.sin(psi.reshape(-1)), np.float32(1e-6)))
    step = np.left_shift(1, np.clip(level, 0, 6).astype(np.int32)) if full else np.ones(kf.shape, np.int32)
    k0 = (np.minimum(kf.astype(np.int32), kn - 1) // step) * step
    k1 = (k0 + step) % kn if full else np.minimum(k0 + 1, kn - 1)
    fk = np.clip((kf - k0) / step.astype(np.float32), 0, 1)[:, None]
    m0 = np.minimum(np.clip(mf, 0, None).astype(np.int32), mn - 2).reshape(-1)
    lo = np.full(kn, mn, dtype=np.int32)
    hi = np.full(kn, -1, dtype=np.int32)
    for ks in (k0, k1):
        np.minimum.at(lo, ks, m0)
        np.maximum.at(hi, ks, m0 + 1)
    length = np.maximum(hi - lo + 1, 0)
    lo = np.minimum(lo, mn - 1)

    # 4. The epipolar image, one band of the used half-planes per core.
    chis = chi_lo + dchi * np.arange(kn)
    used = np.nonzero(length)[0]
    n = max(1, min(os.cpu_count() or 1, 8, len(used) // 8))
    bands = np.array_split(used, n)

    def band(ks):
        return _epipolar_image(pano, e, b1, b2, rho, chis[ks], lo[ks], length[ks], psi_lo, dpsi)

    if n == 1:
        parts = [band(bands[0])]
    else:
        with ThreadPoolExecutor(n) as pool:
            parts = list(pool.map(band, bands))
    hit = np.concatenate([p[0] for p in parts])
    bgf = np.concatenate([p[1] for p in parts])
    off = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)

    # 5. Each pixel's hit angle, bilinear between the two nearest half-planes and ψ samples; then its colour,
    #    looked up exactly in the pixel's own half-plane direction (the background colour in a disocclusion).
    base = off - lo
    i00 = base[k0] + m0
    i10 = base[k1] + m0
    fm = np.clip(mf.reshape(-1) - m0, 0, 1)
    fk = fk[:, 0]
    t0 = np.take(hit, i00)
    t0 += (np.take(hit, i00 + 1) - t0) * fm
    t1 = np.take(hit, i10)
    t1 += (np.take(hit, i10 + 1) - t1) * fm
    t0 += (t1 - t0) * fk
    near = np.where(fk < 0.5, i00, i10) + (fm >= 0.5)
    background = np.take(bgf, near)
    t0 = np.where(background, np.take(hit, near), t0)
    norm = np.maximum(np.hypot(x1, x2).reshape(-1), np.float32(1e-12))  # |v| sin ψ: x1, x2 → unit half-plane
    ct, st = np.cos(t0), np.sin(t0) / norm
    hit_dir = ct[:, None] * e.astype(np.float32) + (st * x1.reshape(-1))[:, None] * b1.astype(np.float32)
    hit_dir += (st * x2.reshape(-1))[:, None] * b2.astype(np.float32)
    out = pano.texture().sample_directions(hit_dir.reshape(h, w, 3))
    if background.any():
        bg = background.reshape(h, w)
        out[bg] = pano.texture(background=True).sample_directions(hit_dir[background])
    return out


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    return float(2 * math.asin(min(1.0, np.linalg.norm(a - b) / 2)))


def _epipolar_image(pano, e, b1, b2, rho, chis, lo, length, psi_lo, dpsi) -> tuple[np.ndarray, np.ndarray]:
    """For each half-plane ``χ`` and ``ψ = psi_lo + m·dpsi`` (``m`` in ``lo .. lo + length - 1``), half-plane
    after half-plane: the angle θ (from ``e``) where the ray from ``c`` leaves the surface, float32
    ``[sum(length)]``, and whether it shows background colour there (a disocclusion), bool ``[sum(length)]``.

    Everything is ragged and laid end to end: half-plane ``k`` is sampled at ``θ = 0, dθ, …`` up to the largest ψ
    it serves (a ray never exits beyond its own ψ, since β(θ) ≥ θ), and holds ``length[k]`` ψ samples.
    """
    ph, pw = pano.radius.shape
    dtheta = 2 * math.pi / pw / THETA_OVERSAMPLE
    k = len(chis)
    kk = np.arange(k)
    jn = np.ceil((psi_lo + dpsi * (lo + length)) / dtheta).astype(np.int64) + 2  # θ samples per half-plane
    soff = np.concatenate([[0], np.cumsum(jn)[:-1]])
    ns = int(jn.sum())
    plane = np.repeat(kk, jn)
    theta = ((np.arange(ns) - np.repeat(soff, jn)) * dtheta).astype(np.float32)
    u = (np.cos(chis)[:, None] * b1[None, :] + np.sin(chis)[:, None] * b2[None, :]).astype(np.float32)
    ct, st = np.cos(theta), np.sin(theta)
    wdir = ct[:, None] * e.astype(np.float32) + st[:, None] * np.take(u, plane, axis=0)  # [S, 3]
    lon = np.arctan2(wdir[:, 0], -wdir[:, 2])
    lat = np.arctan2(wdir[:, 1], np.hypot(wdir[:, 0], wdir[:, 2]))
    x = (lon + np.float32(math.pi)) * np.float32(pw / (2 * math.pi)) - np.float32(0.5)
    y = np.clip((np.float32(math.pi / 2) - lat) * np.float32(ph / math.pi) - np.float32(0.5), 0, ph - 1)
    r = _sample(pano.radius[..., None], x, y)[:, 0]
    valid = pano.valid[np.rint(y).astype(np.int64), np.rint(x).astype(np.int64) % pw]

    # Visibility along θ: the running maximum of the viewing angle β, per half-plane (offsets of 4 > π keep the
    # half-planes apart in one flat running maximum).
    beta = np.arctan2(r * st, r * ct - np.float32(rho))
    lift = (plane * 4).astype(np.float32)
    run = np.maximum.accumulate(beta + lift) - lift

    # ψ sample m of half-plane k lies on segment j = max{j : run[k, j] <= ψ_m}: scatter each segment's first ψ
    # sample and take a running maximum over the flat sample index (which only grows from one half-plane to the
    # next). Segments starting before a half-plane's range start it.
    total = int(length.sum())
    off = np.concatenate([[0], np.cumsum(length)[:-1]])
    m_start = np.ceil((run - np.float32(psi_lo)) / np.float32(dpsi) - np.float32(1e-4)).astype(np.int64)
    rel = np.maximum(m_start - np.repeat(lo, jn), 0)
    last = np.ones(ns, dtype=bool)
    last[:-1] = rel[:-1] != rel[1:]
    last[soff + jn - 1] = True
    ok = last & (rel < np.repeat(length, jn))
    sidx = np.nonzero(ok)[0]
    seg = np.zeros(total, dtype=np.int64)
    seg[off[plane[sidx]] + rel[sidx]] = sidx
    seg = np.maximum.accumulate(seg)
    eplane = np.repeat(kk, length)
    seg = np.minimum(seg, (soff + jn - 2)[eplane])

    # One record per segment: where the ray crosses it (as in ods.py, but kept as the hit's angle θ so that the
    # colour can be looked up exactly per pixel). A stretched segment is crossed right after its near end and
    # shows the background colour at its far end.
    r0, r1 = r[:-1], r[1:]
    cut = np.abs(r0 - r1) > np.float32(pano.edge_threshold) * np.minimum(r0, r1) * np.float32(dtheta)
    cut |= valid[:-1] != valid[1:]
    db = beta[1:] - beta[:-1]
    rec = np.empty((ns - 1, 5), dtype=np.float32)
    rec[:, 0] = beta[:-1]
    with np.errstate(divide="ignore"):
        rec[:, 1] = np.where(db > 0, np.where(cut, np.float32(1e3), np.float32(1.0)) / db, np.float32(0.0))
    rec[:, 2] = theta[:-1]
    rec[:, 3] = np.where(cut, np.float32(0.0), np.float32(dtheta))
    rec[:, 4] = np.where(cut, np.where(r1 > r0, theta[1:], theta[:-1]), np.float32(-1.0))  # far end, or -1
    g = np.take(rec, seg, axis=0)
    m = np.arange(total) - np.repeat(off - lo, length)
    q = np.float32(psi_lo) + np.float32(dpsi) * m.astype(np.float32)
    frac = np.clip((q - g[:, 0]) * g[:, 1], np.float32(0.0), np.float32(1.0))
    background = (g[:, 4] >= 0) & (frac > 0)
    return np.where(background, g[:, 4], g[:, 2] + g[:, 3] * frac), background


def _sample(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear look-up in an equirect image ``[H, W, C]`` (wrapping in x) → float32 ``[..., C]``."""
    h, w = img.shape[:2]
    x = np.where(x < 0, x + np.float32(w), x)
    x0 = np.minimum(x.astype(np.int32), w - 1)
    y0 = np.minimum(y.astype(np.int32), max(h - 2, 0))
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    flat = img.reshape(h * w, -1).astype(np.float32)
    x1 = np.where(x0 + 1 >= w, 0, x0 + 1)
    y1 = np.minimum(y0 + 1, h - 1)
    top = np.take(flat, y0 * w + x0, axis=0)
    top += (np.take(flat, y0 * w + x1, axis=0) - top) * fx
    bot = np.take(flat, y1 * w + x0, axis=0)
    bot += (np.take(flat, y1 * w + x1, axis=0) - bot) * fx
    return top + (bot - top) * fy
