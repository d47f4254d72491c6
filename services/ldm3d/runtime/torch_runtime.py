"""The ``torch`` runtime: a checkpoint's diffusers/transformers modules run in-process (parity, debugging, export).

Seamless panoramas are chosen per call (:mod:`ldm3d.models.seamless`): inside ``seamless_padding(True/False)`` the
U-Net and VAE pad as asked; outside any such block a 2:1 (equirectangular) input pads circularly along x and any
other shape as the checkpoint does, the same default ``GenerateParams`` resolves.

Checkpoints stored in fp16 (as published ones often are) are loaded in fp32: transformers 5 would otherwise keep a
fp16 text encoder in fp16 and the CPU pipeline would fail on a dtype mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import InvalidArgument, NotFound, Unavailable
from .base import MODEL_IO, ModelMetadata, ModelRuntime


def resolve_checkpoint(model: str | Path) -> Path:
    """A local folder as is; an ``org/name`` hub id downloaded (needs a reachable hub) to the local cache."""
    p = Path(model)
    if p.exists() or str(model).startswith((".", "/")) or str(model).count("/") != 1:
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(model), allow_patterns=["*.json", "*.txt", "*.safetensors"],
                                      ignore_patterns=["*.fp16.*", "safety_checker/*", "feature_extractor/*"]))
    except Exception as exc:  # no network, unknown repo, auth: one clear message
        raise Unavailable(f"model={model!r}: could not download it from the hub ({exc.__class__.__name__}: {exc}); "
                          "give a local checkpoint folder instead (`ldm3d make-tiny-model DIR` builds one offline)",
                          field="model") from None


def load_modules(folder: Path, names=("text_encoder", "unet", "vae")) -> dict:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    try:  # the per-file "Loading weights" bars are noise next to our own progress bar
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    loaders = {
        "text_encoder": lambda: CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32),
        "unet": lambda: UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32),
        "vae": lambda: AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32),
    }
    return {n: loaders[n]().eval() for n in names}


class TorchRuntime(ModelRuntime):
    """Runs ``text_encoder``, ``unet``, ``vae_decoder`` and ``vae_encoder`` with torch on the CPU in fp32."""

    kind = "torch"

    def __init__(self, modules: Mapping):
        """``modules``: ``text_encoder`` (CLIPTextModel), ``unet`` (UNet2DConditionModel), ``vae`` (AutoencoderKL)."""
        from ..models.seamless import make_switchable

        self._m = dict(modules)
        for name in ("unet", "vae"):
            if name in self._m:
                make_switchable(self._m[name])  # plain until a call asks (bit-identical to the unpatched module)
        self._calls = {
            "text_encoder": self._text_encoder,
            "unet": self._unet,
            "vae_decoder": self._vae_decoder,
            "vae_encoder": self._vae_encoder,
        }

    @classmethod
    def from_checkpoint(cls, folder: str | Path) -> TorchRuntime:
        return cls(load_modules(Path(folder)))

    # ------------------------------------------------------------------ ModelRuntime
    def infer(self, model, inputs, version=None):
        import torch

        call = self._calls.get(model)
        if call is None:
            raise NotFound(f"model={model!r} is not served by the torch runtime: use one of {', '.join(self._calls)}",
                           field="model")
        missing = [n for n in MODEL_IO[model]["inputs"] if n not in inputs]
        if missing:
            raise InvalidArgument(f"{model}: missing input tensor(s) {missing}", field="inputs")
        from ..models.seamless import is_panorama_size, requested, seamless_padding

        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
        seamless = requested()
        if seamless is None and model != "text_encoder":
            h, w = tensors[next(iter(MODEL_IO[model]["inputs"]))].shape[-2:]  # the image or latent input
            seamless = is_panorama_size(h, w)
        with torch.inference_mode(), seamless_padding(bool(seamless)):
            return call(tensors)

    def ready(self, model, version=None):
        return model in self._calls

    def metadata(self, model, version=None):
        if model not in self._calls:
            raise NotFound(f"model={model!r} is not served by the torch runtime", field="model")
        io = MODEL_IO[model]
        return ModelMetadata(model, None, tuple(io["inputs"].values()), tuple(io["outputs"].values()), "pytorch")

    # ------------------------------------------------------------------ the four graphs (also what ONNX exports)
    def _text_encoder(self, x):
        return {"last_hidden_state": self._m["text_encoder"](x["input_ids"])[0].numpy()}

    def _unet(self, x):
        out = self._m["unet"](x["sample"], x["timestep"], encoder_hidden_states=x["encoder_hidden_states"],
                              return_dict=False)[0]
        return {"out_sample": out.numpy()}

    def _vae_decoder(self, x):
        return {"sample": self._m["vae"].decode(x["latent_sample"], return_dict=False)[0].numpy()}

    def _vae_encoder(self, x):
        return {"latent_parameters": self._m["vae"].encode(x["sample"]).latent_dist.parameters.numpy()}
