"""Training throughput: samples/s of both `ldm3d-train` stages, and the scaling of 2 torchrun processes vs 1.

    .venv/bin/python bench/train.py                                   # tiny model, 64², both stages, 1 vs 2 procs
    .venv/bin/python bench/train.py --preset sd14 --resolution 256    # SD v1.4-size configs (minutes on 2 cores)
    .venv/bin/python bench/train.py --preset sd14 --resolution 512 --device cuda --precision bf16 --stages unet
    .venv/bin/python bench/train.py --json bench/out/train.json

Every number comes from the real command (`python -m ldm3d_training <stage>`, or `torchrun --nproc_per_node 2 -m
ldm3d_training <stage>`), on a random-weight checkpoint (`ldm3d.models.tiny`, preset tiny or sd14) and a prepared
synthetic data set, both written to ``--workdir`` (never the repository: sd14 is ~2 GB). samples/s is the global
batch over a step's wall time, the median over the steps after the first (which pays for oneDNN's warm-up), read
from the run's metrics.jsonl. One process runs with OMP_NUM_THREADS = cores and = 1 (the faster is the reference:
under other jobs' load, OpenMP barriers over more threads than free cores can be several times slower), each of
the 2 processes with cores / 2, so the ratio shows what data parallelism gains or loses on the same CPUs. The CPU flags are recorded with the results: bf16 is
emulated (slow) on CPUs without avx512_bf16/amx_bf16.

The SD-size U-Net needs ~14 GB for its fp32 weights, gradients and Adam state alone: it is skipped (and said so)
when the machine has less than ``--min-free-gb`` available.
"""

from __future__ import annotations

import _stdlib_first  # noqa: F401,I001  (first: bench/queue.py must not shadow the standard library)
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2")))


def mem_available_gb() -> float:
    try:
        for ln in Path("/proc/meminfo").read_text().splitlines():
            if ln.startswith("MemAvailable"):
                return int(ln.split()[1]) / 1024**2
    except OSError:
        pass
    return float("inf")


