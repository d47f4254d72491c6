"""Seamless 360 padding (ldm3d.models.seamless): the mechanism (roll equivariance, torch and ONNX), the export flag,
the defaults and errors, and the seam of a structured panorama end to end."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from ldm3d.models.seamless import make_switchable, restore, seamless_padding

H, W = 32, 64  # a 2:1 panorama: latents 16 x 32 for the tiny VAE (factor 2)


@pytest.fixture(scope="module")
def modules():
    from ldm3d.models.tiny import build_components

    c = build_components("tiny", depth_channels=1, seed=3)
    return {"unet": c["unet"], "vae": c["vae"], "text_encoder": c["text_encoder"]}


def _roll_error(f, x: torch.Tensor, k: int, out_k: int) -> float:
    with torch.inference_mode():
        y = f(x)
        y_rolled_in = f(torch.roll(x, k, dims=-1))
    return float((y_rolled_in - torch.roll(y, out_k, dims=-1)).abs().max())


def test_unet_rolls_with_its_input_only_when_seamless(modules):
    unet = copy.deepcopy(modules["unet"])
    assert make_switchable(unet) > 0
    factor = 2 ** (len(unet.config.block_out_channels) - 1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 16, generator=g)
    emb = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g)
    t = torch.tensor([500.0])

    def f(s):
        return unet(s, t, encoder_hidden_states=emb, return_dict=False)[0]

    for k in (factor, 3 * factor):
        with seamless_padding(True):
            assert _roll_error(f, x, k, k) < 1e-4
        with seamless_padding(False):
            assert _roll_error(f, x, k, k) > 1e-2  # zero padding: the edges are not where the roll puts them
    with seamless_padding(True):  # a shift that is not a multiple of the downsampling is not an exact symmetry
        assert _roll_error(f, x, factor + 1, factor + 1) > 1e-2


def test_vae_decoder_and_encoder_roll_when_seamless(modules):
    vae = copy.deepcopy(modules["vae"])
    make_switchable(vae)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(1, 4, 8, 16, generator=g)
    img = torch.rand(1, vae.config.in_channels, 8 * factor, 16 * factor, generator=g) * 2 - 1

    def dec(x):
        return vae.decode(x, return_dict=False)[0]

    def enc(x):
        return vae.encode(x).latent_dist.parameters

    with seamless_padding(True):
        assert _roll_error(dec, z, 3, 3 * factor) < 1e-4
        assert _roll_error(enc, img, 2 * factor, 2) < 1e-4
    with seamless_padding(False):
        assert _roll_error(dec, z, 3, 3 * factor) > 1e-2
        assert _roll_error(enc, img, 2 * factor, 2) > 1e-2


def test_switched_off_is_bit_identical_and_restorable(modules):
    plain = modules["unet"]
    patched = copy.deepcopy(plain)
    make_switchable(patched)
    assert make_switchable(patched) == make_switchable(patched)  # idempotent
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10.0, 10.0])
    emb = torch.randn(2, 77, plain.config.cross_attention_dim)
    with torch.inference_mode():
        ref = plain(x, t, encoder_hidden_states=emb, return_dict=False)[0]
        assert torch.equal(patched(x, t, encoder_hidden_states=emb, return_dict=False)[0], ref)
        with seamless_padding(True):
            assert not torch.equal(patched(x, t, encoder_hidden_states=emb, return_dict=False)[0], ref)
    restore(patched)
    assert type(patched.conv_in) is torch.nn.Conv2d
    assert patched.state_dict().keys() == plain.state_dict().keys()


# ---------------------------------------------------------------------------------------------- ONNX export
@pytest.fixture(scope="module")
def seamless_repository(tiny_model_4c, tmp_path_factory):
    from ldm3d.export import export_checkpoint

    root = tmp_path_factory.mktemp("seamless") / "repository"
    export_checkpoint(tiny_model_4c, root, seamless=True)
    return root


def _ort(repo, model):
    import onnxruntime as ort

    return ort.InferenceSession(str(repo / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


def _onnx_unet_roll_error(repo, k: int) -> float:
    sess = _ort(repo, "unet")
    rng = np.random.default_rng(0)
    dim = sess.get_inputs()[2].shape[2]
    x = rng.standard_normal((1, 4, 8, 16), dtype=np.float32)
    feed = {"timestep": np.array([321.0], np.float32),
            "encoder_hidden_states": rng.standard_normal((1, 77, dim), dtype=np.float32)}
    y = sess.run(None, {"sample": x, **feed})[0]
    y_rolled_in = sess.run(None, {"sample": np.roll(x, k, axis=-1), **feed})[0]
    return float(np.abs(y_rolled_in - np.roll(y, k, axis=-1)).max())


def test_export_seamless_bakes_slice_concat_and_records_it(seamless_repository, exported_repository):
    import onnx

    from ldm3d.pipeline.spec import spec_from_repository
    from ldm3d.repository import ModelRepository

    for model in ("unet", "vae_decoder", "vae_encoder"):
        graph = onnx.load(str(seamless_repository / model / "1" / "model.onnx")).graph
        ops = {n.op_type for n in graph.node}
        assert {"Slice", "Concat"} <= ops
        pad_modes = {a.s.decode() for n in graph.node if n.op_type == "Pad" for a in n.attribute if a.name == "mode"}
        assert pad_modes <= {"constant"}, f"{model}: a non-constant Pad ({pad_modes}) in the graph"
        assert ModelRepository(seamless_repository).manifest(model, 1)["export"]["seamless"] is True
        assert ModelRepository(exported_repository).manifest(model, 1)["export"]["seamless"] is False
    assert spec_from_repository(seamless_repository).seamless is True
    assert spec_from_repository(exported_repository).seamless is False
    # the mechanism, in ONNX Runtime: the seamless U-Net rolls with its input, the plain one does not
    assert _onnx_unet_roll_error(seamless_repository, 4) < 1e-4
    assert _onnx_unet_roll_error(exported_repository, 4) > 1e-2


def test_models_show_and_generate_flags(seamless_repository, tiny_model_4c, tmp_path, capsys):
    from ldm3d.cli import main

    assert main(["models", "show", "--repository", str(seamless_repository), "--model", "unet"]) == 0
    assert json.loads(capsys.readouterr().out)["unet"]["seamless"] is True
    # a repository serves what export baked in: asking for the other padding is a clear error naming the flag
    rc = main(["generate", "--repository", str(seamless_repository), "--prompt", "x", "--no-seamless",
               "--height", "64", "--width", "128", "--steps", "2", "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--seamless" in err and "exported" in err and "Traceback" not in err
    assert main(["generate", "--repository", str(seamless_repository), "--prompt", "x", "--height", "64",
                 "--width", "64", "--steps", "2", "--seed", "1", "--stem", "r", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "r" / "r.json").read_text())["seamless"] is True
    # the flag reaches the torch runtime's request (the default for 2:1 is on)
    assert main(["generate", "--model", str(tiny_model_4c), "--prompt", "x", "--height", "64", "--width", "128",
                 "--steps", "2", "--seed", "1", "--stem", "t", "--out", str(tmp_path / "t"), "--no-progress",
                 "--no-seamless"]) == 0
    assert json.loads((tmp_path / "t" / "t.json").read_text())["seamless"] is False
    capsys.readouterr()


def test_defaults_per_request_on_torch(modules, tiny_model_4c):
    """Resolved defaults: on for 2:1, off otherwise, an explicit flag wins; a baked repository decides alone. The
    torch runtime applies the same rule per call when no request said (a gRPC stage server)."""
    from ldm3d.errors import InvalidArgument
    from ldm3d.pipeline import GenerateParams, PipelineSpec
    from ldm3d.runtime.torch_runtime import TorchRuntime

    spec = PipelineSpec.from_checkpoint(tiny_model_4c, hash_weights=False)
    for (h, w), flag, expected in (((64, 128), None, True), ((64, 64), None, False), ((64, 128), False, False),
                                   ((64, 64), True, True), ((128, 128), None, False)):
        assert GenerateParams("x", height=h, width=w, seamless=flag).resolved(spec).seamless is expected
    baked = dataclasses.replace(spec, seamless=True)
    assert GenerateParams("x", height=64, width=64).resolved(baked).seamless is True
    with pytest.raises(InvalidArgument, match="exported with --seamless"):
        GenerateParams("x", height=64, width=128, seamless=False).resolved(baked)

    rt = TorchRuntime({"vae": copy.deepcopy(modules["vae"])})
    for shape, expected in (((1, 4, 8, 16), True), ((1, 4, 8, 8), False)):
        z = {"latent_sample": np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
        auto = rt.infer("vae_decoder", z)["sample"]
        with seamless_padding(expected):
            assert np.array_equal(auto, rt.infer("vae_decoder", z)["sample"])
        with seamless_padding(not expected):
            assert not np.array_equal(auto, rt.infer("vae_decoder", z)["sample"])


# ---------------------------------------------------------------------------------------------- end to end
def periodic_panorama(h: int = H, w: int = W, period: int = 16):
    """A structured RGBD panorama that repeats every ``period`` pixels along x (so it wraps seamlessly)."""
    y, x = np.mgrid[0:h, 0:period]
    th = 2 * np.pi * x / period
    rgb = np.stack([127 + 100 * np.sin(th) * (y / h), 127 + 80 * np.cos(th + y / 8), 60 + 150 * (y / h)], -1)
    depth = 32768 + 20000 * np.cos(th) * np.cos(y / 10)
    reps = (1, w // period)  # one period tiled: exactly periodic, whatever the rounding
    return np.tile(rgb.clip(0, 255).astype(np.uint8), reps + (1,)), np.tile(depth.astype(np.uint16), reps)


def seam_columns(img: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean |last column − first column| (the wrap-around) and every neighbouring pair's mean |difference|."""
    a = img.astype(np.float64).reshape(img.shape[0], img.shape[1], -1)
    return float(np.abs(a[:, 0] - a[:, -1]).mean()), np.abs(np.diff(a, axis=1)).mean(axis=(0, 2))


