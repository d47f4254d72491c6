"""LDM3D platform: text → RGB + 16-bit depth, and RGBD panoramas → 360° stereo, as a library and gRPC services."""

__version__ = "0.1.0"
