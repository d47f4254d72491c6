"""Long-running operations (``google.longrunning.Operation``) for generations and render jobs: submit, poll, cancel.

Kept in this process's memory, ``max_operations`` at most. An accepted operation is never dropped before it is done
and ``ttl_s`` has passed (so a client that was just given a name can always read the outcome); only then, and
only when the store is full, is it forgotten, oldest first. A full store refuses new operations at submit time
(RESOURCE_EXHAUSTED with a retry hint) instead of evicting. With ``--queue`` the servicers use :mod:`ldm3d.jobs`
instead: records in Redis, jobs run by ``ldm3d worker``s.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from google.longrunning import operations_pb2
from google.protobuf import timestamp_pb2

from ..errors import Cancelled, NotFound, ResourceExhausted, shown
from ..v1 import renderer_pb2
from ..v1 import studio_pb2 as pb
from ..wire import tensors
from ..wire.status import status_proto
from .stages import Step

PREFIX = "operations/"


class _Op:
    #: the metadata message: every kind has request_id, state, progress and the two times
    meta_type = pb.GenerateMetadata

    def __init__(self, name: str, request_id: str):
        self.name, self.task = name, None
        self.done_at: float | None = None  # time.monotonic() when it finished
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        self.meta = self.meta_type(request_id=request_id, state=pb.OPERATION_STATE_QUEUED, create_time=now,
                                   update_time=now)
        self.result: pb.GenerateResult | None = None
        self.error = None

    def touch(self, state=None, step: Step | None = None):
        if state is not None:
            self.meta.state = state
        if step is not None:
            self.meta.progress.CopyFrom(tensors.progress(step.step, step.total, step.elapsed_s))
        self.meta.update_time.GetCurrentTime()

    def to_proto(self) -> operations_pb2.Operation:
        op = operations_pb2.Operation(name=self.name, done=self.meta.state in _DONE)
        op.metadata.Pack(self.meta)
        if self.result is not None:
            op.response.Pack(self.result)
        elif self.error is not None:
            op.error.CopyFrom(self.error)
        return op


_DONE = (pb.OPERATION_STATE_SUCCEEDED, pb.OPERATION_STATE_FAILED, pb.OPERATION_STATE_CANCELLED)


class Operations:
    #: operation names are ``<prefix><request id>``; subclasses set their own prefix and metadata type
    prefix = PREFIX
    op_class = _Op

    def __init__(self, max_operations: int, ttl_s: float = 3600.0):
        self.max_operations, self.ttl_s = max_operations, ttl_s
        self._ops: OrderedDict[str, _Op] = OrderedDict()

    def check_room(self) -> None:
        """Raise ``ResourceExhausted`` (with a retry hint) if a new operation could not be kept now."""
        self._evict()

    def start(self, request_id: str, events: AsyncIterator, on_done=None) -> operations_pb2.Operation:
        """Run ``events`` as a new operation; ``on_done()`` is called once it ends, however it ends."""
        self._evict()
        name = self.prefix + (request_id or uuid.uuid4().hex)
        if name in self._ops:
            name = f"{name}-{uuid.uuid4().hex[:8]}"
        op = self._ops[name] = self.op_class(name, request_id)
        op.task = asyncio.get_running_loop().create_task(self._drive(op, events, on_done))
        return op.to_proto()

    def get(self, name: str) -> operations_pb2.Operation:
        return self._find(name).to_proto()

    async def cancel(self, name: str) -> None:
        op = self._find(name)
        if op.task is not None and not op.task.done():
            op.task.cancel()
            await asyncio.wait([op.task])

    async def close(self) -> None:
        for op in self._ops.values():
            if op.task is not None and not op.task.done():
                op.task.cancel()
        tasks = [op.task for op in self._ops.values() if op.task is not None]
        if tasks:
            await asyncio.wait(tasks)

    async def _drive(self, op: _Op, events: AsyncIterator, on_done=None) -> None:
        t0 = time.perf_counter()
        try:
            async for event in events:
                if isinstance(event, Step):
                    op.touch(pb.OPERATION_STATE_RUNNING, event)
                else:
                    op.result = event
            op.touch(pb.OPERATION_STATE_SUCCEEDED)
        except asyncio.CancelledError:
            op.error = status_proto(Cancelled(f"cancelled by CancelOperation after {time.perf_counter() - t0:.1f} s"))
            op.touch(pb.OPERATION_STATE_CANCELLED)
        except Exception as exc:  # noqa: BLE001 - recorded on the operation, mapped like a call's error
            op.error = status_proto(exc)
            op.touch(pb.OPERATION_STATE_FAILED)
        finally:
            op.done_at = time.monotonic()
            try:
                await events.aclose()
            finally:
                if on_done is not None:
                    on_done()

    def _find(self, name: str) -> _Op:
        op = self._ops.get(name)
        if op is None:
            raise NotFound(f"name={shown(name)}: no such operation (it never existed, or it finished more than "
                           f"{self.ttl_s:g} s ago and was forgotten)", field="name")
        return op

    def _evict(self) -> None:
        """Make room for one more: forget expired operations (done more than ``ttl_s`` ago), oldest first."""
        now = time.monotonic()
        while len(self._ops) >= self.max_operations:
            expired = next((n for n, o in self._ops.items()
                            if o.done_at is not None and now - o.done_at >= self.ttl_s), None)
            if expired is None:
                ends = [o.done_at + self.ttl_s - now for o in self._ops.values() if o.done_at is not None]
                retry = round(min(ends), 1) if ends else 5.0
                running = sum(o.done_at is None for o in self._ops.values())
                raise ResourceExhausted(
                    f"{len(self._ops)} operations are kept ({running} not done; finished ones stay readable for "
                    f"{self.ttl_s:g} s), the limit (--max-operations {self.max_operations}): retry in {retry:g} s",
                    retry_after_s=max(0.1, retry))
            del self._ops[expired]


@dataclass(frozen=True)
class RenderStep(Step):
    """One finished unit of a render job (a :class:`Step`, so the operations store records it as progress)."""

    message: str = ""


class _RenderOp(_Op):
    """An operation whose metadata is a ``RenderMetadata`` (same state/progress/time fields, plus a message)."""

    meta_type = renderer_pb2.RenderMetadata

    def touch(self, state=None, step: Step | None = None):
        super().touch(state, step)
        if isinstance(step, RenderStep):
            self.meta.message = step.message


class RenderOperations(Operations):
    """The Studio's operations store, naming render jobs ``renders/<request id>``."""

    prefix = "renders/"
    op_class = _RenderOp


class _PanoOp(_Op):
    """A ``SubmitPano`` operation: ``PanoMetadata`` (the running stage, its progress and, rendering, the message)."""

    meta_type = pb.PanoMetadata

    def touch(self, state=None, step: Step | None = None):
        if step is not None:
            self.meta.stage = "render" if isinstance(step, RenderStep) else "generate"
            self.meta.message = step.message if isinstance(step, RenderStep) else ""
        super().touch(state, step)


class PanoOperations(Operations):
    """The Studio's ``SubmitPano`` operations, named ``panos/<request id>``."""

    prefix = "panos/"
    op_class = _PanoOp
