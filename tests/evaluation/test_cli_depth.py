"""`ldm3d depth`, `ldm3d depth-metrics`, `ldm3d make-tiny-depth-model`: outputs, JSON, and clear errors (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ldm3d.cli import main
from ldm3d.codec import read_depth, write_png
from ldm3d.evaluation.depth_metrics import depth_metrics


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Tiny checkpoints written by the CLI, two RGB images, and their DPT and ZoeDepth maps."""
    root = tmp_path_factory.mktemp("cli_depth")
    assert main(["make-tiny-depth-model", str(root / "dpt")]) == 0
    assert main(["make-tiny-depth-model", str(root / "zoe"), "--kind", "zoedepth"]) == 0
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(root / "b.jpg")
    images = [str(root / "a.png"), str(root / "b.jpg")]
    assert main(["depth", "--model", str(root / "dpt"), *images, "--out", str(root / "pred")]) == 0
    assert main(["depth", "--model", str(root / "zoe"), *images, "--out", str(root / "ref")]) == 0
    return root


def test_depth_writes_16_bit_pngs_and_metric_npy(work):
    for stem in ("a", "b"):
        pred = read_depth(work / "pred" / f"{stem}_depth.png")
        assert pred.dtype == np.uint16 and pred.shape == (40, 56) and (pred.min(), pred.max()) == (0, 65535)
        ref = np.load(work / "ref" / f"{stem}_depth.npy")
        assert ref.dtype == np.float32 and ref.shape == (40, 56) and np.all(ref > 0)


def test_depth_metrics_json_matches_the_library(work, capsys):
    pred, ref = work / "pred" / "a_depth.png", work / "ref" / "a_depth.npy"
    capsys.readouterr()
    assert (
        main(
            ["depth-metrics", "--pred", str(pred), "--reference", str(ref), "--samples", "500", "--seed", "7", "--json"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    expected = depth_metrics(read_depth(pred), np.load(ref).astype(np.float64), samples=500, seed=7)
    assert out == {"pred": str(pred), "reference": str(ref), "reference_scale": 1.0, **expected.to_dict()}
    assert out["sampled_pixels"] == 500 and out["valid_pixels"] == 40 * 56

    assert main(["depth-metrics", "--pred", str(pred), "--reference", str(ref)]) == 0
    table = capsys.readouterr().out
    every_pixel = depth_metrics(read_depth(pred), np.load(ref).astype(np.float64))
    assert "AbsRel" in table and f"{every_pixel.abs_rel:.4f}" in table and "RMSE [m]" in table


def test_png_reference_with_a_scale(work, tmp_path, capsys):
    # A millimetre PNG reference whose disparity is exactly affine in the prediction: perfect alignment.
    pred = np.arange(1, 40 * 56 + 1, dtype=np.uint16).reshape(40, 56) * 20
    mm = np.rint(1000.0 / (pred.astype(np.float64) * 1e-4 + 0.1)).astype(np.uint16)
    write_png(tmp_path / "pred.png", pred)
    write_png(tmp_path / "ref.png", mm)
    capsys.readouterr()
    args = ["depth-metrics", "--pred", str(tmp_path / "pred.png"), "--reference", str(tmp_path / "ref.png"), "--json"]
    assert main([*args, "--reference-scale", "0.001"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reference_scale"] == 0.001 and out["abs_rel"] < 1e-3 and out["scale"] == pytest.approx(1e-4, rel=1e-2)
    assert main(args) == 2
    assert "give --reference-scale" in capsys.readouterr().err


def _error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


def test_user_errors_are_clear(work, tmp_path, capsys):
    pred = str(work / "pred" / "a_depth.png")
    ref = str(work / "ref" / "a_depth.npy")
    err = _error(capsys, ["depth-metrics", "--pred", str(work / "a.png"), "--reference", ref])
    assert err.startswith("ldm3d depth-metrics: error: pred is a RGB image with 8-bit samples")

    np.save(tmp_path / "small.npy", np.ones((10, 10)))
    assert "56x40 but reference is 10x10" in _error(
        capsys, ["depth-metrics", "--pred", pred, "--reference", str(tmp_path / "small.npy")]
    )

    np.save(tmp_path / "nan.npy", np.full((40, 56), np.nan))
    assert "valid in both maps" in _error(
        capsys, ["depth-metrics", "--pred", pred, "--reference", str(tmp_path / "nan.npy")]
    )

    write_png(tmp_path / "flat.png", np.full((40, 56), 9, np.uint16))
    assert "constant" in _error(capsys, ["depth-metrics", "--pred", str(tmp_path / "flat.png"), "--reference", ref])

    assert "--reference-scale=-1.0 is invalid" in _error(
        capsys, ["depth-metrics", "--pred", pred, "--reference", ref, "--reference-scale", "-1"]
    )
    (tmp_path / "ref.txt").write_text("1 2 3")
    assert "unknown format .txt" in _error(
        capsys, ["depth-metrics", "--pred", pred, "--reference", str(tmp_path / "ref.txt")]
    )
    assert "samples=1 is invalid" in _error(
        capsys, ["depth-metrics", "--pred", pred, "--reference", ref, "--samples", "1"]
    )

    assert "no such folder" in _error(
        capsys, ["depth", "--model", str(tmp_path / "nope"), str(work / "a.png"), "--out", str(tmp_path)]
    )
    assert "no such file" in _error(
        capsys, ["depth", "--model", str(work / "dpt"), str(tmp_path / "x.png"), "--out", str(tmp_path)]
    )
    (tmp_path / "a.png").write_bytes((work / "a.png").read_bytes())
    err = _error(
        capsys,
        ["depth", "--model", str(work / "dpt"), str(work / "a.png"), str(tmp_path / "a.png"), "--out", str(tmp_path)],
    )
    assert "would both write a_depth" in err


def test_reference_from_rgb_equals_the_two_step_path(work, capsys):
    # `--rgb IMAGE --reference-model ZOE` is `ldm3d depth --model ZOE IMAGE` followed by `--reference <stem>_depth.npy`.
    pred = str(work / "pred" / "a_depth.png")
    capsys.readouterr()
    argv = ["depth-metrics", "--pred", pred, "--rgb", str(work / "a.png"), "--reference-model", str(work / "zoe")]
    assert main([*argv, "--json"]) == 0
    one_step = json.loads(capsys.readouterr().out)
    assert main(["depth-metrics", "--pred", pred, "--reference", str(work / "ref" / "a_depth.npy"), "--json"]) == 0
    two_step = json.loads(capsys.readouterr().out)
    assert one_step["reference_model"] == str(work / "zoe") and one_step["flip_aug"] is True
    for key in ("abs_rel", "rmse", "scale", "shift", "valid_pixels", "sampled_pixels", "seed"):
        assert one_step[key] == two_step[key]

    assert "is a dpt checkpoint; this needs a zoedepth one" in _error(
        capsys, ["depth-metrics", "--pred", pred, "--rgb", str(work / "a.png"), "--reference-model", str(work / "dpt")]
    )
    assert "--reference-scale applies to --reference files" in _error(capsys, [*argv, "--reference-scale", "0.001"])
    other = Image.open(work / "a.png").resize((30, 20))
    other.save(work / "small_rgb.png")
    err = _error(capsys, [*argv[:4], str(work / "small_rgb.png"), *argv[5:]])
    assert "pred is 56x40 but rgb is 30x20" in err
    with pytest.raises(SystemExit):  # argparse: exactly one of --reference / --rgb
        main(["depth-metrics", "--pred", pred])
