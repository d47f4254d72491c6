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




@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a loaded 2-core machine OpenMP barriers over busy cores
    made a 2-thread tiny U-Net step up to 7x slower (bench/README.md): run the training tests single-threaded."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
