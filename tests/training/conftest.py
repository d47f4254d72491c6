"""Fixtures for the training subproject: a tiny captioned RGBD data set, prepared once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import write_images, write_jsonl


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """4 samples at 32 px with their own depth: 3 train + 1 val."""
    from ldm3d_training.prepare import prepare

    root = tmp_path_factory.mktemp("data")
    rows = write_images(root / "raw", 4)
    prepare(write_jsonl(root / "raw" / "data.jsonl", rows), root / "prep", 32, val_fraction=0.25, shard_size=2,
            progress=False)
    return root / "prep"


