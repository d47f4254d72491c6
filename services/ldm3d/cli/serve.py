"""``ldm3d serve``: run the gRPC platform, all services in one process (the default) or one service alone.

    ldm3d serve all --port 50051 --checkpoint demo/tiny                 # every service on one port
    ldm3d serve sampler --port 50052 --checkpoint demo/tiny --metrics-port 9465
    ldm3d serve gateway --port 50051 --checkpoint demo/tiny --text-encoder-url localhost:50053 \\
        --sampler-url localhost:50052 --autoencoder-url localhost:50054

Every option also reads an environment variable (``ldm3d serve all --help`` lists them). Stops gracefully on
SIGTERM/SIGINT. Once serving, prints one line ``ldm3d serve: <service> listening on <host>:<port>`` to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import logging


def register(sub) -> None:
    from ..servers.config import SERVICES, add_arguments

    p = sub.add_parser("serve", help="run the gRPC platform (all services, or one)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("service", choices=SERVICES, help="which service to run; `all`: every one on one port")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..servers import app, logs
    from ..servers.config import ServeConfig

    cfg = ServeConfig.from_args(args)
    logs.configure(cfg.log_format, logging.WARNING - 10 * min(args.verbose + 1, 2))

    def started(server):
        print(f"ldm3d serve: {cfg.service} listening on {cfg.host}:{server.port}"
              + (f" (metrics on :{server.metrics_port})" if server.metrics_port else ""), flush=True)

    asyncio.run(app.serve(cfg, on_started=started))
    return 0
