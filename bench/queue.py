"""Durable jobs: the queued path (Redis + Dramatiq + `ldm3d worker`) vs in-process for the same render job, and the
time from a worker's death to its job running again. Same machine, same run.

    .venv/bin/python bench/queue.py                                # 480x270 orbit, 8 s at 24 fps, 3 runs each
    .venv/bin/python bench/queue.py --size 1280x720 --seconds 8 --repeats 5 --heartbeat-timeout 15

Reports (and writes to bench/out/queue.json):

* **overhead**: the median wall time from ``Submit`` to ``done`` (polling ``GetOperation`` every 0.2 s, the
  client's default) of
  ``ldm3d serve renderer --queue URL`` + one ``ldm3d worker --kinds render --render-output-dir D`` (so the render
  is checkpointed, segments and kept frames, as in production) vs ``ldm3d serve renderer`` rendering in-process; in
  % (target: < 5 % for jobs over 5 s). Runs alternate (in-process, queued, …) so that drift of this shared machine
  hits both. Wall time on a machine shared with other work swings by ±30 % from run to run, so the CPU time each
  path spends is reported too (user + system seconds of every process involved, ffmpeg children included: the
  in-process server; the front, the worker and redis-server), which other load disturbs far less.
* **failover**: two workers; the one running a long render is SIGKILLed; the time until the other worker starts it
  again (the operation's ``attempts`` turns 2), and until its progress moves past where it was (it resumed from the
  checkpointed frames). Bounded by ``--heartbeat-timeout`` (default 15 s, the worker's default) × 4/3 plus a poll.

Every process gets the same ``OMP_NUM_THREADS`` (``--threads``, default 1). Needs ``redis-server`` (Debian's).
"""

from __future__ import annotations

import _stdlib_first  # noqa: F401,I001  (first: bench/queue.py must not shadow the standard library)
import sys
from pathlib import Path

# this file is named queue.py: keep its folder off the import path, or `import queue` (the standard library's, which
# redis-py uses) would import this script instead
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

from ldm3d.client import StudioClient  # noqa: E402
from ldm3d.jobs.redis_server import RedisServer  # noqa: E402
from ldm3d.jobs.store import OperationStore  # noqa: E402
from ldm3d.v1 import renderer_pb2  # noqa: E402


def start(cmd: list[str], ready: str, env: dict, log) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "ldm3d", *cmd], stdout=subprocess.PIPE, stderr=log, text=True,
                            cwd=ROOT, env=env)
    line = proc.stdout.readline()
    if ready not in line:
        proc.kill()
        raise SystemExit(f"`ldm3d {' '.join(cmd)}` did not start: {line!r}")
    return proc, line


