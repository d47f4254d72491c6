"""Request ids: carried in the ``x-request-id`` metadata and in every message's ``request_id`` field."""

from __future__ import annotations

import uuid

REQUEST_ID_KEY = "x-request-id"


def new_request_id() -> str:
    return uuid.uuid4().hex


def metadata(request_id: str = "") -> tuple[tuple[str, str], ...]:
    """The call metadata for ``request_id`` (a new id when empty)."""
    return ((REQUEST_ID_KEY, request_id or new_request_id()),)
