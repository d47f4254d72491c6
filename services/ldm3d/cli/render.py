"""``ldm3d render``: RGB + 16-bit depth → ODS stereo still, camera-move MP4, 360 MP4, PLY/GLB meshes.

    ldm3d render --rgb x_rgb.png --depth x_depth.png --out out --ods --path orbit --seconds 2 --fps 12 \\
        --size 640x360 --mesh glb

A 2:1 image is taken as an equirectangular panorama; any other shape as a normal photo mapped onto a cap of the
sphere (``--cap-hfov``, default 90°). With no output chosen, the ODS still is rendered. See docs/render.md.
"""

from __future__ import annotations

import argparse
import sys

from ..codec import read_depth, read_rgb
from ..errors import LDM3DError, invalid


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 1920x1080") from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "render",
        help="RGBD → ODS 360 stereo still, camera-move MP4, meshes (DepthFusion)",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument("--rgb", required=True, help="8-bit RGB image (2:1 panorama or a normal photo)")
    io.add_argument("--depth", required=True, help="16-bit grayscale depth PNG of the same size (larger = nearer)")
    io.add_argument("--out", required=True, help="output folder (created if missing)")
    g = p.add_argument_group("geometry")
    g.add_argument(
        "--projection",
        choices=("auto", "equirect", "cap"),
        default="auto",
        help="auto: 2:1 → equirect, anything else → cap",
    )
    g.add_argument("--cap-hfov", type=float, default=90.0, help="horizontal FOV (deg) of a non-panoramic input")
    g.add_argument(
        "--depth-mapping",
        choices=("linear", "disparity"),
        default="linear",
        help="linear: r = R(1 + s(0.5 - d)); disparity: 1/r = (1 + s(d - 0.5))/R",
    )
    g.add_argument("--depth-strength", type=float, default=1.0, help="s in the mappings, 0 <= s < 2")
    g.add_argument("--normalize-depth", action="store_true", help="stretch the image's own depth range to 0..1")
    g.add_argument("--radius", type=float, default=2.0, help="sphere radius R in metres (d = 0.5 lies on it)")
    g.add_argument("--ipd", type=float, default=0.064, help="interpupillary distance in metres")
    g.add_argument(
        "--edge-threshold",
        type=float,
        default=10.0,
        help="slope (tan of angle to the sphere) above which an edge is a depth discontinuity",
    )
    o = p.add_argument_group("outputs")
    o.add_argument("--ods", action="store_true", help="ODS stereo still ods.png, top-bottom, left eye on top")
    o.add_argument("--mono", action="store_true", help="mono 360 still mono360.png")
    o.add_argument(
        "--eye-size",
        type=_size,
        default=None,
        help="per-eye size of 360 stills/videos, WxH with W = 2H (default: the panorama's)",
    )
    o.add_argument(
        "--path", default=None, help="camera move: orbit, dolly, look-around or a keyframes .json file → <path>.mp4"
    )
    o.add_argument("--seconds", type=float, default=8.0, help="length of the camera move")
    o.add_argument("--fps", type=float, default=30.0, help="frames per second")
    o.add_argument("--size", type=_size, default="1920x1080", help="frame size per eye, WxH (even)")
    o.add_argument(
        "--hfov",
        type=float,
        default=None,
        help="camera horizontal FOV in degrees (default 75, or 0.75 x --cap-hfov for a photo)",
    )
    o.add_argument("--stereo", action="store_true", help="side-by-side stereo camera move (left eye on the left)")
    o.add_argument(
        "--renderer",
        choices=("raycast", "epipolar"),
        default="raycast",
        help="frames away from the origin: raycast (open3d, exact texture) or epipolar (faster, slightly softer)",
    )
    o.add_argument("--crf", type=int, default=18, help="x264 quality (0 lossless .. 51 worst)")
    o.add_argument(
        "--video360",
        action="store_true",
        help="also a 360 ODS top-bottom MP4 from the path's positions (<path>_360.mp4, spherical metadata)",
    )
    o.add_argument("--mesh", default="", help="comma-separated mesh formats: ply, glb")
    o.add_argument("--mesh-step", type=int, default=1, help="one mesh vertex per k×k pixels")
    p.set_defaults(func=run)


# RenderSpec fields (shared with the gRPC API) whose flag is not simply "--" + the field with dashes.
_FLAGS = {"view_hfov": "--hfov", "hfov": "--cap-hfov", "meshes": "--mesh", "mono360": "--mono", "frames": "--seconds"}


def _with_flag(err: LDM3DError) -> LDM3DError:
    """The same error, led by the command-line flag that caused it, so CLI users know what to change."""
    if not err.field or err.field.startswith("--"):
        return err
    flag = _FLAGS.get(err.field, "--" + err.field.replace("_", "-"))
    if flag in err.message:
        return err
    return type(err)(f"{flag}: {err.message}", field=flag)


def run(args) -> int:
    from ..render import RenderSpec, render_job  # numpy-heavy imports only when the command runs

    meshes = tuple(m.strip().lower() for m in args.mesh.split(",") if m.strip())
    for m in meshes:
        if m not in ("ply", "glb"):
            raise invalid("--mesh", m, "use ply, glb or ply,glb")
    rgb = read_rgb(args.rgb, field="--rgb")
    depth = read_depth(args.depth, field="--depth")
    ods = args.ods or not (args.mono or args.path or meshes)
    spec = RenderSpec(
        rgb=rgb,
        depth=depth,
        projection=args.projection,
        cap_hfov=args.cap_hfov,
        depth_mapping=args.depth_mapping,
        depth_strength=args.depth_strength,
        normalize_depth=args.normalize_depth,
        radius=args.radius,
        ipd=args.ipd,
        edge_threshold=args.edge_threshold,
        ods=ods,
        mono360=args.mono,
        eye_size=args.eye_size,
        path=args.path,
        seconds=args.seconds,
        fps=args.fps,
        size=args.size,
        view_hfov=args.hfov,
        stereo=args.stereo,
        renderer=args.renderer,
        crf=args.crf,
        video360=args.video360,
        meshes=meshes,
        mesh_step=args.mesh_step,
    )
    from tqdm import tqdm

    bar = None

    def progress(done: int, total: int, message: str) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="step", file=sys.stderr, desc="render", dynamic_ncols=True)
        bar.set_postfix_str(message, refresh=False)
        bar.update(done - bar.n)

    try:
        result = render_job(spec, out_dir=args.out, progress=progress)
    except LDM3DError as err:
        raise _with_flag(err) from None
    finally:
        if bar is not None:
            bar.close()
    if result.projection == "cap":
        print(
            f"note: {args.rgb} is not 2:1, so it was mapped onto a {args.cap_hfov:g}° cap of the sphere "
            f"(panorama {result.panorama_size[0]}x{result.panorama_size[1]}); --cap-hfov changes that",
            file=sys.stderr,
        )
    for a in result.artifacts:
        print(a.path)
    return 0
