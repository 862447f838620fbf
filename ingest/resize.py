"""``--max-side``: shrink a sample so that its longer side is at most N pixels, never mixing valid and
invalid target pixels.

RGB uses Lanczos (antialiased). A segmentation label map uses nearest neighbour only: class ids are
categories, and any blend of two ids (or of an id and 255 = ignore) would be a third, wrong class.
The disparity uses *masked area averaging*: each output pixel is the mean of the valid input disparities
under its footprint (``box(d * m) / box(m)``), so an invalid pixel (stored as 0) never drags a valid
neighbour towards zero. An output pixel is valid when at least half of its footprint was valid; otherwise
it is invalid and stored as 0. Samples are never enlarged.

What depends on the pixel grid follows it: a stereo disparity (pixels) is multiplied by the horizontal
scale, and intrinsics in the metadata (``fx``, ``fy``, ``cx``, ``cy``, pixels) are rescaled. Disparity
from depth (``1 / d``) and inverse depth up to scale do not depend on the image size.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from pipeline.shards import Sample

# An output pixel is valid when at least this fraction of its input footprint was valid.
MIN_FOOTPRINT_VALID = 0.5


def target_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """``(height, width)`` with the longer side at most ``max_side``, aspect kept, each side >= 1."""
    scale = max_side / max(height, width)
    if scale >= 1:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_target(disparity: np.ndarray, valid: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Masked area averaging of ``disparity`` float32 ``[H, W]`` with ``valid`` bool ``[H, W]`` to ``size``
    ``(h, w)`` -> ``(disparity float32 [h, w], valid bool [h, w])``, 0 where invalid."""
    h, w = size
    weights = valid.astype(np.float32)
    masked = np.where(valid, disparity, 0).astype(np.float32)

    def box(array: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(np.ascontiguousarray(array, np.float32)).resize((w, h), Image.Resampling.BOX), np.float32)

    total, coverage = box(masked), box(weights)
    out_valid = coverage >= MIN_FOOTPRINT_VALID - 1e-6
    out = np.zeros((h, w), np.float32)
    np.divide(total, coverage, out=out, where=out_valid)
    return out, out_valid


def _scaled_intrinsics(meta: dict, sx: float, sy: float) -> dict:
    """Pinhole intrinsics for the resized grid (pixel centres: ``c' = (c + 0.5) * s - 0.5``)."""
    out = {}
    if "fx" in meta:
        out["fx"] = meta["fx"] * sx
    if "fy" in meta:
        out["fy"] = meta["fy"] * sy
    if "cx" in meta:
        out["cx"] = (meta["cx"] + 0.5) * sx - 0.5
    if "cy" in meta:
        out["cy"] = (meta["cy"] + 0.5) * sy - 0.5
    return out


def resize_sample(sample: Sample, max_side: int | None) -> Sample:
    """``sample`` with its longer side at most ``max_side`` (unchanged when already small enough).

    A resized image is re-encoded in its original format (JPEG stays JPEG) by the shard writer.
    """
    if not max_side:
        return sample
    height, width = sample.rgb.shape[:2]
    size = target_size(height, width, max_side)
    if size == (height, width):
        return sample
    rgb = np.asarray(Image.fromarray(sample.rgb).resize((size[1], size[0]), Image.Resampling.LANCZOS))
    disparity, mask, labels = sample.disparity, sample.mask, sample.segmentation
    sy, sx = size[0] / height, size[1] / width
    if disparity is not None:
        disparity, mask = resize_target(disparity, mask, size)
        if sample.meta.get("kind") == "stereo_disparity":
            disparity *= np.float32(sx)
    if labels is not None:
        labels = resize_labels(labels, size)
    meta = {**sample.meta, "height": size[0], "width": size[1], "original_size": [height, width]}
    meta.update(_scaled_intrinsics(meta, sx, sy))
    return dataclasses.replace(sample, rgb=rgb, disparity=disparity, mask=mask, segmentation=labels, meta=meta,
                               rgb_bytes=None)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 ``[H, W]`` label map to ``size`` ``(h, w)``: every output value
    is one of the input's values (never a blend)."""
    h, w = size
    return np.asarray(Image.fromarray(np.ascontiguousarray(labels, np.uint8)).resize((w, h), Image.Resampling.NEAREST))
