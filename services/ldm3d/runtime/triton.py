"""The ``triton`` runtime: models served by a Triton Inference Server, reached with ``tritonclient.grpc``.

    rt = create_runtime("triton", triton_url="localhost:8001")
    out = rt.infer("unet", {"sample": x, "timestep": t, "encoder_hidden_states": e}, version=2)

The tensor contract is the embedded runtime's: numpy in, float32 numpy out, names from ``config.pbtxt``. A tensor
that the config reshapes (U-Net's ``timestep``: ``dims [1]`` + ``reshape []``) is sent in the config's shape.
When client and server share the host (a loopback URL, or ``shared_memory=True``) the inputs and U-Net's output
travel through POSIX system shared memory instead of the gRPC message: per denoising step that saves copying the
latents and the text embeddings through protobuf twice. Regions are pooled and reused across calls and threads.

Errors map to the platform's: server unreachable → ``Unavailable``; unknown model or version → ``NotFound``;
rejected inputs → ``InvalidArgument``; anything else the server reports → ``FailedPrecondition`` with its message.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import FailedPrecondition, InvalidArgument, LDM3DError, NotFound, Unavailable
from ..repository.config import WIRE_DTYPES
from .base import MODEL_IO, ModelMetadata, ModelRuntime, TensorSpec

log = logging.getLogger(__name__)

_NUMPY = {v: k for k, v in WIRE_DTYPES.items()}  # tritonclient's "FP32" → numpy's "float32"


def known_output_shapes(model: str, arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Outputs whose shape the inputs decide, by :data:`MODEL_IO`'s symbolic dims (U-Net's ``out_sample`` has its
    ``sample``'s shape): those can come back through shared memory, sized before the call."""
    io = MODEL_IO.get(model)
    if io is None:
        return {}
    bound: dict[str, int] = {}
    for name, spec in io["inputs"].items():
        if name in arrays and len(spec.shape) == arrays[name].ndim:
            for sym, d in zip(spec.shape, arrays[name].shape):
                if isinstance(sym, str):
                    bound.setdefault(sym, int(d))
    shapes = {}
    for name, spec in io["outputs"].items():
        dims = [bound.get(s) if isinstance(s, str) else s for s in spec.shape]
        if all(d is not None for d in dims):
            shapes[name] = tuple(dims)
    return shapes


def _is_loopback(url: str) -> bool:
    host = url.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def map_error(exc: Exception, url: str, model: str = "", version=None) -> LDM3DError:
    """One place that turns a tritonclient/gRPC error into a typed platform error naming model and version."""
    status = str(getattr(exc, "status", lambda: "")() or "")
    message = getattr(exc, "message", lambda: str(exc))() or str(exc)
    what = f"model {model!r}" + (f" version {version}" if version is not None else "") if model else "Triton"
    if "unknown model" in message or "is not at ready state" in message:  # Triton says UNAVAILABLE for these
        return NotFound(f"{what} is not available on the Triton server at {url} ({message}); load it, or check "
                        "the model name and version", field="version" if version is not None else "model")
    if "UNAVAILABLE" in status or "failed to connect" in message or "Connection refused" in message:
        return Unavailable(f"Triton server at {url} is unavailable ({message}); start it (on this host: "
                           "`bash scripts/triton/serve.sh REPOSITORY`) or check --triton-url", field="triton_url")
    if "NOT_FOUND" in status or "unknown model" in message or "is not found" in message:
        return NotFound(f"{what} is not available on the Triton server at {url} ({message}); load it, or check "
                        "the model name and version", field="version" if version is not None else "model")
    if "INVALID_ARG" in status:
        return InvalidArgument(f"{what}: Triton rejected the request: {message}", field="inputs")
    if "DEADLINE" in status:
        return Unavailable(f"{what}: Triton did not answer in time ({message})")
    return FailedPrecondition(f"{what}: Triton reported {status or 'an error'}: {message}")


