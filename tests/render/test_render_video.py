"""MP4 assembly (what ffprobe reports) and the Spherical Video V2 box writer."""

from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np
import pytest
from ldm3d.render.spherical import inject_spherical, iter_boxes, st3d_box, sv3d_box
from ldm3d.render.video import probe, write_mp4

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (apt-get install ffmpeg)")


def _frames(n, w, h):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return [np.roll(base, 3 * i, axis=1) for i in range(n)]


def test_video_has_the_frames_size_and_rate_asked_for(tmp_path):
    out = write_mp4(tmp_path / "move.mp4", iter(_frames(9, 96, 54)), (96, 54), fps=12, crf=23)
    info = probe(out)
    assert (info["nb_frames"], info["width"], info["height"]) == (9, 96, 54)
    assert info["fps"] == pytest.approx(12.0)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["side_data"] == []
    assert [p.name for p in tmp_path.iterdir()] == ["move.mp4"]  # no temporary left behind


def test_360_video_carries_v2_spherical_metadata(tmp_path):
    out = write_mp4(tmp_path / "ods.mp4", iter(_frames(4, 128, 128)), (128, 128), fps=8, spherical="top-bottom")
    side = {d["side_data_type"]: d for d in probe(out)["side_data"]}
    assert side["Stereo 3D"]["type"] == "top and bottom"
    assert side["Spherical Mapping"]["projection"] == "equirectangular"


def test_box_layout_follows_the_rfc():
    st3d = st3d_box("top-bottom")
    assert st3d == struct.pack(">I4sIB", 13, b"st3d", 0, 1)
    sv3d = sv3d_box("ldm3d")
    ((kind, _, _, size),) = list(iter_boxes(sv3d))
    assert kind == b"sv3d" and size == len(sv3d)
    kids = [(k, s) for k, _, _, s in iter_boxes(sv3d, 8)]
    assert kids == [(b"svhd", 12 + len(b"ldm3d\0")), (b"proj", 8 + 24 + 28)]  # prhd 24, equi 28 bytes
    assert [k for k, *_ in iter_boxes(sv3d, 8 + kids[0][1] + 8)] == [b"prhd", b"equi"]


def test_injection_keeps_chunk_offsets_right_when_moov_comes_first(tmp_path):
    flat = write_mp4(tmp_path / "flat.mp4", iter(_frames(6, 64, 64)), (64, 64), fps=6)
    fast = tmp_path / "fast.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(flat), "-c", "copy", "-movflags", "+faststart", str(fast)], check=True
    )
    data = fast.read_bytes()
    kinds = [k for k, *_ in iter_boxes(data)]
    assert kinds.index(b"moov") < kinds.index(b"mdat")
    injected = tmp_path / "injected.mp4"
    injected.write_bytes(inject_spherical(data, "mono"))

    def md5s(p):
        out = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(p), "-f", "framemd5", "-"], check=True, capture_output=True, text=True
        ).stdout
        return [line.split(",")[-1].strip() for line in out.splitlines() if not line.startswith("#")]

    assert md5s(injected) == md5s(fast) and len(md5s(fast)) == 6  # every frame decodes to the same pixels
    side = {d["side_data_type"]: d for d in probe(injected)["side_data"]}
    assert side["Stereo 3D"]["type"] == "2D" and side["Spherical Mapping"]["projection"] == "equirectangular"
    # Injecting twice does not duplicate the boxes.
    twice = inject_spherical(injected.read_bytes(), "mono")
    assert twice.count(b"sv3d") == 1
