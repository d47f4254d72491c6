"""DPT / ZoeDepth estimation with tiny random-weight checkpoints in the hub layout (no downloads)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from ldm3d.errors import FailedPrecondition, InvalidArgument, NotFound
from ldm3d.evaluation import depth_models as dm
from ldm3d.runtime.base import ModelRuntime


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth_models")
    return {"dpt": dm.make_tiny_dpt(root / "dpt"), "zoedepth": dm.make_tiny_zoedepth(root / "zoedepth")}


@pytest.fixture(scope="module")
def models(tiny):
    return {kind: dm.load_depth_model(str(path)) for kind, path in tiny.items()}


@pytest.fixture(scope="module")
def rgb():
    return np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)


def test_tiny_checkpoints_have_the_hub_layout_and_are_reproducible(tiny, tmp_path):
    for kind, path in tiny.items():
        assert sorted(p.name for p in path.iterdir()) == [
            "config.json",
            "model.safetensors",
            "preprocessor_config.json",
        ]
        assert json.loads((path / "config.json").read_text())["model_type"] == kind
        assert (path / "model.safetensors").stat().st_size < 2_000_000
    again = dm.make_tiny_dpt(tmp_path / "again")
    assert (again / "model.safetensors").read_bytes() == (tiny["dpt"] / "model.safetensors").read_bytes()
    proc = json.loads((tiny["zoedepth"] / "preprocessor_config.json").read_text())
    assert (proc["ensure_multiple_of"], proc["keep_aspect_ratio"], proc["do_pad"]) == (32, True, True)


@pytest.mark.parametrize("size", [(45, 70), (384, 384), (17, 9), (12, 40)])
def test_resize_bicubic_matches_torch_interpolate(size):
    x = np.random.default_rng(1).standard_normal((24, 31))
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x)[None, None], size=size, mode="bicubic", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(dm.resize_bicubic(x, size), ref, rtol=0, atol=1e-12)


def test_relative_depth_follows_the_ldm3d_convention(models, rgb, tiny):
    from PIL import Image
    from transformers import pipeline

    dpt = models["dpt"]
    pixel_values = dm.preprocess_dpt(dpt.processor, rgb)
    assert pixel_values.shape == (1, 3, dm.LDM3D_DPT_SIZE, dm.LDM3D_DPT_SIZE) and pixel_values.dtype == np.float32
    raw = dpt.predict(pixel_values)
    assert raw.shape == (1, 384, 384) and raw.dtype == np.float32

    # Same numbers as transformers' own depth-estimation pipeline (bicubic back to the image size) ...
    expected = pipeline("depth-estimation", model=str(tiny["dpt"]))(Image.fromarray(rgb))["predicted_depth"].numpy()
    ours = dm.resize_bicubic(raw[0], rgb.shape[:2])
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))

    # ... normalised per image to the full 16-bit range, orientation kept (DPT is inverse depth: larger = nearer).
    depth = dm.estimate_relative_depth(dpt, rgb)
    assert depth.dtype == np.uint16 and depth.shape == rgb.shape[:2]
    assert (depth.min(), depth.max()) == (0, 65535)
    np.testing.assert_array_equal(depth, np.rint((ours - ours.min()) / (ours.max() - ours.min()) * 65535))


def test_postprocess_dpt_normalises_and_keeps_order():
    pred = np.linspace(0.0, 10.0, 16, dtype=np.float32).reshape(4, 4)
    out = dm.postprocess_dpt(pred, (4, 4))
    assert out[0, 0] == 0 and out[-1, -1] == 65535 and np.all(np.diff(out.ravel().astype(int)) > 0)
    assert not dm.postprocess_dpt(np.full((4, 4), 3.0), (8, 8)).any()  # constant: zeros, never NaN
    with pytest.raises(FailedPrecondition, match="non-finite"):
        dm.postprocess_dpt(np.array([[np.nan, 1.0], [2.0, 3.0]]), (2, 2))


def test_metric_depth_matches_zoedepth_post_processing(models, rgb):
    zoe = models["zoedepth"]
    pixel_values = dm.preprocess_zoedepth(zoe.processor, rgb, flip_aug=True)
    assert pixel_values.shape[0] == 2 and pixel_values.shape[2] % 32 == 0 and pixel_values.shape[3] % 32 == 0
    raw = torch.from_numpy(zoe.predict(pixel_values))

    # transformers' ZoeDepth post-processing, written with torch (its own needs torchvision): average with the
    # flipped prediction, resize bicubically to the padded size, cut the padding int(sqrt(side/2)*3) off.
    h, w = rgb.shape[:2]
    pad_h, pad_w = int(np.sqrt(h / 2) * 3), int(np.sqrt(w / 2) * 3)
    avg = (raw[0] + torch.flip(raw[1], dims=[-1])) / 2
    full = torch.nn.functional.interpolate(
        avg[None, None].double(), size=(h + 2 * pad_h, w + 2 * pad_w), mode="bicubic", align_corners=False
    )[0, 0]
    expected = full[pad_h:-pad_h, pad_w:-pad_w].numpy()

    metres = dm.estimate_metric_depth(zoe, rgb)
    assert metres.dtype == np.float32 and metres.shape == (h, w)
    np.testing.assert_allclose(metres, expected, rtol=1e-5)
    assert np.all(np.isfinite(metres)) and metres.min() > 0 and metres.std() > 0
    single = dm.estimate_metric_depth(zoe, rgb, flip_aug=False)
    assert single.shape == (h, w) and not np.allclose(single, metres)


class _TorchDepthRuntime(ModelRuntime):
    """The runtime interface over the torch modules, checking the tensor contract of DEPTH_MODEL_IO."""

    kind = "torch"

    def __init__(self, predictors):
        self.predictors = predictors

    def infer(self, model, inputs, version=None):
        spec = dm.DEPTH_MODEL_IO[model]
        assert set(inputs) == set(spec["inputs"]) and inputs["pixel_values"].dtype == np.float32
        return {"predicted_depth": self.predictors[model](inputs["pixel_values"])}

    def ready(self, model, version=None):
        return model in self.predictors

    def metadata(self, model, version=None):
        raise NotImplementedError


def test_model_call_goes_through_the_runtime_interface(models, rgb):
    runtime = _TorchDepthRuntime({m.runtime_name: m.predict for m in models.values()})
    via_runtime = dm.DepthModel("dpt", models["dpt"].processor, dm.runtime_predictor(runtime, "depth_estimator"), "rt")
    np.testing.assert_array_equal(
        dm.estimate_relative_depth(via_runtime, rgb), dm.estimate_relative_depth(models["dpt"], rgb)
    )
    assert models["zoedepth"].runtime_name == "depth_reference"


def test_loading_errors(tmp_path, tiny, models, rgb):
    with pytest.raises(NotFound, match="no such folder"):
        dm.load_depth_model(str(tmp_path / "missing"))
    with pytest.raises(NotFound, match="no config.json"):
        dm.load_depth_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(InvalidArgument, match="'clip' model"):
        dm.load_depth_model(str(tmp_path))
    with pytest.raises(InvalidArgument, match="is a zoedepth checkpoint; this needs a dpt one") as exc:
        dm.load_depth_model(str(tiny["zoedepth"]), kind="dpt")
    assert exc.value.field == "model"
    for missing, message in (
        ("model.safetensors", "cannot load the weights"),
        ("preprocessor_config.json", "no preprocessor"),
    ):
        broken = tmp_path / f"without-{missing}"
        shutil.copytree(tiny["dpt"], broken)
        (broken / missing).unlink()
        with pytest.raises(NotFound, match=message):
            dm.load_depth_model(str(broken))
    with pytest.raises(InvalidArgument, match="relative depth needs DPT"):
        dm.estimate_relative_depth(models["zoedepth"], rgb)
    with pytest.raises(InvalidArgument, match="uint8"):
        dm.estimate_relative_depth(models["dpt"], rgb.astype(np.float32))
