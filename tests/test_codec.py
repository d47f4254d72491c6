"""The depth contract of DESIGN.md §3, exhaustively."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ldm3d import codec
from ldm3d.errors import InvalidArgument, NotFound

ALL_U16 = np.arange(65536, dtype=np.uint16).reshape(256, 256)


def test_6_channel_packing_round_trips_every_16_bit_value():
    packed = codec.pack_depth6(ALL_U16)
    assert packed.dtype == np.float32 and packed.shape == (256, 256, 3)
    assert np.all(packed[..., 0] == 0)  # R is reserved
    np.testing.assert_array_equal(codec.unpack_depth6(packed), ALL_U16)


def test_6_channel_packing_survives_the_minus_one_one_mapping():
    # what the VAE sees and returns: x*2-1 then (x/2+0.5).clamp(0,1), in float32
    x = codec.pack_depth6(ALL_U16) * 2.0 - 1.0
    back = np.clip(x.astype(np.float32) / 2.0 + 0.5, 0, 1)
    np.testing.assert_array_equal(codec.unpack_depth6(back), ALL_U16)


def test_6_channel_unpacking_tolerates_decoder_error_below_half_a_step():
    packed = codec.pack_depth6(ALL_U16)
    noise = np.random.default_rng(0).uniform(-0.49 / 255, 0.49 / 255, packed.shape).astype(np.float32)
    np.testing.assert_array_equal(codec.unpack_depth6(packed + noise), ALL_U16)


def test_4_channel_round_trips_every_16_bit_value_and_rounds():
    np.testing.assert_array_equal(codec.unpack_depth4(codec.pack_depth4(ALL_U16)), ALL_U16)
    # round, not truncate: 0.99999 of a step up is the next value (diffusers' astype would truncate it)
    assert codec.unpack_depth4(np.array([[[(1 - 1e-5) / 65535]]], np.float32))[0, 0] == 1
    assert codec.unpack_depth4(np.array([[[1.2]], [[-0.3]]], np.float32)).ravel().tolist() == [65535, 0]


def test_encode_then_decode_rgbd_is_identity_for_both_layouts():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)
    depth = rng.integers(0, 65536, (8, 16), dtype=np.uint16)
    for channels in (6, 4):
        x = codec.encode_rgbd(rgb, depth, channels)
        assert x.shape == (1, channels, 8, 16) and x.min() >= -1 and x.max() <= 1
        _, rgb_u8, d = codec.decode_rgbd(x)
        np.testing.assert_array_equal(rgb_u8[0], rgb)
        np.testing.assert_array_equal(d[0], depth)


def test_16_bit_png_round_trip_and_8_bit_refused(tmp_path):
    codec.write_png(tmp_path / "d.png", ALL_U16)
    with Image.open(tmp_path / "d.png") as im:
        assert im.mode.startswith("I;16")
    np.testing.assert_array_equal(codec.read_depth(tmp_path / "d.png"), ALL_U16)
    np.testing.assert_array_equal(codec.read_depth(codec.encode_png(ALL_U16)), ALL_U16)
    Image.fromarray((ALL_U16 >> 8).astype(np.uint8)).save(tmp_path / "d8.png")
    with pytest.raises(InvalidArgument, match="16-bit grayscale PNG.*Convert"):
        codec.read_depth(tmp_path / "d8.png", "--init-depth")
    with pytest.raises(NotFound, match="no such file"):
        codec.read_depth(tmp_path / "missing.png")
    with pytest.raises(InvalidArgument, match="not a readable image"):
        codec.read_rgb(b"not a png at all")


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "x.png"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        codec.write_png(target, ALL_U16)
    assert list(tmp_path.iterdir()) == []


def test_size_mismatch_is_named():
    with pytest.raises(InvalidArgument, match="same size"):
        codec.encode_rgbd(np.zeros((8, 8, 3), np.uint8), np.zeros((4, 8), np.uint16), 6)


def test_depth_preview_is_8_bit_rgb():
    prev = codec.depth_preview(ALL_U16)
    assert prev.dtype == np.uint8 and prev.shape == (256, 256, 3)
    assert not np.array_equal(prev[0, 0], prev[-1, -1])
