"""Stage 1's loss: latent-diffusion's ``LPIPSWithDiscriminator`` (``ldm/modules/losses/contperceptual.py``) for RGBD.

* **LPIPS** (Zhang et al. 2018, v0.1, VGG16): the backbone is torchvision's ``vgg16().features`` rebuilt here with
  plain ``torch.nn`` in the same layer layout, so a torchvision state_dict file (``vgg16-397923af.pth``) loads into
  it; the five linear heads come from the ``lpips`` wheel's ``weights/v0.1/vgg.pth`` (read as a file: importing
  ``lpips`` would import torchvision). Depth is scored like an image: the depth channels split into 3-channel chunks
  (the 6-channel packing's 3 channels; the 4-channel layout's one channel repeated), and the perceptual term is the
  mean over the RGB chunk and the depth chunk.
* **PatchGAN** discriminator (taming's ``NLayerDiscriminator``: 4×4 convs, BatchNorm, LeakyReLU 0.2, N(0, 0.02)
  init) on all RGBD channels, hinge loss, started at ``disc_start`` with the adaptive weight
  ``‖∇_last nll‖ / (‖∇_last g‖ + 1e-4)`` (clamped to [0, 1e4]) × ``disc_weight`` at the decoder's last layer.
* **NLL** = ``(|x − x̂| + w_p · LPIPS) / exp(logvar) + logvar`` summed per image (a learned scalar ``logvar``),
  plus ``kl_weight`` × KL of the posterior.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ldm3d.errors import FailedPrecondition, InvalidArgument

log = logging.getLogger(__name__)

# torchvision's vgg16 "D" configuration: channel counts and max-pools ("M")
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
LPIPS_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: LPIPS' five slices end here
LPIPS_CHANNELS = (64, 128, 256, 512, 512)


class VGG16Features(nn.Module):
    """``torchvision.models.vgg16().features`` without torchvision: the same modules at the same indices."""

    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                c = v
        self.features = nn.Sequential(*layers)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features[: LPIPS_TAPS[-1] + 1]):
            x = layer(x)
            if i in LPIPS_TAPS:
                out.append(x)
        return out

    def load_torchvision(self, path: str | Path) -> None:
        """Load a torchvision VGG16 state_dict file (``features.*`` keys; ``classifier.*`` ignored)."""
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        feats = {k: v for k, v in state.items() if k.startswith("features.")}
        if not feats:
            raise InvalidArgument(f"--lpips-vgg={str(path)!r} holds no 'features.*' tensors: give torchvision's "
                                  "VGG16 weights (vgg16-397923af.pth)", field="lpips_vgg")
        try:
            self.load_state_dict(feats, strict=True)
        except RuntimeError as exc:
            raise InvalidArgument(f"--lpips-vgg={str(path)!r} is not a VGG16 state_dict ({str(exc)[:200]})",
                                  field="lpips_vgg") from None


def lpips_linear_weights() -> dict[str, torch.Tensor] | None:
    """LPIPS v0.1 VGG heads from the installed ``lpips`` wheel (found without importing it), or None."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "weights" / "v0.1" / "vgg.pth"
    return torch.load(str(path), map_location="cpu", weights_only=True) if path.is_file() else None


class LPIPS(nn.Module):
    """LPIPS v0.1 with a VGG16 backbone; inputs in [-1, 1], ``[B, 3, H, W]`` → ``[B, 1, 1, 1]``. Frozen."""

    def __init__(self, vgg_weights: str | Path | None = None, random_seed: int | None = None):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.net = VGG16Features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in LPIPS_CHANNELS)
        heads = lpips_linear_weights()
        if vgg_weights:
            self.net.load_torchvision(vgg_weights)
            self.backbone = f"torchvision VGG16 from {vgg_weights}"
        elif random_seed is not None:
            gen = torch.Generator().manual_seed(random_seed)
            for m in self.net.modules():
                if isinstance(m, nn.Conv2d):
                    fan_in = m.in_channels * 9
                    m.weight.data = torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5
                    m.bias.data.zero_()
            self.backbone = f"RANDOM VGG16 (seed {random_seed}): not a perceptual metric, for tests only"
            log.warning("LPIPS uses a %s", self.backbone)
        else:
            raise FailedPrecondition("LPIPS needs VGG16 weights (--lpips-vgg FILE) or --lpips-random")
        if heads is not None:
            for k, lin in enumerate(self.lins):
                lin.weight.data.copy_(heads[f"lin{k}.model.1.weight"])
        elif random_seed is not None:
            gen = torch.Generator().manual_seed(random_seed + 1)
            for lin in self.lins:
                lin.weight.data = torch.rand(lin.weight.shape, generator=gen) / lin.in_channels
            log.warning("the lpips wheel is not installed: LPIPS uses random non-negative linear heads too")
        else:
            raise FailedPrecondition("LPIPS' linear heads ship in the `lpips` wheel: pip install --no-deps lpips==0.1.4 "
                                     "(its torchvision dependency is not needed)")
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.net.taps((x - self.shift) / self.scale)
        fy = self.net.taps((y - self.shift) / self.scale)
        total = 0
        for lin, a, b in zip(self.lins, fx, fy):
            a = a / (torch.sqrt(torch.sum(a * a, dim=1, keepdim=True)) + 1e-10)
            b = b / (torch.sqrt(torch.sum(b * b, dim=1, keepdim=True)) + 1e-10)
            total = total + lin((a - b) ** 2).mean(dim=(2, 3), keepdim=True)
        return total


