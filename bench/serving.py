"""Text → RGBD through the gRPC platform vs the in-process pipeline, same machine, same run, same seeds.

    .venv/bin/python bench/serving.py                          # tiny model, 64², 25 steps, services in 4 processes
    .venv/bin/python bench/serving.py --mode all-in-one        # every service in one process (ldm3d serve all)
    .venv/bin/python bench/serving.py --checkpoint demo/tiny --steps 50 --repeats 9

Reports (and writes to bench/out/serving.json):

* the service path's overhead per request: median latency through the gateway (client → Studio → TextEncoder ×2 →
  DiffusionSampler, streaming every step → RGBDAutoencoder → PNGs back) minus the in-process pipeline's median
  (``pipe(params)`` plus the PNG encoding the gateway also does), in ms and % (target: < 5 % at 25 steps);
  (also the fastest run of each, which other load on a shared machine disturbs least);
* the overhead per step: the median interval between progress messages at the client minus the median interval
  between ``on_step`` calls in-process;
* throughput at 1, 4 and 16 concurrent clients (requests/s; the sampler runs ``--max-running`` jobs at once and
  queues the rest).

Runs alternate (in-process, service, in-process, …) so that drift of this shared machine hits both paths alike;
every request uses a new prompt so that neither path's text-embedding cache skips work the other does.

Both paths run torch with the same number of threads (``--threads``, default 1; the servers get it as
``OMP_NUM_THREADS``). On a small machine shared with other work, a 2-thread OpenMP team that loses a core to another
process waits at every barrier (we measured a 4M-element SiLU at 2 ms with 1 thread and 12 ms with 2 under load),
and which thread of a process first runs torch decides whether it gets such a team — so unequal settings would
measure OpenMP scheduling, not the service path.
"""

from __future__ import annotations

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


def start(service: str, checkpoint: str, *extra: str) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "ldm3d", "serve", service, "--host", "127.0.0.1", "--port", "0",
           "--metrics-port", "off", "--checkpoint", checkpoint, "--log-format", "json", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"`{' '.join(cmd)}` did not start")
    return proc, "127.0.0.1:" + line.split("listening on ")[1].split()[0].rsplit(":", 1)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="LDM3D checkpoint folder (default: a tiny one built in a temp folder)")
    ap.add_argument("--mode", choices=("separate", "all-in-one"), default="separate")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=7, help="requests per path for the overhead (medians)")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--requests-per-client", type=int, default=2, help="throughput: requests per client (min 6 total)")
    ap.add_argument("--max-running", type=int, default=1, help="sampling jobs the sampler runs at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in every process (see above)")
    ap.add_argument("--out", default="bench/out/serving.json")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported here, inherited by the servers

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)

    from ldm3d import client, codec
    from ldm3d.pipeline import GenerateParams, LDM3DPipeline

    ckpt = args.checkpoint
    if ckpt is None:
        from ldm3d.models.tiny import make_tiny_model

        ckpt = str(make_tiny_model(Path(tempfile.mkdtemp()) / "tiny"))
    procs = []
    if args.mode == "separate":
        running = ("--max-running", str(args.max_running))
        stages = {n: start(n, ckpt, *(running if n == "sampler" else ())) for n in
                  ("text-encoder", "sampler", "autoencoder")}
        procs += [p for p, _ in stages.values()]
        gw, target = start("gateway", ckpt, "--text-encoder-url", stages["text-encoder"][1],
                           "--sampler-url", stages["sampler"][1], "--autoencoder-url", stages["autoencoder"][1])
    else:
        gw, target = start("all", ckpt, "--max-running", str(args.max_running))
    procs.append(gw)
    pipe = LDM3DPipeline.from_checkpoint(ckpt)
    print(f"{args.mode}: gateway at {target}; tiny model {args.size}², {args.steps} steps; torch threads "
          f"{torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")

    counter = iter(range(10**9))

    def params():
        return GenerateParams(prompt=f"a cabin in the woods, variant {next(counter)}", steps=args.steps, seed=42,
                              height=args.size, width=args.size, scheduler="ddim")

    def in_process():
        stamps = []
        t0 = time.perf_counter()
        r = pipe(params(), on_step=lambda *a: stamps.append(time.perf_counter()))
        for rgb, depth in zip(r.rgb, r.depth):  # the gateway returns PNGs: count the same work here
            codec.encode_png(rgb), codec.encode_png(depth)
        return time.perf_counter() - t0, np.diff(stamps)

    def service(c):
        stamps = []
        t0 = time.perf_counter()
        c.generate(params(), on_step=lambda *a: stamps.append(time.perf_counter()))
        return time.perf_counter() - t0, np.diff(stamps)

    try:
        with client.StudioClient(target, timeout=600) as c:
            for _ in range(2):  # warm both paths (first calls allocate, JIT-less but cache-cold)
                in_process(), service(c)
            local, remote, local_steps, remote_steps = [], [], [], []
            for _ in range(args.repeats):
                t, s = in_process()
                local.append(t)
                local_steps.extend(s)
                t, s = service(c)
                remote.append(t)
                remote_steps.extend(s)
        ml, mr = statistics.median(local), statistics.median(remote)
        sl, sr = statistics.median(local_steps), statistics.median(remote_steps)
        result = {
            "mode": args.mode, "threads": args.threads, "max_running": args.max_running, "size": args.size, "steps": args.steps, "repeats": args.repeats,
            "in_process_s": ml, "service_s": mr, "overhead_ms": (mr - ml) * 1e3, "overhead_pct": (mr / ml - 1) * 100,
            "step_in_process_ms": sl * 1e3, "step_service_ms": sr * 1e3, "step_overhead_ms": (sr - sl) * 1e3,
            "throughput": {},
        }
        nl, nr = min(local), min(remote)
        result.update(in_process_min_s=nl, service_min_s=nr, overhead_min_pct=(nr / nl - 1) * 100)
        print(f"per request: in-process {ml * 1e3:.1f} ms, through the gateway {mr * 1e3:.1f} ms → overhead "
              f"{result['overhead_ms']:+.1f} ms ({result['overhead_pct']:+.2f} %; target < 5 %)")
        print(f"  fastest of each (least disturbed by other load): {nl * 1e3:.1f} vs {nr * 1e3:.1f} ms → "
              f"{result['overhead_min_pct']:+.2f} %")
        print(f"per step:    in-process {sl * 1e3:.2f} ms, at the client {sr * 1e3:.2f} ms → "
              f"{result['step_overhead_ms']:+.3f} ms")

        for n in (int(x) for x in args.concurrency.split(",")):
            total = max(6, n * args.requests_per_client)
            lock, latencies = threading.Lock(), []

            def one(c):
                t, _ = service(c)
                with lock:
                    latencies.append(t)

            clients = [client.StudioClient(target, timeout=600) for _ in range(n)]
            t0 = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                list(pool.map(one, [clients[i % n] for i in range(total)]))
            wall = time.perf_counter() - t0
            for c in clients:
                c.close()
            result["throughput"][n] = {"requests": total, "wall_s": wall, "req_per_s": total / wall,
                                       "p50_s": statistics.median(latencies), "max_s": max(latencies)}
            print(f"{n:>2} concurrent clients: {total / wall:.2f} req/s ({total} requests in {wall:.1f} s; "
                  f"latency p50 {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s)")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


if __name__ == "__main__":
    main()
