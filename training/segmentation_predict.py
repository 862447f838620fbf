"""``dpt predict --task segmentation``: class ids and a colour label map for each image.

``segment`` turns a batch of prepared images into class ids at each image's own size (logits resized bilinearly,
then argmax); ``colour_labels`` paints ids with a fixed palette (the PASCAL VOC bit-interleaved colours, distinct
for every id up to 255), so the same class has the same colour in every picture and every run.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def segment(model: nn.Module, batch: torch.Tensor, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Class ids uint8 ``[H_i, W_i]`` for each prepared image of ``batch [B, 3, h, w]`` at ``sizes[i]``."""
    device = next(model.parameters()).device
    logits = model(batch.to(device))
    if logits.ndim != 4 or logits.shape[1] < 2:
        raise ValueError(f"the model returned {tuple(logits.shape)}, not [B, C, h, w] class logits: "
                         "--task segmentation needs a segmentation checkpoint (e.g. dpt_hybrid_ade20k)")
    if logits.shape[1] > 255:
        raise ValueError(f"{logits.shape[1]} classes do not fit an 8-bit label map")
    out = []
    for i, size in enumerate(sizes):
        full = F.interpolate(logits[i:i + 1].float(), size=size, mode="bilinear", align_corners=False)
        out.append(full[0].argmax(0).to(torch.uint8).cpu().numpy())
    return out


def palette(count: int = 256) -> np.ndarray:
    """uint8 ``[count, 3]``: colour of each class id (bits of the id spread over the high bits of R, G, B)."""
    colours = np.zeros((count, 3), np.uint8)
    for index in range(count):
        value, shift = index, 7
        while value:
            for channel in range(3):
                colours[index, channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
    return colours


def colour_labels(labels: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` picture of a uint8 ``[H, W]`` label map."""
    return palette()[labels]


def encode_segmentation(labels: np.ndarray) -> tuple[bytes, bytes]:
    """``(8-bit class-id PNG, colour PNG)`` of one label map."""
    from PIL import Image

    ids, colour = io.BytesIO(), io.BytesIO()
    Image.fromarray(labels).save(ids, format="PNG")
    Image.fromarray(colour_labels(labels)).save(colour, format="PNG")
    return ids.getvalue(), colour.getvalue()
