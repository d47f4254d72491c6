"""`ldm3d serve all` + `ldm3d generate --server` write the same files as `ldm3d generate --model`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from servers_helpers import ROOT, ProcessServer, healthy

from ldm3d import codec


def _generate(out, *source):
    cmd = [sys.executable, "-m", "ldm3d", "generate", *source, "--prompt", "a cabin in the woods", "--seed", "42",
           "--steps", "4", "--scheduler", "ddim", "--out", str(out), "--stem", "cabin", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_generate_through_the_platform_equals_in_process(tiny_model, tmp_path):
    server = ProcessServer("all", "--checkpoint", str(tiny_model))
    try:
        assert healthy(server.target, "ldm3d.v1.Studio")
        _generate(tmp_path / "remote", "--server", server.target)
    finally:
        assert server.stop() == 0  # SIGTERM: graceful exit
    _generate(tmp_path / "local", "--model", str(tiny_model))
    for name in ("cabin_rgb.png", "cabin_depth.png"):
        a = (tmp_path / "remote" / name).read_bytes()
        b = (tmp_path / "local" / name).read_bytes()
        read = codec.read_depth if "depth" in name else codec.read_rgb
        assert np.array_equal(read(a), read(b)), name
    remote = json.loads((tmp_path / "remote" / "cabin.json").read_text())
    local = json.loads((tmp_path / "local" / "cabin.json").read_text())
    assert remote["seed"] == local["seed"] == 42 and remote["steps"] == local["steps"] == 4
    assert remote["model"]["checkpoint_sha256"] == local["model"]["checkpoint_sha256"]


def test_serve_refuses_bad_flags_naming_them():
    proc = subprocess.run([sys.executable, "-m", "ldm3d", "serve", "sampler", "--port", "http"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and "--port" in proc.stderr
