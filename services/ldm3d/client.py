"""``ldm3d.client``: generate through a running platform's Studio gateway, with the in-process pipeline's results.

    from ldm3d.client import StudioClient, generate
    from ldm3d.pipeline import GenerateParams

    result = generate("localhost:50051", GenerateParams(prompt="a cabin in the woods", seed=42),
                      on_step=lambda step, total, elapsed: print(step, total))
    result.rgb[0], result.depth[0], result.metadata      # uint8 [H, W, 3], uint16 [H, W], dict (the CLI's .json)

    with StudioClient("localhost:50051", timeout=120) as c:
        c.list_models()
        name = c.submit(GenerateParams(prompt="..."))      # a long-running operation
        result = c.wait(name)                              # or c.cancel(name)

        # the same address answers DepthEvaluator and PanoramaRenderer (docs/api.md)
        depth = c.estimate_depth(rgb)                      # uint16 [H, W] (the server's --depth-model)
        m = c.evaluate_depth(depth, reference=metres)      # or rgb=rgb (--reference-model); DepthMetrics
        job = c.submit_render(rgb, depth, ods=True, path="orbit", seconds=2, fps=12, size=(640, 360), meshes=("glb",))
        render = c.wait_render(job, on_progress=lambda done, total, message: print(done, total, message))
        {a.name: a.data for a in render.artifacts}         # or a.path with files=True (--render-output-dir)
        name = c.submit_pano(GenerateParams(prompt="...", height=256, width=512), ods=True, meshes=("glb",))
        pano, render = c.wait_pano(name)                   # both stages as one operation (`ldm3d pano --server`)

A locked server (docs/security.md): ``StudioClient("host:50051", tls_ca="ca.pem", api_key=KEY)`` (``tls=True``
trusts the system's roots; ``tls_cert``/``tls_key`` present a client certificate for mutual TLS).

Errors arrive as the typed :mod:`ldm3d.errors` the server raised (``InvalidArgument.field`` names the field,
``ResourceExhausted.retry_after_s`` says when to retry); an unreachable server is ``Unavailable``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
from google.longrunning import operations_pb2

from .errors import DeadlineExceeded, Internal
from .evaluation import DepthMetrics
from .pipeline import GenerateParams, GenerateResult
from .v1 import (common_pb2, depth_pb2, depth_pb2_grpc, renderer_pb2, renderer_pb2_grpc, studio_pb2,
                 studio_pb2_grpc)
from .wire import auth, ids, status, tensors
from .wire import render as render_wire
from .wire.generate import from_result, to_request

OnStep = Callable[[int, int, float], None]
OnProgress = Callable[[int, int, str], None]


@dataclass
class DepthEvaluation:
    """``evaluate_depth``'s answer: the metrics, and the aligned map (metres, 0 where not measured) if asked for."""

    metrics: DepthMetrics
    aligned: np.ndarray | None
    reference_model: str  # with an rgb reference: the model that estimated it
    reference_model_version: str


