"""What the pipeline needs to know about a checkpoint besides its weights, read from configs, never literals.

A :class:`PipelineSpec` comes either from a diffusers checkpoint folder (:meth:`PipelineSpec.from_checkpoint`) or
from a model repository's version folders (:func:`spec_from_repository`), which carry the same config files as
assets (``ldm3d.repository.layout.ASSETS``); both go through one builder, :meth:`PipelineSpec.from_configs`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FailedPrecondition, InvalidArgument, NotFound

# Files every LDM3D checkpoint folder must have (Intel/ldm3d layout); weights may be .safetensors or .bin.
REQUIRED_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "text_encoder/config.json",
    "unet/config.json",
    "vae/config.json",
)
WEIGHT_FILES = {
    "text_encoder": ("model.safetensors", "pytorch_model.bin", "model.fp16.safetensors"),
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.safetensors"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.safetensors"),
}


@dataclass(frozen=True)
class PipelineSpec:
    """Sizes, scaling factors and the scheduler of one LDM3D checkpoint."""

    source: str  # checkpoint folder, hub id, or repository path
    tokenizer_dir: Path  # vocab.json + merges.txt (+ tokenizer_config.json)
    scheduler_config: dict  # the checkpoint's own scheduler config (class name included)
    vae_scaling_factor: float  # latents are divided by this before decoding (0.18215 for SD v1)
    vae_scale_factor: int  # image pixels per latent pixel: 2 ** (len(vae.block_out_channels) - 1)
    latent_channels: int  # unet.in_channels
    rgbd_channels: int  # vae.out_channels: 6 (Intel/ldm3d) or 4 (-4c, -pano)
    sample_size: int  # unet.sample_size (latent); default image side = sample_size * vae_scale_factor
    max_text_length: int  # tokenizer model_max_length / text encoder positions (77)
    text_hidden_size: int  # 768 for SD v1.x
    checkpoint_hash: str = ""  # sha256 over the config + weight files' contents (short form in metadata)
    versions: dict = field(default_factory=dict)  # model name → version (repository runtimes)
    release: int | None = None  # the release those versions make (repository runtimes; 0 = unreleased mix)
    # seamless (circular x) padding: None = chosen per request (torch runtime); True/False = baked into the ONNX
    # graphs by `ldm3d export [--seamless]` (repository runtimes), recorded in the versions' manifests
    seamless: bool | None = None

    @property
    def default_height(self) -> int:
        return self.sample_size * self.vae_scale_factor

    @property
    def default_width(self) -> int:
        return self.sample_size * self.vae_scale_factor

    @property
    def scheduler_name(self) -> str:
        from .schedulers import name_of

        return name_of(self.scheduler_config.get("_class_name", ""))

    @classmethod
    def from_checkpoint(cls, folder: str | Path, hash_weights: bool = True) -> PipelineSpec:
        """Read the spec of a local diffusers LDM3D folder. Raises ``NotFound`` naming the first missing file."""
        root = Path(folder)
        if not root.is_dir():
            raise NotFound(f"model={str(folder)!r}: no such checkpoint folder (give a local diffusers LDM3D folder, "
                           "e.g. one made by `ldm3d make-tiny-model DIR`, or a hub id such as Intel/ldm3d-4c)",
                           field="model")
        for rel in REQUIRED_FILES:
            if not (root / rel).is_file():
                raise NotFound(f"model={str(folder)!r} is not an LDM3D checkpoint: {rel} is missing", field="model")
        for sub, names in WEIGHT_FILES.items():
            if not any((root / sub / n).is_file() for n in names):
                raise NotFound(f"model={str(folder)!r}: no weights in {sub}/ (expected one of {', '.join(names)})",
                               field="model")
        index = _json(root / "model_index.json")
        if index.get("_class_name") not in (None, "StableDiffusionLDM3DPipeline"):
            raise InvalidArgument(
                f"model={str(folder)!r} is a {index.get('_class_name')} checkpoint, not an LDM3D one "
                "(model_index.json _class_name must be StableDiffusionLDM3DPipeline)", field="model")
        tok_cfg_path = root / "tokenizer/tokenizer_config.json"
        return cls.from_configs(
            source=str(root),
            tokenizer_dir=root / "tokenizer",
            scheduler_config=_json(root / "scheduler/scheduler_config.json"),
            unet=_json(root / "unet/config.json"),
            vae=_json(root / "vae/config.json"),
            text=_json(root / "text_encoder/config.json"),
            tokenizer=_json(tok_cfg_path) if tok_cfg_path.is_file() else {},
            checkpoint_hash=checkpoint_hash(root) if hash_weights else "",
            where=f"model={str(folder)!r}",
        )

    @classmethod
    def from_configs(cls, *, source: str, tokenizer_dir: Path, scheduler_config: dict, unet: dict, vae: dict,
                     text: dict, tokenizer: dict, checkpoint_hash: str = "", versions: dict | None = None,
                     release: int | None = None, where: str = "", seamless: bool | None = None) -> PipelineSpec:
        """The one builder: a spec from a checkpoint's ``unet``, ``vae``, ``text_encoder`` and tokenizer configs."""
        if vae.get("out_channels") not in (4, 6):
            raise InvalidArgument(
                f"{where or source}: vae/config.json has out_channels={vae.get('out_channels')}, so it is not an "
                "LDM3D autoencoder (6 for Intel/ldm3d, 4 for Intel/ldm3d-4c and -pano)", field="model")
        max_len = min(int(tokenizer.get("model_max_length", 77)), int(text.get("max_position_embeddings", 77)))
        return cls(
            source=source,
            tokenizer_dir=tokenizer_dir,
            scheduler_config=scheduler_config,
            vae_scaling_factor=float(vae.get("scaling_factor", 0.18215)),
            vae_scale_factor=2 ** (len(vae["block_out_channels"]) - 1),
            latent_channels=int(unet["in_channels"]),
            rgbd_channels=int(vae["out_channels"]),
            sample_size=int(unet["sample_size"]),
            max_text_length=max_len,
            text_hidden_size=int(text["hidden_size"]),
            checkpoint_hash=checkpoint_hash,
            versions=dict(versions or {}),
            release=release,
            seamless=seamless,
        )


