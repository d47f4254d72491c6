"""Export the depth models (DPT-Large, ZoeDepth-N) to ONNX into the model repository, like the diffusion models.

    ldm3d export-depth --model Intel/dpt-large    --repository model_repository     # → depth_estimator/<N>/
    ldm3d export-depth --model Intel/zoedepth-nyu --repository model_repository     # → depth_reference/<N>/
    ldm3d depth --repository model_repository --repository-model depth_reference a.png --out reference/

The checkpoint's ``model_type`` picks the model name (``dpt`` → ``depth_estimator``, ``zoedepth`` →
``depth_reference``, shared DESIGN.md §2). Publishing is :func:`ldm3d.export.export.publish_version`: staging
folder, ONNX Runtime vs torch on inputs of another batch size and spatial size than traced, config.pbtxt, manifest,
atomic rename. The version folder also holds the checkpoint's ``config.json`` and ``preprocessor_config.json``, so
:func:`ldm3d.evaluation.depth_models.load_depth_model_from_repository` needs nothing but the repository.

Both graphs take ``pixel_values float32 [batch, 3, height, width]`` and return ``predicted_depth float32 [batch,
height, width]`` with all three axes dynamic. ZoeDepth needs one change for that: transformers' reassemble stage
concatenates the four backbone stages on the batch axis and splits them again with ``split(batch_size)``, which the
TorchScript exporter bakes in as a constant (a graph traced with batch 2 rejects batch 1). During export only, that
stage runs an equivalent per-stage loop (same ops per stage, bit-identical in torch); the parity check compares the
exported graph with the unmodified module.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import types
from pathlib import Path

import numpy as np

from ..errors import InvalidArgument
from ..models import hub
from ..repository.layout import ModelRepository
from .export import OPSET, ExportResult, check_new_version, publish_version

# the checkpoint files stored with each version (both are small JSON files)
DEPTH_ASSETS = ("config.json", "preprocessor_config.json")
# trace and check shapes (batch, height, width): DPT as LDM3D runs it (384²) then another batch and a non-square size;
# ZoeDepth at its processor's landscape box (384×512) with image + mirrored image, then one portrait image
TRACE_SHAPE = {"depth_estimator": (2, 384, 384), "depth_reference": (2, 384, 512)}
CHECK_SHAPE = {"depth_estimator": (1, 320, 320), "depth_reference": (1, 480, 384)}


def export_depth_checkpoint(
    checkpoint: str | Path,
    repository: str | Path,
    version: int | None = None,
    fp16: bool = False,
    opset: int = OPSET,
    tolerance: float | None = None,
) -> ExportResult:
    """Export a DPT or ZoeDepth checkpoint (folder in the hub layout, or hub id) as ``depth_estimator`` or
    ``depth_reference`` ``version`` (default: one above that model's highest version) of ``repository``.

    Raises ``InvalidArgument`` for a checkpoint that is not DPT/ZoeDepth or an existing version, ``NotFound`` for a
    missing folder, ``FailedPrecondition`` when the graph misses ``tolerance`` (nothing is published then).
    """
    from ..evaluation import depth_models
    from ..pipeline.spec import checkpoint_hash

    src = Path(str(checkpoint)).expanduser()
    if src.is_dir() and not (src / "config.json").is_file() and (src / "model_index.json").is_file():
        raise InvalidArgument(
            f"model={str(checkpoint)!r} is a diffusers pipeline (model_index.json), not a depth checkpoint: export "
            f"it with `ldm3d export`; `ldm3d export-depth` takes DPT ({hub.DPT}) or ZoeDepth ({hub.ZOEDEPTH}) "
            "folders or hub ids",
            field="model",
        )
    kind = depth_models.depth_kind(str(checkpoint))
    model = depth_models.RUNTIME_MODEL_NAMES[kind]

    root = Path(repository)
    root.mkdir(parents=True, exist_ok=True)
    repo = ModelRepository(root)
    if version is None:
        version = 1 + max(repo.versions(model), default=0) if model in repo.models() else 1
    version = check_new_version(repo, [model], version)
    _, module = depth_models.load_depth_module(str(checkpoint), kind=kind)
    processor = depth_models.load_processor(str(checkpoint), kind)
    folder = _local_folder(checkpoint)

    return publish_version(
        repo, model, version, _DepthGraph(module).eval(),
        trace_inputs={"pixel_values": _pixel_values(processor, TRACE_SHAPE[model], seed=0)},
        check_inputs={"pixel_values": _pixel_values(processor, CHECK_SHAPE[model], seed=1)},
        source={"checkpoint": str(checkpoint), "folder": str(folder), "sha256": checkpoint_hash(folder),
                "model_type": kind},
        fp16=fp16, opset=opset, tolerance=tolerance,
        assets=lambda staging: _copy_assets(folder, staging),
        export_extra={"processor": type(processor).__name__,
                      "traced_shape": {"pixel_values": [TRACE_SHAPE[model][0], 3, *TRACE_SHAPE[model][1:]]},
                      **({"reassemble_stage": "per-stage loop while exporting (keeps the batch axis dynamic)"}
                         if kind == "zoedepth" else {})},
        patch_export=(lambda: _per_stage_reassemble(module)) if kind == "zoedepth" else None,
    )  # fmt: skip


def _DepthGraph(module):
    import torch

    class DepthGraph(torch.nn.Module):
        """``pixel_values`` → ``predicted_depth``, exactly :func:`ldm3d.evaluation.depth_models.torch_predictor`."""

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return self.m(pixel_values=pixel_values).predicted_depth

    return DepthGraph(module)


def _pixel_values(processor, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Random ``pixel_values`` in the range the processor produces (uniform pixels in [0, 1] after its
    normalisation): these random-weight-friendly inputs keep the parity check about the graph, not about how a
    network behaves far outside its input range."""
    b, h, w = shape
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (b, 3, h, w))
    if getattr(processor, "do_normalize", True):
        mean = np.asarray(processor.image_mean, dtype=np.float64).reshape(1, 3, 1, 1)
        std = np.asarray(processor.image_std, dtype=np.float64).reshape(1, 3, 1, 1)
        x = (x - mean) / std
    return x.astype(np.float32)


