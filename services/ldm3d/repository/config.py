"""Typed view of a model's ``config.pbtxt``, written from an ONNX graph at export and checked against it at load.

The committed configs are the GPU-ready ``onnxruntime_onnx`` ones the official Triton image serves unchanged. With
``max_batch_size > 0`` Triton's ``dims`` leave out the batch axis; a tensor that is only a batch axis (U-Net's
``timestep``, ONNX shape ``[batch]``) is declared ``dims: [1]`` with ``reshape { shape: [] }``, as Triton requires.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FailedPrecondition, InvalidArgument, NotFound
from . import pbtxt
from .pbtxt import Enum

# numpy dtype name ↔ Triton config data_type ↔ ONNX TensorProto element type
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "int64": "TYPE_INT64",
                 "int32": "TYPE_INT32", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
NUMPY_DTYPES = {v: k for k, v in TRITON_DTYPES.items()}
ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32", 2: "uint8", 9: "bool"}
# the wire names tritonclient uses ("FP32"), derived once
WIRE_DTYPES = {k: v.removeprefix("TYPE_") for k, v in TRITON_DTYPES.items()}

# Per-model serving settings written into new configs. U-Net is called once per step by every request, so it is
# the one that gains from batching; the others run once per request. The U-Net's 16 rows hold one step of the
# sampler's default --max-batch 8 guided requests as one Triton request (the sampler splits bigger batches at this
# limit); Triton's dynamic batcher merges smaller ones from several sampler replicas up to the same limit.
MAX_BATCH_SIZE = {"text_encoder": 8, "unet": 16, "vae_decoder": 4, "vae_encoder": 4,
                  "depth_estimator": 4, "depth_reference": 4}  # ZoeDepth: 2 per image (image + mirrored)
DYNAMIC_BATCHING = {"unet": {"max_queue_delay_microseconds": 2000}}


@dataclass(frozen=True)
class TensorConfig:
    name: str
    dtype: str  # numpy dtype name
    dims: tuple[int, ...]  # without the batch axis when the model batches; -1 = dynamic
    reshape: tuple[int, ...] | None = None  # the model's own shape (without batch) when it differs from dims

    @property
    def model_dims(self) -> tuple[int, ...]:
        return self.dims if self.reshape is None else self.reshape


@dataclass(frozen=True)
class ModelConfig:
    name: str
    platform: str
    backend: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    version_policy: dict = field(default_factory=dict)  # {"latest": {"num_versions": 1}} | {"all": {}} | {"specific": ...}
    parameters: dict = field(default_factory=dict)  # string → string (Triton's `parameters` map)
    raw: dict = field(default_factory=dict)
    path: Path | None = None

    def input(self, name: str) -> TensorConfig | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorConfig | None:
        return next((t for t in self.outputs if t.name == name), None)

    def served_versions(self, available: list[int]) -> list[int]:
        """The versions Triton would load from ``available`` under this config's ``version_policy`` (sorted)."""
        available = sorted(available)
        policy = self.version_policy or {"latest": {"num_versions": 1}}
        if "all" in policy:
            return available
        if "specific" in policy:
            wanted = {int(v) for v in policy["specific"].get("versions", [])}
            return [v for v in available if v in wanted]
        n = int((policy.get("latest") or {}).get("num_versions", 1))
        return available[-n:] if n > 0 else []


