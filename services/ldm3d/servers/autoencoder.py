"""RGBDAutoencoder servicer: latents → RGB + 16-bit depth, and RGBD → init latents (validate → stage → proto)."""

from __future__ import annotations

from ..errors import invalid
from ..pipeline.params import MAX_IMAGES, MAX_SIDE, MIN_SIDE
from ..v1 import autoencoder_pb2 as pb
from ..v1 import autoencoder_pb2_grpc
from ..wire import tensors
from .models import ModelRegistry
from .stages import Stages


class RGBDAutoencoderServicer(autoencoder_pb2_grpc.RGBDAutoencoderServicer):
    def __init__(self, registry: ModelRegistry, stages: Stages):
        self.registry, self.stages = registry, stages

    async def Decode(self, request: pb.DecodeLatentsRequest, context) -> pb.DecodeLatentsResponse:
        served = await self.registry.resolve(request.model, request.version, request.request_id)
        spec = served.spec
        latents = tensors.from_tensor(request.latents, "latents", dtype="float32",
                                      shape=(None, spec.latent_channels, None, None))
        b, _, h, w = latents.shape
        f = spec.vae_scale_factor
        if not 1 <= b <= MAX_IMAGES:
            raise invalid("latents.shape", list(latents.shape), f"batch must be 1..{MAX_IMAGES}")
        if not (MIN_SIDE <= h * f <= MAX_SIDE and MIN_SIDE <= w * f <= MAX_SIDE):
            raise invalid("latents.shape", list(latents.shape),
                          f"latent sides must be {MIN_SIDE // f}..{MAX_SIDE // f} (images {MIN_SIDE}..{MAX_SIDE} px)")
        with self.registry.lease(served):
            decoded, images = await self.stages.decode_images(served, latents, tensors.is_raw(request.image_encoding))
        return pb.DecodeLatentsResponse(
            request_id=request.request_id, images=images, model_version=served.version,
            decoded=tensors.to_tensor(decoded) if request.include_decoded else None)

    async def Encode(self, request: pb.EncodeRGBDRequest, context) -> pb.EncodeRGBDResponse:
        served = await self.registry.resolve(request.model, request.version, request.request_id)
        rgb, depth = read_rgbd(request.image, "image", served.spec.vae_scale_factor)
        with self.registry.lease(served):
            latents = await self.stages.encode_rgbd(served, rgb, depth)
        return pb.EncodeRGBDResponse(request_id=request.request_id, latents=tensors.to_tensor(latents),
                                     model_version=served.version)


def read_rgbd(image, field: str, multiple: int):
    """An ``RGBD`` message → (rgb uint8 [H, W, 3], depth uint16 [H, W]) of one size, each side a multiple of 8."""
    rgb, depth = tensors.read_rgbd(image, field)
    h, w = depth.shape
    if h % multiple or w % multiple or not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise invalid(f"{field}.rgb", f"{w}x{h}",
                      f"each side must be a multiple of {multiple} in {MIN_SIDE}..{MAX_SIDE}")
    return rgb, depth
