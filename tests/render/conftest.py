"""Fixtures for the render tests."""

from __future__ import annotations

import numpy as np
import pytest

from .synth import smooth_pano


@pytest.fixture
def pano_files(tmp_path):
    """A 256×128 panorama with a near disc, as 8-bit RGB + 16-bit depth PNG files."""
    from ldm3d.codec import write_png

    rgb, depth = smooth_pano(256, 128)
    y, x = np.mgrid[0:128, 0:256]
    disc = (x - 128) ** 2 + (y - 64) ** 2 < 15**2
    rgb[disc] = (230, 40, 30)
    depth[disc] = 60000
    write_png(tmp_path / "rgb.png", rgb)
    write_png(tmp_path / "depth.png", depth)
    return tmp_path / "rgb.png", tmp_path / "depth.png"
