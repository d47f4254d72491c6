"""``ldm3d worker``: runs queued render and generation jobs (a Dramatiq worker embedded in our process).

    ldm3d worker --queue redis://127.0.0.1:6379/0 --repository R [--kinds render,generate] [--concurrency N]
        [--render-output-dir /srv/renders]

    worker = JobWorker(WorkerConfig(queue=url, kinds=("render",), serve=ServeConfig(service="renderer", ...)))
    worker.run(on_ready=print)          # until SIGTERM/SIGINT (or --max-jobs / --idle-exit)

One job, start to end (:meth:`JobWorker._job`):

1. Read the operation record; a finished (or expired) one is acknowledged and dropped.
2. Take the job's lease. Held by another worker (a message redelivered while its first worker still runs): wait
   until that one finishes, or its lease expires because it died, then take over.
3. Run it with the same code as the in-process path: a render translates the ``RenderRequest`` with the
   PanoramaRenderer's own checks and runs :func:`~ldm3d.render.render_job` with a ``checkpoint_dir`` (every finished
   frame kept in the shared ``--render-output-dir``, reused on a rerun); a generation runs the Studio's chain of
   stages in-process (it restarts from step 0 after a lost worker: latents are not saved, a generation is short).
   Progress goes to the record after every frame or step; between them the worker polls the cancel flag.
4. Finish through the completion guard (:data:`~.store._FINISH`): succeeded, failed (a typed error, never retried)
   or cancelled (a files job's folder removed, as in-process).

SIGTERM drains: a running render stops after its current frame and is handed back to the queue (Dramatiq's
Retries puts the message back at once; the next worker resumes from the frames on disk); a running generation
finishes; messages fetched but not started go back to the queue. SIGKILL/OOM/node loss: the worker's heartbeat
stops and another worker's maintenance requeues its message (:mod:`.broker`), within ``--heartbeat-timeout`` × 4/3.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dramatiq
import redis
from dramatiq.middleware import TimeLimitExceeded
from redis.exceptions import LockError

from ..errors import Cancelled, DeadlineExceeded, InvalidArgument, Unavailable
from ..servers.config import ServeConfig
from ..v1 import studio_pb2
from . import KINDS
from .broker import DEFAULT_HEARTBEAT_TIMEOUT_S, Broker, HandBack
from .front import TYPES, now
from .store import OperationStore, redact

log = logging.getLogger(__name__)

_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


@dataclass(frozen=True)
class WorkerConfig:
    """A worker: its queue, which kinds of job it takes and how many at once; ``serve`` holds the model and
    renderer settings it shares with ``ldm3d serve`` (repository, runtime, --render-output-dir, render limits)."""

    queue: str
    serve: ServeConfig
    kinds: tuple[str, ...] = KINDS
    concurrency: int = 1
    heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S
    time_limit_s: float = 6 * 3600.0
    max_jobs: int | None = None
    idle_exit_s: float | None = None
    alive_file: str | None = None

    def __post_init__(self):
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise InvalidArgument(f"--kinds={','.join(self.kinds)!r}: use a comma-separated subset of "
                                  f"{','.join(KINDS)}", field="--kinds")
        if "generate" in self.kinds and not (self.serve.repository or self.serve.checkpoint):
            raise InvalidArgument("generation jobs need a model: --repository DIR (or --checkpoint DIR), or "
                                  "--kinds render", field="--repository")
        if self.concurrency < 1:
            raise InvalidArgument(f"--concurrency={self.concurrency}: use 1 or more", field="--concurrency")


class _Lost(Exception):
    """This worker's lease was taken over (it was believed dead): the other worker owns the job now."""


class _LeaseKeeper(threading.Thread):
    """Extends a running job's lease every ``ttl/3``; during a Redis outage it keeps trying, and if the lease
    expired meanwhile it takes it back unless another worker did (then :attr:`lost`)."""

    def __init__(self, lease, ttl_s: float):
        super().__init__(daemon=True, name="lease")
        self.lease, self.ttl_s = lease, ttl_s
        self.lost = False
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.lease.extend(self.ttl_s, replace_ttl=True)
            except LockError:
                try:
                    if not self.lease.redis.set(self.lease.name, self.lease.local.token, nx=True,
                                                px=int(self.ttl_s * 1000)):
                        self.lost = True
                        return
                except redis.RedisError:
                    continue
            except redis.RedisError:
                continue

    def stop(self) -> None:
        self._stop.set()


