"""``ldm3d pano --server``: the same two-stage job on the gRPC platform (Studio.Generate, then a PanoramaRenderer
operation), giving the very files the in-process run writes."""

from __future__ import annotations

import json

from ldm3d.cli import main

FLAGS = ["--prompt", "a cozy cabin", "--height", "64", "--seed", "5", "--steps", "2", "--scheduler", "ddim",
         "--no-video", "--no-progress"]


def test_pano_over_grpc_equals_in_process(platform, tiny_model, tmp_path, capsys):
    remote, local = tmp_path / "remote", tmp_path / "local"
    assert main(["pano", "--server", platform.target, "--out", str(remote), *FLAGS]) == 0
    assert main(["pano", "--model", str(tiny_model), "--out", str(local), *FLAGS]) == 0
    m = json.loads((remote / "pano.json").read_text())
    assert m["platform"] == platform.target and m["generation"]["width"] == 128
    assert m["generation"]["seamless"] is True  # a 2:1 size on a checkpoint: the server wraps too
    for name in ("panorama_rgb.png", "panorama_depth.png", "ods.png", "mesh.glb"):
        assert (remote / name).read_bytes() == (local / name).read_bytes(), name
    assert (remote / "index.html").is_file()
    # flags the wire does not carry are refused, naming the flag
    capsys.readouterr()
    assert main(["pano", "--server", platform.target, "--out", str(tmp_path / "x"), "--no-seamless", *FLAGS]) == 2
    assert "--no-seamless" in capsys.readouterr().err
    assert main(["pano", "--server", platform.target, "--model", "nope", "--out", str(tmp_path / "y"), *FLAGS]) == 2
    assert "nope" in capsys.readouterr().err
