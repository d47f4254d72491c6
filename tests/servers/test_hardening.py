"""Hostile-but-fair clients over real sockets: health that tells the truth (Watch works, NOT_SERVING until warm),
admission at the door (refused before any text is encoded, SubmitGenerate refused at submit time), operations
kept until done + TTL, request ids that cannot forge log lines or break headers, bounded error messages, and client
cancellations that are not logged as errors."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from servers_helpers import ThreadServer

from ldm3d.errors import ResourceExhausted
from ldm3d.servers import logs
from ldm3d.wire import ids
from ldm3d.servers.operations import Operations
from ldm3d.v1 import studio_pb2, studio_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _details(err: grpc.RpcError) -> status_pb2.Status:
    return status_pb2.Status.FromString(dict(err.trailing_metadata())["grpc-status-details-bin"])


def test_watch_streams_the_status_on_every_name(channel):
    """grpc.health.v1 Watch (client-side health checking) answers, for the server and each service, and two
    watchers of one name do not orphan each other when one leaves."""
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", "ldm3d.v1.Studio", "ldm3d.v1.DiffusionSampler", "ldm3d.v1.PanoramaRenderer"):
        first = stub.Watch(health_pb2.HealthCheckRequest(service=name), timeout=10)
        second = stub.Watch(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert next(first).status == SERVING and next(second).status == SERVING
        first.cancel()
        second.cancel()
    unknown = stub.Watch(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=2)
    assert next(unknown).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
    unknown.cancel()


def test_watch_sees_not_serving_on_graceful_stop():
    s = ThreadServer(service="renderer")
    with grpc.insecure_channel(s.target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        watches = [stub.Watch(health_pb2.HealthCheckRequest(service="ldm3d.v1.PanoramaRenderer"), timeout=20)
                   for _ in range(2)]
        assert [next(w).status for w in watches] == [SERVING, SERVING]
        watches[0].cancel()  # one watcher leaves: the other must still hear of the change
        time.sleep(0.2)
        stopper = threading.Thread(target=s.stop, kwargs={"grace_s": 2.0})
        stopper.start()
        assert next(watches[1]).status == NOT_SERVING
        stopper.join(20)


def test_not_serving_until_the_models_are_warm(tiny_model, monkeypatch):
    """The port answers at once, NOT_SERVING while the warm-up pass runs, SERVING only after it."""
    from ldm3d.servers import app

    real, warming, done = app.warm_up, threading.Event(), threading.Event()

    def slow_warm_up(pipe, parts):
        warming.set()
        real(pipe, parts)
        time.sleep(1.0)
        done.set()

    monkeypatch.setattr(app, "warm_up", slow_warm_up)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    seen = []
    starter = threading.Thread(target=lambda: seen.append(ThreadServer(service="sampler", checkpoint=str(tiny_model),
                                                                       port=port)))
    starter.start()
    assert warming.wait(120)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        statuses = []
        while not done.is_set():
            for name in ("", "ldm3d.v1.DiffusionSampler"):
                st = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
                statuses.append((st, done.is_set()))  # read after the answer: SERVING implies warm-up had ended
            time.sleep(0.05)
        starter.join(60)
        assert all(warm for st, warm in statuses if st != NOT_SERVING) and len(statuses) > 4, statuses
        assert stub.Check(health_pb2.HealthCheckRequest(service="ldm3d.v1.DiffusionSampler"), timeout=5).status \
            == SERVING
    seen[0].stop()


def test_refused_at_the_door_before_any_text_is_encoded(tiny_model):
    """With every ticket out, Generate, SubmitGenerate and GenerateBatch are refused at once with a RetryInfo, and
    the refused prompts never reach the text encoder (its cache never sees them)."""
    s = ThreadServer(service="all", checkpoint=str(tiny_model), max_running=1, max_queued=0)
    try:
        text = s.server.registry.default().pipeline.text
        with grpc.insecure_channel(s.target) as ch:
            stub = studio_pb2_grpc.StudioStub(ch)
            long = stub.Generate(studio_pb2.GenerateRequest(prompt="long", steps=400, height=64, width=64),
                                 timeout=60)
            next(long)
            calls = {
                "Generate": lambda: list(stub.Generate(studio_pb2.GenerateRequest(prompt="refused-1", steps=2),
                                                       timeout=10)),
                "SubmitGenerate": lambda: stub.SubmitGenerate(studio_pb2.GenerateRequest(prompt="refused-2",
                                                                                         steps=2), timeout=10),
                "GenerateBatch": lambda: stub.GenerateBatch(studio_pb2.GenerateBatchRequest(
                    requests=[studio_pb2.GenerateRequest(prompt="refused-3", steps=2)]), timeout=10),
            }
            for name, call in calls.items():
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, name
                retry = error_details_pb2.RetryInfo()
                assert any(d.Unpack(retry) for d in _details(info.value).details), name
                assert retry.retry_delay.ToNanoseconds() > 0
            long.cancel()
            assert not {"refused-1", "refused-2", "refused-3"} & set(text._cache)
            # the ticket comes back when the cancelled call ends: a submit is accepted again and completes
            deadline = time.monotonic() + 30
            while True:
                try:
                    op = stub.SubmitGenerate(studio_pb2.GenerateRequest(prompt="ok", steps=2, height=64, width=64),
                                             timeout=10)
                    break
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
                    time.sleep(0.2)
            assert op.name.startswith("operations/")
    finally:
        s.stop()


def test_operations_are_kept_until_done_and_their_ttl_passed():
    async def scenario():
        ops = Operations(max_operations=2, ttl_s=0.5)
        release = asyncio.Event()

        async def job(wait: bool):
            if wait:
                await release.wait()
            yield studio_pb2.GenerateResult(request_id="r")

        a = ops.start("a", job(True))  # running: never dropped
        b = ops.start("b", job(False))
        await asyncio.sleep(0.05)  # b is done now, but within its TTL
        with pytest.raises(ResourceExhausted) as info:
            ops.start("c", job(False))
        assert 0 < info.value.retry_after_s <= 0.5
        assert ops.get(a.name) and ops.get(b.name).done
        await asyncio.sleep(0.5)
        c = ops.start("c", job(False))  # b's TTL passed: b makes room, a (running) stays
        assert ops.get(a.name) and ops.get(c.name)
        with pytest.raises(Exception, match="no such operation"):
            ops.get(b.name)
        release.set()
        await ops.close()

    asyncio.run(scenario())


def test_request_ids_are_made_safe():
    assert ids.safe_request_id("abc-123_x.y") == "abc-123_x.y"
    forged = ids.safe_request_id("id\n2026-12-02 INFO forged line é")
    assert forged.isascii() and "\n" not in forged and " " not in forged
    long = ids.safe_request_id("x" * 10_000)
    assert len(long) == ids.MAX_REQUEST_ID_CHARS and long != ids.safe_request_id("x" * 10_001)


def test_odd_request_ids_cannot_forge_log_lines_or_break_the_call(channel):
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)  # the text format `ldm3d serve` uses, on the server's own thread
    handler.addFilter(logs.RequestIdFilter())
    handler.setFormatter(logs.TextFormatter("%(levelname)s %(name)s [%(request_id)s] %(message)s"))
    logger = logging.getLogger("ldm3d")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        stub = studio_pb2_grpc.StudioStub(channel)
        rid = "evil\nERROR forged-é-" + "y" * 5000
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Generate(studio_pb2.GenerateRequest(prompt="", request_id=rid), timeout=10))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # the prompt, not the id, is what is wrong
        logging.getLogger("ldm3d.test").info("a message with\na line break")
        deadline = time.monotonic() + 5
        while "[evil_ERROR_forged-" not in buf.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)  # the call's log line is written by the server thread as the call ends
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = buf.getvalue().splitlines()
    assert not [ln for ln in lines if ln.startswith("ERROR forged") or ln.startswith("a line break")]
    mine = [ln for ln in lines if "[evil_ERROR_forged-" in ln]
    assert mine, lines
    for ln in mine:
        rid_logged = ln.split("[", 1)[1].split("]", 1)[0]
        assert len(rid_logged) <= ids.MAX_REQUEST_ID_CHARS and rid_logged.isascii()


def test_huge_values_are_not_echoed_whole(channel):
    """An error about a 1 MB value stays short (it travels in headers, limited to 8 KiB)."""
    stub = studio_pb2_grpc.StudioStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(studio_pb2.GenerateRequest(prompt="x", scheduler="s" * 1_000_000), timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(info.value.details()) < 1100
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(studio_pb2.GenerateRequest(prompt="x", model="m" * 1_000_000), timeout=10))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and len(info.value.details()) < 1100


def test_client_cancellation_is_not_logged_as_an_error(channel, caplog):
    caplog.set_level(logging.INFO)
    stub = studio_pb2_grpc.StudioStub(channel)
    stream = stub.Generate(studio_pb2.GenerateRequest(prompt="long", steps=400, height=64, width=64), timeout=60)
    next(stream)
    stream.cancel()
    with pytest.raises(grpc.RpcError) as info:
        stub.GenerateBatch(studio_pb2.GenerateBatchRequest(
            requests=[studio_pb2.GenerateRequest(prompt="long", steps=400, height=64, width=64)]), timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(1.0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture(scope="module")
def bombs():
    """Small PNGs that decode to 8192² images (16-bit gray and 8-bit RGB), and a normal 64² pair."""
    from servers_helpers import png_bomb

    return {"depth": png_bomb(8192, 8192, 16, 0), "rgb": png_bomb(8192, 8192, 8, 2),
            "rgb64": png_bomb(64, 64, 8, 2), "depth64": png_bomb(64, 64, 16, 0)}


def _quota_or_bad_field(err: grpc.RpcError) -> str | None:
    for any_ in _details(err).details:
        for cls, get in ((error_details_pb2.BadRequest, lambda m: m.field_violations[0].field),
                         (error_details_pb2.QuotaFailure, lambda m: m.violations[0].subject)):
            if any_.Is(cls.DESCRIPTOR):
                msg = cls()
                any_.Unpack(msg)
                return get(msg)
    return None


def test_png_bombs_are_refused_from_their_header_while_health_stays_fast(channel, bombs):
    """Each image input refuses a decompression bomb from its PNG header, naming the field, in milliseconds;
    sixteen at once leave health checks fast and the process's memory flat (nothing was decoded)."""
    import psutil

    from ldm3d.v1 import (autoencoder_pb2, autoencoder_pb2_grpc, common_pb2, depth_pb2, depth_pb2_grpc,
                          renderer_pb2, renderer_pb2_grpc)

    img = lambda data: common_pb2.Image(png=data)  # noqa: E731
    rgbd = lambda rgb, depth: common_pb2.RGBD(rgb=img(rgb), depth=img(depth))  # noqa: E731
    studio = studio_pb2_grpc.StudioStub(channel)
    cases = [
        (lambda: list(studio.Generate(studio_pb2.GenerateRequest(
            prompt="x", steps=2, init_image=rgbd(bombs["rgb"], bombs["depth64"])), timeout=10)),
         "INVALID_ARGUMENT", "init_image.rgb.png"),
        (lambda: list(studio.Generate(studio_pb2.GenerateRequest(
            prompt="x", steps=2, init_image=rgbd(bombs["rgb64"], bombs["depth"])), timeout=10)),
         "INVALID_ARGUMENT", "init_image.depth.png"),
        (lambda: autoencoder_pb2_grpc.RGBDAutoencoderStub(channel).Encode(autoencoder_pb2.EncodeRGBDRequest(
            image=rgbd(bombs["rgb64"], bombs["depth"])), timeout=10), "INVALID_ARGUMENT", "image.depth.png"),
        (lambda: depth_pb2_grpc.DepthEvaluatorStub(channel).Evaluate(depth_pb2.EvaluateDepthRequest(
            predicted_depth=img(bombs["depth64"]), reference_depth=img(bombs["depth"])), timeout=10),
         "RESOURCE_EXHAUSTED", "reference_depth.png"),
        (lambda: depth_pb2_grpc.DepthEvaluatorStub(channel).Evaluate(depth_pb2.EvaluateDepthRequest(
            predicted_depth=img(bombs["depth"]), reference_depth=img(bombs["depth64"])), timeout=10),
         "RESOURCE_EXHAUSTED", "predicted_depth.png"),
        (lambda: renderer_pb2_grpc.PanoramaRendererStub(channel).Submit(renderer_pb2.RenderRequest(
            panorama=rgbd(bombs["rgb"], bombs["depth"]), ods=True), timeout=10),
         "RESOURCE_EXHAUSTED", "panorama.rgb.png"),
        (lambda: renderer_pb2_grpc.PanoramaRendererStub(channel).Submit(renderer_pb2.RenderRequest(
            panorama=rgbd(bombs["rgb64"], bombs["depth"]), ods=True), timeout=10),
         "RESOURCE_EXHAUSTED", "panorama.depth.png"),
    ]
    me = psutil.Process()
    rss0 = me.memory_info().rss
    latencies, stop = [], threading.Event()

    def poll_health():
        stub = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            t0 = time.perf_counter()
            assert stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.02)

    poller = threading.Thread(target=poll_health)
    poller.start()

    def run(case):
        call, code, field = case
        t0 = time.perf_counter()
        with pytest.raises(grpc.RpcError) as info:
            call()
        return info.value, code, field, time.perf_counter() - t0

    try:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(run, cases * 3))
    finally:
        stop.set()
        poller.join(10)
    for err, code, field, seconds in outcomes:
        assert err.code().name == code, (field, err.details())
        assert _quota_or_bad_field(err) == field, err.details()
        assert seconds < 3.0, (field, seconds)
    assert latencies and max(latencies) < 1.0, max(latencies)
    assert me.memory_info().rss - rss0 < 150 * 2**20, "something decoded a bomb"


