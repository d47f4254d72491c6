"""Depth commands: estimate depth for images, score a depth map against a metric reference, write tiny models.

    ldm3d make-tiny-depth-model demo/tiny-dpt --kind dpt
    ldm3d depth --model Intel/dpt-large out/*.png --out depth/           # <stem>_depth.png, 16-bit, larger = nearer
    ldm3d depth --model Intel/zoedepth-nyu out/*.png --out reference/    # <stem>_depth.npy, float32 metres
    ldm3d export-depth --model Intel/dpt-large --repository model_repository        # → depth_estimator/<N>/
    ldm3d depth --repository model_repository out/*.png --out depth/    # the same through ONNX Runtime
    ldm3d depth --repository model_repository --repository-model depth_reference out/*.png --out reference/
    ldm3d depth-metrics --pred out/cabin_depth.png --reference reference/cabin_depth.npy --json
    ldm3d depth-metrics --pred out/cabin_depth.png --rgb out/cabin_rgb.png        # reference from ZoeDepth-N

The protocol is the LDM3D paper's §4.3 (docs/evaluation.md): least-squares scale and shift in disparity space on a
seeded random sample of valid pixels, then AbsRel and RMSE in metres.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from ..codec import read_depth, read_rgb, write_bytes_atomic, write_png
from ..errors import InvalidArgument, NotFound, invalid
from ..evaluation.depth_metrics import DEFAULT_SAMPLES, DEFAULT_SEED, depth_metrics
from ..models import hub

PAPER_REFERENCE_MODEL = hub.ZOEDEPTH


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "depth",
        help="estimate depth for images (DPT: LDM3D's 16-bit relative depth; ZoeDepth: metric reference in metres)",
        description="DPT checkpoints write <stem>_depth.png (16-bit, 384×384 inference resized back bicubically, "
        "normalised per image to 0..65535, larger = nearer: the LDM3D training convention). ZoeDepth checkpoints "
        "write <stem>_depth.npy (float32 metres, the reference of `ldm3d depth-metrics`).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="DPT or ZoeDepth folder in the hub layout, or a hub id (Intel/dpt-large)")
    src.add_argument(
        "--repository", metavar="DIR",
        help="instead of --model: a model repository holding versions written by `ldm3d export-depth`",
    )  # fmt: skip
    p.add_argument(
        "--repository-model", choices=("depth_estimator", "depth_reference"), default="depth_estimator",
        help="with --repository: depth_estimator (DPT, 16-bit PNG) or depth_reference (ZoeDepth, metres)",
    )  # fmt: skip
    p.add_argument(
        "--runtime", choices=("embedded", "triton"), default="embedded",
        help="with --repository: ONNX Runtime in-process (default) or a Triton server serving that repository",
    )  # fmt: skip
    p.add_argument("--triton-url", default=None, metavar="HOST:PORT", help="with --runtime triton")
    p.add_argument("--version", type=int, default=None, help="with --repository: model version (default: current)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="RGB images (any format Pillow reads)")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument(
        "--no-flip-aug", dest="flip_aug", action="store_false",
        help="ZoeDepth only: skip averaging with the mirrored image's prediction (half the compute)",
    )  # fmt: skip
    p.set_defaults(func=_depth)

    m = subparsers.add_parser(
        "depth-metrics",
        help="AbsRel and RMSE of a disparity-like 16-bit depth PNG against a metric reference (paper §4.3)",
        description="Aligns PRED (16-bit PNG, larger = nearer) to the reference's disparity (1/depth) with a "
        "least-squares scale and shift fitted on a seeded random sample of pixels valid in both maps, converts "
        "back to depth and reports AbsRel and RMSE [reference unit, metres] over all valid pixels.",
    )
    m.add_argument("--pred", required=True, type=Path, help="predicted depth: 16-bit grayscale PNG, disparity-like")
    ref = m.add_mutually_exclusive_group(required=True)
    ref.add_argument(
        "--reference", type=Path,
        help="reference depth: .npy in metres (NaN, 0 or negative = invalid) or a 16-bit PNG (0 = invalid) "
        "with --reference-scale",
    )  # fmt: skip
    ref.add_argument(
        "--rgb", type=Path,
        help="instead of --reference: the RGB image PRED belongs to; --reference-model estimates the reference",
    )  # fmt: skip
    m.add_argument(
        "--reference-model", default=PAPER_REFERENCE_MODEL,
        help=f"with --rgb: ZoeDepth folder or hub id (default {PAPER_REFERENCE_MODEL}, the paper's ZoeDepth-N)",
    )  # fmt: skip
    m.add_argument(
        "--no-flip-aug", dest="flip_aug", action="store_false",
        help="with --rgb: skip ZoeDepth's averaging with the mirrored image",
    )  # fmt: skip
    m.add_argument(
        "--reference-scale", type=float, default=None, metavar="M_PER_UNIT",
        help="metres per stored unit: required for a PNG reference (e.g. 0.001 for millimetres); default 1 for .npy",
    )  # fmt: skip
    m.add_argument(
        "--samples", type=int, default=DEFAULT_SAMPLES, help=f"pixels for the fit (default {DEFAULT_SAMPLES})"
    )
    m.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of the pixel sample (default {DEFAULT_SEED})")
    m.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    m.set_defaults(func=_depth_metrics)

    e = subparsers.add_parser(
        "export-depth",
        help="export a DPT or ZoeDepth checkpoint to ONNX into a Triton model repository "
        "(depth_estimator / depth_reference)",
        description="DPT checkpoints become depth_estimator/<N>/, ZoeDepth checkpoints depth_reference/<N>/, through "
        "the same staging, parity check against torch, manifest and atomic publish as `ldm3d export`; the "
        "checkpoint's config.json and preprocessor_config.json are stored with the version.",
    )
    e.add_argument("--model", required=True, help="DPT or ZoeDepth folder in the hub layout, or a hub id")
    e.add_argument("--repository", required=True, help="model repository folder (created if missing)")
    e.add_argument(
        "--version", type=int, default=None, help="version number (default: one above that model's highest)"
    )
    e.add_argument("--fp16", action="store_true", help="compute in float16 inside the graph (GPU serving)")
    e.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    e.add_argument(
        "--tolerance", type=float, default=None,
        help="max relative error against torch (default 1e-3 fp32, 3e-2 fp16); above it nothing is published",
    )  # fmt: skip
    e.set_defaults(func=_export_depth)

    t = subparsers.add_parser(
        "make-tiny-depth-model",
        help="write a tiny random-weight DPT or ZoeDepth checkpoint (hub layout) for tests and demos",
    )
    t.add_argument("directory", type=Path)
    t.add_argument("--kind", choices=("dpt", "zoedepth"), default="dpt")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_make_tiny)


# --------------------------------------------------------------------------------------------- ldm3d depth
def _depth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..evaluation import depth_models

    images = [Path(i) for i in args.images]
    missing = [str(i) for i in images if not i.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise NotFound(f"images: no such file {missing[0]!r}{more}", field="images")
    stems: dict[str, Path] = {}
    for image in images:
        if image.stem in stems:
            raise InvalidArgument(
                f"images {str(stems[image.stem])!r} and {str(image)!r} would both write {image.stem}_depth.*: "
                "rename one or run them into different --out folders",
                field="images",
            )
        stems[image.stem] = image

    _quiet_transformers()
    if args.repository is not None:
        if args.runtime == "triton" and not args.triton_url:
            raise InvalidArgument("--runtime triton needs --triton-url HOST:PORT", field="triton_url")
        model = depth_models.load_depth_model_from_repository(
            args.repository, args.repository_model, runtime=args.runtime, version=args.version,
            triton_url=args.triton_url,
        )  # fmt: skip
    else:
        for flag, value, default in (("--version", args.version, None), ("--runtime", args.runtime, "embedded"),
                                     ("--triton-url", args.triton_url, None),
                                     ("--repository-model", args.repository_model, "depth_estimator")):
            if value != default:
                field = flag[2:].replace("-", "_")
                raise InvalidArgument(f"{flag} applies to --repository, not to --model", field=field)
        model = depth_models.load_depth_model(args.model)
    suffix = ".png" if model.kind == "dpt" else ".npy"
    try:
        for image in tqdm(images, desc=f"depth ({model.kind})", unit="image", file=sys.stderr):
            rgb = read_rgb(image, field="images")
            target = args.out / f"{image.stem}_depth{suffix}"
            if model.kind == "dpt":
                write_png(target, depth_models.estimate_relative_depth(model, rgb))
            else:
                metres = depth_models.estimate_metric_depth(model, rgb, flip_aug=args.flip_aug)
                write_bytes_atomic(target, _npy_bytes(metres))
    finally:
        model.close()
    what = "16-bit relative depth PNG" if model.kind == "dpt" else "float32 metric depth .npy, metres"
    print(f"wrote {len(images)} depth map(s) ({what}) to {args.out}")
    return 0


# --------------------------------------------------------------------------------------------- ldm3d export-depth
def _export_depth(args: argparse.Namespace) -> int:
    from ..export import export_depth_checkpoint

    _quiet_transformers()
    r = export_depth_checkpoint(
        args.model, args.repository, version=args.version, fp16=args.fp16, opset=args.opset, tolerance=args.tolerance
    )
    print(f"{r.model:<15} version {r.version}  error {r.max_error:.2e}  {r.seconds:5.1f} s  {r.path}")
    return 0


# --------------------------------------------------------------------------------------------- ldm3d depth-metrics
def _depth_metrics(args: argparse.Namespace) -> int:
    pred = read_depth(args.pred, field="pred")
    if args.reference is not None:
        reference, scale = read_reference(args.reference, args.reference_scale)
        result = depth_metrics(pred, reference, samples=args.samples, seed=args.seed)
        report = {"pred": str(args.pred), "reference": str(args.reference), "reference_scale": scale}
    else:
        if args.reference_scale is not None:
            raise InvalidArgument(
                "--reference-scale applies to --reference files, not to --rgb", field="reference_scale"
            )
        from ..evaluation import depth_models

        rgb = read_rgb(args.rgb, field="rgb")
        _quiet_transformers()
        model = depth_models.load_depth_model(args.reference_model, kind="zoedepth", field="reference_model")
        result = depth_models.reference_depth_metrics(
            pred, rgb, model, samples=args.samples, seed=args.seed, flip_aug=args.flip_aug
        )
        report = {"pred": str(args.pred), "rgb": str(args.rgb), "reference_model": args.reference_model}
        report["flip_aug"] = args.flip_aug
    report.update(result.to_dict())
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'AbsRel':<18}{result.abs_rel:.4f}")
    print(f"{'RMSE [m]':<18}{result.rmse:.4f}")
    print(f"{'scale, shift':<18}{result.scale:.6g}, {result.shift:.6g}  (reference disparity ≈ scale·pred + shift)")
    print(f"{'valid pixels':<18}{result.valid_pixels} ({result.sampled_pixels} sampled, seed {result.seed})")
    if result.scale < 0:
        print(f"{'note':<18}negative scale: pred orders depth like distance (larger = farther), not like disparity")
    if result.nonpositive_pixels:
        print(f"{'excluded':<18}{result.nonpositive_pixels} pixels with aligned disparity <= 0")
    return 0


def read_reference(path: Path, scale: float | None) -> tuple[np.ndarray, float]:
    """A reference depth map in metres (float64 [H, W]) and the scale applied, from ``.npy`` or a 16-bit PNG."""
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise invalid("--reference-scale", scale, "a positive number of metres per stored unit, e.g. 0.001")
    if not path.is_file():
        raise NotFound(f"--reference: no such file {str(path)!r}", field="reference")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InvalidArgument(
                f"--reference {str(path)!r} is not a readable .npy array ({exc})", field="reference"
            ) from None
        if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise InvalidArgument(
                f"--reference {str(path)!r} holds {arr.dtype} {arr.shape}: expected a 2-D numeric [H, W] depth map",
                field="reference",
            )
        scale = 1.0 if scale is None else scale
        return arr.astype(np.float64) * scale, scale
    if suffix == ".png":
        if scale is None:
            raise InvalidArgument(
                "--reference is a PNG: give --reference-scale (metres per stored unit, e.g. 0.001 for millimetres); "
                "a relative depth PNG cannot be a metric reference",
                field="reference_scale",
            )
        return read_depth(path, field="reference").astype(np.float64) * scale, scale
    raise InvalidArgument(
        f"--reference {str(path)!r}: unknown format {suffix or '(none)'}: use .npy (metres) or a 16-bit .png",
        field="reference",
    )


# --------------------------------------------------------------------------------------------- tiny models
def _make_tiny(args: argparse.Namespace) -> int:
    from ..evaluation import depth_models

    _quiet_transformers()
    make = depth_models.make_tiny_dpt if args.kind == "dpt" else depth_models.make_tiny_zoedepth
    print(f"wrote a tiny random-weight {args.kind} checkpoint to {make(args.directory, seed=args.seed)}")
    return 0


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _quiet_transformers() -> None:
    # transformers' own load/save progress bars would interleave with ours on stderr
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
