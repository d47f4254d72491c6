"""numpy <-> ``ldm3d.v1`` messages (tensors, images, durations), written once and validated at the edge.

Every reader names the proto field it reads in its ``InvalidArgument`` (``cond.dtype``, ``init_image.depth.png``),
so a client learns exactly which field to fix.

Images are checked from what they *declare* before anything is decoded: a PNG's header (size, bit depth, colour
type) or an array's shape, against the caller's limits for that kind of input (``max_side``, ``max_pixels``), and
an RGBD's two images against each other. A 160 KB PNG that would decode to an 8192² 16-bit image is refused in
microseconds, and decoding (callers run it in a worker thread) is bounded by the limit.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
from google.protobuf import duration_pb2

from .. import codec
from ..errors import InvalidArgument, ResourceExhausted, invalid
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


@dataclass(frozen=True)
class ImageLimits:
    """What one kind of input image may declare: each side at most ``max_side`` (INVALID_ARGUMENT beyond it), at
    most ``max_pixels`` in all (RESOURCE_EXHAUSTED beyond it: a configured limit, named by ``flag``)."""

    max_side: int = MAX_IMAGE_SIDE
    max_pixels: int = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE
    flag: str = ""


DEFAULT_LIMITS = ImageLimits()


def read_rgb(image: pb.Image, field: str, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """``Image`` → RGB ``uint8 [H, W, 3]``: an 8-bit PNG or a raw array, its declared size checked first."""
    check_declared(image, field, "rgb", limits)
    return _read_image(image, field, codec.read_rgb, "uint8", (None, None, 3), "an 8-bit PNG")


def read_depth(image: pb.Image, field: str, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """``Image`` → depth ``uint16 [H, W]``: a 16-bit grayscale PNG or a raw array, its declared size checked first."""
    check_declared(image, field, "depth", limits)
    return _read_image(image, field, codec.read_depth, "uint16", (None, None), "a 16-bit grayscale PNG")


def _read_image(image: pb.Image, field: str, read_png, dtype: str, shape: tuple, png: str) -> np.ndarray:
    kind = image.WhichOneof("data")
    if kind == "png":
        return read_png(image.png, field=f"{field}.png")
    if kind == "array":
        return from_tensor(image.array, f"{field}.array", dtype=dtype, shape=shape)
    dims = ", ".join("H" if i == 0 else "W" if i == 1 else str(d) for i, d in enumerate(shape))
    raise invalid(field, None, f"set png ({png}) or array ({dtype} [{dims}])")


def read_rgbd(image: pb.RGBD, field: str, limits: ImageLimits = DEFAULT_LIMITS) -> tuple[np.ndarray, np.ndarray]:
    """``RGBD`` → (rgb ``uint8 [H, W, 3]``, depth ``uint16 [H, W]``), both set and of the same size: both
    declared sizes are checked (limits, equal) before either image is decoded."""
    if not image.HasField("rgb") or not image.HasField("depth"):
        raise invalid(field, None, f"set both {field}.rgb (8-bit) and {field}.depth (16-bit) of the same size")
    rgb_size = check_declared(image.rgb, f"{field}.rgb", "rgb", limits)
    depth_size = check_declared(image.depth, f"{field}.depth", "depth", limits)
    if rgb_size and depth_size and rgb_size != depth_size:
        raise InvalidArgument(
            f"{field}.depth is {depth_size[0]}x{depth_size[1]} but the RGB image is {rgb_size[0]}x{rgb_size[1]}: "
            "give an RGB image and a depth map of the same size", field=f"{field}.depth")
    rgb = read_rgb(image.rgb, f"{field}.rgb", limits)
    depth = read_depth(image.depth, f"{field}.depth", limits)
    codec.check_same_size(rgb, depth, f"{field}.depth")
    return rgb, depth


def declared_size(image: pb.Image, field: str) -> tuple[int, int] | None:
    """``(width, height)`` as the image declares it (a PNG's header, an array's shape), without decoding; None when
    neither is set (the reader then says what to set)."""
    kind = image.WhichOneof("data")
    if kind == "png":
        return _png_header(image.png, f"{field}.png")[:2]
    if kind == "array":
        dims = list(image.array.shape)
        if len(dims) >= 2 and all(d >= 0 for d in dims):
            return dims[1], dims[0]
    return None


def check_declared(image: pb.Image, field: str, kind: str, limits: ImageLimits) -> tuple[int, int] | None:
    """Refuse an image from its declared size (and, for ``kind`` "depth", a PNG's bit depth) before decoding."""
    size = declared_size(image, field)
    if size is None:
        return None
    where = f"{field}.png" if image.WhichOneof("data") == "png" else f"{field}.array"
    w, h = size
    if not (0 < w <= limits.max_side and 0 < h <= limits.max_side):
        raise invalid(where, f"{w}x{h}", f"each side must be 1..{limits.max_side} pixels")
    if w * h > limits.max_pixels:
        by = f" ({limits.flag})" if limits.flag else ""
        raise ResourceExhausted(f"{where}: the image is {w}x{h} ({w * h} pixels), over this server's limit of "
                                f"{limits.max_pixels} pixels{by}: downscale it", field=where)
    if image.WhichOneof("data") == "png" and kind == "depth":
        _, _, bits, colour = _png_header(image.png, where)
        if (bits, colour) != (16, 0):
            raise InvalidArgument(f"{where} is a PNG with {bits}-bit samples and colour type {colour}: depth must "
                                  "be a 16-bit grayscale PNG (colour type 0)", field=where)
    return size


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


def _png_header(data: bytes, field: str) -> tuple[int, int, int, int]:
    """A PNG's declared ``(width, height, bit depth, colour type)``, from its IHDR chunk."""
    if not data.startswith(PNG_SIGNATURE) or len(data) < 33 or data[12:16] != b"IHDR":
        raise invalid(field, f"<{len(data)} bytes starting {bytes(data[:8])!r}>", "expected a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    return width, height, data[24], data[25]


def _names() -> str:
    return ", ".join(pb.DataType.Name(e) for e in DTYPES)
