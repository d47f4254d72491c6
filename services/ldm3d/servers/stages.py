"""The pipeline's three stages as async calls, shared by the stage servicers and the gateway's in-process path.

Model work runs in worker threads so the event loop keeps streaming progress, answering health checks and
accepting (or refusing) new calls. Sampling goes through :class:`~.admission.Admission` and then joins the
process's one :class:`~ldm3d.pipeline.batching.StepBatcher`, where all running requests share each step's U-Net
call; when the awaiting call ends early (client cancel, deadline, shutdown) its request is dropped before its next
step without disturbing the others, and its admission slot is held until it has been.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from ..pipeline import EncodedText, GenerateParams
from ..pipeline.batching import StepBatcher
from .. import codec
from . import metrics, tensors
from .admission import Admission
from .models import ServedModel


@dataclass(frozen=True)
class Step:
    step: int
    total: int
    elapsed_s: float


@dataclass(frozen=True)
class Sampled:
    latents: np.ndarray  # float32 [num_images, L, h, w]
    queued_s: float
    sampling_s: float


class Stages:
    def __init__(self, admission: Admission, max_batch: int = 8):
        self.admission = admission
        # one loop for every running request: they share the U-Net calls instead of fighting for the cores
        self.batcher = StepBatcher(max_batch, on_batch=_observe_batch)

    async def encode_text(self, served: ServedModel, prompts: list[str]) -> EncodedText:
        enc = await _in_thread(None, served.require_pipeline().text.encode, prompts)
        metrics.TEXT_CACHE_HITS.labels(served.name).set(served.require_pipeline().text.cache_hits)
        return enc

    async def decode(self, served: ServedModel, latents: np.ndarray) -> np.ndarray:
        return await _in_thread(None, served.require_pipeline().autoencoder.decode, latents)

    async def decode_images(self, served: ServedModel, latents: np.ndarray, raw: bool):
        """Decode, then post-process like the pipeline: ``(decoded, [RGBD message per image])``."""
        decoded = await self.decode(served, latents)

        def to_messages():
            _rgb_float, rgb_u8, depth = codec.decode_rgbd(decoded)
            return [tensors.rgbd(r, d, raw) for r, d in zip(rgb_u8, depth)]

        return decoded, await _in_thread(None, to_messages)

    async def encode_rgbd(self, served: ServedModel, rgb: np.ndarray, depth: np.ndarray) -> np.ndarray:
        return await _in_thread(None, served.require_pipeline().autoencoder.encode, rgb, depth)

    async def sample(self, served: ServedModel, cond: np.ndarray, uncond: np.ndarray | None, params: GenerateParams,
                     init_latents: np.ndarray | None = None) -> AsyncIterator[Step | Sampled]:
        """Yield a :class:`Step` after every denoising step, then one :class:`Sampled`."""
        sampler = served.require_pipeline().sampler
        t_arrive = time.perf_counter()
        async with self.admission.slot():
            t_start = time.perf_counter()
            loop = asyncio.get_running_loop()
            events: asyncio.Queue[Step | None] = asyncio.Queue()
            stop = threading.Event()
            last = [t_start]

            def on_step(step: int, total: int, elapsed: float) -> None:  # worker thread
                now = time.perf_counter()
                metrics.STEPS.inc()
                metrics.STEP_SECONDS.observe(now - last[0])
                last[0] = now
                loop.call_soon_threadsafe(events.put_nowait, Step(step, total, elapsed))

            submitted = await _in_thread(None, self.batcher.submit, sampler, cond, uncond, params, on_step=on_step,
                                         should_stop=stop.is_set, init_latents=init_latents)
            job = asyncio.wrap_future(submitted)
            job.add_done_callback(lambda _: events.put_nowait(None))
            try:
                while (event := await events.get()) is not None:
                    yield event
                latents = job.result()
            finally:
                if not job.done():
                    stop.set()  # polled before every step: the request leaves the batch at its next step
                    await asyncio.wait([job])
                if job.done() and not job.cancelled():
                    job.exception()  # a dropped request's Cancelled is expected: not "never retrieved"
        yield Sampled(latents, t_start - t_arrive, time.perf_counter() - t_start)

    def close(self) -> None:
        self.batcher.close()


def _observe_batch(requests: int, rows: int, seconds: float) -> None:
    metrics.BATCH_REQUESTS.observe(requests)
    metrics.UNET_CALL_SECONDS.observe(seconds)


def _in_thread(pool, fn, *args, **kwargs) -> asyncio.Future:
    """Run ``fn`` in ``pool`` (None: the loop's default) with this call's context (its request id for logs)."""
    ctx = contextvars.copy_context()
    return asyncio.get_running_loop().run_in_executor(pool, functools.partial(ctx.run, fn, *args, **kwargs))
