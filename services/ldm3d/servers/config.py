"""One typed config for a serving process, built from flags and environment variables here and nowhere else.

Precedence: flag > environment variable > default. Each option is declared once, as a :class:`ServeConfig` field
(its default, flag, environment variable, parser and help); :data:`OPTIONS` lists them. Every environment variable
the servers read is there; errors name the flag (and its variable) with the value received and what to use
instead.

    cfg = ServeConfig.from_args(parser.parse_args())     # after add_arguments(parser)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import InvalidArgument
from ..render.job import RenderLimits

_LIMITS = RenderLimits()  # the render library's limits are the renderer's defaults
SERVICES = ("all", "gateway", "text-encoder", "sampler", "autoencoder", "depth-evaluator", "renderer")
MODEL_SERVICES = {"all", "gateway", "text-encoder", "sampler", "autoencoder"}


@dataclass(frozen=True)
class _Opt:
    flag: str
    env: str
    parse: Callable[[str], Any]
    help: str
    choices: tuple | None = None
    kind: str = "value"  # "flag": a switch without a value (its variable takes true/false)


def _option(parse: Callable[[str], Any], default: Any, help: str, *, flag: str = "", env: str = "",
            choices: tuple | None = None, kind: str = "value"):
    """A :class:`ServeConfig` field's one declaration: its parser, default and help. The flag is ``--`` + the field
    name with dashes and the variable ``LDM3D_`` + the name in capitals unless given (filled in below the class)."""
    return field(default=default, metadata={"option": _Opt(flag, env, parse, help, choices, kind)})


def _port(s: str) -> int:
    v = int(s)
    if not 0 <= v <= 65535:
        raise ValueError("a port is 0..65535 (0: any free port)")
    return v


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise ValueError("use an integer >= 1")
    return v


def _non_negative_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise ValueError("use an integer >= 0")
    return v


def _positive_float(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise ValueError("use a number > 0")
    return v


def _non_negative_float(s: str) -> float:
    v = float(s)
    if not v >= 0:
        raise ValueError("use a number >= 0 (0: off)")
    return v


def _metrics_port(s: str) -> int | None:
    if s.strip().lower() in ("off", "none", "-1"):
        return None
    return _port(s)


def _flag(s: str) -> bool:
    v = s.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("use true or false")


def _target(s: str) -> str:
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("use HOST:PORT, e.g. localhost:50052")
    return s


def _redis_url(s: str) -> str:
    from urllib.parse import urlparse

    u = urlparse(s)
    if u.scheme not in ("redis", "rediss") or not u.hostname:
        raise ValueError("use redis://HOST:PORT/DB, e.g. redis://127.0.0.1:6379/0")
    try:
        u.port  # noqa: B018 - parses the port
    except ValueError:
        raise ValueError("the port must be a number: redis://HOST:PORT/DB") from None
    db = u.path.lstrip("/")
    if db and not db.isdigit():
        raise ValueError(f"the database must be a number, not {db!r}: redis://HOST:PORT/0")
    return s


@dataclass(frozen=True)
class ServeConfig:
    """Everything one serving process needs: each field is one option (flag, variable, meaning: ``--help``)."""

    service: str = "all"
    checkpoint: str | None = _option(str, None,
        "diffusers LDM3D checkpoint folder, run with torch (e.g. one from `ldm3d make-tiny-model`)")
    repository: str | None = _option(str, None, "Triton model repository (`ldm3d export`), run by --runtime")
    runtime: str = _option(str, "embedded", "runtime for --repository", choices=("embedded", "triton"))
    triton_url: str | None = _option(_target, None, "Triton gRPC endpoint for --runtime triton")
    reload_interval_s: float = _option(_non_negative_float, 5.0,
        "seconds between checks of the repository's releases.json: a publish, promote, canary or rollback is loaded "
        "beside the serving release, switched to and the old drained, without a restart (0: never reload)",
        flag="--reload-interval")
    model_name: str | None = _option(str, None,
        "the name clients use (default: the checkpoint folder's name, or 'ldm3d' for a repository)")
    host: str = _option(str, "0.0.0.0", "address to listen on")
    port: int = _option(_port, 50051, "gRPC port (0: any free port, printed at start)")
    metrics_port: int | None = _option(_metrics_port, 9464,
        "Prometheus /metrics HTTP port (0: any free port; off: none)")
    max_message_mb: int = _option(_positive_int, 64,
        "largest gRPC message sent or received, MiB (a 2048² RGBD as raw arrays is 20 MiB)")
    grace_s: float = _option(_positive_float, 30.0,
        "seconds in-flight calls get to finish on SIGTERM/SIGINT before they are cancelled", flag="--grace")
    max_running: int = _option(_positive_int, 8,
        "sampling requests in progress at once; they share each denoising step's U-Net call (at most --max-batch per "
        "call) instead of each using the cores alone")
    max_batch: int = _option(_positive_int, 8,
        "most requests in one denoising step's U-Net call (the model's max_batch_size caps its rows too: a guided "
        "image is two rows); 1 steps one request at a time")
    max_queued: int = _option(_non_negative_int, 32,
        "sampling requests that may wait; beyond them RESOURCE_EXHAUSTED with a retry hint")
    intra_op_threads: int | None = _option(_positive_int, None,
        "embedded runtime: ONNX Runtime threads per model call (default: config.pbtxt's, else one per core of the node;"
        " in a container set it to the CPU limit)")
    text_cache_size: int = _option(_non_negative_int, 256, "prompts kept in the text encoder's LRU cache")
    text_encoder_url: str | None = _option(_target, None, "gateway: the TextEncoder service (default: in-process)")
    sampler_url: str | None = _option(_target, None, "gateway: the DiffusionSampler service (default: in-process)")
    autoencoder_url: str | None = _option(_target, None, "gateway: the RGBDAutoencoder service (default: in-process)")
    depth_evaluator_url: str | None = _option(_target, None,
        "gateway: forward DepthEvaluator calls to this service (default: in-process)")
    renderer_url: str | None = _option(_target, None,
        "gateway: forward PanoramaRenderer calls to this service (default: in-process)")
    downstream_timeout_s: float = _option(_positive_float, 600.0,
        "gateway: deadline of a downstream call when the client set none (seconds)", flag="--downstream-timeout")
    max_operations: int = _option(_positive_int, 256,
        "gateway: long-running operations remembered (the oldest finished ones are forgotten)")
    depth_model: str | None = _option(str, None,
        "DepthEvaluator.Estimate's DPT checkpoint: a folder in the hub layout or a hub id (e.g. Intel/dpt-large; `ldm3d"
        " make-tiny-depth-model DIR --kind dpt` for tests)")
    reference_model: str | None = _option(str, None,
        "DepthEvaluator.Evaluate's metric reference for RGB input: a ZoeDepth checkpoint (e.g. Intel/zoedepth-nyu)")
    depth_max_input_pixels: int = _option(_positive_int, 4096 * 4096,
        "depth evaluator: largest input image (rgb, predicted_depth, reference_depth), pixels; checked from the "
        "PNG header or array shape before decoding")
    render_output_dir: str | None = _option(str, None,
        "renderer: folder for ARTIFACT_DELIVERY_FILES jobs, one subfolder per job (default: none, files delivery is "
        "refused)")
    render_max_running: int = _option(_positive_int, 1, "renderer: jobs rendering at once (each uses every CPU core)")
    render_max_queued: int = _option(_non_negative_int, 8,
        "renderer: jobs that may wait; beyond them Submit is RESOURCE_EXHAUSTED")
    render_max_input_pixels: int = _option(_positive_int, _LIMITS.max_input_pixels,
        "renderer: largest input panorama, pixels")
    render_max_eye_pixels: int = _option(_positive_int, _LIMITS.max_eye_pixels,
        "renderer: largest eye of a 360 still, pixels")
    render_max_frame_pixels: int = _option(_positive_int, _LIMITS.max_frame_pixels,
        "renderer: largest video frame (per eye), pixels")
    render_max_frames: int = _option(_positive_int, _LIMITS.max_frames,
        "renderer: most frames in one video (seconds x fps)")
    render_max_video360_pixels: int = _option(_positive_int, _LIMITS.max_video360_pixels,
        "renderer: largest eye of a 360 video frame, pixels")
    # the locks (docs/security.md): TLS, API keys, what is exposed
    tls_cert: str | None = _option(str, None, "serve TLS with this PEM certificate chain (with --tls-key)")
    tls_key: str | None = _option(str, None, "the PEM private key of --tls-cert")
    tls_client_ca: str | None = _option(str, None,
        "mutual TLS: only clients with a certificate signed by this PEM CA may connect")
    api_keys: str | None = _option(str, None,
        "file of API keys, one a line (# comments): every call but health must send 'authorization: Bearer KEY' "
        "(re-read when the file changes)")
    health_port: int | None = _option(_metrics_port, None,
        "also answer grpc.health.v1 (and nothing else) in plain text on this port, for probes that cannot speak TLS "
        "(Kubernetes' grpc probes); off: none")
    no_reflection: bool = _option(_flag, False, "do not serve gRPC reflection (clients then need the .proto files)",
                                  kind="flag")
    no_warmup: bool = _option(_flag, False,
        "report SERVING at once instead of after one warm-up pass through the models", kind="flag")
    downstream_tls_ca: str | None = _option(str, None,
        "gateway: reach the --...-url services over TLS, trusting this PEM CA")
    downstream_tls_cert: str | None = _option(str, None,
        "gateway: client certificate for mutual TLS with the services (with --downstream-tls-key)")
    downstream_tls_key: str | None = _option(str, None, "gateway: the PEM private key of --downstream-tls-cert")
    downstream_api_key_file: str | None = _option(str, None,
        "gateway: file holding the API key it sends to the --...-url services")
    operation_ttl_s: float = _option(_positive_float, 3600.0,
        "seconds a finished operation stays readable before it may be forgotten", flag="--operation-ttl")
    queue: str | None = _option(_redis_url, None,
        "durable jobs: Redis URL (redis://HOST:PORT/DB) that SubmitGenerate and PanoramaRenderer.Submit enqueue to; "
        "`ldm3d worker --queue` runs them (default: none, jobs run in this process)")
    result_ttl_s: float = _option(_positive_float, 86400.0,
        "durable jobs: seconds a finished operation (state, result, error) stays in Redis", flag="--result-ttl")
    log_format: str = _option(str, "text", "log lines as text or JSON", choices=("text", "json"))

    def __post_init__(self):
        if self.service not in SERVICES:
            raise InvalidArgument(f"service={self.service!r} is not a service: use one of {', '.join(SERVICES)}",
                                  field="service")
        if self.checkpoint and self.repository:
            raise InvalidArgument("give --checkpoint or --repository, not both", field="--repository")
        if self.service in MODEL_SERVICES and not (self.checkpoint or self.repository):
            raise InvalidArgument(
                f"`ldm3d serve {self.service}` needs a model: --checkpoint DIR (e.g. from `ldm3d make-tiny-model DIR`)"
                " or --repository DIR (or LDM3D_CHECKPOINT / LDM3D_REPOSITORY)", field="--checkpoint")
        if self.runtime == "triton" and not self.triton_url:
            raise InvalidArgument("--runtime triton needs --triton-url HOST:PORT (or LDM3D_TRITON_URL)",
                                  field="--triton-url")
        if self.service != "gateway" and self.service != "all":
            for name in ("text_encoder_url", "sampler_url", "autoencoder_url", "depth_evaluator_url",
                         "renderer_url"):
                if getattr(self, name):
                    raise InvalidArgument(f"{OPTIONS[name].flag} is a gateway option: use it with `ldm3d serve "
                                          "gateway` or `ldm3d serve all`", field=OPTIONS[name].flag)
        if bool(self.tls_cert) != bool(self.tls_key):
            missing = "--tls-key" if self.tls_cert else "--tls-cert"
            raise InvalidArgument(f"TLS needs both --tls-cert and --tls-key: add {missing} FILE", field=missing)
        if self.tls_client_ca and not self.tls_cert:
            raise InvalidArgument("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key", field="--tls-cert")
        if bool(self.downstream_tls_cert) != bool(self.downstream_tls_key):
            missing = "--downstream-tls-key" if self.downstream_tls_cert else "--downstream-tls-cert"
            raise InvalidArgument(f"a downstream client certificate needs both files: add {missing} FILE",
                                  field=missing)
        if self.downstream_tls_cert and not self.downstream_tls_ca:
            raise InvalidArgument("--downstream-tls-cert needs --downstream-tls-ca (the CA the services' "
                                  "certificates are signed by)", field="--downstream-tls-ca")
        if self.service not in ("gateway", "all"):
            for name in ("downstream_tls_ca", "downstream_tls_cert", "downstream_api_key_file"):
                if getattr(self, name):
                    raise InvalidArgument(f"{OPTIONS[name].flag} is a gateway option: use it with `ldm3d serve "
                                          "gateway` or `ldm3d serve all`", field=OPTIONS[name].flag)
        if self.health_port and self.health_port == self.port:
            raise InvalidArgument(f"--health-port {self.health_port} is the gRPC --port: choose another",
                                  field="--health-port")
        if self.queue and self.service not in ("all", "gateway", "renderer"):
            raise InvalidArgument("--queue makes SubmitGenerate and PanoramaRenderer.Submit durable: use it with "
                                  "`ldm3d serve all|gateway|renderer`", field="--queue")

    @property
    def runtime_options(self) -> dict:
        """Keyword options for the model runtime (only the embedded one takes thread settings)."""
        if self.runtime == "embedded" and self.intra_op_threads is not None:
            return {"intra_op_threads": self.intra_op_threads}
        return {}

    @property
    def render_limits(self) -> RenderLimits:
        """The renderer's :class:`~ldm3d.render.RenderLimits` from the ``render_max_*`` options."""
        return RenderLimits(
            max_input_pixels=self.render_max_input_pixels, max_eye_pixels=self.render_max_eye_pixels,
            max_frame_pixels=self.render_max_frame_pixels, max_frames=self.render_max_frames,
            max_video360_pixels=self.render_max_video360_pixels)

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mb * 1024 * 1024

    @property
    def remote(self) -> dict[str, str | None]:
        """The gateway's downstream targets by stage; None = in-process."""
        return {"text": self.text_encoder_url, "sampler": self.sampler_url, "autoencoder": self.autoencoder_url}

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> ServeConfig:
        env = os.environ if env is None else env
        values: dict[str, Any] = {"service": getattr(args, "service", "all")}
        for name, opt in OPTIONS.items():
            value = option_value(opt, getattr(args, name, None), env)
            if value is not _UNSET:  # else the field's default
                values[name] = value
        return cls(**values)


