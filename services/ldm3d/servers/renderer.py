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
the library writes every file under a temporary name and renames it when complete, and a files job renders into a
hidden staging folder (``<output dir>/.partial/``) that becomes the job's folder only once the job succeeded: a
cancelled, failed or killed job leaves nothing that looks finished, and never a folder that blocks resubmitting
the same ``output_dir`` (staging folders of a killed process are removed when a renderer next starts).
A bytes job whose artifacts would clearly exceed the message limit is refused at submit time. The operations store is the Studio's
(:mod:`.operations`), holding ``RenderMetadata`` instead of ``GenerateMetadata``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from pathlib import Path

from google.longrunning import operations_pb2
from google.protobuf import empty_pb2

from ..errors import Cancelled, FailedPrecondition, LDM3DError, ResourceExhausted, invalid, renamed
from ..v1 import renderer_pb2 as pb
from ..v1 import renderer_pb2_grpc
from ..wire import render as wire
from ..wire import tensors
from ..wire.ids import new_request_id
from .operations import RenderOperations, RenderStep
from .admission import Admission
from .config import ServeConfig
from .jobs import Finished, stream_in_thread

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MESSAGE_MARGIN = 1 << 20  # room for the Operation's other fields around the artifact bytes
MAX_OUTPUT_DIR_DEPTH = 8
STAGING = ".partial"  # under the output root: jobs render here, then move to their folder when complete
_STALE_STAGING_S = 24 * 3600.0
# lower bounds of the encoded size per pixel (so a bytes job is refused only when it surely cannot be delivered)
_PNG_BYTES_PER_PIXEL = 0.25
_H264_BYTES_PER_PIXEL = 0.004  # ~0.03 bit per pixel: an almost static scene at a high CRF
_MESH_BYTES_PER_VERTEX = 24


class PanoramaRendererServicer(renderer_pb2_grpc.PanoramaRendererServicer):
    def __init__(self, cfg: ServeConfig, queue=None):
        self.cfg, self.limits = cfg, cfg.render_limits
        self.image_limits = tensors.ImageLimits(max_pixels=cfg.render_max_input_pixels,
                                                flag="--render-max-input-pixels")
        self.queue = queue  # a jobs.front.JobQueue (--queue): operations live in Redis, `ldm3d worker`s run them
        self.output_root = Path(cfg.render_output_dir).resolve() if cfg.render_output_dir else None
        self.operations = RenderOperations(cfg.max_operations, cfg.operation_ttl_s)
        self.admission = Admission(cfg.render_max_running, cfg.render_max_queued, what="the renderer")
        self._pool = ThreadPoolExecutor(max_workers=cfg.render_max_running, thread_name_prefix="render")
        self._reserved: set[Path] = set()  # final folders of this process's files jobs not yet ended
        self._host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "host"
        if self.output_root is not None:
            self._clean_staging()

    async def Submit(self, request: pb.RenderRequest, context) -> operations_pb2.Operation:
        if self.queue is not None:
            return await self._enqueue(request)
        return self.operations.start(request.request_id, await self.job(request))

    async def job(self, request: pb.RenderRequest):
        """Check ``request``, take a render slot and the job's folder; the job's events (a :class:`RenderStep` per
        unit, then the ``RenderResult``) to iterate at once. ``Submit`` and the Studio's ``SubmitPano`` (stage 2,
        always in this process) both run render jobs through here."""
        # counted before anything is decoded (or refused when busy), so that concurrent submits cannot all decode
        # large panoramas at once; the job gives the ticket back when it ends, a refused submit at once
        ticket = self.admission.admit()
        out_dir = None
        try:
            # the panorama's declared size is checked first; decoding its PNGs takes a while: not on the event loop
            spec = await asyncio.to_thread(self._checked_spec, request)
            out_dir = self._job_folder(request)
            return self._run(request.request_id, spec, out_dir, ticket)
        except BaseException:
            ticket.release()
            if out_dir is not None:
                self._reserved.discard(out_dir[1])
                shutil.rmtree(out_dir[0], ignore_errors=True)
            raise

    def check(self, request: pb.RenderRequest) -> None:
        """Every check ``Submit`` makes, without starting anything (``SubmitPano``: on a stand-in panorama)."""
        self._checked_spec(request)

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
        out_dir = None
        if (folders := self._job_folder(request)) is not None:
            # a worker writes the files (ldm3d.jobs resumes or cleans a killed job's folder): no staging here
            staging, out_dir = folders
            self._reserved.discard(out_dir)
            staging.rmdir()
            _tidy(staging.parent)
            out_dir.mkdir(parents=True)
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

        spec, fields = wire.spec_from_request(request, self.image_limits)
        try:
            check_spec(spec, self.limits)
        except LDM3DError as exc:
            raise renamed(exc, fields) from None
        if request.delivery == pb.ARTIFACT_DELIVERY_FILES and self.output_root is None:
            raise FailedPrecondition("delivery: this renderer has no --render-output-dir (LDM3D_RENDER_OUTPUT_DIR) "
                                     "for ARTIFACT_DELIVERY_FILES: ask for ARTIFACT_DELIVERY_BYTES", field="delivery")
        if request.delivery != pb.ARTIFACT_DELIVERY_FILES:
            estimate = _least_bytes(spec)
            if estimate > self.cfg.max_message_bytes - _MESSAGE_MARGIN:
                raise ResourceExhausted(
                    f"delivery: these artifacts would take at least {estimate / 2**20:.1f} MiB, over the "
                    f"{self.cfg.max_message_mb} MiB message limit: use ARTIFACT_DELIVERY_FILES (with "
                    "--render-output-dir) or render less (seconds, fps, width x height)", field="delivery")
        return spec, fields

    async def _run(self, request_id: str, checked, out_dir: tuple[Path, Path] | None, ticket):
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
                        return render_job(spec, out_dir and out_dir[0], progress=progress, cancelled=stopped,
                                          limits=self.limits)
                    except LDM3DError as exc:
                        raise renamed(exc, fields) from None

                async with aclosing(stream_in_thread(self._pool, work)) as events:
                    async for event in events:
                        if isinstance(event, Finished):
                            value = event.value if out_dir is None else _moved(event.value, *out_dir)
                            result = self._to_proto(request_id, value)
                            ok = True
                            yield result
                        else:
                            yield event
        finally:
            ticket.release()  # a job cancelled while still waiting for its slot
            if out_dir is not None:
                self._reserved.discard(out_dir[1])
                if not ok:
                    shutil.rmtree(out_dir[0], ignore_errors=True)
                _tidy(out_dir[0].parent)

    def _to_proto(self, request_id: str, result) -> pb.RenderResult:
        size = sum(len(a.data) for a in result.artifacts if a.data is not None)
        if size > self.cfg.max_message_bytes - _MESSAGE_MARGIN:
            raise ResourceExhausted(
                f"delivery: the artifacts total {size / 2**20:.1f} MiB, over the {self.cfg.max_message_mb} MiB message "
                "limit: use ARTIFACT_DELIVERY_FILES (with --render-output-dir) or render less", field="delivery")
        return wire.to_result(request_id, result)

    def _job_folder(self, r: pb.RenderRequest) -> tuple[Path, Path] | None:
        """``(staging, final)`` folders of a files job: it renders into a new hidden staging folder, which becomes
        ``final`` (under the output root: ``output_dir``, else one named after the request) once it succeeded."""
        if r.delivery != pb.ARTIFACT_DELIVERY_FILES:
            return None
        if r.output_dir:
            parts = r.output_dir.split("/")
            if len(r.output_dir) > 512 or len(parts) > MAX_OUTPUT_DIR_DEPTH or not all(map(_SAFE_NAME.match, parts)):
                raise invalid("output_dir", r.output_dir,
                              f"give a relative folder inside the server's --render-output-dir: at most "
                              f"{MAX_OUTPUT_DIR_DEPTH} names joined by '/', each 1-128 of A-Z a-z 0-9 . _ - and "
                              "starting with a letter or digit (no '..', no empty names)")
            final = self.output_root.joinpath(*parts)
            if final.exists() or final in self._reserved:
                raise invalid("output_dir", r.output_dir, "already exists: choose a new folder name for this job, "
                                                          "or leave it empty for one named after the request")
        else:
            base = r.request_id if _SAFE_NAME.match(r.request_id) else new_request_id()
            final = self.output_root / base
            if final.exists() or final in self._reserved:
                final = self.output_root / f"{base}-{new_request_id()[:8]}"
        staging = self.output_root / STAGING / f"{self._host}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            staging.mkdir(parents=True)
        except OSError as exc:
            raise FailedPrecondition(f"delivery: cannot create a job folder in --render-output-dir "
                                     f"({exc.strerror})", field="delivery") from None
        self._reserved.add(final)
        return staging, final

    def _clean_staging(self) -> None:
        """Remove what killed jobs left: staging folders of this host's processes that no longer run (a restarted
        process), and anyone's older than a day (a pod that never came back)."""
        root = self.output_root / STAGING
        if not root.is_dir():
            return
        now = time.time()
        for d in root.iterdir():
            try:
                stale = _dead_here(d.name, self._host) or now - d.stat().st_mtime > _STALE_STAGING_S
            except OSError:
                continue
            if stale:
                shutil.rmtree(d, ignore_errors=True)
        _tidy(root)


