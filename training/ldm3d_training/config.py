"""One typed config per stage: defaults, then ``--config FILE`` (YAML or TOML), then flags; saved in the run.

Every option is declared once, as a dataclass field with its help text; the command-line flags are generated from
the fields (``batch_size`` → ``--batch-size``), and the file keys are the field names. Cross-field checks raise
:class:`ldm3d.errors.InvalidArgument` naming the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ldm3d import codec
from ldm3d.errors import InvalidArgument, NotFound

DEVICES = ("cpu", "cuda", "hpu")


def opt(default, help: str, **kw):  # noqa: A002 - mirrors argparse's name
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Options shared by both stages."""

    model: str = opt("", "base checkpoint: a diffusers folder (SD v1.x or LDM3D) or a hub id", required=True)
    data: str = opt("", "a folder written by `ldm3d-train prepare`", required=True)
    out: str = opt("", "run folder: config, metrics.jsonl, checkpoints/, final/", required=True)
    steps: int = opt(1000, "optimizer steps in total (a resumed run continues up to this)")
    batch_size: int = opt(8, "samples per process and step (global batch = this × world size)")
    lr: float = opt(1e-5, "learning rate (Adam; the paper: 1e-5)")
    lr_scheduler: str = opt("constant", "diffusers LR schedule: constant, constant_with_warmup, linear, cosine")
    lr_warmup_steps: int = opt(0, "warm-up steps of the LR schedule")
    adam_beta1: float = opt(0.9, "Adam beta1")
    adam_beta2: float = opt(0.999, "Adam beta2")
    weight_decay: float = opt(0.0, "Adam weight decay (L2, as torch.optim.Adam)")
    max_grad_norm: float = opt(1.0, "clip the gradient norm to this (0: no clipping)")
    seed: int = opt(0, "seed of everything: data order, noise, timesteps, dropout")
    device: str = opt("cpu", "cpu (gloo), cuda (NCCL) or hpu (Gaudi, HCCL)", choices=DEVICES)
    precision: str = opt("auto", "auto (bf16 autocast on cuda/hpu, fp32 on cpu), fp32 or bf16",
                         choices=("auto", "fp32", "bf16"))
    compile: bool = opt(False, "torch.compile the trained model (on hpu with backend='hpu_backend', Habana's "
                               "default eager+compile mode)")
    log_every: int = opt(1, "write a metrics.jsonl line every N steps")
    checkpoint_every: int = opt(500, "save a resumable checkpoint every N steps (and at the end)")
    keep_checkpoints: int = opt(3, "keep the last K checkpoints")
    validate_every: int = opt(0, "validate every N steps (0: only at the end; -1: never)")
    shuffle_buffer: int = opt(256, "samples in the per-process shuffle buffer")
    progress: bool = opt(True, "progress bar on rank 0")

    stage: typing.ClassVar[str] = ""

    # ------------------------------------------------------------------ building
    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        """One flag per field; defaults are left out (SUPPRESS) so that an unset flag never hides the file's value."""
        for f in dataclasses.fields(cls):
            meta, flag = f.metadata, "--" + f.name.replace("_", "-")
            kw: dict = {"help": meta["help"], "default": argparse.SUPPRESS}
            tp = _base_type(f.type)
            if tp is bool:
                kw["action"] = argparse.BooleanOptionalAction
            elif tp is list:
                kw["nargs"] = "+"
                kw["metavar"] = "TEXT"
            else:
                kw["type"] = tp
                kw["metavar"] = f.name.upper() if tp is str else tp.__name__.upper()
            if "choices" in meta:
                kw["choices"] = meta["choices"]
                kw.pop("metavar", None)  # argparse shows {a,b,c}
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if not meta.get("required") and tp is not bool:
                kw["help"] += f" (default: {default})"
            p.add_argument(flag, **kw)
        p.add_argument("--config", metavar="FILE", help="YAML or TOML file with any of these options (field names, "
                                                        "e.g. batch_size); flags override it")
        p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")

    @classmethod
    def from_sources(cls, args: argparse.Namespace) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict = {}
        if getattr(args, "config", None):
            values.update(_read_config_file(Path(args.config), names))
        values.update({k: v for k, v in vars(args).items() if k in names})
        missing = [f.name for f in dataclasses.fields(cls) if f.metadata.get("required") and not values.get(f.name)]
        if missing:
            raise InvalidArgument(f"--{missing[0].replace('_', '-')} is required (a flag or a key in --config)",
                                  field=missing[0])
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def bad(name: str, expected: str):
            raise InvalidArgument(f"--{name.replace('_', '-')}={getattr(self, name)!r} is invalid: {expected}",
                                  field=name)

        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints", "shuffle_buffer"):
            if getattr(self, name) < 1:
                bad(name, "use an integer >= 1")
        if not self.lr > 0:
            bad("lr", "use a positive learning rate, e.g. 1e-5")
        if self.lr_warmup_steps < 0:
            bad("lr_warmup_steps", "use an integer >= 0")
        if self.max_grad_norm < 0:
            bad("max_grad_norm", "use 0 (no clipping) or a positive norm")
        if self.device not in DEVICES:
            bad("device", f"use one of {', '.join(DEVICES)}")
        if self.lr_scheduler not in ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
                                     "polynomial"):
            bad("lr_scheduler", "use constant, constant_with_warmup, linear, cosine, cosine_with_restarts or polynomial")
        if not Path(self.data).is_dir() or not (Path(self.data) / "manifest.json").is_file():
            raise NotFound(f"--data={self.data!r} is not a prepared data folder (no manifest.json): run "
                           f"`ldm3d-train prepare --input DATA --out {self.data} --resolution N` first", field="data")

    def to_dict(self) -> dict:
        return {"stage": self.stage, **dataclasses.asdict(self)}

    def save(self, run: Path) -> None:
        codec.write_bytes_atomic(run / "config.json", (json.dumps(self.to_dict(), indent=2) + "\n").encode())

    def resolved_precision(self) -> str:
        if self.precision != "auto":
            return self.precision
        return "fp32" if self.device == "cpu" else "bf16"


