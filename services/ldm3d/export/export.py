"""Export a checkpoint's four graphs to ONNX in Triton's layout, verify them against torch, then publish.

    ldm3d export --model demo/tiny --repository demo/repository
    ldm3d export --model Intel/ldm3d --repository model_repository --version 3 --fp16

Each model is written into a hidden staging folder (``<model>/.staging-<N>``, which Triton ignores), checked against
torch on random inputs of a *different* shape than the traced one (so the dynamic axes are exercised), and renamed to
``<model>/<N>`` only if its error is within tolerance: a half-written or inaccurate version is never visible.
The graphs are exactly the torch runtime's (:class:`ldm3d.runtime.torch_runtime.TorchRuntime`).
"""

from __future__ import annotations

import datetime as _dt
import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FailedPrecondition, InvalidArgument, NotFound
from ..runtime.base import DIFFUSION_MODELS, MODEL_IO
from ..repository.config import (check_config_matches_graph, config_for_graph, config_from_dict, onnx_io,
                                 write_config)
from ..repository.layout import ASSETS, CONFIG, MODEL_FILE, ModelRepository
from ..repository.manifest import write_manifest

log = logging.getLogger(__name__)

OPSET = 17
EXTERNAL_DATA = "model.onnx.data"
PROTOBUF_LIMIT = 2 * 1024**3  # protobuf cannot hold a graph ≥ 2 GiB: weights go to external data
TOLERANCE = {"fp32": 1e-3, "fp16": 3e-2}  # max |onnx − torch| / max(1, max |torch|)

# Symbolic axes per tensor (ONNX dim_param names, the same as MODEL_IO's). Batch is dynamic everywhere; spatial axes for U-Net and VAE.
DYNAMIC_AXES = {
    "text_encoder": {"input_ids": {0: "batch", 1: "sequence"}, "last_hidden_state": {0: "batch", 1: "sequence"}},
    "unet": {"sample": {0: "batch", 2: "h", 3: "w"}, "timestep": {0: "batch"},
             "encoder_hidden_states": {0: "batch", 1: "sequence"}, "out_sample": {0: "batch", 2: "h", 3: "w"}},
    "vae_decoder": {"latent_sample": {0: "batch", 2: "h", 3: "w"},
                    "sample": {0: "batch", 2: "H", 3: "W"}},
    "vae_encoder": {"sample": {0: "batch", 2: "H", 3: "W"},
                    "latent_parameters": {0: "batch", 2: "h", 3: "w"}},
    # depth models (ldm3d.export.depth_export)
    "depth_estimator": {"pixel_values": {0: "batch", 2: "height", 3: "width"},
                        "predicted_depth": {0: "batch", 1: "height", 2: "width"}},
    "depth_reference": {"pixel_values": {0: "batch", 2: "height", 3: "width"},
                        "predicted_depth": {0: "batch", 1: "height", 2: "width"}},
}

@dataclass(frozen=True)
class ExportResult:
    model: str
    version: int
    path: Path
    max_error: float
    seconds: float


def _graphs(modules: dict):
    """torch.nn.Modules computing exactly the torch runtime's four graphs (float32 in, float32 out)."""
    import torch

    class TextEncoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return self.m(input_ids, return_dict=False)[0]

    class UNet(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.m(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]

    class VaeDecoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, latent_sample):
            return self.m.decode(latent_sample, return_dict=False)[0]

    class VaeEncoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, sample):
            return self.m.encode(sample).latent_dist.parameters

    return {
        "text_encoder": lambda: TextEncoder(modules["text_encoder"]),
        "unet": lambda: UNet(modules["unet"]),
        "vae_decoder": lambda: VaeDecoder(modules["vae"]),
        "vae_encoder": lambda: VaeEncoder(modules["vae"]),
    }


