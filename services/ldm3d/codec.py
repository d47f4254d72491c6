"""The depth contract (shared DESIGN.md §3): packing 16-bit depth into the VAE's RGB-like channels, and PNG I/O.

LDM3D's autoencoder sees RGB plus depth as one image in [-1, 1]:

* **6 channels** (``Intel/ldm3d``): RGB, then 16-bit depth ``d`` stored RGB-like as ``(0, d >> 8, d & 0xFF) / 255``.
  Decoding clamps to [0, 1], rounds each channel to 8 bits and rebuilds ``d = G * 256 + B``; R is ignored
  (reserved for 24-bit depth). Every 16-bit value round-trips exactly.
* **4 channels** (``Intel/ldm3d-4c``, ``Intel/ldm3d-pano``): RGB, then depth as one channel in [0, 1].
  We quantise with ``round(d * 65535)``; diffusers truncates (``(d * 65535).astype(uint16)``), which biases every
  value down by half a step. Ours is the unbiased inverse of ``d / 65535``.

Depth is relative inverse depth (DPT-style): larger values are nearer.

Images here are numpy arrays: RGB ``uint8 [H, W, 3]``, depth ``uint16 [H, W]``, model tensors ``float32 [B, C, H, W]``.
All PNG writes are atomic (temporary name, then rename), so a crash never leaves a file that looks complete.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InvalidArgument, NotFound

DEPTH_MAX = 65535
RGB_CHANNELS = 3


# --------------------------------------------------------------------------------------------- depth packing
def pack_depth6(depth: np.ndarray) -> np.ndarray:
    """``uint16 [..., H, W]`` → ``float32 [..., H, W, 3]`` in [0, 1]: ``(0, d >> 8, d & 0xFF) / 255``."""
    d = _as_u16(depth, "depth")
    out = np.zeros(d.shape + (3,), dtype=np.float32)
    out[..., 1] = (d >> 8).astype(np.float32) / 255.0
    out[..., 2] = (d & 0xFF).astype(np.float32) / 255.0
    return out


def unpack_depth6(packed: np.ndarray) -> np.ndarray:
    """``float [..., H, W, 3]`` in [0, 1] → ``uint16 [..., H, W]``: round each channel to 8 bits, ``d = G·256 + B``."""
    q = np.rint(np.clip(packed, 0.0, 1.0) * 255.0).astype(np.uint16)
    return (q[..., 1] << 8) | q[..., 2]


def pack_depth4(depth: np.ndarray) -> np.ndarray:
    """``uint16 [..., H, W]`` → ``float32 [..., H, W, 1]`` in [0, 1]: ``d / 65535``."""
    return (_as_u16(depth, "depth").astype(np.float32) / DEPTH_MAX)[..., None]


def unpack_depth4(channel: np.ndarray) -> np.ndarray:
    """``float [..., H, W, 1]`` (or ``[..., H, W]``) in [0, 1] → ``uint16``: ``round(clip(d) · 65535)``."""
    c = channel[..., 0] if channel.ndim >= 3 and channel.shape[-1] == 1 else channel
    return np.rint(np.clip(c, 0.0, 1.0) * DEPTH_MAX).astype(np.uint16)


def depth_channels_for(vae_channels: int) -> int:
    """How many channels of the VAE's image carry depth (3 for the 6-channel layout, 1 for the 4-channel one)."""
    if vae_channels == 6:
        return 3
    if vae_channels == 4:
        return 1
    raise InvalidArgument(
        f"a VAE with {vae_channels} image channels is not an LDM3D autoencoder: use a checkpoint whose vae has "
        "in_channels/out_channels 6 (Intel/ldm3d) or 4 (Intel/ldm3d-4c, Intel/ldm3d-pano)",
        field="model",
    )


def check_same_size(rgb: np.ndarray, depth: np.ndarray, field: str = "depth") -> None:
    """The one "RGB and depth are the same size" check (``field`` names the depth, e.g. ``init_image.depth``)."""
    if rgb.shape[:2] != depth.shape[:2]:
        raise InvalidArgument(
            f"{field} is {depth.shape[1]}x{depth.shape[0]} but the RGB image is {rgb.shape[1]}x{rgb.shape[0]}: "
            "give an RGB image and a depth map of the same size",
            field=field,
        )


def encode_rgbd(rgb: np.ndarray, depth: np.ndarray, vae_channels: int) -> np.ndarray:
    """RGB ``uint8 [H, W, 3]`` + depth ``uint16 [H, W]`` → the VAE encoder's input ``float32 [1, C, H, W]`` in [-1, 1]."""
    rgb = _as_rgb_u8(rgb, "rgb")
    depth = _as_u16(depth, "depth")
    check_same_size(rgb, depth)
    packed = pack_depth6(depth) if depth_channels_for(vae_channels) == 3 else pack_depth4(depth)
    x = np.concatenate([rgb.astype(np.float32) / 255.0, packed], axis=-1)
    return (x * 2.0 - 1.0).transpose(2, 0, 1)[None].astype(np.float32)


