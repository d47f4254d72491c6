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
BATCH_REQUESTS = Histogram("ldm3d_sampler_batch_requests", "Requests sharing one denoising step's U-Net call",
                           buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64))
UNET_CALL_SECONDS = Histogram("ldm3d_sampler_unet_call_seconds", "One batched U-Net call (all its chunks)",
                              buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
REJECTED = Counter("ldm3d_sampler_rejected", "Sampling jobs refused by admission control (RESOURCE_EXHAUSTED)")
SAMPLER_ADMISSION = AdmissionMetrics(QUEUE_DEPTH, RUNNING, REJECTED)
MODEL_INFO = Gauge("ldm3d_model_info", "Model versions this process serves (value 1)",
                   ["model", "version", "runtime", "rgbd_channels"])
# live roll-outs (ldm3d.servers.models): requests per release, each release's state here, refusals, switches
RELEASE_REQUESTS = Counter("ldm3d_release_requests", "Calls resolved to each release (route: current, canary, named)",
                           ["model", "release", "route"])
RELEASE_STATE = Gauge("ldm3d_release_state", "Releases in this process (value 1): current, canary, draining, "
                      "loaded or refused", ["model", "release", "state"])
RELEASE_CANARY_PERCENT = Gauge("ldm3d_release_canary_percent", "Share of unversioned requests sent to the canary",
                               ["model"])
RELEASE_REFUSED = Counter("ldm3d_release_refused", "Releases refused because they failed to verify or load",
                          ["model", "release"])
RELEASE_SWITCHES = Counter("ldm3d_release_switches", "Route changes (promote, canary change, rollback) applied")
RELEASE_LOAD_SECONDS = Histogram("ldm3d_release_load_seconds", "Verify + load + warm time of a new release",
                                 buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
RELEASE_READ_ERRORS = Counter("ldm3d_release_read_errors", "releases.json reads that failed (corrupted/unreadable)")
TEXT_CACHE_HITS = Gauge("ldm3d_text_cache_hits", "Prompts served from the text encoder's LRU cache", ["model"])


def serve(port: int, host: str = "0.0.0.0") -> int:
    """Start the /metrics HTTP endpoint in a daemon thread; returns the bound port (``port=0``: any free one)."""
    server, _thread = start_http_server(port, addr=host)
    return server.server_port
