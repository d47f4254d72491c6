"""Seamless panoramas: every padded convolution of the U-Net and the VAE pads *circularly along x* (the column left
of the first is the last) and with zeros along y, so an equirectangular image's left and right edges meet.

    from ldm3d.models.seamless import make_switchable, seamless_padding
    make_switchable(unet); make_switchable(vae)     # once, at load: plain convolutions until switched on
    with seamless_padding(True):                    # per call, in the calling thread (a context variable)
        out = unet(sample, t, encoder_hidden_states=emb)

Why it works: a convolution with circular x padding, group norms (global statistics), attention (permutation
equivariant) and nearest upsampling all commute with a horizontal roll, so the whole network does too for rolls
that are a multiple of its total downsampling (DESIGN.md §7; ``tests/models/test_seamless.py`` checks it).

The wrap is written as ``torch.cat([x[..., -p:], x, x[..., :p]], dim=-1)``, then a constant zero pad along y and the
convolution without padding: it exports to ONNX as Slice + Concat + Pad(constant) + Conv, never as torch's circular
``pad`` op, whose export has been wrong at several opsets.

Switching is per call, not per model: the patched convolutions read a context variable, so a torch runtime serves
seamless and plain requests side by side (each thread/asyncio task has its own context). With the switch off, a
patched convolution runs torch's own code path unchanged (bit-identical to the unpatched module).
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

# torch is imported inside the functions: the pipeline imports this module on the ONNX Runtime path too

# True/False while a call must (not) pad circularly along x, set by `seamless_padding`; None = nobody said, which
# patched convolutions treat as False and the torch runtime resolves per call by the image's aspect (2:1 → on)
_ACTIVE: ContextVar[bool | None] = ContextVar("ldm3d_seamless_active", default=None)


def wrap_x(x, left: int, right: int):
    """``x`` (a tensor ``[..., W]``) with ``left`` columns from its right edge prepended and ``right`` from its left
    edge appended."""
    import torch

    parts = ([x[..., -left:]] if left else []) + [x] + ([x[..., :right]] if right else [])
    return torch.cat(parts, dim=-1) if len(parts) > 1 else x


class _SeamlessConv:
    """Mixin for a Conv2d subclass: circular x padding while switched on; torch's own forward otherwise."""

    _ldm3d_seamless = True

    def _conv_forward(self, input, weight, bias):  # noqa: A002 - torch's own signature
        if not _ACTIVE.get():
            return super()._conv_forward(input, weight, bias)
        import torch.nn.functional as F

        py, px = self.padding
        x = wrap_x(input, px, px)
        if py:  # zeros along y, padded here: torch's CPU conv takes a slow kernel for asymmetric (py, 0) padding
            x = F.pad(x, (0, 0, py, py), mode="constant", value=0.0)
        return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)


class _SeamlessDownsample:
    """Mixin for diffusers' ``Downsample2D`` with ``padding=0`` (the VAE encoder's): it pads one zero column on the
    right and one row at the bottom before a stride-2 convolution; seamless, that column is the first column."""

    _ldm3d_seamless = True

    def forward(self, hidden_states, *args, **kwargs):
        if not _ACTIVE.get() or not (self.use_conv and self.padding == 0):
            return super().forward(hidden_states, *args, **kwargs)
        import torch.nn.functional as F

        if self.norm is not None:
            hidden_states = self.norm(hidden_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        hidden_states = F.pad(wrap_x(hidden_states, 0, 1), (0, 0, 0, 1), mode="constant", value=0.0)
        return self.conv(hidden_states)


_SUBCLASSES: dict[type, type] = {}


def _swap_class(module, mixin: type) -> None:
    cls = type(module)
    if getattr(cls, "_ldm3d_seamless", False):
        return
    sub = _SUBCLASSES.get(cls)
    if sub is None:
        # a subclass per concrete class keeps isinstance(), state_dict keys and pickling as they were
        sub = _SUBCLASSES[cls] = type(f"Seamless{cls.__name__}", (mixin, cls), {"__module__": __name__})
    module.__class__ = sub


def make_switchable(model) -> int:
    """Patch every zero-padded ``Conv2d`` (x padding > 0) and every ``Downsample2D(padding=0)`` of ``model`` in
    place so that :func:`seamless_padding` switches them to circular x padding. Idempotent; returns how many
    modules are switchable. Convolutions with string padding ('same'/'valid') or another padding mode are left as
    they are (none in LDM3D's U-Net or VAE)."""
    from torch import nn

    try:
        from diffusers.models.downsampling import Downsample2D
    except ImportError:  # pragma: no cover - diffusers is a core dependency
        Downsample2D = ()
    n = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and isinstance(m.padding, tuple) \
                and m.padding[1] > 0:
            _swap_class(m, _SeamlessConv)
            n += 1
        elif Downsample2D and isinstance(m, Downsample2D) and m.use_conv and m.padding == 0:
            _swap_class(m, _SeamlessDownsample)
            n += 1
    return n


def restore(model) -> None:
    """Undo :func:`make_switchable` (the modules get their original classes back)."""
    for m in model.modules():
        cls = type(m)
        if getattr(cls, "_ldm3d_seamless", False) and cls.__module__ == __name__:
            m.__class__ = cls.__mro__[2]  # (SeamlessX, mixin, original, ...)


@contextlib.contextmanager
def seamless_padding(enabled: bool = True):
    """Within the block, switchable convolutions (in this thread or task) pad circularly along x if ``enabled``."""
    token = _ACTIVE.set(bool(enabled))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def requested() -> bool | None:
    """What the innermost :func:`seamless_padding` block asked for; None outside any."""
    return _ACTIVE.get()


def is_panorama_size(height: int, width: int) -> bool:
    """The default rule for ``seamless``: on for an equirectangular 2:1 image (width == 2 × height)."""
    return int(width) == 2 * int(height)
