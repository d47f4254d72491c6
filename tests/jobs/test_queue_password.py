"""A Redis that requires a password (`--requirepass`, as components/queue runs it on Kubernetes): the queue URL
carries it (redis://:PASSWORD@HOST:PORT/DB), fronts and workers authenticate with it and run a job, a wrong or
missing password is UNAVAILABLE naming the queue, and the password never reaches a log, a printed line or a
client's error message. Real redis-server, real worker process, real gRPC over sockets."""

from __future__ import annotations

import logging
import secrets

import numpy as np
import pytest
from servers_helpers import ThreadServer

from ldm3d.client import StudioClient
from ldm3d.errors import Unavailable
from ldm3d.jobs.redis_server import RedisServer
from ldm3d.jobs.store import redact


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cr3t@ldm3d-redis:6379/0", "redis://:***@ldm3d-redis:6379/0"),
    ("rediss://default:s3cr3t@redis.example.com:6380/2", "rediss://default:***@redis.example.com:6380/2"),
    ("redis://ldm3d-redis:6379/0?password=s3cr3t&socket_timeout=3",
     "redis://ldm3d-redis:6379/0?password=***&socket_timeout=3"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
])
def test_redact_hides_only_the_password(url, shown):
    assert redact(url) == shown and redact(shown) == shown


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis-auth"), password=secrets.token_hex(16))
    yield server
    server.stop()


def _pano(w=64, h=32):
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], axis=-1).astype(np.uint8)
    return rgb, np.full((h, w), 40000, np.uint16)


def test_password_in_the_url_runs_jobs_and_never_shows(locked_redis, workers, caplog):
    pw = locked_redis.password
    url = locked_redis.url
    assert f":{pw}@" in url
    caplog.set_level(logging.DEBUG)
    worker = workers(url, "--kinds", "render")
    front = ThreadServer(service="renderer", queue=url)
    try:
        with StudioClient(front.target, timeout=30) as c:
            name = c.submit_render(*_pano(), path="orbit", seconds=1, fps=12, size=(64, 36))
            result = c.wait_render(name, poll_s=0.1, timeout=60)  # raises the job's error if it failed
            assert result.artifacts and c.get_render(name).done
    finally:
        front.stop()
        worker.stop()
    assert "queued " in caplog.text and "redis://:***@127.0.0.1" in caplog.text  # it logs the URL, redacted
    assert pw not in caplog.text and pw not in worker.text()

    # wrong or no password: UNAVAILABLE naming the queue (redacted), the front stays up
    for bad in (url.replace(pw, "not-the-password"), f"redis://127.0.0.1:{locked_redis.port}/0"):
        front = ThreadServer(service="renderer", queue=bad)
        try:
            with StudioClient(front.target, timeout=30) as c, pytest.raises(Unavailable) as err:
                c.submit_render(*_pano(), path="orbit", seconds=1, fps=12, size=(64, 36))
            msg = str(err.value)
            assert "password" in msg and f"127.0.0.1:{locked_redis.port}" in msg, msg
            assert pw not in msg and "not-the-password" not in msg, msg
        finally:
            front.stop()
