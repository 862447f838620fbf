"""Per-image least-squares scale and shift: what "equal up to scale and shift" means for disparity.

The shard contract defines disparity only up to an unknown scale ``s`` and shift ``t`` (DESIGN.md), so the
training loss (``ssimse``, MiDaS eq. 4-5) and the zero-shot evaluation (DPT section 4.1) both align a prediction
``p`` to a target ``d`` per image by

    (s, t) = argmin  sum_{valid i} (s * p_i + t - d_i)^2

which is a 2x2 linear system (the normal equations) per image:

    [sum p^2  sum p] [s]   [sum p d]
    [sum p    n    ] [t] = [sum d  ]

It lives in pipeline/ because training/ (the loss) and evaluation/ (the protocol) both use it and neither may
import the other.

Degenerate images, one rule for both: an image whose system is singular (no valid pixel, a single one, or a
prediction constant over its valid pixels: ``det <= 1e-12 * n * sum p^2``, a relative test, so that it does not
depend on the prediction's own scale) gets ``s = 0`` and ``t`` = the mean valid target (0 when none is valid),
the best constant fit. A constant target is not degenerate: the equations give ``s = 0`` and ``t`` = that value.
The evaluation skips an image without valid pixels before it aligns (:mod:`evaluation.protocol`); the loss
counts only valid pixels, so such an image adds nothing to it nor to its gradient.

Sums are accumulated in float64 whatever the input dtype (a 6048 x 4032 ETH3D image; float32 training batches,
whose raw sums would otherwise lose the difference ``det`` is made of), and invalid pixels are zeroed before
summing, so NaN or inf under the mask cannot leak in.
"""

from __future__ import annotations

import numpy as np
import torch


def solve_scale_shift(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``(scale, shift)``, float64 ``[B]``, of ``pred`` to ``target`` over ``mask`` (all ``[B, H, W]``
    tensors; mask bool, or nonzero where valid). Differentiable in ``pred`` and ``target`` (the loss back-propagates
    through ``s`` and ``t``); degenerate images as the module docstring says."""
    valid = mask if mask.dtype == torch.bool else mask != 0
    p = torch.where(valid, pred.to(torch.float64), 0.0)
    d = torch.where(valid, target.to(torch.float64), 0.0)
    dims = (-2, -1)
    a00, a01, a11 = (p * p).sum(dims), p.sum(dims), valid.to(torch.float64).sum(dims)
    b0, b1 = (p * d).sum(dims), d.sum(dims)
    det = a00 * a11 - a01 * a01
    # Relative test: det is a difference of large sums, so compare it to their size.
    ok = det > 1e-12 * torch.clamp(a00 * a11, min=1e-300)
    safe = torch.where(ok, det, 1.0)
    scale = torch.where(ok, (a11 * b0 - a01 * b1) / safe, 0.0)
    shift = torch.where(ok, (-a01 * b0 + a00 * b1) / safe, b1 / torch.clamp(a11, min=1.0))
    return scale, shift


def _as_float64(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(dtype=torch.float64)
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def align_scale_shift(pred, target, mask):
    """Least-squares ``(scale, shift)`` with ``scale * pred + shift ~ target`` over ``mask``, per image.

    Args:
        pred: predicted disparity, ``[B, H, W]`` (or ``[H, W]``), tensor or array.
        target: ground-truth disparity of the same shape.
        mask: bool (or 0/1) of the same shape; True where the target is valid.

    Returns:
        ``(scale, shift)``: float64 ``[B]`` tensors (detached) when inputs are tensors, numpy arrays otherwise
        (plain floats for a single ``[H, W]`` image). An image whose system is singular (fewer than two
        distinct valid prediction values) gets scale 0 and shift = mean valid target (0 if none valid),
        the best constant fit.
    """
    as_numpy = not isinstance(pred, torch.Tensor)
    p, d, m = _as_float64(pred), _as_float64(target), _as_float64(mask)
    if p.shape != d.shape or p.shape != m.shape:
        raise ValueError(f"align_scale_shift: shapes differ: pred {tuple(p.shape)}, target {tuple(d.shape)}, "
                         f"mask {tuple(m.shape)}")
    single = p.ndim == 2
    if single:
        p, d, m = p[None], d[None], m[None]
    if p.ndim != 3:
        raise ValueError(f"align_scale_shift: expected [B, H, W] or [H, W], got {tuple(p.shape)}")
    scale, shift = solve_scale_shift(p, d, m > 0)
    if single:
        return float(scale[0]), float(shift[0])
    if as_numpy:
        return scale.numpy(), shift.numpy()
    return scale, shift


def apply_scale_shift(pred, scale, shift):
    """``scale * pred + shift`` with per-image ``scale``/``shift`` broadcast over ``[B, H, W]`` (or scalars for one
    ``[H, W]`` image); a tensor ``pred`` keeps its dtype and device, and the graph through ``scale`` and ``shift``."""
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