def decode_rgbd(decoded: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The VAE decoder's output ``float [B, C, H, W]`` in [-1, 1] → ``(rgb_float, rgb_u8, depth_u16)``.

    ``rgb_float`` is ``(x / 2 + 0.5).clamp(0, 1)`` of channels 0–2 as ``float32 [B, H, W, 3]``: exactly what
    diffusers' ``StableDiffusionLDM3DPipeline`` returns as its ``np`` RGB. ``rgb_u8`` rounds it like diffusers'
    ``numpy_to_pil``; ``depth_u16`` is ``uint16 [B, H, W]`` from the depth channels by the contract above.
    """
    if decoded.ndim != 4 or decoded.shape[1] not in (4, 6):
        raise InvalidArgument(
            f"decoded image has shape {tuple(decoded.shape)}: expected [batch, 6 or 4, height, width]", field="image"
        )
    x = np.clip(decoded.astype(np.float32) / 2.0 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)
    rgb = np.ascontiguousarray(x[..., :RGB_CHANNELS])
    rest = x[..., RGB_CHANNELS:]
    depth = unpack_depth6(rest) if rest.shape[-1] == 3 else unpack_depth4(rest)
    return rgb, rgb_to_u8(rgb), depth


def rgb_to_u8(rgb: np.ndarray) -> np.ndarray:
    """``float [..., 3]`` in [0, 1] → ``uint8``, rounding like diffusers' ``numpy_to_pil`` (``(x * 255).round()``)."""
    return (np.clip(rgb, 0.0, 1.0) * 255).round().astype(np.uint8)


# --------------------------------------------------------------------------------------------- PNG I/O
def encode_png(image: np.ndarray) -> bytes:
    """``uint8 [H, W, 3]`` → an 8-bit sRGB PNG; ``uint16 [H, W]`` → a 16-bit grayscale PNG."""
    buf = io.BytesIO()
    _to_pil(image).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write ``image`` (see :func:`encode_png`) atomically: a temporary file in the same folder, then a rename."""
    data = encode_png(image)
    return write_bytes_atomic(path, data)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; finished files get the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def current_umask() -> int:
    """The process umask (read by setting and restoring it), for files made with mkstemp's 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_rgb(source: str | os.PathLike | bytes, field: str = "rgb") -> np.ndarray:
    """Read any image Pillow opens as ``uint8 [H, W, 3]`` RGB (alpha dropped, grayscale expanded)."""
    img = _open(source, field)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise InvalidArgument(
            f"{field} is a {img.mode} (16-bit/float) image: give an 8-bit RGB image here (depth maps go to --init-depth/--depth)",
            field=field,
        )
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_depth(source: str | os.PathLike | bytes, field: str = "depth") -> np.ndarray:
    """Read a 16-bit grayscale PNG as ``uint16 [H, W]``. 8-bit or colour images are refused with how to convert."""
    img = _open(source, field)
    if img.mode in ("I;16", "I;16L", "I;16B"):
        return np.asarray(img, dtype=np.uint16).copy()
    if img.mode == "I":
        arr = np.asarray(img)
        if arr.min() >= 0 and arr.max() <= DEPTH_MAX:
            return arr.astype(np.uint16)
    raise InvalidArgument(
        f"{field} is a {img.mode} image with {_bits(img)}-bit samples: depth must be a 16-bit grayscale PNG. "
        "Convert an 8-bit map with e.g. `python -c \"import numpy as n,PIL.Image as I;"
        "a=n.asarray(I.open('in.png').convert('L'),n.uint16)*257;I.fromarray(a).save('out.png')\"` "
        "(8-bit values ×257 span 0..65535)",
        field=field,
    )


def depth_preview(depth: np.ndarray) -> np.ndarray:
    """A colour-mapped 8-bit view of ``uint16`` depth for people (turbo colour map, near = warm), ``uint8 [H, W, 3]``."""
    t = _as_u16(depth, "depth").astype(np.float64) / DEPTH_MAX
    lo, hi = float(t.min()), float(t.max())
    t = (t - lo) / (hi - lo) if hi > lo else np.zeros_like(t)
    return _turbo(t)


# --------------------------------------------------------------------------------------------- helpers
def _turbo(t: np.ndarray) -> np.ndarray:
    # Polynomial fit of Google's Turbo colour map (Mikhailov 2019, Apache-2.0), accurate to ~1/255.
    kr = (0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943)
    kg = (0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604)
    kb = (0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973)
    chans = [sum(k * t**i for i, k in enumerate(ks)) for ks in (kr, kg, kb)]
    return (np.clip(np.stack(chans, axis=-1), 0.0, 1.0) * 255).round().astype(np.uint8)


def _to_pil(image: np.ndarray) -> Image.Image:
    if image.dtype == np.uint16 and image.ndim == 2:
        return Image.fromarray(image, mode=None) if image.dtype.byteorder != ">" else Image.fromarray(image.astype("<u2"))
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return Image.fromarray(image)
    if image.dtype == np.uint8 and image.ndim == 2:
        return Image.fromarray(image)
    raise InvalidArgument(f"cannot write an image of dtype {image.dtype} and shape {image.shape} as PNG", field="image")


def _open(source, field: str) -> Image.Image:
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            img = Image.open(io.BytesIO(bytes(source)))
        else:
            p = Path(source)
            if not p.is_file():
                raise NotFound(f"{field}: no such file {str(p)!r}", field=field)
            img = Image.open(p)
        img.load()
        return img
    except (NotFound, InvalidArgument):
        raise
    except Exception as exc:  # Pillow raises many types for corrupt data; users need one clear message
        raise InvalidArgument(f"{field} is not a readable image ({exc.__class__.__name__}: {exc})", field=field) from None


def _bits(img: Image.Image) -> int:
    return {"1": 1, "L": 8, "P": 8, "RGB": 8, "RGBA": 8, "LA": 8, "I": 32, "F": 32}.get(img.mode, 8)


def _as_u16(depth: np.ndarray, field: str) -> np.ndarray:
    if depth.dtype != np.uint16:
        raise InvalidArgument(f"{field} has dtype {depth.dtype}: expected uint16 (16-bit depth)", field=field)
    return depth


def _as_rgb_u8(rgb: np.ndarray, field: str) -> np.ndarray:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidArgument(f"{field} must be uint8 [H, W, 3], got {rgb.dtype} {tuple(rgb.shape)}", field=field)
    return rgb
