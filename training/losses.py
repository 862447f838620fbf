"""The scale- and shift-invariant loss of MiDaS (Ranftl et al., TPAMI 2020, sec. 5) on disparity.

Targets of ten differently measured sources are known only up to an unknown scale and shift in disparity
space, so the prediction is compared with the target only after both are brought to a common scale and
shift, per image, over the valid pixels:

``ssitrim``  each of prediction and target is normalised by its median ``t`` and mean absolute deviation
             ``s`` (eq. 6-7); the loss is the absolute residual with the largest 20% per image trimmed (eq. 9):
             ``L = 1/(2M) * sum_{j <= U} |d^ - d^*|_(j)``, U = M - floor(0.2 M), residuals sorted ascending.
``ssimse``   the prediction is aligned to the target by the closed-form least-squares scale and shift
             (eq. 4-5; :mod:`pipeline.alignment`, the evaluation's alignment too); the loss is
             ``L = 1/(2M) * sum (s d + t - d*)^2``.

Both add the multi-scale gradient-matching term (eq. 11) on the aligned residual ``R = d^ - d^*``:
``L_reg = alpha * sum_k 1/M_k sum |grad_x R^k| + |grad_y R^k|`` over K scales, where scale ``k`` keeps
every ``2^k``-th pixel and a gradient counts only where both of its pixels are valid.

Reductions are batch-based as in the official MiDaS code: sums over all images divided by the number of
valid pixels in the batch, so an image with no valid pixel adds nothing to either and never makes a NaN.
Medians are true medians (mean of the two middle values for an even count), as ``numpy.median``.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.alignment import apply_scale_shift, solve_scale_shift

KINDS = ("ssitrim", "ssimse")
TRIM_FRACTION = 0.2
# Mean absolute deviation below this counts as "constant": avoids 0/0 for a flat prediction.
EPS = 1e-6


def _as_bhw(name: str, tensor: torch.Tensor) -> torch.Tensor:
    if tensor.ndim == 4 and tensor.shape[1] == 1:
        return tensor[:, 0]
    if tensor.ndim != 3:
        raise ValueError(f"{name} must be [B, H, W] or [B, 1, H, W], got {list(tensor.shape)}")
    return tensor


def _check(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    prediction, target, mask = _as_bhw("prediction", prediction), _as_bhw("target", target), _as_bhw("mask", mask)
    if not (prediction.shape == target.shape == mask.shape):
        raise ValueError(f"shapes differ: prediction {list(prediction.shape)}, target {list(target.shape)}, "
                         f"mask {list(mask.shape)}")
    return prediction, target.to(prediction.dtype), mask


def masked_median(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Median of the valid values of each image: ``x, mask [B, N]`` -> ``[B]`` (0 where none is valid)."""
    count = mask.sum(-1)
    ordered = torch.sort(torch.where(mask, x, torch.full_like(x, float("inf"))), dim=-1).values
    low = ((count - 1).clamp(min=0) // 2).unsqueeze(-1)
    high = (count // 2).clamp(max=x.shape[-1] - 1).unsqueeze(-1)
    median = 0.5 * (ordered.gather(-1, low) + ordered.gather(-1, high)).squeeze(-1)
    return torch.where(count > 0, median, torch.zeros_like(median))


def normalize_median_mad(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(x - median) / mean|x - median|`` per image over valid pixels (MiDaS eq. 6-7); ``[B, H, W]``."""
    flat, valid = x.flatten(1), mask.flatten(1)
    count = valid.sum(-1).clamp(min=1)
    shift = masked_median(flat, valid)
    centred = flat - shift[:, None]
    scale = (centred.abs() * valid).sum(-1) / count
    return (centred / scale.clamp(min=EPS)[:, None] * valid).view_as(x)


def align_least_squares(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``s * prediction + t`` with per-image (s, t) minimising the squared error over valid pixels (eq. 4), in the
    prediction's dtype; the gradient flows through s and t. A singular system (no valid pixel, one, or a constant
    prediction) leaves s = 0 and t = mean target (:mod:`pipeline.alignment`)."""
    scale, shift = solve_scale_shift(prediction, target, mask)
    return apply_scale_shift(prediction, scale, shift)


def trimmed_abs_sum(residual: torch.Tensor, mask: torch.Tensor, trim: float = TRIM_FRACTION) -> torch.Tensor:
    """Per image, the sum of the smallest ``M - floor(trim * M)`` absolute valid residuals -> ``[B]``."""
    flat, valid = residual.abs().flatten(1), mask.flatten(1)
    count = valid.sum(-1)
    keep = count - torch.floor(trim * count).long()
    ordered = torch.sort(torch.where(valid, flat, torch.full_like(flat, float("inf"))), dim=-1).values
    ranks = torch.arange(flat.shape[-1], device=flat.device)[None]
    return torch.where(ranks < keep[:, None], ordered, torch.zeros_like(ordered)).sum(-1)


def gradient_matching(residual: torch.Tensor, mask: torch.Tensor, scales: int) -> torch.Tensor:
    """``sum_k (sum |grad R^k|) / M_k`` over ``scales`` scales (MiDaS eq. 11), batch-reduced; scalar."""
    total = residual.new_zeros(())
    for k in range(scales):
        step = 2**k
        r, m = residual[:, ::step, ::step], mask[:, ::step, ::step]
        mx = m[:, :, 1:] & m[:, :, :-1]
        my = m[:, 1:, :] & m[:, :-1, :]
        grad = ((r[:, :, 1:] - r[:, :, :-1]).abs() * mx).sum() + ((r[:, 1:, :] - r[:, :-1, :]).abs() * my).sum()
        count = m.sum()
        total = total + torch.where(count > 0, grad / count.clamp(min=1), torch.zeros_like(grad))
    return total


def scale_shift_invariant_loss(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
    kind: str = "ssitrim", alpha: float = 0.5, scales: int = 4,
) -> dict[str, torch.Tensor]:
    """Loss terms as scalars: ``{"loss": data + alpha * grad, "data": ..., "grad": ...}``.

    prediction, target: disparity ``[B, H, W]`` or ``[B, 1, H, W]``; mask: bool, True where the target is valid.
    """
    if kind not in KINDS:
        raise ValueError(f"loss kind {kind!r} is not one of {list(KINDS)}")
    prediction, target, mask = _check(prediction, target, mask)
    m = mask.to(prediction.dtype)
    if kind == "ssitrim":
        residual = normalize_median_mad(prediction, mask) - normalize_median_mad(target, mask)
        data_sum = trimmed_abs_sum(residual, mask).sum()
    else:
        residual = (align_least_squares(prediction, target, mask) - target) * m
        data_sum = (residual * residual).sum()
    count = m.sum()
    data = torch.where(count > 0, data_sum / (2 * count.clamp(min=1)), torch.zeros_like(data_sum))
    grad = gradient_matching(residual, mask, scales) if alpha > 0 and scales > 0 else data.new_zeros(())
    return {"loss": data + alpha * grad, "data": data, "grad": grad}


class ScaleAndShiftInvariantLoss(nn.Module):
    """``forward(prediction, target, mask) -> scalar``: MiDaS' ``ssitrim`` or ``ssimse`` plus gradient matching.

    >>> loss_fn = ScaleAndShiftInvariantLoss(kind="ssitrim", alpha=0.5, scales=4)
    >>> loss = loss_fn(prediction, target, mask)   # [B, 1, H, W] disparity, mask bool
    """

    def __init__(self, kind: str = "ssitrim", alpha: float = 0.5, scales: int = 4):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"loss kind {kind!r} is not one of {list(KINDS)}")
        if alpha < 0 or scales < 0:
            raise ValueError(f"alpha ({alpha}) and scales ({scales}) must be >= 0")
        self.kind, self.alpha, self.scales = kind, float(alpha), int(scales)

    def terms(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"loss", "data", "grad"}`` scalars (for logging each term)."""
        return scale_shift_invariant_loss(prediction, target, mask, self.kind, self.alpha, self.scales)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.terms(prediction, target, mask)["loss"]

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, alpha={self.alpha}, scales={self.scales}"
