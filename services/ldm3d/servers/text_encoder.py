"""TextEncoder servicer: prompts → embeddings (validate → stage → proto)."""

from __future__ import annotations

from ..errors import invalid
from ..pipeline.params import MAX_PROMPT_CHARS
from ..v1 import text_encoder_pb2 as pb
from ..v1 import text_encoder_pb2_grpc
from ..wire import tensors
from .models import ModelRegistry
from .stages import Stages

MAX_PROMPTS = 64


class TextEncoderServicer(text_encoder_pb2_grpc.TextEncoderServicer):
    def __init__(self, registry: ModelRegistry, stages: Stages):
        self.registry, self.stages = registry, stages

    async def Encode(self, request: pb.EncodeTextRequest, context) -> pb.EncodeTextResponse:
        prompts = list(request.prompts)
        if not 1 <= len(prompts) <= MAX_PROMPTS:
            raise invalid("prompts", f"<{len(prompts)} prompts>", f"send 1 to {MAX_PROMPTS} prompts per call")
        for i, p in enumerate(prompts):
            if len(p) > MAX_PROMPT_CHARS:
                raise invalid(f"prompts[{i}]", f"<{len(p)} characters>", f"at most {MAX_PROMPT_CHARS} characters")
        served = await self.registry.resolve(request.model, request.version, request.request_id)
        with self.registry.lease(served):
            enc = await self.stages.encode_text(served, prompts)
        return pb.EncodeTextResponse(
            request_id=request.request_id, embeddings=tensors.to_tensor(enc.embeddings),
            token_counts=enc.token_counts, truncated_tokens=enc.truncated_tokens, model_version=served.version)
