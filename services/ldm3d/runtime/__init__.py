"""Model runtimes behind one interface (:class:`ModelRuntime`); :func:`create_runtime` is the short factory."""

from __future__ import annotations

from .base import DIFFUSION_MODELS, MODEL_IO, ModelMetadata, ModelRuntime, TensorSpec

__all__ = ["DIFFUSION_MODELS", "MODEL_IO", "ModelMetadata", "ModelRuntime", "TensorSpec", "create_runtime"]


def create_runtime(kind: str, *, checkpoint=None, repository=None, triton_url=None, **options) -> ModelRuntime:
    """``torch`` needs ``checkpoint``; ``embedded`` needs ``repository``; ``triton`` needs ``triton_url``."""
    from ..errors import InvalidArgument

    if kind == "torch":
        from .torch_runtime import TorchRuntime, resolve_checkpoint

        return TorchRuntime.from_checkpoint(resolve_checkpoint(checkpoint))
    if kind == "embedded":
        from .embedded import EmbeddedRuntime

        return EmbeddedRuntime(repository, **options)
    if kind == "triton":
        from .triton import TritonRuntime

        return TritonRuntime(triton_url, repository=repository, **options)
    raise InvalidArgument(f"runtime={kind!r} is unknown: use torch, embedded or triton", field="runtime")