class StudioClient:
    def __init__(self, target: str, *, timeout: float | None = None, max_message_mb: int = 64,
                 tls: bool | None = None, tls_ca: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None, api_key: str | None = None):
        """``target``: the gateway's ``host:port``; ``timeout``: seconds per call (None: no deadline).

        ``tls_ca``: connect over TLS trusting this PEM CA (``tls=True`` alone: the system's roots);
        ``tls_cert``/``tls_key``: a client certificate for mutual TLS; ``api_key``: sent as
        ``authorization: Bearer KEY`` with every call."""
        self.target, self.timeout = target, timeout
        self._auth = auth.bearer(api_key)
        limit = max_message_mb * 1024 * 1024
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        if tls or (tls is None and (tls_ca or tls_cert)):
            creds = auth.channel_credentials(tls_ca, tls_cert, tls_key)
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = studio_pb2_grpc.StudioStub(self._channel)
        self._depth = depth_pb2_grpc.DepthEvaluatorStub(self._channel)
        self._renderer = renderer_pb2_grpc.PanoramaRendererStub(self._channel)

    def generate(self, params: GenerateParams, on_step: OnStep | None = None, *, model: str = "", version: str = "",
                 request_id: str | None = None) -> GenerateResult:
        """One prompt → images and metadata, streaming ``on_step(step, total, elapsed_s)`` per denoising step."""
        request = to_request(params, model=model, version=version, request_id=request_id)
        stream = self._stub.Generate(request, timeout=self.timeout, metadata=self._metadata(request.request_id))
        try:
            for msg in stream:
                if msg.HasField("progress"):
                    if on_step is not None:
                        on_step(*tensors.from_progress(msg.progress))
                else:
                    return from_result(msg.result)
        except grpc.RpcError as err:
            raise status.from_rpc_error(err, f"the platform at {self.target}") from None
        except BaseException:
            stream.cancel()  # Ctrl-C or an on_step that raised: stop the server's sampling loop too
            raise
        raise Internal(f"the platform at {self.target} ended the stream without a result")

    def generate_batch(self, params: list[GenerateParams], *, model: str = "",
                       version: str = "") -> list[GenerateResult]:
        """Several prompts in one call; results in order. One bad item fails the call before any work starts."""
        items = [to_request(p, model=model, version=version) for p in params]
        request = studio_pb2.GenerateBatchRequest(requests=items)
        resp = self._call(self._stub.GenerateBatch, request)
        return [from_result(r) for r in resp.results]

    def list_models(self) -> list[studio_pb2.ModelInfo]:
        return list(self._call(self._stub.ListModels, studio_pb2.ListModelsRequest()).models)

    def submit(self, params: GenerateParams, *, model: str = "", version: str = "",
               request_id: str | None = None) -> str:
        """Start a long-running generation; returns the operation's name."""
        return self._call(self._stub.SubmitGenerate, to_request(params, model=model, version=version,
                                                                request_id=request_id)).name

    def get_operation(self, name: str) -> operations_pb2.Operation:
        return self._call(self._stub.GetOperation, operations_pb2.GetOperationRequest(name=name))

    def cancel(self, name: str) -> None:
        self._call(self._stub.CancelOperation, operations_pb2.CancelOperationRequest(name=name))

    def wait(self, name: str, poll_s: float = 0.2, timeout: float | None = None) -> GenerateResult:
        """Poll an operation until it is done; its result, or its error raised as a typed error."""
        for op in self._polls(self.get_operation, name, "operation", poll_s, timeout):
            pass
        result = studio_pb2.GenerateResult()
        op.response.Unpack(result)
        return from_result(result)

    @staticmethod
    def _polls(get, name: str, what: str, poll_s: float, timeout: float | None
               ) -> Iterator[operations_pb2.Operation]:
        """``get(name)`` every ``poll_s`` seconds, each answer yielded, until one is done (the last yielded); then
        its error raised as the typed error, or ``DeadlineExceeded`` once ``timeout`` has passed."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            op = get(name)
            yield op
            if op.done:
                if op.HasField("error"):
                    raise status.from_status_proto(op.error, f"{what} {name}")
                return
            if end is not None and time.monotonic() > end:
                raise DeadlineExceeded(f"{what} {name} was not done within {timeout} s")
            time.sleep(poll_s)

    # -- DepthEvaluator
    def estimate_depth(self, rgb: np.ndarray, *, model: str = "", version: str = "",
                       request_id: str | None = None) -> np.ndarray:
        """RGB ``uint8 [H, W, 3]`` → 16-bit relative depth ``uint16 [H, W]`` (larger = nearer) by the server's DPT."""
        req = depth_pb2.EstimateDepthRequest(request_id=request_id or ids.new_request_id(), model=model, version=version,
                                             rgb=common_pb2.Image(array=tensors.to_tensor(rgb)),
                                             image_encoding=common_pb2.IMAGE_ENCODING_RAW)
        return tensors.read_depth(self._call(self._depth.Estimate, req).depth, "depth")

    def evaluate_depth(self, pred: np.ndarray, *, reference: np.ndarray | None = None, rgb: np.ndarray | None = None,
                       reference_scale: float | None = None, samples: int | None = None, seed: int | None = None,
                       include_aligned: bool = False, flip_aug: bool | None = None,
                       request_id: str | None = None) -> DepthEvaluation:
        """Score a 16-bit prediction against ``reference`` (float metres, or uint16 × ``reference_scale``, default
        1/1000) or against the server's reference model's depth of ``rgb`` (the paper's §4.3 protocol)."""
        if (reference is None) == (rgb is None):
            raise ValueError("give exactly one of reference= (a depth map) or rgb= (for the reference model)")
        req = depth_pb2.EvaluateDepthRequest(request_id=request_id or ids.new_request_id(),
                                             predicted_depth=common_pb2.Image(array=tensors.to_tensor(pred)),
                                             include_aligned=include_aligned)
        if reference is not None:
            ref = np.asarray(reference)
            req.reference_depth.array.CopyFrom(tensors.to_tensor(ref if ref.dtype == np.uint16
                                                                 else ref.astype(np.float32)))
        else:
            req.rgb.array.CopyFrom(tensors.to_tensor(rgb))
        for name, value in (("reference_depth_scale", reference_scale), ("sample_pixels", samples), ("seed", seed),
                            ("flip_aug", flip_aug)):
            if value is not None:
                setattr(req, name, value)
        r = self._call(self._depth.Evaluate, req)
        m = r.metrics
        metrics = DepthMetrics(m.abs_rel, m.rmse, m.scale, m.shift, m.valid_pixels, m.sampled_pixels,
                               m.evaluated_pixels, m.nonpositive_pixels, m.samples, m.seed)
        aligned = (tensors.from_tensor(r.aligned_depth, "aligned_depth", dtype="float32")
                   if r.HasField("aligned_depth") else None)
        return DepthEvaluation(metrics, aligned, r.reference_model, r.reference_model_version)

    # -- PanoramaRenderer
    def submit_render(self, rgb: np.ndarray, depth: np.ndarray, *, path: str | list | None = None,
                      size: tuple[int, int] | None = None, eye_size: tuple[int, int] | None = None,
                      meshes: tuple[str, ...] = (), files: bool = False, output_dir: str = "",
                      request_id: str | None = None, **options) -> str:
        """Start a render job (``ldm3d render``'s options, e.g. ``ods=True, seconds=2, fps=12, stereo=True``);
        returns the operation's name. ``path``: orbit, dolly, look-around or a list of keyframe dicts;
        ``files=True`` writes the artifacts on the server (its --render-output-dir, subfolder ``output_dir``)."""
        req = render_wire.to_request(rgb, depth, path=path, size=size, eye_size=eye_size, meshes=meshes, files=files,
                                     output_dir=output_dir, request_id=request_id, **options)
        return self._call(self._renderer.Submit, req).name

    def get_render(self, name: str) -> operations_pb2.Operation:
        """The render job's operation; its metadata is a ``RenderMetadata`` (state, progress, message)."""
        return self._call(self._renderer.GetOperation, operations_pb2.GetOperationRequest(name=name))

    def cancel_render(self, name: str) -> None:
        """Stop the job (it ends CANCELLED, leaving no partial artifact); returns once it has stopped."""
        self._call(self._renderer.CancelOperation, operations_pb2.CancelOperationRequest(name=name))

    def wait_render(self, name: str, on_progress: OnProgress | None = None, poll_s: float = 0.2,
                    timeout: float | None = None) -> renderer_pb2.RenderResult:
        """Poll until done, calling ``on_progress(done, total, message)`` on each change; the ``RenderResult``,
        or the job's error raised as the typed error."""
        seen = None
        for op in self._polls(self.get_render, name, "render", poll_s, timeout):
            meta = renderer_pb2.RenderMetadata()
            op.metadata.Unpack(meta)
            now = (meta.progress.step, meta.progress.total, meta.message)
            if on_progress is not None and now != seen and meta.message:
                on_progress(*now)
            seen = now
        result = renderer_pb2.RenderResult()
        op.response.Unpack(result)
        return result

    # -- Studio.SubmitPano: both stages of `ldm3d pano` as one operation
    def submit_pano(self, params: GenerateParams, *, model: str = "",
                    version: str = "", request_id: str | None = None, path: str | list | None = None,
                    size: tuple[int, int] | None = None, eye_size: tuple[int, int] | None = None,
                    meshes: tuple[str, ...] = (), files: bool = False, output_dir: str = "", **options) -> str:
        """Start text → RGBD panorama → render (``submit_render``'s options, without the panorama: stage 1's is
        rendered); returns the operation's name (``panos/...``) for :meth:`wait_pano` or :meth:`cancel`."""
        gen = to_request(params, model=model, version=version, request_id=request_id)
        empty = np.zeros((0, 0), np.uint16)
        render = render_wire.to_request(empty, empty, path=path, size=size, eye_size=eye_size, meshes=meshes,
                                        files=files, output_dir=output_dir, **options)
        render.ClearField("panorama")
        render.request_id = ""
        req = studio_pb2.PanoRequest(request_id=gen.request_id, generate=gen, render=render)
        return self._call(self._stub.SubmitPano, req).name

    def wait_pano(self, name: str, on_step: OnStep | None = None, on_progress: OnProgress | None = None,
                  poll_s: float = 0.2, timeout: float | None = None
                  ) -> tuple[GenerateResult, renderer_pb2.RenderResult]:
        """Poll a SubmitPano operation until done, calling ``on_step(step, total, elapsed_s)`` while it generates
        and ``on_progress(done, total, message)`` while it renders; the panorama and the ``RenderResult``, or the
        operation's error raised as the typed error."""
        seen = None
        for op in self._polls(self.get_operation, name, "operation", poll_s, timeout):
            meta = studio_pb2.PanoMetadata()
            op.metadata.Unpack(meta)
            now = (meta.stage, meta.progress.step, meta.progress.total, meta.message)
            if now != seen and meta.HasField("progress"):
                if meta.stage == "generate" and on_step is not None:
                    on_step(*tensors.from_progress(meta.progress))
                elif meta.stage == "render" and on_progress is not None:
                    on_progress(meta.progress.step, meta.progress.total, meta.message)
            seen = now
        result = studio_pb2.PanoResult()
        op.response.Unpack(result)
        return from_result(result.generation), result.render

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _metadata(self, request_id: str = ""):
        return (*ids.metadata(request_id), *self._auth)

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata(getattr(request, "request_id", "")))
        except grpc.RpcError as err:
            raise status.from_rpc_error(err, f"the platform at {self.target}") from None


def generate(server: str, params: GenerateParams, on_step: OnStep | None = None, *, timeout: float | None = None,
             model: str = "", version: str = "", **connection) -> GenerateResult:
    """``ldm3d generate --server HOST:PORT``: one generation through the gateway at ``server``; ``connection``:
    :class:`StudioClient`'s ``tls``, ``tls_ca``, ``tls_cert``, ``tls_key``, ``api_key``."""
    with StudioClient(server, timeout=timeout, **connection) as client:
        return client.generate(params, on_step, model=model, version=version)

