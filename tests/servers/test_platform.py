"""Serving behaviour over real sockets: progress streaming, cancellation within one step, admission control,
long-running operations, health, reflection, metrics, request ids in logs, graceful shutdown, typed config."""

from __future__ import annotations

import argparse
import logging
import threading
import time
import urllib.request

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY
from servers_helpers import ThreadServer, healthy

from ldm3d import client
from ldm3d.errors import Cancelled, InvalidArgument, NotFound
from ldm3d.pipeline import GenerateParams
from ldm3d.servers.config import ServeConfig, add_arguments
from ldm3d.servers.logs import JsonFormatter, RequestIdFilter
from ldm3d.v1 import studio_pb2, studio_pb2_grpc


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _wait_for(predicate, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def _idle():
    return _metric("ldm3d_sampler_running") == 0 and _metric("ldm3d_sampler_queue_depth") == 0


def test_cancelling_a_call_stops_the_sampler_within_one_step(channel):
    _wait_for(_idle)
    before = _metric("ldm3d_sampler_steps_total")
    stream = studio_pb2_grpc.StudioStub(channel).Generate(
        studio_pb2.GenerateRequest(prompt="long", steps=400, seed=1), timeout=60)
    seen = [next(stream).progress.step for _ in range(3)]
    stream.cancel()
    _wait_for(_idle)  # the slot comes back only once the worker thread has left the loop
    ran = _metric("ldm3d_sampler_steps_total") - before
    assert seen == [1, 2, 3]
    assert ran <= seen[-1] + 2, f"{ran} steps ran after cancelling at step {seen[-1]}"


def test_admission_refuses_beyond_the_queue_with_a_retry_hint(platform, channel):
    """max_running=1, max_queued=2 (the fixture): the 4th concurrent job is refused at once, nothing piles up."""
    _wait_for(_idle)
    stub = studio_pb2_grpc.StudioStub(channel)
    long = studio_pb2.GenerateRequest(prompt="long", steps=400, seed=1)
    streams = [stub.Generate(long, timeout=60)]
    next(streams[0])  # running
    streams += [stub.Generate(long, timeout=60) for _ in range(2)]
    _wait_for(lambda: _metric("ldm3d_sampler_queue_depth") == 2)
    try:
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Generate(long, timeout=60))
        err = info.value
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = status_pb2.Status.FromString(dict(err.trailing_metadata())["grpc-status-details-bin"])
        retry = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(retry) and retry.retry_delay.ToNanoseconds() > 0
    finally:
        for s in streams:
            s.cancel()
    _wait_for(_idle)
    assert healthy(platform.target)


def test_long_running_operation_get_and_cancel(platform):
    with client.StudioClient(platform.target, timeout=30) as c:
        name = c.submit(GenerateParams(prompt="a cabin", steps=3, seed=2), request_id="op-1")
        assert name == "operations/op-1"
        result = c.wait(name, poll_s=0.05, timeout=30)
        assert result.params.seed == 2 and result.depth[0].dtype.name == "uint16"
        assert c.get_operation(name).done

        name = c.submit(GenerateParams(prompt="long", steps=400, seed=2))
        _wait_for(lambda: c.get_operation(name).metadata.value != b"" and _metric("ldm3d_sampler_running") == 1)
        c.cancel(name)
        with pytest.raises(Cancelled):
            c.wait(name, poll_s=0.05, timeout=30)
        with pytest.raises(NotFound):
            c.get_operation("operations/never")
        with pytest.raises(InvalidArgument) as info:  # bad input fails the submit itself
            c.submit(GenerateParams(prompt="x", steps=0))
        assert info.value.field == "steps"
    _wait_for(_idle)


def test_generate_batch_and_list_models(platform, tiny_pipeline):
    with client.StudioClient(platform.target, timeout=60) as c:
        models = c.list_models()
        assert models[0].is_default and models[0].versions == [models[0].default_version]
        assert models[0].rgbd_channels == 6 and models[0].default_scheduler == "pndm"
        ps = [GenerateParams(prompt=f"prompt {i}", steps=2, seed=i) for i in range(3)]
        results = c.generate_batch(ps)
        assert [r.params.seed for r in results] == [0, 1, 2]
        assert (results[1].rgb[0] == tiny_pipeline(ps[1]).rgb[0]).all()
        with pytest.raises(InvalidArgument) as info:
            c.generate_batch([ps[0], GenerateParams(prompt="x", height=65)])
        assert info.value.field == "requests[1].height"


