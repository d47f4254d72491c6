"""``ldm3d-train publish``: a finished run → a new **release** of a model repository.

    ldm3d-train publish runs/unet --repository model_repository [--promote]

1. **Assemble** the full checkpoint the run implies, in the diffusers LDM3D layout, at ``RUN/assembled/`` (files are
   hard links where the filesystem allows): the base ``--model``, plus the trained parts (an autoencoder run's
   ``final/vae``; a U-Net run's ``final/unet`` *and* the autoencoder it was trained on, ``--vae``).
2. **Decide what changed**: each of the four models (``text_encoder``, ``unet``, ``vae_decoder``, ``vae_encoder``)
   keeps an existing version when that version was exported from the same weights (the sha256 of its weights file
   recorded by an earlier publish, or, for versions ``ldm3d export`` wrote, the base checkpoint's hash) at the same
   precision. Nothing is copied.
3. **Export** only the changed models through the same export + parity-verify path as ``ldm3d export``
   (:func:`ldm3d.export.export_models`: staging folder, ONNX Runtime vs torch, atomic rename). Each new
   version's manifest ``source`` records the training run: config, data manifest sha256, steps, final losses,
   validation metrics, code revision.
4. **Record release N** (the next number) with :func:`ldm3d.repository.releases.add_release`: the exact version of
   each model. ``--promote`` makes it the served default; without it the release exists but is not served by
   default (``ldm3d models promote --repository R --version N`` later, or ``--canary P``).

A failure at any point removes the versions this publish exported, so the repository is left as it was.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from ldm3d.errors import FailedPrecondition, NotFound
from ldm3d.repository.manifest import sha256_file

from .config import load_run_config

log = logging.getLogger(__name__)

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin",
                "pytorch_model.bin", "diffusion_pytorch_model.fp16.safetensors", "model.fp16.safetensors")
# the repository's four models and the checkpoint subfolder each is exported from
MODEL_SOURCES = {"text_encoder": "text_encoder", "unet": "unet", "vae_decoder": "vae", "vae_encoder": "vae"}


def weights_file(folder: Path) -> Path:
    for n in WEIGHT_NAMES:
        if (folder / n).is_file():
            return folder / n
    raise NotFound(f"{folder} holds no weights file (expected one of {', '.join(WEIGHT_NAMES)})", field="run")



def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def assemble(run: Path, out: Path) -> tuple[Path, dict[str, Path], Path]:
    """Write the run's full checkpoint into ``out``; return it, the folder each part came from, and the base."""
    from ldm3d.runtime.torch_runtime import resolve_checkpoint

    from .autoencoder import vae_folder

    cfg = load_run_config(run)
    final = run / "final"
    if not (final / "training.json").is_file():
        raise FailedPrecondition(f"{run} has no finished training (no final/training.json): finish it with "
                                 f"`ldm3d-train {cfg.stage} --out {run} --resume` first", field="run")
    base = resolve_checkpoint(cfg.model)
    parts = {"text_encoder": base / "text_encoder", "unet": base / "unet", "vae": base / "vae"}
    if cfg.stage == "autoencoder":
        parts["vae"] = final / "vae"
    else:
        parts["unet"] = final / "unet"
        if cfg.vae:
            parts["vae"] = vae_folder(Path(cfg.vae)) or Path(cfg.vae) / "vae"  # same rules as training
    for name, folder in parts.items():
        if not (folder / "config.json").is_file():
            raise NotFound(f"{folder} (the run's {name}) is missing; publish needs every part of the checkpoint",
                           field="run")
    for need in ("tokenizer", "scheduler"):
        if not (base / need).is_dir():
            raise NotFound(f"the base checkpoint {base} has no {need}/ folder", field="run")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name, folder in parts.items():
        shutil.copytree(folder, out / name, copy_function=_link_or_copy)
    for need in ("tokenizer", "scheduler"):
        shutil.copytree(base / need, out / need, copy_function=_link_or_copy)
    index = json.loads((base / "model_index.json").read_text()) if (base / "model_index.json").is_file() else {}
    # An autoencoder widened from SD v1.x makes an LDM3D checkpoint out of an SD one.
    index.update({"_class_name": "StableDiffusionLDM3DPipeline", "safety_checker": [None, None],
                  "feature_extractor": [None, None]})
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out, parts, base