def read_config(path: Path) -> ModelConfig:
    """Parse ``path`` (a config.pbtxt). Raises ``NotFound`` if missing, ``InvalidArgument`` if malformed."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path}: no config.pbtxt", field="repository")
    raw = pbtxt.loads(path.read_text(), source=str(path))
    return config_from_dict(raw, path)


def config_from_dict(raw: dict, path: Path | None = None) -> ModelConfig:
    where = str(path) if path else "config.pbtxt"

    def tensors(key):
        out = []
        for t in raw.get(key, []):
            if "name" not in t or "data_type" not in t:
                raise InvalidArgument(f"{where}: every {key} needs a name and a data_type")
            dtype = NUMPY_DTYPES.get(str(t["data_type"]))
            if dtype is None:
                raise InvalidArgument(f"{where}: {key} {t['name']!r} has data_type {t['data_type']}, which the "
                                      f"runtimes do not handle (use one of {', '.join(NUMPY_DTYPES)})")
            reshape = t.get("reshape")
            out.append(TensorConfig(t["name"], dtype, tuple(int(d) for d in t.get("dims", [])),
                                    None if reshape is None else tuple(int(d) for d in reshape.get("shape", []))))
        return tuple(out)

    params = {}
    for p in raw.get("parameters", []):
        value = p.get("value", {})
        params[str(p.get("key"))] = str(value.get("string_value", "")) if isinstance(value, dict) else str(value)
    return ModelConfig(
        name=str(raw.get("name", path.parent.name if path else "")),
        platform=str(raw.get("platform", "")),
        backend=str(raw.get("backend", "")),
        max_batch_size=int(raw.get("max_batch_size", 0)),
        inputs=tensors("input"),
        outputs=tensors("output"),
        version_policy=dict(raw.get("version_policy", {})),
        parameters=params,
        raw=raw,
        path=path,
    )


def onnx_io(model_path: Path) -> tuple[list[tuple[str, str, list]], list[tuple[str, str, list]]]:
    """(name, numpy dtype, shape) of an ONNX file's graph inputs and outputs; dynamic dims are their symbol names.

    Reads only the graph (not external weights), so checking a 3 GB U-Net's config is instant.
    """
    import onnx

    try:
        m = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:
        raise FailedPrecondition(f"{model_path}: not a readable ONNX file ({exc.__class__.__name__})") from None

    def spec(vi):
        tt = vi.type.tensor_type
        dims = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?") for d in tt.shape.dim]
        return vi.name, ONNX_DTYPES.get(tt.elem_type, f"onnx:{tt.elem_type}"), dims

    inits = {i.name for i in m.graph.initializer}
    return [spec(v) for v in m.graph.input if v.name not in inits], [spec(v) for v in m.graph.output]


def config_for_graph(model: str, inputs, outputs, existing: dict | None = None) -> dict:
    """The config.pbtxt dict for an exported graph; keeps the serving knobs (instance_group, version_policy,
    dynamic_batching, parameters, optimization) of an ``existing`` config, replaces only what the graph decides."""
    batching = all(shape and shape[0] == "batch" for _, _, shape in list(inputs) + list(outputs))
    max_batch = MAX_BATCH_SIZE.get(model, 4) if batching else 0

    def tensor(name, dtype, shape):
        dims = [d if isinstance(d, int) else -1 for d in (shape[1:] if batching else shape)]
        t = {"name": name, "data_type": Enum(TRITON_DTYPES[dtype]), "dims": dims or [1]}
        if not dims:
            t["reshape"] = {"shape": []}
        return t

    cfg: dict = {"name": model, "platform": "onnxruntime_onnx", "max_batch_size": max_batch}
    cfg["input"] = [tensor(*t) for t in inputs]
    cfg["output"] = [tensor(*t) for t in outputs]
    defaults = {
        "version_policy": {"latest": {"num_versions": 1}},
        "instance_group": [{"count": 1, "kind": Enum("KIND_AUTO")}],
    }
    if model in DYNAMIC_BATCHING and batching:
        defaults["dynamic_batching"] = dict(DYNAMIC_BATCHING[model])
    keep = dict(existing or {})
    for key in ("name", "platform", "backend", "max_batch_size", "input", "output"):
        keep.pop(key, None)
    for key, value in defaults.items():
        keep.setdefault(key, value)
    cfg.update(keep)
    return cfg


def check_config_matches_graph(cfg: ModelConfig, model_path: Path, version: int) -> None:
    """Raise ``FailedPrecondition`` naming model, version and file when ``cfg`` does not describe the ONNX graph."""
    inputs, outputs = onnx_io(model_path)
    where = f"model {cfg.name!r} version {version}: {cfg.path or 'config.pbtxt'} does not match {model_path}"
    for kind, graph, declared in (("input", inputs, cfg.inputs), ("output", outputs, cfg.outputs)):
        graph_names = sorted(n for n, _, _ in graph)
        declared_names = sorted(t.name for t in declared)
        if graph_names != declared_names:
            raise FailedPrecondition(f"{where}: {kind}s are {graph_names} in the ONNX graph but {declared_names} "
                                     "in config.pbtxt (re-export, or fix the config)")
        for name, dtype, shape in graph:
            t = next(t for t in declared if t.name == name)
            if t.dtype != dtype:
                raise FailedPrecondition(f"{where}: {kind} {name!r} is {dtype} in the graph but {t.dtype} in the config")
            model_shape = list(shape[1:]) if cfg.max_batch_size > 0 else list(shape)
            if cfg.max_batch_size > 0 and (not shape or isinstance(shape[0], int) and shape[0] != -1):
                raise FailedPrecondition(f"{where}: config has max_batch_size {cfg.max_batch_size} but {kind} "
                                         f"{name!r} has no dynamic batch axis ({shape})")
            dims = list(t.model_dims)
            ok = len(dims) == len(model_shape) and all(
                d == -1 or not isinstance(g, int) or g == d for d, g in zip(dims, model_shape))
            if not ok:
                raise FailedPrecondition(f"{where}: {kind} {name!r} has dims {dims} in the config but shape "
                                         f"{model_shape} (without batch) in the graph")


def write_config(path: Path, cfg: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(pbtxt.dumps(cfg))
    tmp.replace(path)
