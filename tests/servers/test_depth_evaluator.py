"""DepthEvaluator over a real loopback socket with tiny DPT / ZoeDepth checkpoints: Estimate equals the library's
estimate, Evaluate recovers a known scale and shift, the reference model path equals the library's protocol, every
bad input is refused naming the field, and the service is reachable at the gateway's address (in-process in
`serve all`, forwarded with --depth-evaluator-url)."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2
from PIL import Image
from servers_helpers import ThreadServer, healthy

from ldm3d import codec
from ldm3d.client import StudioClient
from ldm3d.errors import FailedPrecondition, NotFound
from ldm3d.evaluation import depth_models
from ldm3d.wire import tensors
from ldm3d.v1 import common_pb2, depth_pb2, depth_pb2_grpc

SERVICE = "ldm3d.v1.DepthEvaluator"


@pytest.fixture(scope="module")
def tiny_depth(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth-models")
    return depth_models.make_tiny_dpt(root / "tiny-dpt"), depth_models.make_tiny_zoedepth(root / "tiny-zoe")


@pytest.fixture(scope="module")
def evaluator(tiny_depth):
    s = ThreadServer(service="depth-evaluator", depth_model=str(tiny_depth[0]), reference_model=str(tiny_depth[1]))
    yield s
    s.stop()


@pytest.fixture
def client(evaluator):
    with StudioClient(evaluator.target, timeout=60) as c:
        yield c


def _rgb(h=40, w=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _pred(h=40, w=56):
    y, x = np.mgrid[0:h, 0:w]
    return (1000 + 900 * x + 300 * y).astype(np.uint16)


def test_estimate_returns_the_librarys_16_bit_depth_at_the_input_size(evaluator, tiny_depth):
    rgb = _rgb()
    with grpc.insecure_channel(evaluator.target) as ch:
        resp = depth_pb2_grpc.DepthEvaluatorStub(ch).Estimate(
            depth_pb2.EstimateDepthRequest(request_id="e-1", rgb=common_pb2.Image(png=codec.encode_png(rgb))),
            timeout=60)
    img = Image.open(io.BytesIO(resp.depth.png))
    assert img.size == (56, 40) and img.mode in ("I;16", "I;16B", "I")
    depth = codec.read_depth(resp.depth.png)
    expected = depth_models.estimate_relative_depth(depth_models.load_depth_model(str(tiny_depth[0])), rgb)
    np.testing.assert_array_equal(depth, expected)
    assert depth.max() == 65535  # normalised per image, larger = nearer
    assert (resp.request_id, resp.model, len(resp.model_version)) == ("e-1", "tiny-dpt", 12)


def test_evaluate_recovers_a_known_scale_and_shift(client):
    pred = _pred()
    scale, shift = 2.5e-5, 0.1
    metres = (1.0 / (scale * pred.astype(np.float64) + shift)).astype(np.float32)
    metres[0, :5] = np.nan  # invalid reference pixels are left out, never reported as NaN
    e = client.evaluate_depth(pred, reference=metres, include_aligned=True)
    m = e.metrics
    assert m.scale == pytest.approx(scale, rel=1e-5) and m.shift == pytest.approx(shift, rel=1e-5)
    assert m.abs_rel < 1e-6 and m.rmse < 1e-5
    assert (m.valid_pixels, m.evaluated_pixels, m.nonpositive_pixels) == (40 * 56 - 5, 40 * 56 - 5, 0)
    assert (m.samples, m.seed) == (100_000, 0)
    assert e.aligned.dtype == np.float32 and e.aligned.shape == pred.shape
    assert np.all(e.aligned[0, :5] == 0) and np.all(np.isfinite(e.aligned))
    np.testing.assert_allclose(e.aligned[1:], metres[1:], rtol=1e-5)
    # the same reference as a 16-bit millimetre PNG (the default scale), sampled: still close, seed echoed
    mm = np.rint(np.nan_to_num(metres) * 1000).astype(np.uint16)
    e16 = client.evaluate_depth(pred, reference=mm, samples=500, seed=7)
    assert e16.metrics.abs_rel < 1e-3 and (e16.metrics.sampled_pixels, e16.metrics.seed) == (500, 7)
    assert e16.aligned is None


def test_evaluate_against_the_reference_model_equals_the_library(client, tiny_depth):
    rgb, pred = _rgb(seed=3), _pred()
    e = client.evaluate_depth(pred, rgb=rgb, flip_aug=False)
    zoe = depth_models.load_depth_model(str(tiny_depth[1]))
    expected = depth_models.reference_depth_metrics(pred, rgb, zoe, flip_aug=False)
    assert e.metrics == expected
    assert (e.reference_model, len(e.reference_model_version)) == ("tiny-zoe", 12)
    assert client.evaluate_depth(pred, rgb=rgb).metrics == depth_models.reference_depth_metrics(pred, rgb, zoe)


def _png8(h=40, w=56):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _img(a):
    return common_pb2.Image(array=tensors.to_tensor(a))


def _eval(**fields):
    return depth_pb2.EvaluateDepthRequest(**{"predicted_depth": _img(_pred()), **fields})


_REF = _img(np.full((40, 56), 2.0, np.float32))
BAD = [
    ("Evaluate", _eval(), "INVALID_ARGUMENT", "reference"),
    ("Evaluate", depth_pb2.EvaluateDepthRequest(reference_depth=_REF), "INVALID_ARGUMENT", "predicted_depth"),
    ("Evaluate", _eval(predicted_depth=common_pb2.Image(png=_png8())), "INVALID_ARGUMENT", "predicted_depth.png"),
    ("Evaluate", _eval(reference_depth=_img(np.ones((40, 50), np.float32))), "INVALID_ARGUMENT", "reference_depth"),
    ("Evaluate", _eval(reference_depth=_img(np.zeros((40, 56), np.uint16))), "INVALID_ARGUMENT", "reference_depth"),
    ("Evaluate", _eval(reference_depth=_img(np.full((40, 56), np.nan, np.float32))), "INVALID_ARGUMENT",
     "reference_depth"),
    ("Evaluate", _eval(predicted_depth=_img(np.full((40, 56), 7, np.uint16)), reference_depth=_REF),
     "INVALID_ARGUMENT", "predicted_depth"),
    ("Evaluate", _eval(reference_depth=_REF, sample_pixels=1), "INVALID_ARGUMENT", "sample_pixels"),
    ("Evaluate", _eval(reference_depth=_REF, reference_depth_scale=-1), "INVALID_ARGUMENT", "reference_depth_scale"),
    ("Evaluate", _eval(reference_depth=_img(np.ones((40, 56), np.int32))), "INVALID_ARGUMENT",
     "reference_depth.array.dtype"),
    ("Evaluate", _eval(rgb=_img(_rgb(40, 50))), "INVALID_ARGUMENT", "rgb"),
    ("Evaluate", _eval(rgb=_img(_rgb()), reference_model="zoedepth-kitti"), "NOT_FOUND", "reference_model"),
    ("Evaluate", _eval(rgb=_img(_rgb()), reference_version="9"), "NOT_FOUND", "reference_version"),
    ("Estimate", depth_pb2.EstimateDepthRequest(), "INVALID_ARGUMENT", "rgb"),
    ("Estimate", depth_pb2.EstimateDepthRequest(rgb=common_pb2.Image(png=b"GIF89a")), "INVALID_ARGUMENT", "rgb.png"),
    ("Estimate", depth_pb2.EstimateDepthRequest(rgb=_img(_rgb()), image_encoding=9), "INVALID_ARGUMENT",
     "image_encoding"),
    ("Estimate", depth_pb2.EstimateDepthRequest(rgb=_img(_rgb()), model="dpt-hybrid"), "NOT_FOUND", "model"),
    ("Estimate", depth_pb2.EstimateDepthRequest(rgb=_img(_rgb()), version="2"), "NOT_FOUND", "version"),
]


def _field(err: grpc.RpcError) -> str | None:
    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    for any_ in status_pb2.Status.FromString(raw).details:
        for cls in (error_details_pb2.BadRequest, error_details_pb2.ResourceInfo):
            if any_.Is(cls.DESCRIPTOR):
                d = cls()
                any_.Unpack(d)
                return d.field_violations[0].field if cls is error_details_pb2.BadRequest else d.resource_type
    return None


def test_bad_input_is_refused_naming_the_field_and_the_server_lives(evaluator):
    with grpc.insecure_channel(evaluator.target) as ch:
        stub = depth_pb2_grpc.DepthEvaluatorStub(ch)
        for method, req, code, field in BAD:
            with pytest.raises(grpc.RpcError) as info:
                getattr(stub, method)(req, timeout=30)
                pytest.fail(f"accepted a bad {field}")
            assert (info.value.code().name, _field(info.value)) == (code, field), info.value.details()
            assert "nan" not in info.value.details().lower()
    assert healthy(evaluator.target) and healthy(evaluator.target, SERVICE)


def test_the_gateway_address_answers_depth_evaluation(tiny_model, tiny_depth, evaluator):
    """`serve all` serves it in-process; a gateway with --depth-evaluator-url forwards it, errors intact."""
    rgb = _rgb()
    with StudioClient(evaluator.target, timeout=60) as direct:
        expected = direct.estimate_depth(rgb)
    everything = ThreadServer(service="all", checkpoint=str(tiny_model), depth_model=str(tiny_depth[0]))
    gateway = ThreadServer(service="gateway", checkpoint=str(tiny_model), depth_evaluator_url=evaluator.target)
    try:
        for server in (everything, gateway):
            assert healthy(server.target, SERVICE)
            with StudioClient(server.target, timeout=60) as c:
                np.testing.assert_array_equal(c.estimate_depth(rgb), expected)
                with pytest.raises(NotFound) as info:
                    c.estimate_depth(rgb, version="2")
                assert info.value.field == "version"
        with StudioClient(everything.target, timeout=60) as c:  # no --reference-model there
            with pytest.raises(FailedPrecondition) as info:
                c.evaluate_depth(_pred(), rgb=rgb)
            assert "--reference-model" in str(info.value)
    finally:
        gateway.stop()
        everything.stop()


def test_depth_models_served_from_the_model_repository_match_the_checkpoints(tiny_depth, tmp_path):
    """With --repository and no --depth-model/--reference-model, the evaluator runs the exported ONNX graphs through
    the embedded runtime (the same interface as the diffusion models) and answers like the torch checkpoints."""
    from ldm3d.export import export_depth_checkpoint

    repo = tmp_path / "repo"
    export_depth_checkpoint(tiny_depth[0], repo)
    export_depth_checkpoint(tiny_depth[1], repo)
    s = ThreadServer(service="depth-evaluator", repository=str(repo))
    try:
        rgb = _rgb()
        with StudioClient(s.target, timeout=60) as c:
            served = c.estimate_depth(rgb)
            reference = c.evaluate_depth(_pred(), rgb=rgb)
        torch_depth = depth_models.estimate_relative_depth(depth_models.load_depth_model(str(tiny_depth[0])), rgb)
        assert served.dtype == np.uint16 and served.shape == rgb.shape[:2]
        assert np.abs(served.astype(int) - torch_depth.astype(int)).max() <= 1  # ONNX vs torch: within 1 LSB
        expected = depth_models.reference_depth_metrics(_pred(), rgb, depth_models.load_depth_model(str(tiny_depth[1])))
        assert reference.metrics.abs_rel == pytest.approx(expected.abs_rel, rel=1e-3)
        assert healthy(s.target, SERVICE)
    finally:
        s.stop()
