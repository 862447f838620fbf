"""Reassemble (paper, Sec. 3): tokens of one transformer stage -> an image-like feature map.

    Reassemble_s^D^(t) = (Resample_s o Concatenate o Read)(t)

Read handles the readout (class) token, Concatenate puts the ``h*w`` patch tokens back on their grid, and
Resample_s projects to the stage's channels with a 1x1 convolution and brings the map from 1/16 of the input to
1/s (transposed convolution for s = 4, 8; identity for 16; strided 3x3 convolution for 32). The final 3x3
convolution to the shared decoder width (256) is the one the official code keeps in ``scratch.layerN_rn``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

ReadoutMode = Literal["ignore", "add", "project"]
READOUT_MODES = ("ignore", "add", "project")


class Readout(nn.Module):
    """Read: ``[B, 1 + N, D]`` tokens (readout token first) -> ``[B, N, D]`` patch tokens.

    ``ignore`` drops the readout token, ``add`` adds it to every patch token, ``project`` concatenates it to
    every patch token and maps the ``2D`` features back to ``D`` with a linear layer and GELU.
    """

    def __init__(self, mode: ReadoutMode, dim: int, num_prefix_tokens: int = 1):
        super().__init__()
        if mode not in READOUT_MODES:
            raise ValueError(f"readout must be one of {READOUT_MODES}, got {mode!r}")
        self.mode = mode
        self.num_prefix_tokens = num_prefix_tokens
        self.proj = nn.Linear(2 * dim, dim) if mode == "project" else None
        self.act = nn.GELU() if mode == "project" else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        readout, patches = tokens[:, :1], tokens[:, self.num_prefix_tokens:]
        if self.mode == "ignore":
            return patches
        if self.mode == "add":
            return patches + readout
        return self.act(self.proj(torch.cat([patches, readout.expand_as(patches)], dim=-1)))


def _resample(channels: int, factor: float) -> nn.Module:
    """Bring a 1/16 map to 1/(16/factor): factor 4 and 2 up (transposed conv), 1 keep, 0.5 down (conv s2)."""
    if factor > 1:
        return nn.ConvTranspose2d(channels, channels, kernel_size=int(factor), stride=int(factor))
    if factor == 1:
        return nn.Identity()
    if factor == 0.5:
        return nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
    raise ValueError(f"unsupported resample factor {factor}")


class Reassemble(nn.Module):
    """One stage: tokens ``[B, 1 + h*w, D]`` (or, for a hybrid ResNet stage, a map ``[B, C, H', W']``)
    -> ``[B, features, h*factor, w*factor]``.

    Args:
        in_dim: D of the tokens, or C of an incoming feature map (then ``tokens=False``; the map is already at
            its scale and only the 3x3 convolution to ``features`` applies, as in the official hybrid).
        channels: the stage's width after the 1x1 projection (96, 192, 384, 768 for Base).
        factor: resampling relative to the 1/16 token grid (4, 2, 1, 0.5).
        features: decoder width (256).
    """

    def __init__(self, in_dim: int, channels: int, factor: float, features: int, readout: ReadoutMode = "project",
                 tokens: bool = True, num_prefix_tokens: int = 1):
        super().__init__()
        self.tokens = tokens
        if tokens:
            self.readout = Readout(readout, in_dim, num_prefix_tokens)
            self.project = nn.Conv2d(in_dim, channels, kernel_size=1)
            self.resample = _resample(channels, factor)
        else:
            self.readout = self.project = self.resample = None
            channels = in_dim
        self.to_features = nn.Conv2d(channels, features, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        if self.tokens:
            patches = self.readout(x)  # [B, h*w, D]
            x = patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], grid[0], grid[1])
            x = self.resample(self.project(x))
        return self.to_features(x)
