"""How the gateway reaches the three stages: in-process (the default) or over gRPC, chosen per stage by config.

Both give the same answers for the same inputs (tests check bit equality). The gRPC path sends the request id
as ``x-request-id``, gives every call the gateway call's remaining deadline, and turns a failed call back into the
typed error the downstream service raised (:func:`ldm3d.wire.status.from_rpc_error`), so codes, fields and retry hints
reach the client unchanged; an unreachable service is UNAVAILABLE naming it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np

from ..errors import DeadlineExceeded
from ..pipeline import EncodedText, GenerateParams
from ..v1 import autoencoder_pb2, autoencoder_pb2_grpc, common_pb2, sampler_pb2_grpc
from ..v1 import text_encoder_pb2, text_encoder_pb2_grpc
from ..wire import ids, tensors
from ..wire.generate import to_sample_request
from ..wire.status import from_rpc_error
from .models import ServedModel
from .stages import Sampled, Stages, Step


@dataclass(frozen=True)
class Call:
    """The gateway call a downstream call serves: its id and absolute deadline (``time.monotonic()``)."""

    request_id: str
    deadline: float

    def timeout(self, what: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"the deadline passed before {what}")
        return left

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ids.metadata(self.request_id)


class LocalStages:
    """In-process: the stages of this process's own pipeline."""

    def __init__(self, stages: Stages):
        self.stages = stages

    async def encode_text(self, served: ServedModel, prompts: list[str], call: Call) -> EncodedText:
        return await self.stages.encode_text(served, prompts)

    async def sample(self, served: ServedModel, cond, uncond, p: GenerateParams, init, call: Call
                     ) -> AsyncIterator[Step | Sampled]:
        async for event in self.stages.sample(served, cond, uncond, p, init):
            yield event

    async def decode(self, served: ServedModel, latents: np.ndarray, raw: bool, call: Call) -> list[common_pb2.RGBD]:
        return (await self.stages.decode_images(served, latents, raw))[1]

    async def encode_rgbd(self, served: ServedModel, rgb, depth, call: Call) -> np.ndarray:
        return await self.stages.encode_rgbd(served, rgb, depth)


class RemoteStages:
    """Over gRPC: one channel per configured service (targets None fall back to ``local``)."""

    def __init__(self, targets: dict[str, str | None], local: LocalStages | None, options: list[tuple[str, int]]):
        self.targets, self.local = targets, local
        # round_robin over every address a name resolves to: behind a headless Kubernetes Service, replicas added
        # by an autoscaler get calls from existing gateways too (pick_first would pin each gateway to one pod).
        # The stages are stateless per call, so any replica may serve any call.
        balanced = [*options, ("grpc.lb_policy_name", "round_robin")]
        self._channels = {k: grpc.aio.insecure_channel(t, options=balanced) for k, t in targets.items() if t}
        ch = self._channels
        self.text = text_encoder_pb2_grpc.TextEncoderStub(ch["text"]) if "text" in ch else None
        self.sampler = sampler_pb2_grpc.DiffusionSamplerStub(ch["sampler"]) if "sampler" in ch else None
        self.vae = autoencoder_pb2_grpc.RGBDAutoencoderStub(ch["autoencoder"]) if "autoencoder" in ch else None

    async def encode_text(self, served: ServedModel, prompts: list[str], call: Call) -> EncodedText:
        if self.text is None:
            return await self.local.encode_text(served, prompts, call)
        req = text_encoder_pb2.EncodeTextRequest(request_id=call.request_id, prompts=prompts, model=served.name,
                                                 version=served.version)
        try:
            resp = await self.text.Encode(req, timeout=call.timeout("text encoding"), metadata=call.metadata)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, f"TextEncoder at {self.targets['text']}") from None
        emb = tensors.from_tensor(resp.embeddings, "embeddings", dtype="float32",
                                  shape=(len(prompts), served.spec.max_text_length, served.spec.text_hidden_size))
        return EncodedText(emb, list(resp.token_counts), list(resp.truncated_tokens))

    async def sample(self, served: ServedModel, cond, uncond, p: GenerateParams, init, call: Call
                     ) -> AsyncIterator[Step | Sampled]:
        if self.sampler is None:
            async for event in self.local.sample(served, cond, uncond, p, init, call):
                yield event
            return
        req = to_sample_request(p, cond, uncond, init, request_id=call.request_id, model=served.name,
                                version=served.version)
        stream = self.sampler.Sample(req, timeout=call.timeout("sampling"), metadata=call.metadata)
        try:
            async for msg in stream:
                if msg.HasField("progress"):
                    yield Step(*tensors.from_progress(msg.progress))
                else:
                    r = msg.result
                    latents = tensors.from_tensor(r.latents, "latents", dtype="float32")
                    yield Sampled(latents, tensors.seconds(r.queued), tensors.seconds(r.sampling))
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, f"DiffusionSampler at {self.targets['sampler']}") from None
        finally:
            stream.cancel()  # no-op when finished; stops the remote loop when our caller went away

    async def decode(self, served: ServedModel, latents: np.ndarray, raw: bool, call: Call) -> list[common_pb2.RGBD]:
        if self.vae is None:
            return await self.local.decode(served, latents, raw, call)
        enc = common_pb2.IMAGE_ENCODING_RAW if raw else common_pb2.IMAGE_ENCODING_PNG
        req = autoencoder_pb2.DecodeLatentsRequest(request_id=call.request_id, latents=tensors.to_tensor(latents),
                                                   image_encoding=enc, model=served.name, version=served.version)
        try:
            resp = await self.vae.Decode(req, timeout=call.timeout("decoding"), metadata=call.metadata)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, f"RGBDAutoencoder at {self.targets['autoencoder']}") from None
        return list(resp.images)

    async def encode_rgbd(self, served: ServedModel, rgb, depth, call: Call) -> np.ndarray:
        if self.vae is None:
            return await self.local.encode_rgbd(served, rgb, depth, call)
        req = autoencoder_pb2.EncodeRGBDRequest(request_id=call.request_id, image=tensors.rgbd(rgb, depth, raw=True),
                                                model=served.name, version=served.version)
        try:
            resp = await self.vae.Encode(req, timeout=call.timeout("encoding the init image"), metadata=call.metadata)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, f"RGBDAutoencoder at {self.targets['autoencoder']}") from None
        return tensors.from_tensor(resp.latents, "latents", dtype="float32")

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
