"""The metric depth errors and accuracies of DPT's Tables 2 and 3 (Eigen et al. 2014's set as BTS computes it), as
pure functions of arrays or tensors in metres.

:func:`depth_metrics` gives ``d1, d2, d3, abs_rel, sq_rel, rmse, rmse_log, log10, silog`` of each image, averaged
over the images of a batch, and :func:`depth_metric_sums` / :func:`depth_metrics_from_sums` the same as sums that
add up exactly across workers and ranks (see :func:`depth_metric_sums` for why per image).

It lives in pipeline/ because training/ (the metric_depth task's validation) and evaluation/ (the protocols of
:mod:`evaluation.metric_protocol`) both use it and neither may import the other; ``evaluation.metrics`` re-exports
it under its public names (DESIGN.md).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["DEPTH_METRICS", "depth_metrics", "depth_metric_sums", "depth_metrics_from_sums"]

# In the column order of BTS's eval_with_pngs.py, whose output the paper's Tables 2 and 3 report.
DEPTH_METRICS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")


def _as_batch(x, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(x))
    t = t[None] if t.ndim == 2 else t
    if t.ndim != 3:
        raise ValueError(f"depth metrics: {name} must be [H, W] or [B, H, W], got {tuple(t.shape)}")
    return t


def _per_image(pred_depth, gt_depth, mask) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each metric of each image ``[B]`` (float64) and each image's valid pixel count ``[B]``."""
    m = _as_batch(mask, "mask").to(torch.bool)
    p = _as_batch(pred_depth, "pred_depth").to(device=m.device, dtype=torch.float64)
    g = _as_batch(gt_depth, "gt_depth").to(device=m.device, dtype=torch.float64)
    if p.shape != g.shape or p.shape != m.shape:
        raise ValueError(f"depth metrics: shapes differ: pred {tuple(p.shape)}, gt {tuple(g.shape)}, "
                         f"mask {tuple(m.shape)}")
    if not bool(torch.all(torch.isfinite(g[m]) & (g[m] > 0))):
        raise ValueError("depth metrics: ground-truth depth must be finite and > 0 on every valid pixel")
    if not bool(torch.all(torch.isfinite(p[m]) & (p[m] > 0))):
        raise ValueError("depth metrics: predicted depth must be finite and > 0 on every valid pixel "
                         "(clip it to the protocol's depth range first)")
    # Outside the mask anything may be there (0, NaN): 1 keeps ratios and logs finite; the mask zeroes them.
    p, g = torch.where(m, p, 1.0), torch.where(m, g, 1.0)
    weight = m.to(torch.float64)
    count = weight.sum((1, 2))

    def mean(values: torch.Tensor) -> torch.Tensor:
        return (values * weight).sum((1, 2)) / count.clamp(min=1)

    ratio = torch.maximum(p / g, g / p)
    log_error = torch.log(p) - torch.log(g)
    per_image = {
        "d1": mean((ratio < 1.25).double()),
        "d2": mean((ratio < 1.25 ** 2).double()),
        "d3": mean((ratio < 1.25 ** 3).double()),
        "abs_rel": mean((p - g).abs() / g),
        "sq_rel": mean((p - g) ** 2 / g),
        "rmse": mean((p - g) ** 2).sqrt(),
        "rmse_log": mean(log_error ** 2).sqrt(),
        "log10": mean((torch.log10(p) - torch.log10(g)).abs()),
        # 100 * the standard deviation of the log error (lambda = 1); clamp: rounding can make it -1e-17
        "silog": 100.0 * (mean(log_error ** 2) - mean(log_error) ** 2).clamp(min=0).sqrt(),
    }
    return per_image, count


def depth_metric_sums(pred_depth, gt_depth, mask) -> dict[str, torch.Tensor]:
    """Additive form of :func:`depth_metrics`: float64 0-dim tensors (on the mask's device) by name.

    ``images`` counts the images with at least one valid pixel, ``skipped`` those without (left out of every
    metric), and each of :data:`DEPTH_METRICS` is the sum over the scored images of that image's value. Sums
    from any split of the images add up to the sums of the whole (``{k: a[k] + b[k]}``, or an all-reduce per
    name), and :func:`depth_metrics_from_sums` divides by ``images``: the same number on any number of workers.

    Per image, then averaged over images: the paper's Tables 2 and 3 come from BTS's ``eval_with_pngs.py``
    (isl-org/DPT EVALUATION.md), which computes every metric on each image's valid pixels and averages the
    per-image values (``rmse`` is the mean over images of each image's root mean square; ``silog`` each image's
    ``100 * sqrt(mean(e^2) - mean(e)^2)``, ``e = log pred - log gt``), as Depth-Anything-V2's metric
    evaluation does too. Pooling every pixel of the test set instead weighs images by their valid area and
    gives other numbers, so it is not offered.
    """
    per_image, count = _per_image(pred_depth, gt_depth, mask)
    scored = count > 0
    sums = {name: values[scored].sum() for name, values in per_image.items()}
    sums["images"] = scored.sum().to(torch.float64)
    sums["skipped"] = (~scored).sum().to(torch.float64)
    return sums


def depth_metrics_from_sums(sums) -> dict[str, float]:
    """The metrics of :func:`depth_metric_sums` (or of their sum over workers): each sum over ``images``."""
    images = float(sums["images"])
    if images == 0:
        raise ValueError("depth metrics: no image with a valid pixel: the metrics are undefined")
    return {name: float(sums[name]) / images for name in DEPTH_METRICS}


def depth_metrics(pred_depth, gt_depth, mask) -> dict[str, float]:
    """Metric depth errors and accuracies of Eigen et al. over the valid pixels of each image.

    Args:
        pred_depth: predicted depth in metres, ``[H, W]`` or ``[B, H, W]``, array or tensor; finite and > 0 on
            valid pixels (a protocol clips it to its depth range first: :mod:`evaluation.metric_protocol`).
        gt_depth: ground-truth depth in metres, same shape, finite and > 0 where ``mask``.
        mask: bool, same shape; True on valid pixels.

    Returns ``{"d1", "d2", "d3"}``: fractions (0-1) of valid pixels with ``max(pred/gt, gt/pred)`` below 1.25,
    1.25^2, 1.25^3; ``abs_rel`` mean ``|pred - gt| / gt``; ``sq_rel`` mean ``(pred - gt)^2 / gt`` (metres);
    ``rmse`` (metres) and ``rmse_log`` root mean squares of ``pred - gt`` and ``log pred - log gt``; ``log10``
    mean ``|log10 pred - log10 gt|``; ``silog`` ``100 * sqrt(mean(e^2) - mean(e)^2)`` with
    ``e = log pred - log gt`` (BTS's definition). A batch gives the mean over its images of each image's value
    (images without a valid pixel are left out; none at all raises ``ValueError``).
    """
    return depth_metrics_from_sums(depth_metric_sums(pred_depth, gt_depth, mask))
