"""Segmentation augmentation (DPT paper Sec. 4.2, the PyTorch-Encoding ADE20K recipe): resize so that the longer
side is ``base_size`` times a random scale in ``scale``, pad to at least ``crop`` (labels padded with the ignore
index), random ``crop`` x ``crop`` window, random horizontal flip.

The image is resampled bilinearly (antialiased when shrinking); the label map only by nearest neighbour, because
a blend of class ids is no class. Tensors are ``torch`` on CPU: image float ``[3, H, W]`` in [0, 1], labels int64
``[H, W]`` with 255 = ignore; ``frame`` bool ``[S, S]`` marks the image content (False in padding).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.shards import IGNORE_LABEL


@dataclasses.dataclass
class SegmentationAugmentConfig:
    """base_size: the longer side before the random scale (520); scale: its random range (0.5-2.0); crop: the square
    training window (480); flip: probability of a horizontal flip. Validation uses scale 1 and a centred window."""

    base_size: int = 520
    scale: tuple[float, float] = (0.5, 2.0)
    crop: int = 480
    flip: float = 0.5

    def __post_init__(self):
        if self.crop < 8 or self.base_size < 8:
            raise ValueError(f"crop and base_size must be >= 8 pixels, got {self.crop}, {self.base_size}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be a range 0 < low <= high, got {self.scale}")
        if not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"flip is a probability, got {self.flip}")


def _window(length: int, size: int, rng: np.random.Generator | None) -> int:
    """Start of a ``size`` window over ``length >= size`` pixels: random, or centred without ``rng``."""
    slack = length - size
    return int(rng.integers(0, slack + 1)) if rng is not None else slack // 2


def augment_segmentation(image: torch.Tensor, labels: torch.Tensor, config: SegmentationAugmentConfig,
                         rng: np.random.Generator | None):
    """Random rescale, pad, crop, flip of ``image [3, H, W]`` and ``labels [H, W]`` together.

    Returns image ``[3, S, S]``, labels ``[S, S]`` (255 in padding), frame ``[S, S]``; ``rng=None``: scale 1,
    centred window, no flip (validation).
    """
    _, h, w = image.shape
    scale = float(rng.uniform(*config.scale)) if rng is not None else 1.0
    longer = max(8, round(config.base_size * scale))
    nh, nw = max(1, round(h * longer / max(h, w))), max(1, round(w * longer / max(h, w)))
    image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", antialias=nh < h,
                          align_corners=False)[0].clamp_(0.0, 1.0)
    labels = F.interpolate(labels[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()

    size = config.crop
    ph, pw = max(nh, size), max(nw, size)
    canvas = torch.zeros(3, ph, pw)
    canvas_labels = torch.full((ph, pw), IGNORE_LABEL, dtype=torch.long)
    frame = torch.zeros(ph, pw, dtype=torch.bool)
    canvas[:, :nh, :nw], canvas_labels[:nh, :nw], frame[:nh, :nw] = image, labels, True
    y, x = _window(ph, size, rng), _window(pw, size, rng)
    out = (canvas[:, y:y + size, x:x + size], canvas_labels[y:y + size, x:x + size], frame[y:y + size, x:x + size])
    if rng is not None and rng.random() < config.flip:
        out = tuple(t.flip(-1) for t in out)
    return out
