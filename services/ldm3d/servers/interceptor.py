"""The one server interceptor: request id, metrics, logs, and typed errors → gRPC status (like TGI's and KServe's).

Servicers raise :mod:`ldm3d.errors` types and never touch status codes; this maps them once (see :mod:`.status`).
``asyncio.CancelledError`` (the client cancelled, or its deadline passed) propagates untouched.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from ..errors import InvalidArgument
from ..wire.ids import REQUEST_ID_KEY, new_request_id
from ..wire.status import to_status
from . import metrics
from .logs import request_id

log = logging.getLogger(__name__)

# Health and reflection are called by probes every few seconds: counted, but never logged per call.
_QUIET_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


class ServerInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or handler.request_streaming:
            return handler  # no client-streaming RPCs in ldm3d.v1; health/reflection's streams pass as they are
        method = details.method
        header_id = dict(details.invocation_metadata or ()).get(REQUEST_ID_KEY, "")
        quiet = method.startswith(_QUIET_PREFIXES)
        parse = _lenient(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary, method, header_id, quiet),
                request_deserializer=parse, response_serializer=handler.response_serializer)
        return grpc.unary_stream_rpc_method_handler(
            _stream(handler.unary_stream, method, header_id, quiet),
            request_deserializer=parse, response_serializer=handler.response_serializer)


class _Undecodable:
    def __init__(self, error: Exception):
        self.error = error


def _lenient(deserialize):
    """Bytes that do not parse become a value the handler refuses with INVALID_ARGUMENT (gRPC would say UNKNOWN)."""
    if deserialize is None:
        return None

    def parse(data: bytes):
        try:
            return deserialize(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError and friends
            return _Undecodable(exc)

    return parse


def _check_decoded(request, method: str):
    if isinstance(request, _Undecodable):
        raise InvalidArgument(f"the request is not a valid {method.rsplit('/', 1)[-1]} request message "
                              f"({request.error})", field="request")


def _bind_request_id(request, header_id: str) -> str:
    """The message's ``request_id``, else the metadata's, else a new one; written back so servicers echo it."""
    rid = getattr(request, "request_id", "") or header_id or new_request_id()
    if hasattr(request, "request_id") and not request.request_id:
        request.request_id = rid
    request_id.set(rid)
    return rid


class _Call:
    """Bookkeeping of one RPC: in-flight gauge, latency, the final code, one log line."""

    def __init__(self, method: str, quiet: bool):
        self.method, self.quiet, self.t0 = method, quiet, time.perf_counter()
        self.code = "OK"
        metrics.IN_FLIGHT.labels(method).inc()

    async def fail(self, context, exc: Exception):
        if isinstance(exc, grpc.aio.AbortError):  # a servicer aborted on purpose: the status is already set
            self.code = (context.code() or grpc.StatusCode.UNKNOWN).name
            raise exc
        code, message, trailers = to_status(exc)
        self.code = code.name
        await context.abort(code, message, trailing_metadata=trailers)

    def done(self):
        elapsed = time.perf_counter() - self.t0
        metrics.IN_FLIGHT.labels(self.method).dec()
        metrics.LATENCY.labels(self.method).observe(elapsed)
        metrics.REQUESTS.labels(self.method, self.code).inc()
        if not self.quiet:
            log.info("%s %s %.1f ms", self.method, self.code, elapsed * 1e3,
                     extra={"method": self.method, "code": self.code, "ms": round(elapsed * 1e3, 2)})


def _unary(behavior, method: str, header_id: str, quiet: bool):
    async def handle(request, context):
        call = _Call(method, quiet)
        try:
            _check_decoded(request, method)
            _bind_request_id(request, header_id)
            return await behavior(request, context)
        except asyncio.CancelledError:
            call.code = "CANCELLED"
            raise
        except Exception as exc:  # noqa: BLE001 - mapped (or re-raised) in one place
            await call.fail(context, exc)
        finally:
            call.done()

    return handle


def _stream(behavior, method: str, header_id: str, quiet: bool):
    async def handle(request, context):
        call = _Call(method, quiet)
        try:
            _check_decoded(request, method)
            _bind_request_id(request, header_id)
            async for response in behavior(request, context):
                yield response
        except (GeneratorExit, asyncio.CancelledError):
            call.code = "CANCELLED"
            raise
        except Exception as exc:  # noqa: BLE001
            await call.fail(context, exc)
        finally:
            call.done()

    return handle