RENDER_HOSTILE = [
    ({"path": 1, "seconds": 1e308, "width": 96, "height": 64}, "RESOURCE_EXHAUSTED", "seconds"),
    ({"ipd": float("nan")}, "INVALID_ARGUMENT", "ipd"),
    ({"ipd": float("inf")}, "INVALID_ARGUMENT", "ipd"),
    ({"radius": -1.0}, "INVALID_ARGUMENT", "radius"),
    ({"radius": float("nan")}, "INVALID_ARGUMENT", "radius"),
    ({"crf": 10**9}, "INVALID_ARGUMENT", "crf"),
    ({"depth_strength": float("nan")}, "INVALID_ARGUMENT", "depth_strength"),
    ({"edge_threshold": float("nan")}, "INVALID_ARGUMENT", "edge_threshold"),
    ({"path": 4, "keyframes_json": "[" * 100_000 + "]" * 100_000}, "INVALID_ARGUMENT", "keyframes_json"),
    ({"path": 4, "keyframes_json": json.dumps([{"t": i} for i in range(20_000)])}, "INVALID_ARGUMENT",
     "keyframes_json"),
    ({"path": 4, "keyframes_json": '[{"t": "soon"}, {"t": [1]}]', "width": 96, "height": 64}, "INVALID_ARGUMENT",
     "keyframes_json"),
    ({"path": 4, "keyframes_json": '[1, 2, 3]', "width": 96, "height": 64}, "INVALID_ARGUMENT", "keyframes_json"),
    ({"path": 4, "keyframes_json": '[{"t": 0, "position": "up"}, {"t": 1, "yaw": NaN}]', "width": 96,
      "height": 64}, "INVALID_ARGUMENT", "keyframes_json"),
    ({"video360": True, "ods": False}, "INVALID_ARGUMENT", "path"),
    ({"path": 1, "seconds": 120, "fps": 30, "width": 3840, "height": 2160}, "RESOURCE_EXHAUSTED", "delivery"),
]


