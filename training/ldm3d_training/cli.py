"""``ldm3d-train``: prepare data, fine-tune the autoencoder or the U-Net, publish a run as a new release.

    ldm3d-train prepare --input DATA --out PREP --resolution N [--depth-model DIR_OR_ID] [--val-fraction 0.1]
    ldm3d-train autoencoder --model CKPT --data PREP --out RUN [--steps N] [--batch-size B] [--lr LR] [--seed S]
                            [--device cpu|cuda|hpu] [--resume] [--config FILE]
    ldm3d-train unet --model CKPT --data PREP --out RUN [--vae RUN_OR_CKPT] [same flags as autoencoder]
    ldm3d-train publish RUN --repository R [--promote]
    torchrun --nproc_per_node N -m ldm3d_training unet ...        # distributed, any stage

Errors a user can fix print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from ldm3d.cli import run_command

from .config import STAGES

log = logging.getLogger("ldm3d_training")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ldm3d-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    pr = sub.add_parser("prepare", help="images + captions (+ depth) → WebDataset shards + manifest.json",
                        description=_doc("prepare"), formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("--input", required=True, metavar="DATA",
                    help="a JSONL file, a folder of images with .txt captions, or a folder of img2dataset .tar shards")
    pr.add_argument("--out", required=True, metavar="PREP", help="output folder (resumes a partial run there)")
    pr.add_argument("--resolution", required=True, type=int, metavar="N", help="square side in pixels, e.g. 512")
    pr.add_argument("--depth-model", default="Intel/dpt-large", metavar="DIR_OR_ID",
                    help="DPT checkpoint for samples without depth (default: %(default)s; offline: a local folder)")
    pr.add_argument("--val-fraction", type=float, default=0.1, help="share of samples in the val split (default 0.1)")
    pr.add_argument("--shard-size", type=int, default=1000, help="input items per shard (default 1000)")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    pr.set_defaults(func=_prepare)

    for name, cls in STAGES.items():
        s = sub.add_parser(name, help=(cls.__doc__ or "").strip().splitlines()[0], description=_doc(name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        cls.add_arguments(s)
        s.set_defaults(func=_train, stage=name)

    pu = sub.add_parser("publish", help="export a run's trained models into a repository as a new release",
                        description=_doc("publish"), formatter_class=argparse.RawDescriptionHelpFormatter)
    pu.add_argument("run", metavar="RUN", help="a finished run folder (its final/ holds the weights)")
    pu.add_argument("--repository", required=True, metavar="R", help="the model repository to publish into")
    pu.add_argument("--promote", action="store_true", help="make the new release the one served by default")
    pu.add_argument("--fp16", action="store_true", help="export the changed graphs in fp16 (GPU serving)")
    pu.set_defaults(func=_publish)
    return p


def _doc(module: str) -> str:
    import importlib

    return importlib.import_module(f".{module}", __package__).__doc__ or ""


def _prepare(args) -> int:
    from .prepare import prepare

    m = prepare(args.input, args.out, args.resolution, depth_model=args.depth_model, val_fraction=args.val_fraction,
                shard_size=args.shard_size, progress=not args.no_progress)
    c = m["counts"]
    print(f"prepared {c['train']} train + {c['val']} val samples from {c['input']} input(s) into {args.out} "
          f"({len(m['shards'])} shard(s); depth: {m['depth']['provided']} provided, {m['depth']['estimated']} "
          f"estimated); skipped {c['skipped']}")
    for s in m["skipped"][:20]:
        print(f"  skipped {s['source']}: {s['reason']}")
    if len(m["skipped"]) > 20:
        print(f"  ... and {len(m['skipped']) - 20} more (see {args.out}/manifest.json)")
    return 0


def _train(args) -> int:
    from . import distributed
    from .trainer import Trainer, check_run_folder

    cfg = STAGES[args.stage].from_sources(args)
    check_run_folder(cfg, args.resume)  # fail fast, before loading models
    dist = distributed.setup(cfg.device)
    _seed_everything(cfg.seed)
    try:
        if args.stage == "autoencoder":
            from .autoencoder import AutoencoderStage as Stage
        else:
            from .unet import UNetStage as Stage
        result = Trainer(cfg, Stage(cfg, dist), dist, resume=args.resume).fit()
        if dist.is_main:
            m = result["metrics"]
            print(f"{args.stage}: step {result['step']}, loss {m.get('loss', float('nan')):.5f}, "
                  f"{m.get('samples_per_s', 0):.2f} samples/s; weights in {cfg.out}/final/")
    finally:
        dist.close()
    return 0


def _seed_everything(seed: int) -> None:
    """Same seed on every rank: module construction (e.g. the discriminator) must be identical everywhere and in
    every process of a resumed run; per-step draws use their own generators (trainer.step_generator)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _publish(args) -> int:
    from .publish import publish

    release = publish(args.run, args.repository, promote=args.promote, fp16=args.fp16)
    models = ", ".join(f"{m} {v}" for m, v in sorted(release["models"].items()))
    print(f"release {release['number']}: {models}; exported {', '.join(release['exported']) or 'nothing'}"
          f"{'; promoted (now served by default)' if args.promote else '; not promoted'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    level = logging.WARNING - 10 * min(args.verbose + 1, 2) if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format=f"%(levelname)s [rank {rank}] %(name)s: %(message)s")
    for noisy in ("diffusers", "transformers", "torch.distributed", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)")
    _quiet_libraries()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command("ldm3d-train", args, interrupted="interrupted (resume with --resume)")


def _quiet_libraries() -> None:
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
    except ImportError:
        pass


if __name__ == "__main__":
    sys.exit(main())
