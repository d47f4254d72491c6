"""Typed domain errors, mapped once to gRPC status codes (servers) and to exit codes (CLI).

Every message names the field (flag or proto field), the value received and what to use instead, so that a
user can fix the request without reading our code. Code raising these never formats tracebacks for users.
"""

from __future__ import annotations

import copy


class LDM3DError(Exception):
    """Base of every error a user can act on. ``grpc_code`` is the name of a ``grpc.StatusCode`` member."""

    grpc_code = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:  # the message alone, never the class name: users read it
        return self.message


class InvalidArgument(LDM3DError):
    """The request is malformed; ``field`` names the offending flag or proto field."""

    grpc_code = "INVALID_ARGUMENT"


class NotFound(LDM3DError):
    """A model, version, checkpoint folder or file does not exist."""

    grpc_code = "NOT_FOUND"


class FailedPrecondition(LDM3DError):
    """The system is not in a state to serve the request (e.g. a corrupted model file)."""

    grpc_code = "FAILED_PRECONDITION"


class ResourceExhausted(LDM3DError):
    """Admission control or a configured size limit refused the work; ``retry_after_s`` hints when to retry."""

    grpc_code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, field: str | None = None, retry_after_s: float | None = None):
        super().__init__(message, field=field)
        self.retry_after_s = retry_after_s


class Unavailable(LDM3DError):
    """A downstream service or model server cannot be reached."""

    grpc_code = "UNAVAILABLE"


class Cancelled(LDM3DError):
    """The caller cancelled the work."""

    grpc_code = "CANCELLED"


class DeadlineExceeded(LDM3DError):
    """The caller's deadline passed before the work finished."""

    grpc_code = "DEADLINE_EXCEEDED"


class Unimplemented(LDM3DError):
    grpc_code = "UNIMPLEMENTED"


class Internal(LDM3DError):
    """A bug or a broken invariant on our side; the message is generic, the traceback goes to the log."""

    grpc_code = "INTERNAL"


def invalid(field: str, value, expected: str) -> InvalidArgument:
    """Build the standard ``InvalidArgument``: ``<field>=<value> is invalid: <expected>``."""
    return InvalidArgument(f"{field}={value!r} is invalid: {expected}", field=field)


def renamed(exc: LDM3DError, names) -> LDM3DError:
    """``exc`` naming the field ``names[exc.field]`` instead (a library's name → the interface's: a proto field, a
    flag), its message led by the new name unless it already holds it; ``exc`` itself when there is nothing to
    rename. Every other attribute (``retry_after_s``) is kept."""
    field = names.get(exc.field) if exc.field else None
    if field is None or field == exc.field:
        return exc
    new = copy.copy(exc)
    new.field = field
    new.message = exc.message if field in exc.message else f"{field}: {exc.message}"
    new.args = (new.message,)
    return new
