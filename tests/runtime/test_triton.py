"""The triton runtime against a real `tritonserver` process (CPU build, Python backend running our ONNX files).

Needs `bash scripts/triton/setup.sh` (installs .triton/); skipped with that reason when it has not been run.
"""

import json
import shutil
import threading

import numpy as np
import pytest

from ldm3d.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from ldm3d.repository.layout import MODEL_FILE
from ldm3d.repository.triton_cpu import TritonServer, build_cpu_repository, free_port
from ldm3d.runtime import create_runtime
from ldm3d.runtime.embedded import EmbeddedRuntime

pytestmark = pytest.mark.skipif(not TritonServer.installed(),
                                reason="tritonserver is not set up: run `bash scripts/triton/setup.sh` (make triton)")

MODELS = ("text_encoder", "unet", "vae_decoder", "vae_encoder")


def _inputs(model, rng, batch=2, h=8, w=8):
    if model == "text_encoder":
        return {"input_ids": rng.integers(0, 49408, (batch, 77), dtype=np.int64)}
    if model == "unet":
        return {"sample": rng.standard_normal((batch, 4, h, w), dtype=np.float32),
                "timestep": np.array([981.0, 1.0][:batch], np.float32),
                "encoder_hidden_states": rng.standard_normal((batch, 77, 32), dtype=np.float32)}
    if model == "vae_decoder":
        return {"latent_sample": rng.standard_normal((batch, 4, h, w), dtype=np.float32)}
    return {"sample": rng.uniform(-1, 1, (batch, 6, 2 * h, 2 * w)).astype(np.float32)}


def _new_version(repository, version, corrupt=False):
    from ldm3d.repository.manifest import write_manifest

    src, dst = repository / "unet" / "1", repository / "unet" / str(version)
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.pop("files")
    write_manifest(dst, {**manifest, "version": version})
    if corrupt:
        data = bytearray((dst / MODEL_FILE).read_bytes())
        data[len(data) // 3] ^= 0x10
        (dst / MODEL_FILE).write_bytes(bytes(data))


@pytest.fixture(scope="module")
def served(exported_repository, tmp_path_factory):
    """(our repository copy, its CPU twin, a running server with every model loaded)."""
    root = tmp_path_factory.mktemp("triton")
    repo = root / "model_repository"
    shutil.copytree(exported_repository, repo)
    cpu = root / "cpu_repository"
    build_cpu_repository(repo, cpu)
    with TritonServer(cpu, load=list(MODELS), log_file=root / "tritonserver.log") as server:
        yield repo, cpu, server


@pytest.fixture(scope="module")
def triton(served):
    rt = create_runtime("triton", triton_url=served[2].url, repository=served[0])
    yield rt
    rt.close()


@pytest.mark.parametrize("model", MODELS)
def test_matches_embedded(served, triton, model):
    embedded = EmbeddedRuntime(served[0])
    rng = np.random.default_rng(0)
    assert triton.shared_memory  # loopback URL: tensors go through system shared memory
    for shape in ((2, 8, 8), (1, 12, 4)):
        x = _inputs(model, rng, *shape)
        got, want = triton.infer(model, x), embedded.infer(model, x)
        assert got.keys() == want.keys()
        for name in want:
            assert got[name].dtype == np.float32
            np.testing.assert_allclose(got[name], want[name], atol=1e-5)


def test_without_shared_memory_and_concurrent_calls(served):
    x = _inputs("unet", np.random.default_rng(3))
    want = EmbeddedRuntime(served[0]).infer("unet", x)["out_sample"]
    with create_runtime("triton", triton_url=served[2].url, shared_memory=False) as rt:
        np.testing.assert_allclose(rt.infer("unet", x)["out_sample"], want, atol=1e-5)
    with create_runtime("triton", triton_url=served[2].url) as rt:  # pooled shm regions under concurrency
        results, errors = [], []

        def call():
            try:
                for _ in range(5):
                    results.append(rt.infer("unet", x)["out_sample"])
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=call) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert not errors and len(results) == 20
        for r in results:
            np.testing.assert_allclose(r, want, atol=1e-5)


def test_metadata_and_readiness(triton):
    meta = triton.metadata("unet")
    assert meta.version == 1 and meta.extra["served_versions"] == [1]
    assert [(t.name, t.dtype, t.shape) for t in meta.inputs] == [
        ("sample", "float32", ("batch", 4, "h", "w")), ("timestep", "float32", ("batch",)),
        ("encoder_hidden_states", "float32", ("batch", "sequence", 32))]
    assert triton.ready("unet") and not triton.ready("unet", 9) and not triton.ready("depth_estimator")


