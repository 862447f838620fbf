"""The evaluation crops of NYUv2 and KITTI, as data, and the KITTI benchmark crop of the network's input.

A :class:`Crop` is a box of the ground truth kept for scoring, in fractions of its height and width
(end-exclusive), turned into pixels by a named rounding so that each crop gives exactly the pixels of the code
that defined it (BTS ``utils/eval_with_pngs.py``, whose output the paper's Tables 2 and 3 report):

| crop | rows, columns | on |
|---|---|---|
| Eigen (Eigen et al. 2014) | ``45:471, 41:601`` | NYUv2's 480 x 640 frames (at other sizes: the fractions, rounded) |
| Garg (Garg et al. 2016) | ``int(0.40810811 h):int(0.99189189 h)``, ``int(0.03594771 w):int(0.96405229 w)`` | KITTI |

The KITTI benchmark (KB) crop is not a scoring crop: the official KITTI evaluation (isl-org/DPT
``run_monodepth.py --kitti_crop``, BTS ``--do_kb_crop``) runs the network on the bottom 352 rows and the central
1216 columns of the frame and places the prediction back at that box, 0 elsewhere; on KITTI's frames (about
375 x 1242) the Garg crop lies inside it, so those zeros are never scored.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np

Box = tuple[int, int, int, int]  # (top, bottom, left, right) in pixels, end-exclusive


@dataclasses.dataclass(frozen=True)
class Crop:
    """A scoring box ``(top, bottom, left, right)`` in fractions of the height and width, end-exclusive;
    ``rounding`` turns fractions into pixels: ``round`` (nearest) or ``floor`` (Python's ``int()``, as BTS)."""

    name: str
    top: float
    bottom: float
    left: float
    right: float
    rounding: Literal["round", "floor"]

    @property
    def fractions(self) -> tuple[float, float, float, float]:
        return self.top, self.bottom, self.left, self.right

    def box(self, height: int, width: int) -> Box:
        to_pixels = round if self.rounding == "round" else math.floor
        return (to_pixels(self.top * height), to_pixels(self.bottom * height),
                to_pixels(self.left * width), to_pixels(self.right * width))

    def mask(self, height: int, width: int) -> np.ndarray:
        """``[height, width]`` bool, True inside the box."""
        top, bottom, left, right = self.box(height, width)
        inside = np.zeros((height, width), bool)
        inside[top:bottom, left:right] = True
        return inside


# 45/480 ... are exact at 480 x 640: round() gives BTS's eval_mask[45:471, 41:601].
EIGEN_NYU_CROP = Crop("eigen", 45 / 480, 471 / 480, 41 / 640, 601 / 640, "round")
GARG_CROP = Crop("garg", 0.40810811, 0.99189189, 0.03594771, 0.96405229, "floor")
CROPS: dict[str, Crop] = {c.name: c for c in (EIGEN_NYU_CROP, GARG_CROP)}

# The KITTI benchmark crop: the depth benchmark's image size, 352 x 1216 (height x width).
KB_CROP_SIZE = (352, 1216)


def kb_crop_box(height: int, width: int) -> Box:
    """The bottom 352 rows and central 1216 columns of a ``height x width`` KITTI frame (left margin rounded
    down, as ``(width - 1216) // 2`` in the official code). Raises ``ValueError`` for a smaller frame."""
    crop_h, crop_w = KB_CROP_SIZE
    if height < crop_h or width < crop_w:
        raise ValueError(f"KITTI benchmark crop: a {height}x{width} frame is smaller than {crop_h}x{crop_w}")
    top, left = height - crop_h, (width - crop_w) // 2
    return top, top + crop_h, left, left + crop_w


def paste(pred: np.ndarray, box: Box, shape: tuple[int, int], fill: float = 0.0) -> np.ndarray:
    """A prediction made on the ``box`` of a frame, placed back on a ``shape`` array of ``fill``."""
    top, bottom, left, right = box
    if pred.shape != (bottom - top, right - left):
        raise ValueError(f"paste: prediction {pred.shape} does not fill the box {box}")
    out = np.full(shape, fill, dtype=pred.dtype)
    out[top:bottom, left:right] = pred
    return out
