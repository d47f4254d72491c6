"""A bounded load + hostile-input run against a real server: does every case get a precise answer, does health stay
fast under PNG bombs, does memory stay flat?

    .venv/bin/python bench/hostile.py                       # `ldm3d serve all` on a tiny model, in a child process
    .venv/bin/python bench/hostile.py --split               # sampler in its own process behind the gateway
    .venv/bin/python bench/hostile.py --checkpoint demo/tiny --bombs 24

A hostile-but-fair client (project stubs, real sockets) sends, while a second thread checks health every 50 ms and a
third samples the server's resident memory:

* **PNG bombs**: small PNGs that decode to 8192² 16-bit / RGB images, to every RPC that takes an image, from 16
  senders back to back for 10 s; then large legitimate panoramas (4096x2048), submitted and cancelled;
* **numbers**: overflowing, NaN and infinite values in every ranged field;
* **strings**: versions spelled "01" (must not reload), huge versions, 1 MB values, deeply nested keyframes_json,
  bad output_dir names, request ids with line breaks, non-ASCII or 1 MB;
* **protocol**: bytes that do not parse, unknown enum values, unknown operation names;
* **load**: concurrent Generate calls and a SubmitGenerate flood (every accepted operation must finish).

A case is *handled* when it gets the expected status code (and, for INVALID_ARGUMENT, names the expected field) in
under 5 s, and never INTERNAL/UNKNOWN. Prints the table and writes bench/out/hostile.json: cases tried, handled,
health latency (p50 / p99 / max, overall and under the bombs), the server's memory baseline and peak.
"""

from __future__ import annotations

import _stdlib_first  # noqa: F401,I001  (first: bench/queue.py must not shadow the standard library)
import argparse
import io
import json
import math
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
    log = tempfile.NamedTemporaryFile("w+", prefix=f"hostile-{service}-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"`{' '.join(cmd)}` did not start: see {log.name}")
    proc.log_path = log.name
    return proc, "127.0.0.1:" + line.split("listening on ")[1].split()[0].rsplit(":", 1)[1]


def png(array) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


class Sampler(threading.Thread):
    """Health latency every 50 ms, and the server processes' resident memory (summed) every 50 ms."""

    def __init__(self, target: str, pids: list[int]):
        super().__init__(daemon=True)
        import grpc
        import psutil
        from grpc_health.v1 import health_pb2_grpc

        self.channel = grpc.insecure_channel(target)
        self.stub = health_pb2_grpc.HealthStub(self.channel)
        self.procs = [psutil.Process(p) for p in pids]
        self.health: list[tuple[float, float, bool]] = []  # (time, latency s, SERVING)
        self.memory: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self):
        from grpc_health.v1 import health_pb2

        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                ok = self.stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == 1
            except Exception:  # noqa: BLE001 - a failed check is a data point, not a crash of the bench
                ok = False
            t1 = time.perf_counter()
            self.health.append((t0, t1 - t0, ok))
            try:
                self.memory.append((t1, sum(p.memory_info().rss for p in self.procs)))
            except Exception:  # noqa: BLE001
                pass
            self.stop.wait(max(0.0, 0.05 - (time.perf_counter() - t0)))


def field_of(err) -> str | None:
    from google.rpc import error_details_pb2, status_pb2

    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    if not raw:
        return None
    for any_ in status_pb2.Status.FromString(raw).details:
        if any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            any_.Unpack(br)
            return br.field_violations[0].field
        if any_.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            ri = error_details_pb2.ResourceInfo()
            any_.Unpack(ri)
            return ri.resource_type
    return None


