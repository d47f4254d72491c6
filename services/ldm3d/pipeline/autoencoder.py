"""Stage 3 — the RGBD autoencoder: latents ↔ RGB + depth packed as one 6- (or 4-) channel image in [-1, 1]."""

from __future__ import annotations

import numpy as np

from .. import codec
from ..runtime import ModelRuntime
from .spec import PipelineSpec


class RGBDAutoencoder:
    def __init__(self, runtime: ModelRuntime, spec: PipelineSpec):
        self.runtime, self.spec = runtime, spec

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Diffusion latents ``[B, L, h, w]`` → the decoder's raw image ``float32 [B, C, H, W]`` (≈[-1, 1])."""
        scaled = (latents / np.float32(self.spec.vae_scaling_factor)).astype(np.float32, copy=False)
        out = self.runtime.infer("vae_decoder", {"latent_sample": scaled}, version=self.spec.versions.get("vae_decoder"))
        return out["sample"]

    def encode(self, rgb: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """RGB ``uint8 [H, W, 3]`` + depth ``uint16 [H, W]`` → init latents ``float32 [1, L, h, w]``.

        We take the mean of the encoder's Gaussian (not a sample), times the scaling factor: deterministic, and the
        noise that image-to-image adds next dwarfs the posterior's spread.
        """
        x = codec.encode_rgbd(rgb, depth, self.spec.rgbd_channels)
        out = self.runtime.infer("vae_encoder", {"sample": x}, version=self.spec.versions.get("vae_encoder"))
        params = out["latent_parameters"]
        mean = params[:, : params.shape[1] // 2]
        return (mean * np.float32(self.spec.vae_scaling_factor)).astype(np.float32)
