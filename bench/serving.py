"""Text → RGBD through the gRPC platform: throughput and latency under concurrency, and the overhead against the
in-process pipeline, same machine, same run, same seeds.

    .venv/bin/python bench/serving.py                           # tiny model, 64², 25 steps, `ldm3d serve all`
    .venv/bin/python bench/serving.py --mode separate           # the services in 4 processes
    .venv/bin/python bench/serving.py --preset sd14 --size 256 --steps 4 --concurrency 1,4 --overhead-repeats 0
    .venv/bin/python bench/serving.py --checkpoint demo/tiny    # the torch runtime over a checkpoint folder

The model is served from a model repository by the embedded ONNX Runtime (the serving default): ``--preset tiny``
(default) or ``sd14`` (Stable Diffusion v1.4 sizes, random weights: 3.4 GB of U-Net, exported once into
``--workdir`` and reused), or ``--repository DIR``; ``--checkpoint DIR`` serves a checkpoint folder with torch.

Reports (and writes to bench/out/serving.json):

* throughput at 1, 4 and 16 concurrent clients (requests/s), each client sending its requests one after another,
  and latency p50/p99 per level; the ratio of each level's throughput to the 1-client one (targets: tiny 64², 16
  clients ≥ 3×; SD v1.4 256², 4 clients ≥ 1.3×). The sampler batches the running requests' U-Net calls step by step
  (``--max-running`` requests at once, ``--max-batch`` per call: the server's defaults unless given);
* the servers' CPU seconds per request at each level (from /proc): the work a request costs, which the neighbours'
  load on a shared machine disturbs far less than wall time;
* the service path's overhead per request (``--overhead-repeats`` > 0): median latency through the gateway (client
  → Studio → TextEncoder ×2 → DiffusionSampler, streaming every step → RGBDAutoencoder → PNGs back) minus the
  in-process pipeline's median (``pipe(params)`` plus the PNG encoding the gateway also does), and per step.

Runs alternate (in-process, service, …) so that drift of this shared machine hits both paths alike; every request
uses a new prompt so that no text-embedding cache skips work. The load average and the CPU flags are recorded with
the results: on a machine shared with other work, quote the ratios, not the absolute times.

Threads: torch in every process gets ``--threads`` (default 1, as ``OMP_NUM_THREADS``): a 2-thread OpenMP team that
loses a core to another process waits at every barrier. ONNX Runtime keeps its own default (one thread per core)
unless ``--intra-op-threads`` is given.
"""

from __future__ import annotations

import _stdlib_first  # noqa: F401,I001  (first: bench/queue.py must not shadow the standard library)
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start(service: str, source: list[str], *extra: str) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "ldm3d", "serve", service, "--host", "127.0.0.1", "--port", "0",
           "--metrics-port", "off", *source, "--log-format", "json", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"`{' '.join(cmd)}` did not start")
    return proc, "127.0.0.1:" + line.split("listening on ")[1].split()[0].rsplit(":", 1)[1]