def spec_from_repository(repository: str | Path, version: int | None = None) -> PipelineSpec:
    """Rebuild the :class:`PipelineSpec` from the checkpoint files stored with a model repository's versions.

    ``version`` is a release number (:mod:`ldm3d.repository.releases`; in a repository that records none, release
    N = version N of every model); ``None`` takes the current release. ``spec.versions`` maps each model to the
    version the runtime must be asked for, ``spec.release`` names the release.
    """
    from ..repository.releases import read_releases

    rel = read_releases(repository)
    return spec_for_release(repository, rel.current_release() if version is None else rel.get(version))


def spec_for_release(repository: str | Path, release) -> PipelineSpec:
    """The :class:`PipelineSpec` of one :class:`~ldm3d.repository.releases.Release` of ``repository``."""
    from ..repository.layout import ASSETS, ModelRepository
    from ..repository.releases import REQUIRED_MODELS

    repo = ModelRepository(repository)
    versions = dict(release.models)
    for needed in REQUIRED_MODELS:
        if needed not in versions:
            raise NotFound(f"repository={str(repository)!r} has no {needed!r} model (export a checkpoint into it "
                           "with `ldm3d export`)", field="repository")

    def asset(model: str, checkpoint_path: str) -> Path:
        p = repo.version_dir(model, versions[model]) / ASSETS[model][checkpoint_path]
        if not p.exists():
            raise FailedPrecondition(f"model {model!r} version {versions[model]}: {p} is missing (the version was "
                                     "exported without its checkpoint's config files; re-export it with --model)")
        return p

    # seamless padding is baked into the U-Net and VAE graphs (`ldm3d export --seamless`): they must agree
    manifests = {m: repo.manifest(m, v) for m, v in versions.items() if m != "text_encoder"}
    seamless = {m: bool(man.get("export", {}).get("seamless", False)) for m, man in manifests.items()}
    if len(set(seamless.values())) > 1:
        raise FailedPrecondition(
            f"repository={str(repository)!r}: the U-Net and VAE versions disagree on seamless padding ({seamless}); "
            "export them together with or without `ldm3d export --seamless`")
    tok_dir = asset("text_encoder", "tokenizer")
    tok_cfg = tok_dir / "tokenizer_config.json"
    return PipelineSpec.from_configs(
        source=str(Path(repository)),
        tokenizer_dir=tok_dir,
        scheduler_config=_json(asset("unet", "scheduler/scheduler_config.json")),
        unet=_json(asset("unet", "unet/config.json")),
        vae=_json(asset("vae_decoder", "vae/config.json")),
        text=_json(asset("text_encoder", "text_encoder/config.json")),
        tokenizer=_json(tok_cfg) if tok_cfg.is_file() else {},
        checkpoint_hash=manifests["unet"].get("source", {}).get("sha256", ""),
        versions=versions,
        release=release.number,
        seamless=seamless["unet"],
    )


def checkpoint_hash(root: Path) -> str:
    """sha256 over every config and weight file of a checkpoint folder, in a fixed order (path + contents)."""
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file() and not q.name.startswith(".")):
        if p.suffix not in (".json", ".txt", ".safetensors", ".bin"):
            continue
        h.update(str(p.relative_to(root)).encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{path} is not valid JSON ({exc})", field="model") from None
