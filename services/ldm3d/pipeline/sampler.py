"""Stage 2 — diffusion sampling: seeded Gaussian latents (or a noised init image) → N scheduler steps → latents.

Each step is one U-Net call on ``[uncond, cond]`` and ``eps = eps_u + s · (eps_c − eps_u)``, in exactly the order
and dtypes of diffusers' ``StableDiffusionLDM3DPipeline.__call__``, so the same seed gives the same image.

One request's loop state (its scheduler instance, generator, latents, step index) is a :class:`Denoising`, so that
the same code runs a request alone (:meth:`Sampler.sample`) or beside others in one batched U-Net call per step
(:class:`~ldm3d.pipeline.batching.StepBatcher`): the U-Net takes one timestep per sample, a scheduler's ``step()``
takes one timestep, so every request keeps its own scheduler and only the U-Net call is shared.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable

import numpy as np

from ..errors import Cancelled
from ..runtime import ModelRuntime
from .params import GenerateParams
from .schedulers import create_scheduler
from .spec import PipelineSpec

OnStep = Callable[[int, int, float], None]  # (step done, total steps, seconds since sampling began)


class Denoising:
    """One request's denoising loop, one step at a time: :meth:`model_input` → (U-Net) → :meth:`advance`.

    Steps 3–7 of diffusers' ``__call__`` with the U-Net call taken out; ``params`` must be resolved.
    """

    def __init__(self, spec: PipelineSpec, cond: np.ndarray, uncond: np.ndarray | None, params: GenerateParams,
                 init_latents: np.ndarray | None = None):
        import torch

        p = self.params = params
        n = p.num_images
        self.cfg = p.do_classifier_free_guidance
        self.scheduler = scheduler = create_scheduler(p.scheduler, spec.scheduler_config)
        generator = torch.Generator("cpu").manual_seed(int(p.seed))

        # 3. prompt embeddings, repeated per image; [uncond, cond] in one batch for classifier-free guidance
        embeds = np.repeat(cond, n, axis=0)
        self.embeds = np.concatenate([np.repeat(uncond, n, axis=0), embeds]) if self.cfg else embeds

        # 4. timesteps (image-to-image starts part-way, at `strength`)
        scheduler.set_timesteps(p.steps, device="cpu")
        timesteps = scheduler.timesteps
        shape = (n, spec.latent_channels, p.height // spec.vae_scale_factor, p.width // spec.vae_scale_factor)

        # 5. initial latents: drawn like diffusers (CPU generator, one randn over the whole batch)
        t_start = 0
        if init_latents is None:
            latents = torch.randn(shape, generator=generator, dtype=torch.float32) * scheduler.init_noise_sigma
        else:
            init_steps = min(int(p.steps * p.strength), p.steps)
            t_start = max(p.steps - init_steps, 0)
            timesteps = timesteps[t_start * scheduler.order :]
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(t_start * scheduler.order)
            init = torch.from_numpy(np.repeat(init_latents, n, axis=0))
            noise = torch.randn(shape, generator=generator, dtype=torch.float32)
            latents = scheduler.add_noise(init, noise, timesteps[:1].repeat(n))
        self.latents, self.timesteps = latents, timesteps
        self.latent_shape = shape[1:]

        # 6. extra step kwargs, as diffusers' prepare_extra_step_kwargs (eta=0; the same generator for noise)
        step_params = set(inspect.signature(scheduler.step).parameters)
        self._extra = {k: v for k, v in (("eta", 0.0), ("generator", generator)) if k in step_params}
        self.step_index, self.total = 0, len(timesteps)
        # progress counts the steps asked for, like diffusers' progress bar: PNDM's schedule has one warm-up
        # timestep more than steps (steps + 1 U-Net calls), counted as part of the first step
        self.warmup = max(0, len(timesteps) - (p.steps - t_start) * scheduler.order)

    def progress(self) -> tuple[int, int] | None:
        """``(steps done, steps)`` as users count them, or None while still in the scheduler's warm-up."""
        if self.step_index <= self.warmup:
            return None
        return self.step_index - self.warmup, self.total - self.warmup

    def cancelled(self) -> Cancelled:
        """The error for a stop before the next step, counting steps as :meth:`progress` does."""
        done = max(0, self.step_index - self.warmup)
        return Cancelled(f"generation cancelled after {done} of {self.total - self.warmup} steps")

    @property
    def done(self) -> bool:
        return self.step_index >= self.total

    @property
    def rows(self) -> int:
        """Samples this request puts in the U-Net batch per step (two per image with guidance)."""
        return self.params.num_images * (2 if self.cfg else 1)

    def model_input(self) -> tuple[np.ndarray, float]:
        """The U-Net's ``sample`` rows for this step and their timestep (this request's own)."""
        t = self.timesteps[self.step_index]
        import torch

        model_in = torch.cat([self.latents] * 2) if self.cfg else self.latents
        return self.scheduler.scale_model_input(model_in, t).numpy(), float(t)

    def advance(self, noise_pred: np.ndarray) -> None:
        """Guidance and the scheduler step on this request's slice of the U-Net output."""
        import torch

        t = self.timesteps[self.step_index]
        noise_pred = torch.from_numpy(noise_pred)
        if self.cfg:
            noise_uncond, noise_text = noise_pred.chunk(2)
            noise_pred = noise_uncond + self.params.guidance_scale * (noise_text - noise_uncond)
        self.latents = self.scheduler.step(noise_pred, t, self.latents, **self._extra, return_dict=False)[0]
        self.step_index += 1

    def result(self) -> np.ndarray:
        return self.latents.numpy()


