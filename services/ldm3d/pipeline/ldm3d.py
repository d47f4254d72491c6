"""Text → RGBD in-process: the three stages chained like diffusers' ``StableDiffusionLDM3DPipeline.__call__``.

    from ldm3d.pipeline import LDM3DPipeline, GenerateParams
    pipe = LDM3DPipeline.from_checkpoint("demo/tiny")                 # torch runtime over a diffusers folder
    pipe = LDM3DPipeline.from_repository("model_repository")         # embedded ONNX Runtime (the serving default)
    result = pipe(GenerateParams(prompt="a cabin in the woods", seed=42))
    result.rgb[0], result.depth[0]                                    # uint8 [H, W, 3], uint16 [H, W]

The gateway (``ldm3d.servers``) chains the same three stages over gRPC, in the same order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import codec
from ..models.seamless import seamless_padding
from ..runtime import ModelRuntime, create_runtime
from .autoencoder import RGBDAutoencoder
from .params import GenerateParams
from .sampler import OnStep, Sampler
from .spec import PipelineSpec
from .text import TEXT_CACHE_SIZE, TextEncoding


@dataclass
class GenerateResult:
    rgb: list[np.ndarray]  # uint8 [H, W, 3] per image
    depth: list[np.ndarray]  # uint16 [H, W] per image
    rgb_float: np.ndarray  # float32 [B, H, W, 3] in [0, 1]: diffusers' `np` RGB output
    decoded: np.ndarray  # float32 [B, C, H, W]: the VAE decoder's raw output
    params: GenerateParams  # resolved: defaults filled in, the seed actually used
    metadata: dict = field(default_factory=dict)


class LDM3DPipeline:
    def __init__(self, runtime: ModelRuntime, spec: PipelineSpec, text_cache_size: int = TEXT_CACHE_SIZE):
        """``text_cache_size``: prompts whose embeddings the text encoding keeps (an LRU cache; 0: none)."""
        self.runtime, self.spec = runtime, spec
        self.text = TextEncoding(runtime, spec, cache_size=text_cache_size)
        self.sampler = Sampler(runtime, spec)
        self.autoencoder = RGBDAutoencoder(runtime, spec)

    @classmethod
    def from_checkpoint(cls, model: str | Path, text_cache_size: int = TEXT_CACHE_SIZE) -> LDM3DPipeline:
        """A local diffusers LDM3D folder (``Intel/ldm3d`` layout) or a hub id, run with torch in fp32."""
        from ..runtime.torch_runtime import TorchRuntime, resolve_checkpoint

        folder = resolve_checkpoint(model)
        spec = PipelineSpec.from_checkpoint(folder)
        return cls(TorchRuntime.from_checkpoint(folder), spec, text_cache_size)

    @classmethod
    def from_repository(cls, repository: str | Path, runtime: str = "embedded", triton_url: str | None = None,
                        version: int | None = None, text_cache_size: int = TEXT_CACHE_SIZE,
                        **options) -> LDM3DPipeline:
        """Models from a Triton model repository, run by the embedded ONNX Runtime or a Triton server."""
        from .spec import spec_from_repository

        spec = spec_from_repository(repository, version)
        rt = create_runtime(runtime, repository=repository, triton_url=triton_url, **options)
        return cls(rt, spec, text_cache_size)

    def __call__(self, params: GenerateParams, on_step: OnStep | None = None,
                 should_stop: Callable[[], bool] | None = None) -> GenerateResult:
        t0 = time.perf_counter()
        # 1. check inputs, fill the checkpoint's defaults, draw the seed
        p = params.resolved(self.spec)
        with seamless_padding(p.seamless):  # the torch runtime pads per call as asked; ONNX graphs have it baked
            return self._generate(p, on_step, should_stop, t0)

    def _generate(self, p: GenerateParams, on_step, should_stop, t0: float) -> GenerateResult:
        # 2. encode the prompt (and the negative prompt for classifier-free guidance)
        cond = self.text.encode([p.prompt])
        uncond = self.text.encode([p.negative_prompt]) if p.do_classifier_free_guidance else None
        t1 = time.perf_counter()
        # 3. image-to-image: encode the RGBD init image
        init = self.autoencoder.encode(p.init_rgb, p.init_depth) if p.init_rgb is not None else None
        # 4–7. timesteps, latents, denoising loop
        latents = self.sampler.sample(cond.embeddings, None if uncond is None else uncond.embeddings, p,
                                      on_step=on_step, should_stop=should_stop, init_latents=init)
        t2 = time.perf_counter()
        # 8. decode and post-process: RGB like diffusers, depth by our codec (DESIGN.md §3)
        decoded = self.autoencoder.decode(latents)
        rgb_float, rgb_u8, depth = codec.decode_rgbd(decoded)
        t3 = time.perf_counter()
        meta = generation_metadata(self.spec, self.runtime.kind, p, cond.token_counts[0], cond.truncated_tokens[0],
                                   {"encode_s": t1 - t0, "sample_s": t2 - t1, "decode_s": t3 - t2, "total_s": t3 - t0})
        return GenerateResult(list(rgb_u8), list(depth), rgb_float, decoded, p, meta)


def generation_metadata(spec: PipelineSpec, runtime_kind: str, p: GenerateParams, tokens: int, truncated: int,
                        timings: dict) -> dict:
    """Every parameter, the seed, the checkpoint and its hash, the scheduler and timings: the ``<stem>.json`` sidecar.

    Takes the spec and the runtime's kind, not a pipeline, so that a gateway whose stages run elsewhere builds the
    very same record."""
    from .. import __version__

    return {
        "prompt": p.prompt,
        "negative_prompt": p.negative_prompt,
        "height": p.height,
        "width": p.width,
        "steps": p.steps,
        "guidance_scale": p.guidance_scale,
        "seed": p.seed,
        "scheduler": p.scheduler,
        "num_images": p.num_images,
        "image_to_image": None if p.init_rgb is None else {"strength": p.strength},
        "seamless": p.seamless,
        "prompt_tokens": tokens,
        "truncated_tokens": truncated,
        "model": {
            "source": spec.source,
            "checkpoint_sha256": spec.checkpoint_hash,
            "rgbd_channels": spec.rgbd_channels,
            "versions": dict(spec.versions),
            "runtime": runtime_kind,
        },
        "depth_encoding": "16-bit PNG, relative inverse depth (larger = nearer); "
        + ("6-channel (0, d>>8, d&0xFF)" if spec.rgbd_channels == 6 else "4-channel round(d*65535)"),
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "ldm3d_version": __version__,
    }
