"""Synthetic RGBD panoramas for the render tests (small, seeded, smooth where a test needs smooth)."""

from __future__ import annotations

import numpy as np
from ldm3d.render.geometry import pixel_lat, pixel_lon


def smooth_pano(w: int = 256, h: int = 128, wobble: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth colour field and, with ``wobble`` > 0, smoothly varying depth around 0.5 (no discontinuities)."""
    lon, lat = np.meshgrid(pixel_lon(w), pixel_lat(h))
    rgb = np.stack(
        [
            127 + 120 * np.sin(4 * lon) * np.cos(lat),
            127 + 120 * np.cos(3 * lat + lon),
            127 + 100 * np.sin(7 * lon + 2 * lat),
        ],
        axis=-1,
    )
    d = 0.5 + wobble * np.sin(3 * lon) * np.cos(lat) ** 2
    return rgb.astype(np.uint8), np.rint(d * 65535).astype(np.uint16)


def random_pano(w: int = 256, h: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
