"""PanoramaRenderer over a real loopback socket: submit → poll progress → artifacts (bytes or files), cancellation
(running and queued) leaving nothing behind, admission, and every kind of bad input refused at Submit naming the
field, with the server healthy afterwards."""

from __future__ import annotations

import io
import json
import subprocess
import time

import grpc
import numpy as np
import pytest
from google.longrunning import operations_pb2
from google.rpc import error_details_pb2, status_pb2
from PIL import Image
from servers_helpers import ThreadServer, healthy

from ldm3d import codec
from ldm3d.client import StudioClient
from ldm3d.errors import Cancelled, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from ldm3d.v1 import common_pb2, renderer_pb2, renderer_pb2_grpc, studio_pb2

SERVICE = "ldm3d.v1.PanoramaRenderer"


@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    root = tmp_path_factory.mktemp("renders")
    s = ThreadServer(service="renderer", render_output_dir=str(root), render_max_running=1, render_max_queued=1,
                     render_max_frames=100_000, render_max_frame_pixels=640 * 480)
    s.root = root
    yield s
    s.stop()


@pytest.fixture
def client(renderer):
    with StudioClient(renderer.target, timeout=30) as c:
        yield c


def _pano(w=64, h=32):
    """A smooth 2:1 panorama with a near disc in front (so the orbit has parallax)."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h) + 64], axis=-1).astype(np.uint8)
    depth = np.full((h, w), 32768, np.uint16)
    depth[(x - w // 2) ** 2 + (y - h // 2) ** 2 < (h // 5) ** 2] = 60000
    return rgb, depth


def _meta(op) -> renderer_pb2.RenderMetadata:
    m = renderer_pb2.RenderMetadata()
    op.metadata.Unpack(m)
    return m


def _ffprobe(path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                          "stream=width,height,nb_read_frames,codec_name", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["streams"][0]


def _wait_running(client, name, min_step=1, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = _meta(client.get_render(name))
        if m.state == studio_pb2.OPERATION_STATE_RUNNING and m.progress.step >= min_step:
            return m
        time.sleep(0.02)
    raise AssertionError(f"{name} did not reach step {min_step}")


def test_render_job_returns_ods_video_and_mesh_as_bytes(client, tmp_path):
    rgb, depth = _pano()
    seen = []
    name = client.submit_render(rgb, depth, ods=True, path="orbit", seconds=0.5, fps=12, size=(96, 64),
                                meshes=("glb",), request_id="bytes-job")
    assert name == "renders/bytes-job"
    result = client.wait_render(name, on_progress=lambda *p: seen.append(p), poll_s=0.02)
    arts = {a.name: a for a in result.artifacts}
    assert sorted(arts) == ["mesh.glb", "ods.png", "orbit.mp4"]
    assert all(a.WhichOneof("location") == "data" for a in arts.values())
    ods = codec.read_rgb(arts["ods.png"].data)
    assert ods.shape == (64, 64, 3)  # top-bottom, each eye the panorama's 64x32
    assert arts["mesh.glb"].data[:4] == b"glTF" and arts["mesh.glb"].media_type == "model/gltf-binary"
    (tmp_path / "orbit.mp4").write_bytes(arts["orbit.mp4"].data)
    probe = _ffprobe(tmp_path / "orbit.mp4")
    assert (probe["width"], probe["height"], int(probe["nb_read_frames"]), probe["codec_name"]) == (96, 64, 6, "h264")
    assert json.loads(arts["orbit.mp4"].metadata_json)["frames"] == 6
    assert (result.projection, result.panorama_width, result.panorama_height) == ("equirect", 64, 32)
    # progress: units done/total with what the last one was; the final metadata shows the whole job
    final = _meta(client.get_render(name))
    assert final.state == studio_pb2.OPERATION_STATE_SUCCEEDED and final.request_id == "bytes-job"
    assert (final.progress.step, final.progress.total, final.message) == (8, 8, "mesh glb")
    assert seen and seen[-1] == (8, 8, "mesh glb")
    assert all(total == 8 for _, total, _ in seen)


def test_files_delivery_writes_into_a_job_folder_of_the_output_dir(client, renderer):
    rgb, depth = _pano()
    name = client.submit_render(rgb, depth, mono360=True, meshes=("ply", "glb"), files=True, output_dir="scene-1")
    result = client.wait_render(name, poll_s=0.05)
    folder = renderer.root / "scene-1"
    assert sorted(p.name for p in folder.iterdir()) == ["mesh.glb", "mesh.ply", "mono360.png"]
    for a in result.artifacts:
        assert a.WhichOneof("location") == "path" and a.path == str(folder / a.name)
    assert codec.read_rgb(folder / "mono360.png").shape == (32, 64, 3)
    assert (folder / "mesh.ply").read_bytes().startswith(b"ply\n")
    # the folder is the job's: a second job naming it is refused, one naming none gets its own
    with pytest.raises(InvalidArgument) as info:
        client.submit_render(rgb, depth, ods=True, files=True, output_dir="scene-1")
    assert info.value.field == "output_dir"
    other = client.wait_render(client.submit_render(rgb, depth, ods=True, files=True, request_id="auto-named"))
    assert other.artifacts[0].path == str(renderer.root / "auto-named" / "ods.png")


def test_cancel_stops_a_running_job_and_leaves_no_files(client, renderer):
    rgb, depth = _pano()
    name = client.submit_render(rgb, depth, path="orbit", seconds=1000, fps=12, size=(96, 64), renderer="epipolar",
                                files=True, output_dir="cancelled")
    # it renders in a hidden staging folder; "cancelled" appears only once the job succeeded
    assert not (renderer.root / "cancelled").exists() and any((renderer.root / ".partial").iterdir())
    with pytest.raises(InvalidArgument) as info:  # the name is the running job's
        client.submit_render(rgb, depth, ods=True, files=True, output_dir="cancelled")
    assert info.value.field == "output_dir"
    _wait_running(client, name, min_step=3)
    t0 = time.monotonic()
    client.cancel_render(name)  # returns once the job has stopped
    assert time.monotonic() - t0 < 5
    op = client.get_render(name)
    assert op.done and op.error.code == grpc.StatusCode.CANCELLED.value[0]
    assert _meta(op).state == studio_pb2.OPERATION_STATE_CANCELLED
    assert _meta(op).progress.step < 12_000
    assert not (renderer.root / "cancelled").exists()  # no partial video, no folder
    assert not (renderer.root / ".partial").exists() or not any((renderer.root / ".partial").iterdir())
    with pytest.raises(Cancelled):
        client.wait_render(name)


def test_a_queued_job_cancels_at_once_and_a_full_queue_is_refused(client, renderer):
    rgb, depth = _pano()
    long = dict(path="dolly", seconds=1000, fps=12, size=(96, 64), renderer="epipolar")
    running = client.submit_render(rgb, depth, **long)
    _wait_running(client, running)
    queued = client.submit_render(rgb, depth, ods=True)  # max_running 1: waits
    assert _meta(client.get_render(queued)).state == studio_pb2.OPERATION_STATE_QUEUED
    with pytest.raises(ResourceExhausted) as info:  # max_queued 1: the third is refused
        client.submit_render(rgb, depth, ods=True)
    assert info.value.retry_after_s > 0
    t0 = time.monotonic()
    client.cancel_render(queued)
    assert time.monotonic() - t0 < 2, "cancelling a queued job must not wait for the running one"
    assert _meta(client.get_render(queued)).state == studio_pb2.OPERATION_STATE_CANCELLED
    assert _meta(client.get_render(running)).state == studio_pb2.OPERATION_STATE_RUNNING
    client.cancel_render(running)
    assert _meta(client.get_render(running)).state == studio_pb2.OPERATION_STATE_CANCELLED
    assert healthy(renderer.target, SERVICE)


def _png8(h, w):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _request(rgb=None, depth=None, depth_png=None, **fields) -> renderer_pb2.RenderRequest:
    r, d = _pano()
    rgb = r if rgb is None else rgb
    depth = d if depth is None else depth
    pano = common_pb2.RGBD(rgb=common_pb2.Image(png=codec.encode_png(rgb)),
                           depth=common_pb2.Image(png=depth_png or codec.encode_png(depth)))
    return renderer_pb2.RenderRequest(**{"panorama": pano, "ods": True, **fields})


BAD = [
    (_request(depth=np.zeros((32, 62), np.uint16)), "INVALID_ARGUMENT", "panorama.depth"),
    (_request(depth_png=_png8(32, 64)), "INVALID_ARGUMENT", "panorama.depth.png"),
    (_request(rgb=np.zeros((32, 48, 3), np.uint8), depth=np.zeros((32, 48), np.uint16), projection="equirect"),
     "INVALID_ARGUMENT", "projection"),
    (_request(rgb=np.zeros((32, 48, 3), np.uint8), depth=np.zeros((32, 48), np.uint16), cap_hfov=200),
     "INVALID_ARGUMENT", "cap_hfov"),
    (_request(edge_threshold=0), "INVALID_ARGUMENT", "edge_threshold"),
    (_request(mesh_formats=[renderer_pb2.MESH_FORMAT_PLY], mesh_step=5), "INVALID_ARGUMENT", "mesh_step"),
    (renderer_pb2.RenderRequest(ods=True), "INVALID_ARGUMENT", "panorama"),
    (_request(ods=False), "INVALID_ARGUMENT", "ods"),
    (_request(path=renderer_pb2.CAMERA_PATH_ORBIT, width=1920, height=1080), "RESOURCE_EXHAUSTED", "width"),
    (_request(path=renderer_pb2.CAMERA_PATH_ORBIT, seconds=3600, fps=30, width=96, height=64),
     "RESOURCE_EXHAUSTED", "seconds"),
    (_request(path=renderer_pb2.CAMERA_PATH_ORBIT, width=95, height=64), "INVALID_ARGUMENT", "width"),
    (_request(path=renderer_pb2.CAMERA_PATH_ORBIT, width=96), "INVALID_ARGUMENT", "height"),
    (_request(eye_width=100, eye_height=64), "INVALID_ARGUMENT", "eye_width"),
    (_request(mesh_formats=[renderer_pb2.MESH_FORMAT_OBJ]), "INVALID_ARGUMENT", "mesh_formats[0]"),
    (_request(path=renderer_pb2.CAMERA_PATH_KEYFRAMES, keyframes_json="[{"), "INVALID_ARGUMENT", "keyframes_json"),
    (_request(path=renderer_pb2.CAMERA_PATH_KEYFRAMES, keyframes_json='[{"t": 0, "hfov": 500}]',
              width=96, height=64),
     "INVALID_ARGUMENT", "keyframes_json"),
    (_request(keyframes_json="[]"), "INVALID_ARGUMENT", "keyframes_json"),
    (_request(path=renderer_pb2.CAMERA_PATH_ORBIT, fps=1000, width=96, height=64), "INVALID_ARGUMENT", "fps"),
    (_request(depth_strength=2.5), "INVALID_ARGUMENT", "depth_strength"),
    (_request(renderer="gpu", path=renderer_pb2.CAMERA_PATH_DOLLY, width=96, height=64), "INVALID_ARGUMENT",
     "renderer"),
    (_request(video360=True), "INVALID_ARGUMENT", "path"),
    (_request(path=17), "INVALID_ARGUMENT", "path"),
    (_request(delivery=renderer_pb2.ARTIFACT_DELIVERY_FILES, output_dir="../outside"), "INVALID_ARGUMENT",
     "output_dir"),
    (_request(delivery=renderer_pb2.ARTIFACT_DELIVERY_FILES, output_dir="/etc"), "INVALID_ARGUMENT", "output_dir"),
]


def _field(err: grpc.RpcError) -> str | None:
    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    for any_ in status_pb2.Status.FromString(raw).details:
        if any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            any_.Unpack(br)
            return br.field_violations[0].field
    return None


def test_bad_input_is_refused_at_submit_naming_the_field(renderer):
    with grpc.insecure_channel(renderer.target) as ch:
        stub = renderer_pb2_grpc.PanoramaRendererStub(ch)
        for req, code, field in BAD:
            with pytest.raises(grpc.RpcError) as info:
                stub.Submit(req, timeout=10)
                pytest.fail(f"accepted a request with a bad {field}")
            err = info.value
            assert err.code().name == code, (field, err.details())
            if code == "INVALID_ARGUMENT":
                assert _field(err) == field, err.details()
            else:
                assert err.details().startswith(field), err.details()
        for method, cls in [(stub.GetOperation, operations_pb2.GetOperationRequest),
                            (stub.CancelOperation, operations_pb2.CancelOperationRequest)]:
            with pytest.raises(grpc.RpcError) as info:
                method(cls(name="renders/never-submitted"), timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert not any(p.name == "outside" for p in renderer.root.parent.iterdir())
    assert healthy(renderer.target) and healthy(renderer.target, SERVICE)


def test_files_without_an_output_dir_and_bytes_over_the_message_limit_are_refused():
    server = ThreadServer(service="renderer", max_message_mb=2)
    try:
        with StudioClient(server.target, timeout=10) as c:
            rgb, depth = _pano()
            with pytest.raises(FailedPrecondition) as info:
                c.submit_render(rgb, depth, ods=True, files=True)
            assert "--render-output-dir" in str(info.value)
            # artifacts that cannot fit a message are refused at submit, before any work (a lower bound of their size)
            with pytest.raises(ResourceExhausted) as info:
                c.submit_render(rgb, depth, ods=True, eye_size=(4096, 2048))
            assert "ARTIFACT_DELIVERY_FILES" in str(info.value) and info.value.field == "delivery"
            # a job still rendering when the server stops is cancelled, and the stop does not wait for it to finish
            long = c.submit_render(rgb, depth, path="orbit", seconds=250, fps=12, size=(96, 64), renderer="epipolar")
            _wait_running(c, long)
        assert healthy(server.target, SERVICE)
    finally:
        t0 = time.monotonic()
        server.stop(grace_s=1)
        assert time.monotonic() - t0 < 10


def test_the_gateway_address_answers_rendering(tiny_model, renderer):
    """A gateway with --renderer-url forwards jobs (operations, progress and errors intact); without, it renders."""
    rgb, depth = _pano()
    forwarding = ThreadServer(service="gateway", checkpoint=str(tiny_model), renderer_url=renderer.target)
    local = ThreadServer(service="gateway", checkpoint=str(tiny_model))
    names = []
    try:
        for server in (forwarding, local):
            assert healthy(server.target, SERVICE)
            with StudioClient(server.target, timeout=30) as c:
                name = c.submit_render(rgb, depth, ods=True, meshes=("glb",))
                names.append(name)
                result = c.wait_render(name, poll_s=0.05)
                assert [a.name for a in result.artifacts] == ["ods.png", "mesh.glb"]
                with pytest.raises(InvalidArgument) as info:
                    c.submit_render(rgb, depth[:, :-2], ods=True)
                assert info.value.field == "panorama.depth"
        with StudioClient(renderer.target, timeout=10) as direct:  # the forwarded job ran on the renderer
            assert direct.get_render(names[0]).done
            with pytest.raises(NotFound):  # the other gateway rendered in its own process
                direct.get_render(names[1])
    finally:
        local.stop()
        forwarding.stop()


def test_render_and_depth_options_come_from_flags_and_environment():
    import argparse

    from ldm3d.servers.config import ServeConfig, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--render-max-frames", "10", "--depth-model", "dpt"])
    args.service = "all"
    env = {"LDM3D_RENDER_OUTPUT_DIR": "/srv/renders", "LDM3D_RENDER_MAX_FRAMES": "99", "LDM3D_CHECKPOINT": "x",
           "LDM3D_REFERENCE_MODEL": "zoe", "LDM3D_RENDERER_URL": "render-host:50056"}
    cfg = ServeConfig.from_args(args, env)
    assert (cfg.render_max_frames, cfg.render_output_dir, cfg.depth_model, cfg.reference_model, cfg.renderer_url) \
        == (10, "/srv/renders", "dpt", "zoe", "render-host:50056")  # flag > variable > default
    with pytest.raises(InvalidArgument) as info:
        ServeConfig.from_args(args, {**env, "LDM3D_RENDER_MAX_QUEUED": "-1"})
    assert info.value.field == "--render-max-queued" and "LDM3D_RENDER_MAX_QUEUED" in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        ServeConfig(service="renderer", depth_evaluator_url="localhost:1")
    assert info.value.field == "--depth-evaluator-url"
