"""H.264 MP4 assembly with ffmpeg (through ``ffmpeg-python``), written atomically, and ffprobe read-back.

Frames are piped to ``ffmpeg`` as raw RGB; the output is libx264, yuv420p (what every player decodes; both sides must
be even), at a chosen fps and CRF. 360 videos get Spherical Video V2 boxes afterwards (:mod:`.spherical`). The MP4
is written under a temporary name in the target folder and renamed only when complete, so a failed or cancelled
render never leaves a file that looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..codec import current_umask
from ..errors import FailedPrecondition
from .spherical import inject_spherical


def _ffmpeg_binary() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise FailedPrecondition("ffmpeg is not installed: apt-get install ffmpeg (Debian's 5.1 has libx264)")
    return exe


def write_mp4(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    size: tuple[int, int],
    fps: float,
    crf: int = 18,
    preset: str = "veryfast",
    spherical: str | None = None,
    on_frame: Callable[[], None] | None = None,
) -> Path:
    """Encode ``frames`` (``uint8 [H, W, 3]`` each, ``size = (W, H)``) into an H.264 MP4 at ``path``.

    ``spherical``: ``None`` for a flat video, ``"mono"`` or ``"top-bottom"`` for a 360 video (adds st3d + sv3d).
    ``on_frame`` is called after each frame is handed to the encoder (progress; it may raise :class:`Cancelled`).
    """
    import ffmpeg  # the [render] extra

    w, h = size
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    proc = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
        .output(tmp, format="mp4", vcodec="libx264", pix_fmt="yuv420p", crf=crf, preset=preset, r=fps)
        .global_args("-nostdin", "-loglevel", "error")
        .overwrite_output()
        .run_async(cmd=_ffmpeg_binary(), pipe_stdin=True, pipe_stderr=True)
    )
    try:
        for frame in frames:
            if frame.shape != (h, w, 3) or frame.dtype != np.uint8:
                raise ValueError(f"frame is {frame.dtype} {frame.shape}, expected uint8 {(h, w, 3)}")
            proc.stdin.write(np.ascontiguousarray(frame).tobytes())
            if on_frame is not None:
                on_frame()
        proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise FailedPrecondition(f"ffmpeg failed to encode {path.name}: {err.strip()[-500:]}")
        if spherical is not None:
            data = Path(tmp).read_bytes()
            Path(tmp).write_bytes(inject_spherical(data, spherical))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~current_umask())  # mkstemp made it 0600; the finished file gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        proc.kill()
        proc.wait()
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def concat_mp4(parts: list[Path], path: str | os.PathLike, spherical: str | None = None) -> Path:
    """Join MP4 segments encoded with the same settings into one MP4 at ``path`` without re-encoding (ffmpeg's
    concat demuxer, ``-c copy``), atomically; ``spherical`` as in :func:`write_mp4`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    listing = Path(tmp + ".txt")
    try:
        if len(parts) == 1:  # nothing to join: a copy (an ffmpeg start alone costs ~0.1 s of CPU)
            shutil.copyfile(parts[0], tmp)
        else:
            # the concat demuxer's list format: one `file '<path>'` per line, quotes escaped as '\''
            listing.write_text("".join("file '" + str(Path(p).resolve()).replace("'", "'\\''") + "'\n"
                                       for p in parts))
            out = subprocess.run([_ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-y", "-f", "concat", "-safe",
                                  "0", "-i", str(listing), "-c", "copy", "-f", "mp4", tmp],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise FailedPrecondition(f"ffmpeg failed to join the segments of {path.name}: "
                                         f"{out.stderr.strip()[-500:]}")
        if spherical is not None:
            Path(tmp).write_bytes(inject_spherical(Path(tmp).read_bytes(), spherical))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        listing.unlink(missing_ok=True)
    return path


def probe(path: str | os.PathLike) -> dict:
    """ffprobe's view of the first video stream: width, height, nb_frames, fps, codec, pix_fmt, side data."""
    exe = shutil.which("ffprobe")
    if exe is None:
        raise FailedPrecondition("ffprobe is not installed: apt-get install ffmpeg")
    out = subprocess.run(
        [exe, "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_streams", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    s = json.loads(out)["streams"][0]
    num, den = (int(x) for x in s["r_frame_rate"].split("/"))
    return {
        "width": int(s["width"]),
        "height": int(s["height"]),
        "nb_frames": int(s.get("nb_read_frames") or s.get("nb_frames")),
        "fps": num / den,
        "codec": s["codec_name"],
        "pix_fmt": s["pix_fmt"],
        "side_data": s.get("side_data_list", []),
    }
