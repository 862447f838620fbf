"""Augmentation as in the DPT paper (sec. 4.1): resize, random square crop, random horizontal flip, normalise.

The target (disparity) and its mask follow every geometric step of the image. Resampling the target never
mixes valid and invalid pixels: the masked disparity and the mask are resampled with the same non-negative
filter and divided, so every output value is a weighted mean of *valid* inputs only; an output pixel is
valid only when (almost) all of its support was valid (``min_support``).

Each stage takes its own small config and a ``numpy.random.Generator``; tensors are ``torch`` on CPU:
image float ``[3, H, W]`` in [0, 1] until normalised, disparity float ``[H, W]``, mask bool ``[H, W]``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F


@dataclasses.dataclass
class GeometricConfig:
    """size: the square training crop in pixels; resize_side: which side is scaled to ``size`` first
    (the paper: "resized such that the longer side is 384", the rest of the square is padded and masked out);
    flip: probability of a horizontal flip; min_support: fraction of a resampled target pixel's filter support
    that must be valid for it to stay valid."""

    size: int = 384
    resize_side: Literal["longer", "shorter"] = "longer"
    flip: float = 0.5
    min_support: float = 0.999

    def __post_init__(self):
        if self.size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {self.size}")
        if not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"flip is a probability, got {self.flip}")


@dataclasses.dataclass
class PhotometricConfig:
    """Colour jitter strengths: each factor is drawn uniformly from [1 - x, 1 + x]; 0 turns it off (the paper)."""

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0


@dataclasses.dataclass
class NormalizeConfig:
    """Per-channel mean and std applied to the [0, 1] image (DPT's ViT variants use 0.5 / 0.5)."""

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


def to_tensors(rgb: np.ndarray, disparity: np.ndarray, mask: np.ndarray):
    """uint8 ``[H, W, 3]``, float ``[H, W]``, bool ``[H, W]`` -> image ``[3, H, W]`` in [0, 1], disparity, mask."""
    image = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
    return image, torch.from_numpy(np.asarray(disparity, dtype=np.float32)), torch.from_numpy(np.asarray(mask, bool))


def resize_masked(disparity: torch.Tensor, mask: torch.Tensor, shape: tuple[int, int], min_support: float = 0.999):
    """Resample a target and its mask to ``shape`` without mixing valid and invalid pixels.

    Returns (disparity ``[h, w]``, mask ``[h, w]``); invalid output pixels hold 0.
    """
    m = mask.float()[None, None]
    weight = F.interpolate(m, size=shape, mode="bilinear", antialias=True, align_corners=False)[0, 0]
    value = F.interpolate((disparity * mask)[None, None].float(), size=shape, mode="bilinear",
                          antialias=True, align_corners=False)[0, 0]
    valid = weight >= min_support
    return torch.where(valid, value / weight.clamp(min=1e-12), torch.zeros_like(value)), valid


def _place(length: int, size: int, rng: np.random.Generator | None) -> tuple[int, int]:
    """(source start, canvas start) of a window of ``size`` over ``length`` pixels: crop or pad, random or centred."""
    slack = abs(length - size)
    offset = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
    return (offset, 0) if length >= size else (0, offset)


def geometric(image, disparity, mask, config: GeometricConfig, rng: np.random.Generator | None):
    """Resize (``resize_side`` to ``config.size``), square crop/pad to ``size``, flip. ``rng=None``: centred, no flip.

    Returns image ``[3, S, S]``, disparity ``[S, S]``, mask ``[S, S]``, and ``frame`` bool ``[S, S]``: where the
    image has content (False in padding, which the normaliser fills with the mean colour).
    """
    _, h, w = image.shape
    size = config.size
    side = max(h, w) if config.resize_side == "longer" else min(h, w)
    nh, nw = max(1, round(h * size / side)), max(1, round(w * size / side))
    image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    image = image.clamp_(0.0, 1.0)
    disparity, mask = resize_masked(disparity, mask, (nh, nw), config.min_support)

    (sy, cy), (sx, cx) = _place(nh, size, rng), _place(nw, size, rng)
    ch, cw = min(nh, size), min(nw, size)
    out_image = torch.zeros(3, size, size)
    out_disp = torch.zeros(size, size)
    out_mask = torch.zeros(size, size, dtype=torch.bool)
    frame = torch.zeros(size, size, dtype=torch.bool)
    out_image[:, cy:cy + ch, cx:cx + cw] = image[:, sy:sy + ch, sx:sx + cw]
    out_disp[cy:cy + ch, cx:cx + cw] = disparity[sy:sy + ch, sx:sx + cw]
    out_mask[cy:cy + ch, cx:cx + cw] = mask[sy:sy + ch, sx:sx + cw]
    frame[cy:cy + ch, cx:cx + cw] = True
    if rng is not None and rng.random() < config.flip:
        out_image, out_disp, out_mask, frame = (t.flip(-1) for t in (out_image, out_disp, out_mask, frame))
    return out_image, out_disp, out_mask, frame


def photometric(image: torch.Tensor, config: PhotometricConfig, rng: np.random.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation jitter of a [0, 1] image ``[3, H, W]``; the target is untouched."""

    def factor(strength: float) -> float:
        return float(rng.uniform(1 - strength, 1 + strength)) if strength > 0 else 1.0

    image = image * factor(config.brightness)
    grey = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
    image = (image - grey.mean()) * factor(config.contrast) + grey.mean()
    image = (image - grey) * factor(config.saturation) + grey
    return image.clamp_(0.0, 1.0)


def normalize(image: torch.Tensor, frame: torch.Tensor, config: NormalizeConfig) -> torch.Tensor:
    """``(image - mean) / std``; padding outside ``frame`` becomes 0 (the mean colour)."""
    mean = torch.tensor(config.mean).view(3, 1, 1)
    std = torch.tensor(config.std).view(3, 1, 1)
    return torch.where(frame[None], (image - mean) / std, torch.zeros_like(image))
