"""The front door's locks on the server side: TLS (optionally mutual) and API keys (the client side, shared with the
gateway's downstream channels, is :mod:`ldm3d.wire.auth`).

    ldm3d serve all --tls-cert server.pem --tls-key server.key [--tls-client-ca ca.pem] --api-keys keys.txt
    StudioClient("host:50051", tls_ca="ca.pem", api_key="...")

API keys: a file with one key a line (blank lines and ``#`` comments ignored), re-read when it changes (a rotated
Kubernetes Secret). Clients send ``authorization: Bearer KEY``. Only SHA-256 digests of the keys are kept in
memory and compared in constant time; a key is never logged (a refused call logs the method and the peer).
``grpc.health.v1`` stays open so probes work without a key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time

import grpc

from ..errors import InvalidArgument
from ..wire.auth import AUTH_KEY, MAX_KEY_CHARS, parse_keys, read_file

log = logging.getLogger(__name__)

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)  # callable without a key (Kubernetes probes)
_RELOAD_CHECK_S = 2.0


def server_credentials(cert: str, key: str, client_ca: str | None = None) -> grpc.ServerCredentials:
    """TLS for a server; with ``client_ca`` every client must present a certificate signed by it (mutual TLS)."""
    chain, private = read_file(cert, "--tls-cert"), read_file(key, "--tls-key")
    for data, flag, marker in ((chain, "--tls-cert", b"CERTIFICATE"), (private, "--tls-key", b"PRIVATE KEY")):
        if b"-----BEGIN" not in data or marker not in data:
            raise InvalidArgument(f"{flag}: not a PEM file with a {marker.decode().lower()}", field=flag)
    ca = read_file(client_ca, "--tls-client-ca") if client_ca else None
    return grpc.ssl_server_credentials([(private, chain)], root_certificates=ca, require_client_auth=ca is not None)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class ApiKeys:
    """The keys a server accepts, from a file it re-reads (at most every 2 s) when its modification time changes."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._digests: tuple[bytes, ...] = ()
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self._load(force=True)

    def _load(self, force: bool = False) -> None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if force:
                raise InvalidArgument(f"--api-keys {self.path}: cannot read it ({exc.strerror})",
                                      field="--api-keys") from None
            log.error("--api-keys: cannot read the key file (%s): keeping the %d keys loaded before",
                      exc.strerror, len(self._digests))
            return
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._stamp:
            return
        keys = parse_keys(read_file(self.path, "--api-keys").decode("utf-8", "replace"))
        if not keys and force:
            raise InvalidArgument(f"--api-keys {self.path}: the file holds no key (one a line)", field="--api-keys")
        if not keys:
            log.error("--api-keys: the key file is now empty: keeping the %d keys loaded before", len(self._digests))
            return
        self._digests, self._stamp = tuple(_digest(k) for k in keys), stamp
        log.info("API keys: %d loaded", len(keys))  # how many, never which

    def allows(self, metadata) -> bool:
        now = time.monotonic()
        if now - self._checked > _RELOAD_CHECK_S:
            with self._lock:
                if now - self._checked > _RELOAD_CHECK_S:
                    self._checked = now
                    self._load()
        value = ""
        for k, v in metadata or ():
            if k == AUTH_KEY:
                value = v if isinstance(v, str) else ""
                break
        scheme, _, key = value.partition(" ")
        if scheme.lower() != "bearer" or not key or len(key) > MAX_KEY_CHARS:
            return False
        d = _digest(key.strip())
        ok = False
        for known in self._digests:  # every key compared, in constant time: no timing hint of a near miss
            ok |= hmac.compare_digest(d, known)
        return ok
