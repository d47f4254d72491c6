"""``ldm3d pano --server``: the same two-stage job on the gRPC platform as one Studio.SubmitPano operation, giving
the very files the in-process run writes; SubmitPano itself (progress through both stages, cancellation, bad input
refused at submit naming the PanoRequest field)."""

from __future__ import annotations

import json
import time

import pytest

from ldm3d.cli import main

FLAGS = ["--prompt", "a cozy cabin", "--height", "64", "--seed", "5", "--steps", "2", "--scheduler", "ddim",
         "--no-video", "--no-progress"]


def test_pano_over_grpc_equals_in_process(platform, tiny_model, tmp_path, capsys):
    remote, local = tmp_path / "remote", tmp_path / "local"
    assert main(["pano", "--server", platform.target, "--out", str(remote), *FLAGS]) == 0
    assert main(["pano", "--model", str(tiny_model), "--out", str(local), *FLAGS]) == 0
    m = json.loads((remote / "pano.json").read_text())
    assert m["platform"] == platform.target and m["generation"]["width"] == 128
    assert m["generation"]["seamless"] is True  # a 2:1 size on a checkpoint: the server wraps too
    for name in ("panorama_rgb.png", "panorama_depth.png", "ods.png", "mesh.glb"):
        assert (remote / name).read_bytes() == (local / name).read_bytes(), name
    assert (remote / "index.html").is_file()
    # flags the wire does not carry are refused, naming the flag
    capsys.readouterr()
    assert main(["pano", "--server", platform.target, "--out", str(tmp_path / "x"), "--no-seamless", *FLAGS]) == 2
    assert "--no-seamless" in capsys.readouterr().err
    assert main(["pano", "--server", platform.target, "--model", "nope", "--out", str(tmp_path / "y"), *FLAGS]) == 2
    assert "nope" in capsys.readouterr().err


# -- Studio.SubmitPano itself: one operation for both stages, over the platform's real socket

def _params(**kw):
    from ldm3d.pipeline import GenerateParams

    return GenerateParams(**{"prompt": "a cozy cabin", "height": 64, "width": 128, "steps": 2, "seed": 5,
                             "scheduler": "ddim", **kw})


def test_submit_pano_is_one_operation_with_progress_through_both_stages(platform):
    from ldm3d.client import StudioClient
    from ldm3d.v1 import studio_pb2

    steps, units = [], []
    with StudioClient(platform.target, timeout=30) as c:
        name = c.submit_pano(_params(), ods=True, meshes=("glb",))
        assert name.startswith("panos/")
        pano, render = c.wait_pano(name, on_step=lambda s, t, _e: steps.append((s, t)),
                                   on_progress=lambda d, t, m: units.append(m), poll_s=0.01)
        op = c.get_operation(name)
    meta = studio_pb2.PanoMetadata()
    op.metadata.Unpack(meta)
    assert op.done and meta.state == studio_pb2.OPERATION_STATE_SUCCEEDED and meta.stage == "render"
    assert pano.rgb[0].shape == (64, 128, 3) and pano.depth[0].dtype.name == "uint16"
    assert pano.metadata["seed"] == 5 and pano.metadata["seamless"] is True
    assert {a.name for a in render.artifacts} == {"ods.png", "mesh.glb"} and all(a.data for a in render.artifacts)
    assert (render.panorama_width, render.panorama_height, render.projection) == (128, 64, "equirect")
    assert 0 < meta.progress.step == meta.progress.total and meta.message  # the render stage's last unit
    assert all(t == 2 for _, t in steps) and all(units)  # what the poller caught of each stage


def test_cancelling_a_pano_operation_ends_it_cancelled_and_frees_its_slot(platform):
    from ldm3d.client import StudioClient
    from ldm3d.errors import Cancelled
    from ldm3d.v1 import studio_pb2

    with StudioClient(platform.target, timeout=30) as c:
        name = c.submit_pano(_params(steps=999), ods=True)  # long enough to be caught generating
        meta = studio_pb2.PanoMetadata()
        while not meta.HasField("progress"):
            time.sleep(0.01)
            c.get_operation(name).metadata.Unpack(meta)
        c.cancel(name)  # returns once the work has stopped
        with pytest.raises(Cancelled):
            c.wait_pano(name)
        c.get_operation(name).metadata.Unpack(meta)
        assert meta.state == studio_pb2.OPERATION_STATE_CANCELLED and meta.stage == "generate"
        # its admission ticket is back: the platform (max 1 running + 2 queued) still takes new panoramas
        for _ in range(3):
            assert c.wait_pano(c.submit_pano(_params(steps=1), ods=True))[1].artifacts


def _field(err) -> str | None:
    from google.rpc import error_details_pb2, status_pb2

    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    for any_ in status_pb2.Status.FromString(raw).details:
        if any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            any_.Unpack(br)
            return br.field_violations[0].field
    return None


def test_bad_pano_input_is_refused_at_submit_naming_the_field(platform):
    import grpc
    import numpy as np
    from google.longrunning import operations_pb2

    from ldm3d.v1 import renderer_pb2, studio_pb2, studio_pb2_grpc
    from ldm3d.wire import tensors

    def req(render=None, **gen):
        g = studio_pb2.GenerateRequest(**{"prompt": "a cabin", "height": 64, "width": 128, "steps": 1, **gen})
        return studio_pb2.PanoRequest(generate=g, render=render or renderer_pb2.RenderRequest(ods=True))

    z = np.zeros((64, 128), np.uint16)
    bad = [
        (req(width=64), "generate.width"),  # not 2:1
        (req(height=65), "generate.height"),  # not a multiple of 8
        (req(num_images=2), "generate.num_images"),
        (req(renderer_pb2.RenderRequest(ods=True, path=renderer_pb2.CAMERA_PATH_ORBIT, fps=-1)), "render.fps"),
        (req(renderer_pb2.RenderRequest(ods=True, panorama=tensors.rgbd(np.zeros((64, 128, 3), np.uint8), z, True))),
         "render.panorama"),
    ]
    with grpc.insecure_channel(platform.target) as ch:
        stub = studio_pb2_grpc.StudioStub(ch)
        for request, field in bad:
            with pytest.raises(grpc.RpcError) as info:
                stub.SubmitPano(request, timeout=10)
                pytest.fail(f"accepted a request with a bad {field}")
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, info.value.details())
            assert _field(info.value) == field and info.value.details().startswith(field), info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            stub.GetOperation(operations_pb2.GetOperationRequest(name="panos/never-submitted"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
