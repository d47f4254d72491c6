"""DiffusionSampler servicer: embeddings (+ init latents) → latents, one progress message per step."""

from __future__ import annotations

from ..errors import invalid
from ..v1 import sampler_pb2_grpc
from ..v1 import sampler_pb2 as pb
from ..wire import tensors
from ..wire.generate import EMBEDDINGS_GIVEN, generate_params
from .models import ModelRegistry
from .stages import Sampled, Stages


class DiffusionSamplerServicer(sampler_pb2_grpc.DiffusionSamplerServicer):
    def __init__(self, registry: ModelRegistry, stages: Stages):
        self.registry, self.stages = registry, stages

    async def Sample(self, request: pb.SampleRequest, context):
        served = await self.registry.resolve(request.model, request.version, request.request_id)
        spec = served.spec
        p = generate_params(request, prompt=EMBEDDINGS_GIVEN).resolved(spec)
        text_shape = (1, spec.max_text_length, spec.text_hidden_size)
        cond = tensors.from_tensor(request.cond, "cond", dtype="float32", shape=text_shape)
        uncond = None
        if p.do_classifier_free_guidance:
            if not request.HasField("uncond"):
                raise invalid("uncond", None, f"guidance_scale={p.guidance_scale} > 1 needs the negative prompt's "
                                              "embedding (or guidance_scale <= 1)")
            uncond = tensors.from_tensor(request.uncond, "uncond", dtype="float32", shape=text_shape)
        init = None
        if request.HasField("init_latents"):
            f = spec.vae_scale_factor
            init = tensors.from_tensor(request.init_latents, "init_latents", dtype="float32",
                                       shape=(1, spec.latent_channels, p.height // f, p.width // f))
            if not 0.0 < p.strength <= 1.0:
                raise invalid("strength", p.strength, "use a value in (0, 1] with init_latents")
        with self.registry.lease(served):  # the release stays loaded until the last step
            async for event in self.stages.sample(served, cond, uncond, p, init):
                if isinstance(event, Sampled):
                    yield pb.SampleResponse(request_id=request.request_id, result=pb.SampleResult(
                        latents=tensors.to_tensor(event.latents), seed=p.seed, model_version=served.version,
                        scheduler=p.scheduler, steps=p.steps, queued=tensors.duration(event.queued_s),
                        sampling=tensors.duration(event.sampling_s)))
                else:
                    yield pb.SampleResponse(request_id=request.request_id,
                                            progress=tensors.progress(event.step, event.total, event.elapsed_s))