def test_errors_are_mapped(triton):
    x = _inputs("unet", np.random.default_rng(0))
    with pytest.raises(NotFound, match=r"model 'depth_estimator' is not available on the Triton server"):
        triton.infer("depth_estimator", {})
    with pytest.raises(NotFound, match=r"model 'unet' version 7 is not available"):
        triton.infer("unet", x, version=7)
    with pytest.raises(InvalidArgument, match=r"missing \['encoder_hidden_states'\]"):
        triton.infer("unet", {k: v for k, v in x.items() if k != "encoder_hidden_states"})
    with pytest.raises(InvalidArgument, match=r"model 'unet': Triton rejected the request"):
        triton.infer("unet", {**x, "sample": x["sample"][:, :3]})
    down = create_runtime("triton", triton_url=f"127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable, match=r"Triton server at 127.0.0.1:\d+ is unavailable"):
        down.infer("unet", x)
    assert not down.ready("unet") and not down.server_ready()


def test_load_new_version_then_switch_drops_nothing(served, triton):
    repo, cpu, _ = served
    x = _inputs("unet", np.random.default_rng(1))
    want = triton.infer("unet", x)["out_sample"]
    _new_version(repo, 2)
    build_cpu_repository(repo, cpu)
    errors, done, calls = [], threading.Event(), [0]

    def hammer():
        with create_runtime("triton", triton_url=served[2].url) as rt:
            while not done.is_set():
                try:
                    np.testing.assert_allclose(rt.infer("unet", x)["out_sample"], want, atol=1e-5)
                    calls[0] += 1
                except Exception as exc:  # noqa: BLE001 - any failure is what this test looks for
                    errors.append(exc)

    t = threading.Thread(target=hammer)
    t.start()
    try:
        triton.load("unet")  # the policy (latest 1) now serves version 2: loaded beside 1, then switched
        before = calls[0]
        while calls[0] < before + 3 and not errors:
            pass
    finally:
        done.set()
        t.join()
    assert not errors, errors[:1]
    assert triton.metadata("unet").version == 2
    np.testing.assert_allclose(triton.infer("unet", x, version=2)["out_sample"], want, atol=1e-5)
    triton.load("unet", versions=[1, 2])  # a request may name either
    assert triton.metadata("unet").extra["served_versions"] == [1, 2]
    assert triton.infer("unet", x, version=1)["out_sample"].shape == want.shape


def test_corrupted_version_is_never_loaded(served, triton):
    repo, cpu, _ = served
    _new_version(repo, 3, corrupt=True)
    with pytest.raises(FailedPrecondition, match=r"model 'unet' version 3: .*unet/3/model.onnx: sha256 does not match"):
        build_cpu_repository(repo, cpu)
    build_cpu_repository(repo, cpu, verify=False)  # the server-side model checks the manifest too
    with pytest.raises(FailedPrecondition, match=r"model 'unet' version 3: .*unet/3/model.onnx does not match its "
                                                 r"manifest .*not loaded"):
        triton.load("unet", versions=[3])
    # never half-loaded: version 3 is not served, the versions that served before still do
    assert not triton.ready("unet", 3) and triton.ready("unet", 1) and triton.ready("unet", 2)
    assert triton.infer("unet", _inputs("unet", np.random.default_rng(0)))["out_sample"].shape == (2, 4, 8, 8)


def test_pipeline_agrees_across_torch_embedded_and_triton(served, exported_repository, tiny_model):
    """Text → RGBD end to end (classifier-free guidance, image-to-image too) on all three runtimes, within 1e-3."""
    from ldm3d.pipeline import GenerateParams, LDM3DPipeline

    params = GenerateParams("a cabin in the woods", height=64, width=72, steps=4, seed=7)
    ref = LDM3DPipeline.from_checkpoint(tiny_model)(params)
    img2img = GenerateParams("a cabin", height=64, width=72, steps=4, seed=3, init_rgb=ref.rgb[0],
                             init_depth=ref.depth[0], strength=0.6)
    ref2 = LDM3DPipeline.from_checkpoint(tiny_model)(img2img)
    for kind, url in (("embedded", None), ("triton", served[2].url)):
        # the pristine repository (version 1 of everything) gives the spec; the server serves version 1 as well
        pipe = LDM3DPipeline.from_repository(exported_repository, runtime=kind, triton_url=url, version=1)
        got = pipe(params)
        assert got.metadata["model"]["runtime"] == kind
        np.testing.assert_allclose(got.decoded, ref.decoded, atol=1e-3)
        np.testing.assert_allclose(pipe(img2img).decoded, ref2.decoded, atol=1e-3)


def test_step_batched_sampling_on_triton_equals_embedded_alone(served, exported_repository):
    """Step-level batching with the U-Net on Triton: each step of the running requests is one Triton request
    (rows at their own timesteps, guided and unguided mixed, two shapes taking turns); each result equals the
    same request sampled alone on the embedded runtime."""
    from ldm3d.pipeline import GenerateParams, LDM3DPipeline
    from ldm3d.pipeline.batching import StepBatcher

    on_triton = LDM3DPipeline.from_repository(exported_repository, runtime="triton", triton_url=served[2].url,
                                              version=1)
    alone = LDM3DPipeline.from_repository(exported_repository, version=1)
    params = [GenerateParams("a cabin", steps=3, seed=1, scheduler="ddim"),
              GenerateParams("a barn", steps=4, seed=2, guidance_scale=1.0, scheduler="euler-a"),
              GenerateParams("a lighthouse", steps=3, seed=3, height=64, width=72)]
    params = [p.resolved(alone.spec) for p in params]

    def embeddings(pipe, p):
        cond = pipe.text.encode([p.prompt]).embeddings
        return cond, (pipe.text.encode([p.negative_prompt]).embeddings if p.do_classifier_free_guidance else None)

    calls = []
    batcher = StepBatcher(4, on_batch=lambda n, rows, s: calls.append(n))
    try:
        futures = [batcher.submit(on_triton.sampler, *embeddings(on_triton, p), p) for p in params]
        batched = [f.result(120) for f in futures]
    finally:
        batcher.close()
    assert max(calls) == 2  # the two 64x64 requests shared their steps; the 64x72 one stepped in its own turns
    for p, got in zip(params, batched):
        np.testing.assert_allclose(got, alone.sampler.sample(*embeddings(alone, p), p), atol=1e-4)
