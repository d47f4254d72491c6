"""prepare → autoencoder → U-Net → publish → ``ldm3d generate --repository R --version N``, on tiny models."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from .helpers import metrics, train_cli, write_images


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """A folder data set (one image without depth: DPT estimates it), a stage-1 run and a stage-2 run on it."""
    from ldm3d.evaluation.depth_models import make_tiny_dpt

    root = tmp_path_factory.mktemp("e2e")
    raw = root / "raw"
    write_images(raw, 3)
    for i in range(3):
        (raw / f"img{i}.txt").write_text(f"a small test room {i}")
        depth = raw / f"img{i}_depth.png"
        if i < 2:
            depth.rename(raw / f"img{i}.depth.png")  # the folder layout's depth name
        else:
            depth.unlink()
    dpt = make_tiny_dpt(root / "dpt")
    prep, ae, unet = root / "prep", root / "ae", root / "unet"
    assert train_cli("prepare", "--input", raw, "--out", prep, "--resolution", 32, "--depth-model", dpt,
                     "--val-fraction", "0.34", "--no-progress") == 0
    assert train_cli("autoencoder", "--model", tiny_model, "--data", prep, "--out", ae, "--steps", 2,
                     "--batch-size", 2, "--lpips-random", "--no-progress") == 0
    assert train_cli("unet", "--model", tiny_model, "--vae", ae, "--data", prep, "--out", unet, "--steps", 2,
                     "--batch-size", 2, "--validation-steps", 2, "--snr-gamma", 5, "--no-progress") == 0
    return {"prep": prep, "ae": ae, "unet": unet}


def test_end_to_end_publish_serves_the_new_release(trained, repository, tmp_path, capsys):
    from ldm3d.cli import main as ldm3d_main
    from ldm3d.repository.releases import read_releases

    prep, ae, unet = trained["prep"], trained["ae"], trained["unet"]
    manifest = json.loads((prep / "manifest.json").read_text())
    assert manifest["depth"] == {**manifest["depth"], "provided": 2, "estimated": 1}
    # stage 1 validated reconstructions on the val split; stage 2 sampled its prompts through ldm3d.pipeline
    v1 = json.loads((ae / "final" / "training.json").read_text())["validation"]
    assert v1["val_samples"] == 1 and v1["psnr"] > 0 and v1["depth_abs_rel"] is not None
    v2 = json.loads((unet / "final" / "training.json").read_text())["validation"]
    assert len(v2["images"]) == 2
    rgb = np.asarray(Image.open(unet / "validation" / "step-0000002" / "0_rgb.png"))
    depth = Image.open(unet / "validation" / "step-0000002" / "0_depth.png")
    assert rgb.shape == (64, 64, 3) and depth.mode == "I;16"
    assert all(r["world_size"] == 1 for r in metrics(unet)) and "rec_loss" in metrics(ae)[0]

    capsys.readouterr()
    assert train_cli("publish", unet, "--repository", repository, "--promote") == 0
    assert "release 2" in capsys.readouterr().out
    rel = read_releases(repository)
    assert rel.current == 2
    assert rel.get(2).models == {"text_encoder": 1, "unet": 2, "vae_decoder": 2, "vae_encoder": 2}
    assert not (repository / "text_encoder" / "2").exists()  # unchanged models keep their version: nothing copied
    source = json.loads((repository / "unet" / "2" / "manifest.json").read_text())["source"]
    training = source["training"]
    assert training["data_manifest_sha256"] == hashlib.sha256((prep / "manifest.json").read_bytes()).hexdigest()
    assert training["steps"] == 2 and "loss" in training["final_losses"] and training["validation"]["images"]
    assert training["code_revision"] and training["config"]["vae"] == str(trained["ae"])
    assert json.loads((repository / "vae_decoder" / "2" / "manifest.json").read_text())["source"]["training"][
        "stage"] == "unet"  # the autoencoder the U-Net was trained on came along

    out = tmp_path / "gen"
    assert ldm3d_main(["generate", "--repository", str(repository), "--version", "2", "--prompt", "a room",
                       "--steps", "2", "--seed", "3", "--out", str(out), "--no-progress"]) == 0
    meta = json.loads(next(out.glob("*.json")).read_text())
    assert meta["model"]["versions"] == {"text_encoder": 1, "unet": 2, "vae_decoder": 2, "vae_encoder": 2}
    assert Image.open(next(out.glob("*_depth.png"))).mode == "I;16"

    # the same run again, or the stage-1 run whose autoencoder is already there: nothing new to publish
    for run in (unet, ae):
        assert train_cli("publish", run, "--repository", repository) == 2
        assert "nothing to publish" in capsys.readouterr().err


def test_a_failed_publish_leaves_the_repository_untouched(trained, exported_repository, tmp_path, monkeypatch):
    from ldm3d.repository import releases

    repo = tmp_path / "repo"
    shutil.copytree(exported_repository, repo)

    def snapshot():
        return sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if not p.name.startswith("."))

    before = snapshot()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(releases, "add_release", fail)
    with pytest.raises(OSError, match="disk full"):
        from ldm3d_training.publish import publish

        publish(trained["unet"], repo)
    assert snapshot() == before and not (repo / "releases.json").exists()


def test_publish_refuses_an_unfinished_run(tiny_model, prepared, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    assert train_cli("publish", run, "--repository", tmp_path / "repo") == 2
    assert "not a training run" in capsys.readouterr().err
