"""DepthEvaluator and PanoramaRenderer: declared in ldm3d.v1, implemented with their own issues.

Until then every method answers UNIMPLEMENTED saying so (and the servers' health and reflection list them).
"""

from __future__ import annotations

from ..errors import Unimplemented
from ..v1 import depth_pb2_grpc, renderer_pb2_grpc


def _later(rpc: str, issue: str):
    async def method(self, request, context):
        raise Unimplemented(f"{rpc} is declared in ldm3d.v1 but not implemented yet: it comes with the {issue} issue")

    method.__name__ = rpc.rsplit(".", 1)[1]
    return method


class DepthEvaluatorServicer(depth_pb2_grpc.DepthEvaluatorServicer):
    Estimate = _later("DepthEvaluator.Estimate", "depth evaluation")
    Evaluate = _later("DepthEvaluator.Evaluate", "depth evaluation")


class PanoramaRendererServicer(renderer_pb2_grpc.PanoramaRendererServicer):
    Submit = _later("PanoramaRenderer.Submit", "360 rendering")
    GetOperation = _later("PanoramaRenderer.GetOperation", "360 rendering")
    CancelOperation = _later("PanoramaRenderer.CancelOperation", "360 rendering")
