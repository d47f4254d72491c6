"""Random-weight LDM3D checkpoints in the exact diffusers folder layout, for tests, the demo and benchmarks.

No hub is reachable here, so we build models from configs with fixed seeds. Real checkpoints (``Intel/ldm3d``,
``Intel/ldm3d-4c``, ``Intel/ldm3d-pano``) load through the very same code as these folders.

Presets:
* ``tiny`` – diffusers' own test sizes (UNet (32, 64), cross-attention 32, VAE (32, 64), CLIP hidden 32 × 5 layers,
  the real 49,408-token vocabulary); ~9 MB in fp16; a 64×64, 5-step run takes a fraction of a second.
* ``sd14`` – Stable Diffusion v1.4's full configs (859.5 M-parameter U-Net, 83.7 M VAE, 123 M CLIP ViT-L/14 text
  encoder) with random weights: for benchmarks only (~2 GB in fp16; never committed).
"""

from __future__ import annotations

import json
from pathlib import Path

from .tokenizer import write_clip_tokenizer

# Intel/ldm3d's scheduler/scheduler_config.json (PNDM with SD v1.4's betas).
SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
    "trained_betas": None,
}


def _configs(preset: str, rgbd_channels: int) -> tuple[dict, dict, dict]:
    if preset == "tiny":
        unet = dict(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
        )
        vae = dict(
            block_out_channels=[32, 64],
            in_channels=rgbd_channels,
            out_channels=rgbd_channels,
            down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2,
            latent_channels=4,
            sample_size=64,
        )
        text = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5, projection_dim=32)
    elif preset == "sd14":
        unet = dict(  # CompVis/stable-diffusion-v1-4 unet/config.json
            sample_size=64,
            in_channels=4,
            out_channels=4,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
        )
        vae = dict(  # vae/config.json, with LDM3D's RGBD channels
            block_out_channels=[128, 256, 512, 512],
            in_channels=rgbd_channels,
            out_channels=rgbd_channels,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            latent_channels=4,
            layers_per_block=2,
            sample_size=512,
        )
        text = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, projection_dim=768)
    else:
        raise ValueError(f"unknown preset {preset!r}: use 'tiny' or 'sd14'")
    text.update(
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    return unet, vae, text


def build_components(preset: str = "tiny", depth_channels: int = 3, seed: int = 0) -> dict:
    """The torch modules of a random-weight LDM3D (fp32), seeded: ``unet``, ``vae``, ``text_encoder``, ``scheduler``."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if depth_channels not in (3, 1):
        raise ValueError("depth_channels must be 3 (6-channel Intel/ldm3d layout) or 1 (4-channel -4c/-pano layout)")
    unet_cfg, vae_cfg, text_cfg = _configs(preset, 3 + depth_channels)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_cfg)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**vae_cfg)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    scheduler = PNDMScheduler.from_config({k: v for k, v in SCHEDULER_CONFIG.items() if not k.startswith("_")})
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(), "scheduler": scheduler}


def make_tiny_model(out_dir: str | Path, depth_channels: int = 3, preset: str = "tiny", seed: int = 0,
                    fp16: bool = True) -> Path:
    """Write a random-weight LDM3D checkpoint folder (diffusers layout) and return its path.

    Weights are stored in fp16 by default, as published checkpoints often are, so the fp16 → fp32 load path is
    exercised by every test.
    """
    import torch
    import transformers.utils.logging as tlog

    tlog.set_verbosity_error()  # before diffusers' import, which warns about torchvision-less image processors
    tlog.disable_progress_bar()
    from diffusers import StableDiffusionLDM3DPipeline
    from diffusers.utils import logging as dlog

    # diffusers warns that the LDM3D pipeline class is deprecated upstream and that .to(fp16) "can be inconsistent":
    # both are expected here (we only use the class to write the folder layout), so keep the user's screen clean.
    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    out = Path(out_dir)
    comps = build_components(preset, depth_channels, seed)
    tokenizer_dir = write_clip_tokenizer(out / "tokenizer")
    from .tokenizer import load_clip_tokenizer

    pipe = StableDiffusionLDM3DPipeline(
        vae=comps["vae"],
        text_encoder=comps["text_encoder"],
        tokenizer=load_clip_tokenizer(tokenizer_dir),
        unet=comps["unet"],
        scheduler=comps["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    if fp16:
        pipe.to(torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)
    # save_pretrained rewrites the tokenizer with transformers' own serialisation; put back the canonical files.
    write_clip_tokenizer(out / "tokenizer")
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2))
    return out
