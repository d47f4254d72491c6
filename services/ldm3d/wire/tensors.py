"""numpy <-> ``ldm3d.v1`` messages (tensors, images, durations), written once and validated at the edge.

Every reader names the proto field it reads in its ``InvalidArgument`` (``cond.dtype``, ``init_image.depth.png``),
so a client learns exactly which field to fix.
"""

from __future__ import annotations

import math
import struct

import numpy as np
from google.protobuf import duration_pb2

from .. import codec
from ..errors import InvalidArgument, invalid
from ..v1 import common_pb2 as pb

# Little-endian on the wire whatever the host; converted to native arrays on read.
DTYPES: dict[int, np.dtype] = {
    pb.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    pb.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    pb.DATA_TYPE_UINT8: np.dtype("u1"),
    pb.DATA_TYPE_UINT16: np.dtype("<u2"),
    pb.DATA_TYPE_INT32: np.dtype("<i4"),
    pb.DATA_TYPE_INT64: np.dtype("<i8"),
}
_ENUM_OF = {dt.str.lstrip("<>|="): enum for enum, dt in DTYPES.items()}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_IMAGE_SIDE = 8192  # refuse larger PNGs from their header, before decoding (no decompression bombs)


def to_tensor(array: np.ndarray) -> pb.Tensor:
    """Any array of a supported dtype → ``Tensor`` (little-endian, C order)."""
    a = np.asarray(array)
    enum = _ENUM_OF.get(a.dtype.newbyteorder("<").str.lstrip("<>|="))
    if enum is None:
        raise InvalidArgument(f"cannot send an array of dtype {a.dtype}: use one of {_names()}", field="dtype")
    wire = np.ascontiguousarray(a, dtype=DTYPES[enum])
    return pb.Tensor(dtype=enum, shape=list(wire.shape), data=wire.tobytes())


def from_tensor(t: pb.Tensor, field: str, *, dtype: str | None = None,
                shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """``Tensor`` → a native, writable numpy array, checking dtype, rank, fixed dims and the byte length.

    ``shape`` gives the expected rank, ``None`` for a free dimension (e.g. ``(None, 77, 768)``).
    """
    if t.dtype not in DTYPES:
        raise invalid(f"{field}.dtype", pb.DataType.Name(t.dtype) if t.dtype in pb.DataType.values() else t.dtype,
                      f"use one of {_names()}")
    wire = DTYPES[t.dtype]
    if dtype is not None and wire != np.dtype(dtype).newbyteorder("<") and wire != np.dtype(dtype):
        raise invalid(f"{field}.dtype", pb.DataType.Name(t.dtype), f"{field} must be DATA_TYPE_{dtype.upper()}")
    dims = tuple(t.shape)
    if any(d < 0 for d in dims):
        raise invalid(f"{field}.shape", list(dims), "dimensions must be >= 0")
    if shape is not None:
        if len(dims) != len(shape) or any(e is not None and d != e for d, e in zip(dims, shape)):
            want = "[" + ", ".join("*" if e is None else str(e) for e in shape) + "]"
            raise invalid(f"{field}.shape", list(dims), f"expected {want}")
    expected = math.prod(dims) * wire.itemsize
    if len(t.data) != expected:
        raise invalid(f"{field}.data", f"<{len(t.data)} bytes>",
                      f"shape {list(dims)} of {pb.DataType.Name(t.dtype)} needs exactly {expected} bytes")
    return np.frombuffer(t.data, dtype=wire).reshape(dims).astype(wire.newbyteorder("="), copy=True)


def read_rgb(image: pb.Image, field: str) -> np.ndarray:
    """``Image`` → RGB ``uint8 [H, W, 3]``: an 8-bit PNG or a raw array."""
    return _read_image(image, field, codec.read_rgb, "uint8", (None, None, 3), "an 8-bit PNG")


def read_depth(image: pb.Image, field: str) -> np.ndarray:
    """``Image`` → depth ``uint16 [H, W]``: a 16-bit grayscale PNG or a raw array."""
    return _read_image(image, field, codec.read_depth, "uint16", (None, None), "a 16-bit grayscale PNG")


def _read_image(image: pb.Image, field: str, read_png, dtype: str, shape: tuple, png: str) -> np.ndarray:
    kind = image.WhichOneof("data")
    if kind == "png":
        _check_png(image.png, f"{field}.png")
        return read_png(image.png, field=f"{field}.png")
    if kind == "array":
        return from_tensor(image.array, f"{field}.array", dtype=dtype, shape=shape)
    dims = ", ".join("H" if i == 0 else "W" if i == 1 else str(d) for i, d in enumerate(shape))
    raise invalid(field, None, f"set png ({png}) or array ({dtype} [{dims}])")


def read_rgbd(image: pb.RGBD, field: str) -> tuple[np.ndarray, np.ndarray]:
    """``RGBD`` → (rgb ``uint8 [H, W, 3]``, depth ``uint16 [H, W]``), both set and of the same size."""
    if not image.HasField("rgb") or not image.HasField("depth"):
        raise invalid(field, None, f"set both {field}.rgb (8-bit) and {field}.depth (16-bit) of the same size")
    rgb = read_rgb(image.rgb, f"{field}.rgb")
    depth = read_depth(image.depth, f"{field}.depth")
    codec.check_same_size(rgb, depth, f"{field}.depth")
    return rgb, depth


def rgbd(rgb: np.ndarray, depth: np.ndarray, raw: bool) -> pb.RGBD:
    """RGB ``uint8 [H, W, 3]`` + depth ``uint16 [H, W]`` → ``RGBD`` as PNGs (8-bit, 16-bit) or raw arrays."""
    if raw:
        return pb.RGBD(rgb=pb.Image(array=to_tensor(rgb)), depth=pb.Image(array=to_tensor(depth)))
    return pb.RGBD(rgb=pb.Image(png=codec.encode_png(rgb)), depth=pb.Image(png=codec.encode_png(depth)))


def is_raw(encoding: int, field: str = "image_encoding") -> bool:
    """Whether raw arrays were asked for (PNG is the default); an unknown enum value is INVALID_ARGUMENT."""
    if encoding not in pb.ImageEncoding.values():
        raise invalid(field, encoding, "use IMAGE_ENCODING_PNG (the default) or IMAGE_ENCODING_RAW")
    return encoding == pb.IMAGE_ENCODING_RAW


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(round(seconds * 1e9)))
    return d


def seconds(d: duration_pb2.Duration) -> float:
    return d.ToNanoseconds() / 1e9


def progress(step: int, total: int, elapsed_s: float) -> pb.Progress:
    return pb.Progress(step=step, total=total, elapsed=duration(elapsed_s))


def from_progress(p: pb.Progress) -> tuple[int, int, float]:
    """``Progress`` → ``(step, total, elapsed_s)``."""
    return p.step, p.total, seconds(p.elapsed)


def _check_png(data: bytes, field: str) -> None:
    if not data.startswith(PNG_SIGNATURE) or len(data) < 33 or data[12:16] != b"IHDR":
        raise invalid(field, f"<{len(data)} bytes starting {bytes(data[:8])!r}>", "expected a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
        raise invalid(field, f"{width}x{height}", f"each side must be 1..{MAX_IMAGE_SIDE} pixels")


def _names() -> str:
    return ", ".join(pb.DataType.Name(e) for e in DTYPES)
