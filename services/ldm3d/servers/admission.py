"""Admission control for sampling: a bounded queue in front of a fixed number of running jobs.

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
