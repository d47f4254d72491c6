"""Stage 2 — diffusion sampling: seeded Gaussian latents (or a noised init image) → N scheduler steps → latents.

Each step is one U-Net call on ``[uncond, cond]`` and ``eps = eps_u + s · (eps_c − eps_u)``, in exactly the order
and dtypes of diffusers' ``StableDiffusionLDM3DPipeline.__call__``, so the same seed gives the same image.
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


class Sampler:
    def __init__(self, runtime: ModelRuntime, spec: PipelineSpec):
        self.runtime, self.spec = runtime, spec
        self._max_batch: int | None = None

    def _unet(self, sample: np.ndarray, t: float, embeds: np.ndarray, version) -> np.ndarray:
        """One U-Net evaluation, split into chunks of the model's ``max_batch_size`` (a Triton config limit: 8 for
        our U-Net, i.e. 4 images with guidance); unlimited runtimes (torch) take the whole batch at once."""
        if self._max_batch is None:  # 0 = no limit
            extra = self.runtime.metadata("unet", version).extra or {}
            self._max_batch = int(extra.get("max_batch_size") or 0)
        step = self._max_batch or sample.shape[0]
        outs = [
            self.runtime.infer(
                "unet",
                {
                    "sample": sample[i : i + step],
                    "timestep": np.full((min(step, sample.shape[0] - i),), t, dtype=np.float32),
                    "encoder_hidden_states": embeds[i : i + step],
                },
                version=version,
            )["out_sample"]
            for i in range(0, sample.shape[0], step)
        ]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

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
        """Denoise and return ``float32 [num_images, L, h, w]`` latents (still multiplied by the VAE scaling factor).

        ``cond``/``uncond``: ``[1, T, D]`` text embeddings (``uncond`` is ignored when ``guidance_scale <= 1``).
        ``should_stop`` is polled before every step; when it returns True, :class:`Cancelled` is raised.
        """
        import torch

        p, spec = params, self.spec
        n = p.num_images
        cfg = p.do_classifier_free_guidance
        scheduler = create_scheduler(p.scheduler, spec.scheduler_config)
        generator = torch.Generator("cpu").manual_seed(int(p.seed))

        # 3. prompt embeddings, repeated per image; [uncond, cond] in one batch for classifier-free guidance
        embeds = torch.from_numpy(np.repeat(cond, n, axis=0))
        if cfg:
            embeds = torch.cat([torch.from_numpy(np.repeat(uncond, n, axis=0)), embeds])
        embeds_np = embeds.numpy()

        # 4. timesteps (image-to-image starts part-way, at `strength`)
        scheduler.set_timesteps(p.steps, device="cpu")
        timesteps = scheduler.timesteps
        shape = (n, spec.latent_channels, p.height // spec.vae_scale_factor, p.width // spec.vae_scale_factor)

        # 5. initial latents: drawn like diffusers (CPU generator, one randn over the whole batch)
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

        # 6. extra step kwargs, as diffusers' prepare_extra_step_kwargs (eta=0; the same generator for noise)
        step_params = set(inspect.signature(scheduler.step).parameters)
        extra = {k: v for k, v in (("eta", 0.0), ("generator", generator)) if k in step_params}

        # 7. denoising loop. Progress counts the steps asked for, like diffusers' progress bar: PNDM's schedule has
        # one warm-up timestep more than steps (steps + 1 U-Net calls), reported as part of the first step
        total, start = len(timesteps), time.perf_counter()
        warmup = max(0, len(timesteps) - (p.steps - (t_start if init_latents is not None else 0)) * scheduler.order)
        unet_version = spec.versions.get("unet")
        for i, t in enumerate(timesteps):
            if should_stop is not None and should_stop():
                raise Cancelled(f"generation cancelled after {max(0, i - warmup)} of {total - warmup} steps")
            model_in = torch.cat([latents] * 2) if cfg else latents
            model_in = scheduler.scale_model_input(model_in, t)
            noise_pred = torch.from_numpy(self._unet(model_in.numpy(), float(t), embeds_np, unet_version))
            if cfg:
                noise_uncond, noise_text = noise_pred.chunk(2)
                noise_pred = noise_uncond + p.guidance_scale * (noise_text - noise_uncond)
            latents = scheduler.step(noise_pred, t, latents, **extra, return_dict=False)[0]
            if on_step is not None and i >= warmup:
                on_step(i + 1 - warmup, total - warmup, time.perf_counter() - start)
        return latents.numpy()