def _fused_attention():
    """A diffusers attention processor whose ONNX export is one ``com.microsoft::MultiHeadAttention`` node.

    The plain export spells attention as MatMul → Softmax → MatMul and materialises every score matrix (2 × 8 × 4096²
    floats per block at 512²); ONNX Runtime's MultiHeadAttention kernel (CPU and CUDA) computes it tiled. In torch
    it is SDPA, so the parity check compares it with the unchanged module.
    """
    import torch
    import torch.nn.functional as F

    class MultiHeadAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, heads: int, scale: float):
            b, s, d = q.shape

            def split(x):
                return x.view(b, -1, heads, d // heads).transpose(1, 2)

            return F.scaled_dot_product_attention(split(q), split(k), split(v), scale=scale).transpose(1, 2).reshape(
                b, s, d)

        @staticmethod
        def symbolic(g, q, k, v, heads, scale):
            return g.op("com.microsoft::MultiHeadAttention", q, k, v, num_heads_i=heads, scale_f=scale)

    class Processor:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *a, **kw):
            if (attention_mask is not None or hidden_states.ndim != 3 or attn.spatial_norm is not None
                    or attn.group_norm is not None or attn.residual_connection or attn.norm_q is not None):
                raise FailedPrecondition("fused attention export supports plain SD attention blocks only; export "
                                         "without --fused-attention")
            context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
            if attn.norm_cross:
                context = attn.norm_encoder_hidden_states(context)
            out = MultiHeadAttention.apply(attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context),
                                           attn.heads, float(attn.scale))
            return attn.to_out[1](attn.to_out[0](out)) / attn.rescale_output_factor

    return Processor()


def _sample_inputs(model: str, modules: dict, batch: int, shape: tuple[int, int], seed: int) -> dict[str, np.ndarray]:
    """Random inputs of the right kind; ``shape`` is the latent (h, w)."""
    rng = np.random.default_rng(seed)
    if model == "text_encoder":
        cfg = modules["text_encoder"].config
        return {"input_ids": rng.integers(0, cfg.vocab_size, (batch, cfg.max_position_embeddings), dtype=np.int64)}
    h, w = shape
    latent = int(modules["unet"].config.in_channels) if "unet" in modules else int(modules["vae"].config.latent_channels)
    if model == "unet":
        cfg = modules["unet"].config
        return {"sample": rng.standard_normal((batch, latent, h, w), dtype=np.float32),
                "timestep": rng.uniform(0, 999, (batch,)).astype(np.float32),
                "encoder_hidden_states": rng.standard_normal((batch, 77, int(cfg.cross_attention_dim)), dtype=np.float32)}
    vae = modules["vae"].config
    factor = 2 ** (len(vae.block_out_channels) - 1)
    if model == "vae_decoder":
        return {"latent_sample": rng.standard_normal((batch, int(vae.latent_channels), h, w), dtype=np.float32)}
    return {"sample": rng.uniform(-1, 1, (batch, int(vae.in_channels), h * factor, w * factor)).astype(np.float32)}


def _latent_multiple(model: str, modules: dict) -> int:
    if model == "unet":
        return 2 ** (len(modules["unet"].config.block_out_channels) - 1)
    return 1


