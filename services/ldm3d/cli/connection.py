"""The flags every ``--server HOST:PORT`` command shares to reach a locked platform (docs/security.md):

    ldm3d generate --server ldm3d.example.com:443 --tls-ca ca.pem --prompt "..."     # LDM3D_API_KEY=... in the env
    ldm3d pano --server ldm3d.example.com:443 --tls --api-key "$KEY" --prompt "..."
"""

from __future__ import annotations

import argparse
import os

from ..errors import InvalidArgument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sec = parser.add_argument_group("--server over TLS / with an API key (docs/security.md)")
    sec.add_argument("--tls-ca", metavar="FILE", default=os.environ.get("LDM3D_TLS_CA") or None,
                     help="connect over TLS, trusting this PEM CA [env LDM3D_TLS_CA]")
    sec.add_argument("--tls", action="store_true", help="connect over TLS trusting the system's root CAs")
    sec.add_argument("--tls-client-cert", metavar="FILE", help="client certificate for mutual TLS (PEM)")
    sec.add_argument("--tls-client-key", metavar="FILE", help="the private key of --tls-client-cert (PEM)")
    sec.add_argument("--api-key", metavar="KEY", default=os.environ.get("LDM3D_API_KEY") or None,
                     help="sent as 'authorization: Bearer KEY' (prefer the variable: arguments show in `ps`) "
                          "[env LDM3D_API_KEY]")


def options(args) -> dict:
    """:class:`ldm3d.client.StudioClient`'s connection keywords from the flags (flags without --server are refused)."""
    used = [f for f in ("tls", "tls_client_cert", "tls_client_key") if getattr(args, f)]
    if used and not args.server:
        raise InvalidArgument(f"--{used[0].replace('_', '-')} is for --server HOST:PORT (a running platform)",
                              field=used[0])
    if bool(args.tls_client_cert) != bool(args.tls_client_key):
        raise InvalidArgument("mutual TLS needs both --tls-client-cert and --tls-client-key",
                              field="tls_client_key" if args.tls_client_cert else "tls_client_cert")
    return {"tls": args.tls or None, "tls_ca": args.tls_ca, "tls_cert": args.tls_client_cert,
            "tls_key": args.tls_client_key, "api_key": args.api_key}