class JobWorker:
    def __init__(self, cfg: WorkerConfig):
        self.cfg = cfg
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.broker = Broker(cfg.queue, cfg.heartbeat_timeout_s, cfg.time_limit_s)
        self.store = OperationStore(cfg.queue, self.broker.client)
        self.draining = threading.Event()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.active = 0
        self.finished = 0
        self._last_activity = time.monotonic()
        self._cleanup = []
        self.renderer = self.studio = None
        if "render" in cfg.kinds:
            from ..servers.renderer import PanoramaRendererServicer

            self.renderer = PanoramaRendererServicer(cfg.serve)
            self._cleanup.append(lambda: self.renderer._pool.shutdown(wait=False))
        if "generate" in cfg.kinds:
            self._start_generation()
        for kind in cfg.kinds:
            self.broker.bind(kind, lambda name, kind=kind: self._job(kind, name))

    # -- lifecycle
    def run(self, on_ready=None) -> None:
        """Consume until SIGTERM/SIGINT (drain), ``--max-jobs`` jobs or ``--idle-exit`` idle seconds."""
        # worker_timeout: an idle consumer polls Redis at least this often (ms); Dramatiq's 1 s default adds up to a
        # second before a queued job starts, 0.25 s costs an idle worker ~8 cheap Redis commands a second
        self._wait_for_redis()
        worker = dramatiq.Worker(self.broker, queues=set(self.cfg.kinds), worker_threads=self.cfg.concurrency,
                                 worker_timeout=250)
        # fetch only as many messages as there are threads: a prefetched message would wait behind a long render
        # on this worker while another worker sits idle
        worker.queue_prefetch = self.cfg.concurrency
        self.broker.emit_after("process_boot")
        worker.start()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.drain())
        self._alive()
        if on_ready is not None:
            on_ready(self)
        interval = self.cfg.heartbeat_timeout_s / 3
        while not self.stopping.wait(interval):
            self._alive()
            try:
                self.broker.maintain(self.cfg.kinds)
            except redis.RedisError as exc:
                log.warning("queue maintenance failed (%s): retrying in %.0f s", exc, interval)
            if self.cfg.idle_exit_s is not None and self.active == 0 and (
                    time.monotonic() - self._last_activity > self.cfg.idle_exit_s):
                log.info("idle for %.0f s (--idle-exit): stopping", self.cfg.idle_exit_s)
                self.stopping.set()
        log.info("stopping: running renders finish their current frame and go back to the queue")
        worker.stop(timeout=int(self.cfg.time_limit_s * 1000))
        self.close()

    def _wait_for_redis(self, timeout_s: float = 30.0) -> None:
        """Start only once Redis answers (it may still be starting beside us); after ``timeout_s`` fail clearly."""
        end = time.monotonic() + timeout_s
        while True:
            try:
                self.broker.client.ping()
                return
            except _REDIS_DOWN as exc:
                if time.monotonic() > end:
                    self.close()
                    raise Unavailable(f"--queue {redact(self.cfg.queue)}: Redis did not answer for {timeout_s:g} s "
                                      f"({exc.__class__.__name__}: {exc}): start it (scripts/redis.sh for development) "
                                      "or fix the URL", field="--queue") from None
                time.sleep(0.5)

    def _alive(self) -> None:
        if self.cfg.alive_file:
            Path(self.cfg.alive_file).touch()

    def drain(self) -> None:
        self.draining.set()
        self.stopping.set()

    def close(self) -> None:
        for fn in reversed(self._cleanup):
            fn()
        self._cleanup.clear()
        self.broker.client.close()

    # -- one job (in a Dramatiq worker thread)
    def _job(self, kind: str, name: str) -> None:
        with self._lock:
            self.active += 1
        try:
            self._job_leased(kind, name)
        finally:
            with self._lock:
                self.active -= 1
                self.finished += 1
                self._last_activity = time.monotonic()
                if self.cfg.max_jobs is not None and self.finished >= self.cfg.max_jobs:
                    self.drain()  # a render fetched meanwhile goes back to the queue at its first frame

    def _job_leased(self, kind: str, name: str) -> None:
        rec = self._retry(lambda: self.store.record(name), name)
        if rec is None or rec.get("done") == b"1":
            log.info("%s: %s, nothing to do", name, "finished" if rec else "no record (expired)")
            return
        lease = self.store.lease(name, self.cfg.heartbeat_timeout_s)
        while not self._retry(lambda: lease.acquire(blocking=False), name):
            # a redelivered message while its first worker still runs it: wait for that worker, never run it twice
            if self.draining.is_set():
                raise HandBack(f"{name}: draining while another worker holds it")
            time.sleep(1.0)
            rec = self._retry(lambda: self.store.record(name), name)
            if rec is None or rec.get("done") == b"1":
                log.info("%s: finished by another worker", name)
                return
        keeper = _LeaseKeeper(lease, self.cfg.heartbeat_timeout_s)
        keeper.start()
        try:
            rec = self._retry(lambda: self.store.record(name), name)
            if rec is None or rec.get("done") == b"1":
                return
            self._execute(kind, name, rec, lease, keeper)
        finally:
            keeper.stop()
            try:
                lease.release()
            except (LockError, redis.RedisError):
                pass  # expired or Redis down: it times out by itself

    def _execute(self, kind: str, name: str, rec: dict[str, bytes], lease, keeper: _LeaseKeeper) -> None:
        from ..wire import tensors
        from ..wire.status import status_proto

        meta = TYPES[kind][0].FromString(rec["meta"])
        meta.state = studio_pb2.OPERATION_STATE_RUNNING
        meta.update_time.CopyFrom(now())
        attempt = self._retry(lambda: self.store.started(name, meta.SerializeToString(), self.id), name)
        log.info("%s: attempt %d on %s", name, attempt, self.id)
        t0 = time.perf_counter()

        def progress(done: int, total: int, message: str = "") -> None:
            meta.progress.CopyFrom(tensors.progress(done, total, time.perf_counter() - t0))
            if hasattr(meta, "message"):
                meta.message = message
            meta.update_time.CopyFrom(now())
            try:
                self.store.update(name, meta.SerializeToString())
            except _REDIS_DOWN:
                pass  # progress is best effort; the result is not (see _finish)

        def stop_asked(drain: bool = True) -> bool:
            """Between frames/steps: True when cancelled; raises to hand the job back or when it was taken over."""
            if keeper.lost:
                raise _Lost(name)
            try:
                if self.store.cancel_requested(name):  # one HGET per frame: well under a millisecond
                    return True
            except _REDIS_DOWN:
                pass
            if drain and self.draining.is_set():
                raise HandBack(f"{name}: handed back by {self.id} (draining)")
            return False

        run = self._render if kind == "render" else self._generate
        out_dir = rec.get("out_dir", b"").decode() or None
        ckpt = self._checkpoint_dir(out_dir, name) if kind == "render" else None
        if ckpt is not None and ckpt.is_dir():
            from ..render.job import checkpointed_frames

            kept = checkpointed_frames(ckpt)
            log.info("%s: resuming from %d finished frames in %s", name, kept, ckpt)
            if hasattr(meta, "message"):
                meta.message = f"resuming from {kept} finished frames"
                self._retry(lambda: self.store.update(name, meta.SerializeToString()), name)
        ttl_ms = int(rec.get("ttl_ms", b"0")) or 86_400_000
        try:
            result = run(name, rec["request"], out_dir, progress, stop_asked)
        except HandBack:
            meta.state = studio_pb2.OPERATION_STATE_QUEUED
            meta.update_time.CopyFrom(now())
            if hasattr(meta, "message"):
                meta.message = f"handed back to the queue by a draining worker after {meta.message or 'start'}"
            self._retry(lambda: self.store.update(name, meta.SerializeToString()), name)
            log.info("%s: handed back (%s)", name, meta.message if hasattr(meta, "message") else "")
            raise
        except _Lost:
            log.warning("%s: another worker took it over while this one was cut off from Redis: stopped here", name)
            return
        except (Exception, TimeLimitExceeded) as exc:  # noqa: BLE001 - recorded as the typed error (never retried)
            meta.state = studio_pb2.OPERATION_STATE_FAILED
            if isinstance(exc, Cancelled):
                meta.state = studio_pb2.OPERATION_STATE_CANCELLED
                exc = Cancelled(f"cancelled by CancelOperation after {time.perf_counter() - t0:.1f} s")
            elif isinstance(exc, TimeLimitExceeded):
                exc = DeadlineExceeded(f"the job ran past the worker's --time-limit of {self.cfg.time_limit_s:g} s")
            self._discard(out_dir, name)  # first: a client that sees the state finds nothing half-made
            self._finish(name, meta, lease, ttl_ms, error=status_proto(exc).SerializeToString())
            return
        meta.state = studio_pb2.OPERATION_STATE_SUCCEEDED
        self._finish(name, meta, lease, ttl_ms, result=result.SerializeToString())
        if ckpt is not None:
            shutil.rmtree(ckpt, ignore_errors=True)

    def _finish(self, name: str, meta, lease, ttl_ms: int, **outcome) -> None:
        meta.update_time.CopyFrom(now())
        token = lease.local.token or b""
        code = self._retry(lambda: self.store.finish(name, meta.SerializeToString(), token=token, ttl_ms=ttl_ms,
                                                     **outcome), name)
        states = {1: "recorded", 0: "refused: already finished", -1: "refused: another worker holds it",
                  -2: "refused: the record expired"}
        log.log(logging.INFO if code == 1 else logging.WARNING, "%s: %s %s", name,
                studio_pb2.OperationState.Name(meta.state), states[code])

    def _retry(self, fn, name: str):
        return _retry(fn, name, draining=self.draining)

    def _discard(self, out_dir: str | None, name: str) -> None:
        """A cancelled or failed job leaves nothing that looks finished (as in-process)."""
        ckpt = self._checkpoint_dir(out_dir, name)
        if ckpt is not None:
            shutil.rmtree(ckpt, ignore_errors=True)
        if out_dir is not None:
            shutil.rmtree(out_dir, ignore_errors=True)

    def _checkpoint_dir(self, out_dir: str | None, name: str) -> Path | None:
        """Where a render keeps its finished frames: inside a files job's folder, else under the worker's output
        root (bytes jobs); None when the worker has no output root (such a job restarts from frame 1)."""
        if out_dir is not None:
            return Path(out_dir) / ".frames"
        root = self.cfg.serve.render_output_dir
        return Path(root) / ".checkpoints" / re.sub(r"[^A-Za-z0-9._-]", "_", name) if root else None

    # -- the two kinds
    def _render(self, name: str, request: bytes, out_dir: str | None, progress, stop_asked):
        from ..errors import LDM3DError, renamed
        from ..render import render_job
        from ..v1 import renderer_pb2

        r = renderer_pb2.RenderRequest.FromString(request)
        spec, fields = self.renderer._checked_spec(r)  # the same checks as Submit, errors naming proto fields
        try:
            result = render_job(spec, out_dir, progress=progress, cancelled=stop_asked, limits=self.renderer.limits,
                                checkpoint_dir=self._checkpoint_dir(out_dir, name))
        except LDM3DError as exc:
            raise renamed(exc, fields) from None
        return self.renderer._to_proto(r.request_id, result)

    def _start_generation(self) -> None:
        from ..servers.admission import Admission
        from ..servers.downstream import LocalStages, RemoteStages
        from ..servers.models import ModelRegistry
        from ..servers.stages import Stages
        from ..servers.studio import StudioServicer

        cfg = self.cfg.serve
        self._loop = asyncio.new_event_loop()
        loop_thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="generation-loop")
        loop_thread.start()
        self._cleanup.append(lambda: self._loop.call_soon_threadsafe(self._loop.stop))
        registry = ModelRegistry(cfg, True)
        self._cleanup.append(registry.close)
        stages = Stages(Admission(self.cfg.concurrency, self.cfg.concurrency))
        self._cleanup.append(stages.close)
        down = RemoteStages({"text": None, "sampler": None, "autoencoder": None}, LocalStages(stages), [])
        self.studio = StudioServicer(registry, down, self.cfg.time_limit_s, 1)

    def _generate(self, name: str, request: bytes, out_dir: str | None, progress, stop_asked):
        from ..servers.downstream import Call
        from ..servers.stages import Step

        r = studio_pb2.GenerateRequest.FromString(request)

        async def run():
            job = await self.studio._prepare(r, "")  # the same validation and parameters as SubmitGenerate in-process
            events = self.studio._run(*job, Call(r.request_id, time.monotonic() + self.cfg.time_limit_s))
            result = None
            try:
                async for event in events:
                    if isinstance(event, Step):
                        await asyncio.to_thread(progress, event.step, event.total)
                        # a generation is short: SIGTERM lets it finish rather than handing it back
                        if await asyncio.to_thread(stop_asked, False):
                            raise Cancelled("cancelled")
                    else:
                        result = event
            finally:
                await events.aclose()  # stops the sampler thread within one step
            return result

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # dramatiq's time limit (raised in this thread) or anything else: stop the coroutine
            raise


#: a draining worker that cannot reach Redis gives up after this long (its unacknowledged job is requeued once
#: Redis is back, and resumes from its checkpoints): a SIGTERM must end the process within its grace period
DRAIN_GIVE_UP_S = 30.0


def _retry(fn, name: str, every_s: float = 1.0, draining: threading.Event | None = None):
    """``fn()``, retried while Redis is unreachable: a finished frame or result must not be lost to an outage."""
    warned = 0.0
    drain_seen = None
    while True:
        try:
            return fn()
        except _REDIS_DOWN as exc:
            if time.monotonic() - warned > 30:
                log.warning("%s: Redis unreachable (%s): retrying every %.0f s", name, exc, every_s)
                warned = time.monotonic()
            if draining is not None and draining.is_set():
                drain_seen = drain_seen or time.monotonic()
                if time.monotonic() - drain_seen > DRAIN_GIVE_UP_S:
                    raise
            time.sleep(every_s)
