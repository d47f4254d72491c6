"""Evaluation: the paper's depth protocol (§4.3) and the depth models it uses.

* :mod:`ldm3d.evaluation.depth_metrics` – align disparity-like depth to a metric reference by least-squares scale
  and shift in disparity space, then AbsRel and RMSE. Pure numpy; imported here.
* :mod:`ldm3d.evaluation.depth_models` – DPT-Large (LDM3D's 16-bit training depth) and ZoeDepth-N (the metric
  reference), plus tiny random-weight checkpoints for tests. Needs torch/transformers, so import it explicitly.

Command line: ``ldm3d depth`` and ``ldm3d depth-metrics`` (see docs/evaluation.md).
"""

from .depth_metrics import DepthMetrics, aligned_depth, depth_metrics, fit_scale_shift, mean_metrics, valid_mask

__all__ = ["DepthMetrics", "aligned_depth", "depth_metrics", "fit_scale_shift", "mean_metrics", "valid_mask"]