@pytest.mark.parametrize("fields,code,field", RENDER_HOSTILE, ids=[f"{f}-{i}" for i, (_, _, f) in
                                                                   enumerate(RENDER_HOSTILE)])
def test_render_numbers_and_keyframes_are_refused_naming_the_field(channel, fields, code, field):
    from ldm3d.v1 import common_pb2, renderer_pb2, renderer_pb2_grpc
    from servers_helpers import png_bomb

    pano = common_pb2.RGBD(rgb=common_pb2.Image(png=png_bomb(64, 32, 8, 2)),
                           depth=common_pb2.Image(png=png_bomb(64, 32, 16, 0)))
    req = renderer_pb2.RenderRequest(**{"panorama": pano, "ods": True, **fields})
    with pytest.raises(grpc.RpcError) as info:
        renderer_pb2_grpc.PanoramaRendererStub(channel).Submit(req, timeout=10)
    assert info.value.code().name == code, info.value.details()
    assert _quota_or_bad_field(info.value) == field, info.value.details()
    assert len(info.value.details()) < 1100


def test_a_killed_files_job_does_not_block_resubmitting_its_folder(tmp_path):
    """A renderer killed (SIGKILL) mid-job leaves no folder that looks finished or blocks the same output_dir; the
    next renderer on that folder removes the dead job's staging folder."""
    import numpy as np

    from ldm3d.client import StudioClient
    from servers_helpers import ProcessServer

    y, x = np.mgrid[0:32, 0:64]
    rgb = np.stack([x * 4, y * 8, x + y], axis=-1).astype(np.uint8)
    depth = np.full((32, 64), 30000, np.uint16)
    out = tmp_path / "renders"
    out.mkdir()
    first = ProcessServer("renderer", "--render-output-dir", str(out))
    try:
        with StudioClient(first.target, timeout=30) as c:
            name = c.submit_render(rgb, depth, path="orbit", seconds=250, fps=12, size=(96, 64),
                                   renderer="epipolar", files=True, output_dir="scene")
            deadline = time.monotonic() + 30
            while c.get_render(name).metadata.value == b"" or not any((out / ".partial").iterdir()):
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        first.proc.kill()
        first.proc.wait(10)
        first.proc.stdout.close()
        first.log.close()
    assert not (out / "scene").exists() and any((out / ".partial").iterdir())
    second = ProcessServer("renderer", "--render-output-dir", str(out))
    try:
        assert not (out / ".partial").exists(), "the killed job's staging folder was left behind"
        with StudioClient(second.target, timeout=30) as c:
            result = c.wait_render(c.submit_render(rgb, depth, ods=True, files=True, output_dir="scene"), timeout=60)
        assert result.artifacts[0].path == str(out / "scene" / "ods.png") and (out / "scene" / "ods.png").is_file()
    finally:
        second.stop()


