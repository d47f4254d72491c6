"""PanoramaRenderer servicer: ``ldm3d render`` as long-running operations (submit → poll progress → cancel).

    ldm3d serve renderer --port 50056 --render-output-dir /srv/renders      # or inside `ldm3d serve all`

    from ldm3d.client import StudioClient
    with StudioClient("localhost:50051") as c:
        name = c.submit_render(rgb, depth, ods=True, path="orbit", seconds=2, fps=12, size=(640, 360), meshes=("glb",))
        result = c.wait_render(name)        # RenderResult: artifacts as bytes (or paths), or the typed error

``Submit`` translates the request into a :class:`~ldm3d.render.RenderSpec` and checks it completely (fields,
sizes against the configured :class:`~ldm3d.render.RenderLimits`, keyframes, the output folder) before it starts
anything: bad input fails the ``Submit`` call itself, naming the proto field. The job then runs
:func:`~ldm3d.render.render_job` in a worker thread (``--render-max-running`` at once, ``--render-max-queued``
waiting) and its progress (units done/total and what the last unit was) becomes the operation's
``RenderMetadata``. ``CancelOperation`` stops the job at its next unit (a still, a frame, a mesh); the library
writes every file under a temporary name and renames it when complete, and a cancelled or failed files job's
folder is removed, so nothing is left that looks finished. The operations store is the Studio's
(:mod:`.operations`), holding ``RenderMetadata`` instead of ``GenerateMetadata``.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from google.longrunning import operations_pb2
from google.protobuf import empty_pb2

from ..errors import Cancelled, FailedPrecondition, InvalidArgument, LDM3DError, ResourceExhausted, invalid
from ..v1 import renderer_pb2 as pb
from ..v1 import renderer_pb2_grpc
from . import operations, tensors
from .config import ServeConfig
from .stages import Step

PREFIX = "renders/"
_PATHS = {pb.CAMERA_PATH_ORBIT: "orbit", pb.CAMERA_PATH_DOLLY: "dolly", pb.CAMERA_PATH_LOOK_AROUND: "look-around"}
_MESHES = {pb.MESH_FORMAT_PLY: "ply", pb.MESH_FORMAT_GLB: "glb"}
# RenderSpec field (what the library's errors name) → the RenderRequest field a client sets
_PROTO_FIELD = {"rgb": "panorama.rgb", "depth": "panorama.depth", "size": "width", "eye_size": "eye_width",
                "meshes": "mesh_formats", "frames": "seconds", "hfov": "cap_hfov"}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MESSAGE_MARGIN = 1 << 20  # room for the Operation's other fields around the artifact bytes


@dataclass(frozen=True)
class RenderStep(Step):
    """One finished unit of a render job (a :class:`Step`, so the operations store records it as progress)."""

    message: str = ""


class _RenderOp(operations._Op):
    """An operation whose metadata is a ``RenderMetadata`` (same state/progress/time fields, plus a message)."""

    def __init__(self, name: str, request_id: str):
        super().__init__(name, request_id)
        g = self.meta
        self.meta = pb.RenderMetadata(request_id=request_id, state=g.state, create_time=g.create_time,
                                      update_time=g.update_time)

    def touch(self, state=None, step: Step | None = None):
        super().touch(state, step)
        if isinstance(step, RenderStep):
            self.meta.message = step.message


class RenderOperations(operations.Operations):
    """The Studio's operations store, naming render jobs ``renders/<request id>``."""

    prefix = PREFIX
    op_class = _RenderOp


