"""``ldm3d evaluate``: the paper's rows (FID, IS, CLIP, AbsRel, RMSE; rFID) for a model on a caption set.

    ldm3d evaluate --model Intel/ldm3d --captions coco_val_captions.txt --limit 1000 \\
        --reference-images coco/val2017 --out eval/report.json --markdown
    ldm3d evaluate --model demo/tiny --captions captions.txt --limit 4 --height 64 --width 64 --steps 2 \\
        --clip-model demo/tiny-clip --reference-depth-model demo/tiny-zoe --out demo/eval/report.json

Samples go to <report stem>.samples/ beside the report; running the same command again resumes (samples already
generated and scored are skipped). A metric that cannot be computed is null in the report, with the reason.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..evaluation.depth_metrics import DEFAULT_SAMPLES, DEFAULT_SEED
from ..models import hub
from ..pipeline.schedulers import SCHEDULERS

# Kept in step with ldm3d.evaluation.evaluate / image_metrics, which import torch: `ldm3d --help` stays fast.
_METRICS = "fid,is,clip,depth,rfid"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="generate from a caption set and score it like the LDM3D paper (FID, IS, CLIP, AbsRel, RMSE, rFID)",
        description=__doc__,
        formatter_class=_Fmt,
    )
    src = p.add_argument_group("model (one of)")
    src.add_argument("--model", metavar="DIR_OR_ID", help="diffusers LDM3D checkpoint folder or hub id (torch)")
    src.add_argument("--repository", metavar="DIR", help="Triton model repository (embedded ONNX Runtime)")
    src.add_argument("--version", type=int, metavar="N",
                     help="with --repository: the release to evaluate (default: the current one); `ldm3d models "
                          "promote --require-eval` compares the reports of two releases")
    d = p.add_argument_group("data")
    d.add_argument("--captions", required=True, type=Path, metavar="FILE",
                   help="one caption per line, or a COCO captions JSON (annotations[].caption)")  # fmt: skip
    d.add_argument("--limit", type=int, metavar="N", help="only the first N captions (default: all)")
    d.add_argument("--reference-images", type=Path, metavar="DIR",
                   help="real photos for FID and rFID (e.g. COCO val images); without it both are null")  # fmt: skip
    g = p.add_argument_group("generation (defaults: the paper's)")
    g.add_argument("--height", type=int, default=512, help="pixels")
    g.add_argument("--width", type=int, default=512, help="pixels")
    g.add_argument("--steps", type=int, default=50, help="denoising steps")
    g.add_argument("--scheduler", choices=list(SCHEDULERS), default="ddim", help="sampler")
    g.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale")
    g.add_argument("--seed", type=int, default=0, help="caption i uses seed + i")
    s = p.add_argument_group("scoring")
    s.add_argument("--metrics", default=_METRICS, help="comma-separated subset to compute ('depth' = AbsRel and RMSE)")
    s.add_argument("--clip-model", default="openai/clip-vit-large-patch14", metavar="DIR_OR_ID",
                   help="CLIP for the similarity score (offline trial: `ldm3d make-tiny-clip DIR`)")  # fmt: skip
    s.add_argument("--reference-depth-model", default=hub.ZOEDEPTH, metavar="DIR_OR_ID",
                   help="ZoeDepth-N, the metric depth reference of §4.3")  # fmt: skip
    s.add_argument("--depth-samples", type=int, default=DEFAULT_SAMPLES, help="pixels for each depth alignment fit")
    s.add_argument("--depth-seed", type=int, default=DEFAULT_SEED, help="seed of the pixel sample")
    s.add_argument("--rfid-depth-model", default=hub.DPT, metavar="DIR_OR_ID",
                   help="DPT giving the reference photos their depth for the autoencoder's rFID")  # fmt: skip
    s.add_argument("--is-splits", type=int, default=10, help="Inception Score splits (fewer when under 2 images each)")
    s.add_argument("--image-features", choices=("inception", "tiny-random"), default="inception",
                   help="FID/IS/rFID feature network: the standard InceptionV3 (needs torch-fidelity + torchvision), "
                        "or a seeded tiny random conv net to try the pipeline offline (numbers labelled "
                        "'not comparable to published numbers' in the report)")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, type=Path, metavar="REPORT.json", help="the report (JSON)")
    o.add_argument("--markdown", action="store_true", help="print the rows as a table beside the paper's row")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)

    t = subparsers.add_parser("make-tiny-clip", help="write a tiny random-weight CLIP (hub layout) for tests and demos")
    t.add_argument("directory", type=Path)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_make_tiny_clip)


class _Fmt(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def run(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import EvaluateConfig, report_markdown, run_evaluation

    config = EvaluateConfig(
        captions=args.captions, out=args.out, model=args.model, repository=args.repository, version=args.version,
        limit=args.limit,
        height=args.height, width=args.width, steps=args.steps, scheduler=args.scheduler,
        guidance_scale=args.guidance, seed=args.seed,
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()),
        clip_model=args.clip_model, reference_depth_model=args.reference_depth_model,
        depth_samples=args.depth_samples, depth_seed=args.depth_seed, reference_images=args.reference_images,
        rfid_depth_model=args.rfid_depth_model, is_splits=args.is_splits, progress=not args.no_progress,
    )  # fmt: skip
    features = None
    if args.image_features == "tiny-random":
        from ..evaluation.image_metrics import tiny_feature_extractor

        features = tiny_feature_extractor()
    report = run_evaluation(config, fid_features=features, is_features=features)
    if args.markdown:
        print(report_markdown(report), end="")
    else:
        rows = ", ".join(f"{k} {'null' if v is None else f'{v:.4g}'}" for k, v in report["rows"].items())
        print(f"wrote {args.out} ({report['samples']['count']} samples, {report['samples']['generated']} generated "
              f"now): {rows}")  # fmt: skip
    return 0


def _make_tiny_clip(args: argparse.Namespace) -> int:
    from ..evaluation.image_metrics import make_tiny_clip

    print(f"wrote a tiny random-weight CLIP to {make_tiny_clip(args.directory, seed=args.seed)}")
    return 0
