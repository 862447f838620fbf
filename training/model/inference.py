"""Image in, disparity out: the preprocessing that travels with a variant, applied outside the model.

``prepare`` resizes an ``[H, W, 3]`` uint8 RGB image so that its longer side is ``preprocess.size`` and both sides
are multiples of ``preprocess.multiple_of`` (aspect ratio kept up to that rounding), and normalises it;
``predict`` runs a batch of equally sized inputs and resizes each prediction back to its image's size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.model.config import Preprocess


def target_size(height: int, width: int, preprocess: Preprocess) -> tuple[int, int]:
    """``(h, w)``: longer side ``preprocess.size``, both rounded to the nearest multiple (at least one multiple)."""
    scale = preprocess.size / max(height, width)
    step = preprocess.multiple_of
    return tuple(max(step, int(round(side * scale / step)) * step) for side in (height, width))


def prepare(rgb: np.ndarray, preprocess: Preprocess) -> torch.Tensor:
    """``[H, W, 3]`` uint8 -> ``[3, h, w]`` float32, resized (bicubic, antialiased) and normalised."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    x = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=target_size(rgb.shape[0], rgb.shape[1], preprocess), mode="bicubic",
                      align_corners=False, antialias=True)
    mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
    return ((x.clamp(0, 1) - mean) / std)[0]


@torch.no_grad()
def predict(model: nn.Module, batch: torch.Tensor, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Disparity ``[H_i, W_i]`` float32 (relative, >= 0) for each prepared image of ``batch [B, 3, h, w]``,
    resized back to ``sizes[i]`` (bicubic, clamped at 0 as bicubic can undershoot)."""
    device = next(model.parameters()).device
    out = model(batch.to(device)).float()
    return [F.interpolate(out[i:i + 1], size=size, mode="bicubic", align_corners=False).clamp_min(0)[0, 0].cpu().numpy()
            for i, size in enumerate(sizes)]
