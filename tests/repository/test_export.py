"""Export: Triton layout, manifests, real Triton configs, parity gate, and the spec rebuilt from the assets."""

import json

import numpy as np
import pytest

from ldm3d.errors import FailedPrecondition, InvalidArgument
from ldm3d.export import export_checkpoint
from ldm3d.pipeline.spec import spec_from_repository
from ldm3d.repository import ModelRepository, read_config
from ldm3d.repository.config import onnx_io
from ldm3d.repository.manifest import sha256_file
from ldm3d.runtime.base import DIFFUSION_MODELS, MODEL_IO


def test_layout_and_manifest(exported_repository, tiny_model):
    from ldm3d.pipeline.spec import checkpoint_hash

    repo = ModelRepository(exported_repository)
    assert repo.models() == sorted(DIFFUSION_MODELS)
    for model in DIFFUSION_MODELS:
        folder = exported_repository / model / "1"
        assert (exported_repository / model / "config.pbtxt").is_file()
        assert (folder / "model.onnx").is_file()
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["model"] == model and manifest["version"] == 1
        assert manifest["source"] == {"checkpoint": str(tiny_model), "sha256": checkpoint_hash(tiny_model)}
        assert manifest["export"]["opset"] == 17 and manifest["export"]["precision"] == "fp32"
        assert 0 <= manifest["parity"]["max_error"] <= manifest["parity"]["tolerance"] == 1e-3
        assert manifest["created"].startswith("20")
        files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}
        assert set(manifest["files"]) == files
        for rel, entry in manifest["files"].items():
            assert entry["sha256"] == sha256_file(folder / rel)
        assert not list((exported_repository / model).glob(".staging-*"))
    assert (exported_repository / "text_encoder/1/tokenizer/vocab.json").is_file()
    assert (exported_repository / "unet/1/scheduler_config.json").is_file()


