"""Durable jobs over real sockets: a real ``redis-server`` (one per test session, on a free port; each test gets a
database of its own), front servers and ``ldm3d worker`` processes. The server helpers come from tests/servers."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "servers"))  # servers_helpers
sys.path.insert(0, str(Path(__file__).resolve().parent))  # jobs_helpers (never `import conftest`: tests/servers has one)

from jobs_helpers import Worker  # noqa: E402

from ldm3d.jobs.redis_server import RedisServer  # noqa: E402

_DBS = itertools.count()


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