@dataclass
class AutoencoderConfig(TrainConfig):
    """Stage 1 (paper §3.1.2): the KL autoencoder fine-tuned on RGBD with latent-diffusion's LPIPSWithDiscriminator."""

    depth_channels: int = opt(3, "when widening an SD v1.x 3-channel VAE: 3 (the 6-channel Intel/ldm3d packing) or "
                                 "1 (the 4-channel -4c/-pano layout); ignored for an LDM3D checkpoint")
    kl_weight: float = opt(1e-6, "weight of the KL term (latent-diffusion's kl-f8 config: 1e-6)")
    disc_start: int = opt(50001, "step at which the PatchGAN discriminator starts (latent-diffusion: 50001)")
    disc_weight: float = opt(0.5, "discriminator weight, scaled by the adaptive weight (latent-diffusion: 0.5)")
    disc_factor: float = opt(1.0, "discriminator factor after disc_start")
    disc_num_layers: int = opt(3, "PatchGAN layers")
    disc_lr: float = opt(0.0, "discriminator learning rate (0: the same as --lr)")
    perceptual_weight: float = opt(1.0, "LPIPS weight (0 disables LPIPS)")
    logvar_init: float = opt(0.0, "initial value of the learned output log-variance")
    lpips_vgg: str = opt("", "torchvision VGG16 state_dict file (vgg16-397923af.pth) for the LPIPS backbone")
    lpips_random: bool = opt(False, "use a seeded RANDOM VGG16 backbone for LPIPS (tests only: not a perceptual "
                                    "metric); without it --lpips-vgg is required when --perceptual-weight > 0")
    val_samples: int = opt(8, "validation samples to reconstruct (PSNR, depth AbsRel)")

    stage: typing.ClassVar[str] = "autoencoder"

    def validate(self) -> None:
        super().validate()
        if self.depth_channels not in (1, 3):
            raise InvalidArgument(f"--depth-channels={self.depth_channels} is invalid: use 3 (6-channel RGBD) or 1 "
                                  "(4-channel RGBD)", field="depth_channels")
        if self.kl_weight < 0 or self.perceptual_weight < 0 or self.disc_weight < 0:
            raise InvalidArgument("--kl-weight, --perceptual-weight and --disc-weight must be >= 0", field="kl_weight")
        if self.lpips_vgg and not Path(self.lpips_vgg).is_file():
            raise NotFound(f"--lpips-vgg={self.lpips_vgg!r}: no such file", field="lpips_vgg")
        if self.perceptual_weight > 0 and not self.lpips_random and not self.lpips_vgg:
            raise InvalidArgument(
                "--lpips-vgg is required for the perceptual loss: give torchvision's VGG16 weights file "
                "(vgg16-397923af.pth, see training/README.md), or --perceptual-weight 0, or --lpips-random "
                "(tests only)", field="lpips_vgg")


