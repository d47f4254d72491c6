"""Embedded ONNX Runtime vs torch eager on the same weights, in the same run: U-Net step latency and text → RGBD.

    .venv/bin/python bench/runtime.py                                 # tiny + SD v1.4 U-Net at 256² and 512², fp32
    .venv/bin/python bench/runtime.py --preset tiny                   # seconds
    .venv/bin/python bench/runtime.py --preset sd14 --sizes 256 --precision bf16
    .venv/bin/python bench/runtime.py --json bench/out/runtime.json

The SD v1.4 modules are built in memory with random weights (`ldm3d.models.tiny.build_components("sd14")`) and
exported into ``--workdir`` (default /tmp/ldm3d-bench, never the repository: the U-Net alone is 3.4 GB). Batch 2 is
one classifier-free-guidance step. Timings are medians of ``--repeats`` rounds in which the contenders alternate,
so a neighbour's load on this shared 2-core machine hits them alike. GFLOP/s uses the FLOPs torch counts for the
call (SD v1.4: 0.34 and 1.35 TFLOP counted at 256² and 512²; the issue's 0.36 and 1.61 count attention in full and
are printed as ``embedded_gflops_published``).

``--precision bf16`` adds the reduced-precision path: the same torch modules cast to bfloat16, run by oneDNN with
AVX-512 BF16 (ONNX Runtime's x86 CPU provider has no bf16 kernels for these ops), with its error against fp32 for
the U-Net output and, end to end, for the image.
"""

from __future__ import annotations

import _stdlib_first  # noqa: F401,I001  (first: bench/queue.py must not shadow the standard library)
import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ldm3d.models.tiny import SCHEDULER_CONFIG, build_components
from ldm3d.export import export_models
from ldm3d.repository import ModelRepository
from ldm3d.runtime.embedded import EmbeddedRuntime
from ldm3d.runtime.torch_runtime import TorchRuntime

PUBLISHED_TFLOP = {256: 0.36, 512: 1.61}  # SD v1.4 U-Net, batch 2, per step (issue / DESIGN.md §4)


