"""Request ids: carried in the ``x-request-id`` metadata and in every message's ``request_id`` field.

Servers and the client use an id only in its safe form (:func:`safe_request_id`): it is echoed, logged, forwarded as
a header and used in operation names, so a client's line break, non-ASCII or megabyte id can forge no log line and
break no header.
"""

from __future__ import annotations

import hashlib
import re
import uuid

REQUEST_ID_KEY = "x-request-id"
MAX_REQUEST_ID_CHARS = 128
_UNSAFE = re.compile(r"[^A-Za-z0-9._~:@/+=-]")


def new_request_id() -> str:
    return uuid.uuid4().hex


def safe_request_id(raw: str) -> str:
    """A client's request id as the servers use it: printable ASCII without spaces (``[A-Za-z0-9._~:@/+=-]``, any
    other character becomes ``_``), at most 128 characters (a longer id keeps its first 115 and ``-`` + 12 hex digits
    of its SHA-256, so distinct long ids stay distinct). Safe as an HTTP/2 header, a log field and a file name part."""
    safe = _UNSAFE.sub("_", raw)
    if len(safe) > MAX_REQUEST_ID_CHARS:
        digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        safe = f"{safe[:MAX_REQUEST_ID_CHARS - 13]}-{digest}"
    return safe


def metadata(request_id: str = "") -> tuple[tuple[str, str], ...]:
    """The call metadata for ``request_id`` (made safe; a new id when empty)."""
    return ((REQUEST_ID_KEY, safe_request_id(request_id) if request_id else new_request_id()),)
