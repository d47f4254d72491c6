"""The models one serving process answers for: a name, its releases, and the loaded pipeline (or only its spec).

A checkpoint folder is one model with one version (the first 12 hex digits of its sha256). A model repository
serves **releases** (:mod:`ldm3d.repository.releases`): the current one, a canary's, and any release a request
names. A gateway whose stages are all remote loads specs only (sizes, defaults and scheduler: no weights).

Live roll-outs. Every ``--reload-interval`` seconds a watcher thread reads ``releases.json``; when what should be
served changed (a publish, promote, canary change or rollback), it

1. verifies (sha256 against the manifests), loads and warms every newly needed release *beside* the serving ones
   (models a release shares with a loaded one are reused, not loaded twice);
2. switches the route (current release, canary release and percent) in one assignment: new requests take the new
   route, requests in flight keep the release they resolved;
3. drains: a release no longer routed is unloaded once its in-flight requests are done (a lease count per release).

A release that fails to verify or load is *refused*: logged, counted in metrics, shown by ListModels, and the old
route keeps serving; it is tried again when ``releases.json`` changes or after ``RETRY_REFUSED_S``.
Requests that name no version are routed by :meth:`Releases.pick`-style sticky canary assignment on their
``request_id``; the gateway resolves the release once and sends it to its stages as an explicit version, so a
request uses one release from its first stage to its last even while the stages switch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LDM3DError, NotFound
from ..pipeline import LDM3DPipeline, PipelineSpec
from . import metrics
from .config import ServeConfig

log = logging.getLogger(__name__)

RETRY_REFUSED_S = 60.0  # a refused release is tried again after this long even when nothing changed
# the models each stage service runs: a process loads (and, with Triton, loads into Triton) only those
STAGE_MODELS = {"text-encoder": ("text_encoder",), "sampler": ("unet",), "autoencoder": ("vae_decoder", "vae_encoder")}


def models_used(cfg: ServeConfig) -> tuple[str, ...]:
    """The release models this process runs: its stage's, or (all, gateway) those of the stages it runs itself."""
    if cfg.service in STAGE_MODELS:
        return STAGE_MODELS[cfg.service]
    local = {"text": "text-encoder", "sampler": "sampler", "autoencoder": "autoencoder"}
    return tuple(m for key, svc in local.items() if not cfg.remote[key] for m in STAGE_MODELS[svc])


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str  # the label clients send and receive as `version` / `model_version` (the release number)
    spec: PipelineSpec
    pipeline: LDM3DPipeline | None  # None when this process only needs the spec
    runtime_kind: str  # "torch", "embedded" or "triton": what runs (or, remotely, ran) the models
    release: object | None = None  # ldm3d.repository.releases.Release (repository models)

    def require_pipeline(self) -> LDM3DPipeline:
        if self.pipeline is None:  # a wiring bug: servicers that compute are only built with weights loaded
            raise RuntimeError(f"model {self.name} {self.version} was loaded without weights")
        return self.pipeline


@dataclass(frozen=True)
class Route:
    """Where requests that name no version go: ``default``, or ``canary`` for ``percent`` % of request ids."""

    default: str
    canary: str | None = None
    percent: int = 0
    generation: int = 0  # releases.json generation this route was built from
    since: float = 0.0  # time.time() of the switch


