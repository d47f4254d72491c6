"""Pinhole cameras and camera paths (orbit, dolly, look-around, JSON keyframes).

A camera has a ``position`` (metres, the axes of :mod:`.geometry`), ``yaw`` (degrees, positive turns right, i.e.
towards growing longitude), ``pitch`` (degrees, positive looks up) and a horizontal field of view ``hfov``. With
yaw = pitch = 0 it looks along ``-Z``, the centre of the panorama.

Paths are functions of normalised time ``u ∈ [0, 1]`` scaled to the sphere radius ``R``, so they stay inside the
surface whatever the scene's scale:

* ``orbit``: the classic 3D-photo swirl: the camera circles ``0.15 R`` around the origin in the plane facing forward
  while keeping its eye on the point straight ahead at ``R``.
* ``dolly``: the camera moves straight forward to ``0.25 R`` and back (dolly in, dolly out), looking ahead.
* ``look-around``: the camera stays at the origin and turns a full circle (a panorama) or pans across the cap of a
  normal photo (±(cap − view)/2) and back.
* a JSON file: ``{"keyframes": [{"t": 0, "position": [0, 0, 0], "yaw": 0, "pitch": 0, "hfov": 90}, ...]}`` with
  ``t`` in seconds, linearly interpolated (``yaw``/``pitch``/``hfov`` optional, default 0/0/the --hfov view).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidArgument, NotFound, invalid
from .geometry import direction

PATHS = ("orbit", "dolly", "look-around")


@dataclass(frozen=True)
class Camera:
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    yaw: float = 0.0
    pitch: float = 0.0
    hfov: float = 90.0

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(forward, right, up)`` unit vectors."""
        y, p = math.radians(self.yaw), math.radians(self.pitch)
        forward = direction(y, p)
        right = np.array([math.cos(y), 0.0, math.sin(y)])
        up = np.cross(right, forward)
        return forward, right, up

    def rays(self, size: tuple[int, int], eye_offset: float = 0.0, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        """Origin ``[3]`` and unnormalised directions ``[H, W, 3]`` of the pixel centres of a ``size = (W, H)`` image.

        ``eye_offset`` moves the camera along its right vector (−ipd/2 for a left eye).
        """
        w, h = size
        forward, right, up = self.basis()
        f = (w / 2.0) / math.tan(math.radians(self.hfov) / 2.0)
        x = ((np.arange(w) + 0.5 - w / 2.0) / f).astype(dtype)
        y = ((np.arange(h) + 0.5 - h / 2.0) / f).astype(dtype)
        dirs = np.empty((h, w, 3), dtype=dtype)
        for k in range(3):
            dirs[..., k] = forward[k] + x[None, :] * right[k] - y[:, None] * up[k]
        origin = np.asarray(self.position, dtype=np.float64) + eye_offset * right
        return origin, dirs


def look_at_angles(position, target) -> tuple[float, float]:
    """``(yaw, pitch)`` in degrees of a camera at ``position`` looking at ``target``."""
    v = np.asarray(target, dtype=np.float64) - np.asarray(position, dtype=np.float64)
    yaw = math.degrees(math.atan2(v[0], -v[2]))
    pitch = math.degrees(math.atan2(v[1], math.hypot(v[0], v[2])))
    return yaw, pitch


def path_cameras(
    path: str | Path | list, n_frames: int, fps: float, radius: float, hfov: float, cap_hfov: float | None = None
) -> list[Camera]:
    """The camera of each of ``n_frames`` frames for a named path or a keyframe file/list (see module docstring)."""
    if n_frames < 1:
        raise invalid("frames", n_frames, "a video needs at least one frame: raise seconds or fps")
    us = np.linspace(0.0, 1.0, n_frames, endpoint=False) if n_frames > 1 else np.zeros(1)
    if isinstance(path, (list, tuple)):
        return _keyframes(list(path), n_frames, fps, hfov)
    name = str(path)
    if name == "orbit":
        rho = 0.15 * radius
        out = []
        for u in us:
            a = 2.0 * math.pi * u
            pos = (rho * math.sin(a), rho * 0.5 * (1.0 - math.cos(a)) - 0.25 * rho, 0.0)
            yaw, pitch = look_at_angles(pos, (0.0, 0.0, -radius))
            out.append(Camera(pos, yaw, pitch, hfov))
        return out
    if name == "dolly":
        return [Camera((0.0, 0.0, -0.25 * radius * math.sin(math.pi * u)), 0.0, 0.0, hfov) for u in us]
    if name == "look-around":
        if cap_hfov is None:
            return [Camera((0.0, 0.0, 0.0), 360.0 * u, 0.0, hfov) for u in us]
        sweep = max(0.0, (cap_hfov - hfov) / 2.0)
        return [Camera((0.0, 0.0, 0.0), sweep * math.sin(2.0 * math.pi * u), 0.0, hfov) for u in us]
    p = Path(name)
    if p.suffix.lower() != ".json":
        raise invalid("path", name, f"use one of {', '.join(PATHS)} or a keyframes .json file")
    if not p.is_file():
        raise NotFound(f"path: no such keyframes file {name!r}", field="path")
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"path: {name!r} is not valid JSON ({exc})", field="path") from None
    frames = data.get("keyframes") if isinstance(data, dict) else data
    if not isinstance(frames, list):
        raise InvalidArgument(f'path: {name!r} must hold {{"keyframes": [...]}} or a list of keyframes', field="path")
    return _keyframes(frames, n_frames, fps, hfov)


def _keyframes(frames: list, n_frames: int, fps: float, hfov: float) -> list[Camera]:
    if not frames:
        raise InvalidArgument("path: the keyframe list is empty; give at least one keyframe", field="path")
    ts, rows = [], []
    for i, k in enumerate(frames):
        try:
            t = float(k.get("t", 0.0))
            pos = [float(x) for x in k.get("position", (0.0, 0.0, 0.0))]
            row = pos + [float(k.get("yaw", 0.0)), float(k.get("pitch", 0.0)), float(k.get("hfov", hfov))]
        except (AttributeError, TypeError, ValueError):
            raise InvalidArgument(
                f'path: keyframe {i} must be an object like {{"t": 0, "position": [0, 0, 0], "yaw": 0}}',
                field="path",
            ) from None
        if len(pos) != 3 or not all(math.isfinite(x) for x in row + [t]):
            raise InvalidArgument(
                f"path: keyframe {i} needs a finite 3-element position and finite numbers", field="path"
            )
        if not (1.0 <= row[5] <= 170.0):
            raise InvalidArgument(f"path: keyframe {i} has hfov {row[5]}; use 1..170 degrees", field="path")
        ts.append(t)
        rows.append(row)
    order = np.argsort(ts, kind="stable")
    ts_a = np.asarray(ts)[order]
    rows_a = np.asarray(rows)[order]
    times = np.arange(n_frames) / fps
    vals = np.stack([np.interp(times, ts_a, rows_a[:, c]) for c in range(6)], axis=-1)
    return [Camera(tuple(v[:3]), v[3], v[4], v[5]) for v in vals]
