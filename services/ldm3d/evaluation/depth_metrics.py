"""The LDM3D paper's depth protocol (§4.3): align relative disparity to a metric reference, then AbsRel and RMSE.

    from ldm3d.evaluation.depth_metrics import depth_metrics
    m = depth_metrics(pred_u16, reference_metres, samples=100_000, seed=0)
    print(m.abs_rel, m.rmse)

LDM3D's depth (and DPT's) is *relative inverse depth*: larger = nearer, known only up to an unknown scale and shift.
The reference (ZoeDepth-N in the paper) is metric depth in metres. Per image:

1. **Valid pixels**: prediction finite and ``>= 0`` (0 is "infinitely far" in disparity), reference finite and ``> 0``
   (its inverse must exist); only pixels valid in *both* maps take part in anything below.
2. **Reference to disparity**: ``r = 1 / d_ref``.
3. **Fit**: ``s, t = argmin Σ (s·p + t − r)²`` by ordinary least squares on a random sample of ``samples`` valid
   pixels drawn without replacement with ``numpy.random.default_rng(seed)`` (all valid pixels when there are fewer). The
   closed form uses centred sums in float64: ``s = Σ(p−p̄)(r−r̄) / Σ(p−p̄)²``, ``t = r̄ − s·p̄``.
4. **Back to depth**: ``d_aligned = 1 / (s·p + t)`` over *all* valid pixels (not just the sample).
5. **Metrics** over those pixels: ``AbsRel = mean(|d_aligned − d_ref| / d_ref)``, ``RMSE = sqrt(mean((d_aligned −
   d_ref)²))`` in metres. A data set's numbers are the means of the per-image values (:func:`mean_metrics`).

Degenerate cases, each handled explicitly (a metric is never NaN):

* maps of different sizes, or not 2-D → ``InvalidArgument`` (field ``reference``);
* fewer than 2 pixels valid in both maps → ``InvalidArgument`` (field ``reference``, or ``pred`` when the prediction
  is the one with no valid pixels);
* prediction constant over the sampled pixels (``Σ(p−p̄)² = 0``) → ``InvalidArgument`` (field ``pred``): no scale
  can be fitted. A constant *reference* is not an error: the fit gives ``s = 0``, ``t = r̄`` and the aligned map
  equals the reference, so both metrics are 0; nothing of the prediction is being measured then, which
  ``scale == 0`` in the result makes visible;
* aligned disparity ``s·p + t <= 0`` at some valid pixels (their depth would be negative or infinite) → those
  pixels are excluded from the metrics and counted in ``nonpositive_pixels``. At least one pixel always remains:
  the fitted line passes through the sample means, so the sampled aligned disparities average ``r̄ > 0``;
* a negative ``scale`` is reported as it is: it means the prediction orders depth the other way round
  (larger = farther), i.e. it is not disparity-like.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InvalidArgument

# The paper does not state its sample size; 100k pixels pins scale and shift to ~1e-3 relative on real maps while
# keeping the fit cheap, and a 512×512 image (262k pixels) still gets a genuine sample.
DEFAULT_SAMPLES = 100_000
DEFAULT_SEED = 0
MIN_FIT_PIXELS = 2  # a line needs two points


@dataclass(frozen=True)
class DepthMetrics:
    """The result for one image, with the settings that produced it (so a number can be reproduced)."""

    abs_rel: float  # mean(|d_aligned − d_ref| / d_ref) over evaluated pixels
    rmse: float  # sqrt(mean((d_aligned − d_ref)²)) in the reference's unit (metres)
    scale: float  # s in r ≈ s·p + t (disparity space)
    shift: float  # t
    valid_pixels: int  # pixels valid in both maps
    sampled_pixels: int  # pixels the fit used (min(samples, valid_pixels))
    evaluated_pixels: int  # valid pixels with positive aligned disparity: where the metrics are computed
    nonpositive_pixels: int  # valid pixels excluded because s·p + t <= 0
    samples: int  # requested sample size
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


def valid_mask(pred: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Pixels valid in both maps: prediction finite and ``>= 0``, reference finite and ``> 0``."""
    _check_shapes(pred, reference)
    p = np.asarray(pred, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(p) & (p >= 0) & np.isfinite(r) & (r > 0)


def fit_scale_shift(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Least-squares ``s, t`` minimising ``Σ (s·pred + t − target)²`` over two 1-D arrays of equal length.

    Raises ``InvalidArgument`` (field ``pred``) when ``pred`` has fewer than 2 values or is constant.
    """
    p = np.asarray(pred, dtype=np.float64).ravel()
    r = np.asarray(target, dtype=np.float64).ravel()
    if p.shape != r.shape:
        raise InvalidArgument(f"pred has {p.size} values but target has {r.size}", field="pred")
    if p.size < MIN_FIT_PIXELS:
        raise InvalidArgument(
            f"pred: {p.size} pixel(s) to fit scale and shift on; at least {MIN_FIT_PIXELS} are needed", field="pred"
        )
    p_mean, r_mean = p.mean(), r.mean()
    dp = p - p_mean
    var = float(dp @ dp)
    # Relative test: a constant map stored in float may differ from its mean by rounding only.
    if var <= (np.finfo(np.float64).eps * max(abs(p_mean), 1.0)) ** 2 * p.size:
        raise InvalidArgument(
            f"pred is constant ({p_mean:g}) over the {p.size} pixels used for the fit: no scale can be fitted; "
            "check that the prediction is a real depth map (not blank) or evaluate another image",
            field="pred",
        )
    scale = float(dp @ (r - r_mean)) / var
    return scale, float(r_mean - scale * p_mean)


def depth_metrics(
    pred: np.ndarray,
    reference: np.ndarray,
    *,
    samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
) -> DepthMetrics:
    """Align ``pred`` (disparity-like, larger = nearer, any unit) to ``reference`` (metric depth) and score it.

    Args:
        pred: ``[H, W]`` prediction, e.g. LDM3D's ``uint16`` depth PNG. Negative or non-finite values are invalid.
        reference: ``[H, W]`` metric depth (metres). Non-finite, zero or negative values are invalid.
        samples: how many valid pixels the scale/shift fit uses (all of them when fewer are valid); ``>= 2``.
        seed: seed of the pixel sample (``numpy.random.default_rng``).

    See the module docstring for the protocol and for what each degenerate case raises or excludes.
    """
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < MIN_FIT_PIXELS:
        raise InvalidArgument(f"samples={samples!r} is invalid: use an integer >= {MIN_FIT_PIXELS}", field="samples")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgument(f"seed={seed!r} is invalid: use an integer >= 0", field="seed")
    mask = valid_mask(pred, reference)
    p = np.asarray(pred, dtype=np.float64)[mask]
    d_ref = np.asarray(reference, dtype=np.float64)[mask]
    if p.size < MIN_FIT_PIXELS:
        field = "pred" if not _any_valid_pred(pred) else "reference"
        raise InvalidArgument(
            f"{field}: only {p.size} pixel(s) are valid in both maps (prediction finite and >= 0, reference finite "
            f"and > 0); at least {MIN_FIT_PIXELS} are needed. Check the reference's unit/scale and its invalid-value "
            "convention",
            field=field,
        )
    r = 1.0 / d_ref

    n_fit = min(int(samples), p.size)
    if n_fit < p.size:
        idx = np.random.default_rng(int(seed)).choice(p.size, size=n_fit, replace=False)
        scale, shift = fit_scale_shift(p[idx], r[idx])
    else:
        scale, shift = fit_scale_shift(p, r)

    aligned_disp = scale * p + shift
    # Non-positive aligned disparity has no depth (1/0 or negative): exclude and count those pixels. Some remain:
    # least squares passes through the sample means, so the sampled aligned values average mean(r) > 0.
    keep = aligned_disp > 0
    n_eval = int(keep.sum())
    d_aligned = 1.0 / aligned_disp[keep]
    d_ref = d_ref[keep]
    err = d_aligned - d_ref
    return DepthMetrics(
        abs_rel=float(np.mean(np.abs(err) / d_ref)),
        rmse=float(np.sqrt(np.mean(err * err))),
        scale=float(scale),
        shift=float(shift),
        valid_pixels=int(p.size),
        sampled_pixels=int(n_fit),
        evaluated_pixels=n_eval,
        nonpositive_pixels=int(p.size - n_eval),
        samples=int(samples),
        seed=int(seed),
    )


def mean_metrics(results: Iterable[DepthMetrics]) -> dict:
    """Data-set numbers: the means of per-image AbsRel and RMSE (how the paper's table averages), plus the count."""
    results = list(results)
    if not results:
        raise InvalidArgument("no per-image results to average: evaluate at least one image", field="images")
    return {
        "abs_rel": float(np.mean([m.abs_rel for m in results])),
        "rmse": float(np.mean([m.rmse for m in results])),
        "images": len(results),
    }


def _check_shapes(pred: np.ndarray, reference: np.ndarray) -> None:
    ps, rs = np.shape(pred), np.shape(reference)
    if len(ps) != 2 or len(rs) != 2:
        raise InvalidArgument(
            f"depth maps must be 2-D [H, W]; got pred {ps} and reference {rs}",
            field="pred" if len(ps) != 2 else "reference",
        )
    if ps != rs:
        raise InvalidArgument(
            f"pred is {ps[1]}x{ps[0]} but reference is {rs[1]}x{rs[0]} (WxH): compute the reference depth from the "
            "same RGB image at the same size",
            field="reference",
        )


def _any_valid_pred(pred: np.ndarray) -> bool:
    p = np.asarray(pred, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return bool(np.any(np.isfinite(p) & (p >= 0)))


def aligned_depth(pred: np.ndarray, reference: np.ndarray, m: DepthMetrics) -> np.ndarray:
    """The prediction in the reference's metres, ``1 / (scale·pred + shift)``, where the metrics measured it
    (valid in both maps, positive aligned disparity); 0 elsewhere, never NaN or inf. float32 [H, W].
    """
    disp = m.scale * np.asarray(pred, dtype=np.float64) + m.shift
    keep = valid_mask(pred, reference) & (disp > 0)
    out = np.zeros(np.shape(pred), dtype=np.float32)
    with np.errstate(over="ignore"):
        vals = (1.0 / disp[keep]).astype(np.float32)
    out[keep] = np.where(np.isfinite(vals), vals, 0.0)
    return out
