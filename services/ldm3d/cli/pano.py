"""``ldm3d pano``: the paper's two-stage panorama pipeline in one command — text (or your panorama) → a seamless
RGBD panorama → ODS stereo still, 360 stereo MP4, GLB mesh and the viewer page, all in DIR.

    ldm3d pano --model demo/tiny --prompt "a cabin in the woods" --out demo/pano
    ldm3d pano --model Intel/ldm3d-pano --prompt "a beach at sunset" --out beach          # 1024x512 by default
    ldm3d pano --model M --prompt "..." --init-rgb my_pano.png --estimate-depth --strength 0.7 --out mine
    ldm3d pano --server localhost:50051 --prompt "a cabin in the woods" --out demo/pano  # on the gRPC platform
    ldm3d pano --server ldm3d.example.com:443 --tls-ca ca.pem --prompt "..." --out demo/pano  # a locked one
    ldm3d view demo/pano                                                                 # look around it

DIR then holds panorama_rgb.png, panorama_depth.png (16-bit), panorama_depth_preview.png, panorama.json (the
generation record), ods.png (top-bottom, left eye on top), <path>.mp4 (camera move), <path>_360.mp4 (360 stereo,
with spherical-video metadata), mesh.glb, index.html + viewer/ (the page) and pano.json (every parameter; written
last, so a folder with pano.json is complete). --model takes a diffusers checkpoint (torch; seamless by default) or
a model repository from `ldm3d export` (embedded ONNX Runtime; seamless if it was exported with --seamless).
With --server HOST:PORT both stages run on a platform (`ldm3d serve all`) as one Studio.SubmitPano operation and
the very same files are written here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from ..errors import InvalidArgument, LDM3DError, renamed
from . import connection


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 1024x512") from None


class _Fmt(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def register(sub) -> None:
    from ..pipeline.schedulers import SCHEDULERS
    from ..render.camera import PATHS

    p = sub.add_parser("pano", help="text → seamless RGBD panorama → ODS still, 360 MP4, GLB and a viewer page",
                       description=__doc__, formatter_class=_Fmt)
    p.add_argument("--model", metavar="M",
                   help="diffusers LDM3D checkpoint folder or hub id (e.g. Intel/ldm3d-pano), or a model repository; "
                        "with --server, the served model's name (default: the server's default)")
    p.add_argument("--prompt", required=True, help="what the panorama shows")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    i = p.add_argument_group("image-to-image (the paper's Fig. 2a: your panorama, its depth by DPT)")
    i.add_argument("--init-rgb", metavar="PANO.png", help="an equirectangular 2:1 RGB panorama to start from")
    d = i.add_mutually_exclusive_group()
    d.add_argument("--init-depth", metavar="D.png", help="its 16-bit depth (larger = nearer)")
    d.add_argument("--estimate-depth", action="store_true", help="estimate its depth with DPT (--depth-model)")
    i.add_argument("--strength", type=float, default=0.7, help="how far to noise the init panorama, in (0, 1]")
    i.add_argument("--depth-model", default="Intel/dpt-large", metavar="DIR_OR_ID",
                   help="DPT checkpoint for --estimate-depth (`ldm3d make-tiny-depth-model DIR --kind dpt` offline)")
    g = p.add_argument_group("generation")
    g.add_argument("--negative-prompt", default="", metavar="TEXT", help="what to steer away from")
    g.add_argument("--height", type=int, help="pixels (default: the checkpoint's, or half --width)")
    g.add_argument("--width", type=int, help="pixels, 2 x height (default: 2 x --height)")
    g.add_argument("--steps", type=int, default=50, help="denoising steps")
    g.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale (the paper: 5)")
    g.add_argument("--seed", type=int, help="random seed (default: drawn, and recorded)")
    g.add_argument("--scheduler", choices=list(SCHEDULERS), help="default: the checkpoint's own")
    g.add_argument("--no-seamless", dest="seamless", action="store_false",
                   help="plain zero padding: the left and right edges will not meet (a seam behind you)")
    r = p.add_argument_group("360 rendering (DepthFusion)")
    r.add_argument("--eye-size", type=_size, metavar="WxH",
                   help="per-eye size of the ODS still and the 360 video (default: the panorama's)")
    r.add_argument("--path", default="orbit", choices=list(PATHS),
                   help="head movement of the videos (the 360 video's eye centre follows it)")
    r.add_argument("--seconds", type=float, default=4.0, help="video length")
    r.add_argument("--fps", type=float, default=24.0, help="video frame rate")
    r.add_argument("--size", type=_size, default=(960, 540), metavar="WxH", help="camera-move video frame size")
    r.add_argument("--no-video", action="store_true", help="skip both MP4s (still, mesh and page only)")
    r.add_argument("--radius", type=float, default=2.0, help="sphere radius in metres (the viewer's scale)")
    r.add_argument("--depth-strength", type=float, default=1.0, help="how far depth moves the sphere (0..2)")
    r.add_argument("--ipd", type=float, default=0.064, help="eye separation in metres")
    r.add_argument("--mesh-step", type=int, default=1, help="mesh vertex every N pixels (2 or 4 for big panoramas)")
    p.add_argument("--server", metavar="HOST:PORT",
                   help="run both stages on a platform (`ldm3d serve all`) as one Studio.SubmitPano operation "
                        "(and DepthEvaluator first for --estimate-depth); the page is written here")
    connection.add_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _pipeline(model: str):
    from ..pipeline import LDM3DPipeline

    if (Path(model) / "unet" / "config.pbtxt").is_file():  # a model repository from `ldm3d export`
        return LDM3DPipeline.from_repository(model)
    return LDM3DPipeline.from_checkpoint(model)


def _check_sizes(args, default_height: int | None) -> None:
    """Equirectangular 2:1: fill the missing side, refuse other shapes with the flag to change."""
    if args.init_rgb is not None:
        return  # sizes come from the init image (checked below)
    if args.height is None and args.width is None:
        args.height = default_height
    if args.width is None:
        args.width = 2 * args.height
    elif args.height is None:
        args.height = args.width // 2
    if args.width != 2 * args.height:
        raise InvalidArgument(f"--width {args.width} --height {args.height} is not 2:1: a 360 panorama is "
                              f"equirectangular (e.g. --width {2 * args.height} --height {args.height})", field="width")


def run(args) -> int:
    try:
        return _run(args)
    except LDM3DError as err:  # library and server errors name fields; this command's user needs the flag
        if not err.field or err.field.startswith("--"):
            raise
        from .generate import FLAGS

        flags = {**FLAGS, "seamless": "--no-seamless", "rgb": "--init-rgb", "depth": "--init-depth"}
        raise renamed(err, {err.field: flags.get(err.field, "--" + err.field.replace("_", "-"))}) from None


def _run(args) -> int:
    import numpy as np

    from .. import codec
    from ..render import RenderLimits
    from ..render.geometry import check_depth_params
    from ..render.job import check_spec
    from ..viewer import MANIFEST, write_viewer
    from .generate import _params, write_outputs

    t0 = time.perf_counter()
    if args.init_depth is None and not args.estimate_depth and args.init_rgb is not None:
        raise InvalidArgument("--init-rgb needs --init-depth D.png or --estimate-depth", field="init_depth")
    if args.init_rgb is None and (args.init_depth is not None or args.estimate_depth):
        raise InvalidArgument("--init-depth/--estimate-depth need --init-rgb PANO.png", field="init_rgb")
    # cheap checks first: a mistyped flag should not wait for a model to load
    if args.init_rgb is not None:
        h, w = codec.read_rgb(args.init_rgb, "--init-rgb").shape[:2]
        if w != 2 * h:
            raise InvalidArgument(f"--init-rgb is {w}x{h}, not 2:1: give an equirectangular 360 panorama (or use "
                                  "`ldm3d generate` + `ldm3d render` for a normal photo)", field="init_rgb")
    elif args.width is not None and args.height is not None and args.width != 2 * args.height:
        _check_sizes(args, 0)
    check_depth_params("linear", args.depth_strength, args.radius)
    if not args.model and not args.server:
        raise InvalidArgument("--model M is required (a checkpoint folder, hub id or model repository), or "
                              "--server HOST:PORT", field="model")
    connection.options(args)  # TLS flags without --server are refused
    out = Path(args.out)
    args.num_images = 1
    if args.server:
        stages = _RemoteStages(args)
        if not args.seamless:
            raise InvalidArgument("--no-seamless is not sent over gRPC: the platform pads as its repository was "
                                  "exported, or, serving a checkpoint, wraps 2:1 sizes; drop the flag",
                                  field="seamless")
        _check_sizes(args, stages.default_height)
        params = _params(args, estimate_depth=stages.estimate_depth)
        params = dataclasses.replace(params, seamless=None)
    else:
        pipe = _pipeline(args.model)
        stages = _LocalStages(pipe)
        _check_sizes(args, pipe.spec.default_height)
        # stage 1's parameters: the generate command's handling, image-to-image and DPT included
        seamless = args.seamless
        if pipe.spec.seamless is not None:  # a repository: its export decided
            if not pipe.spec.seamless and seamless:
                print(f"ldm3d pano: note: {args.model} was exported without --seamless, so the panorama's edges "
                      "will not meet; `ldm3d export --seamless` fixes that", file=sys.stderr)
            seamless = None if seamless else False
        params = dataclasses.replace(_params(args), seamless=seamless)
    # every render parameter is checked before minutes of generation, on a stand-in of the panorama's size
    h, w = (params.height, params.width) if params.init_rgb is None else params.init_rgb.shape[:2]
    check_spec(_render_spec(args, np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint16)), RenderLimits())
    # stage 1: the RGBD panorama (a previous run's pano.json goes first: until the new one, DIR is not complete)
    (out / MANIFEST).unlink(missing_ok=True)
    bar = _bar(args, "denoising", "step")
    try:
        result = stages.generate(params, on_step=lambda done, total, _s: bar(done, total, ""))
    finally:
        bar.close()
    if args.estimate_depth and result.metadata.get("image_to_image"):
        result.metadata["image_to_image"]["init_depth"] = (
            "estimated by the platform's DepthEvaluator" if args.server else f"estimated by {args.depth_model}")
    write_outputs(result, out, "panorama")
    t1 = time.perf_counter()

    # stage 2: DepthFusion — ODS still, camera-move and 360 stereo videos, the GLB mesh
    bar = _bar(args, "render", "step")
    try:
        rendered = stages.render(_render_spec(args, result.rgb[0], result.depth[0]), out,
                                 progress=lambda done, total, msg: bar(done, total, msg))
    finally:
        bar.close()
    t2 = time.perf_counter()
    stages.close()
    t1 = getattr(stages, "render_started", None) or t1  # one remote operation: split where its render stage began

    # the page and its manifest (last: a folder with pano.json is complete)
    write_viewer(out)
    files = {"rgb": "panorama_rgb.png", "depth": "panorama_depth.png",
             "depth_preview": "panorama_depth_preview.png", "generation": "panorama.json", "page": "index.html"}
    for a in rendered.artifacts:
        key = {"ods.png": "ods", "mesh.glb": "mesh"}.get(a.name)
        key = key or ("video360" if a.name.endswith("_360.mp4") else "video" if a.name.endswith(".mp4") else a.name)
        files[key] = a.name
    manifest = {
        "prompt": params.prompt,
        "files": files,
        "generation": result.metadata,
        "platform": args.server or None,
        "render": {"radius": args.radius, "depth_strength": args.depth_strength, "ipd": args.ipd,
                   "projection": rendered.projection, "panorama_size": list(rendered.panorama_size),
                   "eye_size": list(args.eye_size or rendered.panorama_size), "path": None if args.no_video
                   else args.path, "seconds": args.seconds, "fps": args.fps, "size": list(args.size),
                   "mesh_step": args.mesh_step, "stereo": "top-bottom, left eye on top",
                   "artifacts": {a.name: a.metadata for a in rendered.artifacts}},
        "timings_s": {"generate": round(t1 - t0, 3), "render": round(t2 - t1, 3), "total": round(t2 - t0, 3)},
    }
    codec.write_bytes_atomic(out / MANIFEST, (json.dumps(manifest, indent=2, default=_jsonable) + "\n").encode())
    for name in sorted(files.values()):
        print(out / name)
    print(out / MANIFEST)
    print(f"\nlook around it: ldm3d view {out}", file=sys.stderr)
    return 0


class _LocalStages:
    """Both stages in this process: the pipeline, then ``render_job``."""

    def __init__(self, pipe):
        self.generate = pipe

    def close(self) -> None:
        pass

    @staticmethod
    def render(spec, out: Path, progress):
        from ..render import render_job

        return render_job(spec, out_dir=out, progress=progress)


class _RemoteStages:
    """Both stages on a platform as one ``Studio.SubmitPano`` operation, polled for its progress (denoising steps,
    then render units); its artifacts come back as bytes and are written here. ``--estimate-depth`` asks the
    platform's ``DepthEvaluator`` first (the init depth travels in the request)."""

    def __init__(self, args):
        from ..client import StudioClient
        from ..errors import NotFound

        self.args = args
        self.client = StudioClient(args.server, **connection.options(args))
        self.model = args.model or ""
        models = self.client.list_models()
        info = next((m for m in models if (m.name == self.model if self.model else m.is_default)), None)
        if info is None:
            raise NotFound(f"--model {self.model!r} is not served at {args.server} (it serves "
                           f"{', '.join(m.name for m in models) or 'nothing'})", field="model")
        self.default_height = int(info.default_height)
        self.rendered = self.render_started = None  # the operation's RenderResult; when its render stage was seen

    def estimate_depth(self, rgb):
        return self.client.estimate_depth(rgb)

    def close(self) -> None:
        self.client.close()

    def generate(self, params, on_step):
        """The whole operation: the panorama is returned, the render result kept for :meth:`render`."""
        spec = _render_spec(self.args, None, None)
        name = self.client.submit_pano(
            params, model=self.model, path=spec.path, size=spec.size, eye_size=spec.eye_size,
            meshes=tuple(spec.meshes), ods=spec.ods, video360=spec.video360, seconds=spec.seconds, fps=spec.fps,
            projection=spec.projection, radius=spec.radius, depth_strength=spec.depth_strength, ipd=spec.ipd,
            mesh_step=spec.mesh_step)
        bar = _bar(self.args, "render", "step")

        def on_progress(done: int, total: int, message: str) -> None:
            self.render_started = self.render_started or time.perf_counter()
            bar(done, total, message)

        try:
            result, self.rendered = self.client.wait_pano(name, on_step=on_step, on_progress=on_progress)
        except KeyboardInterrupt:  # Ctrl-C: stop the server's work too
            self.client.cancel(name)
            raise
        finally:
            bar.close()
        return result

    def render(self, spec, out: Path, progress):
        from .. import codec
        from ..render import Artifact, RenderResult

        r = self.rendered
        artifacts = []
        for a in r.artifacts:
            path = codec.write_bytes_atomic(out / Path(a.name).name, a.data)
            artifacts.append(Artifact(path.name, a.media_type, path, None, json.loads(a.metadata_json or "{}")))
        return RenderResult(artifacts, (r.panorama_width, r.panorama_height), r.projection)


def _render_spec(args, rgb, depth):
    from ..render import RenderSpec

    return RenderSpec(rgb=rgb, depth=depth, projection="equirect", radius=args.radius,
                      depth_strength=args.depth_strength, ipd=args.ipd, ods=True, eye_size=args.eye_size,
                      path=None if args.no_video else args.path, seconds=args.seconds, fps=args.fps, size=args.size,
                      video360=not args.no_video, meshes=("glb",), mesh_step=args.mesh_step)


def _jsonable(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)


class _bar:
    """A tqdm bar created on first use (and none with --no-progress)."""

    def __init__(self, args, desc: str, unit: str):
        self.off, self.desc, self.unit, self.bar = args.no_progress, desc, unit, None

    def __call__(self, done: int, total: int, message: str) -> None:
        if self.off:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr, leave=False,
                            dynamic_ncols=True)
        if message:
            self.bar.set_postfix_str(message, refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
