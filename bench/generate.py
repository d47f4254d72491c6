"""Our text → RGBD pipeline vs diffusers' StableDiffusionLDM3DPipeline: same weights, same process, same seeds.

    .venv/bin/python bench/generate.py                       # full SD v1.4 configs, random weights, 256², 2 steps
    .venv/bin/python bench/generate.py --preset tiny --size 64 --steps 25

Both pipelines get the very same torch modules (built from configs, never written to disk), run alternately
(A B A B …) so that drift of this shared machine hits both, and the medians are compared. Ratios > 1 mean ours is
faster. "warm" runs repeat the prompt, so our text-embedding cache skips the CLIP encoder — reported separately
from "cold" runs (a new prompt every time), which compare the same work.
"""

from __future__ import annotations

import _stdlib_first  # noqa: F401,I001  (first: bench/queue.py must not shadow the standard library)
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=("sd14", "tiny"), default="sd14")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scheduler", default="ddim")
    ap.add_argument("--out", default="bench/out/generate.json")
    args = ap.parse_args()

    from diffusers import StableDiffusionLDM3DPipeline
    from diffusers.utils import logging as dlog

    from ldm3d.models.tiny import SCHEDULER_CONFIG, build_components
    from ldm3d.models.tokenizer import load_clip_tokenizer, write_clip_tokenizer
    from ldm3d.pipeline import GenerateParams, LDM3DPipeline, PipelineSpec
    from ldm3d.pipeline.schedulers import create_scheduler
    from ldm3d.runtime.torch_runtime import TorchRuntime

    dlog.set_verbosity_error()
    t = time.perf_counter()
    comps = build_components(args.preset, depth_channels=3)
    print(f"built {args.preset} modules from configs in {time.perf_counter() - t:.1f} s "
          f"(U-Net {sum(p.numel() for p in comps['unet'].parameters()) / 1e6:.1f} M params); torch threads: "
          f"{torch.get_num_threads()}")
    tok_dir = write_clip_tokenizer(Path(tempfile.mkdtemp()) / "tokenizer")
    unet, vae, te = comps["unet"], comps["vae"], comps["text_encoder"]
    spec = PipelineSpec(
        source=f"random:{args.preset}", tokenizer_dir=tok_dir, scheduler_config=SCHEDULER_CONFIG,
        vae_scaling_factor=vae.config.scaling_factor, vae_scale_factor=2 ** (len(vae.config.block_out_channels) - 1),
        latent_channels=unet.config.in_channels, rgbd_channels=vae.config.out_channels,
        sample_size=unet.config.sample_size, max_text_length=77, text_hidden_size=te.config.hidden_size)
    ours = LDM3DPipeline(TorchRuntime({"unet": unet, "vae": vae, "text_encoder": te}), spec)
    ref = StableDiffusionLDM3DPipeline(vae=vae, text_encoder=te, tokenizer=load_clip_tokenizer(tok_dir), unet=unet,
                                       scheduler=create_scheduler(args.scheduler, SCHEDULER_CONFIG),
                                       safety_checker=None, feature_extractor=None, image_encoder=None,
                                       requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)

    def run_ours(prompt):
        stamps = []
        t0 = time.perf_counter()
        res = ours(GenerateParams(prompt=prompt, height=args.size, width=args.size, steps=args.steps, seed=0,
                                  scheduler=args.scheduler), on_step=lambda *_: stamps.append(time.perf_counter()))
        return time.perf_counter() - t0, _per_step(t0, stamps, res.metadata["timings_s"]["encode_s"]), res.rgb_float

    def run_ref(prompt):
        stamps = []
        t0 = time.perf_counter()

        def cb(pipe, i, t, kw):
            stamps.append(time.perf_counter())
            return kw

        out = ref(prompt, height=args.size, width=args.size, num_inference_steps=args.steps, guidance_scale=5.0,
                  generator=torch.Generator("cpu").manual_seed(0), output_type="np", callback_on_step_end=cb)
        return time.perf_counter() - t0, _per_step(t0, stamps, None), out.rgb

    results = {"ours_cold": [], "ref_cold": [], "ours_warm": [], "ref_warm": [], "step_ours": [], "step_ref": []}
    run_ours("warm-up"), run_ref("warm-up")
    for i in range(args.repeats):
        for name, fn in (("ours", run_ours), ("ref", run_ref)):
            e2e, step, rgb = fn(f"a cold prompt number {i}")
            results[f"{name}_cold"].append(e2e)
            results[f"step_{name}"].append(step)
        for name, fn in (("ours", run_ours), ("ref", run_ref)):
            results[f"{name}_warm"].append(fn("the same warm prompt")[0])
    diff = float(np.abs(run_ours("check")[2] - run_ref("check")[2]).max())

    med = {k: statistics.median(v) for k, v in results.items()}
    report = {
        "preset": args.preset, "size": args.size, "steps": args.steps, "scheduler": args.scheduler,
        "repeats": args.repeats, "medians_s": med,
        "ratio_end_to_end_cold": med["ref_cold"] / med["ours_cold"],
        "ratio_end_to_end_warm": med["ref_warm"] / med["ours_warm"],
        "ratio_per_step": med["step_ref"] / med["step_ours"],
        "max_abs_rgb_difference": diff,
    }
    print(f"\n{args.preset} {args.size}x{args.size}, {args.steps} {args.scheduler} steps, CFG batch 2, "
          f"median of {args.repeats} (alternating)")
    print(f"  per step     ours {med['step_ours'] * 1e3:9.1f} ms   diffusers {med['step_ref'] * 1e3:9.1f} ms   "
          f"ratio {report['ratio_per_step']:.3f}")
    print(f"  end to end   ours {med['ours_cold']:9.3f} s    diffusers {med['ref_cold']:9.3f} s    "
          f"ratio {report['ratio_end_to_end_cold']:.3f}   (new prompt each run)")
    print(f"  end to end   ours {med['ours_warm']:9.3f} s    diffusers {med['ref_warm']:9.3f} s    "
          f"ratio {report['ratio_end_to_end_warm']:.3f}   (repeated prompt: our embedding cache)")
    print(f"  max |RGB ours - diffusers| = {diff:.2e}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


def _per_step(t0, stamps, encode_s):
    """Mean time per denoising step from the step-end timestamps (the first step's start is unknown, so use gaps)."""
    if len(stamps) >= 2:
        return (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return stamps[0] - t0 - (encode_s or 0.0)


if __name__ == "__main__":
    main()
