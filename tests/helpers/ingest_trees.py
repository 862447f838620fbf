"""Tiny dataset trees for the ingest tests, written in the layout the ``folder`` adapter reads.

``<root>/scene<k>/rgb/<frame>.jpg`` with ``<root>/scene<k>/depth/<frame>.png`` (16-bit millimetres), so
the command line is ``--image-glob '*/rgb/*.jpg' --target-glob '*/depth/*.png' --target metric_depth
--target-divisor 1000``. Depth values are random but seeded: the same call writes the same bytes.
"""

from __future__ import annotations

import numpy as np

from tests.helpers.adapter_tools import write_files
from tests.helpers.images import jpeg, png

FOLDER_ARGS = ["--image-glob", "*/rgb/*.jpg", "--target-glob", "*/depth/*.png",
               "--target", "metric_depth", "--target-divisor", "1000"]


def frame(rng: np.random.Generator, height: int, width: int) -> tuple[bytes, bytes]:
    """(JPEG bytes, 16-bit PNG of depth in millimetres 500..5000)."""
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    depth = rng.integers(500, 5000, (height, width)).astype(np.uint16)
    return jpeg(rgb, quality=90), png(depth)


def write_folder_dataset(root: str, scenes: int = 4, frames: int = 3, height: int = 24, width: int = 32,
                         seed: int = 0) -> dict[str, bytes]:
    """Write ``scenes`` x ``frames`` samples in the ``folder`` layout under ``root`` (local or s3://); returns
    {relative path: bytes}."""
    rng = np.random.default_rng(seed)
    files = {}
    for s in range(scenes):
        for f in range(frames):
            rgb, depth = frame(rng, height, width)
            files[f"scene{s}/rgb/{f:04d}.jpg"] = rgb
            files[f"scene{s}/depth/{f:04d}.png"] = depth
    write_files(root, files)
    return files

