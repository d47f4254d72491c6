"""The locks, over real sockets with real certificates (made here with ``cryptography``): TLS and mutual TLS, API keys
(UNAUTHENTICATED without one, health open, keys never logged, a rotated key file picked up), the plain-text health
port for probes, ``--no-reflection``, and a gateway reaching a stage in another process over mutual TLS with its
own key, whose readiness follows that stage."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from google.longrunning import operations_pb2
from servers_helpers import ROOT, ProcessServer, ThreadServer
from tls_certs import make_certs

from ldm3d.client import StudioClient
from ldm3d.errors import Unauthenticated
from ldm3d.pipeline import GenerateParams
from ldm3d.v1 import renderer_pb2_grpc, sampler_pb2, sampler_pb2_grpc, studio_pb2, studio_pb2_grpc

KEY = "k3y-for-tests-0123456789abcdef"
OTHER_KEY = "rotated-key-fedcba9876543210"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def locked(tiny_model, certs, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "api-keys.txt"
    keys.write_text(f"# the test client\n{KEY}\n\n")
    s = ThreadServer(service="all", checkpoint=str(tiny_model), tls_cert=str(certs.server_cert),
                     tls_key=str(certs.server_key), api_keys=str(keys), health_port=0)
    s.keys = keys
    s.tls_target = f"localhost:{s.port}"
    yield s
    s.stop()


def _tls(certs, ca=None, client=False):
    ca = (ca or certs.ca).read_bytes()
    if client:
        creds = grpc.ssl_channel_credentials(ca, certs.client_key.read_bytes(), certs.client_cert.read_bytes())
    else:
        creds = grpc.ssl_channel_credentials(ca)
    return creds


def _check(channel, service="", metadata=()):
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10,
                                                     metadata=metadata).status


def _reflect(channel, metadata=()):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                        timeout=10, metadata=metadata)
    return [s.name for r in replies for s in r.list_services_response.service]


def test_tls_and_api_keys(locked, certs, caplog):
    caplog.set_level(logging.DEBUG)
    serving = health_pb2.HealthCheckResponse.SERVING
    # plain text to the TLS port, or TLS trusting the wrong CA: no connection at all
    with grpc.insecure_channel(locked.target) as ch, pytest.raises(grpc.RpcError) as info:
        _check(ch)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(locked.tls_target, _tls(certs, certs.other_ca)) as ch, \
            pytest.raises(grpc.RpcError) as info:
        _check(ch)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    with grpc.secure_channel(locked.tls_target, _tls(certs)) as ch:
        # health is open (probes carry no key), Check and Watch alike
        assert _check(ch) == serving and _check(ch, "ldm3d.v1.Studio") == serving
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service="ldm3d.v1.Studio"),
                                                    timeout=5)
        assert next(watch).status == serving
        watch.cancel()
        studio = studio_pb2_grpc.StudioStub(ch)
        for metadata in ((), (("authorization", f"Bearer {KEY}x"),), (("authorization", KEY),),
                         (("authorization", "Bearer " + "a" * 5000),)):
            for call in (lambda: studio.ListModels(studio_pb2.ListModelsRequest(), timeout=10, metadata=metadata),
                         lambda: list(studio.Generate(studio_pb2.GenerateRequest(prompt="x", steps=2), timeout=10,
                                                      metadata=metadata)),
                         lambda: _reflect(ch, metadata)):
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
                assert "authorization: Bearer KEY" in info.value.details()
        assert "ldm3d.v1.Studio" in _reflect(ch, (("authorization", f"Bearer {KEY}"),))

    # the client library: TLS + key, a whole generation; without the key, the typed error
    with StudioClient(locked.tls_target, tls_ca=str(certs.ca), api_key=KEY, timeout=60) as c:
        r = c.generate(GenerateParams(prompt="a locked cabin", steps=2, height=64, width=64, seed=3))
        assert r.rgb[0].shape == (64, 64, 3)
    with StudioClient(locked.tls_target, tls_ca=str(certs.ca), timeout=30) as c, pytest.raises(Unauthenticated):
        c.list_models()

    # the plain-text health port answers health and nothing else
    with grpc.insecure_channel(f"127.0.0.1:{locked.server.health_port}") as ch:
        assert _check(ch, "ldm3d.v1.Studio") == serving
        with pytest.raises(grpc.RpcError) as info:
            studio_pb2_grpc.StudioStub(ch).ListModels(studio_pb2.ListModelsRequest(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED

    assert KEY not in caplog.text and "k3y" not in caplog.text  # refused or accepted, a key is never logged

    # a rotated key file (a Kubernetes Secret update) is picked up without a restart
    locked.keys.write_text(f"{OTHER_KEY}\n")
    os.utime(locked.keys, (time.time() + 5, time.time() + 5))
    time.sleep(2.2)
    with StudioClient(locked.tls_target, tls_ca=str(certs.ca), api_key=OTHER_KEY, timeout=30) as c:
        assert c.list_models()
    with StudioClient(locked.tls_target, tls_ca=str(certs.ca), api_key=KEY, timeout=30) as c, \
            pytest.raises(Unauthenticated):
        c.list_models()
    locked.keys.write_text(f"{KEY}\n")
    os.utime(locked.keys, (time.time() + 10, time.time() + 10))
    time.sleep(2.2)


def test_cli_generate_over_tls_with_a_key(locked, certs, tmp_path):
    base = [sys.executable, "-m", "ldm3d", "generate", "--server", locked.tls_target, "--tls-ca", str(certs.ca),
            "--prompt", "a cabin", "--steps", "2", "--height", "64", "--width", "64", "--out", str(tmp_path),
            "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k != "LDM3D_API_KEY"}
    refused = subprocess.run(base, capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)
    assert refused.returncode == 2 and "API key" in refused.stderr and "Traceback" not in refused.stderr
    ok = subprocess.run(base, capture_output=True, text=True, cwd=ROOT, timeout=120,
                        env={**env, "LDM3D_API_KEY": KEY})  # the variable: keys in arguments show in `ps`
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert len(list(tmp_path.glob("*_rgb.png"))) == 1


def test_mutual_tls_and_no_reflection(certs):
    s = ThreadServer(service="renderer", tls_cert=str(certs.server_cert), tls_key=str(certs.server_key),
                     tls_client_ca=str(certs.ca), no_reflection=True)
    try:
        target = f"localhost:{s.port}"
        with grpc.secure_channel(target, _tls(certs)) as ch, pytest.raises(grpc.RpcError) as info:
            _check(ch)  # no client certificate: the handshake fails
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.secure_channel(target, _tls(certs, client=True)) as ch:
            assert _check(ch, "ldm3d.v1.PanoramaRenderer") == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as info:
                renderer_pb2_grpc.PanoramaRendererStub(ch).GetOperation(
                    operations_pb2.GetOperationRequest(name="renders/none"), timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND  # through the door, then a normal answer
            with pytest.raises(grpc.RpcError) as info:
                _reflect(ch)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        s.stop()


def test_gateway_reaches_a_stage_process_over_mutual_tls_with_its_own_key(tiny_model, certs, tmp_path):
    """A sampler in its own process (TLS, client CA, API keys) and a gateway whose text encoder and VAE are local:
    generation works with the gateway's credentials, odd request ids cross the process boundary as safe headers,
    and the gateway's readiness follows the sampler's health."""
    stage_keys = tmp_path / "stage-keys.txt"
    stage_keys.write_text("gateway-only-key\n")
    public_keys = tmp_path / "public-keys.txt"
    public_keys.write_text(f"{KEY}\n")
    sampler = ProcessServer("sampler", "--checkpoint", str(tiny_model), "--tls-cert", str(certs.server_cert),
                            "--tls-key", str(certs.server_key), "--tls-client-ca", str(certs.ca),
                            "--api-keys", str(stage_keys))
    try:
        gateway = ThreadServer(service="gateway", checkpoint=str(tiny_model),
                               sampler_url=f"localhost:{sampler.port}", downstream_tls_ca=str(certs.ca),
                               downstream_tls_cert=str(certs.client_cert), downstream_tls_key=str(certs.client_key),
                               downstream_api_key_file=str(stage_keys), api_keys=str(public_keys))
        try:
            auth = (("authorization", f"Bearer {KEY}"),)
            with grpc.insecure_channel(gateway.target) as ch:
                assert _check(ch, "ldm3d.v1.Studio") == health_pb2.HealthCheckResponse.SERVING
                studio = studio_pb2_grpc.StudioStub(ch)
                rid = "line\nbreak-é-" + "x" * 300
                msgs = list(studio.Generate(studio_pb2.GenerateRequest(
                    prompt="a cabin", steps=2, height=64, width=64, seed=1, request_id=rid), timeout=60,
                    metadata=auth))
                result = msgs[-1].result
                assert result.images and result.request_id != rid
                assert result.request_id.isascii() and len(result.request_id) <= 128
                assert "\n" not in result.request_id
                # the public key is not the stage's: the sampler refuses a caller holding only it
                with grpc.secure_channel(f"localhost:{sampler.port}", _tls(certs, client=True)) as sch:
                    with pytest.raises(grpc.RpcError) as info:
                        list(sampler_pb2_grpc.DiffusionSamplerStub(sch).Sample(
                            sampler_pb2.SampleRequest(), timeout=10, metadata=auth))
                    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                # the stage goes away: the gateway is not ready (readiness), but alive (liveness)
                assert sampler.stop() == 0
                deadline = time.monotonic() + 15
                while _check(ch, "ldm3d.v1.Studio") == health_pb2.HealthCheckResponse.SERVING:
                    assert time.monotonic() < deadline, "the gateway stayed SERVING without its sampler"
                    time.sleep(0.2)
                assert _check(ch) == health_pb2.HealthCheckResponse.SERVING
        finally:
            gateway.stop()
    finally:
        if sampler.proc.poll() is None:
            sampler.stop()


def test_bad_lock_settings_are_refused_naming_the_flag(tmp_path):
    from ldm3d.errors import InvalidArgument
    from ldm3d.servers.app import Server
    from ldm3d.servers.config import ServeConfig

    with pytest.raises(InvalidArgument) as info:
        ServeConfig(service="renderer", tls_cert="a.pem")
    assert info.value.field == "--tls-key"
    with pytest.raises(InvalidArgument) as info:
        ServeConfig(service="renderer", tls_client_ca="ca.pem")
    assert info.value.field == "--tls-cert"
    with pytest.raises(InvalidArgument) as info:
        ServeConfig(service="renderer", downstream_tls_ca="ca.pem")
    assert info.value.field == "--downstream-tls-ca"
    empty = tmp_path / "keys.txt"
    empty.write_text("# no key yet\n")
    import asyncio

    with pytest.raises(InvalidArgument) as info:
        asyncio.run(Server(ServeConfig(service="renderer", port=0, metrics_port=None, api_keys=str(empty))).start())
    assert info.value.field == "--api-keys"
    proc = subprocess.run([sys.executable, "-m", "ldm3d", "serve", "renderer", "--tls-cert", str(tmp_path / "no.pem"),
                           "--tls-key", str(empty)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and "--tls-cert" in proc.stderr and "Traceback" not in proc.stderr
