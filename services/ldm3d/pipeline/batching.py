"""Step-level continuous batching: concurrent requests share every U-Net call, each at its own timestep.

    batcher = StepBatcher(max_batch=8)
    fut = batcher.submit(pipe.sampler, cond, uncond, params, on_step=..., should_stop=...)   # any thread
    latents = fut.result()                                                                   # as Sampler.sample
    batcher.close()

One worker thread runs the loop. At every turn it takes one *group* — running requests with the same sampler
(model and version) and latent shape — and sends the U-Net rows of up to ``max_batch`` of them as one call (split
at the model's ``max_batch_size`` rows, as for a request alone). Each row carries its own request's timestep and
text embedding; afterwards every request applies its own guidance scale and its own scheduler's ``step()`` (one
scheduler instance per request: diffusers' ``step()`` takes one timestep). Requests with and without guidance mix
(one row or two per image). New requests join at the next turn; finished ones leave at once; a request whose
``should_stop`` says so (client cancel, deadline) is dropped before its next step with :class:`Cancelled`, the
others carry on. Groups take turns round-robin, and inside a group larger than ``max_batch`` the requests that
just stepped go to the back, so every running request advances at the same rate.

Why one thread: the U-Net already uses every core (ONNX Runtime or torch intra-op threads); two loops on a small
CPU would only make their thread pools fight. A request's result equals the same request run alone: it sees the
same inputs, and row ``i`` of a batched call equals the same row computed alone wherever the runtime's kernels do
not depend on the batch size (ONNX Runtime on CPU: bit-exact in our tests; see docs/runtime.md).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from ..errors import Cancelled, Unavailable
from ..models.seamless import seamless_padding
from .params import GenerateParams
from .sampler import Denoising, OnStep, Sampler

log = logging.getLogger(__name__)


class _Job:
    __slots__ = ("sampler", "state", "future", "on_step", "should_stop", "start")

    def __init__(self, sampler: Sampler, state: Denoising, on_step: OnStep | None,
                 should_stop: Callable[[], bool] | None):
        self.sampler, self.state, self.on_step, self.should_stop = sampler, state, on_step, should_stop
        self.future: Future = Future()
        self.start = time.perf_counter()

    @property
    def key(self) -> tuple:
        # one U-Net call needs one model (the sampler holds the runtime and the U-Net version), one latent shape and
        # one padding mode (the torch runtime pads circularly per call for seamless panoramas)
        return id(self.sampler), self.sampler.unet_version, self.state.latent_shape, self.state.params.seamless


class StepBatcher:
    """Runs the denoising loops of all submitted requests, batching their U-Net calls step by step.

    Args:
        max_batch: most requests in one U-Net call (their rows are also capped by the model's ``max_batch_size``,
            by splitting the call). 1 runs one request's step at a time, still interleaving requests.
        on_batch: called after every U-Net call with (requests, rows, seconds) — for metrics.
    """

    def __init__(self, max_batch: int = 8, on_batch: Callable[[int, int, float], None] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch}: use 1 or more")
        self.max_batch, self.on_batch = max_batch, on_batch
        self._cv = threading.Condition()
        self._arrived: list[_Job] = []
        self._groups: OrderedDict[tuple, list[_Job]] = OrderedDict()
        self._closed = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ public
    def submit(self, sampler: Sampler, cond: np.ndarray, uncond: np.ndarray | None, params: GenerateParams, *,
               on_step: OnStep | None = None, should_stop: Callable[[], bool] | None = None,
               init_latents: np.ndarray | None = None) -> Future:
        """Start one request (``params`` resolved); the future's result is :meth:`Sampler.sample`'s. ``on_step``
        and ``should_stop`` are called from the batcher's thread."""
        job = _Job(sampler, sampler.start(cond, uncond, params, init_latents), on_step, should_stop)
        with self._cv:
            if self._closed:
                raise Unavailable("the sampler is shutting down: retry on another replica")
            self._arrived.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="step-batcher", daemon=True)
                self._thread.start()
            self._cv.notify()
        return job.future

    def sample(self, sampler: Sampler, cond: np.ndarray, uncond: np.ndarray | None, params: GenerateParams, *,
               on_step: OnStep | None = None, should_stop: Callable[[], bool] | None = None,
               init_latents: np.ndarray | None = None) -> np.ndarray:
        """:meth:`Sampler.sample`'s contract, batched: blocks the calling thread until this request is done (or
        raises :class:`Cancelled` once ``should_stop`` said so)."""
        return self.submit(sampler, cond, uncond, params, on_step=on_step, should_stop=should_stop,
                           init_latents=init_latents).result()

    @property
    def running(self) -> int:
        with self._cv:
            return len(self._arrived) + sum(len(g) for g in self._groups.values())

    def close(self) -> None:
        """Stop the loop; requests still running fail with ``Cancelled``."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(30)

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not (self._arrived or self._groups or self._closed):
                    self._cv.wait()
                if self._closed:
                    left = self._arrived + [j for g in self._groups.values() for j in g]
                    self._arrived.clear()
                    self._groups.clear()
                    break
                for job in self._arrived:  # join at this turn
                    self._groups.setdefault(job.key, []).append(job)
                self._arrived.clear()
                key, group = next(iter(self._groups.items()))
                self._groups.move_to_end(key)  # the next turn goes to the next group
                batch = group[: self.max_batch]
                del group[: len(batch)]
                group.extend(batch)  # beyond max_batch, the ones that stepped wait behind the others
            try:
                self._step(batch)
            except BaseException as exc:  # noqa: BLE001 - the loop must survive; the batch's requests get it
                log.exception("step batcher: a U-Net batch failed")
                for job in batch:
                    self._finish(job, exc=exc)
            with self._cv:
                for job in batch:
                    if job.future.done() and job in group:
                        group.remove(job)
                if not group and self._groups.get(key) is group:
                    del self._groups[key]
        for job in left:
            self._finish(job, exc=Cancelled("the sampler shut down before this generation finished"))

    def _step(self, batch: list[_Job]) -> None:
        live = []
        for job in batch:
            s = job.state
            if job.should_stop is not None and job.should_stop():
                self._finish(job, exc=s.cancelled())
            elif s.done:  # zero steps (image-to-image at tiny strength)
                self._finish(job)
            else:
                live.append(job)
        if not live:
            return
        samples, timesteps = [], []
        for job in live:
            x, t = job.state.model_input()
            samples.append(x)
            timesteps.append(np.full((len(x),), t, dtype=np.float32))
        t0 = time.perf_counter()
        seamless = live[0].state.params.seamless  # resolved: as the request asked (None only if never resolved)
        with seamless_padding(seamless) if seamless is not None else contextlib.nullcontext():
            out = live[0].sampler.unet(np.concatenate(samples), np.concatenate(timesteps),
                                       np.concatenate([j.state.embeds for j in live]))
        if self.on_batch is not None:
            self.on_batch(len(live), len(out), time.perf_counter() - t0)
        row = 0
        for job, x in zip(live, samples):
            s = job.state
            try:
                s.advance(out[row : row + len(x)])
            except Exception as exc:  # noqa: BLE001 - one request's scheduler failing fails only that request
                self._finish(job, exc=exc)
                continue
            finally:
                row += len(x)
            if job.on_step is not None and (done := s.progress()) is not None:
                try:
                    job.on_step(*done, time.perf_counter() - job.start)
                except Exception:  # noqa: BLE001 - a progress callback never takes down the batch
                    log.exception("step batcher: on_step failed")
            if s.done:
                self._finish(job)

    @staticmethod
    def _finish(job: _Job, exc: BaseException | None = None) -> None:
        if job.future.done():
            return
        if exc is None:
            job.future.set_result(job.state.result())
        else:
            job.future.set_exception(exc)
