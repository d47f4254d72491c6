"""The one model interface every part of the platform uses to reach a model.

Three implementations, picked by :func:`ldm3d.runtime.create_runtime`:

* ``torch``    – the diffusers/transformers modules of a checkpoint folder, in-process (parity and debugging);
* ``embedded`` – ONNX Runtime sessions in-process over a Triton model repository (the serving default);
* ``triton``   – a Triton Inference Server reached with ``tritonclient.grpc``.

Tensor names are the ONNX graph names, which are also the ``config.pbtxt`` names (see :data:`MODEL_IO`).
Inputs and outputs are numpy arrays; every runtime returns float32 outputs whatever it computes in.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "float32", "int64", ...
    shape: tuple[int | str, ...]  # symbolic dims are strings ("batch", "height", ...)


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: int | None  # None for the torch runtime (a checkpoint folder has no versions)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    platform: str = ""
    extra: dict = field(default_factory=dict)


# The fixed model names and their tensor contract (ONNX names == config.pbtxt names). ``D`` is the text hidden
# size (768 for SD v1.4), ``C`` the VAE's image channels (6 or 4), ``L`` its latent channels (4), h = H / 8.
MODEL_IO: dict[str, dict[str, dict[str, TensorSpec]]] = {
    "text_encoder": {
        "inputs": {"input_ids": TensorSpec("input_ids", "int64", ("batch", "sequence"))},
        "outputs": {"last_hidden_state": TensorSpec("last_hidden_state", "float32", ("batch", "sequence", "D"))},
    },
    "unet": {
        "inputs": {
            "sample": TensorSpec("sample", "float32", ("batch", "L", "h", "w")),
            "timestep": TensorSpec("timestep", "float32", ("batch",)),
            "encoder_hidden_states": TensorSpec("encoder_hidden_states", "float32", ("batch", "sequence", "D")),
        },
        "outputs": {"out_sample": TensorSpec("out_sample", "float32", ("batch", "L", "h", "w"))},
    },
    "vae_decoder": {
        "inputs": {"latent_sample": TensorSpec("latent_sample", "float32", ("batch", "L", "h", "w"))},
        "outputs": {"sample": TensorSpec("sample", "float32", ("batch", "C", "H", "W"))},
    },
    "vae_encoder": {
        "inputs": {"sample": TensorSpec("sample", "float32", ("batch", "C", "H", "W"))},
        # mean and log-variance of the diagonal Gaussian, concatenated on channels (diffusers' "moments")
        "outputs": {"latent_parameters": TensorSpec("latent_parameters", "float32", ("batch", "2L", "h", "w"))},
    },
    # depth evaluation (ldm3d.evaluation.depth_models): DPT-Large (relative inverse depth) and ZoeDepth-N (metres);
    # pixel_values as the checkpoint's image processor makes them, batch and spatial axes dynamic
    "depth_estimator": {
        "inputs": {"pixel_values": TensorSpec("pixel_values", "float32", ("batch", 3, "height", "width"))},
        "outputs": {"predicted_depth": TensorSpec("predicted_depth", "float32", ("batch", "height", "width"))},
    },
    "depth_reference": {
        "inputs": {"pixel_values": TensorSpec("pixel_values", "float32", ("batch", 3, "height", "width"))},
        "outputs": {"predicted_depth": TensorSpec("predicted_depth", "float32", ("batch", "height", "width"))},
    },
}

DIFFUSION_MODELS = ("text_encoder", "unet", "vae_decoder", "vae_encoder")
DEPTH_MODELS = ("depth_estimator", "depth_reference")


class ModelRuntime(abc.ABC):
    """Run named models on named numpy tensors. Implementations are thread-safe for concurrent ``infer`` calls."""

    #: "torch", "embedded" or "triton"
    kind: str = ""

    @abc.abstractmethod
    def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], version: int | None = None
    ) -> dict[str, np.ndarray]:
        """Run ``model`` (``version`` or the current one) and return its outputs by name.

        Raises ``NotFound`` for an unknown model or version, ``InvalidArgument`` for inputs that do not match the
        model's tensor specs, ``Unavailable`` when the backing server is unreachable.
        """

    @abc.abstractmethod
    def ready(self, model: str, version: int | None = None) -> bool:
        """Whether ``model`` (at ``version``) can serve requests now."""

    @abc.abstractmethod
    def metadata(self, model: str, version: int | None = None) -> ModelMetadata:
        """Input/output specs and the concrete version that ``version=None`` resolves to."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions, connections and shared memory."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
