"""The queue: Dramatiq's Redis broker, one queue (and actor) per job kind, tuned for long jobs and quick failover.

Dramatiq's Redis broker keeps each queue as a Redis list of message ids (``ldm3d:dq:render``,
``ldm3d:dq:generate``: what KEDA measures) plus a hash of message bodies. A worker fetching a message moves its id
into a per-worker "acks" set and removes it only when the job returned (**ack after success**). Every broker command
also refreshes the worker's heartbeat; "maintenance" moves the unacked messages of workers whose heartbeat is older
than ``heartbeat_timeout`` back onto the queue. Upstream runs maintenance on a random 0.1 % of commands, which on a
quiet queue can take many minutes; here every worker runs it for its queues every ``heartbeat_timeout / 3`` (the
same Lua script, asked for deterministically), so a SIGKILLed worker's job is back on the queue within
``heartbeat_timeout + heartbeat_timeout / 3`` (20 s by default) and running again about a second later.

A busy worker keeps heartbeating: besides the queue it polls each queue's delay queue (``render.DQ``) at least once a
second, which is a broker command. The message only carries the operation's name; the request lives in the
operation record (:mod:`.store`), so a 30 MB panorama is not copied through the queue.
"""

from __future__ import annotations

import threading

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Retries, TimeLimit

from . import KINDS
from .store import connect, redact

NAMESPACE = "ldm3d:dq"
DEFAULT_HEARTBEAT_TIMEOUT_S = 15.0


class HandBack(Exception):
    """Raised by a job that stops without finishing (SIGTERM drain): Dramatiq's Retries puts it back on the queue."""


def queue_key(kind: str) -> str:
    """The Redis list holding ``kind``'s waiting message ids (KEDA's ``listName``)."""
    return f"{NAMESPACE}:{kind}"


class Broker(RedisBroker):
    """Dramatiq's Redis broker whose dead-worker maintenance can be asked for explicitly (:meth:`maintain`)."""

    def __init__(self, url: str, heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
                 time_limit_s: float = 6 * 3600.0):
        super().__init__(
            client=connect(url), namespace=NAMESPACE, heartbeat_timeout=int(heartbeat_timeout_s * 1000),
            middleware=[
                # jobs longer than this fail (DEADLINE_EXCEEDED on the operation); dramatiq's default is 10 minutes
                TimeLimit(time_limit=int(time_limit_s * 1000)),
                # only a hand-back is retried, at once; a failed job is recorded as failed, never rerun
                Retries(max_retries=None, min_backoff=100, max_backoff=1000,
                        retry_when=lambda _retries, exc: isinstance(exc, HandBack)),
            ])
        self.url = redact(url)  # for messages only
        self._maintaining = threading.local()
        self.actors_by_kind = {
            kind: dramatiq.Actor(_unbound(kind), broker=self, actor_name=kind, queue_name=kind, priority=0,
                                 options={}) for kind in KINDS}

    def _should_do_maintenance(self, command: str) -> int:
        if getattr(self._maintaining, "on", False):
            return 1
        return super()._should_do_maintenance(command)

    def maintain(self, queues) -> None:
        """Run Dramatiq's maintenance for ``queues`` now: dead workers' unacked messages go back on the queue."""
        self._maintaining.on = True
        try:
            for q in queues:
                self.do_qsize(q)  # any broker command carries the maintenance flag; qsize changes nothing
        finally:
            self._maintaining.on = False

    def bind(self, kind: str, fn) -> None:
        """Make ``fn(name)`` the code that runs ``kind`` jobs in this process (workers only)."""
        self.actors_by_kind[kind].fn = fn

    def enqueue_job(self, kind: str, name: str) -> None:
        self.actors_by_kind[kind].send(name)

    def waiting(self, kind: str) -> int:
        return int(self.client.llen(queue_key(kind)))


def _unbound(kind: str):
    def run(name: str) -> None:
        raise RuntimeError(f"this process only enqueues {kind} jobs: `ldm3d worker --kinds {kind}` runs them")

    run.__name__ = f"run_{kind}"
    return run
