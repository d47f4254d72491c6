"""Studio, the public gateway: prompt → RGB + 16-bit depth by chaining the stages in the pipeline's order.

``_run`` reads like ``LDM3DPipeline.__call__`` (check inputs → encode prompts → encode init image → sample →
decode) so that, for the same seed, the gateway's images equal the in-process pipeline's bit for bit.

Admission happens at the door: every generation (a ``Generate`` stream, a batch's items in flight, an operation
until it is done) holds a ticket of one :class:`~.admission.Gate` sized like the sampler's queue
(``--max-running`` + ``--max-queued``), taken before the init image is decoded or any text encoded, so a flood is
refused (RESOURCE_EXHAUSTED + RetryInfo) without work, and ``SubmitGenerate`` refuses at submit time instead of
accepting an operation that would fail inside for lack of room. An accepted operation whose remote sampler is busy
anyway (shared by several gateways) waits for the retry hint and tries again, until its deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import numpy as np

from google.longrunning import operations_pb2
from google.protobuf import empty_pb2

from ..errors import FailedPrecondition, LDM3DError, ResourceExhausted, invalid, renamed
from ..pipeline.ldm3d import generation_metadata
from ..v1 import common_pb2, renderer_pb2, studio_pb2_grpc
from ..v1 import studio_pb2 as pb
from ..wire import tensors
from ..wire.generate import generate_params
from ..wire.ids import new_request_id, safe_request_id
from .admission import Gate
from .autoencoder import read_rgbd
from .downstream import Call, RemoteStages
from .models import ModelRegistry, ServedModel
from .operations import Operations, PanoOperations
from .stages import Sampled, Step

MAX_BATCH = 16
RESULT_MARGIN = 1 << 20  # the result's other fields (metadata, timings) around the images
BATCH_IN_FLIGHT = 8  # the sampler's default --max-running: items in flight share its U-Net calls step by step


class StudioServicer(studio_pb2_grpc.StudioServicer):
    def __init__(self, registry: ModelRegistry, downstream: RemoteStages, default_timeout_s: float,
                 max_operations: int, gate: Gate | None = None, operation_ttl_s: float = 3600.0,
                 max_message_bytes: int = 64 << 20, queue=None, renderer=None):
        self.registry, self.downstream, self.default_timeout_s = registry, downstream, default_timeout_s
        self.max_message_bytes = max_message_bytes
        self.operations = Operations(max_operations, operation_ttl_s)
        self.panos = PanoOperations(max_operations, operation_ttl_s)
        # the in-process PanoramaRendererServicer that runs SubmitPano's stage 2 (None: forwarded or not served)
        self.renderer = renderer
        self.gate = gate or Gate(33, "generations", "--max-running + --max-queued")
        self.queue = queue  # a jobs.front.JobQueue (--queue): operations live in Redis, workers run them

    async def Generate(self, request: pb.GenerateRequest, context) -> AsyncIterator[pb.GenerateResponse]:
        rid = request.request_id
        with self.gate.take():
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
            item.request_id = safe_request_id(item.request_id) if item.request_id else new_request_id()
        # the items in flight at once hold tickets for the whole call: refused at the door, or never half-way
        ticket = self.gate.take(min(len(request.requests), BATCH_IN_FLIGHT, self.gate.limit))
        try:
            return await self._batch(request, context)
        finally:
            ticket.release()

    async def _batch(self, request: pb.GenerateBatchRequest, context) -> pb.GenerateBatchResponse:
        jobs = [await self._prepare(item, f"requests[{i}].") for i, item in enumerate(request.requests)]  # all first
        raw_bytes = sum(p.num_images * p.height * p.width * 5 for _, p, raw in jobs if raw)
        if raw_bytes > self.max_message_bytes - RESULT_MARGIN:  # the one response carries every item's images
            raise ResourceExhausted(
                f"requests: their raw images take {raw_bytes / 2**20:.1f} MiB together, over the "
                f"{self.max_message_bytes / 2**20:.0f} MiB message limit (--max-message-mb): ask for "
                "IMAGE_ENCODING_PNG or send fewer requests per batch", field="requests")
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
        if self.queue is None:
            self.operations.check_room()  # a full store refuses now, not after decoding the init image
        ticket = self.gate.take()
        try:
            job = await self._prepare(request, "")  # bad input fails the submit call itself, not the operation
            if self.queue is not None:  # durable: a worker runs it; this process only checked it
                ticket.release()
                return await self.queue.submit("generate", request.request_id, request)
            call = Call(request.request_id, time.monotonic() + self.default_timeout_s)
            return self.operations.start(request.request_id, self._run(*job, call, patient=True),
                                         on_done=ticket.release)
        except BaseException:
            ticket.release()
            raise

    async def SubmitPano(self, request: pb.PanoRequest, context) -> operations_pb2.Operation:
        """Both stages of ``ldm3d pano`` as one operation: this servicer's generation (``_prepare``/``_run``, as
        ``SubmitGenerate``), then the renderer's job (:meth:`PanoramaRendererServicer.job`) on its images. Runs in
        this process also with ``--queue``."""
        if self.renderer is None:
            raise FailedPrecondition("SubmitPano renders in the gateway's process, and this one forwards (or does not "
                                     "serve) PanoramaRenderer: use a gateway without --renderer-url, or "
                                     "SubmitGenerate then PanoramaRenderer.Submit", field="render")
        self.panos.check_room()
        ticket = self.gate.take()
        try:
            gen, render = pb.GenerateRequest(), renderer_pb2.RenderRequest()
            gen.CopyFrom(request.generate)
            render.CopyFrom(request.render)
            gen.request_id = render.request_id = request.request_id
            served, p, raw = await _named(self._prepare(gen, ""), "generate.")
            if p.num_images != 1:
                raise invalid("generate.num_images", p.num_images, "a panorama job renders one image: leave it unset")
            if p.width != 2 * p.height:
                raise invalid("generate.width", p.width, f"a 360 panorama is equirectangular 2:1: use width "
                                                         f"{2 * p.height} for height {p.height}")
            if render.HasField("panorama"):
                raise invalid("render.panorama", "<set>", "leave it empty: stage 1's panorama is rendered")
            # every render option is checked now, on a stand-in of the panorama's size, not after the generation
            stand_in = renderer_pb2.RenderRequest()
            stand_in.CopyFrom(render)
            stand_in.panorama.CopyFrom(tensors.rgbd(np.zeros((p.height, p.width, 3), np.uint8),
                                                    np.zeros((p.height, p.width), np.uint16), raw=True))
            await _named(asyncio.to_thread(self.renderer.check, stand_in), "render.")
            call = Call(request.request_id, time.monotonic() + self.default_timeout_s)
            return self.panos.start(request.request_id, self._pano(served, p, raw, render, call),
                                    on_done=ticket.release)
        except BaseException:
            ticket.release()
            raise

    async def _pano(self, served: ServedModel, p, raw: bool, render: renderer_pb2.RenderRequest, call: Call):
        """Events of a SubmitPano operation: generation steps, render steps, then the ``PanoResult``."""
        generated = None
        async with aclosing(self._run(served, p, raw, call, patient=True)) as events:
            async for event in events:
                if isinstance(event, Step):
                    yield event
                else:
                    generated = event
        render.panorama.CopyFrom(generated.images[0])
        while True:  # a renderer busy with other jobs: wait as told, while the deadline allows (as the sampler)
            try:
                job = await _named(self.renderer.job(render), "render.")
                break
            except ResourceExhausted as exc:
                await _retry_after(exc, call)
        async with aclosing(job) as events:
            async for event in events:
                if isinstance(event, Step):
                    yield event
                else:
                    yield pb.PanoResult(request_id=call.request_id, generation=generated, render=event)

    async def GetOperation(self, request: operations_pb2.GetOperationRequest, context) -> operations_pb2.Operation:
        if request.name.startswith(PanoOperations.prefix):
            return self.panos.get(request.name)
        if self.queue is not None:
            return await self.queue.get("generate", request.name)
        return self.operations.get(request.name)

    async def CancelOperation(self, request: operations_pb2.CancelOperationRequest, context) -> empty_pb2.Empty:
        if request.name.startswith(PanoOperations.prefix):
            await self.panos.cancel(request.name)
        elif self.queue is not None:
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
            if request.HasField("init_image"):  # decoding PNGs takes a while: not on the event loop
                init_rgb, init_depth = await asyncio.to_thread(read_rgbd, request.init_image, "init_image",
                                                               served.spec.vae_scale_factor)
            p = generate_params(request, prompt=request.prompt, negative_prompt=request.negative_prompt,
                                init_rgb=init_rgb, init_depth=init_depth).resolved(served.spec)
            raw = tensors.is_raw(request.image_encoding)
            self._check_result_size(p, raw)
        except Exception as exc:
            if prefix and getattr(exc, "field", None):
                exc.field = prefix + exc.field
            raise
        return served, p, raw

    def _check_result_size(self, p, raw: bool) -> None:
        """Raw arrays are 5 bytes a pixel (RGB + 16-bit depth): a result that cannot fit one message is refused
        before the work, not after it (PNGs compress by an amount known only once encoded: not checked)."""
        size = p.num_images * p.height * p.width * 5
        if raw and size > self.max_message_bytes - RESULT_MARGIN:
            raise ResourceExhausted(
                f"image_encoding: {p.num_images} raw {p.width}x{p.height} images take {size / 2**20:.1f} MiB, over "
                f"the {self.max_message_bytes / 2**20:.0f} MiB message limit (--max-message-mb): ask for "
                "IMAGE_ENCODING_PNG or fewer images", field="image_encoding")

    async def _run(self, served: ServedModel, p, raw: bool, call: Call, patient: bool = False
                   ) -> AsyncIterator[Step | pb.GenerateResult]:
        with self.registry.lease(served):  # the release stays loaded (here) until the result is out
            async for event in self._stages(served, p, raw, call, patient):
                yield event

    async def _stages(self, served: ServedModel, p, raw: bool, call: Call, patient: bool
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
        while sampled is None:
            try:
                async for event in down.sample(served, cond.embeddings,
                                               None if uncond is None else uncond.embeddings, p, init, call):
                    if isinstance(event, Sampled):
                        sampled = event
                    else:
                        yield event
            except ResourceExhausted as exc:
                # an accepted operation is not lost to a busy sampler: wait as told, while the deadline allows
                if not patient:
                    raise
                await _retry_after(exc, call)
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


async def _retry_after(exc: ResourceExhausted, call: Call) -> None:
    """A busy stage refused ``call``: sleep as long as it said (1 s if it did not), or raise ``exc`` if the call's
    deadline would pass first."""
    wait = exc.retry_after_s or 1.0
    if time.monotonic() + wait >= call.deadline:
        raise exc
    await asyncio.sleep(wait)


async def _named(awaitable, prefix: str):
    """``await awaitable``, an error naming a field of a PanoRequest's part renamed to ``<prefix><field>``."""
    try:
        return await awaitable
    except LDM3DError as exc:
        if getattr(exc, "field", None) and not exc.field.startswith(prefix):
            raise renamed(exc, {exc.field: prefix + exc.field}) from None
        raise
