"""Mesh export: binary PLY with vertex colours and textured glTF 2.0 binary (.glb), both as bytes.

The faces are wound to face the origin (the viewer stands inside); the glTF material is double-sided and unlit
(``KHR_materials_unlit``: the panorama already holds its lighting), its texture is the panorama PNG and its sampler
repeats horizontally so the duplicated seam column (u slightly above 1) samples across the ±180° seam exactly.
Stretched faces (depth discontinuities) are left out by default, so viewers show a gap instead of a smear.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from ..codec import encode_png
from .geometry import SphereMesh

_GL_FLOAT, _GL_UINT = 5126, 5125
_GL_ARRAY_BUFFER, _GL_ELEMENT_ARRAY_BUFFER = 34962, 34963
_GL_REPEAT, _GL_CLAMP_TO_EDGE, _GL_LINEAR = 10497, 33071, 9729


def _used(mesh: SphereMesh) -> tuple[np.ndarray, np.ndarray]:
    """Vertices referenced by a face (renumbered faces, kept vertex indices)."""
    keep = np.unique(mesh.faces)
    remap = np.full(len(mesh.vertices), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    return remap[mesh.faces.astype(np.int64)].astype(np.uint32), keep


def ply_bytes(mesh: SphereMesh) -> bytes:
    """Binary little-endian PLY: float xyz + uchar rgb per vertex, uint32 triangles."""
    faces, keep = _used(mesh)
    nv, nf = len(keep), len(faces)
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment ldm3d DepthFusion sphere (+Y up, -Z forward, metres)\n"
        f"element vertex {nv}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {nf}\nproperty list uchar uint vertex_indices\nend_header\n"
    ).encode("ascii")
    vdt = np.dtype([("p", "<f4", 3), ("c", "u1", 3)])
    v = np.empty(nv, dtype=vdt)
    v["p"] = mesh.vertices[keep]
    v["c"] = mesh.colors[keep]
    fdt = np.dtype([("n", "u1"), ("i", "<u4", 3)])
    f = np.empty(nf, dtype=fdt)
    f["n"] = 3
    f["i"] = faces
    return header + v.tobytes() + f.tobytes()


def glb_bytes(mesh: SphereMesh, texture_rgb: np.ndarray) -> bytes:
    """glTF 2.0 binary: one mesh, POSITION + TEXCOORD_0, uint32 indices, the panorama as an embedded PNG texture."""
    faces, keep = _used(mesh)
    pos = np.ascontiguousarray(mesh.vertices[keep], dtype="<f4")
    uv = np.ascontiguousarray(mesh.uvs[keep], dtype="<f4")
    idx = np.ascontiguousarray(faces.reshape(-1), dtype="<u4")
    png = encode_png(np.ascontiguousarray(texture_rgb))
    chunks, views, offset = [], [], 0
    for data, target in (
        (pos.tobytes(), _GL_ARRAY_BUFFER),
        (uv.tobytes(), _GL_ARRAY_BUFFER),
        (idx.tobytes(), _GL_ELEMENT_ARRAY_BUFFER),
        (png, None),
    ):
        view = {"buffer": 0, "byteOffset": offset, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        views.append(view)
        pad = (-len(data)) % 4
        chunks.append(data + b"\0" * pad)
        offset += len(data) + pad
    gltf = {
        "asset": {"version": "2.0", "generator": "ldm3d DepthFusion"},
        "extensionsUsed": ["KHR_materials_unlit"],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "depthfusion_sphere"}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "TEXCOORD_0": 1}, "indices": 2, "material": 0}]}],
        "materials": [
            {
                "pbrMetallicRoughness": {
                    "baseColorTexture": {"index": 0},
                    "metallicFactor": 0.0,
                    "roughnessFactor": 1.0,
                },
                "doubleSided": True,
                "extensions": {"KHR_materials_unlit": {}},
            }
        ],
        "textures": [{"sampler": 0, "source": 0}],
        "samplers": [
            {"magFilter": _GL_LINEAR, "minFilter": _GL_LINEAR, "wrapS": _GL_REPEAT, "wrapT": _GL_CLAMP_TO_EDGE}
        ],
        "images": [{"bufferView": 3, "mimeType": "image/png"}],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": _GL_FLOAT,
                "count": len(pos),
                "type": "VEC3",
                "min": pos.min(axis=0).tolist(),
                "max": pos.max(axis=0).tolist(),
            },
            {"bufferView": 1, "componentType": _GL_FLOAT, "count": len(uv), "type": "VEC2"},
            {"bufferView": 2, "componentType": _GL_UINT, "count": len(idx), "type": "SCALAR"},
        ],
        "bufferViews": views,
        "buffers": [{"byteLength": offset}],
    }
    js = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    js += b" " * ((-len(js)) % 4)
    binary = b"".join(chunks)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return (
        struct.pack("<4sII", b"glTF", 2, total)
        + struct.pack("<I4s", len(js), b"JSON")
        + js
        + struct.pack("<I4s", len(binary), b"BIN\0")
        + binary
    )
