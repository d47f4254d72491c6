"""The renderer's enums <-> the render library's names, one table each (the client and the servicer share them)."""

from __future__ import annotations

from ..v1 import renderer_pb2 as pb

# CameraPath enum ↔ RenderSpec.path (CAMERA_PATH_KEYFRAMES carries its keyframes in keyframes_json)
CAMERA_PATHS: dict[str, int] = {"orbit": pb.CAMERA_PATH_ORBIT, "dolly": pb.CAMERA_PATH_DOLLY,
                                "look-around": pb.CAMERA_PATH_LOOK_AROUND}
PATH_NAMES: dict[int, str] = {v: k for k, v in CAMERA_PATHS.items()}
# MeshFormat enum ↔ RenderSpec.meshes
MESH_FORMATS: dict[str, int] = {"ply": pb.MESH_FORMAT_PLY, "glb": pb.MESH_FORMAT_GLB}
MESH_NAMES: dict[int, str] = {v: k for k, v in MESH_FORMATS.items()}