class ModelRegistry:
    def __init__(self, cfg: ServeConfig, load_weights: bool = True):
        self.cfg, self.load_weights = cfg, load_weights
        self._lock = threading.Lock()  # short: leases and the table of loaded releases (requests take it)
        self._load_lock = threading.RLock()  # long: loading and unloading releases (the watcher, named releases)
        self._loaded: dict[str, ServedModel] = {}
        self._inflight: Counter[str] = Counter()
        self._last_used: dict[str, float] = {}
        self._refused: dict[str, tuple[str, float]] = {}  # label → (reason, when)
        self._fingerprint = ""
        self._read_error = ""
        self._runtime = None
        self._models = models_used(cfg)
        self._repository = None
        if cfg.repository:
            from ..repository import ModelRepository

            self._repository = ModelRepository(cfg.repository)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.default_name = cfg.model_name or "ldm3d"
        if cfg.checkpoint:
            first = self._load_checkpoint()
            self.default_name = first.name
            self._loaded[first.version] = first
            self._route = Route(first.version)
        else:
            from ..repository.releases import read_releases

            state = read_releases(cfg.repository)
            current = state.current_release()
            self._loaded[current.label] = self._load_release(current)  # a failure here fails the start
            self._route = Route(current.label, generation=state.generation, since=time.time())
            self._apply(state)  # the canary, if one runs
        self._publish_state()

    # ------------------------------------------------------------------ requests
    @property
    def default_version(self) -> str:
        return self._route.default

    def _pick(self, model: str, version: str, request_id: str) -> tuple[str, str]:
        """(release label, route kind) for a request: ``version``, else the canary or current release."""
        if model and model != self.default_name:
            raise NotFound(f"model={model!r} is not served here: use {self.default_name!r} (see ListModels) or "
                           "leave it empty for the default", field="model")
        if version:
            return version, "named"
        route = self._route
        if route.canary is not None:
            from ..repository.releases import canary_point

            if canary_point(request_id) < route.percent:
                return route.canary, "canary"
        return route.default, "current"

    def _count(self, served: ServedModel, how: str) -> ServedModel:
        metrics.RELEASE_REQUESTS.labels(self.default_name, served.version, how).inc()
        self._last_used[served.version] = time.monotonic()
        return served

    def get(self, model: str = "", version: str = "", request_id: str = "") -> ServedModel:
        """The model named ``model`` at ``version`` (empty: the route's release for ``request_id``, canary
        included); a named release that is not loaded is loaded now (blocking). ``NotFound`` names the field."""
        label, how = self._pick(model, version, request_id)
        return self._count(self._loaded.get(label) or self._load_named(label), how)

    async def resolve(self, model: str = "", version: str = "", request_id: str = "") -> ServedModel:
        """:meth:`get` for the event loop: a release that must be loaded first is loaded in a worker thread."""
        label, how = self._pick(model, version, request_id)
        served = self._loaded.get(label)
        if served is None:
            import asyncio

            served = await asyncio.to_thread(self._load_named, label)
        return self._count(served, how)

    @contextlib.contextmanager
    def lease(self, served: ServedModel):
        """Hold ``served``'s release while a request runs on it: it is not unloaded before the lease ends."""
        with self._lock:
            self._inflight[served.version] += 1
        try:
            yield served
        finally:
            with self._lock:
                self._inflight[served.version] -= 1
                self._last_used[served.version] = time.monotonic()

    def default(self) -> ServedModel:
        return self._loaded[self._route.default]

    def versions(self) -> list[str]:
        """Versions clients can ask for, oldest first (a repository's releases, else the one loaded)."""
        found = set(self._loaded)
        if self.cfg.repository:
            from ..repository.releases import read_releases

            with contextlib.suppress(LDM3DError):
                found |= {r.label for r in read_releases(self.cfg.repository).releases.values()}
        return sorted(found, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))

    def releases(self) -> list[dict]:
        """Every release with its model versions and its state here: current, canary, draining, loaded,
        available or refused (with the reason)."""
        route = self._route
        out: dict[str, dict] = {}
        if self.cfg.repository:
            from ..repository.releases import read_releases

            with contextlib.suppress(LDM3DError):
                for r in read_releases(self.cfg.repository).releases.values():
                    out[r.label] = {"version": r.label, "models": dict(r.models), "state": "available",
                                    "detail": "", "created": r.created}
        for label, served in list(self._loaded.items()):
            models = dict(served.release.models) if served.release is not None else {}
            entry = out.setdefault(label, {"version": label, "models": models, "state": "", "detail": "",
                                           "created": getattr(served.release, "created", "")})
            entry["state"] = self._state_of(label, route)
        for label, (reason, _when) in list(self._refused.items()):
            if label in out and out[label]["state"] == "available":
                out[label]["state"], out[label]["detail"] = "refused", reason
        if self._read_error:
            out.setdefault("", {"version": "", "models": {}, "state": "refused", "detail": self._read_error,
                                "created": ""})
        return sorted(out.values(), key=lambda e: (not e["version"].isdigit(),
                                                   int(e["version"]) if e["version"].isdigit() else 0))

    def _state_of(self, label: str, route: Route) -> str:
        if label == route.default:
            return "current"
        if label == route.canary:
            return "canary"
        return "draining" if self._inflight[label] > 0 else "loaded"

    @property
    def route(self) -> Route:
        return self._route

    # ------------------------------------------------------------------ the watcher
    def start_watching(self, interval_s: float | None = None) -> None:
        """Poll the repository every ``interval_s`` (default ``--reload-interval``) in a daemon thread."""
        interval_s = self.cfg.reload_interval_s if interval_s is None else interval_s
        if not self.cfg.repository or not interval_s or self._watcher is not None:
            return

        def loop():
            while not self._stop.wait(interval_s):
                try:
                    self.reconcile()
                except Exception:  # noqa: BLE001 - the watcher must survive anything; the old route keeps serving
                    log.exception("release watcher: unexpected error (the serving releases are unchanged)")

        self._watcher = threading.Thread(target=loop, name="release-watcher", daemon=True)
        self._watcher.start()

    def reconcile(self) -> Route:
        """One watcher tick: read releases.json, load what is newly needed, switch, drain. Returns the route."""
        from ..repository.releases import read_releases

        try:
            state = read_releases(self.cfg.repository)
        except LDM3DError as exc:  # a corrupted or unreadable file: keep serving what we serve, say why
            if str(exc) != self._read_error:
                log.error("release watcher: cannot read the releases (%s); still serving release %s", exc,
                          self._route.default)
                metrics.RELEASE_READ_ERRORS.inc()
            self._read_error = str(exc)
            self._drain()
            return self._route
        self._read_error = ""
        retry = any(time.monotonic() - when > RETRY_REFUSED_S for _r, when in self._refused.values())
        if state.fingerprint() != self._fingerprint or retry:
            self._apply(state)
        self._drain()
        self._publish_state()
        return self._route

    def _apply(self, state) -> None:
        """Load what ``state`` serves (beside what is loaded), then switch the route in one assignment. Holds only
        the load lock: requests (which take ``_lock`` briefly for their leases) never wait for a load."""
        with self._load_lock:
            self._fingerprint = state.fingerprint()
            wanted = state.serving()
            for release in wanted:
                if release.label in self._loaded:
                    continue
                t0 = time.monotonic()
                try:
                    served = self._load_release(release)
                    with self._lock:
                        self._loaded[release.label] = served
                except Exception as exc:  # noqa: BLE001 - any failure refuses the release, never the process
                    reason = str(exc) if isinstance(exc, LDM3DError) else f"{exc.__class__.__name__}: {exc}"
                    if release.label not in self._refused:
                        metrics.RELEASE_REFUSED.labels(self.default_name, release.label).inc()
                    self._refused[release.label] = (reason, time.monotonic())
                    log.error("release %s refused (still serving release %s): %s", release.label,
                              self._route.default, reason)
                    continue
                self._refused.pop(release.label, None)
                metrics.RELEASE_LOAD_SECONDS.observe(time.monotonic() - t0)
                log.info("release %s loaded and warmed in %.2f s: %s", release.label, time.monotonic() - t0,
                         release.models)
            current = wanted[0].label
            canary = state.canary
            canary_label = str(canary.release) if canary is not None else None
            old = self._route
            route = Route(current if current in self._loaded else old.default,
                          canary_label if canary_label in self._loaded and canary_label != current else None,
                          canary.percent if canary is not None else 0, state.generation, old.since)
            if (route.default, route.canary, route.percent) != (old.default, old.canary, old.percent):
                route = Route(route.default, route.canary, route.percent, route.generation, time.time())
                self._route = route  # the switch: one reference assignment, read lock-free by requests
                metrics.RELEASE_SWITCHES.inc()
                log.info("serving release %s%s (was %s%s)", route.default,
                         f", canary release {route.canary} at {route.percent} %" if route.canary else "",
                         old.default, f", canary {old.canary} at {old.percent} %" if old.canary else "")
            else:
                self._route = route

    def _drain(self) -> None:
        """Unload releases no longer routed whose requests are done (and idle for one reload interval)."""
        route = self._route
        idle_s = self.cfg.reload_interval_s or 0.0
        if self._runtime is not None and self._runtime.kind == "triton" and time.time() - route.since < 2 * idle_s:
            return  # a Triton is shared by replicas: give every one of them a poll to switch before unloading
        with self._load_lock:
            with self._lock:
                drained = [self._loaded.pop(label) for label in list(self._loaded)
                           if label not in (route.default, route.canary) and self._inflight[label] <= 0
                           and time.monotonic() - self._last_used.get(label, 0.0) >= idle_s]
                for served in drained:
                    self._inflight.pop(served.version, None)
                needed = {(m, v) for s in self._loaded.values() if s.release is not None
                          for m, v in s.release.models.items()}
            for served in drained:  # outside the request lock: a Triton unload is a network call
                self._unload(served, needed)

    def _unload(self, served: ServedModel, needed: set) -> None:
        if served.pipeline is not None and served.release is not None:
            for m, v in served.release.models.items():
                if m in self._models and (m, v) not in needed:
                    try:
                        self._runtime_unload(m, v)
                    except Exception as exc:  # noqa: BLE001 - a failed unload wastes memory, it breaks nothing
                        log.warning("release %s: unloading %s version %d failed: %s", served.version, m, v, exc)
        log.info("release %s drained and unloaded", served.version)

    def _publish_state(self) -> None:
        route = self._route
        metrics.RELEASE_STATE.clear()
        for label in list(self._loaded):
            metrics.RELEASE_STATE.labels(self.default_name, label, self._state_of(label, route)).set(1)
        for label in list(self._refused):
            metrics.RELEASE_STATE.labels(self.default_name, label, "refused").set(1)
        metrics.RELEASE_CANARY_PERCENT.labels(self.default_name).set(route.percent if route.canary else 0)

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self._runtime is not None:
            self._runtime.close()
        for served in self._loaded.values():
            if served.pipeline is not None and served.pipeline.runtime is not self._runtime:
                served.pipeline.runtime.close()

    # ------------------------------------------------------------------ loading
    def _load_named(self, version: str) -> ServedModel:
        """A release a request names that is not loaded: load it now (beside the others)."""
        if self.cfg.repository and version.isdigit():
            from ..repository.releases import read_releases

            try:
                release = read_releases(self.cfg.repository).get(int(version))
            except NotFound:
                release = None
            if release is not None:
                with self._load_lock:
                    if version not in self._loaded:
                        served = self._load_release(release)
                        with self._lock:
                            self._loaded[version] = served
                    return self._loaded[version]
        raise NotFound(f"version={version!r} of model {self.default_name!r} does not exist: use one of "
                       f"{', '.join(map(repr, self.versions()))} or leave it empty for the default", field="version")

    def _load_checkpoint(self) -> ServedModel:
        from ..runtime.torch_runtime import resolve_checkpoint

        folder = resolve_checkpoint(self.cfg.checkpoint)
        if self.load_weights:
            pipe = LDM3DPipeline.from_checkpoint(folder, text_cache_size=self.cfg.text_cache_size)
            spec = pipe.spec
        else:
            pipe, spec = None, PipelineSpec.from_checkpoint(folder)
        name = self.cfg.model_name or Path(folder).name
        label = spec.checkpoint_hash[:12] or "1"
        metrics.MODEL_INFO.labels(name, label, "torch", str(spec.rgbd_channels)).set(1)
        return ServedModel(name, label, spec, pipe, "torch")

    def _load_release(self, release) -> ServedModel:
        """Verify, load and warm ``release``'s models (weights mode) or read its spec; the route is not touched."""
        from ..pipeline.spec import spec_for_release

        cfg = self.cfg
        spec = spec_for_release(cfg.repository, release)
        pipe = None
        if self.load_weights:
            if self._runtime is None:
                from ..runtime import create_runtime

                self._runtime = create_runtime(cfg.runtime, repository=cfg.repository, triton_url=cfg.triton_url,
                                               **cfg.runtime_options)
            self._runtime_load(release)
            pipe = LDM3DPipeline(self._runtime, spec, self.cfg.text_cache_size)
            warm(pipe, self._models)
        metrics.MODEL_INFO.labels(self.default_name, release.label, cfg.runtime, str(spec.rgbd_channels)).set(1)
        return ServedModel(self.default_name, release.label, spec, pipe, cfg.runtime, release)

    def _runtime_load(self, release) -> None:
        """Make every model version of ``release`` servable by the runtime (sha256-verified first)."""
        rt = self._runtime
        if rt.kind == "triton":  # Triton's own load does not know our manifests: verify here, then load
            from ..repository.manifest import verify_or_raise

            for m, v in release.models.items():
                if m in self._models:
                    verify_or_raise(self._repository.version_dir(m, v), m, v)
            for m, v in release.models.items():
                if m in self._models:
                    rt.ensure_loaded(m, v)
        else:  # embedded: sessions are built after verifying each file's sha256 (EmbeddedRuntime.verify)
            for m, v in release.models.items():
                if m in self._models:
                    rt.load(m, v)

    def _runtime_unload(self, model: str, version: int) -> None:
        rt = self._runtime
        if rt.kind == "triton":
            rt.unload_version(model, version)
        else:
            rt.unload(model, version)