_UNSET = object()


def option_value(opt, flag_value: Any, env: Mapping[str, str], default: Any = _UNSET) -> Any:
    """An option's value from its flag > its environment variable > ``default``; errors name the flag.

    ``opt`` needs ``flag``, ``env``, ``parse`` and ``choices`` (shared by ``ldm3d worker``'s own options)."""
    if flag_value is not None:
        raw, origin = flag_value, opt.flag
    elif env.get(opt.env, "") != "":
        raw, origin = env[opt.env], f"{opt.env} (for {opt.flag})"
    else:
        return default
    try:
        value = opt.parse(str(raw))
    except ValueError as exc:
        raise InvalidArgument(f"{origin}={raw!r} is invalid: {exc}", field=opt.flag) from None
    if opt.choices and value not in opt.choices:
        raise InvalidArgument(f"{origin}={raw!r} is invalid: use one of {', '.join(opt.choices)}", field=opt.flag)
    return value


# field name → option, in declaration order
OPTIONS: dict[str, _Opt] = {
    f.name: dataclasses.replace(o, flag=o.flag or "--" + f.name.replace("_", "-"),
                                env=o.env or "LDM3D_" + f.name.upper())
    for f in fields(ServeConfig) if (o := f.metadata.get("option"))
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare every option as a flag (default None, so that :meth:`ServeConfig.from_args` sees what was given)."""
    for name, opt in OPTIONS.items():
        default = ServeConfig.__dataclass_fields__[name].default
        default = "none" if default is None else default
        if opt.kind == "flag":
            parser.add_argument(opt.flag, dest=name, default=None, action="store_const", const="true",
                                help=f"{opt.help} [env {opt.env}=true]")
            continue
        parser.add_argument(opt.flag, dest=name, default=None, choices=opt.choices,
                            metavar=None if opt.choices else name.upper(),
                            help=f"{opt.help} [env {opt.env}; default {default}]")