def flops_of(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


CPU_SECONDS: dict[str, float] = {}  # contender → median process CPU seconds of its last alternate() call


def alternate(contenders: dict, repeats: int) -> dict[str, float]:
    """Median wall seconds per contender; warm-up calls, then rounds in which every contender runs once.

    The median CPU seconds (all threads) go to ``CPU_SECONDS``: on a machine shared with other jobs they show the
    work each contender did, which wall time alone hides.
    """
    for fn in contenders.values():  # warm up until two calls agree: oneDNN's bf16 path needs several calls
        last = None
        for _ in range(8):
            t0 = time.perf_counter()
            fn()
            took = time.perf_counter() - t0
            if last is not None and abs(took - last) <= 0.15 * last:
                break
            last = took
    times = {k: [] for k in contenders}
    cpu = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            time.sleep(0.2)  # let the previous contender's threads stop spinning (ONNX Runtime's spin-wait)
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    CPU_SECONDS.clear()
    CPU_SECONDS.update({k: statistics.median(v) for k, v in cpu.items()})
    return {k: statistics.median(v) for k, v in times.items()}


class Bf16Runtime(TorchRuntime):
    """The torch runtime with its modules in bfloat16: fp32 tensors in and out, bf16 inside (oneDNN AVX-512 BF16).

    Channels-last (NHWC) is oneDNN's native layout for bf16 convolutions: without it every convolution reorders its
    input and output from NCHW on each call.
    """

    kind = "torch-bf16"

    def __init__(self, modules):
        super().__init__({k: copy.deepcopy(v).to(torch.bfloat16).to(memory_format=torch.channels_last)
                          for k, v in modules.items()})

    # the torch runtime's four graphs, with bf16 inputs and fp32 outputs
    def _text_encoder(self, x):
        return {"last_hidden_state": self._m["text_encoder"](x["input_ids"])[0].float().numpy()}

    @staticmethod
    def _nhwc(t):
        return t.bfloat16().contiguous(memory_format=torch.channels_last)

    def _unet(self, x):
        out = self._m["unet"](self._nhwc(x["sample"]), x["timestep"], encoder_hidden_states=x[
            "encoder_hidden_states"].bfloat16(), return_dict=False)[0]
        return {"out_sample": out.float().contiguous().numpy()}

    def _vae_decoder(self, x):
        out = self._m["vae"].decode(self._nhwc(x["latent_sample"]), return_dict=False)[0]
        return {"sample": out.float().contiguous().numpy()}

    def _vae_encoder(self, x):
        out = self._m["vae"].encode(self._nhwc(x["sample"])).latent_dist.parameters
        return {"latent_parameters": out.float().contiguous().numpy()}


def prepare(preset: str, workdir: Path, models: tuple[str, ...]):
    """Random-weight modules and an embedded runtime over their export (reused when already exported)."""
    t0 = time.perf_counter()
    comps = build_components(preset)
    modules = {k: comps[k] for k in ("text_encoder", "unet", "vae")}
    repo_dir = workdir / f"{preset}-repository"
    have = ModelRepository(repo_dir).models() if repo_dir.is_dir() else []
    missing = tuple(m for m in models if m not in have)
    if missing:
        print(f"[{preset}] exporting {', '.join(missing)} to {repo_dir} ...", flush=True)
        export_models(modules, repo_dir, version=1, models=missing)
    runtime = EmbeddedRuntime(repo_dir, preload=list(models), verify=False)
    print(f"[{preset}] modules + sessions ready in {time.perf_counter() - t0:.0f} s", flush=True)
    return modules, runtime


def bench_unet(preset, modules, runtime, sizes, repeats, precision) -> list[dict]:
    unet = modules["unet"]
    rows = []
    torch_rt = TorchRuntime(modules)
    bf16_rt = Bf16Runtime({"unet": unet}) if precision == "bf16" else None
    factor = 8 if preset == "sd14" else 2
    for size in sizes:
        rng = np.random.default_rng(0)
        h = size // factor
        x = {"sample": rng.standard_normal((2, unet.config.in_channels, h, h), dtype=np.float32),
             "timestep": np.array([501.0, 501.0], np.float32),
             "encoder_hidden_states": rng.standard_normal((2, 77, unet.config.cross_attention_dim), dtype=np.float32)}
        flops = flops_of(lambda: torch_rt.infer("unet", x))
        contenders = {"torch": lambda: torch_rt.infer("unet", x), "embedded": lambda: runtime.infer("unet", x)}
        if bf16_rt:
            contenders["torch-bf16"] = lambda: bf16_rt.infer("unet", x)
        t = alternate(contenders, repeats)
        ref = torch_rt.infer("unet", x)["out_sample"]
        cpu = dict(CPU_SECONDS)
        row = {"preset": preset, "size": size, "latent": h, "batch": 2, "tflop": flops / 1e12,
               "torch_cpu_s": cpu["torch"], "embedded_cpu_s": cpu["embedded"],
               "torch_s": t["torch"], "embedded_s": t["embedded"], "embedded_speedup": t["torch"] / t["embedded"],
               "embedded_max_err": float(np.abs(runtime.infer("unet", x)["out_sample"] - ref).max()),
               "torch_gflops": flops / t["torch"] / 1e9, "embedded_gflops": flops / t["embedded"] / 1e9}
        if preset == "sd14" and size in PUBLISHED_TFLOP:  # the FLOP figures (attention counted in full)
            row["embedded_gflops_published"] = PUBLISHED_TFLOP[size] * 1e3 / t["embedded"]
        if bf16_rt:
            err = bf16_rt.infer("unet", x)["out_sample"] - ref
            row.update({"bf16_s": t["torch-bf16"], "bf16_speedup": t["torch"] / t["torch-bf16"],
                        "bf16_cpu_s": cpu["torch-bf16"], "bf16_gflops": flops / t["torch-bf16"] / 1e9, "bf16_max_err": float(np.abs(err).max()),
                        "bf16_rms_err": float(np.sqrt(np.mean(err**2)))})
        rows.append(row)
        print(f"[{preset}] unet {size}²: {_fmt(row)}", flush=True)
    return rows


def profile_unet(preset, runtime, modules, size, precision="fp32", top=12) -> dict:
    """Where a U-Net step's time goes: ONNX Runtime's per-operator profile and torch's, grouped by operator type."""
    import onnxruntime as ort
    from torch.profiler import ProfilerActivity, profile

    unet = modules["unet"]
    factor = 8 if preset == "sd14" else 2
    h = size // factor
    rng = np.random.default_rng(0)
    x = {"sample": rng.standard_normal((2, unet.config.in_channels, h, h), dtype=np.float32),
         "timestep": np.array([501.0, 501.0], np.float32),
         "encoder_hidden_states": rng.standard_normal((2, 77, unet.config.cross_attention_dim), dtype=np.float32)}
    path = runtime.repository.version_dir("unet", runtime.metadata("unet").version) / "model.onnx"
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path("/tmp") / f"ort-unet-{preset}-{size}")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    sess.run(None, x)
    sess.run(None, x)
    trace = json.loads(Path(sess.end_profiling()).read_text())
    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    last_start = runs[-1]["ts"] if runs else 0
    by_op: dict[str, float] = {}
    for e in trace:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= last_start:
            op = e.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + e["dur"] / 1e6
    total = sum(by_op.values())
    print(f"\n[{preset}] ONNX Runtime U-Net {size}², one step, {total:.2f} s in kernels:")
    for op, sec in sorted(by_op.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {op:<28} {sec:7.3f} s  {100 * sec / total:5.1f} %")
    torch_rt = TorchRuntime(modules)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        torch_rt.infer("unet", x)
    print(f"[{preset}] torch eager U-Net {size}², one step:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))
    if precision == "bf16":
        bf16_rt = Bf16Runtime({"unet": unet})
        bf16_rt.infer("unet", x)
        bf16_rt.infer("unet", x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            bf16_rt.infer("unet", x)
        print(f"[{preset}] torch bf16 U-Net {size}², one step:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))
    return {"preset": preset, "size": size, "ort_kernel_s": total, "ort_by_op_s": by_op}


def bench_e2e(preset, modules, runtime, sizes, steps, repeats, precision, workdir) -> list[dict]:
    from ldm3d.models.tokenizer import write_clip_tokenizer
    from ldm3d.pipeline import GenerateParams, LDM3DPipeline, PipelineSpec

    vae, unet, text = modules["vae"].config, modules["unet"].config, modules["text_encoder"].config
    spec = PipelineSpec(
        source=f"random {preset}", tokenizer_dir=write_clip_tokenizer(workdir / "tokenizer"),
        scheduler_config=dict(SCHEDULER_CONFIG), vae_scaling_factor=float(vae.scaling_factor),
        vae_scale_factor=2 ** (len(vae.block_out_channels) - 1), latent_channels=int(unet.in_channels),
        rgbd_channels=int(vae.out_channels), sample_size=int(unet.sample_size), max_text_length=77,
        text_hidden_size=int(text.hidden_size), versions={m: 1 for m in runtime.repository.models()})
    pipes = {"torch": LDM3DPipeline(TorchRuntime(modules), spec), "embedded": LDM3DPipeline(runtime, spec)}
    if precision == "bf16":
        pipes["torch-bf16"] = LDM3DPipeline(Bf16Runtime(modules), spec)
    rows = []
    for size in sizes:
        params = GenerateParams("a cabin in the woods, 360 view", height=size, width=size, steps=steps, seed=1)
        outs = {}

        def run(name):
            outs[name] = pipes[name](params)

        t = alternate({name: (lambda n=name: run(n)) for name in pipes}, repeats)
        ref = outs["torch"].decoded
        row = {"preset": preset, "size": size, "steps": steps, "torch_s": t["torch"], "embedded_s": t["embedded"],
               "embedded_speedup": t["torch"] / t["embedded"],
               "embedded_image_max_err": float(np.abs(outs["embedded"].decoded - ref).max())}
        if "torch-bf16" in pipes:
            row.update({"bf16_s": t["torch-bf16"], "bf16_speedup": t["torch"] / t["torch-bf16"],
                        "bf16_image_max_err": float(np.abs(outs["torch-bf16"].decoded - ref).max()),
                        "bf16_image_mean_err": float(np.abs(outs["torch-bf16"].decoded - ref).mean()),
                        "bf16_rgb8_max_diff": int(max(np.abs(a.astype(int) - b).max() for a, b in zip(
                            outs["torch-bf16"].rgb, outs["torch"].rgb)))})
        rows.append(row)
        print(f"[{preset}] text→RGBD {size}² × {steps} steps: {_fmt(row)}", flush=True)
    return rows


def _fmt(row: dict) -> str:
    keys = [k for k in row if k not in ("preset", "size", "latent", "batch", "steps")]
    return ", ".join(f"{k}={row[k]:.3g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keys)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=["tiny", "sd14", "all"], default="all")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="SD v1.4 image sides (default 256 512)")
    ap.add_argument("--tiny-sizes", type=int, nargs="+", default=[64, 128],
                    help="tiny model image sides (default 64 128: its VAE downsamples by 2 only, so 256² would be a "
                         "128² latent)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--e2e-steps", type=int, default=None, help="steps end to end (default 20 tiny, 3 sd14; 0 skips)")
    ap.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: all cores)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ldm3d-bench"))
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--profile", action="store_true", help="also print where a U-Net step's time goes (ORT, torch)")
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), bf16 capable: "
          f"{torch.backends.mkldnn.is_available()}", flush=True)
    results = {"unet": [], "e2e": []}
    for preset in (["tiny", "sd14"] if args.preset == "all" else [args.preset]):
        steps = args.e2e_steps if args.e2e_steps is not None else (20 if preset == "tiny" else 3)
        models = ("text_encoder", "unet", "vae_decoder") if steps else ("unet",)
        sizes = args.tiny_sizes if preset == "tiny" else args.sizes
        modules, runtime = prepare(preset, args.workdir / preset, models)
        with torch.inference_mode():
            results["unet"] += bench_unet(preset, modules, runtime, sizes, args.repeats, args.precision)
            if args.profile:
                results.setdefault("profile", []).extend(
                    profile_unet(preset, runtime, modules, s, args.precision) for s in sizes)
            if steps:
                results["e2e"] += bench_e2e(preset, modules, runtime, sizes, steps, max(1, args.repeats - 1),
                                            args.precision, args.workdir / preset)
        runtime.close()
        del modules, runtime
    print("\nU-Net step (batch 2, CFG)   torch s   embedded s   speedup   GFLOP/s torch/embedded"
          + ("   bf16 s  bf16 speedup  bf16 max err" if args.precision == "bf16" else ""))
    for r in results["unet"]:
        line = (f"{r['preset']:>5} {r['size']:>4}²  ({r['tflop']:.2f} TFLOP)  {r['torch_s']:8.3f}  {r['embedded_s']:10.3f}"
                f"   {r['embedded_speedup']:6.2f}x   {r['torch_gflops']:6.0f} / {r['embedded_gflops']:.0f}")
        if "bf16_s" in r:
            line += f"   {r['bf16_s']:6.3f}  {r['bf16_speedup']:10.2f}x  {r['bf16_max_err']:.2e}"
        print(line)
    for r in results["e2e"]:
        line = (f"text→RGBD {r['preset']:>5} {r['size']}² × {r['steps']} steps: torch {r['torch_s']:.2f} s, embedded "
                f"{r['embedded_s']:.2f} s ({r['embedded_speedup']:.2f}x, image max err {r['embedded_image_max_err']:.1e})")
        if "bf16_s" in r:
            line += (f", torch-bf16 {r['bf16_s']:.2f} s ({r['bf16_speedup']:.2f}x, image max err "
                     f"{r['bf16_image_max_err']:.2e}, mean {r['bf16_image_mean_err']:.1e}, 8-bit RGB max diff "
                     f"{r['bf16_rgb8_max_diff']})")
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
