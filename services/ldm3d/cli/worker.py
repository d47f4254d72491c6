"""``ldm3d worker``: run durable jobs queued by ``ldm3d serve … --queue`` (renders, generations).

    ldm3d worker --queue redis://127.0.0.1:6379/0 --repository R [--kinds render,generate] [--concurrency N]
    ldm3d worker --queue redis://127.0.0.1:6379/0 --kinds render --render-output-dir /srv/renders

Start as many as you like, on any machine that reaches the Redis (and, for files renders, mounts the same
--render-output-dir as the front servers, at the same path). A killed worker's job is picked up by another within
--heartbeat-timeout × 4/3 (20 s by default) and a render resumes from its finished frames. SIGTERM/SIGINT drains:
a render stops after its current frame and goes back to the queue, a generation finishes. Once consuming, prints
one line ``ldm3d worker: ready …`` to stdout. Every option also reads an environment variable (see --help).
"""

from __future__ import annotations

import argparse
import logging

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..servers.config import OPTIONS, ServeConfig, _positive_float, _positive_int, option_value

# options shared with `ldm3d serve` (declared once, in servers/config.py)
SHARED = ("queue", "repository", "checkpoint", "runtime", "triton_url", "model_name", "intra_op_threads",
          "render_output_dir", "render_max_input_pixels", "render_max_eye_pixels", "render_max_frame_pixels",
          "render_max_frames", "render_max_video360_pixels", "log_format")


def _kinds(s: str) -> tuple[str, ...]:
    from ..jobs import KINDS

    kinds = tuple(dict.fromkeys(k.strip() for k in s.split(",") if k.strip()))
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"use a comma-separated subset of {','.join(KINDS)}")
    return kinds


@dataclass(frozen=True)
class _Opt:
    """A worker option: flag, environment variable, parser, default, help."""

    flag: str
    env: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple | None = None


WORKER_OPTIONS: dict[str, _Opt] = {
    "kinds": _Opt("--kinds", "LDM3D_WORKER_KINDS", _kinds, ("render", "generate"),
                  "which jobs to take: render, generate or both (comma-separated)"),
    "concurrency": _Opt("--concurrency", "LDM3D_WORKER_CONCURRENCY", _positive_int, 1,
                        "jobs run at once (each render or generation uses every CPU core or the GPU)"),
    "heartbeat_timeout_s": _Opt("--heartbeat-timeout", "LDM3D_WORKER_HEARTBEAT_TIMEOUT_S", _positive_float, 15.0,
                                "seconds without a heartbeat after which a worker counts as dead and its job is "
                                "requeued (also the job lease's TTL); every worker checks every third of it"),
    "time_limit_s": _Opt("--time-limit", "LDM3D_WORKER_TIME_LIMIT_S", _positive_float, 6 * 3600.0,
                         "longest a job may run, seconds; beyond it the operation fails with the time limit"),
    "max_jobs": _Opt("--max-jobs", "LDM3D_WORKER_MAX_JOBS", _positive_int, None,
                     "exit after this many jobs (a KEDA ScaledJob's pod: --max-jobs 1)"),
    "alive_file": _Opt("--alive-file", "LDM3D_WORKER_ALIVE_FILE", str, None,
                       "touch this file every heartbeat-timeout/3 while the worker's loop runs (a Kubernetes exec "
                       "probe checks its age: the worker has no gRPC port)"),
    "idle_exit_s": _Opt("--idle-exit", "LDM3D_WORKER_IDLE_EXIT_S", _positive_float, None,
                        "exit after this many seconds without a job (a ScaledJob pod that found the queue empty)"),
}


def register(sub) -> None:
    p = sub.add_parser("worker", help="run durable jobs from a Redis queue (`ldm3d serve --queue`)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in SHARED:
        _add(p, name, OPTIONS[name], ServeConfig.__dataclass_fields__[name].default)
    for name, opt in WORKER_OPTIONS.items():
        _add(p, name, opt, opt.default)
    p.set_defaults(func=run)


def _add(p, name: str, opt, default) -> None:
    default = "none" if default is None else ",".join(default) if isinstance(default, tuple) else default
    p.add_argument(opt.flag, dest=name, default=None, choices=opt.choices,
                   metavar=None if opt.choices else name.upper(), help=f"{opt.help} [env {opt.env}; default {default}]")


def config(args, env=None):
    """The worker's config from flags > environment > defaults; errors name the flag."""
    import os

    from ..errors import InvalidArgument
    from ..jobs.worker import WorkerConfig

    env = os.environ if env is None else env
    values = {name: option_value(opt, getattr(args, name, None), env, opt.default)
              for name, opt in WORKER_OPTIONS.items()}
    given = {n: getattr(args, n, None) or env.get(OPTIONS[n].env, "") for n in ("queue", "repository", "checkpoint")}
    if not given["queue"]:
        raise InvalidArgument("--queue redis://HOST:PORT/DB is required (or LDM3D_QUEUE)", field="--queue")
    needs_model = "generate" in values["kinds"]
    if needs_model and not (given["repository"] or given["checkpoint"]):
        raise InvalidArgument("generation jobs need a model: --repository DIR (or --checkpoint DIR), or take only "
                              "renders with --kinds render", field="--repository")
    args.service = "gateway" if needs_model else "renderer"
    for name in OPTIONS:  # what the worker does not declare keeps its default (ports, gateway URLs, ...)
        if name not in SHARED:
            setattr(args, name, None)
    serve = ServeConfig.from_args(args, {k: v for k, v in env.items() if any(
        OPTIONS[n].env == k for n in SHARED)})
    return WorkerConfig(queue=serve.queue, serve=serve, **values)


def run(args) -> int:
    from ..jobs.store import redact
    from ..jobs.worker import JobWorker
    from ..servers import logs

    args.service = "renderer"
    cfg = config(args)
    logs.configure(cfg.serve.log_format, logging.WARNING - 10 * min(args.verbose + 1, 2))
    worker = JobWorker(cfg)

    def ready(w):
        print(f"ldm3d worker: ready ({w.id}: kinds {','.join(cfg.kinds)}, concurrency {cfg.concurrency}, "
              f"queue {redact(cfg.queue)})", flush=True)

    worker.run(on_ready=ready)
    return 0
