"""Build, run and gracefully stop one serving process: the configured servicers on one grpc.aio server.

    ldm3d serve all --port 50051 --checkpoint demo/tiny [--depth-model DIR --reference-model DIR]

    cfg = ServeConfig(service="all", checkpoint="demo/tiny", port=0, metrics_port=None)
    server = Server(cfg); port = await server.start(); ...; await server.stop()

Every server has standard health checking (``grpc.health.v1``: "" and each service name) and reflection, the one
interceptor, deliberate message size limits, and a graceful stop: health turns NOT_SERVING, new calls are refused,
in-flight calls get ``grace_s`` to finish, then whatever is left is cancelled (sampling stops within one step).

The gateway's address answers every public service: besides the Studio it serves DepthEvaluator and
PanoramaRenderer, in-process or forwarded to ``--depth-evaluator-url`` / ``--renderer-url`` (like the three stages).
"""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..v1 import (autoencoder_pb2, autoencoder_pb2_grpc, depth_pb2, depth_pb2_grpc, renderer_pb2,
                  renderer_pb2_grpc, sampler_pb2, sampler_pb2_grpc, studio_pb2, studio_pb2_grpc, text_encoder_pb2,
                  text_encoder_pb2_grpc)
from ..wire.ids import REQUEST_ID_KEY
from ..wire.status import from_rpc_error
from . import metrics
from .admission import Admission
from .autoencoder import RGBDAutoencoderServicer
from .config import ServeConfig
from .depth_evaluator import DepthEvaluatorServicer, load_depth_models
from .downstream import LocalStages, RemoteStages
from .interceptor import ServerInterceptor
from .logs import request_id
from .models import ModelRegistry
from .renderer import PanoramaRendererServicer
from .sampler import DiffusionSamplerServicer
from .stages import Stages
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
        self.stages: Stages | None = None  # the in-process stages (sampling admission and step batcher), if any
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._cleanup = []
        self._queue = None

    @property
    def services(self) -> tuple[str, ...]:
        if self.cfg.service == "all":
            return tuple(NAMES)
        if self.cfg.service == "gateway":
            return ("gateway", *GATEWAY_EXTRAS)
        return (self.cfg.service,)

    async def start(self) -> int:
        """Load the model, bind, start serving; returns the bound port."""
        cfg = self.cfg
        services = self.services
        needs_weights = any(s in STAGE_SERVICES for s in services) or (
            "gateway" in services and not all(cfg.remote.values()))
        if any(s in STAGE_SERVICES or s == "gateway" for s in services):
            # loading weights takes seconds to minutes: keep the event loop (and signals) responsive meanwhile
            self.registry = await asyncio.to_thread(ModelRegistry, cfg, needs_weights)
        depth_models = (None, None)
        if "depth-evaluator" in services and not self._forwarded("depth-evaluator"):
            depth_models = await asyncio.to_thread(load_depth_models, cfg)
        server = grpc.aio.server(interceptors=[ServerInterceptor()], options=grpc_options(cfg))
        admission = Admission(cfg.max_running, cfg.max_queued, metrics=metrics.SAMPLER_ADMISSION)
        stages = Stages(admission, cfg.max_batch) if needs_weights else None
        if stages is not None:
            self.stages = stages
            self._cleanup.append(stages.close)
        add = {
            "text-encoder": lambda: text_encoder_pb2_grpc.add_TextEncoderServicer_to_server(
                TextEncoderServicer(self.registry, stages), server),
            "sampler": lambda: sampler_pb2_grpc.add_DiffusionSamplerServicer_to_server(
                DiffusionSamplerServicer(self.registry, stages), server),
            "autoencoder": lambda: autoencoder_pb2_grpc.add_RGBDAutoencoderServicer_to_server(
                RGBDAutoencoderServicer(self.registry, stages), server),
            "depth-evaluator": lambda: depth_pb2_grpc.add_DepthEvaluatorServicer_to_server(
                self._depth_evaluator(depth_models), server),
            "renderer": lambda: renderer_pb2_grpc.add_PanoramaRendererServicer_to_server(self._renderer(), server),
            "gateway": lambda: studio_pb2_grpc.add_StudioServicer_to_server(self._studio(stages), server),
        }
        for s in services:
            add[s]()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = [n for s in services for n in NAMES[s]]
        reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        self.port = server.add_insecure_port(f"{cfg.host}:{cfg.port}")
        if self.port == 0:
            raise OSError(f"cannot listen on {cfg.host}:{cfg.port} (in use?): choose another --port")
        await server.start()
        self._server = server
        for n in ("", *names):
            await self._health.set(n, health_pb2.HealthCheckResponse.SERVING)
        if self.registry is not None:
            self.registry.start_watching()  # live roll-outs: converge on releases.json every --reload-interval
        if cfg.metrics_port is not None:
            self.metrics_port = metrics.serve(cfg.metrics_port, cfg.host)
        log.info("serving %s on %s:%d (metrics: %s)", ", ".join(services), cfg.host, self.port,
                 self.metrics_port or "off")
        return self.port

    def _forwarded(self, service: str) -> str | None:
        """The target a gateway forwards ``service`` to (None: served in this process)."""
        if self.cfg.service not in ("gateway", "all"):
            return None
        return {"depth-evaluator": self.cfg.depth_evaluator_url, "renderer": self.cfg.renderer_url}.get(service)

    def _depth_evaluator(self, models):
        target = self._forwarded("depth-evaluator")
        if target:
            fwd = _Forward(target, depth_pb2_grpc.DepthEvaluatorStub, "DepthEvaluator", self.cfg)
            self._cleanup.append(fwd.close)
            return fwd.servicer(depth_pb2_grpc.DepthEvaluatorServicer, ("Estimate", "Evaluate"))
        servicer = DepthEvaluatorServicer(*models)
        self._cleanup.append(servicer.close)
        return servicer

    def _renderer(self):
        target = self._forwarded("renderer")
        if target:
            fwd = _Forward(target, renderer_pb2_grpc.PanoramaRendererStub, "PanoramaRenderer", self.cfg)
            self._cleanup.append(fwd.close)
            return fwd.servicer(renderer_pb2_grpc.PanoramaRendererServicer,
                                ("Submit", "GetOperation", "CancelOperation"))
        servicer = PanoramaRendererServicer(self.cfg, self._job_queue())
        self._cleanup.append(servicer.close)
        return servicer

    def _studio(self, stages: Stages | None) -> StudioServicer:
        local = LocalStages(stages) if stages is not None else None
        down = RemoteStages(self.cfg.remote, local, grpc_options(self.cfg))
        studio = StudioServicer(self.registry, down, self.cfg.downstream_timeout_s, self.cfg.max_operations,
                                self._job_queue())
        self._cleanup.append(studio.operations.close)
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

    def __init__(self, target: str, stub_cls, service: str, cfg: ServeConfig):
        self.target, self.service, self.default_timeout_s = target, service, cfg.downstream_timeout_s
        self.channel = grpc.aio.insecure_channel(target, options=grpc_options(cfg))
        self.stub = stub_cls(self.channel)

    def servicer(self, base: type, methods: tuple[str, ...]):
        def forward(name):
            async def method(_self, request, context):
                left = context.time_remaining()
                try:
                    return await getattr(self.stub, name)(
                        request, timeout=self.default_timeout_s if left is None else left,
                        metadata=((REQUEST_ID_KEY, request_id.get()),))
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
