"""The render job and the ``ldm3d render`` CLI end to end: artifacts, meshes read back by open3d, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from ldm3d.cli import main
from ldm3d.codec import read_depth, read_rgb, write_png
from ldm3d.errors import Cancelled, ResourceExhausted
from ldm3d.render import RenderLimits, RenderSpec, render_job
from PIL import Image

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (apt-get install ffmpeg)")


@needs_ffmpeg
def test_cli_renders_ods_video_360_video_and_meshes(pano_files, tmp_path, capsys):
    from ldm3d.render.video import probe

    rgb, depth = pano_files
    out = tmp_path / "out"
    code = main(
        [
            "render",
            "--rgb",
            str(rgb),
            "--depth",
            str(depth),
            "--out",
            str(out),
            "--ods",
            "--path",
            "dolly",
            "--seconds",
            "0.5",
            "--fps",
            "8",
            "--size",
            "64x36",
            "--stereo",
            "--video360",
            "--eye-size",
            "128x64",
            "--mesh",
            "ply,glb",
        ]
    )
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["dolly.mp4", "dolly_360.mp4", "mesh.glb", "mesh.ply", "ods.png"]
    assert Image.open(out / "ods.png").size == (128, 128)  # two 2:1 eyes stacked: square
    info = probe(out / "dolly.mp4")
    assert (info["nb_frames"], info["width"], info["height"]) == (4, 128, 36)  # side by side
    info360 = probe(out / "dolly_360.mp4")
    assert (info360["nb_frames"], info360["width"], info360["height"]) == (4, 128, 128)
    assert {d["side_data_type"] for d in info360["side_data"]} == {"Stereo 3D", "Spherical Mapping"}
    err = capsys.readouterr().err
    assert "render" in err and "100%" in err  # the progress bar


def test_meshes_open_in_open3d(pano_files, tmp_path):
    import open3d as o3d

    rgb, depth = pano_files
    result = render_job(RenderSpec(rgb=read_rgb(rgb), depth=read_depth(depth), meshes=("ply", "glb")), tmp_path)
    ply = o3d.io.read_triangle_mesh(str(tmp_path / "mesh.ply"))
    faces = result.artifacts[0].metadata["faces"]
    assert len(ply.triangles) == faces and ply.has_vertex_colors()
    assert np.linalg.norm(np.asarray(ply.vertices), axis=1).max() <= 2.0 * 1.5 + 1e-5
    glb = o3d.io.read_triangle_mesh(str(tmp_path / "mesh.glb"))
    assert len(glb.triangles) == faces and glb.has_triangle_uvs()
    uv = np.asarray(glb.triangle_uvs)
    assert uv.min() >= 0 and uv.max() <= 1 + 1 / 256 + 1e-6
    assert any(np.asarray(t).shape == (128, 256, 3) for t in glb.textures)  # the panorama, embedded
    full = 2 * 256 * 127 + 2 * 256
    assert 0 < full - faces < 1000  # the disc's rim (a depth discontinuity) is cut, nothing else


def test_job_without_out_dir_returns_bytes_and_reports_progress(pano_files):
    rgb, depth = pano_files
    seen = []
    result = render_job(
        RenderSpec(rgb=read_rgb(rgb), depth=read_depth(depth), ods=True, mono360=True),
        progress=lambda done, total, msg: seen.append((done, total, msg)),
    )
    assert [a.name for a in result.artifacts] == ["ods.png", "mono360.png"]
    assert all(a.path is None and a.data.startswith(b"\x89PNG") for a in result.artifacts)
    assert seen == [(1, 2, "ODS stereo still"), (2, 2, "mono 360 still")]


@needs_ffmpeg
def test_cancelled_job_leaves_no_video(pano_files, tmp_path):
    rgb, depth = pano_files
    frames = []

    def cancelled():
        return len(frames) >= 3

    spec = RenderSpec(rgb=read_rgb(rgb), depth=read_depth(depth), path="look-around", seconds=1, fps=10, size=(32, 16))
    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        render_job(spec, out, progress=lambda d, t, m: frames.append(d), cancelled=cancelled)
    assert frames == [1, 2, 3] and list(out.iterdir()) == []


def test_limits_are_resource_exhausted(pano_files):
    rgb, depth = read_rgb(pano_files[0]), read_depth(pano_files[1])
    with pytest.raises(ResourceExhausted, match="frames, over the limit"):
        render_job(RenderSpec(rgb=rgb, depth=depth, path="orbit", seconds=1000, fps=60))
    with pytest.raises(ResourceExhausted, match="size"):
        render_job(RenderSpec(rgb=rgb, depth=depth, path="orbit", seconds=1, size=(20000, 10000)))
    with pytest.raises(ResourceExhausted, match="rgb"):
        render_job(RenderSpec(rgb=rgb, depth=depth, ods=True), limits=RenderLimits(max_input_pixels=1000))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--path", "orbit", "--seconds", "100000"], "over the limit"),
        (["--projection", "equirect", "--rgb", "SQUARE", "--depth", "SQD"], "2:1"),
        (["--depth", "DEPTH8"], "16-bit"),
        (["--depth", "SMALL"], "same size"),
        (["--path", "spiral"], "orbit, dolly, look-around"),
        (["--size", "641x360", "--path", "orbit"], "even"),
        (["--mesh", "obj"], "ply, glb"),
        (["--depth-strength", "3"], "depth_strength"),
        (["--rgb", "MISSING"], "no such file"),
    ],
)
def test_bad_input_gives_a_clear_error_and_no_files(pano_files, tmp_path, capsys, extra, message):
    rgb, depth = pano_files
    square = tmp_path / "square.png"
    write_png(square, np.zeros((64, 64, 3), np.uint8))
    depth8 = tmp_path / "depth8.png"
    Image.fromarray(np.zeros((128, 256), np.uint8)).save(depth8)
    small = tmp_path / "small.png"
    write_png(small, np.zeros((64, 128), np.uint16))
    write_png(tmp_path / "sqd.png", np.zeros((64, 64), np.uint16))
    subst = {
        "SQUARE": square,
        "SQD": tmp_path / "sqd.png",
        "DEPTH8": depth8,
        "SMALL": small,
        "MISSING": tmp_path / "nope.png",
    }
    extra = [str(subst.get(a, a)) for a in extra]
    args = ["render", "--rgb", str(rgb), "--depth", str(depth), "--out", str(tmp_path / "out"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ldm3d render: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_spec_arrays_must_be_8_bit_rgb_and_16_bit_depth(pano_files):
    from ldm3d.errors import InvalidArgument

    rgb, depth = read_rgb(pano_files[0]), read_depth(pano_files[1])
    with pytest.raises(InvalidArgument, match="16-bit depth"):
        render_job(RenderSpec(rgb=rgb, depth=depth.astype(np.float32) / 65535, ods=True))
    with pytest.raises(InvalidArgument, match="8-bit RGB"):
        render_job(RenderSpec(rgb=rgb.astype(np.float32), depth=depth, ods=True))


def test_normalized_depth_and_coarse_meshes(pano_files):
    from ldm3d.render.geometry import normalised_depth

    d = np.array([[1000, 3000], [5000, 5000]], np.uint16)
    np.testing.assert_allclose(normalised_depth(d, True), [[0, 0.5], [1, 1]], atol=1e-6)
    np.testing.assert_allclose(normalised_depth(d, False), d / 65535, rtol=1e-6)
    rgb, depth = read_rgb(pano_files[0]), read_depth(pano_files[1])
    fine = render_job(RenderSpec(rgb=rgb, depth=depth, meshes=("ply",)))
    coarse = render_job(RenderSpec(rgb=rgb, depth=depth, meshes=("ply",), mesh_step=4, normalize_depth=True))
    assert coarse.artifacts[0].metadata["faces"] < fine.artifacts[0].metadata["faces"] / 10


def test_epipolar_renderer_through_the_job(pano_files):
    rgb, depth = read_rgb(pano_files[0]), read_depth(pano_files[1])
    spec = RenderSpec(rgb=rgb, depth=depth, path="orbit", seconds=0.25, fps=8, size=(32, 18), renderer="epipolar")
    if shutil.which("ffmpeg"):
        assert render_job(spec).artifacts[0].name == "orbit.mp4"
    from ldm3d.errors import InvalidArgument

    spec.renderer = "rasterise"
    with pytest.raises(InvalidArgument, match="renderer"):
        render_job(spec)


@needs_ffmpeg
def test_360_video_of_a_cap_rounds_its_default_eye_size_to_even(tmp_path):
    """A 64x64 (non-2:1) image maps onto a cap whose panorama is 202x101: H.264 needs even sizes, so the default
    360 video eye becomes 200x100 (found by running the README's --video360 line on the demo's output)."""
    rng = np.random.default_rng(0)
    spec = RenderSpec(rgb=rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                      depth=rng.integers(0, 65536, (64, 64), dtype=np.uint16),
                      path="dolly", seconds=0.5, fps=4, size=(64, 48), video360=True)
    result = render_job(spec, out_dir=tmp_path)
    assert [a.name for a in result.artifacts] == ["dolly.mp4", "dolly_360.mp4"]
    from ldm3d.render.video import probe

    info = probe(tmp_path / "dolly_360.mp4")
    assert (info["width"], info["height"]) == (200, 200)  # two 200x100 eyes, top-bottom
