"""Request messages → :class:`~ldm3d.pipeline.GenerateParams` (one conversion for Studio and DiffusionSampler).

Unset optional fields stay ``None``/defaults so that ``GenerateParams.resolved`` fills them exactly as the CLI does.
"""

from __future__ import annotations

import numpy as np

from ..pipeline import GenerateParams
from ..pipeline.params import MAX_PROMPT_CHARS

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


__all__ = ["EMBEDDINGS_GIVEN", "MAX_PROMPT_CHARS", "generate_params"]
