"""Typed errors <-> gRPC status, in one place for servers, the gateway's downstream calls and the client.

Servers send ``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer (what grpcio-status does) with a
``BadRequest.FieldViolation`` naming the field of an ``InvalidArgument``, a ``ResourceInfo`` whose
``resource_type`` is the field of a ``NotFound`` (``model``, ``version``, ``name``) and a ``RetryInfo`` for
``ResourceExhausted``. Clients rebuild the typed error from the code and those details, so an error raised three
services away reaches the user with its field and retry hint intact.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from .. import errors

log = logging.getLogger(__name__)

DETAILS_KEY = "grpc-status-details-bin"
GENERIC_INTERNAL = "internal error: the server logged the details under this request's id"

# grpc.StatusCode name → the typed error a client raises for it
_BY_CODE: dict[str, type[errors.LDM3DError]] = {
    cls.grpc_code: cls
    for cls in (errors.InvalidArgument, errors.NotFound, errors.FailedPrecondition, errors.ResourceExhausted,
                errors.Unavailable, errors.Cancelled, errors.DeadlineExceeded, errors.Unimplemented, errors.Internal)
}


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """The status code, message and trailing metadata for ``exc``; unknown exceptions become a generic INTERNAL."""
    status = status_proto(exc)
    code = grpc.StatusCode[code_pb2.Code.Name(status.code)]
    return code, status.message, ((DETAILS_KEY, status.SerializeToString()),)


def status_proto(exc: BaseException) -> status_pb2.Status:
    """``exc`` as a ``google.rpc.Status`` with its details (also the ``error`` of a failed long-running operation)."""
    if not isinstance(exc, errors.LDM3DError) or type(exc) is errors.LDM3DError:
        log.error("unhandled %s", exc.__class__.__name__, exc_info=exc)
        exc = errors.Internal(GENERIC_INTERNAL)
    elif isinstance(exc, errors.Internal):
        log.error("internal error: %s", exc, exc_info=exc)
    status = status_pb2.Status(code=getattr(code_pb2, exc.grpc_code), message=exc.message)
    if isinstance(exc, errors.InvalidArgument) and exc.field:
        br = error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=exc.message)])
        status.details.add().Pack(br)
    if isinstance(exc, errors.NotFound) and exc.field:
        status.details.add().Pack(error_details_pb2.ResourceInfo(resource_type=exc.field, description=exc.message))
    if isinstance(exc, errors.ResourceExhausted) and exc.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(exc.retry_after_s * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


def from_rpc_error(err: grpc.RpcError, target: str = "") -> errors.LDM3DError:
    """Rebuild the typed error a server raised from a failed call (sync or aio), keeping field and retry hint."""
    code = err.code()
    details = next((v for k, v in (err.trailing_metadata() or ()) if k == DETAILS_KEY), None)
    field, retry = _details(status_pb2.Status.FromString(details)) if details else (None, None)
    return _typed(code.name, err.details() or code.name, field, retry, target)


def from_status_proto(st: status_pb2.Status, target: str = "") -> errors.LDM3DError:
    """A ``google.rpc.Status`` (e.g. a failed operation's ``error``) → the typed error."""
    return _typed(code_pb2.Code.Name(st.code), st.message, *_details(st), target)


def _details(st: status_pb2.Status) -> tuple[str | None, float | None]:
    field, retry = None, None
    for any_ in st.details:
        if any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            any_.Unpack(br)
            if br.field_violations:
                field = br.field_violations[0].field
        elif any_.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            ri = error_details_pb2.ResourceInfo()
            any_.Unpack(ri)
            field = field or ri.resource_type
        elif any_.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            ri = error_details_pb2.RetryInfo()
            any_.Unpack(ri)
            retry = ri.retry_delay.ToNanoseconds() / 1e9
    return field, retry


def _typed(code: str, message: str, field: str | None, retry: float | None, target: str) -> errors.LDM3DError:
    if code == "UNAVAILABLE" and target:
        message = f"{target} is unavailable ({message})"
    cls = _BY_CODE.get(code, errors.Internal)
    if cls is errors.ResourceExhausted:
        return errors.ResourceExhausted(message, field=field, retry_after_s=retry)
    return cls(message, field=field)