@dataclass
class UNetConfig(TrainConfig):
    """Stage 2 (paper §3.1.3): the U-Net on frozen RGBD-autoencoder latents and frozen CLIP text embeddings."""

    batch_size: int = opt(32, "samples per process and step (the paper: 32)")
    vae: str = opt("", "the frozen RGBD autoencoder: a stage-1 run folder or a checkpoint (default: --model's vae)")
    caption_dropout: float = opt(0.1, "probability of training on the empty caption (classifier-free guidance)")
    ema: bool = opt(False, "keep an exponential moving average of the U-Net weights (published instead of the raw)")
    ema_decay: float = opt(0.9999, "EMA decay")
    snr_gamma: float = opt(0.0, "min-SNR loss weighting gamma (0: plain MSE; 5.0 is the paper's recommendation)")
    gradient_checkpointing: bool = opt(False, "trade compute for memory in the U-Net")
    noise_offset: float = opt(0.0, "noise offset (0: none)")
    validation_prompts: list = opt(None, "prompts sampled through ldm3d.pipeline at validation (RGB + depth PNGs)")
    validation_steps: int = opt(25, "denoising steps of the validation samples")

    stage: typing.ClassVar[str] = "unet"

    def __post_init__(self):
        if self.validation_prompts is None:
            self.validation_prompts = ["a cozy wooden cabin in a snowy forest", "a bright modern living room"]

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.caption_dropout <= 1:
            raise InvalidArgument(f"--caption-dropout={self.caption_dropout} is invalid: use a probability in [0, 1]",
                                  field="caption_dropout")
        if not 0 < self.ema_decay < 1:
            raise InvalidArgument(f"--ema-decay={self.ema_decay} is invalid: use a value in (0, 1)", field="ema_decay")
        if self.snr_gamma < 0:
            raise InvalidArgument(f"--snr-gamma={self.snr_gamma} is invalid: use 0 (off) or a positive gamma",
                                  field="snr_gamma")


STAGES: dict[str, type[TrainConfig]] = {"autoencoder": AutoencoderConfig, "unet": UNetConfig}


def load_run_config(run: Path) -> TrainConfig:
    """The config saved in a run folder (``config.json``)."""
    path = Path(run) / "config.json"
    if not path.is_file():
        raise NotFound(f"{run} is not a training run (no config.json): give the --out folder of `ldm3d-train "
                       "autoencoder` or `ldm3d-train unet`", field="run")
    raw = json.loads(path.read_text())
    cls = STAGES.get(raw.pop("stage", ""))
    if cls is None:
        raise InvalidArgument(f"{path}: unknown stage; expected autoencoder or unet", field="run")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in raw.items() if k in names})


def _base_type(tp):
    tp = eval(tp, vars(typing)) if isinstance(tp, str) else tp  # noqa: S307 - our own annotations only
    return {"int": int, "float": float, "str": str, "bool": bool, "list": list}.get(getattr(tp, "__name__", ""), tp)


def _read_config_file(path: Path, names: set[str]) -> dict:
    if not path.is_file():
        raise NotFound(f"--config={str(path)!r}: no such file", field="config")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as exc:  # noqa: BLE001 - any parse error becomes one clear message
        raise InvalidArgument(f"--config={str(path)!r} cannot be parsed ({exc.__class__.__name__}: {exc})",
                              field="config") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"--config={str(path)!r} must hold a mapping of option names to values", field="config")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - names - {"stage"})
    if unknown:
        raise InvalidArgument(f"--config={str(path)!r}: unknown option {unknown[0]!r} (options: "
                              f"{', '.join(sorted(names))})", field="config")
    data.pop("stage", None)
    return data
