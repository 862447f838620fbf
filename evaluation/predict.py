"""Model input preparation and prediction at the protocol's resolution.

The protocol (DPT section 4.1): the image's longer side is resized to 384 and the shorter side to the
nearest multiple of 32 at the same aspect ratio; the model's disparity is resized back to the ground
truth's size. The model is any ``torch.nn.Module`` with ``forward([B, 3, h, w] normalised) ->
[B, 1, h, w]`` disparity; its normalisation travels with it as a :class:`Preprocessing`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How images become model input. ``mean``/``std`` apply to RGB in [0, 1]."""

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    size: int = 384  # the longer side
    multiple_of: int = 32  # both sides are multiples of this (the ViT patch grid and the fusion levels)


def network_size(height: int, width: int, size: int = 384, multiple_of: int = 32) -> tuple[int, int]:
    """``(h, w)`` given to the model: longer side ``size``, shorter side rounded to the nearest multiple
    of ``multiple_of`` (at least one multiple). 480x640 -> 288x384; KITTI 375x1242 -> 128x384."""
    scale = size / max(height, width)

    def fit(side: int) -> int:
        return max(multiple_of, int(round(side * scale / multiple_of)) * multiple_of)

    return fit(height), fit(width)


def prepare(rgb: np.ndarray, pre: Preprocessing) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> normalised float32 ``[3, h, w]`` at :func:`network_size`.

    Bicubic with antialiasing: benchmark images are often much larger than 384 (ETH3D is 6048 wide),
    and downscaling them without a low-pass filter would alias."""
    h, w = network_size(rgb.shape[0], rgb.shape[1], pre.size, pre.multiple_of)
    x = torch.from_numpy(np.array(rgb, dtype=np.uint8, order="C")).permute(2, 0, 1).float().div_(255.0)[None]
    x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True).clamp_(0.0, 1.0)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return ((x - mean) / std)[0]


@torch.inference_mode()
def predict_disparity(model: torch.nn.Module, images: Sequence[np.ndarray], pre: Preprocessing,
                      device: torch.device | str = "cpu", batch_size: int = 4) -> list[np.ndarray]:
    """Disparity for each uint8 ``[H, W, 3]`` image, float32 ``[H, W]`` at the image's own size.

    Images that share a network size are batched together (up to ``batch_size``)."""
    inputs = [prepare(image, pre) for image in images]
    out: list[np.ndarray | None] = [None] * len(images)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(inputs):
        groups.setdefault(tuple(x.shape[1:]), []).append(i)
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            batch = members[start:start + batch_size]
            x = torch.stack([inputs[i] for i in batch]).to(device)
            pred = model(x)
            if pred.ndim != 4 or pred.shape[1] != 1 or pred.shape[2:] != x.shape[2:]:
                raise RuntimeError(f"model returned {tuple(pred.shape)} for input {tuple(x.shape)}; "
                                   "expected [B, 1, H, W] disparity at the input resolution")
            for j, i in enumerate(batch):
                size = images[i].shape[:2]
                full = F.interpolate(pred[j:j + 1].float(), size=size, mode="bilinear", align_corners=False)
                out[i] = full[0, 0].cpu().numpy()
    return out  # type: ignore[return-value]
