"""Blocking work off the event loop: one call in a worker thread, or a long job streaming its progress.

The loop keeps streaming progress, answering health checks and accepting (or refusing) new calls while a model
call or a render runs. Both helpers run the work with a copy of the calling task's context, so its log lines carry
the call's request id.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

Emit = Callable[[Any], None]
Stopped = Callable[[], bool]


@dataclass(frozen=True)
class Finished:
    """The last item :func:`stream_in_thread` yields: the job's return value."""

    value: Any


def in_thread(pool: Executor | None, fn, *args, **kwargs) -> asyncio.Future:
    """Run ``fn`` in ``pool`` (None: the loop's default) with this call's context."""
    ctx = contextvars.copy_context()
    return asyncio.get_running_loop().run_in_executor(pool, functools.partial(ctx.run, fn, *args, **kwargs))


async def stream_in_thread(pool: Executor, work: Callable[[Emit, Stopped], Any]) -> AsyncIterator[Any]:
    """Run ``work(emit, stopped)`` in ``pool``; yield each ``emit(event)`` as it happens, then ``Finished(result)``.

    The work calls ``emit`` after each step and polls ``stopped()`` between steps. When the consumer stops early
    (client cancel, deadline, CancelOperation, shutdown), ``stopped()`` turns true and the job ends at its next
    step; a job still waiting for a worker is dropped. Either way this returns only once the thread has let go,
    so whatever the job held (an admission slot, a folder) is released after it.
    """
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    done = object()

    def emit(event) -> None:  # worker thread
        loop.call_soon_threadsafe(events.put_nowait, event)

    future = pool.submit(contextvars.copy_context().run, work, emit, stop.is_set)
    job = asyncio.wrap_future(future)
    job.add_done_callback(lambda _: events.put_nowait(done))
    try:
        while (event := await events.get()) is not done:
            yield event
        yield Finished(job.result())
    finally:
        if not job.done():
            stop.set()
            if not future.cancel():
                await asyncio.wait([job])
