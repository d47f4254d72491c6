"""Standard health checking (``grpc.health.v1``) that tells the truth: NOT_SERVING until the models are warm, and
on a gateway, NOT_SERVING for a service while a process it forwards to is not SERVING.

- ``""`` (the server as a whole, what liveness probes ask) is SERVING once started and warm; a gateway keeps it
  SERVING while a downstream service is down (restarting the gateway would not bring the stage back).
- each service name (what readiness probes ask) is SERVING when this process can answer its calls: in-process,
  once warm; forwarded, while the target reports SERVING for it (polled every ``interval_s`` seconds).

``Watch`` is grpc's, with one fix: grpcio's asyncio servicer drops a service's condition when *any* watcher leaves,
so the other watchers of that service never hear of a change again.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health.aio.HealthServicer):
    def __init__(self):
        super().__init__()
        self._server_status[""] = NOT_SERVING  # grpcio starts SERVING: not before the server is started and warm

    async def Watch(self, request: health_pb2.HealthCheckRequest, context) -> None:
        service = request.service
        if service not in self._server_status:
            # the names are fixed when the server starts: an unknown one stays unknown (and costs no condition)
            await context.write(health_pb2.HealthCheckResponse(status=SERVICE_UNKNOWN))
            await asyncio.Event().wait()  # until the client leaves or the server stops
        condition = self._server_watchers[service]
        last = None
        async with condition:
            while True:
                status = self._server_status.get(service, SERVICE_UNKNOWN)
                if status != last:
                    await context.write(health_pb2.HealthCheckResponse(status=status))
                    last = status
                await condition.wait()


class DownstreamMonitor:
    """A gateway's view of the processes it forwards to: polls each target's health for the service it needs and
    sets this server's status of every name that depends on it (a name is SERVING only when all its targets are)."""

    def __init__(self, health_servicer: HealthServicer, channels: dict[str, grpc.aio.Channel],
                 needs: dict[str, list[tuple[str, str]]], interval_s: float = 2.0):
        """``channels``: target → channel; ``needs``: our service name → [(target, the service it must serve)]."""
        self.health, self.channels, self.needs, self.interval_s = health_servicer, channels, needs, interval_s
        self.up: dict[tuple[str, str], bool] = {dep: False for deps in needs.values() for dep in deps}
        self._task: asyncio.Task | None = None
        self._stopping = False

    async def start(self) -> None:
        await self.poll()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def poll(self) -> None:
        results = await asyncio.gather(*(self._check(t, s) for t, s in self.up))
        for dep, ok in zip(list(self.up), results):
            if ok != self.up[dep]:
                (log.info if ok else log.warning)("downstream %s at %s is %s", dep[1], dep[0],
                                                  "SERVING again" if ok else "not SERVING")
            self.up[dep] = ok
        if self._stopping:
            return
        for name, deps in self.needs.items():
            await self.health.set(name, SERVING if all(self.up[d] for d in deps) else NOT_SERVING)

    async def _check(self, target: str, service: str) -> bool:
        stub = health_pb2_grpc.HealthStub(self.channels[target])
        try:
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.interval_s)
        except grpc.aio.AioRpcError:
            return False
        return resp.status == SERVING

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll()
            except Exception:  # noqa: BLE001 - a monitoring hiccup must not end the monitoring
                log.exception("health monitoring of the downstream services failed once")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
