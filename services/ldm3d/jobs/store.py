"""Operation records in Redis: what any front replica answers ``GetOperation`` from, and what workers update.

One hash per operation, ``ldm3d:op:<name>`` (``name`` is ``renders/<id>`` or ``operations/<id>``, as in-process):

==============  ==========================================================================================
``kind``        ``render`` or ``generate`` (the Dramatiq queue and actor that run it)
``request``     the serialized request proto (``RenderRequest`` / ``GenerateRequest``), as submitted
``meta``        the serialized ``RenderMetadata`` / ``GenerateMetadata``: state, progress, times, message
``result``      the serialized ``RenderResult`` / ``GenerateResult`` once succeeded (artifacts: files in the
                shared ``--render-output-dir`` as paths, or small ones as bytes)
``error``       the serialized ``google.rpc.Status`` once failed or cancelled
``done``        ``1`` once finished; set only by :data:`_FINISH`, the completion guard
``cancel``      ``1`` once ``CancelOperation`` was asked (the running worker polls it between frames/steps)
``attempts``    how many times a worker started running it (> 1 after a lost worker or a hand-back)
``completions`` how many times the guard accepted a completion: 1 for a finished job, never more
``out_dir``     a files render's job folder (shared by the front that made it and the workers)
``ttl_ms``      how long the record stays once finished (the front's ``--result-ttl``)
==============  ==========================================================================================

A running job holds a **lease** ``ldm3d:lease:<name>`` (a redis-py ``Lock``: a token with a TTL that the worker
extends while it runs). A second delivery of the same message (Dramatiq redelivers when it believes a worker dead)
finds the lease held and waits instead of running the job twice; if the holder really died the lease expires and
the waiting worker takes over. :data:`_FINISH` writes a result only if the job is not done yet and the lease (if
any) is the writer's: the first completion wins, every later one is refused, in one atomic step inside Redis.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis

from ..errors import NotFound, Unavailable

RECORD = "ldm3d:op:"
LEASE = "ldm3d:lease:"

# KEYS: record, lease. ARGV: lease token ('' = no lease: only when nobody holds one), meta, result field name
# ('' for none), its value, ttl in ms. Returns 1 (written), 0 (already done), -1 (another holder), -2 (no record).
_FINISH = """
if redis.call('exists', KEYS[1]) == 0 then return -2 end
if redis.call('hget', KEYS[1], 'done') == '1' then return 0 end
local holder = redis.call('get', KEYS[2])
if holder and holder ~= ARGV[1] then return -1 end
redis.call('hset', KEYS[1], 'done', '1', 'meta', ARGV[2])
if ARGV[3] ~= '' then redis.call('hset', KEYS[1], ARGV[3], ARGV[4]) end
redis.call('hincrby', KEYS[1], 'completions', 1)
redis.call('pexpire', KEYS[1], ARGV[5])
return 1
"""

# KEYS: record. ARGV: meta. Progress never overwrites a finished job's final metadata.
_UPDATE = """
if redis.call('exists', KEYS[1]) == 0 or redis.call('hget', KEYS[1], 'done') == '1' then return 0 end
redis.call('hset', KEYS[1], 'meta', ARGV[1])
return 1
"""


def redact(url: str) -> str:
    """The queue URL as logs and error messages show it: a password (``redis://:PASSWORD@HOST:PORT/DB``, or
    ``?password=``) becomes ``***``. Never print or log a queue URL without it."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
            netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
        query = "&".join(("password=***" if q.lower().startswith("password=") else q)
                         for q in parts.query.split("&")) if parts.query else ""
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # unparseable: show nothing of it rather than a secret
        return "<the queue URL>"


def connect(url: str) -> redis.Redis:
    """A client that fails fast when Redis is down (callers turn that into UNAVAILABLE) and reconnects by itself."""
    return redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=10.0, health_check_interval=15)


def unavailable(url: str, exc: BaseException) -> Unavailable:
    if isinstance(exc, redis.AuthenticationError):  # NOAUTH / WRONGPASS: reachable, but our password is not its
        return Unavailable(f"the job queue at {redact(url)} refused the password in its URL ({exc}): set the one "
                           "Redis requires (redis://:PASSWORD@HOST:PORT/DB; on Kubernetes the Secret ldm3d-redis)")
    return Unavailable(f"the job queue at {redact(url)} is unreachable ({exc.__class__.__name__}: {exc}): retry when it is "
                       "back (operations already accepted are kept there)")


class OperationStore:
    def __init__(self, url: str, client: redis.Redis | None = None):
        self.url = redact(url)  # for messages only
        self.redis = client or connect(url)
        self._finish = self.redis.register_script(_FINISH)
        self._update = self.redis.register_script(_UPDATE)

    # -- the front
    def create(self, name: str, kind: str, request: bytes, meta: bytes, ttl_s: float, out_dir: str = "") -> bool:
        """Create the record; False if ``name`` is taken (the caller picks another)."""
        key = RECORD + name
        if not self.redis.hsetnx(key, "kind", kind):
            return False
        self.redis.hset(key, mapping={"request": request, "meta": meta, "attempts": 0, "completions": 0,
                                      "out_dir": out_dir, "ttl_ms": int(ttl_s * 1000)})
        return True

    def delete(self, name: str) -> None:
        self.redis.delete(RECORD + name)

    def record(self, name: str) -> dict[str, bytes] | None:
        raw = self.redis.hgetall(RECORD + name)
        return {k.decode(): v for k, v in raw.items()} if raw else None

    def require(self, name: str, fields: tuple[str, ...] | None = None) -> dict[str, bytes]:
        """The record (only ``fields`` if given: polling must not fetch the request's panorama every time)."""
        if fields is None:
            rec = self.record(name)
        else:
            values = self.redis.hmget(RECORD + name, ("kind", *fields))
            rec = {k: v for k, v in zip(("kind", *fields), values) if v is not None} or None
        if rec is None or "kind" not in rec:
            raise NotFound(f"name={name!r}: no such operation (it never existed, or it finished longer ago than the "
                           "queue's --result-ttl)", field="name")
        return rec

    def ask_cancel(self, name: str) -> None:
        self.redis.hset(RECORD + name, "cancel", 1)

    # -- the worker
    def lease(self, name: str, ttl_s: float):
        """The job's lease (not yet acquired): ``acquire(blocking=False)``, ``extend``, ``release``."""
        return self.redis.lock(LEASE + name, timeout=ttl_s, blocking=False, thread_local=False)

    def update(self, name: str, meta: bytes) -> bool:
        return bool(self._update(keys=[RECORD + name], args=[meta]))

    def started(self, name: str, meta: bytes, worker: str) -> int:
        """Record that ``worker`` started the job (holding its lease); returns the attempt number."""
        pipe = self.redis.pipeline()
        pipe.hincrby(RECORD + name, "attempts", 1)
        pipe.hset(RECORD + name, mapping={"meta": meta, "worker": worker})
        return int(pipe.execute()[0])

    def cancel_requested(self, name: str) -> bool:
        return self.redis.hget(RECORD + name, "cancel") == b"1"

    def finish(self, name: str, meta: bytes, *, token: bytes | str = "", result: bytes | None = None,
               error: bytes | None = None, ttl_ms: int) -> int:
        """The completion guard (:data:`_FINISH`): 1 written, 0 already done, -1 leased by another, -2 gone."""
        field, value = ("", b"")
        if result is not None:
            field, value = "result", result
        elif error is not None:
            field, value = "error", error
        return int(self._finish(keys=[RECORD + name, LEASE + name], args=[token, meta, field, value, ttl_ms]))
