"""The embedded ONNX Runtime runtime: parity with torch, version handling, hot swap, refusal of bad files/inputs."""

import json
import shutil
import threading

import numpy as np
import pytest

from ldm3d.errors import FailedPrecondition, InvalidArgument, NotFound
from ldm3d.repository import ModelRepository
from ldm3d.repository.layout import MODEL_FILE
from ldm3d.runtime import create_runtime
from ldm3d.runtime.embedded import EmbeddedRuntime


def _inputs(model, rng, batch=2, h=8, w=8):
    if model == "text_encoder":
        return {"input_ids": rng.integers(0, 49408, (batch, 77), dtype=np.int64)}
    if model == "unet":
        return {"sample": rng.standard_normal((batch, 4, h, w), dtype=np.float32),
                "timestep": np.full((batch,), 981.0, np.float32),
                "encoder_hidden_states": rng.standard_normal((batch, 77, 32), dtype=np.float32)}
    if model == "vae_decoder":
        return {"latent_sample": rng.standard_normal((batch, 4, h, w), dtype=np.float32)}
    return {"sample": rng.uniform(-1, 1, (batch, 6, 2 * h, 2 * w)).astype(np.float32)}


def _new_version(repository, model, version):
    from ldm3d.repository.manifest import write_manifest

    src, dst = repository / model / "1", repository / model / str(version)
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.pop("files")
    write_manifest(dst, {**manifest, "version": version})


@pytest.fixture(scope="module")
def torch_runtime(tiny_model):
    return create_runtime("torch", checkpoint=tiny_model)


@pytest.mark.parametrize("model", ["text_encoder", "unet", "vae_decoder", "vae_encoder"])
def test_matches_torch(exported_repository, torch_runtime, model):
    rt = create_runtime("embedded", repository=exported_repository)
    assert rt.kind == "embedded"
    rng = np.random.default_rng(0)
    for shape in ((2, 8, 8), (1, 12, 4)):  # dynamic batch and spatial axes
        x = _inputs(model, rng, *shape)
        got, want = rt.infer(model, x), torch_runtime.infer(model, x)
        assert got.keys() == want.keys()
        for name in want:
            assert got[name].dtype == np.float32
            np.testing.assert_allclose(got[name], want[name], atol=1e-4, rtol=1e-4)


def test_metadata_ready_and_one_session_per_version(exported_repository):
    rt = EmbeddedRuntime(exported_repository)
    meta = rt.metadata("unet")
    assert meta.version == 1 and meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.dtype, t.shape) for t in meta.inputs] == [
        ("sample", "float32", ("batch", 4, "h", "w")), ("timestep", "float32", ("batch",)),
        ("encoder_hidden_states", "float32", ("batch", "sequence", 32))]
    session = rt._sessions[("unet", 1)].session
    rt.infer("unet", _inputs("unet", np.random.default_rng(0)), version=1)
    assert rt._sessions[("unet", 1)].session is session  # created once, reused
    assert rt.ready("unet") and not rt.ready("depth_estimator") and not rt.ready("unet", 5)


def test_thread_settings_come_from_config(repository):
    cfg = repository / "unet" / "config.pbtxt"
    cfg.write_text(cfg.read_text() + 'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n')
    rt = EmbeddedRuntime(repository, preload=["unet"])
    opts = rt._sessions[("unet", 1)].session.get_session_options()
    assert opts.intra_op_num_threads == 1
    assert EmbeddedRuntime(repository, intra_op_threads=2, preload=["unet"])._sessions[
        ("unet", 1)].session.get_session_options().intra_op_num_threads == 2


def test_named_versions_and_hot_swap_drop_nothing(repository):
    rt = EmbeddedRuntime(repository, preload=["unet"])
    x = _inputs("unet", np.random.default_rng(1))
    want = rt.infer("unet", x)["out_sample"]
    errors, done, calls = [], threading.Event(), [0]

    def hammer():
        while not done.is_set():
            try:
                np.testing.assert_allclose(rt.infer("unet", x)["out_sample"], want, atol=1e-5)
                calls[0] += 1
            except Exception as exc:  # noqa: BLE001 - any failure is what this test looks for
                errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    _new_version(repository, "unet", 2)
    before = calls[0]
    assert rt.refresh() == {"unet": 2}
    while calls[0] < before + 5:
        pass
    done.set()
    for t in threads:
        t.join()
    assert not errors and calls[0] > 5
    assert rt.metadata("unet").version == 2 and rt.loaded() == {"unet": [2]}
    with pytest.raises(NotFound, match=r"model 'unet' version 1 is not available .*version_policy does not serve"):
        rt.infer("unet", x, version=1)
    ModelRepository(repository).promote("unet", 1)
    rt.refresh()
    assert rt.metadata("unet").version == 1 and rt.infer("unet", x, version=1)["out_sample"].shape == (2, 4, 8, 8)


