"""Depth estimation for LDM3D: DPT-Large (relative, the training depth) and ZoeDepth-N (metric, the §4.3 reference).

    from ldm3d.evaluation.depth_models import load_depth_model, estimate_relative_depth, estimate_metric_depth
    dpt = load_depth_model("Intel/dpt-large")           # or a local folder in the hub layout
    depth_u16 = estimate_relative_depth(dpt, rgb_u8)     # uint16 [H, W], larger = nearer
    zoe = load_depth_model("Intel/zoedepth-nyu")
    metres = estimate_metric_depth(zoe, rgb_u8)          # float32 [H, W] in metres

Every estimate is three steps, so that the middle one can be served (``ModelRuntime.infer`` with the model names
``depth_estimator`` / ``depth_reference``, tensors ``pixel_values`` → ``predicted_depth``; see
:data:`DEPTH_MODEL_IO`):

1. **preprocess** (numpy out): the checkpoint's own transformers image processor (PIL backend: no torchvision);
2. **predict**: ``pixel_values float32 [B, 3, h, w]`` → ``predicted_depth float32 [B, h, w]``; a plain callable
   (:class:`Predictor`), either the torch module (:func:`torch_predictor`) or a runtime (:func:`runtime_predictor`);
3. **postprocess** (numpy): bicubic resize back to the image (as transformers' depth pipeline does), unpadding for
   ZoeDepth, and for DPT the per-image normalisation to 16 bits.

LDM3D training convention for the relative depth: DPT-Large at 384×384 (the image is squashed, not cropped), output
resized back to the image size with bicubic interpolation (torch ``align_corners=False``, no antialias), then
``round((d − min) / (max − min) · 65535)`` per image: larger = nearer, like DPT's own output (inverse depth).

ZoeDepth follows its original inference: reflect padding of ``int(√(h/2)·3)`` rows / ``int(√(w/2)·3)`` columns
before resizing (done by its processor), removed after resizing back, and by default the mean of the prediction and
of the horizontally flipped image's prediction flipped back (``flip_aug``, as ZoeDepth's ``infer_pil``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..codec import DEPTH_MAX
from ..errors import FailedPrecondition, InvalidArgument, NotFound
from ..models.hub import DEPTH_HUB_IDS, DPT, ZOEDEPTH
from ..runtime.base import MODEL_IO, TensorSpec
from .depth_metrics import DEFAULT_SAMPLES, DEFAULT_SEED, DepthMetrics, depth_metrics

log = logging.getLogger(__name__)

DepthKind = Literal["dpt", "zoedepth"]

#: The LDM3D training convention: DPT-Large sees the image resized to 384×384.
LDM3D_DPT_SIZE = 384

#: ZoeDepth's padding factor (rows/columns padded = int(sqrt(side / 2) * factor)), fixed in its original code and in
#: transformers' ZoeDepth processor, which pads by the same rule without exposing the factor.
ZOEDEPTH_PADDING_FACTOR = 3

#: Runtime model names per kind (shared DESIGN.md §2) and their tensor contract, for ONNX export and config.pbtxt.
RUNTIME_MODEL_NAMES: dict[str, str] = {"dpt": "depth_estimator", "zoedepth": "depth_reference"}
DEPTH_MODEL_IO: dict[str, dict[str, dict[str, TensorSpec]]] = {
    name: MODEL_IO[name] for name in RUNTIME_MODEL_NAMES.values()
}

#: ``pixel_values float32 [B, 3, h, w]`` → ``predicted_depth float32 [B, h, w]``
Predictor = Callable[[np.ndarray], np.ndarray]


@dataclass
class DepthModel:
    """A depth checkpoint ready to run: its kind, its image processor and the model call."""

    kind: DepthKind
    processor: object  # transformers DPTImageProcessorPil / ZoeDepthImageProcessorPil
    predict: Predictor
    source: str  # folder or hub id it was loaded from
    runtime: object = None  # the ModelRuntime behind ``predict`` when served from a repository

    @property
    def runtime_name(self) -> str:
        return RUNTIME_MODEL_NAMES[self.kind]

    def close(self) -> None:
        """Release the runtime's sessions or connections (a no-op for torch modules)."""
        if self.runtime is not None:
            self.runtime.close()


