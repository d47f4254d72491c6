"""Admission control: for sampling, a bounded queue in front of a fixed number of running jobs; for every other
heavy call, a :class:`Gate` (a bound on calls accepted and not finished, refused at the door).

At most ``max_running`` jobs sample at once (each holds a full denoising loop's memory); at most ``max_queued`` more
wait. Beyond that a job is refused at once with ``ResourceExhausted`` and a retry hint (the recent mean job time
times the jobs ahead of it), so load never turns into an unbounded pile of requests in memory.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

from ..errors import ResourceExhausted
from . import metrics


class Admission:
    def __init__(self, max_running: int, max_queued: int):
        self.max_running, self.max_queued = max_running, max_queued
        self._slots: asyncio.Semaphore | None = None  # created on first use, inside the serving event loop
        self.waiting = 0
        self.running = 0
        self._mean_s = 1.0  # exponential moving average of job durations, for the retry hint

    def retry_after_s(self) -> float:
        ahead = self.waiting + self.running
        return max(0.1, round(self._mean_s * (ahead / self.max_running), 2))

    @asynccontextmanager
    async def slot(self):
        """Wait for a running slot (or fail fast when the queue is full); release it however the job ends."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_running)
        if self.running >= self.max_running and self.waiting >= self.max_queued:
            metrics.REJECTED.inc()
            raise ResourceExhausted(
                f"the sampler is busy ({self.running} running, {self.waiting} queued, queue limit {self.max_queued}): "
                f"retry in {self.retry_after_s():g} s", retry_after_s=self.retry_after_s())
        self.waiting += 1
        metrics.QUEUE_DEPTH.set(self.waiting)
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
            metrics.QUEUE_DEPTH.set(self.waiting)
        self.running += 1
        metrics.RUNNING.set(self.running)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.running -= 1
            metrics.RUNNING.set(self.running)
            self._slots.release()
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - t0)


class Gate:
    """A bound on work accepted and not yet finished, checked at the door without waiting: ``take`` refuses at once
    (``ResourceExhausted`` with a retry hint) when ``limit`` tickets are out, before any work — decoding an image,
    encoding text — is spent on a call that would be refused later anyway. A ticket is returned by ``release``
    (idempotent), however the work ends."""

    def __init__(self, limit: int, what: str, flags: str):
        self.limit, self.what, self.flags = limit, what, flags
        self.held = 0
        self._mean_s = 1.0

    def take(self, n: int = 1) -> Ticket:
        if self.held + n > self.limit:
            metrics.REJECTED.inc()
            retry = max(0.1, round(self._mean_s * self.held / self.limit, 2))
            raise ResourceExhausted(f"busy: {self.held} {self.what} accepted and not finished, the limit is "
                                    f"{self.limit} ({self.flags}): retry in {retry:g} s", retry_after_s=retry)
        self.held += n
        return Ticket(self, n)

    def _done(self, n: int, seconds: float) -> None:
        self.held -= n
        self._mean_s = 0.8 * self._mean_s + 0.2 * seconds


class Ticket:
    def __init__(self, gate: Gate, n: int):
        self.gate, self.n, self.t0, self.released = gate, n, time.perf_counter(), False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate._done(self.n, time.perf_counter() - self.t0)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