def _export_onnx(graph, inputs: dict[str, np.ndarray], model: str, out: Path, opset: int, fp16: bool,
                 fused_attention: bool = False) -> None:
    import onnx
    import torch

    raw_dir = out.parent / f".raw-{model}"
    shutil.rmtree(raw_dir, ignore_errors=True)
    raw_dir.mkdir(parents=True)
    names_out = list(MODEL_IO[model]["outputs"])
    saved = None
    if fused_attention:
        saved = dict(graph.m.attn_processors)
        graph.m.set_attn_processor(_fused_attention())
    try:
        # The tracer warns about Python-side shape checks (constant in our graphs by construction) and about
        # Slice constant folding: expected here, and the parity check below is what decides if the graph is right.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
            torch.onnx.export(graph, tuple(torch.from_numpy(v) for v in inputs.values()), str(raw_dir / MODEL_FILE),
                              input_names=list(inputs), output_names=names_out, dynamic_axes=DYNAMIC_AXES[model],
                              opset_version=opset, do_constant_folding=True, dynamo=False,
                              custom_opsets={"com.microsoft": 1} if fused_attention else None)
    finally:
        if saved is not None:
            graph.m.set_attn_processor(saved)
    size = sum(p.stat().st_size for p in raw_dir.iterdir())
    if fp16:  # weights and compute in fp16, inputs/outputs kept fp32 (the runtime contract)
        from onnxruntime.transformers.float16 import convert_float_to_float16

        m = convert_float_to_float16(onnx.load(str(raw_dir / MODEL_FILE)), keep_io_types=True)
        size = m.ByteSize() if size < PROTOBUF_LIMIT else PROTOBUF_LIMIT  # big graphs keep external data
    else:
        m = None
    if size < PROTOBUF_LIMIT and (m is not None or len(list(raw_dir.iterdir())) == 1):
        if m is None:
            (raw_dir / MODEL_FILE).replace(out)
        else:
            onnx.save_model(m, str(out))
    else:  # over protobuf's limit (the exporter scattered one file per tensor): one external data file
        m = m if m is not None else onnx.load(str(raw_dir / MODEL_FILE), load_external_data=True)
        onnx.save_model(m, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=EXTERNAL_DATA, size_threshold=1024)
    del m
    shutil.rmtree(raw_dir, ignore_errors=True)


def _max_error(ref: np.ndarray, got: np.ndarray) -> float:
    if ref.shape != got.shape:
        return float("inf")
    return float(np.max(np.abs(ref.astype(np.float64) - got)) / max(1.0, float(np.max(np.abs(ref)))))


def export_models(
    modules: dict,
    repository: str | Path,
    version: int | None = None,
    models=DIFFUSION_MODELS,
    fp16: bool = False,
    opset: int = OPSET,
    tolerance: float | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_hash: str = "",
    fused_attention: bool = False,
    seamless: bool = False,
    source_extra: dict | None = None,
) -> list[ExportResult]:
    """Export in-memory fp32 modules (``text_encoder``, ``unet``, ``vae``) into ``repository`` as ``version``.

    ``checkpoint`` (a diffusers folder) adds the config/tokenizer assets that
    :func:`ldm3d.pipeline.spec.spec_from_repository` reads.
    ``fused_attention`` exports U-Net attention as ONNX Runtime's ``MultiHeadAttention`` contrib op (tiled kernels on
    CUDA; on this CPU it saved only ~3 % of a 512² step's CPU time). The default keeps standard ONNX ops, which every
    backend, TensorRT's ONNX parser included, reads.
    ``seamless`` bakes circular x padding into the U-Net and VAE graphs (:mod:`ldm3d.models.seamless`: Slice +
    Concat, not a circular Pad op) and records it in their manifests (``export.seamless``).
    ``source_extra`` is merged into each manifest's ``source`` (``ldm3d-train publish`` records the training run there).
    Raises ``InvalidArgument`` when the version exists, ``FailedPrecondition`` when a graph misses ``tolerance``.
    """
    root = Path(repository)
    root.mkdir(parents=True, exist_ok=True)
    repo = ModelRepository(root)
    unknown = [m for m in models if m not in DIFFUSION_MODELS]
    if unknown:
        raise InvalidArgument(f"models={unknown} is invalid: use some of {', '.join(DIFFUSION_MODELS)}", field="models")
    version = check_new_version(repo, models, repo.next_version() if version is None else version)
    from ..models.seamless import make_switchable, seamless_padding

    if seamless:
        for name in ("unet", "vae"):
            if name in modules:
                make_switchable(modules[name])  # plain unless switched on: the caller's modules behave as before
    graphs = _graphs(modules)
    source = {"checkpoint": str(checkpoint) if checkpoint else "in-memory modules", "sha256": checkpoint_hash,
              **(source_extra or {})}
    results = []
    for model in models:
        mult = _latent_multiple(model, modules)
        fused = fused_attention and model == "unet"
        wraps = model != "text_encoder"
        extra = {"attention": "com.microsoft.MultiHeadAttention" if fused else "standard ONNX ops"}
        if wraps:
            extra["seamless"] = bool(seamless)
        with seamless_padding(seamless and wraps):  # traced and parity-checked with the padding it will serve
            results.append(publish_version(
                repo, model, version, graphs[model]().eval(),
                trace_inputs=_sample_inputs(model, modules, 2, (2 * mult, 2 * mult), seed=0),
                # parity at another batch size and a non-square size than traced
                check_inputs=_sample_inputs(model, modules, 1, (4 * mult, 3 * mult), seed=1),
                source=source, fp16=fp16, opset=opset, tolerance=tolerance,
                assets=(lambda staging, model=model: _copy_assets(Path(checkpoint), model, staging))
                if checkpoint is not None else None,
                fused_attention=fused,
                export_extra=extra))
    return results


