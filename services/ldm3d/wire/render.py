"""``RenderRequest`` / ``RenderResult`` <-> the render library (:class:`~ldm3d.render.RenderSpec`, its result).

Only what the proto itself decides is checked here (the panorama's two images, enum values, keyframes_json's JSON,
width and height set together); everything about the render is :func:`ldm3d.render.job.check_spec`'s, whose
errors name RenderSpec fields (:data:`PROTO_FIELDS` renames them). Unset fields are left out of the spec, so its
dataclass defaults are the only ones.
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import InvalidArgument, invalid
from ..v1 import renderer_pb2 as pb
from . import tensors
from .ids import new_request_id

# CameraPath enum ↔ RenderSpec.path (CAMERA_PATH_KEYFRAMES carries its keyframes in keyframes_json)
CAMERA_PATHS: dict[str, int] = {"orbit": pb.CAMERA_PATH_ORBIT, "dolly": pb.CAMERA_PATH_DOLLY,
                                "look-around": pb.CAMERA_PATH_LOOK_AROUND}
PATH_NAMES: dict[int, str] = {v: k for k, v in CAMERA_PATHS.items()}
# MeshFormat enum ↔ RenderSpec.meshes
MESH_FORMATS: dict[str, int] = {"ply": pb.MESH_FORMAT_PLY, "glb": pb.MESH_FORMAT_GLB}
MESH_NAMES: dict[int, str] = {v: k for k, v in MESH_FORMATS.items()}

# RenderSpec field (what the library's errors name) → the RenderRequest field a client sets
PROTO_FIELDS = {"rgb": "panorama.rgb", "depth": "panorama.depth", "size": "width", "eye_size": "eye_width",
                "meshes": "mesh_formats", "frames": "seconds"}
# with CAMERA_PATH_KEYFRAMES, the library's "path" errors are about the keyframes
KEYFRAME_FIELDS = {**PROTO_FIELDS, "path": "keyframes_json"}
# RenderRequest scalars that are RenderSpec fields of the same name, taken when set (proto3 `optional`, or
# non-zero / non-empty for plain fields, whose zero value means "the default")
_OPTIONAL = ("cap_hfov", "depth_strength", "radius", "ipd", "edge_threshold", "view_hfov", "crf", "mesh_step")
_NONZERO = ("projection", "depth_mapping", "renderer", "seconds", "fps")
_FLAGS = ("ods", "mono360", "stereo", "video360", "normalize_depth")
_RESERVED = ("panorama", "delivery", "mesh_formats", "keyframes_json")


def spec_from_request(r: pb.RenderRequest):
    """``RenderRequest`` → ``RenderSpec`` (unchecked: pass it to ``check_spec``), and the field names to report
    the library's errors under."""
    from ..render import RenderSpec

    if not r.HasField("panorama"):
        raise invalid("panorama", None, "set panorama.rgb (8-bit) and panorama.depth (16-bit) of the same size")
    rgb, depth = tensors.read_rgbd(r.panorama, "panorama")
    if r.delivery not in pb.ArtifactDelivery.values():
        raise invalid("delivery", r.delivery, "use ARTIFACT_DELIVERY_BYTES (the default) or ARTIFACT_DELIVERY_FILES")
    if r.path not in pb.CameraPath.values():
        raise invalid("path", r.path, "use one of " + ", ".join(pb.CameraPath.keys()))
    if r.keyframes_json and r.path != pb.CAMERA_PATH_KEYFRAMES:
        raise invalid("keyframes_json", "<set>", "keyframes_json is used only with path CAMERA_PATH_KEYFRAMES")
    options: dict = {name: getattr(r, name) for name in _FLAGS}
    options.update({name: getattr(r, name) for name in _OPTIONAL if r.HasField(name)})
    options.update({name: getattr(r, name) for name in _NONZERO if getattr(r, name)})
    if r.path == pb.CAMERA_PATH_KEYFRAMES:
        options["path"] = _keyframes(r.keyframes_json)
    elif r.path in PATH_NAMES:
        options["path"] = PATH_NAMES[r.path]
    meshes = []
    for i, m in enumerate(r.mesh_formats):
        if m not in MESH_NAMES:
            name = pb.MeshFormat.Name(m) if m in pb.MeshFormat.values() else m
            raise invalid(f"mesh_formats[{i}]", name, "use MESH_FORMAT_PLY or MESH_FORMAT_GLB")
        meshes.append(MESH_NAMES[m])
    if (size := _size(r.width, r.height, "width", "height")) is not None:
        options["size"] = size
    if (eye := _size(r.eye_width, r.eye_height, "eye_width", "eye_height")) is not None:
        options["eye_size"] = eye
    spec = RenderSpec(rgb=rgb, depth=depth, meshes=tuple(dict.fromkeys(meshes)), **options)
    return spec, KEYFRAME_FIELDS if r.path == pb.CAMERA_PATH_KEYFRAMES else PROTO_FIELDS


