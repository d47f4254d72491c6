"""Live roll-outs under load: canary 50 → full → rollback with no failed request, the canary share and stickiness
as promised, every response's images exactly its release's; a refused release keeps the old one serving; the
separate-process form keeps an in-flight request on its release across the switch.

The measured times (promote → every process serving the new route) are printed (``pytest -s``) and recorded in
docs/rollout.md."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
import uuid

import numpy as np
import pytest
from servers_helpers import ProcessServer, ThreadServer

from ldm3d import client
from ldm3d.pipeline import GenerateParams, LDM3DPipeline
from ldm3d.repository.releases import add_release, canary_point, promote

PARAMS = GenerateParams(prompt="a cabin in the woods", steps=2, seed=5, height=64, width=64)
INTERVAL = 0.2  # --reload-interval of the servers under test (seconds)


@pytest.fixture(scope="module")
def two_releases(exported_repository, tmp_path_factory):
    """Release 1 = the tiny model; release 2 = release 1 with another U-Net (other seed): images differ."""
    from ldm3d.models.tiny import make_tiny_model
    from ldm3d.export import export_checkpoint

    base = tmp_path_factory.mktemp("rollout")
    other = make_tiny_model(base / "tiny-b", seed=1)
    root = base / "repository"
    shutil.copytree(exported_repository, root)
    export_checkpoint(other, root, version=2, models=("unet",))
    add_release(root, {"text_encoder": 1, "unet": 2, "vae_decoder": 1, "vae_encoder": 1}, {"kind": "test"})
    return root


@pytest.fixture
def repo(two_releases, tmp_path):
    dest = tmp_path / "repository"
    shutil.copytree(two_releases, dest)
    return dest


@pytest.fixture(scope="module")
def references(two_releases):
    """What each release makes alone, in-process: release label → digest of (rgb, depth)."""
    return {str(n): _digest(LDM3DPipeline.from_repository(two_releases, version=n)(PARAMS)) for n in (1, 2)}


def _digest(result) -> str:
    return hashlib.sha256(result.rgb[0].tobytes() + result.depth[0].tobytes()).hexdigest()


class Load:
    """``clients`` threads sending small Generate requests back to back; every outcome is recorded."""

    def __init__(self, targets: str | list[str], clients: int = 2, params: GenerateParams = PARAMS):
        self.results, self.errors = [], []
        self._stop = threading.Event()
        targets = [targets] if isinstance(targets, str) else targets
        self._threads = [threading.Thread(target=self._run, args=(targets[i % len(targets)], params), daemon=True)
                         for i in range(clients)]
        for t in self._threads:
            t.start()

    def _run(self, target, params):
        with client.StudioClient(target, timeout=60) as c:
            while not self._stop.is_set():
                rid = uuid.uuid4().hex
                t0 = time.monotonic()
                try:
                    r = c.generate(params, request_id=rid)
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    self.errors.append((rid, repr(exc)))
                    continue
                self.results.append((t0, time.monotonic(), rid, r.metadata["model"]["version"], _digest(r)))

    def wait_for(self, n: int, after: float, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while sum(1 for r in self.results if r[0] >= after) < n:
            assert time.monotonic() < deadline, f"load stalled: {len(self.results)} results, errors {self.errors[:3]}"
            time.sleep(0.02)

    def between(self, start: float, end: float):
        return [r for r in self.results if r[0] >= start and r[1] <= end]

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(60)


def _route(target):
    with client.StudioClient(target, timeout=10) as c:
        (info,) = c.list_models()
    return info


def _wait_route(targets, default: str, canary: str = "", timeout: float = 60) -> float:
    """Seconds until every target routes as asked (polled every 10 ms)."""
    t0 = time.monotonic()
    for target in targets:
        while True:
            info = _route(target)
            if (info.default_version, info.canary_version) == (default, canary):
                break
            assert time.monotonic() - t0 < timeout, f"{target} did not switch: {info}"
            time.sleep(0.01)
    return time.monotonic() - t0


def _roll(targets, repo, load, references, label: str):
    """canary 50 → full → rollback under ``load``; returns the measured convergence times."""
    times = {}
    load.wait_for(4, after=0)
    promote(repo, 2, canary=50)
    times["canary 50"] = _wait_route(targets, "1", "2")
    canary_from = time.monotonic()
    load.wait_for(30, after=canary_from)
    canary_to = time.monotonic()
    promote(repo, 2)
    times["full"] = _wait_route(targets, "2")
    full_from = time.monotonic()
    load.wait_for(6, after=full_from)
    promote(repo, 1)  # rollback
    times["rollback"] = _wait_route(targets, "1")
    back_from = time.monotonic()
    load.wait_for(6, after=back_from)
    load.stop()

    assert load.errors == [], f"{len(load.errors)} failed requests: {load.errors[:3]}"
    # every response names its release and is exactly what that release makes alone
    assert all(r[4] == references[r[3]] for r in load.results)
    canary = load.between(canary_from, canary_to)
    # sticky assignment: the request id alone decides (the same in every process and on a retry)
    assert all(r[3] == ("2" if canary_point(r[2]) < 50 else "1") for r in canary)
    share = sum(r[3] == "2" for r in canary) / len(canary)
    # 30+ draws at P = 50 %: outside [0.2, 0.8] has a probability of 3e-4
    assert 0.2 <= share <= 0.8, f"canary share {share:.2f} of {len(canary)} requests"
    assert all(r[3] == "2" for r in load.results if r[0] >= full_from and r[1] < back_from)
    assert all(r[3] == "1" for r in load.results if r[0] >= back_from)
    print(f"\n[{label}] {len(load.results)} requests, {len(load.errors)} failed; canary share {share:.2f} of "
          f"{len(canary)}; promote → every process switched: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))
    return times


def test_canary_full_rollback_under_load_embedded(repo, references):
    server = ThreadServer(service="all", repository=str(repo), runtime="embedded", reload_interval_s=INTERVAL,
                          max_queued=64)
    try:
        load = Load(server.target, clients=2)
        try:
            _roll([server.target], repo, load, references, "embedded, one process")
        finally:
            load.stop()
        # release 2 drained and unloaded after the rollback; ListModels and metrics say so
        deadline = time.monotonic() + 10
        while {r.version: r.state for r in _route(server.target).releases}.get("2") != "available":
            assert time.monotonic() < deadline, _route(server.target).releases
            time.sleep(0.05)
        from ldm3d.servers import metrics

        counts = {s.labels["release"]: s.value for m in metrics.RELEASE_REQUESTS.collect() for s in m.samples
                  if s.name.endswith("_total")}
        assert counts.get("1", 0) > 0 and counts.get("2", 0) > 0
    finally:
        server.stop()


def test_a_release_that_fails_to_load_is_refused_and_the_old_keeps_serving(repo, references):
    server = ThreadServer(service="all", repository=str(repo), runtime="embedded", reload_interval_s=INTERVAL)
    try:
        onnx = repo / "unet" / "2" / "model.onnx"
        onnx.write_bytes(onnx.read_bytes()[:-7])  # truncated after publishing; promote --no-verify lets it through
        promote(repo, 2, verify=False)
        deadline = time.monotonic() + 30
        while True:
            states = {r.version: r for r in _route(server.target).releases}
            if states["2"].state == "refused":
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.05)
        assert "unet" in states["2"].detail and "model.onnx" in states["2"].detail
        info = _route(server.target)
        assert info.default_version == "1" and states["1"].state == "current"
        r = client.generate(server.target, PARAMS, timeout=60)
        assert r.metadata["model"]["version"] == "1" and _digest(r) == references["1"]
        from ldm3d.servers import metrics

        assert any(s.labels.get("release") == "2" and s.value >= 1 for m in metrics.RELEASE_REFUSED.collect()
                   for s in m.samples if s.name.endswith("_total"))
        # a corrupted releases.json changes nothing either: logged, counted, shown, and release 1 keeps serving
        (repo / "releases.json").write_text('{"schema": 1, "releases": [')
        deadline = time.monotonic() + 30
        while not any(r.state == "refused" and "releases.json is corrupted" in r.detail
                      for r in _route(server.target).releases):
            assert time.monotonic() < deadline, _route(server.target).releases
            time.sleep(0.05)
        r = client.generate(server.target, PARAMS, timeout=60)
        assert r.metadata["model"]["version"] == "1" and _digest(r) == references["1"]
    finally:
        server.stop()


def _stage_version(stubs) -> dict[str, str]:
    """The release each stage process routes a call that names no version to (its ``model_version``)."""
    from ldm3d.wire import tensors
    from ldm3d.v1 import autoencoder_pb2, sampler_pb2, text_encoder_pb2

    text, sampler, vae = stubs
    out = {"text": text.Encode(text_encoder_pb2.EncodeTextRequest(prompts=["x"]), timeout=30).model_version}
    latents = tensors.to_tensor(np.zeros((1, 4, 32, 32), np.float32))  # 64 px for the tiny VAE
    out["autoencoder"] = vae.Decode(autoencoder_pb2.DecodeLatentsRequest(latents=latents), timeout=30).model_version
    cond = tensors.to_tensor(np.zeros((1, 77, 32), np.float32))
    for msg in sampler.Sample(sampler_pb2.SampleRequest(cond=cond, steps=1, guidance_scale=1.0, height=64, width=64),
                              timeout=30):
        if msg.HasField("result"):
            out["sampler"] = msg.result.model_version
    return out


def test_separate_processes_keep_an_in_flight_request_on_its_release(repo, two_releases):
    import grpc

    from ldm3d.v1 import autoencoder_pb2_grpc, sampler_pb2_grpc, text_encoder_pb2_grpc

    args = ("--repository", str(repo), "--reload-interval", str(INTERVAL))
    stages: dict[str, ProcessServer] = {}

    def start(name):  # two sampling slots: the route probe below must not queue behind the long request
        stages[name] = ProcessServer(name, *args, *(("--max-running", "2") if name == "sampler" else ()))

    threads = [threading.Thread(target=start, args=(n,)) for n in ("text-encoder", "sampler", "autoencoder")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gateway = None
    try:
        assert len(stages) == 3, "a stage process did not start"
        gateway = ProcessServer("gateway", *args, "--text-encoder-url", stages["text-encoder"].target,
                                "--sampler-url", stages["sampler"].target,
                                "--autoencoder-url", stages["autoencoder"].target)
        channels = [grpc.insecure_channel(stages[n].target) for n in ("text-encoder", "sampler", "autoencoder")]
        stubs = (text_encoder_pb2_grpc.TextEncoderStub(channels[0]), sampler_pb2_grpc.DiffusionSamplerStub(channels[1]),
                 autoencoder_pb2_grpc.RGBDAutoencoderStub(channels[2]))
        assert _stage_version(stubs) == {"text": "1", "sampler": "1", "autoencoder": "1"}

        long = GenerateParams(prompt="a lighthouse", steps=100, seed=3, height=64, width=64)
        want = {str(n): _digest(LDM3DPipeline.from_repository(two_releases, version=n)(long)) for n in (1, 2)}
        started, outcome = threading.Event(), {}

        def in_flight():
            try:
                outcome["result"] = client.StudioClient(gateway.target, timeout=120).generate(
                    long, lambda step, total, _e: started.set() if step >= 1 else None)
            except Exception as exc:  # noqa: BLE001
                outcome["error"] = exc

        t = threading.Thread(target=in_flight)
        t.start()
        assert started.wait(60)
        t0 = time.monotonic()
        promote(repo, 2)  # while the long request is sampling on release 1
        while _stage_version(stubs) != {"text": "2", "sampler": "2", "autoencoder": "2"}:
            assert time.monotonic() - t0 < 60
            time.sleep(0.01)
        stages_s = time.monotonic() - t0
        gateway_s = _wait_route([gateway.target], "2") + stages_s
        assert t.is_alive(), "the in-flight request ended before every stage had switched: make it longer"
        t.join(120)
        assert "error" not in outcome, outcome.get("error")
        r = outcome["result"]
        assert r.metadata["model"]["version"] == "1" and _digest(r) == want["1"]  # finished on its release
        r2 = client.generate(gateway.target, long, timeout=120)
        assert r2.metadata["model"]["version"] == "2" and _digest(r2) == want["2"]
        print(f"\n[separate processes] promote → 3 stages switched in {stages_s:.2f} s, gateway too by "
              f"{gateway_s:.2f} s; the in-flight request finished on release 1")
        for ch in channels:
            ch.close()
    finally:
        if gateway is not None:
            gateway.stop()
        for s in stages.values():
            s.stop()


def test_canary_full_rollback_under_load_triton(repo, references, tmp_path):
    """The same roll with --runtime triton against the real CPU tritonserver (explicit model control), two replicas
    sharing it: releases are loaded into Triton before the switch and unloaded from it after the drain, and one
    replica's unload never fails the other's requests."""
    from ldm3d.repository.triton_cpu import TritonServer, build_cpu_repository, sync_cpu_repository
    from ldm3d.runtime.triton import TritonRuntime

    if not TritonServer.installed():
        pytest.skip("tritonserver is not set up: run `make triton`")
    cpu = tmp_path / "cpu_repository"
    build_cpu_repository(repo, cpu)
    shutil.rmtree(cpu / "unet" / "2")  # Triton's volume as it was before release 2 was published ...
    with TritonServer(cpu, log_file=tmp_path / "tritonserver.log") as triton:  # no model loaded: the servers do it
        replicas = [ThreadServer(service="all", repository=str(repo), runtime="triton", triton_url=triton.url,
                                 reload_interval_s=INTERVAL, max_queued=64) for _ in range(2)]
        control = TritonRuntime(triton.url)
        try:
            assert control.loaded_versions("unet") == {1}
            assert sync_cpu_repository(repo, cpu) == ["unet/2"]  # ... and the publish reaching it
            targets = [r.target for r in replicas]
            load = Load(targets, clients=2)
            try:
                _roll(targets, repo, load, references, "triton, two replicas sharing one server")
            finally:
                load.stop()
            deadline = time.monotonic() + 20  # drained: unet 2 unloaded from Triton, the shared models stay
            while control.loaded_versions("unet") != {1}:
                assert time.monotonic() < deadline, control.loaded_versions("unet")
                time.sleep(0.1)
            assert control.loaded_versions("text_encoder") == {1} and control.loaded_versions("vae_decoder") == {1}
        finally:
            control.close()
            for r in replicas:
                r.stop()