def test_configs_are_triton_model_configs_matching_the_graphs(exported_repository):
    """Parsed by Triton's own ModelConfig proto: names, dtypes, dims agree with the ONNX graph."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    for model in DIFFUSION_MODELS:
        text = (exported_repository / model / "config.pbtxt").read_text()
        pb = text_format.Parse(text, model_config_pb2.ModelConfig())
        assert pb.name == model and pb.platform == "onnxruntime_onnx" and pb.max_batch_size > 0
        assert pb.version_policy.HasField("latest") and pb.instance_group[0].count == 1
        inputs, outputs = onnx_io(exported_repository / model / "1" / "model.onnx")
        assert [i.name for i in pb.input] == [n for n, _, _ in inputs] == list(MODEL_IO[model]["inputs"])
        assert [o.name for o in pb.output] == [n for n, _, _ in outputs] == list(MODEL_IO[model]["outputs"])
        for t, (_, dtype, shape) in zip(list(pb.input) + list(pb.output), inputs + outputs):
            assert model_config_pb2.DataType.Name(t.data_type) == {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}[dtype]
            assert shape[0] == "batch"
            model_dims = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
            assert model_dims == [d if isinstance(d, int) else -1 for d in shape[1:]]
    unet = text_format.Parse((exported_repository / "unet/config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert unet.HasField("dynamic_batching")
    assert list(unet.input[0].dims) == [4, -1, -1]  # dynamic spatial axes
    assert list(unet.input[1].dims) == [1] and list(unet.input[1].reshape.shape) == []  # timestep [batch]


def test_spec_from_repository_matches_checkpoint(exported_repository, tiny_model):
    from ldm3d.pipeline.spec import PipelineSpec

    want = PipelineSpec.from_checkpoint(tiny_model)
    got = spec_from_repository(exported_repository)
    for field in ("scheduler_config", "vae_scaling_factor", "vae_scale_factor", "latent_channels", "rgbd_channels",
                  "sample_size", "max_text_length", "text_hidden_size", "checkpoint_hash"):
        assert getattr(got, field) == getattr(want, field), field
    assert got.versions == {m: 1 for m in DIFFUSION_MODELS}
    assert (got.tokenizer_dir / "merges.txt").read_bytes() == (want.tokenizer_dir / "merges.txt").read_bytes()
    assert spec_from_repository(exported_repository, version=1).versions["unet"] == 1


def test_export_refuses_a_version_above_tolerance(tiny_model, tmp_path):
    root = tmp_path / "repo"
    with pytest.raises(FailedPrecondition, match=r"model 'vae_decoder' version 1: .* above the tolerance"):
        export_checkpoint(tiny_model, root, models=("vae_decoder",), tolerance=1e-12)
    assert not (root / "vae_decoder" / "1").exists()
    assert not list((root / "vae_decoder").glob(".*"))


def test_export_refuses_an_existing_version_and_numbers_the_next(repository, tiny_model):
    with pytest.raises(InvalidArgument, match=r"unet/1 exists already"):
        export_checkpoint(tiny_model, repository, version=1, models=("unet",))
    (result,) = export_checkpoint(tiny_model, repository, models=("unet",))
    assert result.version == 2 and ModelRepository(repository).current_version("unet") == 2


def test_export_external_data_for_large_graphs(tiny_model, tmp_path, monkeypatch):
    """Over the protobuf limit, weights go to one external data file listed in the manifest (limit lowered here)."""
    import onnxruntime as ort

    from ldm3d.export import export as export_mod

    monkeypatch.setattr(export_mod, "PROTOBUF_LIMIT", 1024)
    export_checkpoint(tiny_model, tmp_path / "repo", models=("vae_decoder",))
    folder = tmp_path / "repo/vae_decoder/1"
    assert (folder / "model.onnx.data").stat().st_size > (folder / "model.onnx").stat().st_size
    assert "model.onnx.data" in json.loads((folder / "manifest.json").read_text())["files"]
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"latent_sample": np.zeros((1, 4, 4, 4), np.float32)})[0]
    assert out.shape == (1, 6, 8, 8)


def test_read_config_round_trip(exported_repository):
    from ldm3d.repository import pbtxt

    path = exported_repository / "unet" / "config.pbtxt"
    raw = pbtxt.loads(path.read_text())
    assert pbtxt.loads(pbtxt.dumps(raw)) == raw
    cfg = read_config(path)
    assert cfg.input("timestep").model_dims == () and cfg.input("timestep").dims == (1,)
    text = '# comment\nname: "m" max_batch_size: 0\ninput [{ name: "x", data_type: TYPE_INT64, dims: [ -1 ] }]\n' \
           'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n' \
           'version_policy: { specific: { versions: 3 versions: 5 }}'
    cfg = pbtxt.loads(text)
    assert cfg["input"][0]["dims"] == [-1] and cfg["version_policy"]["specific"]["versions"] == [3, 5]
    assert cfg["parameters"] == [{"key": "intra_op_thread_count", "value": {"string_value": "1"}}]
    with pytest.raises(InvalidArgument, match="missing"):
        pbtxt.loads('input [ { name: "x" ')


def test_committed_configs_are_triton_configs_for_intel_ldm3d(tiny_model, tmp_path):
    """The committed model_repository/ configs parse as Triton ModelConfig and declare MODEL_IO at SD v1.4 sizes;
    exporting another architecture into a copy with no versions rewrites only the tensor sections."""
    import shutil
    from pathlib import Path

    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    committed = Path(__file__).resolve().parents[2] / "model_repository"
    for model in DIFFUSION_MODELS:
        pb = text_format.Parse((committed / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert pb.name == model and pb.platform == "onnxruntime_onnx"
        assert [t.name for t in pb.input] == list(MODEL_IO[model]["inputs"])
        assert [t.name for t in pb.output] == list(MODEL_IO[model]["outputs"])
    assert read_config(committed / "unet/config.pbtxt").input("encoder_hidden_states").dims == (-1, 768)
    assert read_config(committed / "vae_decoder/config.pbtxt").output("sample").dims == (6, -1, -1)

    repo = tmp_path / "model_repository"
    shutil.copytree(committed, repo, ignore=shutil.ignore_patterns("[0-9]*"))
    cfg = repo / "unet" / "config.pbtxt"
    cfg.write_text(cfg.read_text() + 'parameters { key: "intra_op_thread_count" value: { string_value: "2" } }\n')
    export_checkpoint(tiny_model, repo, models=("unet",))
    unet = read_config(cfg)
    assert unet.input("encoder_hidden_states").dims == (-1, 32) and unet.parameters == {"intra_op_thread_count": "2"}
    assert "dynamic_batching" in unet.raw


def test_fp16_export_keeps_fp32_inputs_and_outputs(tiny_model, tmp_path):
    from ldm3d.runtime.embedded import EmbeddedRuntime

    (result,) = export_checkpoint(tiny_model, tmp_path / "repo", models=("vae_decoder",), fp16=True)
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["export"]["precision"] == "fp16" and manifest["parity"]["tolerance"] == 3e-2
    assert 0 < result.max_error <= 3e-2
    inputs, outputs = onnx_io(result.path / "model.onnx")
    assert [d for _, d, _ in inputs + outputs] == ["float32", "float32"]
    out = EmbeddedRuntime(tmp_path / "repo").infer("vae_decoder", {"latent_sample": np.zeros((1, 4, 4, 4), np.float32)})
    assert out["sample"].dtype == np.float32 and out["sample"].shape == (1, 6, 8, 8)


def test_fused_attention_export_matches_torch(tiny_model, tmp_path):
    import onnx

    (result,) = export_checkpoint(tiny_model, tmp_path / "repo", models=("unet",), fused_attention=True)
    graph = onnx.load(str(result.path / "model.onnx"))
    assert sum(n.op_type == "MultiHeadAttention" for n in graph.graph.node) == 12
    assert result.max_error < 1e-5
    assert json.loads((result.path / "manifest.json").read_text())["export"]["attention"] == \
        "com.microsoft.MultiHeadAttention"
