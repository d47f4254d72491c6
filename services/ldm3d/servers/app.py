"""Build, run and gracefully stop one serving process: the configured servicers on one grpc.aio server.

    ldm3d serve all --port 50051 --checkpoint demo/tiny [--depth-model DIR --reference-model DIR]

    cfg = ServeConfig(service="all", checkpoint="demo/tiny", port=0, metrics_port=None)
    server = Server(cfg); port = await server.start(); ...; await server.stop()

Every server has standard health checking (``grpc.health.v1``: "" and each service name; see :mod:`.health`:
SERVING only once the models are warm, and on a gateway only while the services it forwards to are SERVING),
reflection (unless ``--no-reflection``), the one interceptor, deliberate message size limits, and a graceful stop:
health turns NOT_SERVING, new calls are refused, in-flight calls get ``grace_s`` to finish, then whatever is left is
cancelled (sampling stops within one step).

The locks (:mod:`.security`, docs/security.md): ``--tls-cert/--tls-key`` (``--tls-client-ca`` for mutual TLS),
``--api-keys`` (every call but health needs a key), ``--health-port`` (plain-text health only, for probes that
cannot speak TLS), and the gateway's own credentials towards its downstream services (``--downstream-tls-*``,
``--downstream-api-key-file``).

The gateway's address answers every public service: besides the Studio it serves DepthEvaluator and
PanoramaRenderer, in-process or forwarded to ``--depth-evaluator-url`` / ``--renderer-url`` (like the three stages).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..v1 import (autoencoder_pb2, autoencoder_pb2_grpc, depth_pb2, depth_pb2_grpc, renderer_pb2,
                  renderer_pb2_grpc, sampler_pb2, sampler_pb2_grpc, studio_pb2, studio_pb2_grpc, text_encoder_pb2,
                  text_encoder_pb2_grpc)
from ..wire.ids import REQUEST_ID_KEY
from ..wire.status import from_rpc_error
from . import metrics
from .admission import Admission, Gate
from .autoencoder import RGBDAutoencoderServicer
from .config import ServeConfig
from .depth_evaluator import DepthEvaluatorServicer, load_depth_models, warm_up_depth
from .downstream import Link, LocalStages, RemoteStages
from .health import NOT_SERVING, SERVING, DownstreamMonitor, HealthServicer
from .interceptor import ServerInterceptor
from .logs import request_id
from .models import ModelRegistry
from .renderer import PanoramaRendererServicer
from .sampler import DiffusionSamplerServicer
from .security import ApiKeys, server_credentials
from .stages import Stages, warm_up
from .studio import StudioServicer
from .text_encoder import TextEncoderServicer

log = logging.getLogger(__name__)

# service → the gRPC services it puts on the server (full names, for health and reflection)
NAMES = {
    "text-encoder": (text_encoder_pb2.DESCRIPTOR.services_by_name["TextEncoder"].full_name,),
    "sampler": (sampler_pb2.DESCRIPTOR.services_by_name["DiffusionSampler"].full_name,),
    "autoencoder": (autoencoder_pb2.DESCRIPTOR.services_by_name["RGBDAutoencoder"].full_name,),
    "depth-evaluator": (depth_pb2.DESCRIPTOR.services_by_name["DepthEvaluator"].full_name,),
    "renderer": (renderer_pb2.DESCRIPTOR.services_by_name["PanoramaRenderer"].full_name,),
    "gateway": (studio_pb2.DESCRIPTOR.services_by_name["Studio"].full_name,),
}
STAGE_SERVICES = ("text-encoder", "sampler", "autoencoder")
# services the gateway also answers for, each in-process unless its --…-url forwards it
GATEWAY_EXTRAS = ("depth-evaluator", "renderer")


def grpc_options(cfg: ServeConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.so_reuseport", 0),  # two servers on one port by mistake must fail, not split traffic
    ]


class Server:
    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.registry: ModelRegistry | None = None
        self.health_port: int | None = None
        self.stages: Stages | None = None  # the in-process stages (sampling admission and step batcher), if any
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self._health = HealthServicer()
        self._cleanup = []
        self._link: Link | None = None
        self._queue = None
        self._studio_servicer = self._pano_renderer = None  # SubmitPano: the Studio renders with this renderer

    @property
    def services(self) -> tuple[str, ...]:
        if self.cfg.service == "all":
            return tuple(NAMES)
        if self.cfg.service == "gateway":
            return ("gateway", *GATEWAY_EXTRAS)
        return (self.cfg.service,)

    async def start(self) -> int:
        """Load the model, bind, warm up, report SERVING; returns the bound port."""
        cfg = self.cfg
        services = self.services
        needs_weights = any(s in STAGE_SERVICES for s in services) or (
            "gateway" in services and not all(cfg.remote.values()))
        # credentials first: a missing certificate or key file fails the start before minutes of model loading
        api_keys = ApiKeys(cfg.api_keys) if cfg.api_keys else None
        creds = server_credentials(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca) if cfg.tls_cert else None
        self._link = Link.from_config(cfg)
        if any(s in STAGE_SERVICES or s == "gateway" for s in services):
            # loading weights takes seconds to minutes: keep the event loop (and signals) responsive meanwhile
            self.registry = await asyncio.to_thread(ModelRegistry, cfg, needs_weights)
        depth_models = (None, None)
        if "depth-evaluator" in services and not self._forwarded("depth-evaluator"):
            depth_models = await asyncio.to_thread(load_depth_models, cfg)
        server = grpc.aio.server(interceptors=[ServerInterceptor(api_keys)], options=grpc_options(cfg))
        admission = Admission(cfg.max_running, cfg.max_queued, metrics=metrics.SAMPLER_ADMISSION)
        stages = Stages(admission, cfg.max_batch) if needs_weights else None
        if stages is not None:
            self.stages = stages
            self._cleanup.append(stages.close)
        add = {
            "text-encoder": lambda: text_encoder_pb2_grpc.add_TextEncoderServicer_to_server(
                TextEncoderServicer(self.registry, stages, self._gate("text encodings")), server),
            "sampler": lambda: sampler_pb2_grpc.add_DiffusionSamplerServicer_to_server(
                DiffusionSamplerServicer(self.registry, stages), server),
            "autoencoder": lambda: autoencoder_pb2_grpc.add_RGBDAutoencoderServicer_to_server(
                RGBDAutoencoderServicer(self.registry, stages, self._gate("autoencoder calls")), server),
            "depth-evaluator": lambda: depth_pb2_grpc.add_DepthEvaluatorServicer_to_server(
                self._depth_evaluator(depth_models), server),
            "renderer": lambda: renderer_pb2_grpc.add_PanoramaRendererServicer_to_server(self._renderer(), server),
            "gateway": lambda: studio_pb2_grpc.add_StudioServicer_to_server(self._studio(stages), server),
        }
        for s in services:
            add[s]()
        if self._studio_servicer is not None:
            self._studio_servicer.renderer = self._pano_renderer
            # closed first: its render jobs run on the renderer's threads
            self._cleanup.append(self._studio_servicer.panos.close)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = [n for s in services for n in NAMES[s]]
        if not cfg.no_reflection:
            reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        address = f"{cfg.host}:{cfg.port}"
        self.port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address} (in use?): choose another --port")
        if cfg.health_port is not None:
            self._health_server = grpc.aio.server(options=grpc_options(cfg))
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._health_server)
            self.health_port = self._health_server.add_insecure_port(f"{cfg.host}:{cfg.health_port}")
            if self.health_port == 0:
                raise OSError(f"cannot listen on {cfg.host}:{cfg.health_port} (in use?): choose another "
                              "--health-port")
        for n in names:  # probes get an answer at once, and it is the truth: not yet
            await self._health.set(n, NOT_SERVING)
        await server.start()
        self._server = server
        if self._health_server is not None:
            await self._health_server.start()
        if needs_weights and not cfg.no_warmup:
            t0 = time.perf_counter()
            parts = {s for s in services if s in STAGE_SERVICES}
            if "gateway" in services:
                parts |= {s for s, key in zip(STAGE_SERVICES, ("text", "sampler", "autoencoder"))
                          if not cfg.remote[key]}
            await asyncio.to_thread(warm_up, self.registry.default().require_pipeline(), parts)
            log.info("warm: %s in %.1f s", ", ".join(sorted(parts)), time.perf_counter() - t0)
        if any(depth_models) and not cfg.no_warmup:
            t0 = time.perf_counter()
            await asyncio.to_thread(warm_up_depth, *depth_models)
            log.info("warm: depth models in %.1f s", time.perf_counter() - t0)
        await self._health.set("", SERVING)
        forwarded = self._forwarded_needs(services)
        for n in names:
            if n not in forwarded:
                await self._health.set(n, SERVING)
        if forwarded:
            targets = {t for deps in forwarded.values() for t, _ in deps}
            channels = {t: self._link.channel(t, grpc_options(cfg)) for t in targets}
            monitor = DownstreamMonitor(self._health, channels, forwarded)
            await monitor.start()

            async def stop_monitor():
                await monitor.stop()
                for ch in channels.values():
                    await ch.close()

            self._cleanup.append(stop_monitor)
        if self.registry is not None:
            self.registry.start_watching()  # live roll-outs: converge on releases.json every --reload-interval
        if cfg.metrics_port is not None:
            self.metrics_port = metrics.serve(cfg.metrics_port, cfg.host)
        log.info("serving %s on %s:%d%s (metrics: %s%s)", ", ".join(services), cfg.host, self.port,
                 " with TLS" if creds else "", self.metrics_port or "off",
                 f", health: {self.health_port}" if self.health_port else "")
        return self.port

    def _forwarded_needs(self, services) -> dict[str, list[tuple[str, str]]]:
        """Our service name → the (target, service name) it needs SERVING, for services this gateway forwards."""
        if self.cfg.service not in ("gateway", "all"):
            return {}
        needs: dict[str, list[tuple[str, str]]] = {}
        stage_deps = [(t, NAMES[s][0]) for s, key in zip(STAGE_SERVICES, ("text", "sampler", "autoencoder"))
                      if (t := self.cfg.remote[key])]
        if stage_deps:
            needs[NAMES["gateway"][0]] = stage_deps
        for s in GATEWAY_EXTRAS:
            if s in services and (t := self._forwarded(s)):
                needs[NAMES[s][0]] = [(t, NAMES[s][0])]
        return needs

    def _gate(self, what: str) -> Gate:
        """Admission for one heavy RPC kind: as many accepted calls as the sampler's running + queued jobs."""
        return Gate(self.cfg.max_running + self.cfg.max_queued, what, "--max-running + --max-queued")

    def _forwarded(self, service: str) -> str | None:
        """The target a gateway forwards ``service`` to (None: served in this process)."""
        if self.cfg.service not in ("gateway", "all"):
            return None
        return {"depth-evaluator": self.cfg.depth_evaluator_url, "renderer": self.cfg.renderer_url}.get(service)

    def _depth_evaluator(self, models):
        target = self._forwarded("depth-evaluator")
        if target:
            fwd = _Forward(target, depth_pb2_grpc.DepthEvaluatorStub, "DepthEvaluator", self.cfg, self._link)
            self._cleanup.append(fwd.close)
            return fwd.servicer(depth_pb2_grpc.DepthEvaluatorServicer, ("Estimate", "Evaluate"))
        servicer = DepthEvaluatorServicer(*models, self._gate("depth calls"), self.cfg.depth_max_input_pixels,
                                          self.cfg.max_message_bytes)
        self._cleanup.append(servicer.close)
        return servicer

    def _renderer(self):
        target = self._forwarded("renderer")
        if target:
            fwd = _Forward(target, renderer_pb2_grpc.PanoramaRendererStub, "PanoramaRenderer", self.cfg, self._link)
            self._cleanup.append(fwd.close)
            return fwd.servicer(renderer_pb2_grpc.PanoramaRendererServicer,
                                ("Submit", "GetOperation", "CancelOperation"))
        servicer = PanoramaRendererServicer(self.cfg, self._job_queue())
        self._cleanup.append(servicer.close)
        self._pano_renderer = servicer  # the Studio's SubmitPano renders with it
        return servicer

    def _studio(self, stages: Stages | None) -> StudioServicer:
        local = LocalStages(stages) if stages is not None else None
        down = RemoteStages(self.cfg.remote, local, grpc_options(self.cfg), self._link)
        studio = StudioServicer(self.registry, down, self.cfg.downstream_timeout_s, self.cfg.max_operations,
                                self._gate("generations"), self.cfg.operation_ttl_s, self.cfg.max_message_bytes,
                                self._job_queue())
        self._cleanup.append(studio.operations.close)
        self._studio_servicer = studio
        self._cleanup.append(down.close)
        return studio

    def _job_queue(self):
        """--queue: one Redis-backed job queue shared by the Studio and the renderer (None: jobs run here)."""
        if self.cfg.queue and self._queue is None:
            from ..jobs.front import JobQueue

            self._queue = JobQueue(self.cfg.queue, self.cfg.result_ttl_s)
            self._cleanup.insert(0, self._queue.close)  # closed last
        return self._queue

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, refuse new calls, let in-flight ones finish within ``grace_s``, then release everything."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self.cfg.grace_s if grace_s is None else grace_s)
        self._server = None
        if self._health_server is not None:
            await self._health_server.stop(0)
            self._health_server = None
        for fn in reversed(self._cleanup):
            result = fn()
            if asyncio.iscoroutine(result):
                await result
        if self.registry is not None:
            self.registry.close()

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