class PanoramaRendererServicer(renderer_pb2_grpc.PanoramaRendererServicer):
    def __init__(self, cfg: ServeConfig, queue=None):
        from ..render import RenderLimits

        self.cfg = cfg
        self.limits = RenderLimits(
            max_input_pixels=cfg.render_max_input_pixels, max_eye_pixels=cfg.render_max_eye_pixels,
            max_frame_pixels=cfg.render_max_frame_pixels, max_frames=cfg.render_max_frames,
            max_video360_pixels=cfg.render_max_video360_pixels)
        self.output_root = Path(cfg.render_output_dir).resolve() if cfg.render_output_dir else None
        self.operations = RenderOperations(cfg.max_operations)
        self._pool = ThreadPoolExecutor(max_workers=cfg.render_max_running, thread_name_prefix="render")
        self._jobs = 0  # submitted and not yet ended (running or waiting for a worker)
        self.queue = queue  # a jobs.front.JobQueue (--queue): operations live in Redis, `ldm3d worker`s run them

    async def Submit(self, request: pb.RenderRequest, context) -> operations_pb2.Operation:
        if self.queue is not None:
            return await self._enqueue(request)
        self._admit()  # refuse before decoding anything when busy
        # decoding a large panorama's PNGs takes a while: not on the event loop (health checks keep answering)
        spec = await asyncio.to_thread(_with_proto_field, lambda: self._checked_spec(request))
        self._admit()  # again: other submits ran meanwhile
        out_dir = self._job_folder(request)
        try:
            op = self.operations.start(request.request_id, self._run(request.request_id, spec, out_dir))
        except BaseException:
            if out_dir is not None:
                shutil.rmtree(out_dir, ignore_errors=True)
            raise
        # counted here, not when the job's task first runs, so that submits in one loop turn cannot overshoot;
        # released by the job when it ends (a task cancelled before it ever ran only happens at shutdown)
        self._jobs += 1
        return op

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
        await asyncio.to_thread(_with_proto_field, lambda: self._checked_spec(request))
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

    def _admit(self) -> None:
        limit = self.cfg.render_max_running + self.cfg.render_max_queued
        if self._jobs >= limit:
            raise ResourceExhausted(
                f"the renderer is busy ({self._jobs} jobs running or queued, the limit is {limit}, "
                "--render-max-running + --render-max-queued): retry later", retry_after_s=5.0)

    # -- one job
    async def _run(self, request_id: str, spec, out_dir: Path | None):
        """Events for the operations store: a :class:`RenderStep` per finished unit, then the ``RenderResult``."""
        from ..render import render_job
        from ..render.job import n_frames

        loop = asyncio.get_running_loop()
        events: asyncio.Queue[RenderStep | None] = asyncio.Queue()
        stop = threading.Event()
        frames = n_frames(spec) if spec.path is not None else 0
        units = int(spec.ods) + int(spec.mono360) + frames * (1 + int(spec.video360)) + len(spec.meshes)

        def work():  # worker thread
            if stop.is_set():
                raise Cancelled("cancelled before it started")
            t0 = time.perf_counter()

            def progress(done: int, total: int, message: str) -> None:
                loop.call_soon_threadsafe(events.put_nowait, RenderStep(done, total, time.perf_counter() - t0,
                                                                        message))

            progress(0, units, "started")
            return _with_proto_field(lambda: render_job(spec, out_dir, progress=progress, cancelled=stop.is_set,
                                                        limits=self.limits))

        future = self._pool.submit(contextvars.copy_context().run, work)
        job = asyncio.wrap_future(future)
        job.add_done_callback(lambda _: events.put_nowait(None))
        ok = False
        try:
            while (event := await events.get()) is not None:
                yield event
            result = self._to_proto(request_id, job.result())
            ok = True
            yield result
        finally:
            if not job.done():
                stop.set()  # polled between units: a running job ends at its next still/frame/mesh
                if not future.cancel():  # a job still waiting for a worker is simply dropped
                    await asyncio.wait([job])
            self._jobs -= 1
            if not ok and out_dir is not None:
                shutil.rmtree(out_dir, ignore_errors=True)

    def _to_proto(self, request_id: str, result) -> pb.RenderResult:
        size = sum(len(a.data) for a in result.artifacts if a.data is not None)
        if size > self.cfg.max_message_bytes - _MESSAGE_MARGIN:
            raise ResourceExhausted(
                f"delivery: the artifacts total {size / 2**20:.1f} MiB, over the {self.cfg.max_message_mb} MiB message "
                "limit: use ARTIFACT_DELIVERY_FILES (with --render-output-dir) or render less", field="delivery")
        out = pb.RenderResult(request_id=request_id, projection=result.projection,
                              panorama_width=result.panorama_size[0], panorama_height=result.panorama_size[1])
        for a in result.artifacts:
            art = out.artifacts.add(name=a.name, media_type=a.media_type,
                                    metadata_json=json.dumps(a.metadata, default=_jsonable))
            if a.path is not None:
                art.path = str(a.path)
            else:
                art.data = a.data
        return out

    # -- request → spec, checked before any work
    def _checked_spec(self, r: pb.RenderRequest):
        from ..render import RenderSpec, path_cameras
        from ..render.geometry import PROJECTIONS, check_depth_params, is_equirect_shape
        from ..render.job import check_spec, n_frames

        if not r.HasField("panorama") or not r.panorama.HasField("rgb") or not r.panorama.HasField("depth"):
            raise invalid("panorama", None, "set panorama.rgb (8-bit) and panorama.depth (16-bit) of the same size")
        rgb = tensors.read_rgb(r.panorama.rgb, "panorama.rgb")
        depth = tensors.read_depth(r.panorama.depth, "panorama.depth")
        if depth.shape != rgb.shape[:2]:
            raise invalid("panorama.depth", f"{depth.shape[1]}x{depth.shape[0]}",
                          f"must match the RGB image's {rgb.shape[1]}x{rgb.shape[0]}")
        if r.delivery not in pb.ArtifactDelivery.values():
            raise invalid("delivery", r.delivery, "use ARTIFACT_DELIVERY_BYTES (the default) or ARTIFACT_DELIVERY_FILES")
        if r.path not in pb.CameraPath.values():
            raise invalid("path", r.path, "use one of " + ", ".join(pb.CameraPath.keys()))
        if r.keyframes_json and r.path != pb.CAMERA_PATH_KEYFRAMES:
            raise invalid("keyframes_json", "<set>", "keyframes_json is used only with path CAMERA_PATH_KEYFRAMES")
        path = _PATHS.get(r.path)
        if r.path == pb.CAMERA_PATH_KEYFRAMES:
            path = _keyframes(r.keyframes_json)
        meshes = []
        for i, m in enumerate(r.mesh_formats):
            if m not in _MESHES:
                name = pb.MeshFormat.Name(m) if m in pb.MeshFormat.values() else m
                raise invalid(f"mesh_formats[{i}]", name, "use MESH_FORMAT_PLY or MESH_FORMAT_GLB")
            meshes.append(_MESHES[m])
        spec = RenderSpec(
            rgb=rgb, depth=depth, projection=r.projection or "auto", depth_mapping=r.depth_mapping or "linear",
            normalize_depth=r.normalize_depth, ods=r.ods, mono360=r.mono360, path=path, stereo=r.stereo,
            video360=r.video360, renderer=r.renderer or "raycast", meshes=tuple(dict.fromkeys(meshes)),
            size=_size(r.width, r.height, "width", "height", (1920, 1080)),
            eye_size=_size(r.eye_width, r.eye_height, "eye_width", "eye_height", None),
            seconds=r.seconds or 8.0, fps=r.fps or 30.0,
            **{name: getattr(r, name) for name in ("cap_hfov", "depth_strength", "radius", "ipd", "edge_threshold",
                                                   "view_hfov", "crf", "mesh_step") if r.HasField(name)})
        if not (spec.ods or spec.mono360 or spec.path is not None or spec.meshes):
            raise invalid("ods", False, "ask for at least one output: ods, mono360, a path or mesh_formats")
        check_spec(spec, self.limits)
        # what prepare_panorama would refuse inside the job, refused here instead
        check_depth_params(spec.depth_mapping, spec.depth_strength, spec.radius)
        if spec.projection not in PROJECTIONS:
            raise invalid("projection", spec.projection, f"use one of {', '.join(PROJECTIONS)}")
        h, w = depth.shape
        if spec.projection == "equirect" and not is_equirect_shape(w, h):
            raise invalid("projection", "equirect", f"the panorama is {w}x{h}, not 2:1: give a 2:1 panorama or use "
                                                    "projection 'cap' (or 'auto') for a normal photo")
        cap = spec.projection == "cap" or (spec.projection == "auto" and not is_equirect_shape(w, h))
        if cap and not 1.0 <= spec.cap_hfov <= 179.0:
            raise invalid("cap_hfov", spec.cap_hfov, "use a horizontal field of view between 1 and 179 degrees")
        if not spec.edge_threshold > 0:
            raise invalid("edge_threshold", spec.edge_threshold, "use a positive slope, e.g. 10")
        if spec.meshes and not cap and (w % spec.mesh_step or h % spec.mesh_step):
            raise invalid("mesh_step", spec.mesh_step, f"use a step that divides the panorama size {w}x{h}")
        if isinstance(spec.path, list):  # keyframe values are checked here, not half-way through the job
            try:
                path_cameras(spec.path, n_frames(spec), spec.fps, spec.radius, spec.view_hfov or 75.0, None)
            except InvalidArgument as exc:
                raise InvalidArgument(f"keyframes_json: {exc.message}", field="keyframes_json") from None
        if r.delivery == pb.ARTIFACT_DELIVERY_FILES and self.output_root is None:
            raise FailedPrecondition("delivery: this renderer has no --render-output-dir (LDM3D_RENDER_OUTPUT_DIR) "
                                     "for ARTIFACT_DELIVERY_FILES: ask for ARTIFACT_DELIVERY_BYTES", field="delivery")
        return spec

    def _job_folder(self, r: pb.RenderRequest) -> Path | None:
        """A new folder for a files job under the output root (artifact names are fixed: one folder per job)."""
        if r.delivery != pb.ARTIFACT_DELIVERY_FILES:
            return None
        if r.output_dir:
            rel = PurePosixPath(r.output_dir)
            if rel.is_absolute() or ".." in rel.parts or "\\" in r.output_dir or not rel.parts:
                raise invalid("output_dir", r.output_dir, "give a relative folder inside the server's "
                                                          "--render-output-dir, without '..'")
            folder = self.output_root / rel
            try:
                folder.mkdir(parents=True, exist_ok=False)
            except FileExistsError:
                raise invalid("output_dir", r.output_dir, "already exists: choose a new folder name for this job, "
                                                          "or leave it empty for one named after the request") from None
            return folder
        base = r.request_id if _SAFE_NAME.match(r.request_id) else uuid.uuid4().hex
        for name in (base, f"{base}-{uuid.uuid4().hex[:8]}"):
            try:
                (self.output_root / name).mkdir(parents=True, exist_ok=False)
                return self.output_root / name
            except FileExistsError:
                continue
        raise FailedPrecondition(f"cannot create a job folder under {self.output_root}")


