"""The ``embedded`` runtime: ONNX Runtime sessions in-process over a Triton model repository (the serving default).

    from ldm3d.runtime import create_runtime
    rt = create_runtime("embedded", repository="model_repository")
    out = rt.infer("unet", {"sample": x, "timestep": t, "encoder_hidden_states": e})["out_sample"]

It reads what Triton reads: ``config.pbtxt`` (tensor names and dtypes, ``version_policy``, and the onnxruntime
backend's thread ``parameters``) and the version folders. A session is built once per (model, version), after the
version's files were checked against its manifest and its graph against the config, and then reused by every call
(ONNX Runtime sessions are safe for concurrent ``run``). :meth:`EmbeddedRuntime.refresh` picks up a newly exported
or promoted version: the new session is built beside the old one and swapped in atomically, so calls in flight on
the old version finish on it and nothing is dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FailedPrecondition, InvalidArgument, NotFound
from .base import ModelMetadata, ModelRuntime, TensorSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Loaded:
    model: str
    version: int
    session: object  # onnxruntime.InferenceSession
    metadata: ModelMetadata
    dtypes: dict  # input name → numpy dtype


def _session_options(cfg, intra_op_threads: int | None, inter_op_threads: int | None, allow_spinning: bool = False):
    """ONNX Runtime options from the Triton onnxruntime backend's config knobs (same names, same meaning)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # ORT's pool threads busy-wait after every call by default. With more than one call in flight (text encoding or
    # decoding beside a U-Net step) or neighbours on the node, the spinning threads take the cores the working ones
    # need: measured on 2 shared cores, the tiny U-Net step took 2.3-2.6x longer with spinning than without.
    spin = "1" if allow_spinning else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    p = cfg.parameters
    intra = intra_op_threads if intra_op_threads is not None else int(p.get("intra_op_thread_count", 0) or 0)
    inter = inter_op_threads if inter_op_threads is not None else int(p.get("inter_op_thread_count", 0) or 0)
    if intra > 0:
        opts.intra_op_num_threads = intra
    if inter > 0:
        opts.inter_op_num_threads = inter
    if str(p.get("execution_mode", "0")) == "1":
        opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    if str(p.get("enable_mem_arena", "1")) == "0":
        opts.enable_cpu_mem_arena = False
    level = int(cfg.raw.get("optimization", {}).get("graph", {}).get("level", 1))
    opts.graph_optimization_level = {-1: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                     0: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}.get(
        level, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    return opts


class EmbeddedRuntime(ModelRuntime):
    """ONNX Runtime over ``repository``.

    Args:
        repository: a Triton model repository folder written by ``ldm3d export``.
        verify: check every file's sha256 against the version's manifest before building its session (a corrupted
            or truncated file raises ``FailedPrecondition`` and is never loaded). ``False`` checks sizes only.
        intra_op_threads / inter_op_threads: override the config's ``intra_op_thread_count`` /
            ``inter_op_thread_count`` parameters (0 or absent = ONNX Runtime's default, all cores).
        allow_spinning: let ONNX Runtime's pool threads busy-wait between calls (its own default). Off here: with
            concurrent calls or other work on the node, spinning threads steal the cores the working ones need.
        providers: ONNX Runtime execution providers (default CPU).
        preload: models (or ``True`` for all) whose current version is loaded now rather than on first use.
    """

    kind = "embedded"

    def __init__(self, repository: str | Path, *, verify: bool = True, intra_op_threads: int | None = None,
                 inter_op_threads: int | None = None, allow_spinning: bool = False,
                 providers: Iterable[str] | None = None,
                 preload: bool | Iterable[str] = False):
        from ..repository import ModelRepository

        if repository is None:
            raise InvalidArgument("repository=None is invalid: the embedded runtime needs --repository DIR "
                                  "(write one with `ldm3d export`)", field="repository")
        self.repository = ModelRepository(repository)
        self.verify = verify
        self._threads = (intra_op_threads, inter_op_threads, allow_spinning)
        self._providers = list(providers or ["CPUExecutionProvider"])
        self._sessions: dict[tuple[str, int], _Loaded] = {}
        self._current: dict[str, int] = {}
        self._lock = threading.RLock()  # serialises loading; the infer hot path takes no lock
        if preload:
            for model in self.repository.models() if preload is True else preload:
                self.load(model)

    # ------------------------------------------------------------------ loading
    def _build(self, model: str, version: int) -> _Loaded:
        import onnxruntime as ort

        from ..repository.config import check_config_matches_graph
        from ..repository.layout import MODEL_FILE
        from ..repository.manifest import check_files, verify_or_raise

        folder = self.repository.version_dir(model, version)
        cfg = self.repository.config(model)
        if self.verify:
            verify_or_raise(folder, model, version)
        else:
            from ..repository.manifest import read_manifest

            bad = [p for p in check_files(folder, read_manifest(folder, model, version), quick=True)
                   if p.problem != "unlisted"]
            if bad:
                raise FailedPrecondition(f"model {model!r} version {version}: {folder / bad[0].path}: {bad[0].detail}")
        onnx_path = folder / MODEL_FILE
        if not onnx_path.is_file():
            raise NotFound(f"model {model!r} version {version}: {onnx_path} does not exist", field="version")
        check_config_matches_graph(cfg, onnx_path, version)
        try:
            session = ort.InferenceSession(str(onnx_path), _session_options(cfg, *self._threads),
                                           providers=self._providers)
        except Exception as exc:  # ORT's own message says which node or file; keep it, name the model
            raise FailedPrecondition(f"model {model!r} version {version}: ONNX Runtime cannot load {onnx_path} "
                                     f"({exc.__class__.__name__}: {str(exc)[:300]})") from None

        def specs(args, tensors):
            return tuple(TensorSpec(a.name, cfg_t.dtype, tuple(d if isinstance(d, int) else str(d) for d in a.shape))
                         for a in args for cfg_t in tensors if cfg_t.name == a.name)

        meta = ModelMetadata(model, version, specs(session.get_inputs(), cfg.inputs),
                             specs(session.get_outputs(), cfg.outputs), cfg.platform or cfg.backend,
                             {"path": str(folder), "max_batch_size": cfg.max_batch_size})
        log.info("embedded: loaded %s version %d from %s", model, version, onnx_path)
        return _Loaded(model, version, session, meta, {t.name: np.dtype(t.dtype) for t in cfg.inputs})

    def load(self, model: str, version: int | None = None) -> int:
        """Build (if needed) the session of ``model``'s ``version`` (default: current) and return the version.

        With ``version=None`` the repository's current version becomes this runtime's default for ``model``.
        """
        with self._lock:
            resolved = self.repository.resolve(model, version)
            key = (model, resolved)
            if key not in self._sessions:
                self._sessions[key] = self._build(model, resolved)
            if version is None:
                self._current[model] = resolved
            return resolved

    def refresh(self, models: Iterable[str] | None = None) -> dict[str, int]:
        """Re-read configs and version folders; load each model's (new) current version beside the old one, swap,
        then drop sessions of versions the policy no longer serves. Returns the current version per model."""
        with self._lock:
            for model in list(models or self._current or self.repository.models()):
                self.load(model)
                served = set(self.repository.served_versions(model))
                for key in [k for k in self._sessions if k[0] == model and k[1] not in served]:
                    del self._sessions[key]  # calls in flight hold their own reference and finish
            return dict(self._current)

    def unload(self, model: str, version: int | None = None) -> None:
        with self._lock:
            for key in [k for k in self._sessions if k[0] == model and (version is None or k[1] == version)]:
                del self._sessions[key]
            if version is None or self._current.get(model) == version:
                self._current.pop(model, None)

    def _get(self, model: str, version: int | None) -> _Loaded:
        if version is None:
            v = self._current.get(model)
            if v is not None:
                loaded = self._sessions.get((model, v))
                if loaded is not None:
                    return loaded
        else:
            loaded = self._sessions.get((model, int(version)))
            if loaded is not None:
                return loaded
        v = self.load(model, version)
        return self._sessions[(model, v)]

    # ------------------------------------------------------------------ ModelRuntime
    def infer(self, model: str, inputs: Mapping[str, np.ndarray], version: int | None = None) -> dict[str, np.ndarray]:
        loaded = self._get(model, version)
        feed = self._check_inputs(loaded, inputs)
        names = [o.name for o in loaded.metadata.outputs]
        try:
            outs = loaded.session.run(names, feed)
        except Exception as exc:  # a shape ORT rejects at run time (e.g. a spatial size the U-Net cannot halve)
            raise InvalidArgument(f"model {model!r} version {loaded.version}: ONNX Runtime rejected the inputs "
                                  f"({str(exc)[:300]})", field="inputs") from None
        return {n: (o if o.dtype == np.float32 or o.dtype.kind != "f" else o.astype(np.float32))
                for n, o in zip(names, outs)}

    @staticmethod
    def _check_inputs(loaded: _Loaded, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        model, version = loaded.model, loaded.version
        expected = {t.name: t for t in loaded.metadata.inputs}
        missing = [n for n in expected if n not in inputs]
        extra = [n for n in inputs if n not in expected]
        if missing or extra:
            raise InvalidArgument(f"model {model!r} version {version}: inputs must be {sorted(expected)}; missing "
                                  f"{missing}, unexpected {extra}", field="inputs")
        feed = {}
        for name, spec in expected.items():
            arr = np.asarray(inputs[name])
            want = loaded.dtypes[name]
            if arr.dtype != want:
                if arr.dtype.kind != want.kind and not (arr.dtype.kind in "iu" and want.kind in "iu"):
                    raise InvalidArgument(f"model {model!r} version {version}: input {name!r} is {arr.dtype}, "
                                          f"expected {want}", field="inputs")
                arr = arr.astype(want)
            if arr.ndim != len(spec.shape) or any(isinstance(d, int) and d != s for d, s in zip(spec.shape, arr.shape)):
                raise InvalidArgument(f"model {model!r} version {version}: input {name!r} has shape {list(arr.shape)}, "
                                      f"expected {list(spec.shape)}", field="inputs")
            feed[name] = np.ascontiguousarray(arr)
        return feed

    def ready(self, model: str, version: int | None = None) -> bool:
        try:
            self._get(model, version)
            return True
        except (NotFound, FailedPrecondition, InvalidArgument) as exc:
            log.warning("embedded: %s is not ready: %s", model, exc)
            return False

    def metadata(self, model: str, version: int | None = None) -> ModelMetadata:
        return self._get(model, version).metadata

    def loaded(self) -> dict[str, list[int]]:
        """Versions with a live session, per model."""
        out: dict[str, list[int]] = {}
        for m, v in sorted(self._sessions):
            out.setdefault(m, []).append(v)
        return out

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._current.clear()

