"""End to end over real sockets: the gateway's images equal the in-process pipeline's bit for bit, all-in-one and
with every service in its own process on its own port."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from servers_helpers import ProcessServer, healthy

from ldm3d import client, codec
from ldm3d.errors import DeadlineExceeded, Unavailable
from ldm3d.pipeline import GenerateParams
from ldm3d.v1 import studio_pb2, studio_pb2_grpc

CASES = {
    "guided": GenerateParams(prompt="a cabin in the woods", negative_prompt="fog", steps=4, seed=7),
    "unguided-ddim-2-images": GenerateParams(prompt="a red barn", steps=3, seed=11, guidance_scale=1.0,
                                             scheduler="ddim", num_images=2, height=64, width=96),
}


def _assert_same(remote, local):
    assert len(remote.rgb) == len(local.rgb)
    for a, b in zip(remote.rgb, local.rgb):
        assert a.dtype == np.uint8 and np.array_equal(a, b)
    for a, b in zip(remote.depth, local.depth):
        assert a.dtype == np.uint16 and np.array_equal(a, b)
    assert remote.params.seed == local.params.seed
    skip = {"timings_s", "model", "request_id"}
    assert {k: v for k, v in remote.metadata.items() if k not in skip} == \
        {k: v for k, v in local.metadata.items() if k not in skip}


@pytest.mark.parametrize("name", list(CASES))
def test_all_in_one_equals_in_process(platform, tiny_pipeline, name):
    steps = []
    remote = client.generate(platform.target, CASES[name], on_step=lambda *a: steps.append(a), timeout=60)
    _assert_same(remote, tiny_pipeline(CASES[name]))
    assert [s[0] for s in steps] == list(range(1, steps[-1][1] + 1))  # one progress message per step, in order


def test_image_to_image_equals_in_process(platform, tiny_pipeline):
    rng = np.random.default_rng(0)
    p = GenerateParams(prompt="a cabin", steps=4, seed=5, strength=0.6,
                       init_rgb=rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                       init_depth=rng.integers(0, 65536, (64, 64), dtype=np.uint16))
    _assert_same(client.generate(platform.target, p, timeout=60), tiny_pipeline(p))


def test_result_message_carries_pngs_seed_version_timings_and_request_id(channel):
    req = studio_pb2.GenerateRequest(request_id="req-123", prompt="a cabin", steps=2)  # no seed: drawn
    msgs = list(studio_pb2_grpc.StudioStub(channel).Generate(req, timeout=60))
    assert all(m.request_id == "req-123" for m in msgs)
    result = msgs[-1].result
    assert result.images[0].rgb.png.startswith(b"\x89PNG") and result.images[0].depth.png.startswith(b"\x89PNG")
    assert codec.read_depth(result.images[0].depth.png).dtype == np.uint16
    meta = json.loads(result.metadata_json)
    assert meta["seed"] == result.seed and result.model_version and meta["model"]["version"] == result.model_version
    assert result.timings.total.ToNanoseconds() > result.timings.sampling.ToNanoseconds() > 0


@pytest.fixture(scope="module")
def separate(tiny_model):
    """TextEncoder, DiffusionSampler and RGBDAutoencoder in three processes, the gateway in a fourth."""
    ck = ["--checkpoint", str(tiny_model)]
    stages = {name: ProcessServer(name, *ck) for name in ("text-encoder", "sampler", "autoencoder")}
    gateway = ProcessServer("gateway", *ck, "--text-encoder-url", stages["text-encoder"].target,
                            "--sampler-url", stages["sampler"].target,
                            "--autoencoder-url", stages["autoencoder"].target)
    yield gateway, stages
    for s in (gateway, *stages.values()):
        assert s.stop() == 0  # a graceful SIGTERM exit


def test_separate_processes_equal_in_process(separate, tiny_pipeline):
    gateway, stages = separate
    for p in CASES.values():
        _assert_same(client.generate(gateway.target, p, timeout=60), tiny_pipeline(p))
    for s in (gateway, *stages.values()):
        assert healthy(s.target)


def test_request_id_travels_to_every_service(separate):
    gateway, stages = separate
    with client.StudioClient(gateway.target, timeout=60) as c:
        c.generate(GenerateParams(prompt="a cabin", steps=2, seed=1), request_id="trace-e2e-1")
    for s in (gateway, *stages.values()):
        _wait_for_log(s, "trace-e2e-1")


def _wait_for_log(server, text, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if text in Path(server.log.name).read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the log of {server.proc.args[4]}")


def test_deadline_is_propagated_downstream(separate):
    gateway, stages = separate
    with pytest.raises(DeadlineExceeded):
        client.generate(gateway.target, GenerateParams(prompt="slow", steps=500, seed=1), timeout=1.0)
    assert healthy(stages["sampler"].target)
    # the sampler stopped its loop when the propagated deadline passed: it is free for the next job at once
    r = client.generate(gateway.target, GenerateParams(prompt="next", steps=2, seed=1), timeout=5)
    assert r.rgb[0].shape == (64, 64, 3)


def test_cancelling_at_the_gateway_stops_the_remote_sampler(separate):
    gateway, stages = separate
    with grpc.insecure_channel(gateway.target) as ch:
        stream = studio_pb2_grpc.StudioStub(ch).Generate(
            studio_pb2.GenerateRequest(prompt="long", steps=500, seed=1), timeout=60)
        assert [next(stream).progress.step for _ in range(2)] == [1, 2]
        stream.cancel()
    # the sampler (one job at a time) must be free again at once, not after the other 498 steps
    r = client.generate(gateway.target, GenerateParams(prompt="next", steps=2, seed=1), timeout=5)
    assert r.rgb[0].shape == (64, 64, 3)


def test_downstream_down_is_unavailable(tiny_model):
    gateway = ProcessServer("gateway", "--checkpoint", str(tiny_model), "--text-encoder-url", "127.0.0.1:1",
                            "--sampler-url", "127.0.0.1:1", "--autoencoder-url", "127.0.0.1:1")
    try:
        with pytest.raises(Unavailable) as info:
            client.generate(gateway.target, GenerateParams(prompt="a cabin", steps=2), timeout=20)
        assert "TextEncoder at 127.0.0.1:1" in str(info.value)
        assert healthy(gateway.target)
        with grpc.insecure_channel(gateway.target) as ch:  # ListModels needs only the spec: it works
            assert studio_pb2_grpc.StudioStub(ch).ListModels(studio_pb2.ListModelsRequest(), timeout=5).models
    finally:
        gateway.stop()