@contextlib.contextmanager
def _per_stage_reassemble(module):
    """Run ZoeDepth's neck reassemble stage per backbone stage while exporting (see the module docstring)."""
    import torch

    stage = module.neck.reassemble_stage

    def forward(self, hidden_states, patch_height, patch_width):
        out = []
        for i, hidden_state in enumerate(hidden_states):
            batch_size = hidden_state.shape[0]
            cls_token, hidden_state = hidden_state[:, 0], hidden_state[:, 1:]
            num_channels = hidden_state.shape[-1]
            hidden_state = hidden_state.reshape(batch_size, patch_height, patch_width, num_channels)
            hidden_state = hidden_state.permute(0, 3, 1, 2).contiguous()
            if self.readout_type == "project":
                hidden_state = hidden_state.flatten(2).permute((0, 2, 1))
                readout = cls_token.unsqueeze(dim=1).expand_as(hidden_state)
                hidden_state = self.readout_projects[i](torch.cat((hidden_state, readout), -1))
            elif self.readout_type == "add":
                hidden_state = hidden_state + cls_token.unsqueeze(-1)
            hidden_state = hidden_state.permute(0, 2, 1).reshape(batch_size, -1, patch_height, patch_width)
            out.append(self.layers[i](hidden_state))
        return out

    stage.forward = types.MethodType(forward, stage)
    try:
        yield
    finally:
        del stage.forward  # back to the class's own forward


def _local_folder(checkpoint: str | Path) -> Path:
    """The folder holding the checkpoint's files: itself, or the hub cache snapshot a hub id was loaded from."""
    path = Path(str(checkpoint)).expanduser()
    if path.is_dir():
        return path
    from transformers.utils import cached_file

    return Path(cached_file(str(checkpoint), "config.json")).parent


def _copy_assets(folder: Path, dest: Path) -> None:
    for name in DEPTH_ASSETS:
        shutil.copy2(folder / name, dest / name)
    json.loads((dest / "preprocessor_config.json").read_text())  # a broken file fails the export, not a later load
