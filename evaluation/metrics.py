"""The zero-shot metrics of DPT's Table 1, as pure functions of arrays or tensors.

| metric | benchmarks | definition (over valid pixels) |
|---|---|---|
| :func:`abs_rel` | ETH3D, Sintel | mean of ``|pred - gt| / gt`` (depth, metres) |
| :func:`delta_error` | KITTI, NYU, TUM | percentage (0-100) of pixels with ``max(pred/gt, gt/pred) > 1.25`` |
| :func:`whdr` | DIW | percentage (0-100) of annotated point pairs whose predicted ordinal relation is wrong |

All functions take one image ``[H, W]`` (or a batch ``[B, H, W]``, whose valid pixels are pooled);
the evaluation job calls them once per image and averages the per-image values, as MiDaS/DPT did.
:func:`align_scale_shift` (in :mod:`pipeline.alignment`, shared with the training loss) is re-exported here by
its public name.

Metric depth (DPT's Tables 2 and 3, fine-tuned models): :func:`depth_metrics` (``d1, d2, d3, abs_rel, sq_rel,
rmse, rmse_log, log10, silog``), :func:`depth_metric_sums` and :func:`depth_metrics_from_sums` live in
:mod:`pipeline.depth_metrics` (shared with the metric_depth task's validation) and are re-exported here by their
public names.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.alignment import align_scale_shift, apply_scale_shift
from pipeline.depth_metrics import DEPTH_METRICS, depth_metric_sums, depth_metrics, depth_metrics_from_sums

__all__ = ["align_scale_shift", "apply_scale_shift", "abs_rel", "delta_error", "whdr", "cap_and_invert",
           "DEPTH_METRICS", "depth_metrics", "depth_metric_sums", "depth_metrics_from_sums"]


def _valid_values(pred, gt, mask) -> tuple[np.ndarray, np.ndarray]:
    """The valid pixels of ``pred`` and ``gt`` as float64 vectors; raises when none is valid."""
    if isinstance(pred, torch.Tensor):
        pred = pred.detach().cpu().numpy()
    if isinstance(gt, torch.Tensor):
        gt = gt.detach().cpu().numpy()
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    pred, gt, mask = np.asarray(pred, np.float64), np.asarray(gt, np.float64), np.asarray(mask, bool)
    if pred.shape != gt.shape or pred.shape != mask.shape:
        raise ValueError(f"shapes differ: pred {pred.shape}, gt {gt.shape}, mask {mask.shape}")
    p, g = pred[mask], gt[mask]
    if p.size == 0:
        raise ValueError("no valid pixels: the metric is undefined")
    if np.any(g <= 0) or not np.all(np.isfinite(g)):
        raise ValueError("ground-truth depth must be finite and > 0 on every valid pixel")
    return p, g


def abs_rel(pred_depth, gt_depth, mask) -> float:
    """Mean absolute relative error ``mean(|pred - gt| / gt)`` over valid pixels (a fraction, not %).

    Args:
        pred_depth: predicted depth (after alignment and capping), ``[H, W]`` or ``[B, H, W]``.
        gt_depth: ground-truth depth, same shape, > 0 where ``mask``.
        mask: bool, same shape; True on valid pixels.
    """
    p, g = _valid_values(pred_depth, gt_depth, mask)
    return float(np.mean(np.abs(p - g) / g))


def delta_error(pred_depth, gt_depth, mask, threshold: float = 1.25) -> float:
    """Percentage (0-100) of valid pixels with ``max(pred / gt, gt / pred) > threshold``.

    This is the error form of the usual delta accuracy (Table 1 reports it for KITTI, NYU and TUM);
    a non-positive predicted depth counts as an error.
    """
    p, g = _valid_values(pred_depth, gt_depth, mask)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(p / g, g / p)
    bad = ~(ratio <= threshold) | (p <= 0)  # NaN ratios count as errors
    return float(100.0 * np.mean(bad))


def whdr(pred_disparity, pairs) -> float:
    """Weighted Human Disagreement Rate (all weights 1): percentage (0-100) of pairs predicted wrongly.

    Args:
        pred_disparity: ``[H, W]`` predicted disparity (larger = closer); any positive scale.
        pairs: ``[N, 5]`` rows ``(y1, x1, y2, x2, relation)``, 0-based integer pixel coordinates;
            relation is +1 when point 1 is closer than point 2 and -1 when it is farther.
    A predicted tie counts as a disagreement (the annotators never answered "equal" in DIW).
    """
    if isinstance(pred_disparity, torch.Tensor):
        pred_disparity = pred_disparity.detach().cpu().numpy()
    disp = np.asarray(pred_disparity, np.float64)
    pairs = np.asarray(pairs)
    if disp.ndim != 2:
        raise ValueError(f"whdr: pred_disparity must be [H, W], got {disp.shape}")
    if pairs.ndim != 2 or pairs.shape[1] != 5 or len(pairs) == 0:
        raise ValueError(f"whdr: pairs must be a non-empty [N, 5] array, got {pairs.shape}")
    y1, x1, y2, x2 = (pairs[:, i].astype(np.int64) for i in range(4))
    relation = pairs[:, 4].astype(np.int64)
    if not np.all(np.isin(relation, (-1, 1))):
        raise ValueError("whdr: relation must be +1 (point 1 closer) or -1 (point 1 farther)")
    h, w = disp.shape
    for name, coord, limit in (("y1", y1, h), ("x1", x1, w), ("y2", y2, h), ("x2", x2, w)):
        if np.any((coord < 0) | (coord >= limit)):
            raise ValueError(f"whdr: {name} outside the {h}x{w} prediction")
    predicted = np.sign(disp[y1, x1] - disp[y2, x2])  # +1: point 1 has larger disparity, i.e. closer
    return float(100.0 * np.mean(predicted != relation))


def cap_and_invert(aligned_disparity, max_depth: float | None):
    """Depth from aligned disparity, capped at ``max_depth`` metres: ``1 / max(disp, 1 / max_depth)``.

    Capping in disparity space also catches aligned disparities <= 0 (points "behind infinity"),
    which would otherwise invert to negative or infinite depth. Without a cap, non-positive
    disparities become ``inf`` depth, which every metric counts as an error.
    """
    if isinstance(aligned_disparity, torch.Tensor):
        aligned_disparity = aligned_disparity.detach().cpu().numpy()
    disp = np.asarray(aligned_disparity, np.float64)
    if max_depth is not None:
        disp = np.maximum(disp, 1.0 / max_depth)
    with np.errstate(divide="ignore"):
        return np.where(disp > 0, 1.0 / np.where(disp > 0, disp, 1.0), np.inf)
