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

Metric depth (DPT's Tables 2 and 3, fine-tuned models; Eigen et al. 2014's set as BTS computes it):
:func:`depth_metrics` gives ``d1, d2, d3, abs_rel, sq_rel, rmse, rmse_log, log10, silog`` of each image, averaged
over the images of a batch, and :func:`depth_metric_sums` / :func:`depth_metrics_from_sums` the same as sums
that add up exactly across workers (see :func:`depth_metric_sums` for why per image).
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.alignment import align_scale_shift, apply_scale_shift

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


# --------------------------------------------------------------------------- metric depth (Tables 2 and 3)

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