def serve(env, log, *extra) -> tuple[subprocess.Popen, str]:
    proc, line = start(["serve", "renderer", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "off",
                        "--render-max-frames", "100000", *extra], "listening on", env, log)
    return proc, "127.0.0.1:" + line.split("listening on ")[1].split()[0].rsplit(":", 1)[1]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def panorama(w=512, h=256):
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h) + 64], axis=-1).astype(np.uint8)
    depth = (32768 + 20000 * np.sin(x / w * 12) * np.cos(y / h * 6)).astype(np.uint16)
    return rgb, depth


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and of its children it waited for (ffmpeg)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run_job(target: str, size, seconds: float, fps: float, pids: list[int]) -> tuple[float, list[float]]:
    """(wall seconds, CPU seconds of each of ``pids``) of one render job from Submit to done."""
    rgb, depth = panorama()
    with StudioClient(target, timeout=60) as c:
        c0 = [cpu_s(p) for p in pids]
        t0 = time.perf_counter()
        name = c.submit_render(rgb, depth, path="orbit", seconds=seconds, fps=fps, size=size)
        c.wait_render(name, poll_s=0.2)
        return time.perf_counter() - t0, [cpu_s(p) - c for p, c in zip(pids, c0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="480x270", help="frame size WxH")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--fps", type=float, default=24.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--heartbeat-timeout", type=float, default=15.0, help="the workers' --heartbeat-timeout")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "queue.json"))
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "services"), os.environ.get("PYTHONPATH", "")])}
    tmp = Path(tempfile.mkdtemp(prefix="ldm3d-bench-queue-"))
    log = open(tmp / "processes.log", "w")
    redis = RedisServer(tmp / "redis")
    procs = []
    try:
        inproc, inproc_target = serve(env, log)
        front, front_target = serve(env, log, "--queue", redis.url)
        worker_cmd = ["worker", "--queue", redis.url, "--kinds", "render", "--render-output-dir", str(tmp / "renders"),
                      "--heartbeat-timeout", str(args.heartbeat_timeout)]
        w1, _ = start(worker_cmd, "ready", env, log)
        procs += [inproc, front, w1]

        # 1. overhead: alternate in-process and queued runs of the same job (one warm-up each)
        times = {"in-process": [], "queued": []}
        cpus = {"in-process": [], "queued": []}
        contenders = (("in-process", inproc_target, [inproc.pid]),
                      ("queued", front_target, [front.pid, w1.pid, redis.proc.pid]))
        for i in range(args.repeats + 1):
            for label, target, pids in contenders:
                t, per_process = run_job(target, size, args.seconds, args.fps, pids)
                cpu = sum(per_process)
                if i:
                    times[label].append(t)
                    cpus[label].append(cpu)
                parts = "" if len(pids) == 1 else " = " + " + ".join(
                    f"{c:.2f} {n}" for c, n in zip(per_process, ("front", "worker", "redis")))
                print(f"  {label:10s} run {i}{' (warm-up)' if not i else ''}: {t:.2f} s wall, {cpu:.2f} s CPU{parts} "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        best = {k: min(v) for k, v in times.items()}
        cpu_med = {k: statistics.median(v) for k, v in cpus.items()}
        overhead = med["queued"] / med["in-process"] - 1
        cpu_overhead = cpu_med["queued"] / cpu_med["in-process"] - 1
        print(f"overhead: median wall {med['queued']:.2f} s queued vs {med['in-process']:.2f} s in-process "
              f"({overhead * 100:+.1f} %; fastest {best['queued']:.2f} vs {best['in-process']:.2f} s, "
              f"{(best['queued'] / best['in-process'] - 1) * 100:+.1f} %); median CPU {cpu_med['queued']:.2f} vs "
              f"{cpu_med['in-process']:.2f} s ({cpu_overhead * 100:+.1f} %)")

        # 2. failover: a second worker waits; the one running a long render is SIGKILLed
        w2, _ = start(worker_cmd, "ready", env, log)
        procs.append(w2)
        store = OperationStore(redis.url)
        rgb, depth = panorama()
        with StudioClient(front_target, timeout=60) as c:
            name = c.submit_render(rgb, depth, path="orbit", seconds=max(args.seconds * 3, 20), fps=args.fps,
                                   size=size)

            def meta():
                m = renderer_pb2.RenderMetadata()
                c.get_render(name).metadata.Unpack(m)
                return m

            while meta().progress.step < 10:
                time.sleep(0.05)
            owner = int(store.record(name)["worker"].decode().rsplit("-", 2)[1])
            at_kill = meta().progress.step
            os.kill(owner, signal.SIGKILL)
            t_kill = time.perf_counter()
            while int(store.record(name)["attempts"]) < 2:
                time.sleep(0.05)
            t_rerun = time.perf_counter() - t_kill
            while meta().progress.step <= at_kill:
                time.sleep(0.05)
            t_progress = time.perf_counter() - t_kill
            c.wait_render(name, poll_s=0.2)
        print(f"failover: worker killed at frame {at_kill}; job running again on the other worker after "
              f"{t_rerun:.1f} s, past frame {at_kill} after {t_progress:.1f} s "
              f"(--heartbeat-timeout {args.heartbeat_timeout:g} s: bound "
              f"{args.heartbeat_timeout * 4 / 3:.0f} s + poll)")
        result = {"size": size, "seconds": args.seconds, "fps": args.fps, "frames": round(args.seconds * args.fps),
                  "repeats": args.repeats, "times_s": times, "median_s": med, "overhead": overhead,
                  "cpu_s": cpus, "cpu_median_s": cpu_med, "cpu_overhead": cpu_overhead,
                  "failover_rerun_s": t_rerun, "failover_progress_s": t_progress, "killed_at_frame": at_kill,
                  "heartbeat_timeout_s": args.heartbeat_timeout, "load": os.getloadavg(), "threads": args.threads}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out} (load average {os.getloadavg()[0]:.1f})")
    finally:
        for p in procs:
            stop(p)
        redis.stop()
        log.close()


if __name__ == "__main__":
    main()
