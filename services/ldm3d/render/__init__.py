"""DepthFusion: an RGB image + 16-bit depth → a displaced sphere → 360° stereo stills, camera-move videos, meshes.

Library API (the CLI ``ldm3d render`` and the ``PanoramaRenderer`` servicer only translate to and from it)::

    from ldm3d.render import RenderSpec, render_job
    result = render_job(RenderSpec(rgb=rgb, depth=depth, ods=True), out_dir="out")

Modules: :mod:`.geometry` (conventions, depth → radius, the mesh), :mod:`.ods` (scanline ODS/mono 360),
:mod:`.raycast` (open3d ray casting, perspective frames), :mod:`.camera` (cameras and paths), :mod:`.video`
(ffmpeg MP4) with :mod:`.spherical` (Spherical Video V2 boxes), :mod:`.mesh_io` (PLY, GLB), :mod:`.reference`
(a one-ray-at-a-time reference renderer) and :mod:`.job` (one render job). See docs/render.md.
"""

from .camera import Camera, path_cameras
from .geometry import Panorama, build_mesh, prepare_panorama
from .job import Artifact, RenderLimits, RenderResult, RenderSpec, render_job
from .ods import render_equirect, render_ods

__all__ = [
    "Artifact",
    "Camera",
    "Panorama",
    "RenderLimits",
    "RenderResult",
    "RenderSpec",
    "build_mesh",
    "path_cameras",
    "prepare_panorama",
    "render_equirect",
    "render_job",
    "render_ods",
]
