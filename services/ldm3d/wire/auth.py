"""The client side of the locks, shared by the client and the gateway's downstream channels: TLS channel
credentials and the API key metadata (``authorization: Bearer KEY``). The server side is
:mod:`ldm3d.servers.security`; docs/security.md has the whole story."""

from __future__ import annotations

from pathlib import Path

import grpc

from ..errors import InvalidArgument

AUTH_KEY = "authorization"
MAX_KEY_CHARS = 512


def read_file(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{flag} {path}: cannot read it ({exc.strerror or exc})", field=flag) from None


def channel_credentials(ca: str | None, cert: str | None = None, key: str | None = None,
                        flags: tuple[str, str, str] = ("--tls-ca", "--tls-cert", "--tls-key"),
                        ) -> grpc.ChannelCredentials:
    """TLS for a client: trust ``ca`` (None: the system's roots), present ``cert``/``key`` for mutual TLS."""
    return grpc.ssl_channel_credentials(
        root_certificates=read_file(ca, flags[0]) if ca else None,
        private_key=read_file(key, flags[2]) if key else None,
        certificate_chain=read_file(cert, flags[1]) if cert else None)


def bearer(api_key: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata that carries ``api_key`` (empty without one)."""
    if not api_key:
        return ()
    api_key = api_key.strip()
    if not api_key.isascii() or not api_key.isprintable() or " " in api_key or len(api_key) > MAX_KEY_CHARS:
        raise InvalidArgument(f"the API key must be printable ASCII without spaces, at most {MAX_KEY_CHARS} "
                              "characters", field="api_key")
    return ((AUTH_KEY, f"Bearer {api_key}"),)


def parse_keys(text: str) -> list[str]:
    """Keys of a key file: one a line, blank lines and ``#`` comments ignored."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def read_api_key(path: str, flag: str) -> str:
    """The first key of a key file (a gateway's own credential for its downstream services)."""
    keys = parse_keys(read_file(path, flag).decode("utf-8", "replace"))
    if not keys:
        raise InvalidArgument(f"{flag} {path}: the file holds no key", field=flag)
    return keys[0]