def cpu_seconds(procs: list) -> float:
    """User + system CPU seconds the server processes have used so far (from /proc: no extra dependency)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in procs:
        fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def machine() -> dict:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "load_avg": os.getloadavg(),
            "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))}


def prepare_model(args) -> tuple[list[str], str]:
    """The serve flags for the model source, and its description."""
    if args.checkpoint:
        return ["--checkpoint", args.checkpoint], f"checkpoint {args.checkpoint} (torch)"
    if args.repository:
        return ["--repository", args.repository], f"repository {args.repository} (embedded ONNX Runtime)"
    from ldm3d.models.tiny import make_tiny_model
    from ldm3d.export import export_checkpoint
    from ldm3d.repository import ModelRepository

    work = Path(args.workdir or tempfile.mkdtemp(prefix="ldm3d-serving-")) / args.preset
    repo = work / "repository"
    if not (repo / "unet").is_dir() or not ModelRepository(repo).served_versions("unet"):
        t0 = time.perf_counter()
        print(f"[{args.preset}] building random weights and exporting them to {repo} ...", flush=True)
        ckpt = make_tiny_model(work / "checkpoint", preset=args.preset)
        export_checkpoint(ckpt, repo)
        print(f"[{args.preset}] exported in {time.perf_counter() - t0:.0f} s", flush=True)
    args.repository = str(repo)  # the in-process contender loads the same repository
    return ["--repository", str(repo)], f"{args.preset} random weights, repository {repo} (embedded ONNX Runtime)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=("tiny", "sd14"), default="tiny",
                     help="random-weight model exported to --workdir (default tiny)")
    src.add_argument("--repository", help="serve this model repository (embedded ONNX Runtime)")
    src.add_argument("--checkpoint", help="serve this checkpoint folder (torch)")
    ap.add_argument("--workdir", help="where --preset models are built and kept (default: a new temp folder; "
                                      "give one to reuse the SD v1.4-size export)")
    ap.add_argument("--mode", choices=("all-in-one", "separate"), default="all-in-one",
                    help="`ldm3d serve all` (default) or the gateway and three stage services in four processes")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--overhead-repeats", type=int, default=5,
                    help="requests per path for the service-vs-in-process overhead (0: skip it)")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--requests-per-client", type=int, default=2, help="throughput: requests per client (min 6 total)")
    ap.add_argument("--max-running", type=int, help="the sampler's --max-running (default: the server's)")
    ap.add_argument("--max-batch", type=int, help="the sampler's --max-batch (default: the server's)")
    ap.add_argument("--intra-op-threads", type=int, help="the embedded runtime's --intra-op-threads")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in every process (see above)")
    ap.add_argument("--out", default="bench/out/serving.json")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported here, inherited by the servers

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)

    from ldm3d import client, codec
    from ldm3d.pipeline import GenerateParams, LDM3DPipeline

    source, described = prepare_model(args)
    sampler_flags = [f for name, flag in (("max_running", "--max-running"), ("max_batch", "--max-batch"))
                     if getattr(args, name) is not None for f in (flag, str(getattr(args, name)))]
    model_flags = [*source] + ([] if args.intra_op_threads is None or args.checkpoint else
                               ["--intra-op-threads", str(args.intra_op_threads)])
    procs = []
    if args.mode == "separate":
        stages = {n: start(n, model_flags, *(sampler_flags if n == "sampler" else ())) for n in
                  ("text-encoder", "sampler", "autoencoder")}
        procs += [p for p, _ in stages.values()]
        gw, target = start("gateway", model_flags, "--text-encoder-url", stages["text-encoder"][1],
                           "--sampler-url", stages["sampler"][1], "--autoencoder-url", stages["autoencoder"][1])
    else:
        gw, target = start("all", model_flags, *sampler_flags)
    procs.append(gw)
    print(f"{args.mode}: gateway at {target}; {described}; {args.size}², {args.steps} steps, guidance "
          f"{args.guidance}; sampler flags {' '.join(sampler_flags) or '(server defaults)'}; torch threads "
          f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}", flush=True)

    counter = iter(range(10**9))

    def params():
        return GenerateParams(prompt=f"a cabin in the woods, variant {next(counter)}", steps=args.steps, seed=42,
                              height=args.size, width=args.size, scheduler="ddim", guidance_scale=args.guidance)

    def service(c):
        stamps = []
        t0 = time.perf_counter()
        c.generate(params(), on_step=lambda *a: stamps.append(time.perf_counter()))
        return time.perf_counter() - t0, np.diff(stamps)

    result = {"mode": args.mode, "model": described, "threads": args.threads, "sampler_flags": sampler_flags,
              "size": args.size, "steps": args.steps, "guidance": args.guidance, "machine": machine(),
              "throughput": {}}
    try:
        with client.StudioClient(target, timeout=3600) as c:
            service(c)  # warm the service (first calls allocate, caches are cold)
            if args.overhead_repeats > 0:
                result.update(overhead(args, c, service, params, np, codec, GenerateParams, LDM3DPipeline))

        base = None
        for n in (int(x) for x in args.concurrency.split(",")):
            total = max(6, n * args.requests_per_client)
            lock, latencies = threading.Lock(), []

            def one(c):
                t, _ = service(c)
                with lock:
                    latencies.append(t)

            clients = [client.StudioClient(target, timeout=3600) for _ in range(n)]
            load = os.getloadavg()[0]
            cpu0 = cpu_seconds(procs)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                list(pool.map(one, [clients[i % n] for i in range(total)]))
            wall = time.perf_counter() - t0
            server_cpu = (cpu_seconds(procs) - cpu0) / total
            for c in clients:
                c.close()
            rps = total / wall
            base = base or rps
            row = {"requests": total, "wall_s": wall, "req_per_s": rps, "vs_1_client": rps / base,
                   "p50_s": statistics.median(latencies), "p99_s": percentile(latencies, 99),
                   "max_s": max(latencies), "server_cpu_s_per_request": server_cpu, "load_avg_before": load}
            result["throughput"][n] = row
            print(f"{n:>2} concurrent clients: {rps:.2f} req/s = {rps / base:.2f}x the first level "
                  f"({total} requests in {wall:.1f} s; latency p50 {row['p50_s']:.2f} s, p99 {row['p99_s']:.2f} s; "
                  f"server CPU {server_cpu:.2f} s per request; load average {load:.2f})", flush=True)
        levels = result["throughput"]
        if len(levels) > 1:
            first, last = min(levels), max(levels)
            print(f"throughput {last} clients / {first}: {levels[last]['vs_1_client']:.2f}x; p50 latency "
                  f"{levels[last]['p50_s']:.2f} s at {last} clients vs {levels[first]['p50_s']:.2f} s at {first}")
        result["machine"]["load_avg_after"] = os.getloadavg()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


def overhead(args, c, service, params, np, codec, GenerateParams, LDM3DPipeline) -> dict:
    """Median latency through the gateway vs the in-process pipeline on the same model (alternating)."""
    if args.checkpoint:
        pipe = LDM3DPipeline.from_checkpoint(args.checkpoint)
    else:
        repo = args.repository
        opts = {} if args.intra_op_threads is None else {"intra_op_threads": args.intra_op_threads}
        pipe = LDM3DPipeline.from_repository(repo, **opts)

    def in_process():
        stamps = []
        t0 = time.perf_counter()
        r = pipe(params(), on_step=lambda *a: stamps.append(time.perf_counter()))
        for rgb, depth in zip(r.rgb, r.depth):  # the gateway returns PNGs: count the same work here
            codec.encode_png(rgb), codec.encode_png(depth)
        return time.perf_counter() - t0, np.diff(stamps)

    in_process()
    local, remote, local_steps, remote_steps = [], [], [], []
    for _ in range(args.overhead_repeats):
        t, s = in_process()
        local.append(t)
        local_steps.extend(s)
        t, s = service(c)
        remote.append(t)
        remote_steps.extend(s)
    pipe.runtime.close()
    ml, mr = statistics.median(local), statistics.median(remote)
    sl, sr = statistics.median(local_steps), statistics.median(remote_steps)
    nl, nr = min(local), min(remote)
    out = {"in_process_s": ml, "service_s": mr, "overhead_ms": (mr - ml) * 1e3, "overhead_pct": (mr / ml - 1) * 100,
           "step_in_process_ms": sl * 1e3, "step_service_ms": sr * 1e3, "step_overhead_ms": (sr - sl) * 1e3,
           "in_process_min_s": nl, "service_min_s": nr, "overhead_min_pct": (nr / nl - 1) * 100}
    print(f"per request: in-process {ml * 1e3:.1f} ms, through the gateway {mr * 1e3:.1f} ms → overhead "
          f"{out['overhead_ms']:+.1f} ms ({out['overhead_pct']:+.2f} %; target < 5 %); fastest of each "
          f"{nl * 1e3:.1f} vs {nr * 1e3:.1f} ms → {out['overhead_min_pct']:+.2f} %")
    print(f"per step:    in-process {sl * 1e3:.2f} ms, at the client {sr * 1e3:.2f} ms → "
          f"{out['step_overhead_ms']:+.3f} ms", flush=True)
    return out


if __name__ == "__main__":
    main()