def warm(pipe: LDM3DPipeline, models=None) -> None:
    """One smallest call through each of ``models`` (default: all) of ``pipe``'s release, so the first request pays
    no first-run cost (ONNX Runtime's allocations, Triton's instance start) and a model that loads but cannot run
    is refused."""
    spec, rt = pipe.spec, pipe.runtime
    v = {m: n for m, n in spec.versions.items() if models is None or m in models}
    side = 8  # latent pixels: a multiple of every U-Net's downsampling for SD v1.x and the tiny models
    latents = np.zeros((1, spec.latent_channels, side, side), np.float32)
    text = np.zeros((1, spec.max_text_length, spec.text_hidden_size), np.float32)
    if "text_encoder" in v:
        rt.infer("text_encoder", {"input_ids": np.zeros((1, spec.max_text_length), np.int64)}, v["text_encoder"])
    if "unet" in v:
        rt.infer("unet", {"sample": latents, "timestep": np.zeros((1,), np.float32),
                          "encoder_hidden_states": text}, v["unet"])
    if "vae_decoder" in v:
        rt.infer("vae_decoder", {"latent_sample": latents}, v["vae_decoder"])
    if "vae_encoder" in v:
        f = spec.vae_scale_factor
        rt.infer("vae_encoder", {"sample": np.zeros((1, spec.rgbd_channels, side * f, side * f), np.float32)},
                 v["vae_encoder"])
