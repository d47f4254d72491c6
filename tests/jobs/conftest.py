"""Durable jobs over real sockets: a real ``redis-server`` (one per test session, on a free port; each test gets a
database of its own), front servers and ``ldm3d worker`` processes. The server helpers come from tests/servers."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "servers"))

from ldm3d.jobs.redis_server import RedisServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
_DBS = itertools.count()
HEARTBEAT_S = "3"  # tests fail over in ~4 s; the default (15 s) is what bench/queue.py measures


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def queue_url(redis_server):
    """A fresh Redis database for this test (16 per server: tests never see each other's queues)."""
    import redis

    db = next(_DBS) % 15 + 1
    if redis_server.proc is None:  # a test that stopped it failed before starting it again
        redis_server.start()
    url = f"redis://127.0.0.1:{redis_server.port}/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


class Worker:
    """``ldm3d worker`` as a child process; ready once it printed its ``ready`` line."""

    def __init__(self, url: str, *args: str):
        cmd = [sys.executable, "-m", "ldm3d", "worker", "--queue", url, "--heartbeat-timeout", HEARTBEAT_S, *args]
        self.log = tempfile.NamedTemporaryFile("w+", prefix="ldm3d-worker-", suffix=".log")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=ROOT,
                                     env=os.environ.copy())
        line = self.proc.stdout.readline()
        if "ready" not in line:
            self.proc.kill()
            raise RuntimeError(f"`{' '.join(cmd)}` did not start: {line}{self.text()[-3000:]}")

    def text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.stdout.close()


@pytest.fixture
def workers():
    """Start workers with ``workers(url, *args)``; all are stopped at the end of the test."""
    started: list[Worker] = []

    def start(url: str, *args: str) -> Worker:
        started.append(Worker(url, *args))
        return started[-1]

    yield start
    for w in started:  # all at once: each takes a second or two to stop its Dramatiq threads
        if w.proc.poll() is None:
            w.proc.terminate()
    for w in started:
        w.stop()


def wait_for(predicate, timeout: float, what: str, poll_s: float = 0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