def check_new_version(repo: ModelRepository, models, version: int) -> int:
    """``version`` as an int, once it is positive and no folder of ``models`` has it yet (before any export work)."""
    version = int(version)
    if version < 1:
        raise InvalidArgument(f"version={version} is invalid: versions are positive integers", field="version")
    for model in models:
        if (repo.root / model / str(version)).exists():
            raise InvalidArgument(f"version={version} is invalid: {repo.root / model / str(version)} exists already "
                                  "(pick another --version, or `ldm3d models remove` it first)", field="version")
    return version


def publish_version(
    repo: ModelRepository,
    model: str,
    version: int,
    graph,
    trace_inputs: dict[str, np.ndarray],
    check_inputs: dict[str, np.ndarray],
    *,
    source: dict,
    fp16: bool = False,
    opset: int = OPSET,
    tolerance: float | None = None,
    assets=None,
    fused_attention: bool = False,
    export_extra: dict | None = None,
    patch_export=None,
) -> ExportResult:
    """The one publishing path of every model: export ``graph`` (a torch module, float32 in and out, outputs named
    by ``MODEL_IO[model]``, axes by ``DYNAMIC_AXES[model]``) traced on ``trace_inputs`` into ``<model>/.staging-N``,
    compare ONNX Runtime with torch on ``check_inputs`` (another shape than traced), write config.pbtxt, the
    ``assets(staging)`` files and the manifest, and only then rename the folder to ``<model>/<version>``.

    ``patch_export`` is a context manager factory applied around the ONNX export only (the torch reference of the
    parity check runs the unpatched module). Raises ``FailedPrecondition`` when the error is above ``tolerance``.
    """
    import contextlib

    import onnxruntime as ort
    import torch

    t0 = time.perf_counter()
    precision = "fp16" if fp16 else "fp32"
    tolerance = TOLERANCE[precision] if tolerance is None else float(tolerance)
    model_dir = repo.root / model
    model_dir.mkdir(exist_ok=True)
    staging = model_dir / f".staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with patch_export() if patch_export is not None else contextlib.nullcontext():
            _export_onnx(graph, trace_inputs, model, staging / MODEL_FILE, opset, fp16, fused_attention)
        with torch.inference_mode():
            ref = graph(*(torch.from_numpy(v) for v in check_inputs.values())).numpy()
        sess = ort.InferenceSession(str(staging / MODEL_FILE), ort.SessionOptions(), providers=["CPUExecutionProvider"])
        got = sess.run(None, check_inputs)[0]
        del sess
        err = _max_error(ref, got)
        if not err <= tolerance:
            raise FailedPrecondition(
                f"model {model!r} version {version}: the ONNX graph differs from torch by {err:.3g} (relative max "
                f"abs error), above the tolerance {tolerance:g}; nothing was published")
        inputs, outputs = onnx_io(staging / MODEL_FILE)
        _write_model_config(repo, model, version, inputs, outputs)
        if assets is not None:
            assets(staging)
        write_manifest(staging, {
            "model": model,
            "version": version,
            "format": "onnx",
            "source": source,
            "export": {"opset": opset, "precision": precision, "exporter": "torch.onnx (TorchScript, dynamo=False)"
                       + (" + onnxruntime float16 conversion (fp32 inputs/outputs)" if fp16 else ""),
                       "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in DYNAMIC_AXES[model].items()},
                       "external_data": (staging / EXTERNAL_DATA).is_file(),
                       **(export_extra or {}),
                       "torch": torch.__version__, "onnxruntime": ort.__version__},
            "parity": {"max_error": err, "tolerance": tolerance, "metric": "max|onnx-torch| / max(1, max|torch|)",
                       "inputs": {k: list(v.shape) for k, v in check_inputs.items()}},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        })
        staging.rename(model_dir / str(version))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result = ExportResult(model, version, model_dir / str(version), err, time.perf_counter() - t0)
    log.info("exported %s version %d (error %.2g) in %.1f s", model, version, err, result.seconds)
    return result


