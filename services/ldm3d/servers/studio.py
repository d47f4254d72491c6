"""Studio, the public gateway: prompt → RGB + 16-bit depth by chaining the stages in the pipeline's order.

``_run`` reads like ``LDM3DPipeline.__call__`` (check inputs → encode prompts → encode init image → sample →
decode) so that, for the same seed, the gateway's images equal the in-process pipeline's bit for bit.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from google.longrunning import operations_pb2
from google.protobuf import empty_pb2

from ..errors import invalid
from ..pipeline.ldm3d import generation_metadata
from ..v1 import common_pb2, studio_pb2_grpc
from ..v1 import studio_pb2 as pb
from ..wire import tensors
from ..wire.generate import generate_params
from ..wire.ids import new_request_id
from .autoencoder import read_rgbd
from .downstream import Call, RemoteStages
from .models import ModelRegistry, ServedModel
from .operations import Operations
from .stages import Sampled, Step

MAX_BATCH = 16
BATCH_IN_FLIGHT = 8  # the sampler's default --max-running: items in flight share its U-Net calls step by step


class StudioServicer(studio_pb2_grpc.StudioServicer):
    def __init__(self, registry: ModelRegistry, downstream: RemoteStages, default_timeout_s: float,
                 max_operations: int, queue=None):
        self.registry, self.downstream, self.default_timeout_s = registry, downstream, default_timeout_s
        self.operations = Operations(max_operations)
        self.queue = queue  # a jobs.front.JobQueue (--queue): operations live in Redis, workers run them

    async def Generate(self, request: pb.GenerateRequest, context) -> AsyncIterator[pb.GenerateResponse]:
        rid = request.request_id
        job = await self._prepare(request, "")
        async for event in self._run(*job, self._call(rid, context)):
            if isinstance(event, Step):
                yield pb.GenerateResponse(request_id=rid, progress=tensors.progress(event.step, event.total,
                                                                                    event.elapsed_s))
            else:
                yield pb.GenerateResponse(request_id=rid, result=event)

    async def GenerateBatch(self, request: pb.GenerateBatchRequest, context) -> pb.GenerateBatchResponse:
        if not 1 <= len(request.requests) <= MAX_BATCH:
            raise invalid("requests", f"<{len(request.requests)} requests>", f"send 1 to {MAX_BATCH}")
        for item in request.requests:
            item.request_id = item.request_id or new_request_id()
        jobs = [await self._prepare(item, f"requests[{i}].") for i, item in enumerate(request.requests)]  # all, first
        deadline = self._call("", context).deadline
        # items in flight sample together (the sampler batches their U-Net calls step by step) and overlap one
        # item's text encoding and decoding with the others' sampling; more than the sampler runs at once would
        # only fill its admission queue (and be refused) on behalf of a single call
        slots = asyncio.Semaphore(BATCH_IN_FLIGHT)

        async def one(job, item):
            async with slots:
                async for event in self._run(*job, Call(item.request_id, deadline)):
                    if not isinstance(event, Step):
                        return event

        tasks = [asyncio.ensure_future(one(j, it)) for j, it in zip(jobs, request.requests)]
        try:
            results = await asyncio.gather(*tasks)
        finally:  # one failed (or the call was cancelled): stop the others instead of finishing work nobody reads
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks)
        return pb.GenerateBatchResponse(results=results)

    async def ListModels(self, request, context) -> pb.ListModelsResponse:
        route = self.registry.route
        d = self.registry.default()
        spec = d.spec
        releases = [pb.ReleaseInfo(version=r["version"], model_versions=r["models"], state=r["state"],
                                   detail=r["detail"], created=r["created"]) for r in self.registry.releases()]
        return pb.ListModelsResponse(models=[pb.ModelInfo(
            name=d.name, versions=self.registry.versions(), default_version=d.version, source=spec.source,
            rgbd_channels=spec.rgbd_channels, default_height=spec.default_height, default_width=spec.default_width,
            default_scheduler=spec.scheduler_name, is_default=True, canary_version=route.canary or "",
            canary_percent=route.percent if route.canary else 0, releases=releases)])

    async def SubmitGenerate(self, request: pb.GenerateRequest, context) -> operations_pb2.Operation:
        job = await self._prepare(request, "")  # bad input fails the submit call itself, not the operation
        if self.queue is not None:
            return await self.queue.submit("generate", request.request_id, request)
        call = Call(request.request_id, time.monotonic() + self.default_timeout_s)
        return self.operations.start(request.request_id, self._run(*job, call))

    async def GetOperation(self, request: operations_pb2.GetOperationRequest, context) -> operations_pb2.Operation:
        if self.queue is not None:
            return await self.queue.get("generate", request.name)
        return self.operations.get(request.name)

    async def CancelOperation(self, request: operations_pb2.CancelOperationRequest, context) -> empty_pb2.Empty:
        if self.queue is not None:
            await self.queue.cancel("generate", request.name)
        else:
            await self.operations.cancel(request.name)
        return empty_pb2.Empty()

    # -- the generation itself
    def _call(self, rid: str, context) -> Call:
        left = context.time_remaining()
        return Call(rid, time.monotonic() + (self.default_timeout_s if left is None else left))

    async def _prepare(self, request: pb.GenerateRequest, prefix: str):
        """Validate everything before any work: the served model and the resolved parameters."""
        try:
            # the release is resolved here, once (canary draw included), and named explicitly to every stage
            served = await self.registry.resolve(request.model, request.version, request.request_id)
            init_rgb = init_depth = None
            if request.HasField("init_image"):
                init_rgb, init_depth = read_rgbd(request.init_image, "init_image", served.spec.vae_scale_factor)
            p = generate_params(request, prompt=request.prompt, negative_prompt=request.negative_prompt,
                                init_rgb=init_rgb, init_depth=init_depth).resolved(served.spec)
            raw = tensors.is_raw(request.image_encoding)
        except Exception as exc:
            if prefix and getattr(exc, "field", None):
                exc.field = prefix + exc.field
            raise
        return served, p, raw

    async def _run(self, served: ServedModel, p, raw: bool, call: Call) -> AsyncIterator[Step | pb.GenerateResult]:
        with self.registry.lease(served):  # the release stays loaded (here) until the result is out
            async for event in self._stages(served, p, raw, call):
                yield event

    async def _stages(self, served: ServedModel, p, raw: bool, call: Call
                      ) -> AsyncIterator[Step | pb.GenerateResult]:
        down = self.downstream
        t0 = time.perf_counter()
        # 1. encode the prompt and, for classifier-free guidance, the negative prompt (separately, as in-process)
        texts = [down.encode_text(served, [p.prompt], call)]
        if p.do_classifier_free_guidance:
            texts.append(down.encode_text(served, [p.negative_prompt], call))
        encoded = await asyncio.gather(*texts)
        cond, uncond = encoded[0], (encoded[1] if len(encoded) > 1 else None)
        t1 = time.perf_counter()
        # 2. image-to-image: encode the RGBD init image
        init = None if p.init_rgb is None else await down.encode_rgbd(served, p.init_rgb, p.init_depth, call)
        # 3. sample, streaming progress
        sampled = None
        async for event in down.sample(served, cond.embeddings, None if uncond is None else uncond.embeddings, p,
                                       init, call):
            if isinstance(event, Sampled):
                sampled = event
            else:
                yield event
        t2 = time.perf_counter()
        # 4. decode to RGB + 16-bit depth (PNG unless raw arrays were asked for)
        images = await down.decode(served, sampled.latents, raw, call)
        t3 = time.perf_counter()
        meta = generation_metadata(served.spec, served.runtime_kind, p, cond.token_counts[0], cond.truncated_tokens[0],
                                   {"encode_s": t1 - t0, "sample_s": t2 - t1, "decode_s": t3 - t2, "total_s": t3 - t0})
        meta["model"]["name"], meta["model"]["version"] = served.name, served.version
        if served.release is not None:
            meta["model"]["release"] = served.release.number
        yield pb.GenerateResult(
            request_id=call.request_id, images=images, seed=p.seed, model=served.name, model_version=served.version,
            metadata_json=json.dumps(meta), timings=common_pb2.Timings(
                queued=tensors.duration(sampled.queued_s), text_encoding=tensors.duration(t1 - t0),
                sampling=tensors.duration(t2 - t1), decoding=tensors.duration(t3 - t2),
                total=tensors.duration(t3 - t0)))