def test_corrupted_file_is_never_loaded(repository):
    onnx = repository / "unet" / "1" / MODEL_FILE
    data = bytearray(onnx.read_bytes())
    data[-100] ^= 0x01
    onnx.write_bytes(bytes(data))
    rt = EmbeddedRuntime(repository)
    with pytest.raises(FailedPrecondition, match=r"model 'unet' version 1: .*unet/1/model.onnx: sha256 does not match"):
        rt.infer("unet", _inputs("unet", np.random.default_rng(0)))
    assert rt.loaded() == {}
    onnx.write_bytes(bytes(data[:5000]))  # truncated: caught by size even without hashing
    with pytest.raises(FailedPrecondition, match=r"unet/1/model.onnx: 5000 bytes, manifest says"):
        EmbeddedRuntime(repository, verify=False).load("unet")


def test_config_not_matching_graph_is_refused(repository):
    cfg = repository / "vae_decoder" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace('name: "sample"', 'name: "image"'))
    with pytest.raises(FailedPrecondition, match=r"model 'vae_decoder' version 1: .*config.pbtxt does not match "
                                                 r".*vae_decoder/1/model.onnx: outputs are \['sample'\]"):
        EmbeddedRuntime(repository).load("vae_decoder")


def test_missing_things_are_clear_errors(repository, tmp_path):
    with pytest.raises(NotFound, match="no such model repository folder"):
        create_runtime("embedded", repository=tmp_path / "none")
    rt = EmbeddedRuntime(repository)
    with pytest.raises(NotFound, match=r"model='depth_estimator' is not in repository"):
        rt.infer("depth_estimator", {})
    with pytest.raises(NotFound, match=r"model 'unet' version 3 .* no such version folder"):
        rt.infer("unet", _inputs("unet", np.random.default_rng(0)), version=3)


def test_bad_inputs(exported_repository):
    rt = EmbeddedRuntime(exported_repository)
    x = _inputs("unet", np.random.default_rng(0))
    with pytest.raises(InvalidArgument, match=r"missing \['timestep'\]"):
        rt.infer("unet", {k: v for k, v in x.items() if k != "timestep"})
    with pytest.raises(InvalidArgument, match=r"input 'sample' has shape \[2, 3, 8, 8\], expected \['batch', 4"):
        rt.infer("unet", {**x, "sample": x["sample"][:, :3]})
    with pytest.raises(InvalidArgument, match=r"input 'input_ids' is float32, expected int64"):
        rt.infer("text_encoder", {"input_ids": np.zeros((1, 77), np.float32)})
    # same kind, other width: converted (int32 ids are common)
    assert rt.infer("text_encoder", {"input_ids": np.zeros((1, 77), np.int32)})["last_hidden_state"].shape == (1, 77, 32)


def test_pipeline_from_repository_matches_torch(exported_repository, tiny_model):
    from ldm3d.pipeline import GenerateParams, LDM3DPipeline

    params = GenerateParams("a red barn", height=64, width=64, steps=3, seed=11)
    want = LDM3DPipeline.from_checkpoint(tiny_model)(params)
    got = LDM3DPipeline.from_repository(exported_repository)(params)
    assert got.metadata["model"]["versions"] == {m: 1 for m in ("text_encoder", "unet", "vae_decoder", "vae_encoder")}
    np.testing.assert_allclose(got.decoded, want.decoded, atol=1e-3)
    assert [np.abs(a.astype(int) - b).max() <= 1 for a, b in zip(got.rgb, want.rgb)] == [True]


def test_batches_over_the_configs_max_batch_size_are_split(exported_repository, tiny_model):
    """9 images with guidance are 18 U-Net samples a step; config.pbtxt allows 16 (Triton refuses more), so the
    sampler sends 16 + 2 and the images still match torch's single batch."""
    from ldm3d.pipeline import GenerateParams, LDM3DPipeline

    params = GenerateParams("a red barn", steps=2, seed=1, num_images=9, scheduler="ddim")
    pipe = LDM3DPipeline.from_repository(exported_repository)
    assert pipe.runtime.metadata("unet").extra["max_batch_size"] == 16
    got, want = pipe(params), LDM3DPipeline.from_checkpoint(tiny_model)(params)
    assert len(got.rgb) == 9
    np.testing.assert_allclose(got.decoded, want.decoded, atol=1e-3)
