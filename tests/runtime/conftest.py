"""The tiny checkpoint (tests/conftest.py) exported once per session into a repository (~5 s)."""

import shutil

import pytest


@pytest.fixture(scope="session")
def exported_repository(tiny_model, tmp_path_factory):
    from ldm3d.repository import export_checkpoint

    root = tmp_path_factory.mktemp("repo") / "model_repository"
    export_checkpoint(tiny_model, root)
    return root


@pytest.fixture
def repository(exported_repository, tmp_path):
    """A private copy that a test may corrupt, promote or prune."""
    dest = tmp_path / "model_repository"
    shutil.copytree(exported_repository, dest)
    return dest
