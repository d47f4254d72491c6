"""Prometheus metrics of one process, served on their own HTTP port (``--metrics-port``).

Defined once at import (the client library keeps one registry per process); labels carry the service and method.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from .admission import AdmissionMetrics

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter("ldm3d_grpc_requests", "Finished RPCs", ["method", "code"])
LATENCY = Histogram("ldm3d_grpc_request_seconds", "RPC latency, first byte in to status out", ["method"],
                    buckets=_LATENCY_BUCKETS)
IN_FLIGHT = Gauge("ldm3d_grpc_in_flight", "RPCs being handled", ["method"])
STEP_SECONDS = Histogram("ldm3d_sampler_step_seconds", "Time per denoising step",
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
STEPS = Counter("ldm3d_sampler_steps", "Denoising steps run")
QUEUE_DEPTH = Gauge("ldm3d_sampler_queue_depth", "Sampling jobs waiting for a slot")
RUNNING = Gauge("ldm3d_sampler_running", "Sampling jobs running")
REJECTED = Counter("ldm3d_sampler_rejected", "Sampling jobs refused by admission control (RESOURCE_EXHAUSTED)")
SAMPLER_ADMISSION = AdmissionMetrics(QUEUE_DEPTH, RUNNING, REJECTED)
MODEL_INFO = Gauge("ldm3d_model_info", "Model versions this process serves (value 1)",
                   ["model", "version", "runtime", "rgbd_channels"])
TEXT_CACHE_HITS = Gauge("ldm3d_text_cache_hits", "Prompts served from the text encoder's LRU cache", ["model"])


def serve(port: int, host: str = "0.0.0.0") -> int:
    """Start the /metrics HTTP endpoint in a daemon thread; returns the bound port (``port=0``: any free one)."""
    server, _thread = start_http_server(port, addr=host)
    return server.server_port