def _roundtrip(pipe, rgb, depth, seamless: bool) -> np.ndarray:
    with seamless_padding(seamless):
        decoded = pipe.autoencoder.decode(pipe.autoencoder.encode(rgb, depth))
    return decoded[0].transpose(1, 2, 0)


@pytest.mark.parametrize("runtime", ["torch", "embedded"])
def test_structured_panorama_has_no_seam(runtime, tiny_pipeline, seamless_repository):
    """RGBD encoder → decoder on a structured panorama that repeats every 16 px: seamless, the wrap-around pair of
    columns differs exactly as much as the same-phase neighbouring pair (15, 16), and no more than the largest
    neighbouring pair; with zero padding the edges carry an artefact that the wrap pair shows."""
    from ldm3d.pipeline import LDM3DPipeline

    rgb, depth = periodic_panorama()
    if runtime == "torch":
        pipe = tiny_pipeline
        seamless, plain = _roundtrip(pipe, rgb, depth, True), _roundtrip(pipe, rgb, depth, False)
    else:
        seamless = _roundtrip(LDM3DPipeline.from_repository(seamless_repository), rgb, depth, True)
        plain = None  # plain padding: checked on torch above (the ONNX plain U-Net in the export test)
    wrap, neighbours = seam_columns(seamless)
    assert wrap <= neighbours.max()
    assert abs(wrap - neighbours[15]) < 1e-4 * max(1.0, wrap)
    if plain is not None:
        wrap_p, neighbours_p = seam_columns(plain)
        assert abs(wrap_p - neighbours_p[15]) > 1e-2 * wrap_p
