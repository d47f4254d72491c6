"""Fixtures for the gRPC platform (helpers in ``servers_helpers.py``). The tiny checkpoint comes from
``tests/conftest.py`` (``tiny_model``), built once per session."""

from __future__ import annotations

import grpc
import pytest
from servers_helpers import ThreadServer


@pytest.fixture(scope="session")
def platform(tiny_model):
    """Every service in one process on one port (``ldm3d serve all``), small admission limits for the tests."""
    s = ThreadServer(service="all", checkpoint=str(tiny_model), max_running=1, max_queued=2)
    yield s
    s.stop()


@pytest.fixture
def channel(platform):
    with grpc.insecure_channel(platform.target) as ch:
        yield ch
