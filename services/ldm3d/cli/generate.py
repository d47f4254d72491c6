"""``ldm3d generate``: a prompt → ``<stem>_rgb.png`` (8-bit sRGB), ``<stem>_depth.png`` (16-bit),
``<stem>_depth_preview.png`` (colour-mapped, for people) and ``<stem>.json`` (every parameter, seed, hashes, timings).

    ldm3d generate --model demo/tiny --prompt "a cabin in the woods" --seed 42 --out demo/out
    ldm3d generate --repository model_repository --prompt "..."            # embedded ONNX Runtime
    ldm3d generate --server localhost:50051 --prompt "..."                 # a running platform (ldm3d serve all)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .. import codec
from ..errors import InvalidArgument, LDM3DError, renamed
from ..models import hub
from ..pipeline.params import GenerateParams
from ..pipeline.schedulers import SCHEDULERS


def register(sub) -> None:
    p = sub.add_parser("generate", help="text → RGB + 16-bit depth PNGs",
                       description=__doc__, formatter_class=_Fmt)
    src = p.add_argument_group("model (one of)")
    src.add_argument("--model", metavar="DIR_OR_ID", help="diffusers LDM3D checkpoint folder or hub id (torch runtime)")
    src.add_argument("--repository", metavar="DIR", help="Triton model repository written by `ldm3d export`")
    src.add_argument("--server", metavar="HOST:PORT", help="a running platform's gateway (`ldm3d serve all`)")
    src.add_argument("--runtime", choices=("torch", "embedded", "triton"),
                     help="torch for --model; embedded (default) or triton for --repository")
    src.add_argument("--triton-url", metavar="HOST:PORT", help="Triton gRPC endpoint for --runtime triton")
    src.add_argument("--version", type=int, metavar="N", help="release of the repository (`ldm3d models releases`; default: the current one)")
    g = p.add_argument_group("generation")
    g.add_argument("--prompt", required=True, help="what to generate")
    g.add_argument("--negative-prompt", default="", metavar="TEXT", help="what to steer away from")
    g.add_argument("--height", type=int, help="pixels, a multiple of 8 (default: the checkpoint's, 512 for Intel/ldm3d)")
    g.add_argument("--width", type=int, help="pixels, a multiple of 8 (default: the checkpoint's)")
    g.add_argument("--steps", type=int, default=50, help="denoising steps")
    g.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale (the paper: 5)")
    g.add_argument("--seed", type=int, help="random seed (default: drawn, and written to the .json)")
    g.add_argument("--scheduler", choices=list(SCHEDULERS), help="default: the checkpoint's own (PNDM for Intel/ldm3d)")
    g.add_argument("--num-images", type=int, default=1, metavar="N", help="images per prompt")
    g.add_argument("--seamless", action=argparse.BooleanOptionalAction, default=None,
                   help="360 panorama whose left and right edges meet (circular padding along x in the U-Net and "
                        "VAE). Default: on when width = 2 x height (equirectangular, e.g. Intel/ldm3d-pano's "
                        "1024x512) on --model; a --repository serves what `ldm3d export [--seamless]` baked in")
    i = p.add_argument_group("image-to-image")
    i.add_argument("--init-rgb", metavar="PNG", help="init RGB image (its size must be --width x --height)")
    i.add_argument("--init-depth", metavar="PNG", help="init depth, a 16-bit grayscale PNG")
    i.add_argument("--strength", type=float, default=0.8, help="how far to noise the init image, in (0, 1]")
    i.add_argument("--estimate-depth", action="store_true",
                   help="estimate the init depth from --init-rgb with DPT (the paper's panorama stage, Fig. 2a)")
    i.add_argument("--depth-model", default=hub.DPT, metavar="DIR_OR_ID",
                   help="DPT checkpoint for --estimate-depth (`ldm3d make-tiny-depth-model DIR --kind dpt` offline)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="outputs", metavar="DIR", help="output folder")
    o.add_argument("--stem", help="file name stem (default: from the prompt and seed)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


class _Fmt(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _params(args, estimate_depth=None) -> GenerateParams:
    """The request from the flags; ``estimate_depth(rgb) -> uint16 depth`` replaces the local DPT (a server's)."""
    init_rgb = codec.read_rgb(args.init_rgb, "--init-rgb") if args.init_rgb else None
    init_depth = codec.read_depth(args.init_depth, "--init-depth") if args.init_depth else None
    if args.estimate_depth:
        if init_rgb is None or init_depth is not None:
            raise InvalidArgument("--estimate-depth needs --init-rgb and replaces --init-depth: give one of them",
                                  field="init_depth")
        if estimate_depth is not None:
            init_depth = estimate_depth(init_rgb)
        else:
            from ..evaluation.depth_models import estimate_relative_depth, load_depth_model

            init_depth = estimate_relative_depth(load_depth_model(args.depth_model, field="depth_model"), init_rgb)
    if init_rgb is not None and args.height is None and args.width is None:
        args.height, args.width = init_rgb.shape[:2]
    return GenerateParams(
        prompt=args.prompt, negative_prompt=args.negative_prompt, height=args.height, width=args.width,
        steps=args.steps, guidance_scale=args.guidance, seed=args.seed, scheduler=args.scheduler,
        num_images=args.num_images, init_rgb=init_rgb, init_depth=init_depth, strength=args.strength,
        seamless=args.seamless,
    )


def _pipeline(args):
    from ..pipeline import LDM3DPipeline

    chosen = [f for f in ("model", "repository", "server") if getattr(args, f)]
    if len(chosen) != 1:
        raise InvalidArgument("give exactly one of --model DIR_OR_ID, --repository DIR or --server HOST:PORT"
                              + (f" (got {', '.join('--' + c for c in chosen)})" if chosen else ""), field="model")
    if args.model:
        if args.runtime not in (None, "torch"):
            raise InvalidArgument(f"--runtime {args.runtime} reads a model repository: export the checkpoint with "
                                  "`ldm3d export --model ... --repository R` and pass --repository R", field="runtime")
        return LDM3DPipeline.from_checkpoint(args.model)
    if args.runtime == "torch":
        raise InvalidArgument("--runtime torch runs a checkpoint folder: pass --model DIR instead of --repository",
                              field="runtime")
    if (args.runtime == "triton") != bool(args.triton_url):
        raise InvalidArgument("--runtime triton needs --triton-url HOST:PORT (and --triton-url needs --runtime triton)",
                              field="triton_url")
    return LDM3DPipeline.from_repository(args.repository, runtime=args.runtime or "embedded",
                                         triton_url=args.triton_url, version=args.version)


def default_stem(prompt: str, seed: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:48].rstrip("-") or "ldm3d"
    return f"{slug}_s{seed}"


# GenerateParams field (what the library's and the servers' errors name) → this command's flag
FLAGS = {
    "prompt": "--prompt", "negative_prompt": "--negative-prompt", "height": "--height", "width": "--width",
    "steps": "--steps", "guidance_scale": "--guidance", "seed": "--seed", "scheduler": "--scheduler",
    "num_images": "--num-images", "strength": "--strength", "init_rgb": "--init-rgb", "init_depth": "--init-depth",
    "model": "--model", "runtime": "--runtime", "triton_url": "--triton-url", "depth_model": "--depth-model",
    "seamless": "--seamless/--no-seamless",
}


def run(args) -> int:
    try:
        return _run(args)
    except LDM3DError as err:
        raise renamed(err, FLAGS) from None


def _run(args) -> int:
    params = _params(args)
    bar = None

    def on_step(step: int, total: int, _elapsed: float) -> None:
        nonlocal bar
        if args.no_progress:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, desc="denoising", unit="step", file=sys.stderr, leave=False)
        bar.update(step - bar.n)

    if args.server and args.seamless is not None:
        raise InvalidArgument("--seamless/--no-seamless are not sent over gRPC: the platform pads as its repository "
                              "was exported (`ldm3d export --seamless`), or, serving a checkpoint, wraps 2:1 sizes; "
                              "drop the flag", field="seamless")
    try:
        if args.server:
            from ..client import generate as remote_generate

            result = remote_generate(args.server, params, on_step=on_step,
                                     version="" if args.version is None else str(args.version))
        else:
            result = _pipeline(args)(params, on_step=on_step)
    finally:
        if bar is not None:
            bar.close()
    if args.estimate_depth and result.metadata.get("image_to_image"):
        result.metadata["image_to_image"]["init_depth"] = f"estimated by {args.depth_model}"
    for path in write_outputs(result, Path(args.out), args.stem):
        print(path)
    return 0


def write_outputs(result, out: Path, stem: str | None = None) -> list[Path]:
    """Write each image's four files (atomically); return their paths in order."""
    p = result.params
    stem = stem or default_stem(p.prompt, p.seed)
    paths = []
    for i, (rgb, depth) in enumerate(zip(result.rgb, result.depth)):
        s = stem if len(result.rgb) == 1 else f"{stem}_{i}"
        meta = {**result.metadata, "image_index": i, "files": {
            "rgb": f"{s}_rgb.png", "depth": f"{s}_depth.png", "depth_preview": f"{s}_depth_preview.png"}}
        paths.append(codec.write_png(out / f"{s}_rgb.png", rgb))
        paths.append(codec.write_png(out / f"{s}_depth.png", depth))
        paths.append(codec.write_png(out / f"{s}_depth_preview.png", codec.depth_preview(depth)))
        paths.append(codec.write_bytes_atomic(out / f"{s}.json", (json.dumps(meta, indent=2) + "\n").encode()))
    return paths
