"""Fusion (paper, Sec. 3 and Fig. 1): RefineNet-style feature fusion blocks of the convolutional decoder.

Each block adds the residual-convolved skip map of its stage to the deeper path, applies a second residual
convolution unit, upsamples bilinearly (``align_corners=True``, as the official code) and mixes channels with a
1x1 convolution. The deepest block has no skip input. Batch norm in the units is used only for segmentation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit: ``x + conv(relu(conv(relu(x))))`` on ``[B, F, H, W]``."""

    def __init__(self, features: int, batch_norm: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=not batch_norm)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=not batch_norm)
        self.bn1 = nn.BatchNorm2d(features) if batch_norm else nn.Identity()
        self.bn2 = nn.BatchNorm2d(features) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(F.relu(x)))
        out = self.bn2(self.conv2(F.relu(out)))
        return x + out


class FeatureFusionBlock(nn.Module):
    """``(deeper [B, F, h, w], skip [B, F, h, w] | None, size) -> [B, F, *size]``.

    ``size`` is where the result goes: the next (finer) stage's map size, or twice the input for the last block.
    For inputs whose sides are multiples of 32 that is exactly the official 2x upsampling; for multiples of 16
    the 1/32 map has rounded-up sides and interpolating to the next stage's size keeps every map aligned.
    """

    def __init__(self, features: int, has_skip: bool = True, batch_norm: bool = False):
        super().__init__()
        self.skip_unit = ResidualConvUnit(features, batch_norm) if has_skip else None
        self.residual_unit = ResidualConvUnit(features, batch_norm)
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        if skip is not None:
            if self.skip_unit is None:
                raise ValueError("this fusion block is the deepest one and takes no skip input")
            x = x + self.skip_unit(skip)
        x = self.residual_unit(x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)
