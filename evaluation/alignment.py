"""Per-image least-squares scale and shift: the alignment step of the zero-shot protocol.

A relative-depth model predicts disparity only up to an unknown scale ``s`` and shift ``t``. Before a
metric is computed, each prediction ``p`` is aligned to the ground-truth disparity ``d`` by

    (s, t) = argmin  sum_{valid i} (s * p_i + t - d_i)^2

which is a 2x2 linear system (the normal equations) per image:

    [sum p^2  sum p] [s]   [sum p d]
    [sum p    n    ] [t] = [sum d  ]

Everything here works on numpy arrays and torch tensors alike, ``[B, H, W]`` or one ``[H, W]`` image;
sums are accumulated in float64 so that a 6048 x 4032 ETH3D image does not lose precision.
"""

from __future__ import annotations

import numpy as np
import torch


def _as_float64(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(dtype=torch.float64)
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def _batched(pred, target, mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    p, d, m = _as_float64(pred), _as_float64(target), _as_float64(mask)
    if p.shape != d.shape or p.shape != m.shape:
        raise ValueError(f"align_scale_shift: shapes differ: pred {tuple(p.shape)}, target {tuple(d.shape)}, "
                         f"mask {tuple(m.shape)}")
    single = p.ndim == 2
    if single:
        p, d, m = p[None], d[None], m[None]
    if p.ndim != 3:
        raise ValueError(f"align_scale_shift: expected [B, H, W] or [H, W], got {tuple(p.shape)}")
    # Invalid pixels may hold anything (NaN, inf): zero them so that they cannot leak into the sums.
    valid = m > 0
    return torch.where(valid, p, 0.0), torch.where(valid, d, 0.0), valid.to(torch.float64), single


def align_scale_shift(pred, target, mask):
    """Least-squares ``(scale, shift)`` with ``scale * pred + shift ~ target`` over ``mask``, per image.

    Args:
        pred: predicted disparity, ``[B, H, W]`` (or ``[H, W]``), tensor or array.
        target: ground-truth disparity of the same shape.
        mask: bool (or 0/1) of the same shape; True where the target is valid.

    Returns:
        ``(scale, shift)``: float64 ``[B]`` tensors when inputs are tensors, numpy arrays otherwise
        (plain floats for a single ``[H, W]`` image). An image whose system is singular (fewer than two
        distinct valid prediction values) gets scale 0 and shift = mean valid target (0 if none valid),
        the best constant fit.
    """
    as_numpy = not isinstance(pred, torch.Tensor)
    p, d, m, single = _batched(pred, target, mask)
    dims = (1, 2)
    a00, a01, a11 = (p * p).sum(dims), p.sum(dims), m.sum(dims)
    b0, b1 = (p * d).sum(dims), d.sum(dims)
    det = a00 * a11 - a01 * a01
    # Relative test: det is a difference of large sums, so compare it to their size.
    ok = det > 1e-12 * torch.clamp(a00 * a11, min=1e-300)
    safe = torch.where(ok, det, 1.0)
    scale = torch.where(ok, (a11 * b0 - a01 * b1) / safe, 0.0)
    shift = torch.where(ok, (-a01 * b0 + a00 * b1) / safe, b1 / torch.clamp(a11, min=1.0))
    if single:
        return float(scale[0]), float(shift[0])
    if as_numpy:
        return scale.numpy(), shift.numpy()
    return scale, shift


def apply_scale_shift(pred, scale, shift):
    """``scale * pred + shift`` with per-image ``scale``/``shift`` broadcast over ``[B, H, W]``."""
    if isinstance(pred, torch.Tensor):
        scale = torch.as_tensor(scale, dtype=pred.dtype, device=pred.device)
        shift = torch.as_tensor(shift, dtype=pred.dtype, device=pred.device)
        if pred.ndim == 3:
            scale, shift = scale.reshape(-1, 1, 1), shift.reshape(-1, 1, 1)
        return scale * pred + shift
    pred = np.asarray(pred)
    scale, shift = np.asarray(scale, dtype=np.float64), np.asarray(shift, dtype=np.float64)
    if pred.ndim == 3:
        scale, shift = scale.reshape(-1, 1, 1), shift.reshape(-1, 1, 1)
    return scale * pred + shift
