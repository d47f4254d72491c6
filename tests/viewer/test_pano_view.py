"""``ldm3d pano`` (text → seamless RGBD panorama → ODS, 360 MP4, GLB, page) and ``ldm3d view`` (the HTTP side; the
page itself runs in a real browser in test_browser.py)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ldm3d.cli import main
from ldm3d.viewer import STATIC, ViewerServer

from .conftest import PANO


def test_pano_writes_every_artifact_and_its_parameters(pano_dir):
    from ldm3d.codec import read_depth, read_rgb
    from ldm3d.render.video import probe

    m = json.loads((pano_dir / "pano.json").read_text())
    assert m["prompt"] == "a cozy cabin"
    files = m["files"]
    for key in ("rgb", "depth", "ods", "mesh", "video360", "video", "page", "generation"):
        assert (pano_dir / files[key]).is_file(), key
    assert (files["ods"], files["mesh"], files["video360"]) == ("ods.png", "mesh.glb", "orbit_360.mp4")
    gen = m["generation"]
    assert (gen["width"], gen["height"], gen["seed"], gen["steps"]) == (128, 64, 7, 2)
    assert gen["seamless"] is True  # the default for a panorama
    assert read_rgb(str(pano_dir / files["rgb"])).shape == (64, 128, 3)
    assert read_depth(str(pano_dir / files["depth"])).shape == (64, 128)
    assert read_rgb(str(pano_dir / "ods.png")).shape == (128, 128, 3)  # top-bottom: two 128x64 eyes
    assert m["render"]["radius"] == 2.0 and m["render"]["eye_size"] == [128, 64]
    side = {d["side_data_type"]: d for d in probe(pano_dir / "orbit_360.mp4")["side_data"]}
    assert side["Stereo 3D"]["type"] == "top and bottom"
    assert side["Spherical Mapping"]["projection"] == "equirectangular"
    assert (pano_dir / "mesh.glb").read_bytes()[:4] == b"glTF"
    assert (pano_dir / "index.html").is_file() and (pano_dir / "viewer/vendor/three/three.module.js").is_file()
    assert not list(pano_dir.glob(".*"))  # no temporary left behind


def test_pano_image_to_image_and_bad_input(pano_dir, tiny_model_4c, tmp_path, capsys):
    # the paper's Fig. 2a path: a user panorama (here the one just made) with its depth, partly re-noised
    out = tmp_path / "again"
    assert main(["pano", "--model", str(tiny_model_4c), "--prompt", "the same cabin at night", "--out", str(out),
                 "--init-rgb", str(pano_dir / "panorama_rgb.png"), "--init-depth",
                 str(pano_dir / "panorama_depth.png"), "--strength", "0.5", "--no-video", *PANO]) == 0
    gen = json.loads((out / "pano.json").read_text())["generation"]
    assert gen["image_to_image"] == {"strength": 0.5} and (gen["width"], gen["height"]) == (128, 64)
    assert not (out / "orbit_360.mp4").exists() and (out / "mesh.glb").is_file()
    capsys.readouterr()
    for argv, flag in ((["--width", "100", "--height", "64"], "--width"),
                       (["--init-depth", str(pano_dir / "panorama_depth.png")], "--init-rgb"),
                       (["--init-rgb", str(pano_dir / "ods.png"), "--init-depth", str(pano_dir / "panorama_depth.png")],
                        "--init-rgb"),
                       (["--radius", "-1"], "--radius")):
        rc = main(["pano", "--model", str(tiny_model_4c), "--prompt", "x", "--out", str(tmp_path / "bad"), *PANO,
                   *argv])
        err = capsys.readouterr().err
        assert rc == 2 and flag in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "bad" / "pano.json").exists()


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as err:
        return err.code, "", b""


def test_view_serves_the_page_the_scripts_and_the_folder(pano_dir):
    proc = subprocess.Popen([sys.executable, "-m", "ldm3d", "view", str(pano_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"listening on (\S+)", line).group(1)
        status, ctype, body = _get(url)
        assert status == 200 and ctype.startswith("text/html") and b"importmap" in body
        status, ctype, _ = _get(url + "viewer/vendor/three/three.module.js")
        assert status == 200 and ctype == "text/javascript"  # module scripts need a JavaScript type
        status, _, body = _get(url + "pano.json")
        assert status == 200 and json.loads(body)["prompt"] == "a cozy cabin"
        status, ctype, body = _get(url + "mesh.glb")
        assert status == 200 and ctype == "model/gltf-binary" and body[:4] == b"glTF"
        for outside in ("../../../etc/passwd", "viewer/../../../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd"):
            assert _get(url + outside)[0] == 404, outside
        assert _get(url + "viewer/")[0] == 404  # no folder listings
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_view_errors_and_a_plain_render_folder(pano_dir, tmp_path, capsys):
    assert main(["view", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["view", str(tmp_path)]) == 2
    assert "mesh.glb" in capsys.readouterr().err
    # an `ldm3d render --mesh glb` folder (no pano.json) is shown too
    (tmp_path / "mesh.glb").write_bytes((pano_dir / "mesh.glb").read_bytes())
    with ViewerServer(tmp_path) as server:
        status, _, body = _get(server.url + "pano.json")
        assert status == 200 and json.loads(body)["files"] == {"mesh": "mesh.glb"}


def test_the_vendored_three_js_is_the_pinned_one_and_nothing_comes_from_a_cdn():
    vendor = STATIC / "vendor" / "three"
    record = json.loads((vendor / "VERSION.json").read_text())
    assert record["package"] == "three" and re.fullmatch(r"\d+\.\d+\.\d+", record["version"])
    assert "MIT License" in (vendor / "LICENSE").read_text()
    for rel, digest in record["files_sha256"].items():
        assert hashlib.sha256((vendor / rel).read_bytes()).hexdigest() == digest, rel
    script = (Path(__file__).resolve().parents[2] / "scripts" / "vendor_three.sh").read_text()
    assert f"VERSION={record['version']}" in script and record["npm_integrity"] in script
    for page in (STATIC / "index.html", STATIC / "viewer.js", STATIC / "viewer.css"):
        assert not re.search(r"(src|href|from|import)\s*=?\s*[\"'(]?\s*(https?:)?//", page.read_text()), page