def run_case(name, klass, call, codes, field=None, max_s=5.0) -> dict:
    """``call()`` → ("OK", None) or raises grpc.RpcError; judged against ``codes`` and ``field``."""
    import grpc

    t0 = time.perf_counter()
    try:
        call()
        code, got, details = "OK", None, ""
    except grpc.RpcError as err:
        code, got, details = err.code().name, field_of(err), err.details() or ""
    except Exception as exc:  # noqa: BLE001 - recorded as unhandled
        code, got, details = f"client {type(exc).__name__}", None, str(exc)[:200]
    elapsed = time.perf_counter() - t0
    ok = code in codes and (field is None or code != "INVALID_ARGUMENT" or got == field) and elapsed < max_s
    ok = ok and code not in ("INTERNAL", "UNKNOWN") and len(details) < 2048
    return {"case": name, "class": klass, "code": code, "field": got, "expected": sorted(codes),
            "expected_field": field, "seconds": round(elapsed, 3), "handled": ok, "details": details[:160]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="LDM3D checkpoint folder (default: a tiny one built in a temp folder)")
    ap.add_argument("--split", action="store_true", help="run the sampler in its own process behind the gateway")
    ap.add_argument("--bombs", type=int, default=16, help="concurrent PNG bomb senders in the bomb phase")
    ap.add_argument("--bomb-seconds", type=float, default=10.0, help="how long the bomb phase lasts")
    ap.add_argument("--clients", type=int, default=8, help="concurrent Generate clients in the load phase")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "hostile.json"))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ldm3d-hostile-"))
    checkpoint = args.checkpoint
    if checkpoint is None:
        from ldm3d.models.tiny import make_tiny_model

        checkpoint = str(make_tiny_model(tmp / "tiny", depth_channels=3))
    renders = tmp / "renders"
    renders.mkdir()
    procs = []
    common = ["--max-running", "1", "--max-queued", "4", "--render-output-dir", str(renders)]
    if args.split:
        sampler, sampler_target = start("sampler", checkpoint, "--max-running", "1", "--max-queued", "4")
        procs.append(sampler)
        gateway, target = start("all", checkpoint, "--sampler-url", sampler_target, *common)
    else:
        gateway, target = start("all", checkpoint, *common)
    procs.insert(0, gateway)
    print(f"server{'s' if args.split else ''} up at {target} ({'split' if args.split else 'all-in-one'})")
    try:
        run(args, target, procs, renders)
    finally:  # whatever happens to the run, no server outlives it
        for p in procs:
            if p.poll() is None:
                p.kill()


