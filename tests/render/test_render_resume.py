"""Resumable render jobs (what the durable queue's workers use): with ``checkpoint_dir`` videos are encoded in
segments and the frames of the open segment are kept raw; a rerun of an interrupted job renders only the frames
that are missing, reuses finished segments and artifacts, and its video has every frame."""

from __future__ import annotations

import numpy as np
import pytest

from ldm3d.render import RenderSpec, job, render_job
from ldm3d.render.video import probe

from .synth import smooth_pano


class Stop(Exception):
    pass


def test_an_interrupted_job_resumes_from_its_segments_and_frames(tmp_path, monkeypatch):
    rgb, depth = smooth_pano(64, 32)
    # 30 frames at 3 fps: 4-second segments of 12 frames (1-12, 13-24, 25-30)
    spec = RenderSpec(rgb=rgb, depth=depth, ods=True, path="orbit", seconds=10.0, fps=3, size=(64, 36))
    out, ckpt = tmp_path / "job", tmp_path / "job" / ".frames"
    rendered = []
    real = job.render_perspective
    monkeypatch.setattr(job, "render_perspective", lambda *a, **k: rendered.append(1) or real(*a, **k))
    done = []

    def stop_after_15_frames():  # a draining worker: stops between units, after the 15th frame
        if sum(m.startswith("frame") for m in done) >= 15:
            raise Stop

    with pytest.raises(Stop):
        render_job(spec, out, progress=lambda d, t, m: done.append(m), cancelled=stop_after_15_frames,
                   checkpoint_dir=ckpt)
    assert len(rendered) == 15 and job.checkpointed_frames(ckpt) == 15
    kept = sorted(p.name for p in (ckpt / "orbit.mp4").iterdir())
    assert kept == ["frame-000013.npy", "frame-000014.npy", "frame-000015.npy", "part-000001-000012.mp4"]
    assert (out / "ods.png").is_file() and not (out / "orbit.mp4").exists()
    ods_mtime = (out / "ods.png").stat().st_mtime_ns
    frame14 = np.load(ckpt / "orbit.mp4" / "frame-000014.npy")

    rendered.clear()
    progress = []
    result = render_job(spec, out, progress=lambda d, t, m: progress.append((d, t)), checkpoint_dir=ckpt)
    assert len(rendered) == 30 - 15, "only the missing frames are rendered again"
    assert (out / "ods.png").stat().st_mtime_ns == ods_mtime, "the finished still is reused, not redone"
    assert progress[-1] == (31, 31) and [a.name for a in result.artifacts] == ["ods.png", "orbit.mp4"]
    info = probe(out / "orbit.mp4")
    assert info["nb_frames"] == 30 and (info["width"], info["height"]) == (64, 36)
    # kept frames are lossless: exactly what the renderer made
    cams = job.path_cameras("orbit", 30, 3, spec.radius, 75.0, None)
    pano = job.panorama_for(spec)
    assert np.array_equal(frame14, real(pano, cams[13], (64, 36), job.MeshScene(pano), renderer="raycast"))
    # a third run reuses the finished video too; a damaged kept frame is rendered again, never trusted
    rendered.clear()
    render_job(spec, out, checkpoint_dir=ckpt)
    assert rendered == []


def test_a_damaged_kept_frame_is_rendered_again(tmp_path):
    path = tmp_path / "frame-000001.npy"
    job._save_frame(path, np.zeros((4, 6, 3), np.uint8))
    assert job._load_frame(path, (4, 6, 3)) is not None
    path.write_bytes(path.read_bytes()[:40])  # a torn write after a node crash
    assert job._load_frame(path, (4, 6, 3)) is None
    assert job._load_frame(tmp_path / "missing.npy", (4, 6, 3)) is None
    job._save_frame(path, np.zeros((4, 6, 3), np.uint8))
    assert job._load_frame(path, (5, 6, 3)) is None  # another job's size


def test_a_resumable_360_video_keeps_its_spherical_metadata(tmp_path):
    rgb, depth = smooth_pano(64, 32)
    spec = RenderSpec(rgb=rgb, depth=depth, path="orbit", seconds=1.0, fps=6, size=(32, 18), video360=True,
                      eye_size=(64, 32))
    result = render_job(spec, None, checkpoint_dir=tmp_path / "ck")  # bytes delivery, checkpoints elsewhere
    (video360,) = [a for a in result.artifacts if a.name == "orbit_360.mp4"]
    (tmp_path / "v.mp4").write_bytes(video360.data)
    info = probe(tmp_path / "v.mp4")
    assert info["nb_frames"] == 6 and (info["width"], info["height"]) == (64, 64)
    assert any("Spherical" in d.get("side_data_type", "") for d in info["side_data"]), info["side_data"]
