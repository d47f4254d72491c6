"""PanoramaRenderer servicer: ``ldm3d render`` as long-running operations (submit → poll progress → cancel).

    ldm3d serve renderer --port 50056 --render-output-dir /srv/renders      # or inside `ldm3d serve all`

    from ldm3d.client import StudioClient
    with StudioClient("localhost:50051") as c:
        name = c.submit_render(rgb, depth, ods=True, path="orbit", seconds=2, fps=12, size=(640, 360), meshes=("glb",))
        result = c.wait_render(name)        # RenderResult: artifacts as bytes (or paths), or the typed error

A translator: ``Submit`` turns the request into a :class:`~ldm3d.render.RenderSpec` (:mod:`ldm3d.wire.render`)
and has the library check it completely (:func:`~ldm3d.render.job.check_spec`: fields, sizes against the
configured :class:`~ldm3d.render.RenderLimits`, keyframes), its errors renamed to the proto's fields; then the
output folder. Bad input fails the ``Submit`` call itself. The job then runs :func:`~ldm3d.render.render_job` in a
worker thread (:func:`.jobs.stream_in_thread`; ``--render-max-running`` at once, ``--render-max-queued`` waiting,
:class:`.admission.Admission`) and its progress (units done/total and what the last unit was) becomes the
operation's ``RenderMetadata``. ``CancelOperation`` stops the job at its next unit (a still, a frame, a mesh);
the library writes every file under a temporary name and renames it when complete, and a cancelled or failed files
job's folder is removed, so nothing is left that looks finished. The operations store is the Studio's
(:mod:`.operations`), holding ``RenderMetadata`` instead of ``GenerateMetadata``.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from pathlib import Path, PurePosixPath

from google.longrunning import operations_pb2
from google.protobuf import empty_pb2

from ..errors import Cancelled, FailedPrecondition, LDM3DError, ResourceExhausted, invalid, renamed
from ..v1 import renderer_pb2 as pb
from ..v1 import renderer_pb2_grpc
from ..wire import render as wire
from ..wire.ids import new_request_id
from .operations import RenderOperations, RenderStep
from .admission import Admission
from .config import ServeConfig
from .jobs import Finished, stream_in_thread

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MESSAGE_MARGIN = 1 << 20  # room for the Operation's other fields around the artifact bytes


class PanoramaRendererServicer(renderer_pb2_grpc.PanoramaRendererServicer):
    def __init__(self, cfg: ServeConfig, queue=None):
        self.cfg, self.limits = cfg, cfg.render_limits
        self.queue = queue  # a jobs.front.JobQueue (--queue): operations live in Redis, `ldm3d worker`s run them
        self.output_root = Path(cfg.render_output_dir).resolve() if cfg.render_output_dir else None
        self.operations = RenderOperations(cfg.max_operations)
        self.admission = Admission(cfg.render_max_running, cfg.render_max_queued, what="the renderer")
        self._pool = ThreadPoolExecutor(max_workers=cfg.render_max_running, thread_name_prefix="render")

    async def Submit(self, request: pb.RenderRequest, context) -> operations_pb2.Operation:
        if self.queue is not None:
            return await self._enqueue(request)
        self.admission.check()  # refuse before decoding anything when busy
        # decoding a large panorama's PNGs takes a while: not on the event loop (health checks keep answering)
        spec = await asyncio.to_thread(self._checked_spec, request)
        # counted now (other submits ran meanwhile), not when the job's task first runs, so that submits in one
        # loop turn cannot overshoot; the job gives the ticket back when it ends
        ticket = self.admission.admit()
        out_dir = None
        try:
            out_dir = self._job_folder(request)
            return self.operations.start(request.request_id, self._run(request.request_id, spec, out_dir, ticket))
        except BaseException:
            ticket.release()
            if out_dir is not None:
                shutil.rmtree(out_dir, ignore_errors=True)
            raise

    async def GetOperation(self, request: operations_pb2.GetOperationRequest, context) -> operations_pb2.Operation:
        if self.queue is not None:
            return await self.queue.get("render", request.name)
        return self.operations.get(request.name)

    async def CancelOperation(self, request: operations_pb2.CancelOperationRequest, context) -> empty_pb2.Empty:
        if self.queue is not None:
            await self.queue.cancel("render", request.name)
        else:
            await self.operations.cancel(request.name)
        return empty_pb2.Empty()

    async def _enqueue(self, request: pb.RenderRequest) -> operations_pb2.Operation:
        """--queue: the same checks as in-process, then the job goes to Redis for `ldm3d worker --kinds render`."""
        await asyncio.to_thread(self._checked_spec, request)
        out_dir = self._job_folder(request)
        try:
            return await self.queue.submit("render", request.request_id, request, str(out_dir or ""))
        except BaseException:
            if out_dir is not None:
                shutil.rmtree(out_dir, ignore_errors=True)
            raise

    async def close(self) -> None:
        await self.operations.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _checked_spec(self, request: pb.RenderRequest):
        from ..render.job import check_spec

        spec, fields = wire.spec_from_request(request)
        try:
            check_spec(spec, self.limits)
        except LDM3DError as exc:
            raise renamed(exc, fields) from None
        if request.delivery == pb.ARTIFACT_DELIVERY_FILES and self.output_root is None:
            raise FailedPrecondition("delivery: this renderer has no --render-output-dir (LDM3D_RENDER_OUTPUT_DIR) "
                                     "for ARTIFACT_DELIVERY_FILES: ask for ARTIFACT_DELIVERY_BYTES", field="delivery")
        return spec, fields

    async def _run(self, request_id: str, checked, out_dir: Path | None, ticket):
        """Events for the operations store: a :class:`RenderStep` per finished unit, then the ``RenderResult``."""
        from ..render import render_job
        from ..render.job import job_units

        spec, fields = checked
        ok = False
        try:
            async with ticket.run():
                def work(emit, stopped):  # worker thread
                    if stopped():
                        raise Cancelled("cancelled before it started")
                    t0 = time.perf_counter()

                    def progress(done: int, total: int, message: str) -> None:
                        emit(RenderStep(done, total, time.perf_counter() - t0, message))

                    progress(0, job_units(spec), "started")
                    try:  # stopped() is polled between units: a job ends at its next still/frame/mesh
                        return render_job(spec, out_dir, progress=progress, cancelled=stopped, limits=self.limits)
                    except LDM3DError as exc:
                        raise renamed(exc, fields) from None

                async with aclosing(stream_in_thread(self._pool, work)) as events:
                    async for event in events:
                        if isinstance(event, Finished):
                            result = self._to_proto(request_id, event.value)
                            ok = True
                            yield result
                        else:
                            yield event
        finally:
            ticket.release()  # a job cancelled while still waiting for its slot
            if not ok and out_dir is not None:
                shutil.rmtree(out_dir, ignore_errors=True)

    def _to_proto(self, request_id: str, result) -> pb.RenderResult:
        size = sum(len(a.data) for a in result.artifacts if a.data is not None)
        if size > self.cfg.max_message_bytes - _MESSAGE_MARGIN:
            raise ResourceExhausted(
                f"delivery: the artifacts total {size / 2**20:.1f} MiB, over the {self.cfg.max_message_mb} MiB message "
                "limit: use ARTIFACT_DELIVERY_FILES (with --render-output-dir) or render less", field="delivery")
        return wire.to_result(request_id, result)

    def _job_folder(self, r: pb.RenderRequest) -> Path | None:
        """A new folder for a files job under the output root (artifact names are fixed: one folder per job)."""
        if r.delivery != pb.ARTIFACT_DELIVERY_FILES:
            return None
        if r.output_dir:
            rel = PurePosixPath(r.output_dir)
            if rel.is_absolute() or ".." in rel.parts or "\\" in r.output_dir or not rel.parts:
                raise invalid("output_dir", r.output_dir, "give a relative folder inside the server's "
                                                          "--render-output-dir, without '..'")
            try:
                (self.output_root / rel).mkdir(parents=True, exist_ok=False)
            except FileExistsError:
                raise invalid("output_dir", r.output_dir, "already exists: choose a new folder name for this job, "
                                                          "or leave it empty for one named after the request") from None
            return self.output_root / rel
        base = r.request_id if _SAFE_NAME.match(r.request_id) else new_request_id()
        for name in (base, f"{base}-{new_request_id()[:8]}"):
            try:
                (self.output_root / name).mkdir(parents=True, exist_ok=False)
                return self.output_root / name
            except FileExistsError:
                continue
        raise FailedPrecondition(f"cannot create a job folder under {self.output_root}")
