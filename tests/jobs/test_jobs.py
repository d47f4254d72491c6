"""Durable jobs end to end, over real sockets with a real redis-server and real worker processes: a SIGKILLed
worker's 144-frame render resumes from its frames after the front server restarted too; two workers never both
complete a job; cancellation from another front replica stops the job within a frame; Redis stopped and restarted
mid-run; generations through the queue equal the in-process path bit for bit; bad flags exit 2."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from jobs_helpers import ROOT, wait_for
from servers_helpers import ProcessServer, ThreadServer, healthy

from ldm3d.client import StudioClient
from ldm3d.errors import Cancelled, NotFound, Unavailable
from ldm3d.jobs.broker import Broker
from ldm3d.jobs.store import OperationStore
from ldm3d.pipeline import GenerateParams
from ldm3d.render.job import checkpointed_frames
from ldm3d.render.video import probe
from ldm3d.v1 import renderer_pb2, studio_pb2

FRAMES = 144  # 6 s at 24 fps


def _pano(w=64, h=32):
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h) + 64], axis=-1).astype(np.uint8)
    depth = np.full((h, w), 32768, np.uint16)
    depth[(x - w // 2) ** 2 + (y - h // 2) ** 2 < (h // 5) ** 2] = 60000
    return rgb, depth


def _meta(op) -> renderer_pb2.RenderMetadata:
    m = renderer_pb2.RenderMetadata()
    op.metadata.Unpack(m)
    return m


def _submit_orbit(client: StudioClient, size=(320, 180), frames=FRAMES, **kw) -> str:
    rgb, depth = _pano()
    return client.submit_render(rgb, depth, path="orbit", seconds=frames / 24, fps=24, size=size, **kw)


def _record(url: str, name: str) -> dict[str, bytes]:
    return OperationStore(url).record(name)


def test_killed_worker_and_restarted_front_resume_from_frames(queue_url, workers, tmp_path):
    root = tmp_path / "renders"
    root.mkdir()
    serve = ("--queue", queue_url, "--render-output-dir", str(root))
    front = ProcessServer("renderer", *serve)
    w1 = workers(queue_url, "--kinds", "render", "--render-output-dir", str(root))
    try:
        with StudioClient(front.target, timeout=30) as c:
            name = _submit_orbit(c, files=True)
            step = wait_for(lambda: (s := _meta(c.get_render(name)).progress.step) >= 20 and s, 120,
                            "20 frames rendered")
            w1.kill()  # mid-render: no chance to hand anything back
    finally:
        front.stop()
    assert step < FRAMES, f"the render finished ({step} frames) before the worker was killed: make frames larger"
    out_dir = Path(_record(queue_url, name)["out_dir"].decode())
    kept = checkpointed_frames(out_dir / ".frames")
    assert kept >= step  # every frame counted as done is on disk

    front = ProcessServer("renderer", *serve)  # a new front: it knows the operation from Redis alone
    try:
        with StudioClient(front.target, timeout=30) as c:
            assert not c.get_render(name).done
            t_dead = time.monotonic()
            w2 = workers(queue_url, "--kinds", "render", "--render-output-dir", str(root))
            result = c.wait_render(name, poll_s=0.1, timeout=120)
            waited = time.monotonic() - t_dead
    finally:
        front.stop()
    (mp4,) = [a for a in result.artifacts if a.name == "orbit.mp4"]
    assert probe(mp4.path)["nb_frames"] == FRAMES
    assert not (out_dir / ".frames").exists()  # checkpoints removed once the job is done
    rec = _record(queue_url, name)
    assert rec["attempts"] == b"2" and rec["completions"] == b"1"
    assert f"resuming from {kept} finished frames" in w2.text()
    assert waited < 60


def test_sigterm_drains_after_the_current_frame_and_hands_the_rest_back(queue_url, workers, tmp_path):
    root = tmp_path / "renders"
    root.mkdir()
    front = ThreadServer(service="renderer", queue=queue_url, render_output_dir=str(root))
    w1 = workers(queue_url, "--kinds", "render", "--render-output-dir", str(root))
    try:
        with StudioClient(front.target, timeout=30) as c:
            name = _submit_orbit(c, frames=72, files=True)
            wait_for(lambda: _meta(c.get_render(name)).progress.step >= 10, 120, "10 frames")
            t0 = time.monotonic()
            w1.proc.terminate()
            assert w1.proc.wait(30) == 0
            drained_s = time.monotonic() - t0
            meta = _meta(c.get_render(name))
            assert meta.state == studio_pb2.OPERATION_STATE_QUEUED and "handed back" in meta.message, meta
            out_dir = Path(_record(queue_url, name)["out_dir"].decode())
            kept = checkpointed_frames(out_dir / ".frames")
            assert 10 <= kept < 72 and kept >= meta.progress.step
            w2 = workers(queue_url, "--kinds", "render", "--render-output-dir", str(root))
            result = c.wait_render(name, poll_s=0.1, timeout=120)
        assert probe(result.artifacts[0].path)["nb_frames"] == 72
        assert f"resuming from {kept} finished frames" in w2.text()
        rec = _record(queue_url, name)
        assert rec["attempts"] == b"2" and rec["completions"] == b"1"
        assert drained_s < 10, f"draining took {drained_s:.1f} s: it should end after the current frame"
    finally:
        front.stop()


def test_two_workers_never_both_complete_one_job(queue_url, workers):
    front = ThreadServer(service="renderer", queue=queue_url)
    w1 = workers(queue_url, "--kinds", "render")
    w2 = workers(queue_url, "--kinds", "render")
    broker = Broker(queue_url)
    try:
        with StudioClient(front.target, timeout=30) as c:
            names = [_submit_orbit(c, size=(160, 90)) for _ in range(3)]
            for name in names:  # each message delivered twice more, as after a wrongly presumed-dead worker
                broker.enqueue_job("render", name)
                broker.enqueue_job("render", name)
            for name in names:
                c.wait_render(name, poll_s=0.1, timeout=120)
        for name in names:
            rec = _record(queue_url, name)
            assert rec["completions"] == b"1" and rec["attempts"] == b"1", rec.keys()
        # every copy was consumed and acknowledged, by one worker or the other, without running the job again
        wait_for(lambda: broker.waiting("render") == 0, 30, "the queue to drain", poll_s=0.1)
        logs = w1.text() + w2.text()
        assert logs.count("attempt 1 on") == 3 and "attempt 2" not in logs
        assert "OPERATION_STATE_SUCCEEDED recorded" in logs and "refused" not in logs
    finally:
        broker.client.close()
        front.stop()


def test_completion_guard_is_redis_side(queue_url):
    store = OperationStore(queue_url)
    assert store.create("renders/g", "render", b"", b"", 60)
    assert not store.create("renders/g", "render", b"", b"", 60)  # names are never reused
    lease = store.lease("renders/g", 5)
    assert lease.acquire(blocking=False)
    assert store.finish("renders/g", b"m", token=b"someone-else", result=b"x", ttl_ms=60_000) == -1
    assert store.finish("renders/g", b"m", token=lease.local.token, result=b"r1", ttl_ms=60_000) == 1
    assert store.finish("renders/g", b"m", token=lease.local.token, result=b"r2", ttl_ms=60_000) == 0
    rec = store.record("renders/g")
    assert rec["result"] == b"r1" and rec["completions"] == b"1"
    assert 0 < store.redis.pttl("ldm3d:op:renders/g") <= 60_000  # finished records expire (--result-ttl)


def test_cancel_from_another_front_replica_stops_within_a_frame(queue_url, workers, tmp_path):
    root = tmp_path / "renders"
    root.mkdir()
    a = ThreadServer(service="renderer", queue=queue_url, render_output_dir=str(root))
    b = ThreadServer(service="renderer", queue=queue_url, render_output_dir=str(root))
    workers(queue_url, "--kinds", "render", "--render-output-dir", str(root))
    try:
        with StudioClient(a.target, timeout=30) as ca, StudioClient(b.target, timeout=30) as cb:
            name = _submit_orbit(ca, size=(640, 360), files=True)
            wait_for(lambda: _meta(cb.get_render(name)).progress.step >= 3, 120, "3 frames")
            before = _meta(cb.get_render(name)).progress.step
            cb.cancel_render(name)  # returns once the worker stopped
            op = ca.get_render(name)
            assert op.done and _meta(op).state == studio_pb2.OPERATION_STATE_CANCELLED
            assert _meta(op).progress.step <= before + 2  # the frame in flight, plus one finished meanwhile
            with pytest.raises(Cancelled):
                ca.wait_render(name)
        assert list(root.iterdir()) == []  # nothing left that looks finished
        with StudioClient(a.target) as c, pytest.raises(NotFound):
            c.get_render("renders/never-submitted")
    finally:
        a.stop()
        b.stop()


def test_redis_stopped_and_restarted_mid_run(queue_url, workers, redis_server):
    front = ThreadServer(service="renderer", queue=queue_url)
    workers(queue_url, "--kinds", "render")
    try:
        with StudioClient(front.target, timeout=30) as c:
            name = _submit_orbit(c)
            wait_for(lambda: _meta(c.get_render(name)).progress.step >= 10, 120, "10 frames")
            redis_server.stop()
            try:
                with pytest.raises(Unavailable, match=f"127.0.0.1:{redis_server.port}"):
                    _submit_orbit(c)
                with pytest.raises(Unavailable):
                    c.get_render(name)
                assert healthy(front.target) and healthy(front.target, "ldm3d.v1.PanoramaRenderer")
                time.sleep(1.0)
            finally:
                redis_server.start()
            result = c.wait_render(name, poll_s=0.1, timeout=120)
            (mp4,) = result.artifacts
            assert mp4.data[4:8] == b"ftyp"
            again = _submit_orbit(c, size=(64, 36))  # recovered: new jobs are taken and run
            c.wait_render(again, poll_s=0.1, timeout=120)
        assert _record(queue_url, name)["completions"] == b"1"
    finally:
        front.stop()


def test_generation_through_the_queue_equals_in_process(queue_url, workers, exported_repository):
    front = ThreadServer(service="all", repository=str(exported_repository), queue=queue_url)
    workers(queue_url, "--kinds", "generate", "--repository", str(exported_repository))
    p = GenerateParams(prompt="a cabin in the woods", negative_prompt="fog", steps=4, seed=7)
    try:
        with StudioClient(front.target, timeout=60) as c:
            name = c.submit(p)
            assert name.startswith("operations/")
            queued = c.wait(name, timeout=120)
            local = c.generate(p)  # the streaming call still runs in the serving process
            with pytest.raises(NotFound):  # a generation's name is not a render's
                c.get_render(name)
            # SubmitPano stays in the serving process (docs/api.md): no render worker runs here, yet it finishes
            pano = c.submit_pano(GenerateParams(prompt="a cabin", height=64, width=128, steps=2, seed=7), ods=True)
            assert pano.startswith("panos/") and [a.name for a in c.wait_pano(pano, timeout=60)[1].artifacts] == [
                "ods.png"]
        assert all(np.array_equal(x, y) for x, y in zip(queued.rgb + queued.depth, local.rgb + local.depth))
        assert _record(queue_url, name)["completions"] == b"1"
    finally:
        front.stop()


@pytest.mark.parametrize("args, flag", [
    (["worker"], "--queue"),
    (["worker", "--queue", "redis://127.0.0.1:1/0", "--kinds", "paint"], "--kinds"),
    (["worker", "--queue", "http://127.0.0.1:1/0", "--kinds", "render"], "--queue"),
    (["worker", "--queue", "redis://127.0.0.1:1/0"], "--repository"),
    (["serve", "sampler", "--checkpoint", "x", "--queue", "redis://127.0.0.1:1/0"], "--queue"),
])
def test_bad_flags_exit_2_naming_the_flag(args, flag):
    r = subprocess.run([sys.executable, "-m", "ldm3d", *args], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and flag in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_scaled_job_pods_take_one_job_or_leave_when_idle(queue_url, workers):
    """What the KEDA ScaledJob's pods run: `--max-jobs 1` ends after one job, `--idle-exit` when none is left."""
    front = ThreadServer(service="renderer", queue=queue_url)
    try:
        with StudioClient(front.target, timeout=30) as c:
            first, second = (_submit_orbit(c, size=(64, 36), frames=24) for _ in range(2))
            one = workers(queue_url, "--kinds", "render", "--max-jobs", "1")
            assert one.proc.wait(60) == 0
            done = [c.get_render(n).done for n in (first, second)]
            assert sorted(done) == [False, True], "exactly one job, then the pod ends"
            idle = workers(queue_url, "--kinds", "render", "--idle-exit", "1")
            for n in (first, second):
                c.wait_render(n, poll_s=0.1, timeout=60)
            assert idle.proc.wait(30) == 0
    finally:
        front.stop()