def test_health_and_reflection_list_every_service(channel):
    services = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    names = {s.name for s in next(services).list_services_response.service}
    assert {"ldm3d.v1.Studio", "ldm3d.v1.TextEncoder", "ldm3d.v1.DiffusionSampler", "ldm3d.v1.RGBDAutoencoder",
            "ldm3d.v1.DepthEvaluator", "ldm3d.v1.PanoramaRenderer", "grpc.health.v1.Health"} <= names


def test_metrics_endpoint(tiny_model):
    server = ThreadServer(service="all", checkpoint=str(tiny_model), metrics_port=0)
    try:
        req = studio_pb2.GenerateRequest(request_id="trace-me-42", prompt="a cabin", steps=2, seed=1)
        with grpc.insecure_channel(server.target) as ch:
            list(studio_pb2_grpc.StudioStub(ch).Generate(req, timeout=30))
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=10).read()
        text = body.decode()
        for name in ("ldm3d_grpc_requests_total", "ldm3d_grpc_request_seconds_bucket", "ldm3d_sampler_step_seconds",
                     "ldm3d_sampler_queue_depth", "ldm3d_model_info"):
            assert name in text, name
        assert 'ldm3d_grpc_requests_total{code="OK",method="/ldm3d.v1.Studio/Generate"}' in text
    finally:
        server.stop()


def test_request_id_reaches_log_lines_of_the_call(platform):
    records = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(JsonFormatter().format(record))

    handler = Capture()
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("ldm3d.servers.interceptor")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with grpc.insecure_channel(platform.target) as ch:
            list(studio_pb2_grpc.StudioStub(ch).Generate(
                studio_pb2.GenerateRequest(prompt="a cabin", steps=2), timeout=30,
                metadata=(("x-request-id", "from-metadata-7"),)))
        _wait_for(lambda: any("from-metadata-7" in r for r in records), timeout=5)
    finally:
        logger.removeHandler(handler)
    assert any('"request_id": "from-metadata-7"' in r and '"code": "OK"' in r for r in records)


def test_graceful_shutdown_finishes_the_call_in_flight(tiny_model):
    server = ThreadServer(service="all", checkpoint=str(tiny_model))
    steps, result = [], {}

    def run():
        result["r"] = client.generate(server.target, GenerateParams(prompt="a cabin", steps=30, seed=3),
                                      on_step=lambda *a: steps.append(a), timeout=60)

    t = threading.Thread(target=run)
    t.start()
    _wait_for(lambda: len(steps) >= 2)
    server.stop(grace_s=30)  # returns once the in-flight call has finished
    t.join(30)
    assert result["r"].rgb[0].shape == (64, 64, 3) and steps[-1][0] == steps[-1][1]
    with pytest.raises(grpc.RpcError):
        healthy(server.target)  # stopped: nothing listens any more


def _parse(argv, env):
    p = argparse.ArgumentParser()
    p.add_argument("service")
    add_arguments(p)
    return ServeConfig.from_args(p.parse_args(argv), env=env)


def test_config_flags_beat_env_and_errors_name_the_flag():
    cfg = _parse(["sampler", "--checkpoint", "ck", "--port", "6000"],
                 {"LDM3D_PORT": "7000", "LDM3D_MAX_QUEUED": "3", "LDM3D_METRICS_PORT": "off"})
    assert (cfg.port, cfg.max_queued, cfg.metrics_port, cfg.checkpoint) == (6000, 3, None, "ck")
    for argv, env, flag in [
        (["all", "--checkpoint", "ck", "--port", "99999"], {}, "--port"),
        (["all", "--checkpoint", "ck"], {"LDM3D_MAX_RUNNING": "0"}, "--max-running"),
        (["all"], {}, "--checkpoint"),
        (["gateway", "--checkpoint", "ck", "--sampler-url", "nohost"], {}, "--sampler-url"),
        (["sampler", "--checkpoint", "ck", "--sampler-url", "h:1"], {}, "--sampler-url"),
        (["all", "--checkpoint", "ck", "--repository", "r"], {}, "--repository"),
    ]:
        with pytest.raises(InvalidArgument) as info:
            _parse(argv, env)
        assert info.value.field == flag and flag in str(info.value)
    assert _parse(["renderer"], {}).service == "renderer"  # no model needed


def test_unknown_exceptions_become_a_generic_internal_with_the_traceback_logged(caplog):
    from ldm3d.wire.status import GENERIC_INTERNAL, to_status

    with caplog.at_level(logging.ERROR, logger="ldm3d.wire.status"):
        try:
            raise KeyError("/secret/path/weights.bin")
        except KeyError as exc:
            code, message, _ = to_status(exc)
    assert code == grpc.StatusCode.INTERNAL and message == GENERIC_INTERNAL and "secret" not in message
    assert caplog.records[0].exc_info and "secret" in caplog.text
