"""The parameters of one text → RGBD generation, validated once at the edge (CLI flags and gRPC fields share them).

Field names are the API's (``guidance_scale``) and each error names its field; the CLI renames fields to its flags.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InvalidArgument, invalid
from ..models.seamless import is_panorama_size
from .schedulers import SCHEDULERS, check_name
from .spec import PipelineSpec

MIN_SIDE, MAX_SIDE = 64, 2048  # pixels; the U-Net was trained at 512 (-pano: 1024×512)
MAX_STEPS = 1000  # the training schedule's length
MAX_IMAGES = 16
MAX_PROMPT_CHARS = 10_000  # CLIP sees 77 tokens; this only bounds what we accept before truncating
MAX_SEED = 2**63 - 1

def _bad(field: str, value, expected: str) -> InvalidArgument:
    # the API's field name only: the CLI renames it to its flag (cli/generate.py), the servers keep it
    return invalid(field, value, expected)


@dataclass(frozen=True)
class GenerateParams:
    """One generation request. ``None`` means "the checkpoint's default" until :meth:`resolved` fills it in."""

    prompt: str
    negative_prompt: str = ""
    height: int | None = None
    width: int | None = None
    steps: int | None = None
    guidance_scale: float = 5.0  # the paper found s ≈ 5 best for LDM3D
    seed: int | None = None
    scheduler: str | None = None
    num_images: int = 1
    # image-to-image: RGB uint8 [H, W, 3] + depth uint16 [H, W], noised to `strength` then denoised
    init_rgb: np.ndarray | None = None
    init_depth: np.ndarray | None = None
    strength: float = 0.8
    # circular x padding so a panorama's left and right edges meet; None = on for 2:1 sizes (torch runtime) or as
    # the repository's graphs were exported (`ldm3d export --seamless`)
    seamless: bool | None = None

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 1.0

    def resolved(self, spec: PipelineSpec) -> GenerateParams:
        """Fill defaults from ``spec`` (size, scheduler), draw a seed if none, and validate every field."""
        p = replace(
            self,
            height=self.height if self.height is not None else spec.default_height,
            width=self.width if self.width is not None else spec.default_width,
            steps=self.steps if self.steps is not None else 50,
            scheduler=self.scheduler or spec.scheduler_name,
            seed=self.seed if self.seed is not None else secrets.randbelow(2**32),
        )
        p.validate(spec)
        return replace(p, seamless=p._resolved_seamless(spec))

    def _resolved_seamless(self, spec: PipelineSpec) -> bool:
        if spec.seamless is None:  # chosen per request: default on for an equirectangular 2:1 size
            return bool(self.seamless) if self.seamless is not None else is_panorama_size(self.height, self.width)
        if self.seamless is not None and bool(self.seamless) != spec.seamless:
            raise _bad("seamless", bool(self.seamless),
                       "this model repository's U-Net and VAE were exported "
                       + ("with --seamless: they always wrap; export again without --seamless into another "
                          "repository (or version) for plain padding" if spec.seamless else
                          "without --seamless: re-export them with `ldm3d export --seamless`, or run the checkpoint "
                          "with --model (torch, chosen per request)"))
        return spec.seamless

    def validate(self, spec: PipelineSpec) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise _bad("prompt", self.prompt, "give a non-empty text prompt")
        for f in ("prompt", "negative_prompt"):
            if len(getattr(self, f)) > MAX_PROMPT_CHARS:
                raise _bad(f, f"<{len(getattr(self, f))} characters>", f"at most {MAX_PROMPT_CHARS} characters")
        multiple = max(8, spec.vae_scale_factor)
        for f in ("height", "width"):
            v = getattr(self, f)
            if not isinstance(v, (int, np.integer)) or v % multiple or not MIN_SIDE <= v <= MAX_SIDE:
                raise _bad(f, v, f"use a multiple of {multiple} between {MIN_SIDE} and {MAX_SIDE} "
                                 f"(this checkpoint's default is {spec.default_height})")
        # "leading" spacing puts the first timestep at steps_offset + (steps - 1) * (T // steps): past T - 1 for T steps
        max_steps = min(MAX_STEPS, int(spec.scheduler_config.get("num_train_timesteps", 1000))
                        - int(spec.scheduler_config.get("steps_offset", 0)))
        if not isinstance(self.steps, (int, np.integer)) or not 1 <= self.steps <= max_steps:
            raise _bad("steps", self.steps, f"use 1 to {max_steps} denoising steps (50 is the usual)")
        if not np.isfinite(self.guidance_scale) or not 0.0 <= self.guidance_scale <= 100.0:
            raise _bad("guidance_scale", self.guidance_scale, "use 0 to 100 (≤ 1 disables classifier-free guidance; 5 is the paper's)")
        if not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed <= MAX_SEED:
            raise _bad("seed", self.seed, f"use an integer from 0 to {MAX_SEED}")
        if self.scheduler not in SCHEDULERS:
            check_name(self.scheduler)
        if not 1 <= self.num_images <= MAX_IMAGES:
            raise _bad("num_images", self.num_images, f"use 1 to {MAX_IMAGES}")
        if (self.init_rgb is None) != (self.init_depth is None):
            missing = "init_depth" if self.init_depth is None else "init_rgb"
            raise _bad(missing, None, "image-to-image needs both init_rgb and init_depth (a 16-bit depth map)")
        if self.init_rgb is not None:
            if not 0.0 < self.strength <= 1.0:
                raise _bad("strength", self.strength, "use a value in (0, 1]: 1 ignores the init image, 0.3 keeps most of it")
            h, w = self.init_rgb.shape[:2]
            if (h, w) != (self.height, self.width):
                raise _bad("init_rgb", f"{w}x{h}", f"the init image must be the requested size {self.width}x{self.height} "
                                                   f"(ask for width {w} and height {h}, or resize the image)")
            if self.init_depth.shape != (h, w):
                dh, dw = self.init_depth.shape[:2]
                raise _bad("init_depth", f"{dw}x{dh}", f"the depth map must match the RGB image's size {w}x{h}")
            if self.init_depth.dtype != np.uint16:
                raise _bad("init_depth", str(self.init_depth.dtype), "depth must be 16-bit (uint16)")