def to_request(rgb: np.ndarray, depth: np.ndarray, *, path: str | list | None = None,
               size: tuple[int, int] | None = None, eye_size: tuple[int, int] | None = None,
               meshes: tuple[str, ...] = (), files: bool = False, output_dir: str = "",
               request_id: str | None = None, **options) -> pb.RenderRequest:
    """The client's side: arrays and ``ldm3d render``'s options → ``RenderRequest`` (raw arrays on the wire)."""
    req = pb.RenderRequest(
        request_id=request_id or new_request_id(), output_dir=output_dir,
        panorama=tensors.rgbd(rgb, depth, raw=True),
        delivery=pb.ARTIFACT_DELIVERY_FILES if files else pb.ARTIFACT_DELIVERY_BYTES,
        mesh_formats=[MESH_FORMATS.get(m, pb.MESH_FORMAT_UNSPECIFIED) for m in meshes])
    if isinstance(path, (list, tuple)):
        req.path, req.keyframes_json = pb.CAMERA_PATH_KEYFRAMES, json.dumps(list(path))
    elif path is not None:
        if path not in CAMERA_PATHS:
            raise ValueError(f"path={path!r}: use one of {', '.join(CAMERA_PATHS)} or a list of keyframes")
        req.path = CAMERA_PATHS[path]
    if size is not None:
        req.width, req.height = size
    if eye_size is not None:
        req.eye_width, req.eye_height = eye_size
    fields = pb.RenderRequest.DESCRIPTOR.fields_by_name
    for name, value in options.items():
        if name not in fields or name in _RESERVED:
            raise TypeError(f"submit_render() got an unexpected option {name!r}")
        setattr(req, name, value)
    return req


def to_result(request_id: str, result) -> pb.RenderResult:
    """The library's ``RenderResult`` → the message (artifacts as paths when written to files, else bytes)."""
    out = pb.RenderResult(request_id=request_id, projection=result.projection,
                          panorama_width=result.panorama_size[0], panorama_height=result.panorama_size[1])
    for a in result.artifacts:
        art = out.artifacts.add(name=a.name, media_type=a.media_type,
                                metadata_json=json.dumps(a.metadata, default=_jsonable))
        if a.path is not None:
            art.path = str(a.path)
        else:
            art.data = a.data
    return out


def _size(w: int, h: int, wf: str, hf: str) -> tuple[int, int] | None:
    if not w and not h:
        return None
    if not w or not h:
        raise invalid(wf if not w else hf, 0, f"set both {wf} and {hf}, or neither")
    return (w, h)


def _keyframes(text: str) -> list:
    if not text:
        raise invalid("keyframes_json", "", 'CAMERA_PATH_KEYFRAMES needs keyframes_json, e.g. [{"t": 0, "position": '
                                            '[0, 0, 0], "yaw": 0}, {"t": 2, "position": [0, 0, -0.5], "yaw": 30}]')
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"keyframes_json is not valid JSON ({exc})", field="keyframes_json") from None
    frames = data.get("keyframes") if isinstance(data, dict) else data
    if not isinstance(frames, list) or not frames:
        raise InvalidArgument('keyframes_json must be a non-empty list of keyframes (or {"keyframes": [...]})',
                              field="keyframes_json")
    return frames


def _jsonable(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)
