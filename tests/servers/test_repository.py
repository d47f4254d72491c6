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
        # a version is a number: "01" is version 1, served by the pipeline already loaded (never a reload per call)
        loaded = server.server.registry._loaded["1"]
        for spelling in ("01", "0001"):
            r = client.generate(server.target, GenerateParams(prompt="x", steps=1, seed=1), timeout=60,
                                version=spelling)
            assert r.metadata["model"]["version"] == "1"
        assert list(server.server.registry._loaded) == ["1"] and server.server.registry._loaded["1"] is loaded
        # numbers too big for any version, or digits that are not ASCII: NOT_FOUND naming the field, briefly
        for bad in ("9" * 5000, "\u0661", "1" * 19):
            with pytest.raises(NotFound) as err:
                client.generate(server.target, p, timeout=60, version=bad)
            assert err.value.field == "version" and len(str(err.value)) < 400
    finally:
        server.stop()


def test_intra_op_threads_reach_the_embedded_sessions(exported_repository):
    """--intra-op-threads (LDM3D_INTRA_OP_THREADS): a container sets ONNX Runtime's pool to its CPU limit, not the
    node's core count."""
    from ldm3d.servers.config import ServeConfig

    cfg = ServeConfig(repository=str(exported_repository), runtime="embedded", intra_op_threads=1)
    assert cfg.runtime_options == {"intra_op_threads": 1}
    assert ServeConfig(repository="r", runtime="triton", triton_url="h:1", intra_op_threads=1).runtime_options == {}
    pipe = LDM3DPipeline.from_repository(exported_repository, **cfg.runtime_options)
    pipe.runtime.infer("unet", {"sample": np.zeros((2, 4, 8, 8), np.float32), "timestep": np.ones(2, np.float32),
                                "encoder_hidden_states": np.zeros((2, 77, 32), np.float32)})
    sessions = [s for s in vars(pipe.runtime).values() if isinstance(s, dict)]
    opts = [sess.get_session_options() for d in sessions for sess in _sessions(d)]
    assert opts and all(o.intra_op_num_threads == 1 for o in opts)


def _sessions(obj):
    import onnxruntime as ort

    if isinstance(obj, ort.InferenceSession):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _sessions(v)
    elif hasattr(obj, "__dict__"):
        for v in vars(obj).values():
            if isinstance(v, (ort.InferenceSession, dict)):
                yield from _sessions(v)
