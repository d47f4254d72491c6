"""DepthEvaluator servicer: RGB → 16-bit depth (``Estimate``) and the paper's §4.3 metrics (``Evaluate``).

    ldm3d serve depth-evaluator --port 50055 --depth-model Intel/dpt-large --reference-model Intel/zoedepth-nyu
    # or inside `ldm3d serve all ... --depth-model DIR --reference-model DIR` (same port as the Studio gateway)

    from ldm3d.client import StudioClient
    with StudioClient("localhost:50051") as c:
        depth_u16 = c.estimate_depth(rgb)                               # uint16 [H, W], larger = nearer
        e = c.evaluate_depth(depth_u16, reference=metres)               # or rgb=rgb: ZoeDepth's reference
        e.metrics.abs_rel, e.metrics.rmse, e.metrics.scale, e.metrics.shift

Both models are configured when the server starts (``--depth-model``: DPT, ``--reference-model``: ZoeDepth) and
loaded once; a request may name them (``model``/``version``, ``reference_model``/``reference_version``) and gets
NOT_FOUND for any other. The servicer only translates: proto → arrays (fields named in every error) → the
library (:mod:`ldm3d.evaluation`) in a worker thread → proto. Metrics are never NaN: too few valid pixels or a
constant prediction are INVALID_ARGUMENT naming the proto field (docs/evaluation.md lists each case).
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FailedPrecondition, InvalidArgument, LDM3DError, NotFound, invalid, renamed
from ..evaluation import DepthMetrics, aligned_depth, depth_metrics
from ..evaluation.depth_metrics import DEFAULT_SAMPLES, DEFAULT_SEED
from ..v1 import common_pb2, depth_pb2_grpc
from ..v1 import depth_pb2 as pb
from ..wire import tensors
from .config import ServeConfig
from .jobs import in_thread

DEFAULT_REFERENCE_SCALE_U16 = 1e-3  # 16-bit reference maps are millimetres unless the request says otherwise
# the library's argument names → the request fields a client sets (per reference kind)
_FIELDS = {"pred": "predicted_depth", "samples": "sample_pixels", "seed": "seed", "image": "rgb"}


@dataclass(frozen=True)
class ServedDepthModel:
    name: str  # what requests may send as model / reference_model
    version: str  # first 12 hex digits of the folder's sha256, or "hub" for a hub id
    model: object  # ldm3d.evaluation.depth_models.DepthModel


def load_depth_models(cfg: ServeConfig) -> tuple[ServedDepthModel | None, ServedDepthModel | None]:
    """The configured estimator (DPT) and reference (ZoeDepth), loaded once; a bad path fails the server's start.

    A checkpoint named by ``--depth-model`` / ``--reference-model`` runs with torch; otherwise, when ``--repository``
    holds ``depth_estimator`` / ``depth_reference`` (``ldm3d export-depth``), they run through the same runtime as
    the diffusion models (embedded ONNX Runtime or Triton)."""
    return (_pick_source(cfg, cfg.depth_model, "dpt", "--depth-model"),
            _pick_source(cfg, cfg.reference_model, "zoedepth", "--reference-model"))


def _pick_source(cfg: ServeConfig, checkpoint: str | None, kind: str, flag: str) -> ServedDepthModel | None:
    if checkpoint:
        return _load(checkpoint, kind, flag)
    if not cfg.repository:
        return None
    from ..evaluation.depth_models import RUNTIME_MODEL_NAMES, load_depth_model_from_repository
    from ..repository import ModelRepository

    repo, name = ModelRepository(cfg.repository), RUNTIME_MODEL_NAMES[kind]
    if name not in repo.models():
        return None
    model = load_depth_model_from_repository(cfg.repository, name, runtime=cfg.runtime, triton_url=cfg.triton_url,
                                             field="--repository", **cfg.runtime_options)
    return ServedDepthModel(name, Path(model.source).name, model)  # the version folder's number


def _load(source: str, kind: str, flag: str) -> ServedDepthModel:
    from ..evaluation.depth_models import load_depth_model
    from ..pipeline.spec import checkpoint_hash

    model = load_depth_model(source, kind=kind, field=flag)
    folder = Path(source).expanduser()
    if folder.is_dir():
        return ServedDepthModel(folder.resolve().name, checkpoint_hash(folder)[:12], model)
    return ServedDepthModel(source, "hub", model)


class DepthEvaluatorServicer(depth_pb2_grpc.DepthEvaluatorServicer):
    def __init__(self, estimator: ServedDepthModel | None, reference: ServedDepthModel | None):
        self.estimator, self.reference = estimator, reference
        # one model call at a time: each uses every core, and the torch modules are shared
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="depth")

    async def Estimate(self, request: pb.EstimateDepthRequest, context) -> pb.EstimateDepthResponse:
        from ..evaluation.depth_models import estimate_relative_depth

        served = _pick(self.estimator, request.model, request.version, "model", "version", "--depth-model")
        rgb = _rgb(request, "rgb")
        raw = tensors.is_raw(request.image_encoding)
        depth = await self._in_thread(estimate_relative_depth, served.model, rgb)
        image = common_pb2.Image(array=tensors.to_tensor(depth)) if raw else common_pb2.Image(
            png=(await self._in_thread(_png, depth)))
        return pb.EstimateDepthResponse(request_id=request.request_id, depth=image, model=served.name,
                                        model_version=served.version)

    async def Evaluate(self, request: pb.EvaluateDepthRequest, context) -> pb.EvaluateDepthResponse:
        from ..evaluation.depth_models import estimate_metric_depth

        if not request.HasField("predicted_depth"):
            raise invalid("predicted_depth", None, "set the 16-bit depth to evaluate (PNG or uint16 array)")
        pred = tensors.read_depth(request.predicted_depth, "predicted_depth")
        kind = request.WhichOneof("reference")
        samples = request.sample_pixels if request.HasField("sample_pixels") else DEFAULT_SAMPLES
        seed = request.seed if request.HasField("seed") else DEFAULT_SEED
        response = pb.EvaluateDepthResponse(request_id=request.request_id)
        if kind == "reference_depth":
            if request.HasField("flip_aug") or request.reference_model or request.reference_version:
                raise invalid("flip_aug" if request.HasField("flip_aug") else "reference_model", "<set>",
                              "flip_aug and the reference model apply only to an rgb reference")
            reference = _reference_metres(request)
        elif kind == "rgb":
            if request.HasField("reference_depth_scale"):
                raise invalid("reference_depth_scale", request.reference_depth_scale,
                              "applies only to reference_depth; the reference model's depth is in metres")
            served = _pick(self.reference, request.reference_model, request.reference_version, "reference_model",
                           "reference_version", "--reference-model")
            rgb = _rgb(request, "rgb")
            if rgb.shape[:2] != pred.shape:
                raise invalid("rgb", f"{rgb.shape[1]}x{rgb.shape[0]}", f"give the RGB image the depth belongs to, "
                                                                       f"{pred.shape[1]}x{pred.shape[0]}")
            flip = request.flip_aug if request.HasField("flip_aug") else True
            reference = await self._in_thread(_fields(estimate_metric_depth, "rgb"), served.model, rgb, flip)
            response.reference_model, response.reference_model_version = served.name, served.version
        else:
            raise invalid("reference", None, "set reference_depth (a metric depth map) or rgb (the reference model "
                                             "estimates the reference from it)")
        metrics = await self._in_thread(_fields(depth_metrics, kind), pred, reference, samples=samples, seed=seed)
        if not all(math.isfinite(v) for v in (metrics.abs_rel, metrics.rmse, metrics.scale, metrics.shift)):
            raise InvalidArgument("predicted_depth: the aligned depth overflows (a near-zero aligned disparity): the "
                                  "prediction cannot be aligned to this reference", field="predicted_depth")
        response.metrics.CopyFrom(_metrics(metrics))
        if request.include_aligned:
            response.aligned_depth.CopyFrom(tensors.to_tensor(aligned_depth(pred, reference, metrics)))
        return response

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _in_thread(self, fn, *args, **kwargs) -> asyncio.Future:
        return in_thread(self._pool, fn, *args, **kwargs)


def _pick(served: ServedDepthModel | None, model: str, version: str, model_field: str, version_field: str,
          flag: str) -> ServedDepthModel:
    if served is None:
        raise FailedPrecondition(f"{model_field}: this server has no {flag} configured (start it with {flag} DIR "
                                 f"or LDM3D_{flag[2:].upper().replace('-', '_')})", field=model_field)
    if model and model != served.name:
        raise NotFound(f"{model_field}={model!r} is not served here: use {served.name!r} or leave it empty",
                       field=model_field)
    if version and version != served.version:
        raise NotFound(f"{version_field}={version!r} of {served.name!r} does not exist: use {served.version!r} or "
                       "leave it empty", field=version_field)
    return served


def _rgb(request, field: str) -> np.ndarray:
    if not request.HasField(field):
        raise invalid(field, None, f"set {field} (an 8-bit PNG or a uint8 [H, W, 3] array)")
    return tensors.read_rgb(getattr(request, field), field)


def _reference_metres(request: pb.EvaluateDepthRequest) -> np.ndarray:
    """``reference_depth`` in metres: 16-bit values × scale (default 1/1000), or a float32 array × scale (default 1)."""
    image = request.reference_depth
    scale = request.reference_depth_scale if request.HasField("reference_depth_scale") else None
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise invalid("reference_depth_scale", scale, "use metres per unit > 0, e.g. 0.001 for millimetres")
    if image.WhichOneof("data") == "array" and image.array.dtype == common_pb2.DATA_TYPE_FLOAT32:
        metres = tensors.from_tensor(image.array, "reference_depth.array", dtype="float32", shape=(None, None))
        return metres.astype(np.float64) * (1.0 if scale is None else scale)
    values = tensors.read_depth(image, "reference_depth")
    return values.astype(np.float64) * (DEFAULT_REFERENCE_SCALE_U16 if scale is None else scale)


def _fields(fn, reference_field: str):
    """``fn`` with the library's argument names in its errors replaced by the request's field names."""
    names = {**_FIELDS, "reference": reference_field}

    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LDM3DError as exc:
            raise renamed(exc, names) from None

    return call


def _metrics(m: DepthMetrics) -> pb.DepthMetrics:
    return pb.DepthMetrics(abs_rel=m.abs_rel, rmse=m.rmse, scale=m.scale, shift=m.shift, valid_pixels=m.valid_pixels,
                           sampled_pixels=m.sampled_pixels, evaluated_pixels=m.evaluated_pixels,
                           nonpositive_pixels=m.nonpositive_pixels, samples=m.samples, seed=m.seed)


def _png(depth: np.ndarray) -> bytes:
    from .. import codec

    return codec.encode_png(depth)
