"""Versions, verification against manifests, promote/remove, clear errors, and the `ldm3d models` CLI."""

import json

import pytest

from ldm3d.cli import main
from ldm3d.errors import FailedPrecondition, NotFound
from ldm3d.repository import ModelRepository
from ldm3d.repository.layout import MODEL_FILE


def _add_version(repository, version):
    """A second version of unet without re-exporting: a copy with its own (valid) manifest."""
    import shutil

    from ldm3d.repository.manifest import write_manifest

    src, dst = repository / "unet" / "1", repository / "unet" / str(version)
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["version"] = version
    manifest.pop("files")
    write_manifest(dst, manifest)


def test_verify_reports_corrupted_truncated_and_missing_files(repository):
    repo = ModelRepository(repository)
    assert all(repo.verify(m, 1) == [] for m in repo.models())
    onnx = repository / "unet" / "1" / MODEL_FILE
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    (problem,) = repo.verify("unet", 1)
    assert (problem.path, problem.problem) == ("model.onnx", "sha256")

    enc = repository / "vae_encoder" / "1" / MODEL_FILE
    enc.write_bytes(enc.read_bytes()[:1000])
    assert [p.problem for p in repo.verify("vae_encoder", 1)] == ["size"]
    (repository / "vae_decoder" / "1" / "vae_config.json").unlink()
    assert [(p.path, p.problem) for p in repo.verify("vae_decoder", 1)] == [("vae_config.json", "missing")]
    (repository / "text_encoder" / "1" / "stray.bin").write_bytes(b"x")
    assert [p.problem for p in repo.verify("text_encoder", 1)] == ["unlisted"]


def test_verify_reports_a_config_that_does_not_match_the_graph(repository):
    cfg = repository / "unet" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("dims: [ 4, -1, -1 ]", "dims: [ 3, -1, -1 ]", 1))
    (problem,) = ModelRepository(repository).verify("unet", 1)
    assert problem.problem == "config" and "'sample' has dims [3, -1, -1]" in problem.detail


def test_promote_pins_a_version_and_remove_refuses_it(repository):
    repo = ModelRepository(repository)
    _add_version(repository, 2)
    assert repo.current_version("unet") == 2 and repo.served_versions("unet") == [2]
    with pytest.raises(NotFound, match=r"model 'unet' version 1 is not available .* version_policy does not serve"):
        repo.resolve("unet", 1)
    repo.promote("unet", 1)
    assert repo.current_version("unet") == 1 and repo.resolve("unet", 1) == 1
    with pytest.raises(FailedPrecondition, match="pinned by version_policy"):
        repo.remove("unet", 1)
    repo.remove("unet", 2)
    assert repo.versions("unet") == [1]
    repo.follow_latest("unet")
    assert repo.current_version("unet") == 1


def test_promote_refuses_a_corrupted_version(repository):
    _add_version(repository, 2)
    onnx = repository / "unet" / "2" / MODEL_FILE
    onnx.write_bytes(onnx.read_bytes()[:-10])
    with pytest.raises(FailedPrecondition, match=r"model 'unet' version 2 cannot be promoted: .*unet/2/model.onnx"):
        ModelRepository(repository).promote("unet", 2)


def test_errors_name_repository_model_and_version(repository, tmp_path):
    with pytest.raises(NotFound, match=r"repository='.*nowhere': no such model repository folder"):
        ModelRepository(tmp_path / "nowhere")
    repo = ModelRepository(repository)
    with pytest.raises(NotFound, match=r"model='depth_estimator' is not in repository .* models there: text_encoder"):
        repo.config("depth_estimator")
    with pytest.raises(NotFound, match=r"model 'unet' version 7 .* no such version folder; served versions: \[1\]"):
        repo.resolve("unet", 7)
    with pytest.raises(NotFound, match=r"model 'unet' version 7: .*unet/7 does not exist"):
        repo.remove("unet", 7)


def test_models_cli(repository, capsys):
    assert main(["models", "list", "--repository", str(repository), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["model"], r["version"], r["current"]) for r in rows} == {
        (m, 1, True) for m in ("text_encoder", "unet", "vae_decoder", "vae_encoder")}
    assert main(["models", "show", "--repository", str(repository), "--model", "unet"]) == 0
    assert json.loads(capsys.readouterr().out)["unet"]["manifest"]["parity"]["max_error"] < 1e-3
    assert main(["models", "verify", "--repository", str(repository)]) == 0
    onnx = repository / "vae_decoder" / "1" / MODEL_FILE
    onnx.write_bytes(onnx.read_bytes()[:-1])
    assert main(["models", "verify", "--repository", str(repository)]) == 1
    out = capsys.readouterr().out
    assert "vae_decoder   version 1: FAILED" in out and "vae_decoder/1/model.onnx" in out and "truncated" in out
    _add_version(repository, 2)
    assert main(["models", "promote", "--repository", str(repository), "--model", "unet", "--version", "1"]) == 0
    assert ModelRepository(repository).current_version("unet") == 1
    assert main(["models", "remove", "--repository", str(repository), "--model", "unet", "--version", "2"]) == 0
    assert main(["models", "remove", "--repository", str(repository), "--model", "unet", "--version", "9"]) == 2
    assert "model 'unet' version 9" in capsys.readouterr().err


def test_export_cli(tiny_model, tmp_path, capsys):
    assert main(["export", "--model", str(tiny_model), "--repository", str(tmp_path / "r"), "--version", "4",
                 "--models", "text_encoder"]) == 0
    assert "text_encoder  version 4" in capsys.readouterr().out
    assert main(["export", "--model", str(tmp_path / "missing"), "--repository", str(tmp_path / "r")]) == 2
    assert "no such checkpoint folder" in capsys.readouterr().err
