"""The model repository's write side: checkpoints → ONNX version folders (torch, onnx and onnxruntime on import).

    ldm3d export --model demo/tiny --repository demo/repository               # text_encoder, unet, vae_*/<N>/
    ldm3d export-depth --model Intel/dpt-large --repository demo/repository   # depth_estimator/<N>/

:mod:`.export` holds the one publishing path (:func:`~.export.publish_version`: staging folder, parity check
against torch, config.pbtxt, manifest, atomic rename) and the diffusion models' export; :mod:`.depth_export` the
depth models'. Reading a repository (layout, configs, manifests) is :mod:`ldm3d.repository`, which never imports
this package; imports go ``export → repository``, ``export → runtime``, ``export → pipeline.spec``.
"""

from .depth_export import export_depth_checkpoint
from .export import ExportResult, export_checkpoint, export_models, publish_version

__all__ = ["ExportResult", "export_checkpoint", "export_depth_checkpoint", "export_models", "publish_version"]