# --------------------------------------------------------------------------------------------- loading
def load_depth_model(name_or_path: str, *, kind: DepthKind | None = None, field: str = "model") -> DepthModel:
    """Load a DPT (``Intel/dpt-large`` layout) or ZoeDepth (``Intel/zoedepth-nyu`` layout) checkpoint in float32 on CPU.

    ``kind`` is read from ``config.json``'s ``model_type``; pass it to insist on one (a mismatch is an
    ``InvalidArgument`` naming ``field``). A missing folder, or a hub id that cannot be fetched, is ``NotFound``.
    """
    found, model = load_depth_module(name_or_path, kind=kind, field=field)
    return DepthModel(
        found, load_processor(name_or_path, found, field=field), torch_predictor(model), str(name_or_path)
    )


def load_depth_module(name_or_path: str, *, kind: DepthKind | None = None, field: str = "model"):
    """``(kind, module)``: the transformers ``DPTForDepthEstimation`` / ``ZoeDepthForDepthEstimation`` in float32,
    eval mode (what :func:`load_depth_model` wraps, and what ``ldm3d export-depth`` exports). Errors as there."""
    import torch
    from transformers import DPTForDepthEstimation, ZoeDepthForDepthEstimation

    found = _model_type(name_or_path, field)
    if kind is not None and found != kind:
        raise InvalidArgument(
            f"{field}={name_or_path!r} is a {found} checkpoint; this needs a {kind} one "
            f"({DEPTH_HUB_IDS[kind]} or a folder in its layout)",
            field=field,
        )
    cls = DPTForDepthEstimation if found == "dpt" else ZoeDepthForDepthEstimation
    try:
        return found, cls.from_pretrained(name_or_path, dtype=torch.float32).eval()
    except OSError as exc:
        raise NotFound(f"{field}={name_or_path!r}: cannot load the weights ({exc})", field=field) from None


def depth_kind(name_or_path: str, *, field: str = "model") -> DepthKind:
    """``dpt`` or ``zoedepth`` from the checkpoint's ``config.json`` (no weights read); errors as
    :func:`load_depth_model`'s."""
    return _model_type(str(name_or_path), field)


def load_depth_model_from_repository(
    repository: str | Path,
    model: str,
    *,
    runtime: str = "embedded",
    version: int | None = None,
    triton_url: str | None = None,
    field: str = "repository",
    **runtime_options,
) -> DepthModel:
    """A :class:`DepthModel` served from a model repository written by ``ldm3d export-depth``.

    ``model`` is ``depth_estimator`` / ``depth_reference`` (or the kind, ``dpt`` / ``zoedepth``). The image processor
    is rebuilt from the ``preprocessor_config.json`` stored in the version folder, and every model call goes through
    ``runtime`` (``embedded``: ONNX Runtime in-process; ``triton``: a server at ``triton_url`` serving the same
    repository) pinned to the resolved version, so the processor and the graph always belong together.
    """
    from ..repository import ModelRepository
    from ..runtime import create_runtime

    names = {**RUNTIME_MODEL_NAMES, **{v: v for v in RUNTIME_MODEL_NAMES.values()}}
    if model not in names:
        raise InvalidArgument(
            f"model={model!r} is invalid: use {' or '.join(RUNTIME_MODEL_NAMES.values())}", field="model"
        )
    name = names[model]
    kind: DepthKind = next(k for k, v in RUNTIME_MODEL_NAMES.items() if v == name)
    repo = ModelRepository(repository)
    if name not in repo.models():
        raise NotFound(
            f"{field}={str(repository)!r} has no {name!r} model (export one with `ldm3d export-depth --model "
            f"{DEPTH_HUB_IDS[kind]} --repository {repository}`)",
            field=field,
        )
    resolved = repo.resolve(name, version)
    folder = repo.version_dir(name, resolved)
    processor = load_processor(str(folder), kind, field=field)
    rt = create_runtime(runtime, repository=repository, triton_url=triton_url, **runtime_options)
    return DepthModel(kind, processor, runtime_predictor(rt, name, resolved), str(folder), rt)


