"""The `ldm3d` command as a user runs it: a real subprocess, real files, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ldm3d import codec


def ldm3d(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "ldm3d", *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"ldm3d {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def test_generate_writes_the_four_files(tiny_model, tmp_path):
    proc = ldm3d("generate", "--model", tiny_model, "--prompt", "a cabin in the woods", "--seed", 42, "--steps", 3,
                 "--scheduler", "ddim", "--out", tmp_path)
    stem = "a-cabin-in-the-woods_s42"
    names = [f"{stem}_rgb.png", f"{stem}_depth.png", f"{stem}_depth_preview.png", f"{stem}.json"]
    assert proc.stdout.split() == [str(tmp_path / n) for n in names]
    assert "denoising" in proc.stderr  # the progress bar
    with Image.open(tmp_path / names[0]) as im:
        assert im.mode == "RGB" and im.size == (64, 64)
    with Image.open(tmp_path / names[1]) as im:
        assert im.mode.startswith("I;16")
    with Image.open(tmp_path / names[2]) as im:
        assert im.mode == "RGB"
    meta = json.loads((tmp_path / names[3]).read_text())
    for key in ("prompt", "negative_prompt", "height", "width", "steps", "guidance_scale", "seed", "scheduler",
                "timings_s", "model"):
        assert key in meta
    assert meta["seed"] == 42 and meta["scheduler"] == "ddim" and len(meta["model"]["checkpoint_sha256"]) == 64
    assert list(tmp_path.glob(".*part")) == []


def test_generate_matches_the_library(tiny_model, tiny_pipeline, tmp_path):
    from ldm3d.pipeline import GenerateParams

    ldm3d("generate", "--model", tiny_model, "--prompt", "a lake", "--seed", 5, "--steps", 2, "--out", tmp_path,
          "--stem", "x", "--no-progress")
    res = tiny_pipeline(GenerateParams(prompt="a lake", seed=5, steps=2))
    np.testing.assert_array_equal(codec.read_depth(tmp_path / "x_depth.png"), res.depth[0])
    np.testing.assert_array_equal(codec.read_rgb(tmp_path / "x_rgb.png"), res.rgb[0])


def test_num_images_and_4_channel_checkpoint(tiny_model_4c, tmp_path):
    proc = ldm3d("generate", "--model", tiny_model_4c, "--prompt", "p", "--seed", 1, "--steps", 2, "--num-images", 2,
                 "--out", tmp_path, "--no-progress")
    assert len(proc.stdout.split()) == 8
    assert codec.read_depth(tmp_path / "p_s1_1_depth.png").shape == (64, 64)


def test_image_to_image_from_files(tiny_model, tmp_path):
    rng = np.random.default_rng(0)
    codec.write_png(tmp_path / "in_rgb.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    codec.write_png(tmp_path / "in_depth.png", rng.integers(0, 65536, (64, 64), dtype=np.uint16))
    ldm3d("generate", "--model", tiny_model, "--prompt", "p", "--init-rgb", tmp_path / "in_rgb.png", "--init-depth",
          tmp_path / "in_depth.png", "--strength", 0.6, "--steps", 5, "--seed", 2, "--out", tmp_path / "o")
    meta = json.loads((tmp_path / "o" / "p_s2.json").read_text())
    assert meta["image_to_image"] == {"strength": 0.6}


def test_image_to_image_with_estimated_depth(tiny_model, tmp_path):
    from ldm3d.evaluation.depth_models import make_tiny_dpt

    dpt = make_tiny_dpt(tmp_path / "dpt")
    codec.write_png(tmp_path / "pano.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    ldm3d("generate", "--model", tiny_model, "--prompt", "p", "--init-rgb", tmp_path / "pano.png", "--estimate-depth",
          "--depth-model", dpt, "--strength", 0.7, "--steps", 4, "--seed", 3, "--out", tmp_path / "o", "--no-progress")
    meta = json.loads((tmp_path / "o" / "p_s3.json").read_text())
    assert meta["image_to_image"] == {"strength": 0.7, "init_depth": f"estimated by {dpt}"}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--height", "100"], "--height"),
        (["--steps", "0"], "--steps"),
        (["--guidance", "-2"], "--guidance"),
        (["--strength", "0.5"], None),  # strength without an init image is ignored, not an error
    ],
)
def test_bad_flags_exit_2_with_a_message_and_no_traceback(tiny_model, tmp_path, args, needle):
    proc = ldm3d("generate", "--model", tiny_model, "--prompt", "p", "--out", tmp_path, "--steps", "1",
                 "--no-progress", *args, check=False)
    if needle is None:
        assert proc.returncode == 0
        return
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


def test_missing_or_wrong_checkpoint(tmp_path):
    proc = ldm3d("generate", "--model", tmp_path / "nope", "--prompt", "p", check=False)
    assert proc.returncode == 2 and "no such checkpoint folder" in proc.stderr
    (tmp_path / "half" / "unet").mkdir(parents=True)
    (tmp_path / "half" / "model_index.json").write_text("{}")
    proc = ldm3d("generate", "--model", tmp_path / "half", "--prompt", "p", check=False)
    assert proc.returncode == 2 and "scheduler/scheduler_config.json is missing" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_scheduler_and_8_bit_depth(tiny_model, tmp_path):
    proc = ldm3d("generate", "--model", tiny_model, "--prompt", "p", "--scheduler", "heun", check=False)
    assert proc.returncode == 2 and "--scheduler" in proc.stderr
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "d8.png")
    codec.write_png(tmp_path / "rgb.png", np.zeros((64, 64, 3), np.uint8))
    proc = ldm3d("generate", "--model", tiny_model, "--prompt", "p", "--init-rgb", tmp_path / "rgb.png",
                 "--init-depth", tmp_path / "d8.png", check=False)
    assert proc.returncode == 2 and "16-bit" in proc.stderr and "--init-depth" in proc.stderr


def test_make_tiny_model_4c(tmp_path):
    ldm3d("make-tiny-model", tmp_path / "m", "--depth-channels", 1)
    cfg = json.loads((tmp_path / "m" / "vae" / "config.json").read_text())
    assert cfg["in_channels"] == cfg["out_channels"] == 4
    assert json.loads((tmp_path / "m" / "tokenizer" / "vocab.json").read_text())["<|endoftext|>"] == 49407
