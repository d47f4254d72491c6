"""Spherical Video V2 metadata (``st3d`` + ``sv3d``) written into an MP4's video sample entry.

ffmpeg 5.1 writes these boxes only when remuxing a stream that already carries spherical side data, never for frames
it encodes from raw input, so we add them after encoding. The layout is Google's *Spherical Video V2 RFC*
(github.com/google/spatial-media, docs/spherical-video-v2-rfc.md), the same boxes ffmpeg's ``movenc.c``
(``mov_write_st3d_tag`` / ``mov_write_sv3d_tag``) writes and ``mov.c`` reads back as stream side data:

    aligned(8) class Stereoscopic3D extends FullBox('st3d', 0, 0) {
        unsigned int(8) stereo_mode;          // 0 mono, 1 top-bottom, 2 left-right
    }
    aligned(8) class SphericalVideoBox extends Box('sv3d') {
        SphericalVideoHeader svhd;            // FullBox('svhd', 0, 0) { string metadata_source; }  (NUL-terminated)
        Projection proj;                      // Box('proj') { ProjectionHeader prhd; ProjectionDataBox equi; }
    }
    aligned(8) class ProjectionHeader extends FullBox('prhd', 0, 0) {
        int(32) pose_yaw_degrees; int(32) pose_pitch_degrees; int(32) pose_roll_degrees;   // 16.16 fixed point
    }
    aligned(8) class EquirectangularProjection extends FullBox('equi', 0, 0) {
        unsigned int(32) projection_bounds_top, _bottom, _left, _right;                   // 0.32 fixed point
    }

Both boxes go at the end of the visual sample entry (``avc1``) inside ``moov/trak/mdia/minf/stbl/stsd``. Inserting
them grows every enclosing box; when ``moov`` precedes ``mdat`` the chunk offsets (``stco``/``co64``) shift too.
"""

from __future__ import annotations

import struct

STEREO_MODES = {"mono": 0, "top-bottom": 1, "left-right": 2}
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}
# A VisualSampleEntry's fixed fields after its 8-byte box header (ISO/IEC 14496-12 §12.1.3): 6 reserved,
# data_reference_index(2), pre_defined/reserved(16), width(2), height(2), resolutions(8), reserved(4),
# frame_count(2), compressorname(32), depth(2), pre_defined(2).
_VISUAL_SAMPLE_ENTRY_FIELDS = 78


class MP4Error(ValueError):
    pass


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def full_box(kind: bytes, payload: bytes, version: int = 0, flags: int = 0) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags) + payload)


def st3d_box(stereo_mode: str) -> bytes:
    return full_box(b"st3d", struct.pack(">B", STEREO_MODES[stereo_mode]))