def test_a_result_too_large_for_a_message_is_refused_before_the_work(tiny_model):
    s = ThreadServer(service="all", checkpoint=str(tiny_model), max_message_mb=2)
    try:
        with grpc.insecure_channel(s.target) as ch:
            stub = studio_pb2_grpc.StudioStub(ch)
            big = studio_pb2.GenerateRequest(prompt="x", steps=400, height=512, width=512, num_images=2,
                                             image_encoding=2)  # raw: 2.5 MiB, over 2 MiB - margin
            t0 = time.perf_counter()
            for call in (lambda: list(stub.Generate(big, timeout=10)), lambda: stub.SubmitGenerate(big, timeout=10),
                         lambda: stub.GenerateBatch(studio_pb2.GenerateBatchRequest(requests=[big]), timeout=10)):
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
                assert "IMAGE_ENCODING_PNG" in info.value.details()
            assert time.perf_counter() - t0 < 5, "refused only after sampling 400 steps"
    finally:
        s.stop()


def test_refused_calls_do_not_keep_their_requests_alive(channel, bombs):
    """A refused call's exception must not keep its request (here a 130 KB bomb) alive until the cyclic GC runs:
    with the collector off, 300 refusals leave the process's memory where it was."""
    import gc

    import psutil

    from ldm3d.v1 import autoencoder_pb2, autoencoder_pb2_grpc, common_pb2

    stub = autoencoder_pb2_grpc.RGBDAutoencoderStub(channel)
    req = autoencoder_pb2.EncodeRGBDRequest(image=common_pb2.RGBD(rgb=common_pb2.Image(png=bombs["rgb64"]),
                                                                  depth=common_pb2.Image(png=bombs["depth"])))
    me = psutil.Process()
    for _ in range(20):  # warm the allocator
        with pytest.raises(grpc.RpcError):
            stub.Encode(req, timeout=10)
    gc.collect()
    gc.disable()
    try:
        rss0 = me.memory_info().rss
        for _ in range(300):
            with pytest.raises(grpc.RpcError):
                stub.Encode(req, timeout=10)
        grown = me.memory_info().rss - rss0
    finally:
        gc.enable()
    assert grown < 12 * 2**20, f"{grown / 2**20:.0f} MiB kept by 300 refused calls"
