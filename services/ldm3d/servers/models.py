"""The models one serving process answers for: a name, its versions, and the loaded pipeline (or only its spec).

A checkpoint folder is one model with one version (the first 12 hex digits of its sha256). A model repository's
versions are Triton's version folders; other versions than the default load on first request. A gateway whose
stages are all remote loads specs only (sizes, defaults and scheduler: no weights).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import NotFound
from ..pipeline import LDM3DPipeline, PipelineSpec
from . import metrics
from .config import ServeConfig


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str  # the label clients send and receive as `version` / `model_version`
    spec: PipelineSpec
    pipeline: LDM3DPipeline | None  # None when this process only needs the spec
    runtime_kind: str  # "torch", "embedded" or "triton": what runs (or, remotely, ran) the models

    def require_pipeline(self) -> LDM3DPipeline:
        if self.pipeline is None:  # a wiring bug: servicers that compute are only built with weights loaded
            raise RuntimeError(f"model {self.name} {self.version} was loaded without weights")
        return self.pipeline



class ModelRegistry:
    def __init__(self, cfg: ServeConfig, load_weights: bool = True):
        self.cfg, self.load_weights = cfg, load_weights
        self._lock = threading.Lock()
        self._loaded: dict[str, ServedModel] = {}
        first = self._load(None)
        self.default_name, self.default_version = first.name, first.version
        self._loaded[first.version] = first

    # -- public
    def get(self, model: str = "", version: str = "") -> ServedModel:
        """The model named ``model`` at ``version`` (empty: the defaults). ``NotFound`` names the field."""
        if model and model != self.default_name:
            raise NotFound(f"model={model!r} is not served here: use {self.default_name!r} (see ListModels) or "
                           "leave it empty for the default", field="model")
        if not version:
            return self._loaded[self.default_version]
        with self._lock:
            if version in self._loaded:
                return self._loaded[version]
        if self.cfg.repository and version.isdigit():
            try:
                served = self._load(int(version))
            except NotFound:
                served = None
            if served is not None:
                with self._lock:
                    return self._loaded.setdefault(served.version, served)
        raise NotFound(f"version={version!r} of model {self.default_name!r} does not exist: use one of "
                       f"{', '.join(map(repr, self.versions()))} or leave it empty for the default", field="version")

    def default(self) -> ServedModel:
        return self._loaded[self.default_version]

    def versions(self) -> list[str]:
        """Versions clients can ask for, oldest first (a repository's version folders, else the one loaded)."""
        found = set(self._loaded)
        if self.cfg.repository:
            from ..repository import ModelRepository

            # the U-Net's served versions: the weights that fine-tuning publishes (a version number takes that
            # version of all four models, see ldm3d.pipeline.spec.spec_from_repository)
            found |= {str(v) for v in ModelRepository(self.cfg.repository).served_versions("unet")}
        return sorted(found, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))

    def close(self) -> None:
        for served in self._loaded.values():
            if served.pipeline is not None:
                served.pipeline.runtime.close()

    # -- loading
    def _load(self, version: int | None) -> ServedModel:
        cfg = self.cfg
        if cfg.checkpoint:
            from ..runtime.torch_runtime import resolve_checkpoint

            folder = resolve_checkpoint(cfg.checkpoint)
            if self.load_weights:
                pipe = LDM3DPipeline.from_checkpoint(folder, text_cache_size=cfg.text_cache_size)
                spec = pipe.spec
            else:
                pipe, spec = None, PipelineSpec.from_checkpoint(folder)
            name = cfg.model_name or Path(folder).name
            label, kind = spec.checkpoint_hash[:12] or "1", "torch"
        else:
            if self.load_weights:
                pipe = LDM3DPipeline.from_repository(cfg.repository, runtime=cfg.runtime, triton_url=cfg.triton_url,
                                                     version=version, text_cache_size=cfg.text_cache_size,
                                                     **cfg.runtime_options)
                spec = pipe.spec
                # load (and, embedded, sha256-verify) every model now: a corrupted file fails the start or the
                # version's first request, never a generation half-way
                for model, v in spec.versions.items():
                    pipe.runtime.metadata(model, v)
            else:
                from ..pipeline.spec import spec_from_repository

                pipe, spec = None, spec_from_repository(cfg.repository, version)
            name = cfg.model_name or "ldm3d"
            label, kind = str(spec.versions.get("unet", version or 1)), cfg.runtime
        metrics.MODEL_INFO.labels(name, label, kind, str(spec.rgbd_channels)).set(1)
        return ServedModel(name, label, spec, pipe, kind)