def _write_model_config(repo: ModelRepository, model: str, version: int, inputs, outputs) -> None:
    """Write config.pbtxt for the graph; refuse when other versions were exported for a different graph."""
    path = repo.root / model / CONFIG
    existing = None
    if path.is_file():
        from ..repository import pbtxt

        existing = pbtxt.loads(path.read_text(), source=str(path))
    new = config_for_graph(model, inputs, outputs, existing)
    others = [int(p.name) for p in path.parent.iterdir() if p.is_dir() and p.name.isdigit()] if path.parent.is_dir() else []
    if existing is not None and others:
        old_cfg = config_from_dict(existing, path)
        new_cfg = config_from_dict(new, path)
        if (old_cfg.inputs, old_cfg.outputs, old_cfg.max_batch_size) != (new_cfg.inputs, new_cfg.outputs,
                                                                          new_cfg.max_batch_size):
            raise FailedPrecondition(
                f"model {model!r} version {version}: its graph's tensors differ from {path}, which versions "
                f"{others} were exported for (a different checkpoint architecture?); export into another repository")
    write_config(path, new)
    check_config_matches_graph(config_from_dict(new, path), repo.root / model / f".staging-{version}" / MODEL_FILE,
                               version)


def _copy_assets(checkpoint: Path, model: str, dest: Path) -> None:
    for src, name in ASSETS[model].items():
        s = checkpoint / src
        if s.is_dir():
            shutil.copytree(s, dest / name)
        elif s.is_file():
            shutil.copy2(s, dest / name)
        else:
            raise NotFound(f"model={str(checkpoint)!r}: {src} is missing, so {model} cannot carry it", field="model")


def export_checkpoint(checkpoint: str | Path, repository: str | Path, version: int | None = None,
                      models=DIFFUSION_MODELS, fp16: bool = False, opset: int = OPSET,
                      tolerance: float | None = None, fused_attention: bool = False,
                      seamless: bool = False) -> list[ExportResult]:
    """Load a diffusers LDM3D folder (fp32) and :func:`export_models` it with its assets."""
    from ..pipeline.spec import PipelineSpec, checkpoint_hash
    from ..runtime.torch_runtime import load_modules, resolve_checkpoint

    folder = resolve_checkpoint(checkpoint)
    PipelineSpec.from_checkpoint(folder, hash_weights=False)  # a clear error for a folder that is not LDM3D
    modules = load_modules(folder)
    return export_models(modules, repository, version, models, fp16, opset, tolerance, checkpoint=folder,
                         checkpoint_hash=checkpoint_hash(folder), fused_attention=fused_attention, seamless=seamless)