class NLayerDiscriminator(nn.Module):
    """taming-transformers' PatchGAN discriminator (pix2pix), with its ``weights_init``."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, generator: torch.Generator | None = None):
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=False), nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.main = nn.Sequential(*seq)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data = torch.randn(m.weight.shape, generator=generator) * 0.02
                if m.bias is not None:  # taming keeps torch's default bias init: uniform(±1/sqrt(fan_in))
                    bound = 1.0 / (m.in_channels * 16) ** 0.5
                    m.bias.data = (torch.rand(m.bias.shape, generator=generator) * 2 - 1) * bound
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data = 1.0 + torch.randn(m.weight.shape, generator=generator) * 0.02
                m.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.mean(F.relu(1.0 - logits_real)) + torch.mean(F.relu(1.0 + logits_fake)))


def depth_chunks(x: torch.Tensor) -> list[torch.Tensor]:
    """RGBD ``[B, 6 or 4, H, W]`` → 3-channel images for LPIPS: RGB, then the depth channels (1 → repeated)."""
    rgb, depth = x[:, :3], x[:, 3:]
    return [rgb, depth if depth.shape[1] == 3 else depth.repeat(1, 3, 1, 1)]


class RGBDAutoencoderLoss(nn.Module):
    """The generator and discriminator losses of one step (``optimizer_idx`` 0 and 1 in latent-diffusion)."""

    def __init__(self, lpips: LPIPS | None, kl_weight: float, perceptual_weight: float, disc_start: int,
                 disc_weight: float, disc_factor: float):
        super().__init__()
        self.lpips = lpips
        self.kl_weight, self.perceptual_weight = kl_weight, perceptual_weight
        self.disc_start, self.disc_weight, self.disc_factor = disc_start, disc_weight, disc_factor

    def disc_active(self, step: int) -> bool:
        """latent-diffusion's ``adopt_weight``: the adversarial terms count from ``disc_start`` on. Before that we
        skip the discriminator entirely (its terms would be multiplied by 0): the same losses, less compute."""
        return self.disc_factor > 0 and step >= self.disc_start

    def rec_loss(self, inputs: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        rec = torch.abs(inputs - recon)
        if self.perceptual_weight > 0 and self.lpips is not None:
            p = torch.stack([self.lpips(a, b) for a, b in zip(depth_chunks(inputs), depth_chunks(recon))]).mean(0)
            rec = rec + self.perceptual_weight * p
        return rec

    def generator(self, inputs, recon, posterior, logvar, step: int, last_layer, disc) -> tuple[torch.Tensor, dict]:
        rec = self.rec_loss(inputs.float(), recon.float())
        nll = torch.sum(rec / torch.exp(logvar) + logvar) / rec.shape[0]
        kl = torch.sum(posterior.kl()) / rec.shape[0]
        loss = nll + self.kl_weight * kl
        logs = {"rec_loss": rec.detach().mean(), "nll_loss": nll.detach(), "kl_loss": kl.detach(),
                "logvar": logvar.detach()}
        if self.disc_active(step):
            g_loss = -torch.mean(disc(recon))
            nll_grads = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
            g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
            d_weight = torch.clamp(torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4), 0.0, 1e4).detach()
            d_weight = d_weight * self.disc_weight
            loss = loss + d_weight * self.disc_factor * g_loss
            logs.update(g_loss=g_loss.detach(), d_weight=d_weight)
        return loss, logs

    def discriminator(self, inputs, recon, disc) -> tuple[torch.Tensor, dict]:
        logits_real, logits_fake = disc(inputs.detach()), disc(recon.detach())
        d_loss = self.disc_factor * hinge_d_loss(logits_real, logits_fake)
        return d_loss, {"disc_loss": d_loss.detach(), "logits_real": logits_real.detach().mean(),
                        "logits_fake": logits_fake.detach().mean()}
