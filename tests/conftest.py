"""Shared fixtures: tiny random-weight LDM3D checkpoints built once per test session (no hub is reachable here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two cores: keep torch and ONNX Runtime from oversubscribing when pytest runs servers beside them.
os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 6-channel (Intel/ldm3d layout) tiny checkpoint, weights stored in fp16."""
    from ldm3d.models.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("ckpt") / "tiny6", depth_channels=3)


@pytest.fixture(scope="session")
def tiny_model_4c(tmp_path_factory) -> Path:
    """A 4-channel (Intel/ldm3d-4c / -pano layout) tiny checkpoint."""
    from ldm3d.models.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("ckpt") / "tiny4", depth_channels=1)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model):
    from ldm3d.pipeline import LDM3DPipeline

    return LDM3DPipeline.from_checkpoint(tiny_model)


@pytest.fixture(scope="session")
def exported_repository(tiny_model, tmp_path_factory) -> Path:
    """The tiny checkpoint exported once per session into a model repository (~5 s). Read-only: see ``repository``."""
    from ldm3d.export import export_checkpoint

    root = tmp_path_factory.mktemp("repo") / "model_repository"
    export_checkpoint(tiny_model, root)
    return root


@pytest.fixture
def repository(exported_repository, tmp_path) -> Path:
    """A private copy that a test may corrupt, promote or prune."""
    import shutil

    dest = tmp_path / "model_repository"
    shutil.copytree(exported_repository, dest)
    return dest