def make_inputs(workdir: Path, preset: str, resolution: int, samples: int) -> tuple[Path, Path]:
    from PIL import Image

    from ldm3d.models.tiny import make_tiny_model
    from ldm3d_training.prepare import prepare

    ckpt = workdir / f"model-{preset}"
    if not (ckpt / "model_index.json").is_file():
        print(f"writing a random-weight {preset} checkpoint to {ckpt} ...", flush=True)
        make_tiny_model(ckpt, preset=preset)
    prep = workdir / f"prep-{resolution}-{samples}"
    if not (prep / "manifest.json").is_file():
        raw = workdir / f"raw-{resolution}-{samples}"
        raw.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        rows = []
        for i in range(samples):
            Image.fromarray((rng.random((resolution, resolution, 3)) * 255).astype(np.uint8)).save(raw / f"{i}.png")
            Image.fromarray((rng.random((resolution, resolution)) * 65535).astype(np.uint16)).save(raw / f"{i}_d.png")
            rows.append({"caption": f"a benchmark scene {i}", "image": f"{i}.png", "depth": f"{i}_d.png"})
        (raw / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        prepare(raw / "data.jsonl", prep, resolution, val_fraction=0.0, progress=False)
    return ckpt, prep


def run_stage(stage: str, ckpt: Path, prep: Path, out: Path, args, procs: int, threads: int) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "services"), str(ROOT / "training"), env.get("PYTHONPATH", "")])
    launcher = [sys.executable, "-m", "ldm3d_training"] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), "-m",
        "ldm3d_training"]
    cmd = [*launcher, stage, "--model", str(ckpt), "--data", str(prep), "--out", str(out), "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--device", args.device, "--precision", args.precision,
           "--no-progress", "--validate-every", "-1", "--checkpoint-every", "100000", "--lr", "1e-5"]
    if stage == "autoencoder":
        cmd += ["--lpips-random", "--disc-start", "0"]  # the full loss: LPIPS (same FLOPs as real VGG) + GAN
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in rows[1:]] or [rows[0]["samples_per_s"]]
    return {"samples_per_s": statistics.median(rates), "steps": len(rows), "wall_s": wall, "threads": threads,
            "global_batch": args.batch_size * procs, "loss_last": rows[-1]["loss"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("tiny", "sd14"), default="tiny")
    p.add_argument("--resolution", type=int, default=None, help="pixels (default: 64 tiny, 256 sd14)")
    p.add_argument("--stages", default="autoencoder,unet")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default: 6 tiny, 3 sd14)")
    p.add_argument("--batch-size", type=int, default=None, help="per process (default: 4 tiny, 1 sd14)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "hpu"))
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--no-scaling", action="store_true", help="skip the 2-process torchrun runs")
    p.add_argument("--min-free-gb", type=float, default=20.0, help="skip the SD-size U-Net below this MemAvailable")
    p.add_argument("--workdir", default="/tmp/ldm3d-bench-train")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    sd = args.preset == "sd14"
    args.resolution = args.resolution or (256 if sd else 64)
    args.steps = args.steps or (3 if sd else 6)
    args.batch_size = args.batch_size or (1 if sd else 4)
    sys.path[:0] = [str(ROOT / "services"), str(ROOT / "training")]
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    ckpt, prep = make_inputs(work, args.preset, args.resolution, samples=max(8, 2 * args.batch_size + 2))
    results = {"preset": args.preset, "resolution": args.resolution, "device": args.device,
               "precision": args.precision, "batch_size_per_process": args.batch_size, "steps": args.steps,
               "cpu": platform.processor() or platform.machine(), "cpu_flags": cpu_flags(),
               "cores": os.cpu_count(), "load_before": os.getloadavg()[0], "stages": {}}
    print(f"preset {args.preset}, {args.resolution}², batch {args.batch_size}/process, {args.steps} steps, "
          f"{args.device} {args.precision}; load {results['load_before']:.1f}; flags {' '.join(cpu_flags())}")
    for stage in [s.strip() for s in args.stages.split(",") if s.strip()]:
        if sd and stage == "unet" and args.device == "cpu" and mem_available_gb() < args.min_free_gb:
            results["stages"][stage] = {"skipped": f"{mem_available_gb():.1f} GB available < --min-free-gb "
                                                  f"{args.min_free_gb:g} (fp32 weights + grads + Adam ≈ 14 GB)"}
            print(f"{stage:<12} skipped: {results['stages'][stage]['skipped']}")
            continue
        # One process with every core's threads, and with one thread: on a shared, loaded machine OpenMP's
        # barriers with more threads than free cores can be several times slower than one thread.
        cores = os.cpu_count() or 1
        runs = {t: run_stage(stage, ckpt, prep, work / f"run-{args.preset}-{stage}-1-{t}", args, 1, t)
                for t in sorted({cores, 1}, reverse=True)}
        ok = {t: r for t, r in runs.items() if "error" not in r}
        best = max(ok, key=lambda t: ok[t]["samples_per_s"]) if ok else None
        one = ok[best] if ok else next(iter(runs.values()))
        entry = {"1_process": one, "1_process_by_threads": runs}
        line = f"{stage:<12} 1 process: " + (
            "  ".join(f"{r['samples_per_s']:.2f} samples/s ({t} thr)" for t, r in ok.items()) if ok
            else f"failed: {one['error']}")
        if not args.no_scaling and ok:
            two = run_stage(stage, ckpt, prep, work / f"run-{args.preset}-{stage}-2", args, 2, max(1, cores // 2))
            entry["2_processes"] = two
            if "error" not in two:
                entry["scaling_2_vs_1"] = two["samples_per_s"] / one["samples_per_s"]
                line += (f"   torchrun 2 processes: {two['samples_per_s']:.2f} samples/s   "
                         f"ratio {entry['scaling_2_vs_1']:.2f}x")
            else:
                line += f"   torchrun 2 processes failed: {two['error']}"
        results["stages"][stage] = entry
        print(line, flush=True)
    results["load_after"] = os.getloadavg()[0]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