def _size(w: int, h: int, wf: str, hf: str, default):
    if not w and not h:
        return default
    if not w or not h:
        raise invalid(wf if not w else hf, 0, f"set both {wf} and {hf}, or neither")
    return (w, h)


def _keyframes(text: str) -> list:
    if not text:
        raise invalid("keyframes_json", "", 'CAMERA_PATH_KEYFRAMES needs keyframes_json, e.g. [{"t": 0, "position": '
                                            '[0, 0, 0], "yaw": 0}, {"t": 2, "position": [0, 0, -0.5], "yaw": 30}]')
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"keyframes_json is not valid JSON ({exc})", field="keyframes_json") from None
    frames = data.get("keyframes") if isinstance(data, dict) else data
    if not isinstance(frames, list) or not frames:
        raise InvalidArgument('keyframes_json must be a non-empty list of keyframes (or {"keyframes": [...]})',
                              field="keyframes_json")
    return frames


def _with_proto_field(build):
    """Run ``build``; an error naming a RenderSpec field is raised again naming the RenderRequest field."""
    try:
        return build()
    except LDM3DError as exc:
        field = _PROTO_FIELD.get(exc.field, exc.field)
        if field == exc.field:
            raise
        message = exc.message if exc.message.startswith(field) else f"{field}: {exc.message}"
        if isinstance(exc, ResourceExhausted):
            raise ResourceExhausted(message, field=field, retry_after_s=exc.retry_after_s) from None
        raise type(exc)(message, field=field) from None


def _jsonable(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)
