"""Segmentation test data: PASCAL-Context's VOC2010 tree in its released layout, and a per-pixel colour classifier
that reads the tests' coloured label maps back (the ADE20K and Pascal Context evaluation tests share it)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline import storage
from tests.helpers.images import jpeg, png

BASE = "VOCdevkit/VOC2010"  # where the release puts its folders under the dataset's root
COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]], np.uint8)  # classes 0, 1, 2 of the classifier


class ColourClassifier(nn.Module):
    """A per-pixel classifier (1x1 convolution) that recognises the three test colours: ``[B, 3, H, W]`` normalised
    -> ``[B, num_classes, H, W]`` logits, class ``c`` of colour ``COLOURS[c]`` (``ids[c]`` with ``ids``). Per-pixel,
    so its answer does not depend on scale or mirroring. ``swap`` makes it answer the second id for the third
    colour and the third for the second (a confusion matrix with off-diagonal counts)."""

    def __init__(self, num_classes: int = 150, swap: bool = False, ids: tuple[int, int, int] = (0, 1, 2)):
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, kernel_size=1)
        answers = [ids[0], ids[2], ids[1]] if swap else list(ids)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.fill_(-10.0)
            colours = torch.tensor(COLOURS, dtype=torch.float32) / 255 * 2 - 1  # after (x - 0.5) / 0.5
            for out, colour in zip(answers, colours):
                self.conv.weight[out, :, 0, 0] = 10 * colour  # logit = 5|x|^2 - 5|x - colour|^2
                self.conv.bias[out] = -5 * float((colour ** 2).sum())

    def forward(self, x):
        return self.conv(x)


def context_bands(n: int, h: int, w: int, values: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb uint8 [h, w, 3], Context label map uint8 [h, w])`` of image ``n``: four vertical bands, one background
    (label 0, grey) and three classes with label values ``values``, in the colours ``COLOURS``, shifted by ``n``."""
    labels = np.zeros((h, w), np.uint8)
    rgb = np.full((h, w, 3), 128, np.uint8)
    for band in range(4):
        which = (band + n) % 4  # 0: background, 1..3: the classes
        columns = slice(band * w // 4, (band + 1) * w // 4)
        if which:
            labels[:, columns] = values[which - 1]
            rgb[:, columns] = COLOURS[which - 1]
    return rgb, labels


def write_context(root: str, split: str, names: list[str], base: str = BASE, h: int = 40, w: int = 56,
                  values: tuple[int, int, int] = (1, 2, 3)) -> None:
    """PASCAL-Context images ``names`` of ``split`` under ``root/base`` as released: ``JPEGImages/<id>.jpg``,
    ``SegmentationClassContext/<id>.png`` (:func:`context_bands`) and ``ImageSets/SegmentationContext/<split>.txt``
    listing them."""
    folder = storage.join(root, base) if base else root
    for n, name in enumerate(names):
        rgb, labels = context_bands(n, h, w, values)
        storage.write_bytes(storage.join(folder, "JPEGImages", f"{name}.jpg"), jpeg(rgb, quality=98))
        storage.write_bytes(storage.join(folder, "SegmentationClassContext", f"{name}.png"), png(labels))
    storage.write_bytes(storage.join(folder, "ImageSets", "SegmentationContext", f"{split}.txt"),
                        "".join(f"{name}\n" for name in names).encode())
