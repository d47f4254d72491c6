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

Errors arrive as the typed :mod:`ldm3d.errors` the server raised (``InvalidArgument.field`` names the field,
``ResourceExhausted.retry_after_s`` says when to retry); an unreachable server is ``Unavailable``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import grpc
from google.longrunning import operations_pb2

from .errors import Internal
from .pipeline import GenerateParams, GenerateResult
from .servers import status, tensors
from .servers.logs import REQUEST_ID_KEY
from .v1 import common_pb2, studio_pb2, studio_pb2_grpc

OnStep = Callable[[int, int, float], None]


class StudioClient:
    def __init__(self, target: str, *, timeout: float | None = None, max_message_mb: int = 64):
        """``target``: the gateway's ``host:port``; ``timeout``: seconds per call (None: no deadline)."""
        self.target, self.timeout = target, timeout
        limit = max_message_mb * 1024 * 1024
        self._channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", limit),
                                                               ("grpc.max_send_message_length", limit)])
        self._stub = studio_pb2_grpc.StudioStub(self._channel)

    def generate(self, params: GenerateParams, on_step: OnStep | None = None, *, model: str = "", version: str = "",
                 request_id: str | None = None) -> GenerateResult:
        """One prompt → images and metadata, streaming ``on_step(step, total, elapsed_s)`` per denoising step."""
        request = to_request(params, model=model, version=version, request_id=request_id)
        stream = self._stub.Generate(request, timeout=self.timeout, metadata=self._metadata(request.request_id))
        try:
            for msg in stream:
                if msg.HasField("progress"):
                    if on_step is not None:
                        p = msg.progress
                        on_step(p.step, p.total, p.elapsed.ToNanoseconds() / 1e9)
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
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            op = self.get_operation(name)
            if op.done:
                if op.HasField("error"):
                    raise status.from_status_proto(op.error, f"operation {name}")
                result = studio_pb2.GenerateResult()
                op.response.Unpack(result)
                return from_result(result)
            if end is not None and time.monotonic() > end:
                from .errors import DeadlineExceeded

                raise DeadlineExceeded(f"operation {name} was not done within {timeout} s")
            time.sleep(poll_s)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _metadata(self, request_id: str = ""):
        return ((REQUEST_ID_KEY, request_id or uuid.uuid4().hex),)

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata(getattr(request, "request_id", "")))
        except grpc.RpcError as err:
            raise status.from_rpc_error(err, f"the platform at {self.target}") from None


def generate(server: str, params: GenerateParams, on_step: OnStep | None = None, *, timeout: float | None = None,
             model: str = "", version: str = "") -> GenerateResult:
    """``ldm3d generate --server HOST:PORT``: one generation through the gateway at ``server``."""
    with StudioClient(server, timeout=timeout) as client:
        return client.generate(params, on_step, model=model, version=version)


def to_request(p: GenerateParams, *, model: str = "", version: str = "",
               request_id: str | None = None) -> studio_pb2.GenerateRequest:
    """``GenerateParams`` → ``GenerateRequest``; ``None`` fields stay unset so the server applies the defaults."""
    req = studio_pb2.GenerateRequest(
        request_id=request_id or uuid.uuid4().hex, prompt=p.prompt, negative_prompt=p.negative_prompt,
        guidance_scale=p.guidance_scale, scheduler=p.scheduler or "", num_images=p.num_images, model=model,
        version=version, image_encoding=common_pb2.IMAGE_ENCODING_PNG)
    for name in ("height", "width", "steps", "seed"):
        if getattr(p, name) is not None:
            setattr(req, name, int(getattr(p, name)))
    if p.init_rgb is not None or p.init_depth is not None:
        req.strength = p.strength
        if p.init_rgb is not None:
            req.init_image.rgb.array.CopyFrom(tensors.to_tensor(p.init_rgb))
        if p.init_depth is not None:
            req.init_image.depth.array.CopyFrom(tensors.to_tensor(p.init_depth))
    return req


def from_result(r: studio_pb2.GenerateResult) -> GenerateResult:
    """``GenerateResult`` message → the pipeline's ``GenerateResult``. ``rgb_float`` and ``decoded`` (the decoder's
    float output) do not travel over the wire and are None."""
    rgb = [tensors.read_rgb(img.rgb, f"images[{i}].rgb") for i, img in enumerate(r.images)]
    depth = [tensors.read_depth(img.depth, f"images[{i}].depth") for i, img in enumerate(r.images)]
    meta = json.loads(r.metadata_json) if r.metadata_json else {}
    params = GenerateParams(
        prompt=meta.get("prompt", ""), negative_prompt=meta.get("negative_prompt", ""), height=meta.get("height"),
        width=meta.get("width"), steps=meta.get("steps"), guidance_scale=meta.get("guidance_scale", 5.0),
        seed=int(r.seed), scheduler=meta.get("scheduler"), num_images=meta.get("num_images", len(rgb)),
        strength=(meta.get("image_to_image") or {}).get("strength", 0.8))
    meta.setdefault("request_id", r.request_id)
    return GenerateResult(rgb=rgb, depth=depth, rgb_float=None, decoded=None, params=params, metadata=meta)
