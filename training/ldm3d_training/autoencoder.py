"""Stage 1 (paper §3.1.2): fine-tune the KL autoencoder on RGB + depth.

    ldm3d-train autoencoder --model CompVis/stable-diffusion-v1-4 --data prep --out runs/vae \
        --lpips-vgg vgg16-397923af.pth [--steps N] [--batch-size 8] [--lr 1e-5]

From an SD v1.x 3-channel ``AutoencoderKL`` the first and last convolutions are widened to RGBD (6 channels, or 4
with ``--depth-channels 1``): ``encoder.conv_in`` gets zero weights for the new input channels (so the RGB encoding
starts exactly as before and depth is learned from there) and ``decoder.conv_out`` gets new output filters that copy
the mean of the three RGB filters (depth starts as the reconstruction's grey image). An LDM3D checkpoint (already 6
or 4 channels) is fine-tuned as it is. The loss is latent-diffusion's ``LPIPSWithDiscriminator`` (:mod:`.losses`);
both optimizers are Adam with latent-diffusion's betas (0.5, 0.9).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ldm3d import codec
from ldm3d.errors import InvalidArgument, NotFound

from .config import AutoencoderConfig
from .data import ShardStream
from .losses import LPIPS, NLayerDiscriminator, RGBDAutoencoderLoss

log = logging.getLogger(__name__)


def vae_folder(p: Path) -> Path | None:
    """The autoencoder folder of a stage-1 run (``final/vae``), a checkpoint (``vae/``) or a ``vae`` folder itself."""
    return next((c for c in (p / "final" / "vae", p / "vae", p) if (c / "config.json").is_file()), None)


def load_vae(source: str | Path, field: str = "model"):
    """An ``AutoencoderKL`` (fp32) from a checkpoint folder (``vae/``), a ``vae`` folder itself, or a stage-1 run."""
    from diffusers import AutoencoderKL

    from ldm3d.runtime.torch_runtime import resolve_checkpoint

    folder = vae_folder(resolve_checkpoint(source))
    if folder is not None:
        return AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32), folder
    raise NotFound(f"--{field}={str(source)!r} has no autoencoder (looked for final/vae/, vae/ and config.json): give "
                   "a diffusers checkpoint folder or a stage-1 run folder", field=field)


def widen_vae(vae, channels: int) -> int:
    """Widen a 3-channel VAE to ``channels`` RGBD channels in place; return the number of added parameters."""
    enc_in, dec_out = vae.encoder.conv_in, vae.decoder.conv_out
    extra = channels - enc_in.in_channels
    new_in = nn.Conv2d(channels, enc_in.out_channels, enc_in.kernel_size, enc_in.stride, enc_in.padding)
    new_out = nn.Conv2d(dec_out.in_channels, channels, dec_out.kernel_size, dec_out.stride, dec_out.padding)
    with torch.no_grad():
        new_in.weight.zero_()
        new_in.weight[:, :3] = enc_in.weight
        new_in.bias.copy_(enc_in.bias)
        new_out.weight[:3] = dec_out.weight
        new_out.bias[:3] = dec_out.bias
        new_out.weight[3:] = dec_out.weight.mean(0, keepdim=True)
        new_out.bias[3:] = dec_out.bias.mean()
    added = (new_in.weight.numel() - enc_in.weight.numel()) + (new_out.weight.numel() - dec_out.weight.numel()) + (
        new_out.bias.numel() - dec_out.bias.numel())
    vae.encoder.conv_in, vae.decoder.conv_out = new_in, new_out
    vae.register_to_config(in_channels=channels, out_channels=channels)
    log.info("widened the autoencoder from 3 to %d channels: %d parameters added (encoder.conv_in: %d new input "
             "channels, zero-initialised; decoder.conv_out: %d new output filters = the mean of the RGB filters)",
             channels, added, extra, extra)
    return added


class _AEForward(nn.Module):
    """What DDP wraps: the VAE and the learned log-variance, one forward = encode → sample → decode."""

    def __init__(self, vae, logvar_init: float):
        super().__init__()
        self.vae = vae
        self.logvar = nn.Parameter(torch.full((), float(logvar_init)))

    def forward(self, x: torch.Tensor, noise: torch.Tensor):
        posterior = self.vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * noise
        return self.vae.decode(z).sample, posterior


class AutoencoderStage:
    name = "autoencoder"

    def __init__(self, cfg: AutoencoderConfig, dist):
        from diffusers.optimization import get_scheduler

        self.cfg, self.dist = cfg, dist
        vae, self.vae_source = load_vae(cfg.model)
        self.added_params = 0
        if vae.config.in_channels == 3:
            self.added_params = widen_vae(vae, 3 + cfg.depth_channels)
            if dist.is_main:
                print(f"autoencoder: widened {vae.config.in_channels - cfg.depth_channels} → {vae.config.in_channels} "
                      f"channels, {self.added_params:,} parameters added (new conv_in inputs start at 0, new conv_out "
                      "filters at the mean of the RGB ones)")
        codec.depth_channels_for(vae.config.in_channels)  # a clear error for anything but 6 or 4
        self.vae_channels = int(vae.config.in_channels)
        device = dist.device
        self.model = _AEForward(vae, cfg.logvar_init).to(device).train()
        gen = torch.Generator().manual_seed(cfg.seed)
        self.disc = NLayerDiscriminator(self.vae_channels, n_layers=cfg.disc_num_layers, generator=gen).to(device)
        lpips = None
        if cfg.perceptual_weight > 0:
            lpips = LPIPS(cfg.lpips_vgg or None, random_seed=None if cfg.lpips_vgg else cfg.seed).to(device)
            self.lpips_backbone = lpips.backbone
        else:
            self.lpips_backbone = "none (--perceptual-weight 0)"
        self.loss = RGBDAutoencoderLoss(lpips, cfg.kl_weight, cfg.perceptual_weight, cfg.disc_start, cfg.disc_weight,
                                        cfg.disc_factor)
        betas = (0.5, 0.9)  # latent-diffusion's AutoencoderKL.configure_optimizers
        self.optimizers = {
            "vae": torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay),
            "disc": torch.optim.Adam(self.disc.parameters(), lr=cfg.disc_lr or cfg.lr, betas=betas),
        }
        self.schedulers = {n: get_scheduler(cfg.lr_scheduler, o, num_warmup_steps=cfg.lr_warmup_steps,
                                            num_training_steps=cfg.steps) for n, o in self.optimizers.items()}
        self.ddp_model, self.ddp_disc = self.model, self.disc
        self.val = ShardStream(cfg.data, "val", 0, 1, cfg.seed, 1, 1, self.vae_channels)

    # ------------------------------------------------------------------ trainer interface
    def modules(self) -> dict:
        return {"vae": self.model, "disc": self.disc}

    def extra_state(self) -> dict:
        return {}

    def load_extra(self, extra: dict) -> None:
        pass

    def wrap(self, dist) -> None:
        if self.cfg.compile:
            self.model = torch.compile(self.model, backend="hpu_backend" if dist.device_kind == "hpu" else "inductor")
        if dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [dist.local_rank] if dist.device_kind == "cuda" else None
            self.ddp_model = DDP(self.model, device_ids=ids)
            self.ddp_disc = DDP(self.disc, device_ids=ids)
        else:
            self.ddp_model, self.ddp_disc = self.model, self.disc

    def lr(self) -> float:
        return self.schedulers["vae"].get_last_lr()[0]

    def train_step(self, batch, step: int, gen: torch.Generator) -> dict:
        cfg, dist = self.cfg, self.dist
        x = torch.from_numpy(batch.pixels).to(dist.device)
        lat_shape = self._latent_shape(x)
        noise = torch.randn(lat_shape, generator=gen).to(dist.device)
        opt, dopt = self.optimizers["vae"], self.optimizers["disc"]
        # generator (optimizer_idx 0): the discriminator's own module, frozen, so DDP sees no unused gradients
        with dist.autocast(cfg.resolved_precision()):
            recon, posterior = self.ddp_model(x, noise)
        self.disc.requires_grad_(False)
        loss, logs = self.loss.generator(x, recon, posterior, self.model.logvar, step,
                                         self.model.vae.decoder.conv_out.weight, self.disc)
        self.disc.requires_grad_(True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        dist.mark_step()
        if cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        opt.step()
        self.schedulers["vae"].step()
        dist.mark_step()
        # discriminator (optimizer_idx 1), only once it is active
        if self.loss.disc_active(step):
            d_loss, dlogs = self.loss.discriminator(x, recon.detach(), self.ddp_disc)
            dopt.zero_grad(set_to_none=True)
            d_loss.backward()
            dist.mark_step()
            dopt.step()
            dist.mark_step()
            logs.update(dlogs)
        self.schedulers["disc"].step()
        return {"loss": loss.detach(), **logs}

    def _latent_shape(self, x: torch.Tensor) -> tuple:
        f = 2 ** (len(self.model.vae.config.block_out_channels) - 1)
        return (x.shape[0], int(self.model.vae.config.latent_channels), x.shape[2] // f, x.shape[3] // f)

    @torch.no_grad()
    def validate(self, out: Path) -> dict:
        """Reconstruct the val split's first samples: RGB PSNR and depth AbsRel (ldm3d.evaluation's alignment)."""
        from ldm3d.evaluation import depth_metrics

        batch = self.val.first(self.cfg.val_samples)
        if batch is None:
            return {"val_samples": 0}
        self.model.eval()
        psnrs, absrels = [], []
        out.mkdir(parents=True, exist_ok=True)
        for i in range(len(batch.keys)):
            x = torch.from_numpy(batch.pixels[i:i + 1]).to(self.dist.device)
            recon = self.model.vae.decode(self.model.vae.encode(x).latent_dist.mode()).sample.float().cpu().numpy()
            _, rgb_ref, depth_ref = codec.decode_rgbd(batch.pixels[i:i + 1])
            _, rgb, depth = codec.decode_rgbd(recon)
            mse = np.mean((rgb[0].astype(np.float64) - rgb_ref[0]) ** 2)
            psnrs.append(float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10))))
            ref = depth_ref[0].astype(np.float64)
            metric = np.where(ref > 0, codec.DEPTH_MAX / np.maximum(ref, 1), np.nan)  # disparity → depth-like
            try:
                absrels.append(depth_metrics(depth[0], metric).abs_rel)
            except InvalidArgument as exc:  # a blank reconstruction: say so rather than fail the run
                log.warning("validation sample %s: %s", batch.keys[i], exc)
            if i < 4:
                codec.write_png(out / f"{batch.keys[i]}_rgb.png", rgb[0])
                codec.write_png(out / f"{batch.keys[i]}_depth.png", depth[0])
        self.model.train()
        return {"val_samples": len(psnrs), "psnr": float(np.mean(psnrs)),
                "depth_abs_rel": float(np.mean(absrels)) if absrels else None}

    def save_final(self, out: Path) -> None:
        self.model.vae.save_pretrained(out / "vae", safe_serialization=True)

    def final_info(self) -> dict:
        return {"vae_channels": self.vae_channels, "added_parameters": self.added_params,
                "lpips_backbone": self.lpips_backbone, "base_vae": str(self.vae_source)}
