"""Step-level batching over real sockets: concurrent requests share the sampler's U-Net calls, and each result equals
the same request served alone — bit for bit on the embedded ONNX Runtime (its CPU kernels give a row the same
result whatever the batch size) — with mixed shapes, guidance and schedulers, one request cancelled or out of time
in the middle of a batch, through GenerateBatch and with the sampler in its own process."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY
from servers_helpers import ProcessServer, ThreadServer, healthy

from ldm3d import client
from ldm3d.errors import DeadlineExceeded
from ldm3d.pipeline import GenerateParams, LDM3DPipeline
from ldm3d.v1 import studio_pb2_grpc
from ldm3d.wire.generate import to_request

# two latent shapes (two groups taking turns), guided and unguided rows in one call, four schedulers, 2 images
MIXED = [
    GenerateParams(prompt="a cabin in the woods", negative_prompt="fog", steps=5, seed=1, scheduler="ddim"),
    GenerateParams(prompt="a red barn", steps=4, seed=2, guidance_scale=1.0, scheduler="pndm"),
    GenerateParams(prompt="a lighthouse", steps=6, seed=3, guidance_scale=3.0, scheduler="euler-a",
                   num_images=2),
    GenerateParams(prompt="a harbour at dusk", steps=5, seed=4, scheduler="dpm++", height=64, width=96),
    GenerateParams(prompt="a desert road", steps=3, seed=5, guidance_scale=1.0, scheduler="ddim", height=64,
                   width=96),
]


def _batched_calls() -> tuple[float, float]:
    """(U-Net calls so far, calls that carried two or more requests) from the sampler's histogram."""
    total = REGISTRY.get_sample_value("ldm3d_sampler_batch_requests_count") or 0.0
    single = REGISTRY.get_sample_value("ldm3d_sampler_batch_requests_bucket", {"le": "1.0"}) or 0.0
    return total, total - single


def _assert_same(remote, alone):
    assert len(remote.rgb) == len(alone.rgb)
    for a, b in zip(remote.rgb, alone.rgb):
        assert np.array_equal(a, b)
    for a, b in zip(remote.depth, alone.depth):
        assert np.array_equal(a, b)


def _concurrently(fn, items):
    out, errors = [None] * len(items), []

    def run(i):
        try:
            out[i] = fn(items[i])
        except Exception as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]
    return out


@pytest.fixture(scope="module")
def batching(exported_repository):
    """``ldm3d serve all`` on the embedded runtime, 8 requests sampling at once, up to 8 per U-Net call."""
    s = ThreadServer(service="all", repository=str(exported_repository), max_running=8, max_queued=8, max_batch=8)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def alone(exported_repository):
    """The same repository in-process: each request on its own, one U-Net call per step."""
    pipe = LDM3DPipeline.from_repository(exported_repository)
    yield pipe
    pipe.runtime.close()


def test_concurrent_requests_equal_each_alone(batching, alone):
    calls_before, batched_before = _batched_calls()
    results = _concurrently(lambda p: client.generate(batching.target, p, timeout=120), MIXED)
    calls, batched = _batched_calls()
    assert batched > batched_before, "no U-Net call carried more than one request: nothing was batched"
    assert calls - calls_before < sum(p.steps for p in MIXED), "every step ran alone"
    for p, remote in zip(MIXED, results):
        _assert_same(remote, alone(p))
        assert remote.rgb[0].shape == (p.height or 64, p.width or 64, 3)


def test_generate_batch_equals_each_alone(batching, alone):
    items = MIXED[:3]
    with client.StudioClient(batching.target, timeout=120) as c:
        results = c.generate_batch(items)
    for p, remote in zip(items, results):
        _assert_same(remote, alone(p))


def _stream(target, p: GenerateParams, timeout: float):
    ch = grpc.insecure_channel(target)
    return ch, studio_pb2_grpc.StudioStub(ch).Generate(to_request(p), timeout=timeout)


def test_cancelling_one_request_leaves_the_rest_of_its_batch(batching, alone):
    keep = GenerateParams(prompt="kept", steps=12, seed=21, scheduler="ddim")
    keep2 = GenerateParams(prompt="kept too", steps=10, seed=22, guidance_scale=1.0, scheduler="euler-a")
    doomed = GenerateParams(prompt="cancelled", steps=400, seed=23)
    late = GenerateParams(prompt="out of time", steps=400, seed=24)
    ch, cancelled = _stream(batching.target, doomed, timeout=120)
    ch2, timed_out = _stream(batching.target, late, timeout=2.0)
    try:
        assert next(cancelled).progress.step == 1 and next(timed_out).progress.step == 1
        results = {}

        def run(name, p):
            steps = []
            results[name] = (client.generate(batching.target, p, on_step=lambda *a: steps.append(a[0]),
                                             timeout=120), steps)

        threads = [threading.Thread(target=run, args=a) for a in (("keep", keep), ("keep2", keep2))]
        for t in threads:
            t.start()
        time.sleep(0.3)
        cancelled.cancel()  # mid-batch: the others keep stepping
        with pytest.raises(grpc.RpcError) as info:
            for _ in timed_out:
                pass
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        for t in threads:
            t.join(120)
    finally:
        ch.close()
        ch2.close()
    for name, p in (("keep", keep), ("keep2", keep2)):
        remote, steps = results[name]
        assert steps == list(range(1, p.steps + 1))  # progress kept streaming, one message per step
        _assert_same(remote, alone(p))
    end = time.monotonic() + 20  # both long requests left the batcher (not 400 steps later)
    while batching.server.stages.batcher.running and time.monotonic() < end:
        time.sleep(0.05)
    assert batching.server.stages.batcher.running == 0
    assert healthy(batching.target)


def test_separate_sampler_process_batches_too(exported_repository, alone):
    sampler = ProcessServer("sampler", "--repository", str(exported_repository), "--max-running", "4",
                            "--max-batch", "4")
    gateway = ThreadServer(service="gateway", repository=str(exported_repository), sampler_url=sampler.target)
    try:
        items = MIXED[:2] + MIXED[3:4]
        results = _concurrently(lambda p: client.generate(gateway.target, p, timeout=120), items)
        for p, remote in zip(items, results):
            _assert_same(remote, alone(p))
        with pytest.raises(DeadlineExceeded):  # the deadline reaches the sampler's batch too
            client.generate(gateway.target, GenerateParams(prompt="slow", steps=500, seed=1), timeout=1.0)
        assert healthy(sampler.target)
    finally:
        gateway.stop()
        assert sampler.stop() == 0
