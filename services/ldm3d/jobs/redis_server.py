"""A real ``redis-server`` (Debian's) on loopback, for tests and benchmarks: a free port, its own folder, durable.

    with RedisServer(tmp_path) as r:        # r.url == "redis://127.0.0.1:<port>/0"
        ...
        r.stop(); r.start()                 # an outage: same port, same data (append-only file)

``scripts/redis.sh`` does the same from a shell for development.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from ..errors import FailedPrecondition


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, folder, port: int | None = None, password: str | None = None):
        self.exe = shutil.which("redis-server")
        if self.exe is None:
            raise FailedPrecondition("redis-server is not installed: apt-get install redis-server (make test does)")
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.password = password  # --requirepass: clients authenticate (the URL carries it: redis://:PW@HOST:PORT/DB)
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self, timeout_s: float = 10.0) -> None:
        self.log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [self.exe, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir), "--appendonly", "yes",
             "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
             *(["--requirepass", self.password] if self.password else [])],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}); see {self.dir / 'redis.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # answering (NOAUTH: it wants the password)
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{self.port}; see {self.dir / 'redis.log'}")

    def stop(self) -> None:
        """SIGTERM: redis-server flushes its append-only file and exits (a restart sees the same data)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
