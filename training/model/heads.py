"""Task heads on the fused decoder output ``[B, F, H/2, W/2]``.

The depth head is the paper's: 3x3 conv to F/2, 2x bilinear upsampling, 3x3 conv to 32, ReLU, 1x1 conv to 1,
ReLU, so the prediction is non-negative relative inverse depth (disparity up to scale and shift).
Other heads (segmentation, auxiliary) register in ``HEADS`` and receive the same input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DepthHead(nn.Module):
    """``[B, F, H/2, W/2] -> [B, 1, H, W]`` non-negative disparity.

    ``align_corners`` of the upsampling: True as in MiDaS v3 and transformers; isl-org/DPT's ``DPTDepthModel``
    used False.
    """

    def __init__(self, features: int, hidden: int = 32, align_corners: bool = True):
        super().__init__()
        self.align_corners = align_corners
        self.reduce = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
        self.refine = nn.Conv2d(features // 2, hidden, kernel_size=3, padding=1)
        self.predict = nn.Conv2d(hidden, 1, kernel_size=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.reduce(x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)
        x = F.relu(self.refine(x))
        return F.relu(self.predict(x))


# name -> head class taking (features, **head_kwargs); the segmentation issue adds its heads here.
HEADS: dict[str, type[nn.Module]] = {"depth": DepthHead}
