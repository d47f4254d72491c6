"""Every kind of bad input, sent over a real socket: the right code, the field named in a BadRequest detail, and
the server still answers its health check afterwards."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2
from PIL import Image

from ldm3d import codec
from ldm3d.wire import tensors
from ldm3d.v1 import (autoencoder_pb2, autoencoder_pb2_grpc, common_pb2, depth_pb2, depth_pb2_grpc, sampler_pb2,
                      sampler_pb2_grpc, studio_pb2, studio_pb2_grpc, text_encoder_pb2, text_encoder_pb2_grpc)

from servers_helpers import ThreadServer, healthy


def _details(err: grpc.RpcError) -> status_pb2.Status:
    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, f"no google.rpc.Status details in {err}"
    return status_pb2.Status.FromString(raw)


def _field(err: grpc.RpcError) -> str:
    for any_ in _details(err).details:
        if any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            any_.Unpack(br)
            return br.field_violations[0].field
    raise AssertionError(f"no BadRequest detail in {err}")


def _png8_gray(h=64, w=64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _rgbd(h=64, w=64, depth_png=None, rgb_png=None) -> common_pb2.RGBD:
    rgb = rgb_png if rgb_png is not None else codec.encode_png(np.zeros((h, w, 3), np.uint8))
    depth = depth_png if depth_png is not None else codec.encode_png(np.zeros((h, w), np.uint16))
    return common_pb2.RGBD(rgb=common_pb2.Image(png=rgb), depth=common_pb2.Image(png=depth))


BAD_GENERATE = [
    ({"prompt": "x" * 10_001}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"negative_prompt": "x" * 10_001}, "negative_prompt"),
    ({"height": 100}, "height"),
    ({"width": 4096}, "width"),
    ({"steps": 0}, "steps"),
    ({"steps": 1001}, "steps"),
    ({"guidance_scale": -0.5}, "guidance_scale"),
    ({"guidance_scale": float("nan")}, "guidance_scale"),
    ({"scheduler": "karras-magic"}, "scheduler"),
    ({"seed": 2**64 - 1}, "seed"),
    ({"num_images": 0}, "num_images"),
    ({"image_encoding": 9}, "image_encoding"),
    ({"init_image": _rgbd(depth_png=_png8_gray()), "strength": 0.5}, "init_image.depth.png"),
    ({"init_image": _rgbd(rgb_png=b"GIF89a not a png at all"), "strength": 0.5}, "init_image.rgb.png"),
    ({"init_image": _rgbd(), "strength": 1.5}, "strength"),
    ({"init_image": _rgbd(h=72, w=64)}, "init_rgb"),
    ({"init_image": common_pb2.RGBD(rgb=common_pb2.Image(png=codec.encode_png(np.zeros((64, 64, 3), np.uint8))))},
     "init_image"),
]


@pytest.mark.parametrize("fields,field", BAD_GENERATE, ids=[f for _, f in BAD_GENERATE])
def test_generate_rejects_each_bad_field(channel, platform, fields, field):
    req = studio_pb2.GenerateRequest(**{"prompt": "a cabin", "steps": 2, **fields})
    with pytest.raises(grpc.RpcError) as info:
        list(studio_pb2_grpc.StudioStub(channel).Generate(req, timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert _field(info.value) == field
    assert healthy(platform.target)


@pytest.mark.parametrize("fields,field", [({"model": "sd-xl"}, "model"), ({"version": "99"}, "version")])
def test_unknown_model_or_version_is_not_found(channel, fields, field):
    with pytest.raises(grpc.RpcError) as info:
        list(studio_pb2_grpc.StudioStub(channel).Generate(
            studio_pb2.GenerateRequest(prompt="a cabin", steps=2, **fields), timeout=30))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert field in info.value.details()


def _sample_request(platform, **over):
    spec = platform.server.registry.default().spec
    emb = np.zeros((1, spec.max_text_length, spec.text_hidden_size), np.float32)
    fields = {"cond": tensors.to_tensor(emb), "uncond": tensors.to_tensor(emb), "steps": 2, "seed": 1, **over}
    return sampler_pb2.SampleRequest(**fields)


def _bad_tensors(platform):
    spec = platform.server.registry.default().spec
    emb = np.zeros((1, spec.max_text_length, spec.text_hidden_size), np.float32)
    short = tensors.to_tensor(emb)
    short.data = short.data[:-4]
    return [
        ({"cond": tensors.to_tensor(emb.astype(np.float16))}, "cond.dtype"),
        ({"cond": tensors.to_tensor(emb[:, :10])}, "cond.shape"),
        ({"cond": short}, "cond.data"),
        ({"cond": common_pb2.Tensor(shape=[1], data=b"\0\0\0\0")}, "cond.dtype"),
        ({"uncond": None, "guidance_scale": 7.0}, "uncond"),
        ({"init_latents": tensors.to_tensor(np.zeros((1, 4, 9, 8), np.float32))}, "init_latents.shape"),
        ({"height": 60}, "height"),
    ]


def test_sampler_rejects_bad_tensors(channel, platform):
    stub = sampler_pb2_grpc.DiffusionSamplerStub(channel)
    for over, field in _bad_tensors(platform):
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Sample(_sample_request(platform, **over), timeout=30))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, info.value.details())
        assert _field(info.value) == field
    assert healthy(platform.target, "ldm3d.v1.DiffusionSampler")


def _decode(latents):
    return autoencoder_pb2.DecodeLatentsRequest(latents=tensors.to_tensor(latents))


def test_autoencoder_and_text_encoder_reject_bad_input(channel, platform):
    vae = autoencoder_pb2_grpc.RGBDAutoencoderStub(channel)
    cases = [
        (vae.Decode, _decode(np.zeros((1, 3, 8, 8), np.float32)), "latents.shape"),
        (vae.Decode, _decode(np.zeros((1, 4, 1, 8), np.float32)), "latents.shape"),
        (vae.Decode, _decode(np.zeros((1, 4, 8, 8), np.int32)), "latents.dtype"),
        (vae.Encode, autoencoder_pb2.EncodeRGBDRequest(image=_rgbd(depth_png=_png8_gray())), "image.depth.png"),
        (vae.Encode, autoencoder_pb2.EncodeRGBDRequest(image=_rgbd(h=60, w=60)), "image.rgb"),
        (text_encoder_pb2_grpc.TextEncoderStub(channel).Encode, text_encoder_pb2.EncodeTextRequest(), "prompts"),
        (text_encoder_pb2_grpc.TextEncoderStub(channel).Encode,
         text_encoder_pb2.EncodeTextRequest(prompts=["ok", "y" * 10_001]), "prompts[1]"),
    ]
    for method, req, field in cases:
        with pytest.raises(grpc.RpcError) as info:
            method(req, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, info.value.details())
        assert _field(info.value) == field
    assert healthy(platform.target)


def test_message_over_the_size_limit_is_refused_and_the_server_lives():
    server = ThreadServer(service="depth-evaluator", max_message_mb=1)
    try:
        with grpc.insecure_channel(server.target) as ch:
            big = depth_pb2.EstimateDepthRequest(rgb=common_pb2.Image(png=b"\0" * (2 * 1024 * 1024)))
            with pytest.raises(grpc.RpcError) as info:
                depth_pb2_grpc.DepthEvaluatorStub(ch).Estimate(big, timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # gRPC's own refusal, before our code
        assert healthy(server.target)
    finally:
        server.stop()


def test_garbage_bytes_on_the_wire_do_not_crash_the_server(platform):
    """A message that does not parse as the request type: INVALID_ARGUMENT, and the server lives on."""
    with grpc.insecure_channel(platform.target) as ch:
        call = ch.unary_unary("/ldm3d.v1.TextEncoder/Encode", request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as info:
            call(b"\xff\xff\xff\xff\x0f garbage", timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _field(info.value) == "request"
    assert healthy(platform.target)
