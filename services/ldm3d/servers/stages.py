"""The pipeline's three stages as async calls, shared by the stage servicers and the gateway's in-process path.

Model work runs in worker threads (:mod:`.jobs`) so the event loop keeps streaming progress, answering health
checks and accepting (or refusing) new calls. Sampling goes through :class:`~.admission.Admission` and then joins
the process's one :class:`~ldm3d.pipeline.batching.StepBatcher`, where all running requests share each step's U-Net
call; when the awaiting call ends early (client cancel, deadline, shutdown) its request is dropped before its next
step without disturbing the others, and its admission slot is held until it has been.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .. import codec
from ..pipeline import EncodedText, GenerateParams
from ..pipeline.batching import StepBatcher
from ..wire import tensors
from . import metrics
from .admission import Admission
from .jobs import Finished, in_thread, stream_in_thread
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
        # one loop runs every running request's denoising, their U-Net calls batched step by step (instead of one
        # thread per job, whose thread pools fought for the cores); each admitted request has a thread here that
        # only waits for its result, so the one streaming helper (.jobs) serves sampling as it serves rendering
        self.batcher = StepBatcher(max_batch, on_batch=_observe_batch)
        self._sampling = ThreadPoolExecutor(max_workers=admission.max_running, thread_name_prefix="sampler")

    async def encode_text(self, served: ServedModel, prompts: list[str]) -> EncodedText:
        enc = await in_thread(None, served.require_pipeline().text.encode, prompts)
        metrics.TEXT_CACHE_HITS.labels(served.name).set(served.require_pipeline().text.cache_hits)
        return enc

    async def decode(self, served: ServedModel, latents: np.ndarray) -> np.ndarray:
        return await in_thread(None, served.require_pipeline().autoencoder.decode, latents)

    async def decode_images(self, served: ServedModel, latents: np.ndarray, raw: bool):
        """Decode, then post-process like the pipeline: ``(decoded, [RGBD message per image])``."""
        decoded = await self.decode(served, latents)

        def to_messages():
            _rgb_float, rgb_u8, depth = codec.decode_rgbd(decoded)
            return [tensors.rgbd(r, d, raw) for r, d in zip(rgb_u8, depth)]

        return decoded, await in_thread(None, to_messages)

    async def encode_rgbd(self, served: ServedModel, rgb: np.ndarray, depth: np.ndarray) -> np.ndarray:
        return await in_thread(None, served.require_pipeline().autoencoder.encode, rgb, depth)

    async def sample(self, served: ServedModel, cond: np.ndarray, uncond: np.ndarray | None, params: GenerateParams,
                     init_latents: np.ndarray | None = None) -> AsyncIterator[Step | Sampled]:
        """Yield a :class:`Step` after every denoising step, then one :class:`Sampled`."""
        sampler = served.require_pipeline().sampler
        t_arrive = time.perf_counter()
        async with self.admission.slot():
            t_start = time.perf_counter()
            last = [t_start]

            def work(emit, stopped):  # worker thread
                def on_step(step: int, total: int, elapsed: float) -> None:
                    now = time.perf_counter()
                    metrics.STEPS.inc()
                    metrics.STEP_SECONDS.observe(now - last[0])
                    last[0] = now
                    emit(Step(step, total, elapsed))

                # should_stop is polled before every step: the request leaves the batch at its next step, the
                # others carry on
                return self.batcher.sample(sampler, cond, uncond, params, on_step=on_step, should_stop=stopped,
                                           init_latents=init_latents)

            # aclosing: however this generator ends, the thread has stopped before the slot is released
            async with aclosing(stream_in_thread(self._sampling, work)) as events:
                async for event in events:
                    if isinstance(event, Finished):
                        latents = event.value
                    else:
                        yield event
        yield Sampled(latents, t_start - t_arrive, time.perf_counter() - t_start)

    def close(self) -> None:
        self.batcher.close()  # requests still in it fail with Cancelled, which ends their waiting threads
        self._sampling.shutdown(wait=False, cancel_futures=True)


def _observe_batch(requests: int, rows: int, seconds: float) -> None:
    metrics.BATCH_REQUESTS.observe(requests)
    metrics.UNET_CALL_SECONDS.observe(seconds)

