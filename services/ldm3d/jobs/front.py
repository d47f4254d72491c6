"""What a serving process with ``--queue`` uses instead of its in-memory operations: submit, get, cancel.

    queue = JobQueue(cfg.queue, cfg.result_ttl_s)
    op = await queue.submit("render", "renders/", request.request_id, request)      # the servicer validated it
    op = await queue.get("render", "renders/abc")                                     # any replica, any time
    await queue.cancel("render", "renders/abc")

Redis calls are blocking (redis-py, as Dramatiq uses it), so they run in threads and the event loop keeps
answering health checks. Redis unreachable: every call raises ``Unavailable`` naming the queue's URL; the serving
process stays healthy (its other services keep working) and the next call after Redis returns succeeds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid

import redis
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import status_pb2

from ..errors import Cancelled, NotFound
from ..v1 import renderer_pb2, studio_pb2
from . import KINDS
from .broker import Broker
from .store import OperationStore, redact, unavailable

log = logging.getLogger(__name__)

#: kind → (metadata type, result type, operation name prefix)
TYPES = {
    "render": (renderer_pb2.RenderMetadata, renderer_pb2.RenderResult, "renders/"),
    "generate": (studio_pb2.GenerateMetadata, studio_pb2.GenerateResult, "operations/"),
}
_STATUS_FIELDS = ("meta", "done", "result", "error", "ttl_ms")  # what an Operation is built from (not the request)
_DONE = (studio_pb2.OPERATION_STATE_SUCCEEDED, studio_pb2.OPERATION_STATE_FAILED,
         studio_pb2.OPERATION_STATE_CANCELLED)


def now() -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.GetCurrentTime()
    return t


def to_operation(name: str, kind: str, rec: dict[str, bytes]) -> operations_pb2.Operation:
    """A record as the ``google.longrunning.Operation`` the in-process store would return."""
    meta_cls, result_cls, _ = TYPES[kind]
    meta = meta_cls.FromString(rec.get("meta", b""))
    op = operations_pb2.Operation(name=name, done=rec.get("done") == b"1" and meta.state in _DONE)
    op.metadata.CopyFrom(any_pb2.Any(type_url="type.googleapis.com/" + meta_cls.DESCRIPTOR.full_name,
                                     value=rec.get("meta", b"")))
    if op.done and rec.get("result"):
        op.response.CopyFrom(any_pb2.Any(type_url="type.googleapis.com/" + result_cls.DESCRIPTOR.full_name,
                                         value=rec["result"]))
    elif op.done and rec.get("error"):
        op.error.CopyFrom(status_pb2.Status.FromString(rec["error"]))
    return op


class JobQueue:
    def __init__(self, url: str, result_ttl_s: float):
        self.url, self.result_ttl_s = redact(url), result_ttl_s  # self.url: for messages only
        self.broker = Broker(url)
        self.store = OperationStore(url, self.broker.client)
        self._maintenance: asyncio.Task | None = None

    async def submit(self, kind: str, request_id: str, request, out_dir: str = "") -> operations_pb2.Operation:
        """Record the job (state QUEUED) and put its name on ``kind``'s queue; the request must be valid."""
        return await self._call(self._submit, kind, request_id, request, out_dir)

    async def get(self, kind: str, name: str) -> operations_pb2.Operation:
        return await self._call(self._get, kind, name)

    async def cancel(self, kind: str, name: str, wait_s: float = 10.0) -> None:
        """Ask the job to stop: one not started yet is cancelled at once, a running one by its worker at its next
        frame/step. Returns once the job is done, as in-process, or after ``wait_s`` (a worker that died meanwhile
        cancels it when its job is picked up again)."""
        await self._call(self._cancel, kind, name)
        end = time.monotonic() + wait_s
        while time.monotonic() < end and not (await self._call(self._get, kind, name)).done:
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.wait([self._maintenance])
        self.broker.client.close()

    async def _maintain(self) -> None:
        """Requeue dead workers' jobs from here too: with every worker of a kind gone (a ScaledJob's pod lost, a
        Deployment scaled to zero) nobody else would, and KEDA only sees jobs that are back on the queue."""
        while True:
            await asyncio.sleep(self.broker.heartbeat_timeout / 3000)
            try:
                await asyncio.to_thread(self.broker.maintain, KINDS)
            except redis.RedisError as exc:
                log.debug("queue maintenance: %s", exc)

    # -- blocking parts, in threads
    async def _call(self, fn, *args):
        if self._maintenance is None:
            self._maintenance = asyncio.get_running_loop().create_task(self._maintain())
        try:
            return await asyncio.to_thread(functools.partial(fn, *args))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise unavailable(self.url, exc) from None

    def _submit(self, kind: str, request_id: str, request, out_dir: str) -> operations_pb2.Operation:
        meta_cls, _, prefix = TYPES[kind]
        meta = meta_cls(request_id=request_id, state=studio_pb2.OPERATION_STATE_QUEUED, create_time=now(),
                        update_time=now())
        base = prefix + (request_id or uuid.uuid4().hex)
        data = request.SerializeToString()
        for name in (base, f"{base}-{uuid.uuid4().hex[:8]}", f"{base}-{uuid.uuid4().hex}"):
            if self.store.create(name, kind, data, meta.SerializeToString(), self.result_ttl_s, out_dir):
                break
        try:
            self.broker.enqueue_job(kind, name)
        except BaseException:
            self.store.delete(name)  # not queued: no record that would stay QUEUED forever
            raise
        log.info("queued %s on %s", name, self.url)
        return to_operation(name, kind, self.store.require(name, _STATUS_FIELDS))

    def _get(self, kind: str, name: str) -> operations_pb2.Operation:
        return to_operation(name, kind, self._record(kind, name))

    def _record(self, kind: str, name: str) -> dict[str, bytes]:
        rec = self.store.require(name, _STATUS_FIELDS)
        if rec["kind"].decode() != kind:  # a render's name asked of the Studio, or the reverse: as in-process
            raise NotFound(f"name={name!r} is a {rec['kind'].decode()} operation: ask the service that took it "
                           f"({'PanoramaRenderer' if kind == 'generate' else 'Studio'})", field="name")
        return rec

    def _cancel(self, kind: str, name: str) -> None:
        from ..wire.status import status_proto

        rec = self._record(kind, name)
        if rec.get("done") == b"1":
            return
        self.store.ask_cancel(name)
        meta = TYPES[kind][0].FromString(rec["meta"])
        if meta.state != studio_pb2.OPERATION_STATE_QUEUED:
            return  # running: its worker sees the flag at its next frame/step and records the cancellation
        meta.state = studio_pb2.OPERATION_STATE_CANCELLED
        meta.update_time.CopyFrom(now())
        error = status_proto(Cancelled("cancelled by CancelOperation before a worker started it"))
        # refused (-1) when a worker took the lease meanwhile: that worker sees the flag and cancels
        self.store.finish(name, meta.SerializeToString(), error=error.SerializeToString(),
                          ttl_ms=int(rec.get("ttl_ms", b"0")) or int(self.result_ttl_s * 1000))
