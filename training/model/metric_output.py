"""The metric output transform of the fine-tuned DPT models (paper Sec. 4.1, fine-tuning on NYUv2 and KITTI).

The network's head predicts non-negative disparity ``f`` up to an unknown scale and shift (what the relative
model learns). A metric model maps it to depth in metres with one fixed affine map in disparity space:

    depth = 1 / max(scale * f + shift, 1e-8)

which is isl-org/DPT's ``DPTDepthModel(invert=True)`` (``dpt/models.py``; the floor keeps the inverse finite).
The official constants (``run_monodepth.py``) are NYUv2 ``scale=0.000305, shift=0.1378`` and KITTI
``scale=0.00006016, shift=0.00579``; they travel with the variant (``DPTConfig.metric_output``).

``scale`` and ``shift`` are buffers, so they are in the state dict and in this project's checkpoints: a model
fine-tuned from a relative checkpoint keeps the values fitted for it before fine-tuning (the issue's training
step aligns the initial predictions to the training set's disparity ``1 / depth`` and averages the per-sample
scale and shift), set with one call, :meth:`MetricOutput.set`. They are not trained (buffers, not parameters),
as in the official code.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# The floor of the official code: scale * f + shift below it counts as 1e-8 (depth 1e8 m, "infinitely far").
MIN_DISPARITY = 1e-8


class MetricOutput(nn.Module):
    """``f [B, 1, H, W]`` (non-negative relative disparity) -> depth in metres, same shape, float32.

    Computed in float32 whatever the input's dtype: under bfloat16/float16 autocast the floor 1e-8 and KITTI's
    scale 6e-5 are below those formats' resolution.
    """

    def __init__(self, scale: float, shift: float):
        super().__init__()
        self.register_buffer("scale", torch.tensor(0.0, dtype=torch.float32))
        self.register_buffer("shift", torch.tensor(0.0, dtype=torch.float32))
        self.set(scale, shift)

    @torch.no_grad()
    def set(self, scale: float, shift: float) -> None:
        """Fix the transform to ``depth = 1 / max(scale * f + shift, 1e-8)`` (e.g. from an alignment to data).

        ``scale`` must be finite and > 0 (a larger disparity must stay nearer); ``shift`` finite.
        """
        scale, shift = float(scale), float(shift)
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"metric output: scale must be finite and > 0, got {scale}")
        if not math.isfinite(shift):
            raise ValueError(f"metric output: shift must be finite, got {shift}")
        self.scale.fill_(scale)
        self.shift.fill_(shift)

    def values(self) -> tuple[float, float]:
        """``(scale, shift)`` as plain floats (for logging and checkpoint metadata)."""
        return float(self.scale), float(self.shift)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        disparity = self.scale * f.float() + self.shift
        return 1.0 / torch.clamp(disparity, min=MIN_DISPARITY)

    def extra_repr(self) -> str:
        scale, shift = self.values()
        return f"scale={scale:g}, shift={shift:g}"
