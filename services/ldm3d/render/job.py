"""One render job: RGB + 16-bit depth → ODS/mono 360 stills, camera-move MP4s, a 360 MP4 and meshes.

The library entry point that the CLI (``ldm3d render``) and the ``PanoramaRenderer`` servicer both call::

    from ldm3d.render import RenderSpec, render_job
    result = render_job(RenderSpec(rgb=rgb, depth=depth, ods=True, path="orbit", seconds=2, fps=12,
                                   size=(640, 360), meshes=("glb",)),
                        out_dir="demo/render", progress=lambda done, total, msg: ..., cancelled=lambda: False)
    for a in result.artifacts: print(a.name, a.media_type, a.path or len(a.data))

Steps, in order: check the request against :class:`RenderLimits` → build the displaced sphere → stills → the
camera-move video → the 360 video → meshes. ``progress(done, total, message)`` is called after every unit of work
(a still, a frame, a mesh); ``cancelled()`` is polled between them and raises :class:`~ldm3d.errors.Cancelled`.
Every file is written under a temporary name and renamed when complete.

Resumable jobs (the durable queue's workers, :mod:`ldm3d.jobs`): with ``checkpoint_dir`` every video is encoded in
segments of up to 4 seconds kept there, and the frames of the segment in progress are kept raw (:func:`_segmented_video`);
a rerun of the same job reuses them instead of rendering them again, and artifacts already complete in
``out_dir`` (an earlier run's ``ods.png``, a finished MP4) are reused as they are. The caller removes
``checkpoint_dir`` when the job is done.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..codec import check_same_size, encode_png, write_bytes_atomic
from ..errors import Cancelled, InvalidArgument, ResourceExhausted, invalid
from .camera import PATHS, path_cameras
from .geometry import Panorama, build_mesh, check_panorama, prepare_panorama
from .mesh_io import glb_bytes, ply_bytes
from .ods import render_equirect, render_ods
from .raycast import RENDERERS, MeshScene, render_ods_raycast, render_perspective

MESH_FORMATS = ("ply", "glb")
DEFAULT_VIEW_HFOV = 75.0  # degrees: the camera of a panorama's path (a photo's: 0.75 × cap_hfov)
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class RenderLimits:
    """Configured ceilings; requests beyond them get ``ResourceExhausted`` naming the field."""

    max_input_pixels: int = 8192 * 4096
    max_eye_pixels: int = 8192 * 4096  # one eye of an ODS/mono 360 still or one 360 video frame
    max_frame_pixels: int = 3840 * 2160  # one eye of a perspective frame
    max_frames: int = 3600
    max_video360_pixels: int = 4096 * 2048  # per eye, per frame


@dataclass
class RenderSpec:
    """What to render. Images are numpy arrays (``codec.read_rgb`` / ``codec.read_depth`` read PNG files or bytes).

    Geometry: ``projection`` (auto/equirect/cap), ``cap_hfov`` (degrees, for a normal photo), ``depth_mapping``
    (linear/disparity), ``depth_strength`` (0..2), ``normalize_depth``, ``radius`` (m), ``ipd`` (m),
    ``edge_threshold`` (slope above which an edge is a discontinuity); see :mod:`.geometry`.
    Outputs: ``ods`` (stereo still, top-bottom, left on top), ``mono360``, ``eye_size`` (per-eye ``(W, H)``; default
    the panorama's), ``path`` (orbit/dolly/look-around/a keyframes .json/a list of keyframes) with ``seconds``,
    ``fps``, ``size`` (per eye), ``view_hfov`` (default 75°, or 0.75 × cap_hfov for a cap), ``stereo`` (side by
    side, left eye on the left), ``renderer`` for frames away from the origin (``raycast``: open3d, exact texture;
    ``epipolar``: no mesh, faster, slightly softer), ``crf``; ``video360`` (ODS top-bottom MP4 from the path's positions at
    ``eye_size``); ``meshes`` (ply, glb) with ``mesh_step``.
    """

    rgb: np.ndarray
    depth: np.ndarray
    projection: str = "auto"
    cap_hfov: float = 90.0
    depth_mapping: str = "linear"
    depth_strength: float = 1.0
    normalize_depth: bool = False
    radius: float = 2.0
    ipd: float = 0.064
    edge_threshold: float = 10.0
    ods: bool = False
    mono360: bool = False
    eye_size: tuple[int, int] | None = None
    path: str | list | None = None
    seconds: float = 8.0
    fps: float = 30.0
    size: tuple[int, int] = (1920, 1080)
    view_hfov: float | None = None
    stereo: bool = False
    renderer: str = "raycast"
    crf: int = 18
    video360: bool = False
    meshes: Sequence[str] = ()
    mesh_step: int = 1


@dataclass
class Artifact:
    """One output: ``path`` when written to an output folder, else the bytes in ``data``."""

    name: str
    media_type: str
    path: Path | None = None
    data: bytes | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class RenderResult:
    artifacts: list[Artifact]
    panorama_size: tuple[int, int]
    projection: str


def path_name(path) -> str:
    if isinstance(path, (list, tuple)):
        return "keyframes"
    return Path(str(path)).stem if str(path).lower().endswith(".json") else str(path)


def n_frames(spec: RenderSpec) -> int:
    return max(1, round(spec.seconds * spec.fps))


def view_hfov(spec: RenderSpec, projection: str) -> float:
    """The camera's horizontal FOV: ``spec.view_hfov``, else 75° for a panorama or 0.75 × cap_hfov for a photo."""
    return spec.view_hfov or (DEFAULT_VIEW_HFOV if projection == "equirect" else 0.75 * spec.cap_hfov)


def job_units(spec: RenderSpec) -> int:
    """Units of work :func:`render_job` reports progress for: stills, frames (twice with video360), meshes."""
    frames = n_frames(spec) if spec.path is not None else 0
    return int(spec.ods) + int(spec.mono360) + frames * (1 + int(spec.video360)) + len(spec.meshes)


def check_spec(spec: RenderSpec, limits: RenderLimits = RenderLimits()) -> str:
    """The one complete check of a request, before any work (no partial output): arrays, sizes against ``limits``,
    geometry, the camera path (a keyframe file or list is read and checked), outputs. Errors are
    ``InvalidArgument`` / ``ResourceExhausted`` naming the :class:`RenderSpec` field. Returns the projection."""
    rgb, depth = np.asarray(spec.rgb), np.asarray(spec.depth)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise invalid("rgb", f"{rgb.dtype} {tuple(rgb.shape)}", "give 8-bit RGB, uint8 [H, W, 3] (codec.read_rgb)")
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise invalid(
            "depth", f"{depth.dtype} {tuple(depth.shape)}", "give 16-bit depth, uint16 [H, W] (codec.read_depth)"
        )
    check_same_size(rgb, depth)
    h, w = depth.shape
    if h * w > limits.max_input_pixels:
        raise ResourceExhausted(
            f"rgb is {w}x{h} ({w * h} pixels), over the limit of {limits.max_input_pixels}: downscale it", field="rgb"
        )
    if spec.video360 and spec.path is None:
        # before "at least one output": with video360 alone, the field to fix is path, not ods
        raise InvalidArgument("video360 needs a camera path for its frames: set path too", field="path")
    if not (spec.ods or spec.mono360 or spec.path is not None or spec.meshes):
        raise invalid("ods", False, "ask for at least one output: ods, mono360, a path or meshes")
    projection = check_panorama(w, h, cap_hfov=spec.cap_hfov, **_geometry(spec))
    # NaN compares false with everything: each range is written so that NaN (and infinity) fails it
    if not (math.isfinite(spec.ipd) and 0 <= spec.ipd < spec.radius):
        raise invalid("ipd", spec.ipd, f"use 0 <= ipd < radius ({spec.radius} m); 0.064 is a typical adult")
    if not (isinstance(spec.crf, (int, np.integer)) and 0 <= spec.crf <= 51):
        raise invalid("crf", spec.crf, "use an x264 CRF between 0 (lossless) and 51; 18 looks transparent")
    if spec.eye_size is not None:
        _check_size("eye_size", spec.eye_size, limits.max_eye_pixels)
        ew, eh = spec.eye_size
        if ew != 2 * eh:
            raise invalid("eye_size", f"{ew}x{eh}", "360 images are equirectangular: width must be twice the height")
    if spec.path is not None:
        if (
            not isinstance(spec.path, (list, tuple))
            and spec.path not in PATHS
            and not str(spec.path).lower().endswith(".json")
        ):
            raise invalid("path", spec.path, f"use one of {', '.join(PATHS)} or a keyframes .json file")
        if not (0 < spec.fps <= 240) or not math.isfinite(spec.fps):
            raise invalid("fps", spec.fps, "use a frame rate in (0, 240]")
        if not (spec.seconds > 0) or not math.isfinite(spec.seconds):
            raise invalid("seconds", spec.seconds, "use a positive duration")
        if spec.seconds * spec.fps > limits.max_frames:  # before n_frames: 1e308 s x 30 fps would overflow it
            raise ResourceExhausted(
                f"seconds × fps = {spec.seconds:g} × {spec.fps:g} frames, over the limit of {limits.max_frames}",
                field="seconds",
            )
        n = n_frames(spec)
        if n > limits.max_frames:
            raise ResourceExhausted(
                f"seconds × fps = {spec.seconds} × {spec.fps} = {n} frames, over the limit of {limits.max_frames}",
                field="seconds",
            )
        _check_size("size", spec.size, limits.max_frame_pixels, even=True)
        if spec.renderer not in RENDERERS:
            raise invalid("renderer", spec.renderer, f"use one of {', '.join(RENDERERS)}")
        if spec.view_hfov is not None and not (1.0 <= spec.view_hfov <= 170.0):
            raise invalid("view_hfov", spec.view_hfov, "use a field of view between 1 and 170 degrees")
        # keyframe values (a file's or a list's) are checked here, not half-way through the job
        path_cameras(spec.path, n, spec.fps, spec.radius, view_hfov(spec, projection),
                     spec.cap_hfov if projection == "cap" else None)
    if not isinstance(spec.mesh_step, int) or spec.mesh_step < 1:
        raise invalid("mesh_step", spec.mesh_step, "use a whole number of pixels >= 1")
    for m in spec.meshes:
        if m not in MESH_FORMATS:
            raise invalid("meshes", m, f"use any of {', '.join(MESH_FORMATS)}")
    # a cap's panorama size is known only once reprojected; build_mesh checks that one
    if spec.meshes and projection == "equirect" and (w % spec.mesh_step or h % spec.mesh_step):
        raise invalid("mesh_step", spec.mesh_step, f"use a step that divides the panorama size {w}x{h}")
    return projection


def _check_size(name: str, size, max_pixels: int, even: bool = False) -> None:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise invalid(name, size, "give a size as (width, height), e.g. 1920x1080") from None
    if w < 2 or h < 2:
        raise invalid(name, f"{w}x{h}", "width and height must be at least 2")
    if even and (w % 2 or h % 2):
        raise invalid(name, f"{w}x{h}", "H.264 yuv420p needs an even width and height, e.g. 1920x1080")
    if w * h > max_pixels:
        raise ResourceExhausted(f"{name}={w}x{h} is {w * h} pixels, over the limit of {max_pixels}", field=name)


class _Sink:
    """Writes artifacts to ``out_dir`` (atomically) or keeps them as bytes; counts progress; polls cancellation."""

    def __init__(self, out_dir, total: int, progress: Progress | None, cancelled: Callable[[], bool] | None,
                 resume: bool = False):
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.resume = resume
        self.total, self.done = total, 0
        self.progress, self.cancelled = progress, cancelled
        self.artifacts: list[Artifact] = []

    def check(self) -> None:
        if self.cancelled is not None and self.cancelled():
            raise Cancelled("the render was cancelled; no further artifacts were written")

    def step(self, message: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, message)
        self.check()

    def reuse(self, name: str, media_type: str, **metadata) -> bool:
        """Resuming: an artifact an earlier run of this job finished (renamed into place, so complete) is kept."""
        if not (self.resume and self.out_dir is not None and (self.out_dir / name).is_file()):
            return False
        self.artifacts.append(Artifact(name, media_type, self.out_dir / name, None, metadata))
        return True

    def skip(self, units: int, message: str) -> None:
        """Count ``units`` as done without doing them (their artifact was reused)."""
        self.done += units - 1
        self.step(message)

    def add(self, name: str, media_type: str, data: bytes, **metadata) -> None:
        if self.out_dir is not None:
            self.artifacts.append(
                Artifact(name, media_type, write_bytes_atomic(self.out_dir / name, data), None, metadata)
            )
        else:
            self.artifacts.append(Artifact(name, media_type, None, data, metadata))

    def video(self, name: str, write, **metadata) -> None:
        from .video import write_mp4

        if self.out_dir is not None:
            path = write(write_mp4, self.out_dir / name)
            self.artifacts.append(Artifact(name, "video/mp4", path, None, metadata))
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = write(write_mp4, Path(tmp) / name)
            self.artifacts.append(Artifact(name, "video/mp4", None, path.read_bytes(), metadata))


def render_job(
    spec: RenderSpec,
    out_dir: str | os.PathLike | None = None,
    *,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
    limits: RenderLimits = RenderLimits(),
    checkpoint_dir: str | os.PathLike | None = None,
) -> RenderResult:
    """Run one render job; returns its artifacts (files in ``out_dir``, or bytes when ``out_dir`` is None).

    ``checkpoint_dir``: keep finished frames there and reuse those (and finished artifacts) of an earlier run.
    """
    # 1. Check the request and build the displaced sphere.
    check_spec(spec, limits)
    pano = panorama_for(spec)
    eye = spec.eye_size or (pano.width, pano.height)
    if spec.video360 and spec.eye_size is None and eye[1] % 2:
        # the default follows the panorama, whose height can be odd (a cap's 202x101); H.264 yuv420p needs even
        # sizes, so round the default down to the nearest even 2:1 size (an explicit --eye-size is never changed)
        eye = (2 * (eye[1] - 1), eye[1] - 1)
    _check_size("eye_size", eye, limits.max_eye_pixels)
    frames = n_frames(spec) if spec.path is not None else 0
    if spec.video360:
        _check_size("eye_size", eye, limits.max_video360_pixels, even=True)
    sink = _Sink(out_dir, job_units(spec), progress, cancelled, resume=checkpoint_dir is not None)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    sink.check()

    # 2. Stills.
    if spec.ods:
        if not sink.reuse("ods.png", "image/png", stereo="top-bottom", eye_size=eye):
            sink.add("ods.png", "image/png", encode_png(render_ods(pano, eye, spec.ipd)), stereo="top-bottom",
                     eye_size=eye)
        sink.step("ODS stereo still")
    if spec.mono360:
        if not sink.reuse("mono360.png", "image/png", eye_size=eye):
            sink.add("mono360.png", "image/png", encode_png(render_equirect(pano, eye, "mono")), eye_size=eye)
        sink.step("mono 360 still")

    # 3. Camera moves: perspective frames, mono or side by side, into an H.264 MP4.
    scene = None
    if spec.path is not None:
        cap = spec.cap_hfov if pano.projection == "cap" else None
        cams = path_cameras(spec.path, frames, spec.fps, spec.radius, view_hfov(spec, pano.projection), cap)
        moved = any(np.linalg.norm(c.position) > 0 for c in cams) or spec.stereo
        if moved and spec.renderer == "raycast":
            scene = MeshScene(pano)
        w, h = spec.size

        def render_frame(cam):
            if spec.stereo:
                return np.concatenate(
                    [
                        render_perspective(pano, cam, (w, h), scene, -spec.ipd / 2, spec.renderer),
                        render_perspective(pano, cam, (w, h), scene, spec.ipd / 2, spec.renderer),
                    ],
                    axis=1,
                )
            return render_perspective(pano, cam, (w, h), scene, renderer=spec.renderer)

        vsize = (2 * w if spec.stereo else w, h)
        meta = dict(frames=frames, fps=spec.fps, size=vsize, stereo="left-right" if spec.stereo else "mono")
        _video(sink, f"{path_name(spec.path)}.mp4", cams, render_frame, spec, None, ckpt, "frame", meta)

    # 4. A 360 video: ODS from each of the path's camera positions (orientation stays world-fixed).
    if spec.video360:
        if scene is None and any(np.linalg.norm(c.position) > 0 for c in cams):
            scene = MeshScene(pano)  # ODS from a moved centre is cast; from the origin it is the scanline still
        at_origin: list[np.ndarray] = []

        def render_ods_frame(cam):
            c = np.asarray(cam.position, dtype=np.float64)
            if np.linalg.norm(c) > 0:
                return render_ods_raycast(scene, eye, spec.ipd, centre=c)
            if not at_origin:
                at_origin.append(render_ods(pano, eye, spec.ipd))
            return at_origin[0]

        meta360 = dict(frames=frames, fps=spec.fps, size=(eye[0], 2 * eye[1]), stereo="top-bottom")
        _video(sink, f"{path_name(spec.path)}_360.mp4", cams, render_ods_frame, spec, "top-bottom", ckpt,
               "360 frame", meta360)

    # 5. Meshes (stretched faces left out: a gap at a depth edge, not a smear).
    if spec.meshes:
        mesh = build_mesh(pano, spec.mesh_step).without_stretched()
        for fmt in spec.meshes:
            if sink.reuse(f"mesh.{fmt}", "application/x-ply" if fmt == "ply" else "model/gltf-binary"):
                pass
            elif fmt == "ply":
                sink.add("mesh.ply", "application/x-ply", ply_bytes(mesh), faces=len(mesh.faces))
            else:
                sink.add("mesh.glb", "model/gltf-binary", glb_bytes(mesh, pano.rgb), faces=len(mesh.faces))
            sink.step(f"mesh {fmt}")
    return RenderResult(sink.artifacts, (pano.width, pano.height), pano.projection)


def _video(sink: _Sink, name: str, cams, render, spec: RenderSpec, spherical, ckpt: Path | None, label: str,
           meta: dict) -> None:
    """One video of the job, ``render(cam)`` per frame: reused when an earlier run finished it, resumable in
    segments with a checkpoint folder, else encoded in one go."""
    frames, size = meta["frames"], meta["size"]
    if sink.reuse(name, "video/mp4", **meta):
        sink.skip(frames, f"{label} {frames}/{frames}")
    elif ckpt is not None:
        _segmented_video(sink, name, cams, render, size, spec, spherical, ckpt / name, label, meta)
    else:
        counter = iter(range(1, frames + 1))
        sink.video(
            name,
            lambda write, p: write(p, map(render, cams), size, spec.fps, spec.crf, spherical=spherical,
                                   on_frame=lambda: sink.step(f"{label} {next(counter)}/{frames}")),
            **meta,
        )


#: a resumable video is encoded in segments of this many seconds (see :func:`_segmented_video`), fewer when their
#: raw frames would take more than SEGMENT_MAX_BYTES: each segment costs one ffmpeg start (~0.1 s of CPU), and the
#: frames of the open one sit on disk uncompressed
SEGMENT_S = 4.0
SEGMENT_MAX_BYTES = 256 << 20
_PART = re.compile(r"^part-(\d{6})-(\d{6})\.mp4$")


def _segmented_video(sink: _Sink, name: str, cams, render, size, spec: RenderSpec, spherical, folder: Path,
                     label: str, meta: dict) -> None:
    """A video that survives interruption: encoded in MP4 segments of :data:`SEGMENT_S` seconds at most
    (``part-A-B.mp4``, frames A..B) joined without re-encoding at the end; the frames of the segment being encoded are kept raw
    (``frame-N.npy``: no encoding cost, lossless) until their segment is complete. A rerun reuses finished
    segments and kept frames, so at most the frame in flight is rendered twice."""
    from .video import concat_mp4, write_mp4

    folder.mkdir(parents=True, exist_ok=True)
    n = len(cams)
    k = max(1, min(round(SEGMENT_S * spec.fps), SEGMENT_MAX_BYTES // (size[0] * size[1] * 3)))
    parts = []
    for start in range(0, n, k):
        idx = range(start, min(start + k, n))
        part = folder / f"part-{idx[0] + 1:06d}-{idx[-1] + 1:06d}.mp4"
        parts.append(part)
        if part.is_file():  # renamed into place when complete
            sink.skip(len(idx), f"{label} {idx[-1] + 1}/{n}")
            continue

        def frames(idx=idx):
            for i in idx:
                raw = folder / f"frame-{i + 1:06d}.npy"
                frame = _load_frame(raw, (size[1], size[0], 3))
                if frame is None:
                    frame = render(cams[i])
                    _save_frame(raw, frame)  # before the frame counts as done (on_frame below)
                yield frame

        counter = iter(idx)
        write_mp4(part, frames(), size, spec.fps, spec.crf,
                  on_frame=lambda counter=counter: sink.step(f"{label} {next(counter) + 1}/{n}"))
        for i in idx:
            (folder / f"frame-{i + 1:06d}.npy").unlink(missing_ok=True)
    if sink.out_dir is not None:
        sink.artifacts.append(Artifact(name, "video/mp4", concat_mp4(parts, sink.out_dir / name, spherical), None,
                                       meta))
    else:
        data = concat_mp4(parts, folder / name, spherical).read_bytes()
        sink.artifacts.append(Artifact(name, "video/mp4", None, data, meta))


def checkpointed_frames(checkpoint_dir) -> int:
    """How many finished frames ``checkpoint_dir`` holds (segments and kept frames, every video of the job)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return 0
    count = sum(1 for _ in folder.rglob("frame-*.npy"))
    for p in folder.rglob("part-*.mp4"):
        if m := _PART.match(p.name):
            count += int(m[2]) - int(m[1]) + 1
    return count


def _load_frame(path: Path, shape) -> np.ndarray | None:
    """A kept frame, or None when there is none or it is damaged (e.g. a node crashed before it reached the disk:
    frames are not fsynced, for speed; a damaged one is simply rendered again)."""
    try:
        frame = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return frame if frame.shape == tuple(shape) and frame.dtype == np.uint8 else None


def _save_frame(path: Path, frame: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(frame), allow_pickle=False)
    os.replace(tmp, path)


def panorama_for(spec: RenderSpec) -> Panorama:
    """The displaced sphere a spec describes (for callers that render frames themselves)."""
    return prepare_panorama(
        spec.rgb, spec.depth, hfov_deg=spec.cap_hfov, normalize_depth=spec.normalize_depth, **_geometry(spec)
    )


def _geometry(spec: RenderSpec) -> dict:
    """The spec's geometry, as :func:`~.geometry.check_panorama` and :func:`~.geometry.prepare_panorama` take it."""
    return {
        "projection": spec.projection,
        "depth_mapping": spec.depth_mapping,
        "depth_strength": spec.depth_strength,
        "radius": spec.radius,
        "edge_threshold": spec.edge_threshold,
    }
