"""Admission control: a bounded queue in front of a fixed number of running jobs (sampling, render jobs).

At most ``max_running`` jobs run at once (each holds a full denoising loop's memory, or every core); at most
``max_queued`` more wait. Beyond that a job is refused at once with ``ResourceExhausted`` and a retry hint (the
recent mean job time times the jobs ahead of it), so load never turns into an unbounded pile of requests in memory.

Two steps, because a long-running operation is refused by its submit call but waits in its own task:
:meth:`Admission.admit` counts the job as waiting (or refuses it) at once, and the returned :class:`Ticket`'s
``run()`` waits for a running slot and releases it however the job ends. :meth:`Admission.slot` does both at once.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ..errors import ResourceExhausted


@dataclass(frozen=True)
class AdmissionMetrics:
    """Prometheus instruments one admission reports to (the sampler's; none for the renderer)."""

    queue_depth: object  # Gauge
    running: object  # Gauge
    rejected: object  # Counter


class Admission:
    def __init__(self, max_running: int, max_queued: int, *, what: str = "the sampler",
                 metrics: AdmissionMetrics | None = None):
        self.max_running, self.max_queued = max_running, max_queued
        self.what, self.metrics = what, metrics
        self._slots: asyncio.Semaphore | None = None  # created on first use, inside the serving event loop
        self.waiting = 0
        self.running = 0
        self._mean_s = 1.0  # exponential moving average of job durations, for the retry hint

    def retry_after_s(self) -> float:
        ahead = self.waiting + self.running
        return max(0.1, round(self._mean_s * (ahead / self.max_running), 2))

    def check(self) -> None:
        """Refuse now if a new job could not even wait (``ResourceExhausted`` with a retry hint)."""
        if self.running + self.waiting >= self.max_running + self.max_queued:
            if self.metrics is not None:
                self.metrics.rejected.inc()
            raise ResourceExhausted(
                f"{self.what} is busy ({self.running} running, {self.waiting} queued, queue limit "
                f"{self.max_queued}): retry in {self.retry_after_s():g} s", retry_after_s=self.retry_after_s())

    def admit(self) -> Ticket:
        """Count one job as waiting, or refuse it; the ticket's ``run()`` then waits for a running slot."""
        self.check()
        self._set_waiting(self.waiting + 1)
        return Ticket(self)

    @asynccontextmanager
    async def slot(self):
        """Wait for a running slot (or fail fast when the queue is full); release it however the job ends."""
        async with self.admit().run():
            yield

    def _set_waiting(self, n: int) -> None:
        self.waiting = n
        if self.metrics is not None:
            self.metrics.queue_depth.set(n)

    def _set_running(self, n: int) -> None:
        self.running = n
        if self.metrics is not None:
            self.metrics.running.set(n)


class Ticket:
    """One admitted job: waiting until ``run()`` gets a slot; ``release()`` gives up a ticket that never ran."""

    def __init__(self, admission: Admission):
        self._admission, self._waiting = admission, True

    def release(self) -> None:
        if self._waiting:
            self._waiting = False
            self._admission._set_waiting(self._admission.waiting - 1)

    @asynccontextmanager
    async def run(self):
        a = self._admission
        if a._slots is None:
            a._slots = asyncio.Semaphore(a.max_running)
        try:
            await a._slots.acquire()
        finally:
            self.release()
        a._set_running(a.running + 1)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            a._set_running(a.running - 1)
            a._slots.release()
            a._mean_s = 0.8 * a._mean_s + 0.2 * (time.perf_counter() - t0)