def run(args, target: str, procs: list, renders: Path) -> None:
    import grpc
    import numpy as np
    from google.longrunning import operations_pb2

    from ldm3d import codec
    from ldm3d.v1 import (autoencoder_pb2, autoencoder_pb2_grpc, common_pb2, depth_pb2, depth_pb2_grpc,
                          renderer_pb2, renderer_pb2_grpc, studio_pb2, studio_pb2_grpc)

    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20),
                                                     ("grpc.max_receive_message_length", 64 << 20)])
    studio = studio_pb2_grpc.StudioStub(channel)
    vae = autoencoder_pb2_grpc.RGBDAutoencoderStub(channel)
    depth = depth_pb2_grpc.DepthEvaluatorStub(channel)
    render = renderer_pb2_grpc.PanoramaRendererStub(channel)
    sampler_thread = Sampler(target, [p.pid for p in procs])
    t_start = time.perf_counter()
    sampler_thread.start()
    time.sleep(1.0)
    baseline = statistics.median(m for _, m in sampler_thread.memory[-10:])

    img = lambda data: common_pb2.Image(png=data)  # noqa: E731
    rgb64, depth64 = png(np.zeros((64, 64, 3), np.uint8)), codec.encode_png(np.zeros((64, 64), np.uint16))
    print("making PNG bombs ...", flush=True)
    bomb16 = png(np.zeros((8192, 8192), np.uint16))
    bomb_rgb = png(np.zeros((8192, 8192, 3), np.uint8))
    wide16 = png(np.zeros((2048, 4096), np.uint16))  # legitimate large panoramas (within the renderer's limit)
    wide_rgb = png(np.zeros((2048, 4096, 3), np.uint8))
    print(f"  8192² 16-bit: {len(bomb16) / 1e3:.0f} KB, 8192² RGB: {len(bomb_rgb) / 1e3:.0f} KB")
    results = []
    T = 30

    def gen(**kw):
        return lambda: list(studio.Generate(studio_pb2.GenerateRequest(**{"prompt": "x", "steps": 2, "height": 64,
                                                                           "width": 64, **kw}), timeout=T))

    def sub(**kw):
        pano = kw.pop("panorama", common_pb2.RGBD(rgb=img(rgb64), depth=img(depth64)))
        return lambda: render.Submit(renderer_pb2.RenderRequest(**{"panorama": pano, "ods": True, **kw}), timeout=T)

    # -- bombs, many at once, while health is measured
    bombs = [
        ("Generate init rgb 8192² RGB", gen(init_image=common_pb2.RGBD(rgb=img(bomb_rgb), depth=img(depth64))),
         {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}, "init_image.rgb.png"),
        ("Generate init depth 8192² 16-bit", gen(init_image=common_pb2.RGBD(rgb=img(rgb64), depth=img(bomb16))),
         {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}, "init_image.depth.png"),
        ("Encode depth 8192² 16-bit", lambda: vae.Encode(autoencoder_pb2.EncodeRGBDRequest(
            image=common_pb2.RGBD(rgb=img(rgb64), depth=img(bomb16))), timeout=T),
         {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}, "image.depth.png"),
        ("Evaluate pred 8192² 16-bit", lambda: depth.Evaluate(depth_pb2.EvaluateDepthRequest(
            predicted_depth=img(bomb16), reference_depth=img(bomb16)), timeout=T),
         {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}, "predicted_depth.png"),
        ("Estimate rgb 8192² RGB", lambda: depth.Estimate(depth_pb2.EstimateDepthRequest(rgb=img(bomb_rgb)),
                                                          timeout=T),
         {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION"}, "rgb.png"),
        ("Submit panorama 8192² both", sub(panorama=common_pb2.RGBD(rgb=img(bomb_rgb), depth=img(bomb16))),
         {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}, "panorama.rgb.png"),
    ]
    phases = {}
    t_bombs = time.perf_counter()

    def bomber(worker: int) -> list[dict]:  # sends bombs back to back until the phase ends
        out, i = [], 0
        while time.perf_counter() - t_bombs < args.bomb_seconds or i == 0:
            name, call, codes, fld = bombs[(worker + i) % len(bombs)]
            out.append(run_case(f"{name} (worker {worker})", "bomb", call, codes, fld))
            i += 1
        return out

    with ThreadPoolExecutor(args.bombs) as pool:
        for found in pool.map(bomber, range(args.bombs)):
            results += found
    phases["PNG bombs"] = (t_bombs, time.perf_counter())
    t_large = time.perf_counter()
    # large legitimate panoramas (decoded in a worker thread, admitted first), cancelled at once
    names = []

    def large(i):
        return run_case(f"Submit 4096x2048 panorama #{i}", "bomb",
                        lambda: names.append(sub(panorama=common_pb2.RGBD(rgb=img(wide_rgb), depth=img(wide16)),
                                                 eye_width=256, eye_height=128)().name),
                        {"OK", "RESOURCE_EXHAUSTED"})

    with ThreadPoolExecutor(4) as pool:
        results += list(pool.map(large, range(4)))
    cancels = [render.CancelOperation.future(operations_pb2.CancelOperationRequest(name=n), timeout=300)
               for n in names]
    for n, c in zip(names, cancels):  # the renderer must be free again before the next phase
        t0 = time.perf_counter()
        try:
            c.result()
            code = "OK"
        except grpc.RpcError as err:
            code = err.code().name
        results.append({"case": f"CancelOperation {n}", "class": "bomb", "code": code, "handled": code == "OK",
                        "seconds": round(time.perf_counter() - t0, 2), "expected": ["OK"]})
    phases["large panoramas (legitimate)"] = (t_large, time.perf_counter())
    t_cases = time.perf_counter()

    # -- numbers, strings, protocol: one at a time
    nan, inf = float("nan"), float("inf")
    cases = []
    for f, v, fld in [("seconds", 1e308, "seconds"), ("fps", 1e308, "fps"), ("fps", nan, "fps"),
                      ("seconds", -1.0, "seconds"), ("width", 2**31 - 1, "width"), ("eye_width", -5, "eye_width"),
                      ("crf", 10**9, "crf"), ("mesh_step", 0, "mesh_step"), ("view_hfov", inf, "view_hfov"),
                      ("cap_hfov", nan, "cap_hfov"), ("depth_strength", nan, "depth_strength"),
                      ("edge_threshold", nan, "edge_threshold"), ("radius", nan, "radius"), ("ipd", nan, "ipd"),
                      ("ipd", inf, "ipd"), ("radius", -1.0, "radius")]:
        kw = {f: v}
        if f in ("width",):
            kw.update(height=64, path=renderer_pb2.CAMERA_PATH_ORBIT, seconds=1, fps=1)
        if f in ("seconds", "fps", "view_hfov"):
            kw.setdefault("path", renderer_pb2.CAMERA_PATH_ORBIT)
        if f in ("eye_width",):
            kw["eye_height"] = 64
        if f in ("mesh_step",):
            kw["mesh_formats"] = [renderer_pb2.MESH_FORMAT_PLY]
        if f in ("cap_hfov",):
            kw["projection"] = "cap"
        cases.append((f"Submit {f}={v}", "numbers", sub(**kw), {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}, fld))
    for f, v in [("steps", 2**31 - 1), ("height", 2**31 - 1), ("num_images", 2**31 - 1),
                 ("guidance_scale", nan), ("guidance_scale", inf), ("seed", 2**64 - 1)]:
        cases.append((f"Generate {f}={v}", "numbers", gen(**{f: v}), {"INVALID_ARGUMENT"}, f))
    cases.append(("Generate strength=nan", "numbers", gen(init_image=common_pb2.RGBD(rgb=img(rgb64),
                                                                                       depth=img(depth64)),
                                                          strength=nan), {"INVALID_ARGUMENT"}, "strength"))
    deep = "[" * 100_000 + "]" * 100_000
    keyframes = renderer_pb2.CAMERA_PATH_KEYFRAMES
    for label, text in [("nested 100k", deep), ("huge list", json.dumps([{"t": i} for i in range(200_000)])),
                        ("NaN values", '[{"t": 0, "yaw": NaN}, {"t": 1, "yaw": 1e400}]'), ("not JSON", "{" * 10),
                        ("object", '{"keyframes": 5}')]:
        cases.append((f"Submit keyframes_json {label}", "strings", sub(path=keyframes, keyframes_json=text),
                      {"INVALID_ARGUMENT"}, "keyframes_json"))
    files = renderer_pb2.ARTIFACT_DELIVERY_FILES
    for label, d in [("NUL", "job\0x"), ("too long", "x" * 10_000), ("too deep", "a/" * 500 + "b"),
                     ("parent", "../escape"), ("absolute", "/etc/x"), ("backslash", "a\\b"), ("empty part", "a//b"),
                     ("newline", "a\nb"), ("dot", ".")]:
        cases.append((f"Submit output_dir {label}", "strings", sub(delivery=files, output_dir=d),
                      {"INVALID_ARGUMENT"}, "output_dir"))
    for label, v in [("huge", "9" * 5000), ("arabic digit", "\u0661"), ("19 digits", "1" * 19), ("1 MB", "v" * 2**20)]:
        cases.append((f"Generate version {label}", "strings", gen(version=v), {"NOT_FOUND"}, "version"))
    cases.append(("Generate model 1 MB", "strings", gen(model="m" * 2**20), {"NOT_FOUND"}, "model"))
    cases.append(("Generate scheduler 1 MB", "strings", gen(scheduler="s" * 2**20), {"INVALID_ARGUMENT"},
                  "scheduler"))
    cases.append(("Generate prompt 1 MB", "strings", gen(prompt="p" * 2**20), {"INVALID_ARGUMENT"}, "prompt"))
    for label, rid in [("line break", "a\nb"), ("non-ASCII", "é-ü-✓"), ("1 MB", "r" * 2**20), ("NUL", "a\0b")]:
        cases.append((f"Generate request_id {label}", "strings", gen(request_id=rid), {"OK"}, None))
        cases.append((f"Submit request_id {label} (bad ipd)", "strings", sub(request_id=rid, ipd=nan),
                      {"INVALID_ARGUMENT"}, "ipd"))
    cases.append(("GetOperation name 1 MB", "strings", lambda: studio.GetOperation(
        operations_pb2.GetOperationRequest(name="o" * 2**20), timeout=T), {"NOT_FOUND"}, "name"))
    for m in ("/ldm3d.v1.Studio/GenerateBatch", "/ldm3d.v1.Studio/SubmitGenerate",
              "/ldm3d.v1.RGBDAutoencoder/Decode", "/ldm3d.v1.DepthEvaluator/Evaluate",
              "/ldm3d.v1.PanoramaRenderer/Submit", "/ldm3d.v1.TextEncoder/Encode"):
        raw = channel.unary_unary(m, request_serializer=None, response_deserializer=None)
        cases.append((f"{m.rsplit('/', 1)[1]} undecodable bytes", "protocol",
                      lambda raw=raw: raw(b"\xff\xff\xff\xff garbage", timeout=T), {"INVALID_ARGUMENT"}, "request"))
    cases.append(("Generate image_encoding=99", "protocol", gen(image_encoding=99), {"INVALID_ARGUMENT"},
                  "image_encoding"))
    cases.append(("Submit path=99", "protocol", sub(path=99), {"INVALID_ARGUMENT"}, "path"))
    cases.append(("Submit delivery=7", "protocol", sub(delivery=7), {"INVALID_ARGUMENT"}, "delivery"))
    cases.append(("Decode latents shape 2^40", "protocol", lambda: vae.Decode(autoencoder_pb2.DecodeLatentsRequest(
        latents=common_pb2.Tensor(dtype=common_pb2.DATA_TYPE_FLOAT32, shape=[1, 4, 2**20, 2**20], data=b"")),
        timeout=T), {"INVALID_ARGUMENT"}, "latents.data"))
    cases.append(("Submit bytes result over the message limit", "strings",
                  lambda: render.Submit(renderer_pb2.RenderRequest(
                      panorama=common_pb2.RGBD(rgb=img(rgb64), depth=img(depth64)), path=renderer_pb2.CAMERA_PATH_ORBIT,
                      seconds=120, fps=30, width=3840, height=2160), timeout=T),
                  {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}, None))
    for name, klass, call, codes, fld in cases:
        results.append(run_case(name, klass, call, codes, fld))

    # versions spelled with leading zeros: served by the loaded model, as fast as the plain one
    t0 = time.perf_counter()
    for _ in range(5):
        results.append(run_case("Generate version '01' (not a reload)", "strings", gen(version="01"),
                                {"OK", "NOT_FOUND"}))
    version_s = (time.perf_counter() - t0) / 5

    phases["numbers, strings, protocol"] = (t_cases, time.perf_counter())
    t_load = time.perf_counter()
    # -- load: concurrent streams, then a SubmitGenerate flood whose accepted operations must all finish
    with ThreadPoolExecutor(args.clients) as pool:
        futs = [pool.submit(run_case, f"Generate under load #{i}", "load", gen(steps=4, seed=i),
                            {"OK", "RESOURCE_EXHAUSTED"}, None, 60.0) for i in range(args.clients * 2)]
        results += [f.result() for f in futs]
    accepted, refused = [], 0
    for i in range(30):
        try:
            accepted.append(studio.SubmitGenerate(studio_pb2.GenerateRequest(prompt=f"op {i}", steps=3, height=64,
                                                                              width=64), timeout=T).name)
        except grpc.RpcError as err:
            refused += 1
            results.append({"case": f"SubmitGenerate flood #{i}", "class": "load", "code": err.code().name,
                            "handled": err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and field_of(err) is None,
                            "seconds": 0.0, "expected": ["OK", "RESOURCE_EXHAUSTED"]})
    lost = 0
    deadline = time.monotonic() + 120
    for n in accepted:
        while True:
            op = studio.GetOperation(operations_pb2.GetOperationRequest(name=n), timeout=T)
            if op.done or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        ok = op.done and not op.HasField("error")
        lost += not ok
        results.append({"case": f"SubmitGenerate accepted {n}", "class": "load", "code": "OK" if ok else
                        ("NOT_DONE" if not op.done else f"op error {op.error.code}"), "handled": ok, "seconds": 0.0,
                        "expected": ["OK"]})

    phases["load"] = (t_load, time.perf_counter())
    time.sleep(0.5)
    sampler_thread.stop.set()
    sampler_thread.join(5)
    alive = all(p.poll() is None for p in procs)
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()

    # -- report
    health = sampler_thread.health
    lat = sorted(x[1] for x in health)
    b0, b1 = phases["PNG bombs"]
    under = sorted(x[1] for x in health if b0 <= x[0] <= b1)
    not_serving = sum(not x[2] for x in health)
    peak = max(m for _, m in sampler_thread.memory)
    pct = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3 if xs else float("nan")  # noqa: E731
    handled = sum(r["handled"] for r in results)
    by_class: dict[str, list[int]] = {}
    for r in results:
        by_class.setdefault(r["class"], [0, 0])
        by_class[r["class"]][0] += 1
        by_class[r["class"]][1] += r["handled"]
    print("\n| class | cases | handled |\n| --- | --- | --- |")
    for k, (n, h) in by_class.items():
        print(f"| {k} | {n} | {h} |")
    print(f"| **all** | **{len(results)}** | **{handled}** ({100 * handled / len(results):.1f} %) |")
    for r in results:
        if not r["handled"]:
            print(f"  NOT HANDLED: {r['case']}: {r['code']} field={r.get('field')} (expected {r['expected']} "
                  f"{r.get('expected_field') or ''}) {r.get('seconds')} s {r.get('details', '')[:120]!r}")
    print(f"\nhealth checks: {len(health)}, not SERVING/failed: {not_serving}")
    print(f"health latency ms: p50 {pct(lat, .5):.1f}, p99 {pct(lat, .99):.1f}, max {lat[-1] * 1e3:.1f}; "
          f"under the PNG bombs ({b1 - b0:.1f} s): p50 {pct(under, .5):.1f}, p99 {pct(under, .99):.1f}, "
          f"max {(under[-1] if under else math.nan) * 1e3:.1f}")
    print(f"server memory (RSS{', both processes' if args.split else ''}): baseline {baseline / 2**20:.0f} MiB, "
          f"peak {peak / 2**20:.0f} MiB (+{(peak - baseline) / 2**20:.0f} MiB)")
    phase_peaks = {}
    for label, (a, b) in phases.items():
        mem = [m for t, m in sampler_thread.memory if a <= t <= b]
        hl = sorted(x[1] for x in health if a <= x[0] <= b)
        phase_peaks[label] = {"seconds": round(b - a, 1), "memory_peak_mib": max(mem) / 2**20 if mem else None,
                              "health_max_ms": hl[-1] * 1e3 if hl else None}
        print(f"  {label}: {b - a:.1f} s, memory peak +{(max(mem) - baseline) / 2**20 if mem else 0:.0f} MiB, "
              f"health max {hl[-1] * 1e3 if hl else float('nan'):.0f} ms")
    print(f"version '01' generate: {version_s * 1e3:.0f} ms each; SubmitGenerate flood: {len(accepted)} accepted, "
          f"{refused} refused at submit, {lost} accepted but lost; server{'s' if args.split else ''} alive: {alive}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "mode": "split" if args.split else "all-in-one", "cases": len(results), "handled": handled,
        "by_class": by_class, "health_checks": len(health), "health_not_serving": not_serving,
        "health_ms": {"p50": pct(lat, .5), "p99": pct(lat, .99), "max": lat[-1] * 1e3},
        "health_ms_under_bombs": {"p50": pct(under, .5), "p99": pct(under, .99),
                                  "max": under[-1] * 1e3 if under else None},
        "memory_mib": {"baseline": baseline / 2**20, "peak": peak / 2**20}, "phases": phase_peaks,
        "memory_timeline_mib": [(round(t - t_start, 1), round(m / 2**20)) for t, m in sampler_thread.memory[::20]],
        "operations": {"accepted": len(accepted), "refused": refused, "lost": lost}, "alive": alive,
        "results": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