class _Region:
    """One registered system shared memory region (POSIX shm) of ``size`` bytes."""

    def __init__(self, client, size: int):
        import tritonclient.utils.shared_memory as shm

        self.size = size
        self.name = f"ldm3d_{os.getpid()}_{uuid.uuid4().hex[:12]}"
        self.handle = shm.create_shared_memory_region(self.name, "/" + self.name, size)
        try:
            client.register_system_shared_memory(self.name, "/" + self.name, size)
        except Exception:
            shm.destroy_shared_memory_region(self.handle)
            raise

    def destroy(self, client) -> None:
        import tritonclient.utils.shared_memory as shm

        try:
            client.unregister_system_shared_memory(self.name)
        except Exception:  # noqa: BLE001 - the server may be gone; the local segment is removed regardless
            pass
        shm.destroy_shared_memory_region(self.handle)


class TritonRuntime(ModelRuntime):
    """Args:
        triton_url: ``host:port`` of Triton's gRPC endpoint.
        repository: the model repository the server serves (optional; only reported in metadata).
        shared_memory: ``"auto"`` (on for loopback URLs), ``True`` or ``False``.
        timeout_s: per-call client timeout.
    """

    kind = "triton"

    def __init__(self, triton_url: str, *, repository: str | Path | None = None, shared_memory="auto",
                 timeout_s: float = 120.0):
        import tritonclient.grpc as grpcclient

        if not triton_url:
            raise InvalidArgument("triton_url is empty: give --triton-url HOST:PORT of Triton's gRPC endpoint",
                                  field="triton_url")
        self.url = str(triton_url)
        self.repository = Path(repository) if repository else None
        self.timeout_s = timeout_s
        self.shared_memory = _is_loopback(self.url) if shared_memory == "auto" else bool(shared_memory)
        self._grpc = grpcclient
        self._client = grpcclient.InferenceServerClient(self.url)
        self._configs: dict[str, dict] = {}
        self._meta: dict[tuple[str, int | None], ModelMetadata] = {}
        self._free: list[_Region] = []
        self._regions: list[_Region] = []
        self._lock = threading.Lock()
        self._control = threading.Lock()  # model control (load/unload) is read-modify-write of the version set
        self._wanted: dict[str, set[int]] = {}  # versions this process loaded with ensure_loaded and still runs
        self._shm_failed = False

    # ------------------------------------------------------------------ server metadata
    def _call(self, fn, model="", version=None):
        try:
            return fn()
        except LDM3DError:
            raise
        except Exception as exc:  # tritonclient raises InferenceServerException; grpc errors are wrapped in it
            raise map_error(exc, self.url, model, version) from None

    def _config(self, model: str) -> dict:
        cfg = self._configs.get(model)
        if cfg is None:
            cfg = self._call(lambda: self._client.get_model_config(model, as_json=True), model)["config"]
            self._configs[model] = cfg
        return cfg

    def metadata(self, model: str, version: int | None = None) -> ModelMetadata:
        key = (model, version)
        if key in self._meta:
            return self._meta[key]
        v = "" if version is None else str(version)
        meta = self._call(lambda: self._client.get_model_metadata(model, v, as_json=True), model, version)
        cfg = self._config(model)
        served = sorted(int(x) for x in meta.get("versions", []))
        resolved = int(version) if version is not None else (served[-1] if served else None)
        names = {**MODEL_IO.get(model, {}).get("inputs", {}), **MODEL_IO.get(model, {}).get("outputs", {})}
        batching = int(cfg.get("max_batch_size", 0)) > 0

        def spec(t, tc):
            dims = [int(d) for d in tc.get("dims", [])]
            if "reshape" in tc:
                dims = [int(d) for d in tc["reshape"].get("shape", [])]
            shape = (["batch"] if batching else []) + dims
            symbolic = names.get(t["name"]).shape if t["name"] in names else ()
            if len(symbolic) == len(shape):
                shape = [s if d == -1 or d == "batch" else d for d, s in zip(shape, symbolic)]
            return TensorSpec(t["name"], _NUMPY.get(t["datatype"], t["datatype"].lower()), tuple(shape))

        def specs(kind):
            conf = {c["name"]: c for c in cfg.get(kind, [])}
            return tuple(spec(t, conf.get(t["name"], {})) for t in meta.get(kind + "s", []))

        out = ModelMetadata(model, resolved, specs("input"), specs("output"), meta.get("platform", ""),
                            {"url": self.url, "served_versions": served, "max_batch_size": cfg.get("max_batch_size"),
                             "repository": str(self.repository) if self.repository else None})
        self._meta[key] = out
        return out

    def ready(self, model: str, version: int | None = None) -> bool:
        try:
            return bool(self._client.is_model_ready(model, "" if version is None else str(version)))
        except Exception as exc:  # noqa: BLE001 - readiness is a yes/no question
            log.warning("triton: %s is not ready: %s", model, map_error(exc, self.url, model, version))
            return False

    def server_ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready())
        except Exception:  # noqa: BLE001
            return False

    # ------------------------------------------------------------------ model control (explicit mode)
    def load(self, model: str, versions: list[int] | None = None) -> None:
        """Load ``model`` (all versions its policy serves, or exactly ``versions``). Triton loads the new versions
        beside the ones serving and switches when they are ready, so requests in flight are not dropped."""
        config = None
        if versions is not None:
            cfg = dict(self._config(model))
            cfg["version_policy"] = {"specific": {"versions": [int(v) for v in versions]}}
            config = json.dumps(cfg)
        try:
            self._client.load_model(model, config=config)
        except Exception as exc:  # noqa: BLE001 - a failed load is a state problem of that model, not a bad request
            err = map_error(exc, self.url, model)
            if isinstance(err, Unavailable):
                raise err from None
            detail = exc.message() if hasattr(exc, "message") else str(exc)  # tritonclient errors carry message()
            raise FailedPrecondition(f"model {model!r}: Triton could not load it: {detail}") from None
        finally:
            self._configs.pop(model, None)
            self._meta = {k: v for k, v in self._meta.items() if k[0] != model}

    def unload(self, model: str) -> None:
        self._call(lambda: self._client.unload_model(model), model)
        self._configs.pop(model, None)
        self._meta = {k: v for k, v in self._meta.items() if k[0] != model}

    # A release moves several models' versions together: the serving processes add a version beside the ones
    # loaded, and drop one after its requests drained, leaving the other versions of that model serving.
    def loaded_versions(self, model: str) -> set[int]:
        """Versions of ``model`` the server has READY (from its repository index)."""
        index = self._call(lambda: self._client.get_model_repository_index(as_json=True), model)
        return {int(m["version"]) for m in index.get("models", [])
                if m.get("name") == model and m.get("state") == "READY" and str(m.get("version", "")).isdigit()}

    def ensure_loaded(self, model: str, version: int) -> None:
        """Load ``version`` of ``model`` beside the versions already serving (no-op when it is READY). Triton keeps
        serving the loaded versions while the new one loads; a failed load leaves them as they were."""
        with self._control:
            self._wanted.setdefault(model, set()).add(int(version))
            have = self.loaded_versions(model)
            if int(version) in have:
                return
            if not have:
                # explicit mode has no config for a model never loaded: load it as its repository config says
                # first, then narrow/extend the versions with that config
                self.load(model)
                have = self.loaded_versions(model)
                if int(version) in have:
                    return
            self.load(model, versions=sorted(have | {int(version)}))
            log.info("triton: %s version %d loaded (serving versions %s)", model, version,
                     sorted(have | {int(version)}))

    def unload_version(self, model: str, version: int) -> None:
        """Stop serving ``version`` of ``model``; its other loaded versions keep serving."""
        with self._control:
            self._wanted.get(model, set()).discard(int(version))
            have = self.loaded_versions(model)
            if int(version) not in have:
                return
            rest = sorted(have - {int(version)})
            if rest:
                self.load(model, versions=rest)
            else:
                self.unload(model)
            log.info("triton: %s version %d unloaded (serving versions %s)", model, version, rest)

    # ------------------------------------------------------------------ inference
    def _acquire(self, size: int) -> _Region:
        with self._lock:
            for i, r in enumerate(self._free):
                if r.size >= size:
                    return self._free.pop(i)
        region = _Region(self._client, max(1 << 16, 1 << (size - 1).bit_length()))
        with self._lock:
            self._regions.append(region)
        return region

    def _release(self, region: _Region) -> None:
        with self._lock:
            self._free.append(region)

    def infer(self, model: str, inputs: Mapping[str, np.ndarray], version: int | None = None) -> dict[str, np.ndarray]:
        import tritonclient.utils.shared_memory as shm

        cfg = self._config(model)
        conf_in = {c["name"]: c for c in cfg.get("input", [])}
        conf_out = {c["name"]: _NUMPY[c["data_type"].removeprefix("TYPE_")] for c in cfg.get("output", [])}
        missing = [n for n in conf_in if n not in inputs]
        if missing or len(inputs) != len(conf_in):
            raise InvalidArgument(f"model {model!r}: inputs must be {sorted(conf_in)}; missing {missing}, unexpected "
                                  f"{[n for n in inputs if n not in conf_in]}", field="inputs")
        batching = int(cfg.get("max_batch_size", 0)) > 0
        arrays = {}
        for name, c in conf_in.items():
            arr = np.asarray(inputs[name])
            want = np.dtype(_NUMPY[c["data_type"].removeprefix("TYPE_")])
            if arr.dtype != want:
                if arr.dtype.kind != want.kind and not (arr.dtype.kind in "iu" and want.kind in "iu"):
                    raise InvalidArgument(f"model {model!r}: input {name!r} is {arr.dtype}, expected {want}",
                                          field="inputs")
                arr = arr.astype(want)
            if "reshape" in c:  # send in the config's dims: [batch] → [batch, 1] for U-Net's timestep
                dims = [int(d) for d in c.get("dims", [])]
                lead = [arr.shape[0]] if batching else []
                arr = arr.reshape(lead + [d if d != -1 else -1 for d in dims])
            arrays[name] = np.ascontiguousarray(arr)

        # outputs whose shape the inputs decide (U-Net's) can come back through shared memory as well
        out_bytes = {name: int(np.prod(shape)) * np.dtype(conf_out[name]).itemsize
                     for name, shape in known_output_shapes(model, arrays).items() if name in conf_out}
        use_shm = self.shared_memory and not self._shm_failed
        region = None
        v = "" if version is None else str(version)
        try:
            infer_inputs = []
            offset = 0
            if use_shm:
                size = sum(a.nbytes for a in arrays.values()) + sum(out_bytes.values())
                try:
                    region = self._acquire(size)
                except Exception as exc:  # noqa: BLE001 - e.g. a remote server: fall back to the wire for good
                    log.warning("triton: system shared memory unavailable (%s); sending tensors over gRPC", exc)
                    self._shm_failed, use_shm = True, False
            for name, arr in arrays.items():
                i = self._grpc.InferInput(name, list(arr.shape), WIRE_DTYPES[arr.dtype.name])
                if use_shm:
                    shm.set_shared_memory_region(region.handle, [arr], offset=offset)
                    i.set_shared_memory(region.name, arr.nbytes, offset=offset)
                    offset += arr.nbytes
                else:
                    i.set_data_from_numpy(arr)
                infer_inputs.append(i)
            outputs, shm_out = [], {}
            for name in conf_out:
                o = self._grpc.InferRequestedOutput(name)
                if use_shm and name in out_bytes:
                    o.set_shared_memory(region.name, out_bytes[name], offset=offset)
                    shm_out[name] = offset
                    offset += out_bytes[name]
                outputs.append(o)
            try:
                result = self._call(lambda: self._client.infer(model, infer_inputs, model_version=v, outputs=outputs,
                                                               client_timeout=self.timeout_s), model, version)
            except NotFound:
                if version is None or int(version) not in self._wanted.get(model, set()):
                    raise
                # another process sharing this server unloaded a version we still run (its drain ended before
                # ours): load it again beside the others and retry once
                try:
                    self.ensure_loaded(model, int(version))
                except LDM3DError:
                    raise NotFound(f"model {model!r} version {version} is not available on the Triton server at "
                                   f"{self.url}", field="version") from None
                result = self._call(lambda: self._client.infer(model, infer_inputs, model_version=v, outputs=outputs,
                                                               client_timeout=self.timeout_s), model, version)
            out = {}
            for name in conf_out:
                if name in shm_out:
                    meta = result.get_output(name)
                    shape = [int(d) for d in meta.shape]
                    arr = shm.get_contents_as_numpy(region.handle, np.dtype(conf_out[name]), shape,
                                                    offset=shm_out[name]).copy()
                else:
                    arr = result.as_numpy(name)
                out[name] = arr if arr.dtype == np.float32 or arr.dtype.kind != "f" else arr.astype(np.float32)
            return out
        finally:
            if region is not None:
                self._release(region)

    def close(self) -> None:
        with self._lock:
            regions, self._regions, self._free = self._regions, [], []
        for r in regions:
            r.destroy(self._client)
        self._client.close()
