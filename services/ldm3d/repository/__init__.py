"""The model repository: ONNX exports in Triton's layout, ``config.pbtxt``, per-version manifests and assets.

    <repository>/<model>/config.pbtxt          Triton config (onnxruntime_onnx), the tensor names of MODEL_IO
    <repository>/<model>/<version>/model.onnx  (+ model.onnx.data when the graph is over 2 GB)
    <repository>/<model>/<version>/manifest.json   source checkpoint + hash, sha256 of every file, export settings,
                                                   parity error, date
    <repository>/<model>/<version>/...         the checkpoint's configs/tokenizer, read by spec_from_repository
"""

from .config import ModelConfig, TensorConfig, read_config
from .depth_export import export_depth_checkpoint
from .export import ExportResult, export_checkpoint, export_models, spec_from_repository
from .layout import ModelRepository, VersionInfo
from .manifest import FileProblem

__all__ = ["ExportResult", "FileProblem", "ModelConfig", "ModelRepository", "TensorConfig", "VersionInfo",
           "export_checkpoint", "export_depth_checkpoint", "export_models", "read_config", "spec_from_repository"]
