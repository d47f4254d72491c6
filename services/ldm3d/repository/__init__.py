"""The model repository's read side: Triton's layout, ``config.pbtxt``, per-version manifests (no torch imports).

    <repository>/<model>/config.pbtxt          Triton config (onnxruntime_onnx), the tensor names of MODEL_IO
    <repository>/<model>/<version>/model.onnx  (+ model.onnx.data when the graph is over 2 GB)
    <repository>/<model>/<version>/manifest.json   source checkpoint + hash, sha256 of every file, export settings,
                                                   parity error, date
    <repository>/<model>/<version>/...         the checkpoint's configs/tokenizer (``layout.ASSETS``), read by
                                               :func:`ldm3d.pipeline.spec.spec_from_repository`
    <repository>/releases.json                 releases: one version of each diffusion model that serve together,
                                               the current one and a canary (:mod:`.releases`; small atomic writes
                                               under a lock are the one exception to "read side")

Writing versions (ONNX export, parity check, publishing) is :mod:`ldm3d.export`, which imports this package and
never the other way round; the runtimes, the pipeline's spec and the servers read through it.
"""

from .config import ModelConfig, TensorConfig, read_config
from .layout import ModelRepository, VersionInfo
from .manifest import FileProblem

__all__ = ["FileProblem", "ModelConfig", "ModelRepository", "TensorConfig", "VersionInfo", "read_config"]
