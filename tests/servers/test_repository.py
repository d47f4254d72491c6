"""Serving a model repository with the embedded ONNX Runtime: same pixels as the in-process pipeline over the same
repository, versions listed and selectable, unknown versions NOT_FOUND."""

from __future__ import annotations

import numpy as np
import pytest
from servers_helpers import ThreadServer

from ldm3d import client
from ldm3d.errors import NotFound
from ldm3d.pipeline import GenerateParams, LDM3DPipeline


def test_a_corrupted_repository_fails_the_start_not_a_request(exported_repository, tmp_path):
    import shutil

    from ldm3d.errors import FailedPrecondition

    broken = tmp_path / "broken"
    shutil.copytree(exported_repository, broken)
    onnx = broken / "unet" / "1" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-100])
    with pytest.raises(FailedPrecondition, match="unet"):
        ThreadServer(service="sampler", repository=str(broken), runtime="embedded")


def test_repository_platform_equals_in_process(exported_repository):
    server = ThreadServer(service="all", repository=str(exported_repository), runtime="embedded")
    try:
        p = GenerateParams(prompt="a cabin in the woods", steps=3, seed=9)
        remote = client.generate(server.target, p, timeout=60, version="1")
        local = LDM3DPipeline.from_repository(exported_repository)(p)
        assert np.array_equal(remote.rgb[0], local.rgb[0]) and np.array_equal(remote.depth[0], local.depth[0])
        assert remote.metadata["model"]["runtime"] == "embedded" and remote.metadata["model"]["version"] == "1"
        with client.StudioClient(server.target, timeout=10) as c:
            (info,) = c.list_models()
            assert (info.name, info.versions, info.default_version) == ("ldm3d", ["1"], "1")
        with pytest.raises(NotFound) as err:
            client.generate(server.target, p, timeout=60, version="7")
        assert err.value.field == "version" and "'1'" in str(err.value)
    finally:
        server.stop()
