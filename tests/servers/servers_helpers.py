"""Real servers on loopback ports for the platform's tests: in a thread of this process, or as child processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ldm3d.servers.app import Server
from ldm3d.servers.config import ServeConfig

ROOT = Path(__file__).resolve().parents[2]


class ThreadServer:
    """A :class:`Server` on its own event loop in a daemon thread (the test talks to it over a real socket)."""

    def __init__(self, **cfg):
        self.cfg = ServeConfig(**{"host": "127.0.0.1", "port": 0, "metrics_port": None, **cfg})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = Server(self.cfg)
        try:
            self.port = self.run(self.server.start(), timeout=120)
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            raise
        self.target = f"127.0.0.1:{self.port}"

    def run(self, coro, timeout=60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, grace_s: float = 5.0):
        self.run(self.server.stop(grace_s))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class ProcessServer:
    """``ldm3d serve SERVICE --port 0 ...`` as a child process; the port is read from its first stdout line."""

    def __init__(self, service: str, *args: str, env: dict | None = None):
        cmd = [sys.executable, "-m", "ldm3d", "serve", service, "--host", "127.0.0.1", "--port", "0",
               "--metrics-port", "off", "--grace", "5", *args]
        # logs go to a file: a pipe nobody reads would block the server once its buffer is full
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"ldm3d-{service}-", suffix=".log")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=ROOT,
                                     env={**os.environ, **(env or {})})  # same threads as here (bit equality)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            self.log.seek(0)
            raise RuntimeError(f"`{' '.join(cmd)}` did not start: {line}{self.log.read()[-3000:]}")
        self.port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        self.target = f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 20) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.stdout.close()
            self.log.close()


def healthy(target: str, service: str = "") -> bool:
    with grpc.insecure_channel(target) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        return resp.status == health_pb2.HealthCheckResponse.SERVING


def png_bomb(width: int, height: int, bits: int = 16, colour: int = 0) -> bytes:
    """A valid PNG of zeros that is tiny compressed and huge decoded (8192² 16-bit: ~130 KB → 128 MiB), built row by
    row with zlib so that making it costs no memory."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    channels = {0: 1, 2: 3, 6: 4}[colour]
    row = b"\0" * (1 + width * channels * bits // 8)  # filter byte + samples
    z = zlib.compressobj(6)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
