"""A panorama made once per session by `ldm3d pano` on the tiny model, for the pano, view and browser tests."""

from __future__ import annotations

from pathlib import Path

import pytest

PANO = ["--steps", "2", "--seed", "7", "--scheduler", "ddim", "--seconds", "0.5", "--fps", "4", "--size", "96x64",
        "--no-progress"]


@pytest.fixture(scope="session")
def pano_dir(tiny_model_4c, tmp_path_factory) -> Path:
    """One `ldm3d pano` run on the tiny 4-channel model (64x128), shared by the pano, view and browser tests."""
    from ldm3d.cli import main

    out = tmp_path_factory.mktemp("pano") / "cabin"
    assert main(["pano", "--model", str(tiny_model_4c), "--prompt", "a cozy cabin", "--out", str(out), *PANO]) == 0
    return out
