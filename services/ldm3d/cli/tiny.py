"""``ldm3d make-tiny-model DIR``: a random-weight LDM3D checkpoint in the exact diffusers layout (offline).

    ldm3d make-tiny-model demo/tiny                       # 6-channel VAE (Intel/ldm3d layout)
    ldm3d make-tiny-model demo/tiny4 --depth-channels 1   # 4-channel VAE (Intel/ldm3d-4c / -pano layout)
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("make-tiny-model", help="write a small random-weight LDM3D checkpoint (tests, demo)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", metavar="DIR", help="output folder (created)")
    p.add_argument("--depth-channels", type=int, choices=(3, 1), default=3,
                   help="3: 6-channel VAE (Intel/ldm3d); 1: 4-channel VAE (Intel/ldm3d-4c, -pano) (default: 3)")
    p.add_argument("--preset", choices=("tiny", "sd14"), default="tiny",
                   help="tiny (~9 MB) or sd14: full SD v1.4 sizes, random weights, ~2 GB (benchmarks)")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default: 0)")
    p.add_argument("--fp32", action="store_true", help="store weights in fp32 (default: fp16, like published ones)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..models.tiny import make_tiny_model

    out = make_tiny_model(args.dir, depth_channels=args.depth_channels, preset=args.preset, seed=args.seed,
                          fp16=not args.fp32)
    print(out)
    return 0
