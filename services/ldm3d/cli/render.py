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
from ..errors import LDM3DError, invalid, renamed


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
        formatter_class=_SpecDefaultsHelp,
    )
    io = p.add_argument_group("input and output")
    io.add_argument("--rgb", required=True, help="8-bit RGB image (2:1 panorama or a normal photo)")
    io.add_argument("--depth", required=True, help="16-bit grayscale depth PNG of the same size (larger = nearer)")
    io.add_argument("--out", required=True, help="output folder (created if missing)")
    g = p.add_argument_group("geometry")
    g.add_argument("--projection", choices=("auto", "equirect", "cap"),
                   help="auto: 2:1 → equirect, anything else → cap")
    g.add_argument("--cap-hfov", type=float, help="horizontal FOV (deg) of a non-panoramic input")
    g.add_argument(
        "--depth-mapping",
        choices=("linear", "disparity"),
        help="linear: r = R(1 + s(0.5 - d)); disparity: 1/r = (1 + s(d - 0.5))/R",
    )
    g.add_argument("--depth-strength", type=float, help="s in the mappings, 0 <= s < 2")
    g.add_argument("--normalize-depth", action="store_true", help="stretch the image's own depth range to 0..1")
    g.add_argument("--radius", type=float, help="sphere radius R in metres (d = 0.5 lies on it)")
    g.add_argument("--ipd", type=float, help="interpupillary distance in metres")
    g.add_argument(
        "--edge-threshold",
        type=float,
        help="slope (tan of angle to the sphere) above which an edge is a depth discontinuity",
    )
    o = p.add_argument_group("outputs")
    o.add_argument("--ods", action="store_true", help="ODS stereo still ods.png, top-bottom, left eye on top")
    o.add_argument("--mono", action="store_true", help="mono 360 still mono360.png")
    o.add_argument(
        "--eye-size",
        type=_size,
        help="per-eye size of 360 stills/videos, WxH with W = 2H (default: the panorama's)",
    )
    o.add_argument("--path", help="camera move: orbit, dolly, look-around or a keyframes .json file → <path>.mp4")
    o.add_argument("--seconds", type=float, help="length of the camera move")
    o.add_argument("--fps", type=float, help="frames per second")
    o.add_argument("--size", type=_size, help="frame size per eye, WxH (even)")
    o.add_argument(
        "--hfov",
        type=float,
        help="camera horizontal FOV in degrees (default: 75 for a panorama, 0.75 x --cap-hfov for a photo)",
    )
    o.add_argument("--stereo", action="store_true", help="side-by-side stereo camera move (left eye on the left)")
    o.add_argument(
        "--renderer",
        choices=("raycast", "epipolar"),
        help="frames away from the origin: raycast (open3d, exact texture) or epipolar (faster, slightly softer)",
    )
    o.add_argument("--crf", type=int, help="x264 quality (0 lossless .. 51 worst)")
    o.add_argument(
        "--video360",
        action="store_true",
        help="also a 360 ODS top-bottom MP4 from the path's positions (<path>_360.mp4, spherical metadata)",
    )
    o.add_argument("--mesh", default="", help="comma-separated mesh formats: ply, glb")
    o.add_argument("--mesh-step", type=int, help="one mesh vertex per k×k pixels")
    p.set_defaults(func=run)


# RenderSpec fields (shared with the gRPC API) whose flag is not simply "--" + the field with dashes.
_FLAGS = {"view_hfov": "--hfov", "meshes": "--mesh", "mono360": "--mono", "frames": "--seconds"}
# flag dest → RenderSpec field, where they differ
_FIELDS = {"hfov": "view_hfov", "mono": "mono360", "mesh": "meshes"}


class _SpecDefaultsHelp(argparse.HelpFormatter):
    """``--help`` shows :class:`~ldm3d.render.RenderSpec`'s defaults, the one place they are declared (the flags
    default to None: unset options are left out of the spec). The render library is imported only for the help."""

    def _get_help_string(self, action):
        from ..render import RenderSpec

        f = RenderSpec.__dataclass_fields__.get(_FIELDS.get(action.dest, action.dest))
        if f is None or action.dest not in _OPTIONS or f.default is None:
            return action.help
        default = "x".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        return f"{action.help} (default: {default})"


def _flag(field: str) -> str:
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


# flags whose value (when given) is the RenderSpec field of the same name (or _FIELDS')
_OPTIONS = ("projection", "cap_hfov", "depth_mapping", "depth_strength", "radius", "ipd", "edge_threshold",
            "eye_size", "path", "seconds", "fps", "size", "hfov", "renderer", "crf", "mesh_step")


def run(args) -> int:
    from ..render import RenderSpec, render_job  # numpy-heavy imports only when the command runs

    meshes = tuple(m.strip().lower() for m in args.mesh.split(",") if m.strip())
    for m in meshes:
        if m not in ("ply", "glb"):
            raise invalid("--mesh", m, "use ply, glb or ply,glb")
    rgb = read_rgb(args.rgb, field="--rgb")
    depth = read_depth(args.depth, field="--depth")
    ods = args.ods or not (args.mono or args.path or meshes)
    given = {_FIELDS.get(name, name): getattr(args, name) for name in _OPTIONS if getattr(args, name) is not None}
    spec = RenderSpec(rgb=rgb, depth=depth, ods=ods, mono360=args.mono, normalize_depth=args.normalize_depth,
                      stereo=args.stereo, video360=args.video360, meshes=meshes, **given)
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
        raise (err if not err.field or err.field.startswith("--") else renamed(err, {err.field: _flag(err.field)})
               ) from None
    finally:
        if bar is not None:
            bar.close()
    if result.projection == "cap":
        print(
            f"note: {args.rgb} is not 2:1, so it was mapped onto a {spec.cap_hfov:g}° cap of the sphere "
            f"(panorama {result.panorama_size[0]}x{result.panorama_size[1]}); --cap-hfov changes that",
            file=sys.stderr,
        )
    for a in result.artifacts:
        print(a.path)
    return 0
