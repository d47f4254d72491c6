"""Fixtures for the training subproject: a tiny captioned RGBD data set, prepared once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import write_images, write_jsonl


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """3 samples at 32 px with their own depth: 2 train (one fixed batch of 2) + 1 val, in 2 shards."""
    from ldm3d_training.prepare import prepare

    root = tmp_path_factory.mktemp("data")
    rows = write_images(root / "raw", 3)
    prepare(write_jsonl(root / "raw" / "data.jsonl", rows), root / "prep", 32, val_fraction=0.34, shard_size=2,
            progress=False)
    return root / "prep"


