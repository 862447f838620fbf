"""The label sets of the segmentation data: what each ``seg.png`` id means, and the colours pictures give them.

One home for each fact, read by the ingest adapters, the models' heads, the benchmark readers and the pictures:

| label set | ids in seg.png | from the release |
|---|---|---|
| ADE20K (scene parsing, 150 classes) | 0..149 | annotation ``k`` in 1..150 -> ``k - 1``; 0 ("other") -> 255 |
| PASCAL-Context, 59 classes (the common protocol) | 0..58 | label ``k`` in 1..59 -> ``k - 1``; 0 (background) -> 255 |
| PASCAL-Context, 60 classes (background as a class) | 0..59 | label ``k`` in 0..59 kept; 0 is ``background`` |

ADE20K's 150 names are the release's ``objectInfo150.txt``. PASCAL-Context (Mottaghi et al., CVPR 2014) labels
VOC2010 images with 400+ classes; the 59 most frequent (:data:`PASCAL_CONTEXT_NAMES`, in alphabetical order, the
order of the label values 1..59 of ``SegmentationClassContext``) are what everyone trains and scores, everything
else being background (0).

Colours: :func:`voc_colormap` is the PASCAL VOC development kit's colour map (the bits of an id spread over the
high bits of R, G and B), distinct for every id up to 255; ``dpt predict`` paints class ids with it.
:data:`PASCAL_CONTEXT_PALETTE` gives each of the 59 classes the colour of its label value in that map (so a class
has the same colour in the 59- and the 60-class variant, and background is black, as in VOC).
"""

from __future__ import annotations

import numpy as np

# ADE20K's scene-parsing classes, seg.png ids 0..149: the ingest adapter, the *_ade20k models' heads and the
# ADE20K benchmark all count them from here (pipeline.shards re-exports it, where it was first defined).
ADE20K_CLASSES = 150

# PASCAL-Context's 59 classes, label values 1..59 of SegmentationClassContext in this order (0 = background).
PASCAL_CONTEXT_NAMES: tuple[str, ...] = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building",
    "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog", "door",
    "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain",
    "mouse", "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign",
    "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window",
    "wood",
)
PASCAL_CONTEXT_CLASSES = len(PASCAL_CONTEXT_NAMES)  # 59: the pascal_context models' heads and benchmarks
PASCAL_CONTEXT_BACKGROUND = "background"  # label value 0: ignored (59 classes) or class 0 (60 classes)


def voc_colormap(count: int = 256) -> np.ndarray:
    """uint8 ``[count, 3]``: the PASCAL VOC colour of each id (bits of the id spread over the high bits of R,
    G, B: 0 black, 1 dark red, 2 dark green, ...)."""
    colours = np.zeros((count, 3), np.uint8)
    for index in range(count):
        value, shift = index, 7
        while value:
            for channel in range(3):
                colours[index, channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
    return colours


# uint8 [59, 3]: the colour of each of the 59 classes (seg.png id k is label value k + 1), for picture grids.
PASCAL_CONTEXT_PALETTE = voc_colormap(PASCAL_CONTEXT_CLASSES + 1)[1:]
