"""Live roll-out under steady load: promote → every replica serving the new route, and the failed-request count.

    .venv/bin/python bench/rollout.py                               # 2 all-in-one replicas, embedded, default 5 s
    .venv/bin/python bench/rollout.py --replicas 3 --clients 2 --reload-interval 1
    .venv/bin/python bench/rollout.py --runtime triton              # the replicas share one CPU tritonserver

Builds a repository with two releases of the tiny model (release 2 has another U-Net), starts ``--replicas``
``ldm3d serve all`` processes on it (the replicas of a Deployment sharing the repository volume), keeps
``--clients`` clients per replica sending small Generate requests back to back, and runs the operator's sequence
with the real CLI (``ldm3d models promote``): canary 50 → full → rollback. For each step it reports the seconds
from the promote command's return to the moment every replica's ListModels shows the new route (polled every
20 ms), and at the end every request's outcome: failed requests (target 0), the canary's share of the requests sent
during the canary, and whether each response's images are exactly its release's. Writes bench/out/rollout.json.

The convergence time is bounded by ``--reload-interval`` (a replica notices on its next poll) plus loading and
warming the new release beside the serving one; on a shared 2-core machine the second part dominates.
"""

from __future__ import annotations

import _stdlib_first  # noqa: F401,I001  (first: bench/queue.py must not shadow the standard library)
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start(*args: str) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "ldm3d", "serve", "all", "--host", "127.0.0.1", "--port", "0", "--metrics-port",
           "off", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"`{' '.join(cmd)}` did not start")
    return proc, "127.0.0.1:" + line.split("listening on ")[1].split()[0].rsplit(":", 1)[1]


def digest(r) -> str:
    return hashlib.sha256(r.rgb[0].tobytes() + r.depth[0].tobytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--clients", type=int, default=2, help="concurrent clients per replica")
    ap.add_argument("--reload-interval", type=float, default=5.0, help="the servers' --reload-interval (seconds)")
    ap.add_argument("--runtime", choices=("embedded", "triton"), default="embedded")
    ap.add_argument("--canary-seconds", type=float, default=20.0, help="how long the canary phase lasts")
    ap.add_argument("--threads", type=int, default=1,
                    help="ONNX Runtime threads per replica (--intra-op-threads): replicas share this machine's cores")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "rollout.json")
    args = ap.parse_args()

    from ldm3d import client
    from ldm3d.models.tiny import make_tiny_model
    from ldm3d.pipeline import GenerateParams, LDM3DPipeline
    from ldm3d.export import export_checkpoint
    from ldm3d.repository.releases import add_release, canary_point

    work = Path(tempfile.mkdtemp(prefix="ldm3d-rollout-"))
    procs, triton = [], None
    try:
        repo = work / "repository"
        export_checkpoint(make_tiny_model(work / "a"), repo)
        export_checkpoint(make_tiny_model(work / "b", seed=1), repo, version=2, models=("unet",))
        add_release(repo, {"text_encoder": 1, "unet": 2, "vae_decoder": 1, "vae_encoder": 1}, {"kind": "bench"})
        params = GenerateParams(prompt="a cabin in the woods", steps=2, seed=5, height=64, width=64)
        want = {str(n): digest(LDM3DPipeline.from_repository(repo, version=n)(params)) for n in (1, 2)}
        extra = ["--repository", str(repo), "--reload-interval", str(args.reload_interval), "--max-queued", "64"]
        if args.runtime == "embedded":
            extra += ["--intra-op-threads", str(args.threads)]
        if args.runtime == "triton":
            from ldm3d.repository.triton_cpu import TritonServer, build_cpu_repository

            build_cpu_repository(repo, work / "cpu")
            triton = TritonServer(work / "cpu", log_file=work / "triton.log").start(timeout_s=300)
            extra += ["--runtime", "triton", "--triton-url", triton.url]
        started = [start(*extra) for _ in range(args.replicas)]
        procs = [p for p, _ in started]
        targets = [t for _, t in started]
        print(f"{args.replicas} replicas ({args.runtime}) up, {args.clients} clients each", flush=True)

        results, errors, stop = [], [], threading.Event()

        def load(target):
            with client.StudioClient(target, timeout=120) as c:
                while not stop.is_set():
                    rid, t0 = uuid.uuid4().hex, time.monotonic()
                    try:
                        r = c.generate(params, request_id=rid)
                        results.append((t0, time.monotonic(), rid, r.metadata["model"]["version"], digest(r)))
                    except Exception as exc:  # noqa: BLE001 - counted
                        errors.append(repr(exc))

        threads = [threading.Thread(target=load, args=(t,), daemon=True) for t in targets for _ in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(2)

        def route(target):
            with client.StudioClient(target, timeout=30) as c:
                (info,) = c.list_models()
            return info.default_version, info.canary_version

        def step(name, cli, expect):
            subprocess.run([sys.executable, "-m", "ldm3d", "models", "promote", "--repository", str(repo), *cli],
                           check=True, cwd=ROOT, capture_output=True)
            # from the moment the new releases.json became visible (its rename), not from the command's return:
            # the CLI's own start-up and sha256 check would hide part of the replicas' reaction time
            t0, pending = (repo / "releases.json").stat().st_mtime, set(targets)
            per = {}
            while pending:
                for t in list(pending):
                    if route(t) == expect:
                        per[t] = time.time() - t0
                        pending.discard(t)
                time.sleep(0.02)
            slowest = max(per.values())
            print(f"{name:<10} every replica switched {slowest:6.2f} s after the promote "
                  f"(replicas: {', '.join(f'{v:.2f}' for v in per.values())})", flush=True)
            return slowest, time.monotonic()

        times = {}
        times["canary 50"], canary_from = step("canary 50", ["--version", "2", "--canary", "50"], ("1", "2"))
        time.sleep(args.canary_seconds)
        canary_to = time.monotonic()
        times["full"], _ = step("full", ["--version", "2"], ("2", ""))
        time.sleep(3)
        times["rollback"], _ = step("rollback", ["--version", "1"], ("1", ""))
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join(120)
        canary = [r for r in results if r[0] >= canary_from and r[1] <= canary_to]
        share = sum(r[3] == "2" for r in canary) / max(1, len(canary))
        sticky = all(r[3] == ("2" if canary_point(r[2]) < 50 else "1") for r in canary)
        exact = all(r[4] == want[r[3]] for r in results)
        report = {"replicas": args.replicas, "clients_per_replica": args.clients, "runtime": args.runtime,
                  "reload_interval_s": args.reload_interval, "switch_s": times, "requests": len(results),
                  "failed": len(errors), "errors": errors[:5], "canary_requests": len(canary), "canary_share": share,
                  "canary_sticky": sticky, "images_exact": exact, "load_average": os.getloadavg()}
        print(f"{len(results)} requests, {len(errors)} failed; canary share {share:.2f} of {len(canary)} "
              f"(sticky: {sticky}); every image exactly its release's: {exact}; load average "
              f"{os.getloadavg()[0]:.1f}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if triton is not None:
            triton.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