def load_processor(name_or_path: str, kind: DepthKind, *, field: str = "model"):
    """The checkpoint's ``preprocessor_config.json`` as a PIL-backend transformers processor (numpy in and out)."""
    from transformers import DPTImageProcessorPil, ZoeDepthImageProcessorPil

    cls = DPTImageProcessorPil if kind == "dpt" else ZoeDepthImageProcessorPil
    try:
        return cls.from_pretrained(name_or_path)
    except OSError as exc:
        raise NotFound(
            f"{field}={name_or_path!r}: no preprocessor_config.json ({exc.__class__.__name__})", field=field
        ) from None


def torch_predictor(model) -> Predictor:
    """The model call for a transformers depth module: numpy ``pixel_values`` in, numpy ``predicted_depth`` out."""
    import torch

    def predict(pixel_values: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(pixel_values=torch.from_numpy(np.ascontiguousarray(pixel_values, dtype=np.float32)))
        return out.predicted_depth.float().numpy()

    return predict


def runtime_predictor(runtime, model: str, version: int | None = None) -> Predictor:
    """The model call through a :class:`ldm3d.runtime.base.ModelRuntime` (``depth_estimator``/``depth_reference``)."""

    def predict(pixel_values: np.ndarray) -> np.ndarray:
        return runtime.infer(model, {"pixel_values": pixel_values.astype(np.float32)}, version)["predicted_depth"]

    return predict


# --------------------------------------------------------------------------------------------- DPT (relative)
def preprocess_dpt(processor, rgb: np.ndarray, size: int = LDM3D_DPT_SIZE) -> np.ndarray:
    """RGB ``uint8 [H, W, 3]`` → ``pixel_values float32 [1, 3, size, size]`` (squashed, not cropped)."""
    out = processor(
        images=_check_rgb(rgb), return_tensors="np", size={"height": size, "width": size}, keep_aspect_ratio=False
    )
    return out["pixel_values"].astype(np.float32)


def postprocess_dpt(predicted_depth: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """DPT's ``[h, w]`` output → ``uint16 [H, W]``: bicubic resize to ``image_size`` (H, W), then per-image 0..65535.

    A constant prediction (no depth information at all) becomes all zeros, with a warning in the log.
    """
    depth = resize_bicubic(_check_finite(predicted_depth), image_size)
    lo, hi = float(depth.min()), float(depth.max())
    if hi <= lo:
        log.warning("the depth model predicted a constant map (%g); writing zeros", lo)
        return np.zeros(image_size, dtype=np.uint16)
    return np.rint((depth - lo) / (hi - lo) * DEPTH_MAX).astype(np.uint16)


def estimate_relative_depth(model: DepthModel, rgb: np.ndarray) -> np.ndarray:
    """LDM3D's 16-bit relative depth for one RGB image: ``uint16 [H, W]``, larger = nearer."""
    if model.kind != "dpt":
        raise InvalidArgument(f"model={model.source!r} is {model.kind}: relative depth needs DPT", field="model")
    pixel_values = preprocess_dpt(model.processor, rgb)
    return postprocess_dpt(model.predict(pixel_values)[0], rgb.shape[:2])


# --------------------------------------------------------------------------------------------- ZoeDepth (metric)
def preprocess_zoedepth(processor, rgb: np.ndarray, flip_aug: bool = True) -> np.ndarray:
    """RGB ``uint8 [H, W, 3]`` → ``pixel_values float32 [1 or 2, 3, h, w]`` (the second is the mirrored image)."""
    rgb = _check_rgb(rgb)
    images = [rgb, np.ascontiguousarray(rgb[:, ::-1])] if flip_aug else [rgb]
    return processor(images=images, return_tensors="np")["pixel_values"].astype(np.float32)


def postprocess_zoedepth(predicted_depth: np.ndarray, image_size: tuple[int, int], padded: bool = True) -> np.ndarray:
    """ZoeDepth's ``[1 or 2, h, w]`` output → metres ``float32 [H, W]``.

    With two maps the second (from the mirrored image) is flipped back and averaged in. The padded prediction is
    resized to the padded image size, then the padding is cut off (transformers' ``post_process_depth_estimation``).
    """
    depth = _check_finite(predicted_depth).astype(np.float64)
    depth = depth[0] if len(depth) == 1 else (depth[0] + depth[1][:, ::-1]) / 2.0
    h, w = image_size
    pad_h = int(np.sqrt(h / 2) * ZOEDEPTH_PADDING_FACTOR) if padded else 0
    pad_w = int(np.sqrt(w / 2) * ZOEDEPTH_PADDING_FACTOR) if padded else 0
    depth = resize_bicubic(depth, (h + 2 * pad_h, w + 2 * pad_w))
    return depth[pad_h : pad_h + h, pad_w : pad_w + w].astype(np.float32)


def estimate_metric_depth(model: DepthModel, rgb: np.ndarray, flip_aug: bool = True) -> np.ndarray:
    """Metric depth in metres for one RGB image (the §4.3 reference): ``float32 [H, W]``."""
    if model.kind != "zoedepth":
        raise InvalidArgument(f"model={model.source!r} is {model.kind}: metric depth needs ZoeDepth", field="model")
    pixel_values = preprocess_zoedepth(model.processor, rgb, flip_aug)
    return postprocess_zoedepth(model.predict(pixel_values), rgb.shape[:2], padded=bool(model.processor.do_pad))


def reference_depth_metrics(
    pred: np.ndarray,
    rgb: np.ndarray,
    reference: DepthModel,
    *,
    samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
    flip_aug: bool = True,
) -> DepthMetrics:
    """The §4.3 protocol end to end for one image: ``reference``'s (ZoeDepth-N's) metric depth of ``rgb`` is the
    reference for ``pred`` (disparity-like, same size as ``rgb``); see :func:`ldm3d.evaluation.depth_metrics`."""
    if np.shape(pred) != np.shape(rgb)[:2]:
        ph, pw = np.shape(pred)[:2]
        raise InvalidArgument(
            f"pred is {pw}x{ph} but rgb is {np.shape(rgb)[1]}x{np.shape(rgb)[0]}: give the RGB image the depth "
            "belongs to",
            field="rgb",
        )
    metres = estimate_metric_depth(reference, rgb, flip_aug=flip_aug)
    return depth_metrics(pred, metres, samples=samples, seed=seed)


# --------------------------------------------------------------------------------------------- resampling
def resize_bicubic(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``[h, w]`` to ``size`` (H, W) like ``torch.nn.functional.interpolate(mode="bicubic",
    align_corners=False)`` without antialiasing (the resize transformers' depth post-processing uses): cubic
    convolution with a = −0.75, source coordinate ``(i + 0.5)·h/H − 0.5``, edge pixels repeated. Returns float64.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise InvalidArgument(f"expected a 2-D map to resize, got shape {img.shape}", field="image")
    return _cubic_weights(img.shape[0], size[0]) @ img @ _cubic_weights(img.shape[1], size[1]).T


def _cubic_weights(n_in: int, n_out: int, a: float = -0.75) -> np.ndarray:
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    base = np.floor(src)
    t = src - base
    weights = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    for k in range(-1, 3):  # the 4 taps at base−1 … base+2
        x = np.abs(t - k)
        w = np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a)
        idx = np.clip(base + k, 0, n_in - 1).astype(int)
        np.add.at(weights, (rows, idx), w)
    return weights


# --------------------------------------------------------------------------------------------- tiny checkpoints
def make_tiny_dpt(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight DPT depth checkpoint in ``Intel/dpt-large``'s layout (config.json,
    model.safetensors, preprocessor_config.json). ~0.6 MB; for tests and demos only: its depth is noise."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessorPil

    config = DPTConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
        image_size=LDM3D_DPT_SIZE, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[16, 16, 32, 32], fusion_hidden_size=16, use_auxiliary_head=False,
        backbone_featmap_shape=None,
        initializer_range=0.2,  # the default 0.02 makes a random DPT predict ~0 everywhere
    )  # fmt: skip
    torch.manual_seed(seed)
    model = DPTForDepthEstimation(config).eval()
    processor = DPTImageProcessorPil(size={"height": LDM3D_DPT_SIZE, "width": LDM3D_DPT_SIZE}, keep_aspect_ratio=False)
    return _save(directory, model, processor)


def make_tiny_zoedepth(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight ZoeDepth checkpoint in ``Intel/zoedepth-nyu``'s layout (BEiT backbone, one metric
    bin head; processor: 384×512 keeping aspect ratio, multiple of 32, reflect padding). ~0.7 MB, outputs in metres
    between the bin range 0.001–10, for tests and demos only."""
    import torch
    from transformers import BeitConfig, ZoeDepthConfig, ZoeDepthForDepthEstimation, ZoeDepthImageProcessorPil

    backbone = BeitConfig(
        image_size=384, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
        use_relative_position_bias=True, reshape_hidden_states=False,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    config = ZoeDepthConfig(
        backbone_config=backbone, neck_hidden_sizes=[16, 16, 32, 32], fusion_hidden_size=16,
        bottleneck_features=16, num_relative_features=8, bin_embedding_dim=16, num_attractors=[4, 4, 2, 1],
        bin_configurations=[{"n_bins": 8, "min_depth": 0.001, "max_depth": 10.0}],
        initializer_range=0.2,  # with 0.02 every pixel gets the same depth
    )  # fmt: skip
    torch.manual_seed(seed)
    model = ZoeDepthForDepthEstimation(config).eval()
    processor = ZoeDepthImageProcessorPil(ensure_multiple_of=32, keep_aspect_ratio=True, do_pad=True)
    return _save(directory, model, processor)


def _save(directory: str | Path, model, processor) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)
    return directory


# --------------------------------------------------------------------------------------------- helpers
def _model_type(name_or_path: str, field: str) -> DepthKind:
    path = Path(name_or_path).expanduser()
    if path.exists():
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise NotFound(
                f"{field}={name_or_path!r} has no config.json: give a checkpoint folder in the hub layout "
                "(config.json, model.safetensors, preprocessor_config.json), e.g. from `ldm3d make-tiny-depth-model`",
                field=field,
            )
        model_type = json.loads(cfg_file.read_text()).get("model_type")
    elif _looks_local(name_or_path):
        raise NotFound(f"{field}={name_or_path!r}: no such folder", field=field)
    else:
        from transformers import AutoConfig

        try:
            model_type = AutoConfig.from_pretrained(name_or_path).model_type
        except (OSError, ValueError) as exc:
            raise NotFound(
                f"{field}={name_or_path!r} is not a local folder and could not be fetched from the Hugging Face Hub "
                f"({exc.__class__.__name__}); offline, download it elsewhere and pass the folder",
                field=field,
            ) from None
    if model_type not in ("dpt", "zoedepth"):
        raise InvalidArgument(
            f"{field}={name_or_path!r} is a {model_type!r} model: use a DPT ({DPT}) or ZoeDepth ({ZOEDEPTH}) "
            "depth checkpoint",
            field=field,
        )
    return model_type


def _looks_local(name: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else with path syntax is meant as a folder.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidArgument(f"image must be uint8 [H, W, 3], got {rgb.dtype} {tuple(rgb.shape)}", field="image")
    return rgb


def _check_finite(depth: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth)
    if not np.all(np.isfinite(depth)):
        raise FailedPrecondition("the depth model produced non-finite values (NaN/inf): the checkpoint is broken")
    return depth


__all__ = [
    "DEPTH_MODEL_IO",
    "DepthModel",
    "LDM3D_DPT_SIZE",
    "Predictor",
    "RUNTIME_MODEL_NAMES",
    "depth_kind",
    "estimate_metric_depth",
    "estimate_relative_depth",
    "load_depth_model",
    "load_depth_model_from_repository",
    "load_depth_module",
    "load_processor",
    "make_tiny_dpt",
    "make_tiny_zoedepth",
    "postprocess_dpt",
    "postprocess_zoedepth",
    "preprocess_dpt",
    "preprocess_zoedepth",
    "reference_depth_metrics",
    "resize_bicubic",
    "runtime_predictor",
    "torch_predictor",
]