def _tidy(staging_root: Path) -> None:
    """Remove the staging root when no job uses it (the output folder then holds only finished jobs)."""
    try:
        staging_root.rmdir()
    except OSError:  # in use by another job (or already gone)
        pass


def _dead_here(name: str, host: str) -> bool:
    """Whether staging folder ``name`` (``<host>-<pid>-<id>``) belongs to a process of this host that has ended."""
    if not name.startswith(f"{host}-"):
        return False
    pid = name[len(host) + 1:].split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by someone else
        return False
    return int(pid) == os.getpid()  # alive: another live process's job (or our own folder from a past run)


def _moved(result, staging: Path, final: Path):
    """Move a finished job's folder into place and point its artifacts there."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(final)  # atomic: the folder appears complete or not at all
    except OSError:
        raise FailedPrecondition(f"output_dir: {final.name!r} was created by another job while this one rendered: "
                                 "submit again with another output_dir", field="output_dir") from None
    arts = [dataclasses.replace(a, path=final / a.path.relative_to(staging)) if a.path is not None else a
            for a in result.artifacts]
    return dataclasses.replace(result, artifacts=arts)


def _least_bytes(spec) -> int:
    """A lower bound of what a bytes-delivery job's artifacts will take (most content compresses worse)."""
    from ..render.job import n_frames

    h, w = spec.depth.shape
    ew, eh = spec.eye_size or (w, h)
    total = (2 * int(spec.ods) + int(spec.mono360)) * ew * eh * _PNG_BYTES_PER_PIXEL
    if spec.path is not None:
        fw, fh = spec.size
        frames = n_frames(spec)
        total += frames * fw * fh * (2 if spec.stereo else 1) * _H264_BYTES_PER_PIXEL
        if spec.video360:
            total += frames * 2 * ew * eh * _H264_BYTES_PER_PIXEL
    total += len(spec.meshes) * (w // spec.mesh_step) * (h // spec.mesh_step) * _MESH_BYTES_PER_VERTEX
    return int(total)
