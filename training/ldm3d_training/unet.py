"""Stage 2 (paper §3.1.3): fine-tune the U-Net on the frozen RGBD autoencoder's latents.

    ldm3d-train unet --model CKPT --vae runs/vae --data prep --out runs/unet [--steps N] [--batch-size 32]

The VAE (``--vae``: a stage-1 run or a checkpoint; default ``--model``'s) and the CLIP text encoder are frozen. Each
step draws timesteps uniformly from the checkpoint's noise schedule (its scheduler config's betas, as a
``DDPMScheduler``, like diffusers' ``train_text_to_image.py``), noises the latents and regresses the scheduler's
``prediction_type`` target (ε by default, or v) with MSE, optionally min-SNR weighted. Captions are replaced by the
empty prompt with probability ``--caption-dropout`` (classifier-free guidance). Optional EMA weights are what
``final/`` holds when ``--ema`` is on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from ldm3d import codec
from ldm3d.errors import InvalidArgument

from .autoencoder import load_vae
from .config import UNetConfig

log = logging.getLogger(__name__)


class UNetStage:
    name = "unet"

    def __init__(self, cfg: UNetConfig, dist):
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from diffusers.optimization import get_scheduler
        from transformers import CLIPTextModel

        from ldm3d.models.tokenizer import load_clip_tokenizer
        from ldm3d.runtime.torch_runtime import resolve_checkpoint

        self.cfg, self.dist = cfg, dist
        self.folder = resolve_checkpoint(cfg.model)
        for sub in ("unet", "text_encoder", "tokenizer", "scheduler"):
            if not (self.folder / sub).is_dir():
                raise InvalidArgument(f"--model={cfg.model!r} has no {sub}/ folder: give a diffusers LDM3D checkpoint "
                                      "(Intel/ldm3d layout)", field="model")
        device = dist.device
        self.vae, self.vae_source = load_vae(cfg.vae or cfg.model, field="vae" if cfg.vae else "model")
        self.vae_channels = int(self.vae.config.in_channels)
        codec.depth_channels_for(self.vae_channels)
        self.vae.requires_grad_(False).eval().to(device)
        self.text_encoder = CLIPTextModel.from_pretrained(self.folder / "text_encoder", dtype=torch.float32)
        self.text_encoder.requires_grad_(False).eval().to(device)
        self.tokenizer = load_clip_tokenizer(self.folder / "tokenizer")
        self.unet = UNet2DConditionModel.from_pretrained(self.folder / "unet", torch_dtype=torch.float32).to(device)
        if self.unet.config.in_channels != self.vae.config.latent_channels:
            raise InvalidArgument(f"--vae: its latent_channels={self.vae.config.latent_channels} do not match the "
                                  f"U-Net's in_channels={self.unet.config.in_channels}", field="vae")
        self.unet.train()
        if cfg.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.noise_scheduler = DDPMScheduler.from_pretrained(self.folder, subfolder="scheduler")
        self.prediction_type = self.noise_scheduler.config.prediction_type
        self.scaling = float(self.vae.config.scaling_factor)
        self.ema = None
        if cfg.ema:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.unet.parameters(), decay=cfg.ema_decay)
        self.optimizers = {"unet": torch.optim.Adam(self.unet.parameters(), lr=cfg.lr,
                                                    betas=(cfg.adam_beta1, cfg.adam_beta2),
                                                    weight_decay=cfg.weight_decay)}
        self.schedulers = {"unet": get_scheduler(cfg.lr_scheduler, self.optimizers["unet"],
                                                 num_warmup_steps=cfg.lr_warmup_steps, num_training_steps=cfg.steps)}
        self.ddp_unet = self.unet
        self._empty = None

    # ------------------------------------------------------------------ trainer interface
    def modules(self) -> dict:
        return {"unet": self.unet}

    def extra_state(self) -> dict:
        if self.ema is None:
            return {}
        return {f"ema.{i}": p for i, p in enumerate(self.ema.shadow_params)} | {
            "ema.optimization_step": torch.tensor(self.ema.optimization_step)}

    def load_extra(self, extra: dict) -> None:
        if self.ema is None:
            return
        for i, p in enumerate(self.ema.shadow_params):
            p.data.copy_(extra[f"ema.{i}"])
        self.ema.optimization_step = int(extra["ema.optimization_step"])

    def wrap(self, dist) -> None:
        model = self.unet
        if self.cfg.compile:
            model = torch.compile(model, backend="hpu_backend" if dist.device_kind == "hpu" else "inductor")
        if dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[dist.local_rank] if dist.device_kind == "cuda" else None)
        self.ddp_unet = model

    def lr(self) -> float:
        return self.schedulers["unet"].get_last_lr()[0]

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        ids = self.tokenizer(captions, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.dist.device)
        return self.text_encoder(ids, return_dict=False)[0]

    def train_step(self, batch, step: int, gen: torch.Generator) -> dict:
        cfg, dist = self.cfg, self.dist
        device = dist.device
        x = torch.from_numpy(batch.pixels).to(device)
        b = x.shape[0]
        drop = torch.rand(b, generator=gen) < cfg.caption_dropout
        captions = ["" if d else c for c, d in zip(batch.captions, drop.tolist())]
        with torch.no_grad(), dist.autocast(cfg.resolved_precision()):
            posterior = self.vae.encode(x).latent_dist
            lat_noise = torch.randn(posterior.mean.shape, generator=gen).to(device)
            latents = ((posterior.mean + posterior.std * lat_noise) * self.scaling).float()
            embeds = self.encode_text(captions)
        noise = torch.randn(latents.shape, generator=gen).to(device)
        if cfg.noise_offset:
            noise = noise + cfg.noise_offset * torch.randn((b, latents.shape[1], 1, 1), generator=gen).to(device)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (b,), generator=gen).to(device)
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, t)
        else:
            raise InvalidArgument(f"the scheduler's prediction_type={self.prediction_type!r} is not supported: "
                                  "epsilon or v_prediction", field="model")
        with dist.autocast(cfg.resolved_precision()):
            pred = self.ddp_unet(noisy, t, embeds, return_dict=False)[0]
        if cfg.snr_gamma:
            from diffusers.training_utils import compute_snr

            snr = compute_snr(self.noise_scheduler, t)
            weights = torch.stack([snr, cfg.snr_gamma * torch.ones_like(snr)], dim=1).min(dim=1)[0]
            weights = weights / (snr + 1) if self.prediction_type == "v_prediction" else weights / snr
            loss = (F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3)) * weights).mean()
        else:
            loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
        opt = self.optimizers["unet"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        dist.mark_step()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.unet.parameters(), cfg.max_grad_norm)
        opt.step()
        self.schedulers["unet"].step()
        dist.mark_step()
        if self.ema is not None:
            self.ema.step(self.unet.parameters())
        return {"loss": loss.detach(), "caption_dropped": float(drop.float().mean())}

    # ------------------------------------------------------------------ validation and output
    def _with_published_weights(self):
        """Context: the U-Net holds what final/ will hold (the EMA weights when --ema)."""
        import contextlib

        @contextlib.contextmanager
        def ctx():
            if self.ema is None:
                yield
                return
            self.ema.store(self.unet.parameters())
            self.ema.copy_to(self.unet.parameters())
            try:
                yield
            finally:
                self.ema.restore(self.unet.parameters())

        return ctx()

    @torch.no_grad()
    def validate(self, out: Path) -> dict:
        """Sample RGB + depth for the fixed prompts through ``ldm3d.pipeline`` (torch runtime, these modules)."""
        from ldm3d.pipeline.ldm3d import LDM3DPipeline
        from ldm3d.pipeline.params import GenerateParams
        from ldm3d.pipeline.spec import PipelineSpec
        from ldm3d.runtime.torch_runtime import TorchRuntime

        out.mkdir(parents=True, exist_ok=True)
        resolution = max(int(self.val_resolution()), 64)  # the pipeline's smallest size
        spec = PipelineSpec.from_checkpoint(self.folder, hash_weights=False)
        spec = type(spec)(**{**spec.__dict__, "rgbd_channels": self.vae_channels})
        files = []
        self.unet.eval()
        try:
            with self._with_published_weights():
                dev = self.dist.device
                pipe = LDM3DPipeline(TorchRuntime({"text_encoder": _OnDevice(self.text_encoder, dev),
                                                   "unet": _OnDevice(self.unet, dev), "vae": _OnDevice(self.vae, dev)}),
                                     spec)
                for i, prompt in enumerate(self.cfg.validation_prompts):
                    res = pipe(GenerateParams(prompt=prompt, seed=i, steps=self.cfg.validation_steps,
                                              height=resolution, width=resolution))
                    codec.write_png(out / f"{i}_rgb.png", res.rgb[0])
                    codec.write_png(out / f"{i}_depth.png", res.depth[0])
                    files.append(f"{i}_rgb.png")
        finally:
            self.unet.train()
        return {"prompts": list(self.cfg.validation_prompts), "images": files, "resolution": resolution}

    def val_resolution(self) -> int:
        from .data import read_manifest

        return read_manifest(Path(self.cfg.data))["resolution"]

    def save_final(self, out: Path) -> None:
        with self._with_published_weights():
            self.unet.save_pretrained(out / "unet", safe_serialization=True)

    def final_info(self) -> dict:
        return {"vae": str(self.vae_source), "vae_channels": self.vae_channels, "ema": self.ema is not None,
                "prediction_type": self.prediction_type}


class _OnDevice:
    """A module on the training device seen by the (CPU, numpy) torch runtime: inputs moved there, outputs back."""

    def __init__(self, module, device):
        self.m, self.device = module, device

    def _to(self, v):
        return v.to(self.device) if torch.is_tensor(v) else v

    def modules(self):  # the runtime patches convolutions for seamless padding (off unless a call asks)
        return self.m.modules()

    def __call__(self, *args, **kwargs):
        out = self.m(*map(self._to, args), **{k: self._to(v) for k, v in kwargs.items()})
        return [o.float().cpu() for o in (out if isinstance(out, tuple) else out.to_tuple())]

    def decode(self, z, return_dict=False):
        return [self.m.decode(self._to(z), return_dict=False)[0].float().cpu()]

    def encode(self, x):
        from types import SimpleNamespace

        params = self.m.encode(self._to(x)).latent_dist.parameters.float().cpu()
        return SimpleNamespace(latent_dist=SimpleNamespace(parameters=params))
