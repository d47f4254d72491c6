"""The two stages on CPU with tiny models: overfitting a fixed batch, exact resume, DDP over gloo, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from .helpers import FAST, metrics, train_cli


def _weights(run, sub):
    from safetensors.torch import load_file

    return load_file(str(run / "final" / sub / "diffusion_pytorch_model.safetensors"))


def test_widening_an_sd_autoencoder_keeps_its_rgb_behaviour():
    from diffusers import AutoencoderKL

    from ldm3d_training.autoencoder import widen_vae

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        before = vae.encode(x).latent_dist.mean
        added = widen_vae(vae, 6)
        assert added == 2 * 32 * 3 * 9 + 3  # conv_in: 3 new input channels; conv_out: 3 new filters + biases
        assert vae.config.in_channels == vae.config.out_channels == 6
        rgbd = torch.cat([x, torch.rand(1, 3, 32, 32)], 1)
        torch.testing.assert_close(vae.encode(rgbd).latent_dist.mean, before, rtol=0, atol=1e-6)
        out = vae.decode(before).sample
        assert out.shape == (1, 6, 32, 32)
        torch.testing.assert_close(out[:, 3:], out[:, :3].mean(1, keepdim=True).expand(-1, 3, -1, -1), atol=1e-5,
                                   rtol=0)


def test_lpips_backbone_loads_a_torchvision_layout_state_dict(tmp_path):
    from ldm3d_training.losses import LPIPS, VGG16Features

    src = VGG16Features()
    state = {f"features.{k.split('.', 1)[1]}": v for k, v in src.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's file also holds the classifier: ignored
    torch.save(state, tmp_path / "vgg16.pth")
    lp = LPIPS(tmp_path / "vgg16.pth")
    torch.testing.assert_close(lp.net.features[28].weight, src.features[28].weight)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert lp(x, x).abs().max() == 0 and (lp(x, y) > 0).all() and lp(x, y).shape == (2, 1, 1, 1)
    torch.save({"something": torch.zeros(1)}, tmp_path / "bad.pth")
    from ldm3d.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="lpips-vgg"):
        LPIPS(tmp_path / "bad.pth")


# Each stage trains N steps straight (it must overfit the fixed batch: 2 samples, batch 2) and N/2 + resume to N,
# which must end bit-identical, metrics included. The autoencoder's discriminator starts at step 1, so the
# checkpoint carries both optimizers' state; the U-Net run carries EMA weights.
STAGE_RUNS = {
    "autoencoder": (4, ["--lpips-random", "--disc-start", "1", "--lr", "2e-3"]),
    "unet": (6, ["--ema", "--caption-dropout", "0", "--lr", "1e-3"]),
}


@pytest.mark.parametrize("stage", STAGE_RUNS)
def test_stage_overfits_a_fixed_batch_and_resumes_bit_identically(tiny_model, prepared, tmp_path, stage):
    n, extra = STAGE_RUNS[stage]
    common = ["--model", tiny_model, "--data", prepared, "--batch-size", 2, "--no-progress", "--validate-every", "-1",
              "--shuffle-buffer", 1, *extra]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_cli(stage, *common, "--out", straight, "--steps", n, "--checkpoint-every", n) == 0
    assert train_cli(stage, *common, "--out", split, "--steps", n // 2, "--checkpoint-every", n // 2) == 0
    assert (split / "checkpoints" / f"step-{n // 2:07d}" / "checkpoint.safetensors").is_file()
    assert train_cli(stage, *common, "--out", split, "--steps", n, "--checkpoint-every", n, "--resume") == 0

    rows = metrics(straight)
    assert [r["step"] for r in rows] == list(range(1, n + 1))
    assert {"loss", "lr", "samples_per_s", "world_size"} <= set(rows[0])
    if stage == "autoencoder":
        assert rows[-1]["rec_loss"] < rows[0]["rec_loss"] * 0.97, [r["rec_loss"] for r in rows]
        assert "disc_loss" in rows[-1] and "disc_loss" not in rows[0]  # the discriminator starts at disc_start
        summary = json.loads((straight / "final" / "training.json").read_text())
        assert "RANDOM" in summary["lpips_backbone"]
    else:
        losses = [r["loss"] for r in rows]
        assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses

    sub = "unet" if stage == "unet" else "vae"
    a, b = _weights(straight, sub), _weights(split, sub)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in rows]

    assert strip(metrics(straight)) == strip(metrics(split))


def test_torchrun_two_processes_end_with_identical_parameters(tiny_model, prepared, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "ldm3d_training", "unet", "--model", str(tiny_model), "--data", str(prepared), "--out", str(run),
           "--steps", "2", "--batch-size", "1", *FAST]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "final" / "training.json").read_text())
    assert summary["replicas"]["world_size"] == 2 and summary["replicas"]["identical"]
    assert all(r["world_size"] == 2 for r in metrics(run))


@pytest.mark.parametrize("args, flag", [
    (["--data", "/nonexistent"], "--data"),
    (["--batch-size", "64"], "--batch-size"),
    (["--device", "hpu"], "--device hpu"),
    (["--lr", "0"], "--lr"),
    (["--perceptual-weight", "1"], "--lpips-vgg"),
    (["--perceptual-weight", "1", "--lpips-vgg", "/nonexistent.pth"], "--lpips-vgg"),
    (["--config", "CONFIG"], "unknown option"),
    (["--model", "/nonexistent-ckpt"], "--model"),
])
def test_bad_training_input_exits_2_with_one_line(tiny_model, prepared, tmp_path, capsys, args, flag):
    (tmp_path / "c.yaml").write_text("batch_sise: 2\n")
    argv = {"--model": str(tiny_model), "--data": str(prepared), "--out": str(tmp_path / "run"), "--steps": "1",
            "--batch-size": "1", "--perceptual-weight": "0"}
    for k, v in zip(args[::2], args[1::2]):
        argv[k] = v.replace("CONFIG", str(tmp_path / "c.yaml"))
    assert train_cli("autoencoder", *[x for kv in argv.items() for x in kv], *FAST) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_an_existing_run_needs_resume_and_the_same_settings(tiny_model, prepared, tmp_path, capsys):
    from ldm3d_training.config import UNetConfig

    common = ["--model", tiny_model, "--data", prepared, "--out", tmp_path / "r", "--batch-size", 1, *FAST]
    (tmp_path / "r").mkdir()
    UNetConfig(model=str(tiny_model), data=str(prepared), out=str(tmp_path / "r"), batch_size=1).save(tmp_path / "r")
    assert train_cli("unet", *common, "--steps", 2) == 2
    assert "--resume" in capsys.readouterr().err
    assert train_cli("unet", *common, "--steps", 2, "--resume", "--seed", 7) == 2
    assert "--seed" in capsys.readouterr().err


def test_config_file_then_flags(prepared, tmp_path):
    """Defaults < --config (YAML or TOML, option names) < flags; the typed config is what the run saves."""
    import argparse

    from ldm3d_training.config import UNetConfig

    def parse(*argv):
        p = argparse.ArgumentParser()
        UNetConfig.add_arguments(p)
        return UNetConfig.from_sources(p.parse_args([str(a) for a in argv]))

    (tmp_path / "c.yaml").write_text("batch_size: 3\nlr: 2.0e-5\nema: true\nvalidation_prompts: [a, b, c]\n")
    (tmp_path / "c.toml").write_text("batch-size = 5\nsnr_gamma = 5.0\n")
    base = ["--model", "m", "--data", prepared, "--out", tmp_path / "run"]
    cfg = parse(*base, "--config", tmp_path / "c.yaml", "--lr", "3e-5")
    assert (cfg.batch_size, cfg.lr, cfg.ema, cfg.validation_prompts, cfg.steps) == (3, 3e-5, True, ["a", "b", "c"], 1000)
    cfg = parse(*base, "--config", tmp_path / "c.toml")
    assert (cfg.batch_size, cfg.snr_gamma, cfg.lr) == (5, 5.0, 1e-5)
    assert parse(*base).batch_size == 32  # the paper's stage-2 default
    cfg.save(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["stage"] == "unet"
