"""GenerateParams <-> the generation messages, each conversion written once (client, Studio, DiffusionSampler).

Unset optional fields stay ``None``/defaults so that ``GenerateParams.resolved`` fills them exactly as the CLI does.
"""

from __future__ import annotations

import json

import numpy as np

from ..pipeline.ldm3d import GenerateResult
from ..pipeline.params import GenerateParams
from ..v1 import common_pb2, sampler_pb2, studio_pb2
from . import tensors
from .ids import new_request_id

_DEFAULTS = GenerateParams(prompt="")
# DiffusionSampler receives embeddings, not text; GenerateParams validates a prompt, so this placeholder stands in.
EMBEDDINGS_GIVEN = "<text embeddings given>"


def generate_params(msg, *, prompt: str, negative_prompt: str = "", init_rgb: np.ndarray | None = None,
                    init_depth: np.ndarray | None = None) -> GenerateParams:
    """A ``GenerateRequest`` or ``SampleRequest`` (same field names) → unresolved ``GenerateParams``."""

    def opt(name):
        return getattr(msg, name) if msg.HasField(name) else None

    return GenerateParams(
        prompt=prompt,
        negative_prompt=negative_prompt,
        height=opt("height"),
        width=opt("width"),
        steps=opt("steps"),
        guidance_scale=_DEFAULTS.guidance_scale if opt("guidance_scale") is None else msg.guidance_scale,
        seed=opt("seed"),
        scheduler=msg.scheduler or None,
        num_images=_DEFAULTS.num_images if opt("num_images") is None else msg.num_images,
        init_rgb=init_rgb,
        init_depth=init_depth,
        strength=_DEFAULTS.strength if opt("strength") is None else msg.strength,
    )


def to_request(p: GenerateParams, *, model: str = "", version: str = "",
               request_id: str | None = None) -> studio_pb2.GenerateRequest:
    """``GenerateParams`` → ``GenerateRequest``; ``None`` fields stay unset so the server applies the defaults."""
    req = studio_pb2.GenerateRequest(
        request_id=request_id or new_request_id(), prompt=p.prompt, negative_prompt=p.negative_prompt,
        guidance_scale=p.guidance_scale, scheduler=p.scheduler or "", num_images=p.num_images, model=model,
        version=version, image_encoding=common_pb2.IMAGE_ENCODING_PNG)
    for name in ("height", "width", "steps", "seed"):
        if getattr(p, name) is not None:
            setattr(req, name, int(getattr(p, name)))
    if p.init_rgb is not None or p.init_depth is not None:
        req.strength = p.strength
        if p.init_rgb is not None:
            req.init_image.rgb.array.CopyFrom(tensors.to_tensor(p.init_rgb))
        if p.init_depth is not None:
            req.init_image.depth.array.CopyFrom(tensors.to_tensor(p.init_depth))
    return req


def to_sample_request(p: GenerateParams, cond: np.ndarray, uncond: np.ndarray | None, init: np.ndarray | None, *,
                      request_id: str, model: str, version: str) -> sampler_pb2.SampleRequest:
    """Resolved ``GenerateParams`` + embeddings (+ init latents) → ``SampleRequest`` (the gateway's remote path)."""
    return sampler_pb2.SampleRequest(
        request_id=request_id, cond=tensors.to_tensor(cond),
        uncond=None if uncond is None else tensors.to_tensor(uncond), height=p.height, width=p.width,
        steps=p.steps, guidance_scale=p.guidance_scale, seed=p.seed, scheduler=p.scheduler,
        num_images=p.num_images, init_latents=None if init is None else tensors.to_tensor(init),
        strength=p.strength, model=model, version=version)


def from_result(r: studio_pb2.GenerateResult) -> GenerateResult:
    """``GenerateResult`` message → the pipeline's ``GenerateResult``. ``rgb_float`` and ``decoded`` (the decoder's
    float output) do not travel over the wire and are None."""
    rgb = [tensors.read_rgb(img.rgb, f"images[{i}].rgb") for i, img in enumerate(r.images)]
    depth = [tensors.read_depth(img.depth, f"images[{i}].depth") for i, img in enumerate(r.images)]
    meta = json.loads(r.metadata_json) if r.metadata_json else {}
    params = GenerateParams(
        prompt=meta.get("prompt", ""), negative_prompt=meta.get("negative_prompt", ""), height=meta.get("height"),
        width=meta.get("width"), steps=meta.get("steps"), guidance_scale=meta.get("guidance_scale", 5.0),
        seed=int(r.seed), scheduler=meta.get("scheduler"), num_images=meta.get("num_images", len(rgb)),
        strength=(meta.get("image_to_image") or {}).get("strength", 0.8))
    meta.setdefault("request_id", r.request_id)
    return GenerateResult(rgb=rgb, depth=depth, rgb_float=None, decoded=None, params=params, metadata=meta)


__all__ = ["EMBEDDINGS_GIVEN", "from_result", "generate_params", "to_request", "to_sample_request"]