def sv3d_box(metadata_source: str = "ldm3d", yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> bytes:
    svhd = full_box(b"svhd", metadata_source.encode("utf-8") + b"\0")
    prhd = full_box(b"prhd", struct.pack(">iii", *(round(v * 65536) for v in (yaw, pitch, roll))))
    equi = full_box(b"equi", struct.pack(">IIII", 0, 0, 0, 0))  # full sphere: no cropping on any side
    return box(b"sv3d", svhd + box(b"proj", prhd + equi))


def iter_boxes(data: bytes, start: int = 0, end: int | None = None):
    """Yield ``(type, start, header_size, total_size)`` for the boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise MP4Error(f"corrupt MP4: box {kind!r} at {pos} has size {size}")
        yield kind, pos, header, size
        pos += size


def find_box(data: bytes, path: list[bytes], start: int = 0, end: int | None = None):
    """The first box along ``path`` (e.g. ``[b"moov", b"trak"]``) as ``(start, header, size)`` or None."""
    for kind, pos, header, size in iter_boxes(data, start, end):
        if kind == path[0]:
            if len(path) == 1:
                return pos, header, size
            return find_box(data, path[1:], pos + header, pos + size)
    return None


def inject_spherical(data: bytes, stereo_mode: str = "top-bottom", metadata_source: str = "ldm3d") -> bytes:
    """Return ``data`` (a complete MP4) with ``st3d`` and an equirectangular ``sv3d`` in its video track."""
    if stereo_mode not in STEREO_MODES:
        raise ValueError(f"stereo_mode must be one of {sorted(STEREO_MODES)}")
    extra = st3d_box(stereo_mode) + sv3d_box(metadata_source)
    top = list(iter_boxes(data))
    moov = next(((p, h, s) for k, p, h, s in top if k == b"moov"), None)
    if moov is None:
        raise MP4Error("not an MP4 with a moov box")
    mdat_positions = [p for k, p, _, _ in top if k == b"mdat"]
    m_pos, _m_head, m_size = moov
    new_moov, done = _rewrite(data[m_pos : m_pos + m_size], extra)
    if not done:
        raise MP4Error("the MP4 has no video track with a sample entry to carry spherical metadata")
    delta = len(new_moov) - m_size
    if any(p > m_pos for p in mdat_positions):  # moov before media data: chunk offsets move by delta
        new_moov = _shift_chunk_offsets(new_moov, delta)
    return data[:m_pos] + new_moov + data[m_pos + m_size :]


def _rewrite(buf: bytes, extra: bytes) -> tuple[bytes, bool]:
    """Rebuild one box (``buf`` is the whole box) with ``extra`` appended to the video sample entry under it."""
    kind, _, header, size = next(iter_boxes(buf))
    if header != 8:
        raise MP4Error(f"64-bit box size for {kind!r} is not supported here")
    if kind in _CONTAINERS:
        if kind == b"trak" and not _is_video_trak(buf):
            return buf, False
        parts, done = [], False
        for ck, cp, ch, cs in iter_boxes(buf, 8, size):
            child = buf[cp : cp + cs]
            if not done and (ck in _CONTAINERS or ck == b"stsd"):
                child, done = _rewrite(child, extra)
            parts.append(child)
        return box(kind, b"".join(parts)), done
    if kind == b"stsd":
        count = struct.unpack_from(">I", buf, 12)[0]
        if count < 1:
            return buf, False
        entries = list(iter_boxes(buf, 16, size))
        ek, ep, eh, es = entries[0]
        entry = buf[ep : ep + es]
        children_at = eh + _VISUAL_SAMPLE_ENTRY_FIELDS
        present = {k for k, *_ in iter_boxes(entry, children_at, es)}
        add = b"".join(b for b in _split(extra) if b[4:8] not in present)
        new_entry = box(ek, entry[8:] + add)
        rest = b"".join(buf[p : p + s] for _, p, _, s in entries[1:])
        return box(b"stsd", buf[8:16] + new_entry + rest), True
    return buf, False


def _split(boxes: bytes) -> list[bytes]:
    return [boxes[p : p + s] for _, p, _, s in iter_boxes(boxes)]


def _is_video_trak(trak: bytes) -> bool:
    hdlr = find_box(trak, [b"trak", b"mdia", b"hdlr"])
    if hdlr is None:
        return False
    pos, header, _ = hdlr
    return trak[pos + header + 8 : pos + header + 12] == b"vide"  # version/flags(4) + pre_defined(4), then type


def _shift_chunk_offsets(moov: bytes, delta: int) -> bytes:
    out = bytearray(moov)

    def walk(start: int, end: int) -> None:
        for kind, pos, header, size in iter_boxes(moov, start, end):
            if kind in _CONTAINERS:
                walk(pos + header, pos + size)
            elif kind in (b"stco", b"co64"):
                n = struct.unpack_from(">I", moov, pos + header + 4)[0]
                fmt, width = (">I", 4) if kind == b"stco" else (">Q", 8)
                for i in range(n):
                    at = pos + header + 8 + i * width
                    struct.pack_into(fmt, out, at, struct.unpack_from(fmt, moov, at)[0] + delta)

    walk(8, len(moov))
    return bytes(out)
