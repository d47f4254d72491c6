"""Depth models in the model repository: tiny DPT + ZoeDepth exported, verified, served by the embedded runtime."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ldm3d.cli import main
from ldm3d.codec import read_depth, write_png
from ldm3d.errors import FailedPrecondition, InvalidArgument
from ldm3d.evaluation import depth_models as dm
from ldm3d.export import export_depth_checkpoint
from ldm3d.repository import ModelRepository
from ldm3d.repository.config import onnx_io
from ldm3d.repository.manifest import sha256_file
from ldm3d.runtime.base import DEPTH_MODELS, MODEL_IO


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth_ckpt")
    return {"dpt": dm.make_tiny_dpt(root / "dpt"), "zoedepth": dm.make_tiny_zoedepth(root / "zoedepth")}


@pytest.fixture(scope="module")
def depth_repository(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("depth_repo") / "model_repository"
    for path in tiny.values():
        export_depth_checkpoint(path, root)
    return root


@pytest.fixture(scope="module")
def rgb():
    return np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)


def test_layout_manifest_and_triton_config(depth_repository, tiny):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2
    from transformers import AutoConfig

    from ldm3d.pipeline.spec import checkpoint_hash

    repo = ModelRepository(depth_repository)
    assert repo.models() == sorted(DEPTH_MODELS)
    for model, kind in (("depth_estimator", "dpt"), ("depth_reference", "zoedepth")):
        folder = depth_repository / model / "1"
        assert sorted(p.name for p in folder.iterdir()) == [
            "config.json", "manifest.json", "model.onnx", "preprocessor_config.json"]  # fmt: skip
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["model"] == model and manifest["version"] == 1 and manifest["created"].startswith("20")
        assert manifest["source"]["sha256"] == checkpoint_hash(tiny[kind])
        assert manifest["source"]["checkpoint"] == str(tiny[kind]) and manifest["source"]["model_type"] == kind
        assert manifest["export"]["opset"] == 17 and manifest["export"]["precision"] == "fp32"
        assert 0 <= manifest["parity"]["max_error"] <= manifest["parity"]["tolerance"] == 1e-3
        # parity was checked at batch 1 on a graph traced at batch 2, and at another spatial size
        assert manifest["parity"]["inputs"]["pixel_values"][0] == 1
        assert manifest["export"]["traced_shape"]["pixel_values"][0] == 2
        traced = manifest["export"]["traced_shape"]["pixel_values"]
        assert manifest["parity"]["inputs"]["pixel_values"][2:] != traced[2:]
        for rel, entry in manifest["files"].items():
            assert entry["sha256"] == sha256_file(folder / rel)
        assert set(manifest["files"]) == {"config.json", "model.onnx", "preprocessor_config.json"}
        for asset in ("config.json", "preprocessor_config.json"):
            assert (folder / asset).read_bytes() == (tiny[kind] / asset).read_bytes()
        assert AutoConfig.from_pretrained(folder).model_type == kind  # rebuildable from the repository alone

        pb = text_format.Parse((depth_repository / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert pb.name == model and pb.platform == "onnxruntime_onnx" and pb.max_batch_size == 4
        assert [t.name for t in pb.input] == list(MODEL_IO[model]["inputs"])
        assert [t.name for t in pb.output] == list(MODEL_IO[model]["outputs"])
        assert list(pb.input[0].dims) == [3, -1, -1] and list(pb.output[0].dims) == [-1, -1]
        inputs, outputs = onnx_io(folder / "model.onnx")
        assert inputs == [("pixel_values", "float32", ["batch", 3, "height", "width"])]
        assert outputs == [("predicted_depth", "float32", ["batch", "height", "width"])]
        assert repo.verify(model, 1) == []
        assert not list((depth_repository / model).glob(".staging-*"))


def test_embedded_runtime_matches_torch(depth_repository, tiny, rgb):
    torch_dpt, torch_zoe = dm.load_depth_model(str(tiny["dpt"])), dm.load_depth_model(str(tiny["zoedepth"]))
    onnx_dpt = dm.load_depth_model_from_repository(depth_repository, "depth_estimator")
    onnx_zoe = dm.load_depth_model_from_repository(depth_repository, "zoedepth", version=1)
    assert onnx_dpt.kind == "dpt" and onnx_zoe.kind == "zoedepth"
    assert onnx_zoe.source == str(depth_repository / "depth_reference" / "1")

    want = dm.estimate_relative_depth(torch_dpt, rgb).astype(np.int32)
    got = dm.estimate_relative_depth(onnx_dpt, rgb).astype(np.int32)
    assert got.dtype == want.dtype and got.shape == want.shape == rgb.shape[:2]
    assert np.abs(got - want).max() <= 1  # 16-bit outputs equal or within 1 LSB
    for flip_aug in (True, False):  # batch 2 (image + mirrored) and batch 1 through the same graph
        want = dm.estimate_metric_depth(torch_zoe, rgb, flip_aug=flip_aug)
        got = dm.estimate_metric_depth(onnx_zoe, rgb, flip_aug=flip_aug)
        assert got.shape == want.shape == rgb.shape[:2]
        assert np.max(np.abs(got.astype(np.float64) - want) / np.abs(want)) <= 1e-4


def test_models_list_and_verify_show_depth_models(depth_repository, capsys):
    assert main(["models", "list", "--repository", str(depth_repository), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["model"], r["version"], r["current"]) for r in rows} == {
        ("depth_estimator", 1, True), ("depth_reference", 1, True)}  # fmt: skip
    assert main(["models", "verify", "--repository", str(depth_repository)]) == 0
    out = capsys.readouterr().out
    assert "depth_estimator version 1: ok" in out and "depth_reference version 1: ok" in out


def test_corrupted_version_is_refused(depth_repository, tmp_path, rgb, capsys):
    repo = tmp_path / "model_repository"
    shutil.copytree(depth_repository, repo)
    onnx_file = repo / "depth_reference" / "1" / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(data))

    assert main(["models", "verify", "--repository", str(repo)]) == 1
    out = capsys.readouterr().out
    assert "depth_reference version 1: FAILED" in out and "depth_estimator version 1: ok" in out
    assert "model.onnx: sha256 does not match" in out
    model = dm.load_depth_model_from_repository(repo, "depth_reference")
    with pytest.raises(FailedPrecondition, match=r"model 'depth_reference' version 1: .*model.onnx: sha256"):
        dm.estimate_metric_depth(model, rgb)


def test_existing_version_and_non_depth_checkpoints_are_refused(depth_repository, tiny, tmp_path, capsys):
    with pytest.raises(InvalidArgument, match="version=1 is invalid: .*exists already"):
        export_depth_checkpoint(tiny["dpt"], depth_repository, version=1)
    capsys.readouterr()

    pipeline = tmp_path / "ldm3d"  # a diffusers pipeline folder
    pipeline.mkdir()
    (pipeline / "model_index.json").write_text('{"_class_name": "StableDiffusionLDM3DPipeline"}')
    other = tmp_path / "bert"  # a transformers checkpoint of another kind
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "bert"}')
    out = tmp_path / "repo"
    for ckpt, message in ((pipeline, "is a diffusers pipeline (model_index.json), not a depth checkpoint: export it "
                                     "with `ldm3d export`"),
                          (other, "is a 'bert' model: use a DPT (Intel/dpt-large) or ZoeDepth"),
                          (tmp_path / "missing", "no such folder")):
        assert main(["export-depth", "--model", str(ckpt), "--repository", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ldm3d export-depth: error: model=") and message in err, err
    assert not out.exists() or not any(out.rglob("model.onnx"))


def test_cli_export_then_depth_from_repository(tiny, tmp_path, rgb, capsys):
    repo = tmp_path / "repo"
    assert main(["export-depth", "--model", str(tiny["dpt"]), "--repository", str(repo), "--version", "3"]) == 0
    assert "depth_estimator version 3" in capsys.readouterr().out
    image = tmp_path / "a.png"
    write_png(image, rgb)
    assert main(["depth", "--model", str(tiny["dpt"]), str(image), "--out", str(tmp_path / "torch")]) == 0
    args = ["depth", "--repository", str(repo), "--version", "3", str(image), "--out", str(tmp_path / "onnx")]
    assert main(args) == 0
    want = read_depth(tmp_path / "torch" / "a_depth.png").astype(np.int32)
    got = read_depth(tmp_path / "onnx" / "a_depth.png").astype(np.int32)
    assert np.abs(got - want).max() <= 1
    capsys.readouterr()
    # no depth_reference in this repository: a clear error naming the command that makes one
    assert main(["depth", "--repository", str(repo), "--repository-model", "depth_reference", str(image),
                 "--out", str(tmp_path / "ref")]) == 2  # fmt: skip
    assert "has no 'depth_reference' model (export one with `ldm3d export-depth" in capsys.readouterr().err
    assert main(["depth", "--model", str(tiny["dpt"]), "--version", "3", str(image), "--out", str(tmp_path)]) == 2
    assert "--version applies to --repository" in capsys.readouterr().err


def test_triton_runtime_serves_the_depth_models(depth_repository, tmp_path, rgb):
    """The CPU tritonserver (Python backend over the same ONNX files) gives the embedded runtime's depth."""
    from ldm3d.repository.triton_cpu import TritonServer, build_cpu_repository

    if not TritonServer.installed():
        pytest.skip("the CPU tritonserver is not installed (bash scripts/triton/setup.sh)")
    cpu = tmp_path / "cpu_repository"
    build_cpu_repository(depth_repository, cpu)
    with TritonServer(cpu, load=list(DEPTH_MODELS), log_file=tmp_path / "tritonserver.log") as server:
        for model, estimate in (("depth_estimator", dm.estimate_relative_depth),
                                ("depth_reference", dm.estimate_metric_depth)):
            served = dm.load_depth_model_from_repository(depth_repository, model, runtime="triton",
                                                         triton_url=server.url)
            embedded = dm.load_depth_model_from_repository(depth_repository, model)
            try:
                got, want = estimate(served, rgb), estimate(embedded, rgb)
            finally:
                served.close()
                embedded.close()
            assert got.dtype == want.dtype and got.shape == want.shape
            if got.dtype == np.uint16:
                assert np.abs(got.astype(np.int32) - want).max() <= 1
            else:
                np.testing.assert_allclose(got, want, rtol=1e-5)