class _Forward:
    """A gateway's stand-in for a service in another process: each unary call is sent on with the caller's
    remaining deadline and request id, and a failure comes back as the typed error the service raised."""

    def __init__(self, target: str, stub_cls, service: str, cfg: ServeConfig, link: Link):
        self.target, self.service, self.default_timeout_s = target, service, cfg.downstream_timeout_s
        self.auth = link.auth
        self.channel = link.channel(target, grpc_options(cfg))
        self.stub = stub_cls(self.channel)

    def servicer(self, base: type, methods: tuple[str, ...]):
        def forward(name):
            async def method(_self, request, context):
                left = context.time_remaining()
                try:
                    return await getattr(self.stub, name)(
                        request, timeout=self.default_timeout_s if left is None else left,
                        metadata=((REQUEST_ID_KEY, request_id.get()), *self.auth))
                except grpc.aio.AioRpcError as err:
                    raise from_rpc_error(err, f"{self.service} at {self.target}") from None

            method.__name__ = name
            return method

        return type(f"Forwarded{self.service}", (base,), {m: forward(m) for m in methods})()

    async def close(self) -> None:
        await self.channel.close()


async def serve(cfg: ServeConfig, on_started=None) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully (``cfg.grace_s``)."""
    server = Server(cfg)
    await server.start()
    if on_started is not None:
        on_started(server)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("stopping: in-flight calls get %.0f s to finish", cfg.grace_s)
    await server.stop()
    log.info("stopped")
