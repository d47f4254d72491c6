"""Resumable render jobs (what the durable queue's workers use): with ``checkpoint_dir`` every finished frame is kept
losslessly, a rerun of an interrupted job renders only the frames that are missing, reuses finished artifacts, and
its video has every frame."""

from __future__ import annotations

import numpy as np
import pytest

from ldm3d.codec import read_rgb
from ldm3d.render import RenderSpec, job, render_job
from ldm3d.render.video import probe

from .synth import smooth_pano


class Stop(Exception):
    pass


def test_an_interrupted_job_resumes_from_its_frames(tmp_path, monkeypatch):
    rgb, depth = smooth_pano(64, 32)
    spec = RenderSpec(rgb=rgb, depth=depth, ods=True, path="orbit", seconds=1.0, fps=12, size=(64, 36))
    out, ckpt = tmp_path / "job", tmp_path / "job" / ".frames"
    rendered = []
    real = job.render_perspective
    monkeypatch.setattr(job, "render_perspective", lambda *a, **k: rendered.append(1) or real(*a, **k))
    done = []

    def stop_after_5_frames():  # a draining worker: stops between units, after the 5th frame
        if sum(m.startswith("frame") for m in done) >= 5:
            raise Stop

    with pytest.raises(Stop):
        render_job(spec, out, progress=lambda d, t, m: done.append(m), cancelled=stop_after_5_frames,
                   checkpoint_dir=ckpt)
    assert len(rendered) == 5 and sorted(p.name for p in (ckpt / "orbit.mp4").iterdir())[-1] == "000005.png"
    assert (out / "ods.png").is_file() and not (out / "orbit.mp4").exists()
    ods_mtime = (out / "ods.png").stat().st_mtime_ns
    frames = {p.name: read_rgb(p) for p in (ckpt / "orbit.mp4").iterdir()}

    rendered.clear()
    progress = []
    result = render_job(spec, out, progress=lambda d, t, m: progress.append((d, t)), checkpoint_dir=ckpt)
    assert len(rendered) == 12 - 5, "only the missing frames are rendered again"
    assert (out / "ods.png").stat().st_mtime_ns == ods_mtime, "the finished still is reused, not redone"
    assert progress[-1] == (13, 13) and [a.name for a in result.artifacts] == ["ods.png", "orbit.mp4"]
    assert probe(out / "orbit.mp4")["nb_frames"] == 12
    # checkpoints are lossless: the kept frames are exactly what the renderer made
    cams = job.path_cameras("orbit", 12, 12, spec.radius, 75.0, None)
    pano = job.panorama_for(spec)
    scene = job.MeshScene(pano)
    assert np.array_equal(frames["000003.png"], real(pano, cams[2], (64, 36), scene, renderer="raycast"))
    # a third run reuses the finished video too
    rendered.clear()
    render_job(spec, out, checkpoint_dir=ckpt)
    assert rendered == []