def _find_version(repo, model: str, identity: str, base_hash: str, from_base: bool, precision: str,
                  prefer: int | None) -> int | None:
    """An existing version of ``model`` exported from these weights at this precision, or None."""
    if model not in repo.models():
        return None
    versions = sorted(repo.versions(model), key=lambda v: (v != prefer, -v))
    for v in versions:
        try:
            m = repo.manifest(model, v)
        except (FailedPrecondition, NotFound):
            continue
        src = m.get("source", {})
        if m.get("export", {}).get("precision") != precision:
            continue
        if src.get("weights_sha256") == identity or (from_base and not src.get("weights_sha256")
                                                     and src.get("sha256") == base_hash):
            return v
    return None


def publish(run: str | Path, repository: str | Path, promote: bool = False, fp16: bool = False) -> dict:
    """Publish ``run`` into ``repository`` as a new release; returns ``{number, models, exported, promoted}``."""
    from ldm3d.pipeline.spec import PipelineSpec, checkpoint_hash
    from ldm3d.repository import ModelRepository
    from ldm3d.export import export_models
    from ldm3d.repository.releases import RELEASE_MODELS, add_release, read_releases
    from ldm3d.repository.releases import promote as promote_release
    from ldm3d.runtime.torch_runtime import load_modules

    run = Path(run)
    if not run.is_dir():
        raise NotFound(f"RUN={str(run)!r}: no such run folder (the --out of a training stage)", field="run")
    cfg = load_run_config(run)
    training = json.loads((run / "final" / "training.json").read_text()) if (
        run / "final" / "training.json").is_file() else None
    assembled, parts, base = assemble(run, run / "assembled")
    PipelineSpec.from_checkpoint(assembled, hash_weights=False)  # a clear error when the parts do not fit
    base_hash = checkpoint_hash(base)
    precision = "fp16" if fp16 else "fp32"
    root = Path(repository)
    repo = ModelRepository(root, must_exist=False)
    existing = root.is_dir() and bool(repo.models())
    current = None
    if existing:
        try:
            current = read_releases(repo).current_release().models
        except NotFound:
            current = None
    kept, changed = {}, []
    digests = {sub: sha256_file(weights_file(parts[sub])) for sub in set(MODEL_SOURCES.values())}  # vae: once
    identities = {model: digests[sub] for model, sub in MODEL_SOURCES.items()}
    for model, sub in MODEL_SOURCES.items():
        folder = parts[sub]
        from_base = folder == base / sub
        v = _find_version(repo, model, identities[model], base_hash, from_base, precision,
                          (current or {}).get(model)) if existing else None
        if v is None:
            changed.append(model)
        else:
            kept[model] = v
    if not changed:
        raise FailedPrecondition(f"RUN={str(run)!r}: every model of this run is in {root} already (versions "
                                 f"{kept}); nothing to publish", field="run")
    version = repo.next_version() if existing else 1
    run_info = {
        "run": str(run.resolve()),
        "stage": cfg.stage,
        "config": training["config"] if training else cfg.to_dict(),
        "data_manifest_sha256": training.get("data_manifest_sha256") if training else None,
        "steps": training.get("steps") if training else None,
        "final_losses": training.get("final_losses") if training else None,
        "validation": training.get("validation") if training else None,
        "code_revision": training.get("code_revision") if training else None,
        "world_size": training.get("world_size") if training else None,
    }
    log.info("publishing %s: exporting %s as version %d, keeping %s", run, changed, version, kept)
    modules = load_modules(assembled)
    assembled_hash = checkpoint_hash(assembled)  # reads every weight file: once, not once per exported model
    exported: list[str] = []
    try:
        for model in changed:
            export_models(modules, root, version=version, models=(model,), fp16=fp16, checkpoint=assembled,
                          checkpoint_hash=assembled_hash,
                          source_extra={"checkpoint": f"training run {run.resolve()} (base {cfg.model})",
                                        "weights_sha256": identities[model], "training": run_info})
            exported.append(model)
        models = {m: (version if m in changed else kept[m]) for m in RELEASE_MODELS if m in repo.models()}
        release = add_release(root, models, source={"kind": "training", "run": str(run.resolve()),
                                                    "stage": cfg.stage, "base": cfg.model,
                                                    "exported": exported})
    except BaseException:
        for model in exported:  # leave the repository as it was
            d = root / model / str(version)
            if d.is_dir():
                trash = d.with_name(f".removing-{version}")
                d.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
        raise
    if promote:
        promote_release(root, release.number)
    return {"number": release.number, "models": dict(release.models), "exported": exported, "promoted": promote}
