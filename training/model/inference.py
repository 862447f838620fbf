"""Image in, disparity out: the one inference path of ``dpt predict``, ``dpt eval`` and the exported graph.

Three steps, each defined here once, around a model that never resizes or normalises (DESIGN.md):

1. ``prepare`` resizes an ``[H, W, 3]`` uint8 RGB image so that its longer side is ``preprocess.size`` and both
   sides are multiples of ``preprocess.multiple_of`` (aspect ratio kept up to that rounding; DPT section 4.1: 384
   and 32), and normalises it, with the variant's frozen :class:`~training.model.config.Preprocess`;
2. the model runs on a batch of equally sized inputs;
3. ``predict`` resizes each disparity back to its image's size (:data:`RESIZE_BACK`).

``predict_images`` does all three for a list of images, batching those that share a prepared size (the
evaluation's chunks); ``dpt predict`` runs them on its rows (``training.predict_rows``: decode, infer, write).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.model.config import Preprocess


@dataclasses.dataclass(frozen=True)
class ResizeBack:
    """How a disparity map returns to its image's size: ``F.interpolate`` with ``mode`` and ``align_corners``, then
    clamped below at ``min``. Exported graphs carry it in their metadata (``dpt.resize_back``)."""

    mode: str
    align_corners: bool
    min: float


# Bicubic without corner alignment, as the official code does (isl-org/DPT run_monodepth.py and isl-org/MiDaS
# run.py interpolate the prediction to the image's size with mode="bicubic", align_corners=False), so that maps
# and zero-shot numbers are those of the official inference. Bicubic can undershoot next to sharp edges, and
# disparity is >= 0 (the depth head ends in a ReLU), so the map is clamped at 0.
RESIZE_BACK = ResizeBack(mode="bicubic", align_corners=False, min=0.0)


def target_size(height: int, width: int, preprocess: Preprocess) -> tuple[int, int]:
    """``(h, w)``: longer side ``preprocess.size``, both rounded to the nearest multiple (at least one multiple)."""
    scale = preprocess.size / max(height, width)
    step = preprocess.multiple_of
    return tuple(max(step, int(round(side * scale / step)) * step) for side in (height, width))


def prepare(rgb: np.ndarray, preprocess: Preprocess) -> torch.Tensor:
    """``[H, W, 3]`` uint8 -> ``[3, h, w]`` float32, resized (bicubic, antialiased) and normalised.

    Antialiased: benchmark images are often much larger than 384 (ETH3D is 6048 wide), and downscaling them
    without a low-pass filter would alias."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    x = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=target_size(rgb.shape[0], rgb.shape[1], preprocess), mode="bicubic",
                      align_corners=False, antialias=True)
    mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
    return ((x.clamp(0, 1) - mean) / std)[0]


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, batch: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Disparity ``[H_i, W_i]`` float32 (relative, >= 0) for each prepared image of ``batch [B, 3, h, w]``,
    resized back to ``sizes[i]`` (:data:`RESIZE_BACK`). A model whose output is not ``[B, 1, h, w]``
    (a segmentation model, say) raises ``RuntimeError``."""
    out = model(batch.to(_device(model)))
    if out.ndim != 4 or out.shape[1] != 1 or out.shape[2:] != batch.shape[2:]:
        raise RuntimeError(f"model returned {tuple(out.shape)} for input {tuple(batch.shape)}; "
                           "expected [B, 1, H, W] disparity at the input resolution")
    out = out.float()
    back = RESIZE_BACK
    return [F.interpolate(out[i:i + 1], size=tuple(size), mode=back.mode, align_corners=back.align_corners)
            .clamp_min(back.min)[0, 0].cpu().numpy() for i, size in enumerate(sizes)]


def predict_images(model: nn.Module, images: Sequence[np.ndarray], preprocess: Preprocess,
                   batch_size: int = 4) -> list[np.ndarray]:
    """Disparity float32 ``[H, W]`` for each uint8 ``[H, W, 3]`` image, at the image's own size; images that share
    a prepared size go through the model together, up to ``batch_size`` at a time."""
    inputs = [prepare(image, preprocess) for image in images]
    out: list[np.ndarray | None] = [None] * len(images)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(inputs):
        groups.setdefault(tuple(x.shape[1:]), []).append(i)
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            batch = members[start:start + batch_size]
            maps = predict(model, torch.stack([inputs[i] for i in batch]), [images[i].shape[:2] for i in batch])
            for i, disparity in zip(batch, maps):
                out[i] = disparity
    return out  # type: ignore[return-value]