class Sampler:
    def __init__(self, runtime: ModelRuntime, spec: PipelineSpec):
        self.runtime, self.spec = runtime, spec
        self.unet_version = spec.versions.get("unet")

    def max_batch_rows(self) -> int:
        """The U-Net's ``max_batch_size`` (a Triton config limit: 16 for our U-Net, i.e. 8 images with guidance);
        0 when the runtime has none (torch). Read per call: a reloaded version may bring another config."""
        extra = self.runtime.metadata("unet", self.unet_version).extra or {}
        return int(extra.get("max_batch_size") or 0)

    def unet(self, sample: np.ndarray, timesteps: np.ndarray, embeds: np.ndarray) -> np.ndarray:
        """One U-Net evaluation of rows that may belong to several requests (one timestep per row), split into
        chunks of the model's ``max_batch_size``; unlimited runtimes (torch) take the whole batch at once."""
        step = self.max_batch_rows() or sample.shape[0]
        outs = [
            self.runtime.infer(
                "unet",
                {"sample": sample[i : i + step], "timestep": timesteps[i : i + step],
                 "encoder_hidden_states": embeds[i : i + step]},
                version=self.unet_version,
            )["out_sample"]
            for i in range(0, sample.shape[0], step)
        ]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def start(self, cond: np.ndarray, uncond: np.ndarray | None, params: GenerateParams,
              init_latents: np.ndarray | None = None) -> Denoising:
        return Denoising(self.spec, cond, uncond, params, init_latents)

    def sample(
        self,
        cond: np.ndarray,
        uncond: np.ndarray | None,
        params: GenerateParams,
        *,
        on_step: OnStep | None = None,
        should_stop: Callable[[], bool] | None = None,
        init_latents: np.ndarray | None = None,
    ) -> np.ndarray:
        """Denoise one request alone and return ``float32 [num_images, L, h, w]`` latents (still multiplied by the
        VAE scaling factor).

        ``cond``/``uncond``: ``[1, T, D]`` text embeddings (``uncond`` is ignored when ``guidance_scale <= 1``).
        ``should_stop`` is polled before every step; when it returns True, :class:`Cancelled` is raised.
        """
        job = self.start(cond, uncond, params, init_latents)
        start = time.perf_counter()
        # 7. denoising loop
        while not job.done:
            if should_stop is not None and should_stop():
                raise job.cancelled()
            sample, t = job.model_input()
            job.advance(self.unet(sample, np.full((len(sample),), t, dtype=np.float32), job.embeds))
            if on_step is not None and (done := job.progress()) is not None:
                on_step(*done, time.perf_counter() - start)
        return job.result()
