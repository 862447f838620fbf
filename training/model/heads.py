"""Task heads on the fused decoder output ``[B, F, H/2, W/2]``.

The depth head is the paper's: 3x3 conv to F/2, 2x bilinear upsampling, 3x3 conv to 32, ReLU, 1x1 conv to 1,
ReLU, so the prediction is non-negative relative inverse depth (disparity up to scale and shift).

The segmentation head (paper, Sec. 4.2; isl-org/DPT ``DPTSegmentationModel``) is 3x3 conv (no bias), batch norm,
ReLU, dropout 0.1, 1x1 conv to the classes, then 2x bilinear upsampling of the logits. The auxiliary head used
in training is the same block without the upsampling of its own, on the penultimate fusion output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.shards import ADE20K_CLASSES


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
        # Non-negative initial weights and bias on the non-negative (ReLU) features: the output starts > 0 at every
        # pixel. With the default signed init, a model built from random weights has nearly the same features at
        # every pixel, so the final ReLU was 0 everywhere, with no gradient ever, for 4 of 10 seeds of dpt_tiny
        # (and 2 of 4 of dpt_small): a run that never learned. Loaded checkpoints replace these weights.
        with torch.no_grad():
            self.predict.weight.abs_()
            self.predict.bias.abs_()

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.reduce(x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)
        x = F.relu(self.refine(x))
        return F.relu(self.predict(x))


class SegmentationHead(nn.Module):
    """``[B, F, h, w] -> [B, num_classes, *size]`` class logits (before softmax).

    ``size`` is the input image's size (twice the finest fused map for sides that are multiples of 32, the
    official ``Interpolate(scale_factor=2)``); ``None`` returns the logits at the input map's resolution.
    """

    def __init__(self, features: int, num_classes: int = ADE20K_CLASSES, dropout: float = 0.1):
        super().__init__()
        self.conv = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(features)
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Conv2d(features, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        x = self.dropout(F.relu(self.bn(self.conv(x))))
        logits = self.classify(x)
        if size is not None:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
        return logits


# name -> head class taking (features, **head_kwargs).
HEADS: dict[str, type[nn.Module]] = {"depth": DepthHead, "segmentation": SegmentationHead}
