"""Tiny dataset trees for the ingest tests, written in the layout the ``folder`` adapter reads.

``<root>/scene<k>/rgb/<frame>.jpg`` with ``<root>/scene<k>/depth/<frame>.png`` (16-bit millimetres), so
the command line is ``--image-glob '*/rgb/*.jpg' --target-glob '*/depth/*.png' --target metric_depth
--target-divisor 1000``. Depth values are random but seeded: the same call writes the same bytes.

What an ingest wrote, to compare two runs: ``digests`` of one split, ``state`` of every split, ``mtimes`` of
the shards, and how many shards a resumed run ``kept``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from pipeline import storage
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


def digests(directory: str) -> dict[str, bytes]:
    """{file name: sha256} of the shards, manifest and rejects of one split directory."""
    names = [u for u in storage.list_files(directory) if "/_progress/" not in u]
    return {storage.basename(u): hashlib.sha256(storage.read_bytes(u)).digest() for u in names}


def state(out: Path) -> dict[str, dict[str, bytes]]:
    return {split.name: digests(str(split)) for split in sorted((out / "folder").iterdir())}


def mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("shard-*.tar")}


def kept(stdout: str) -> int:
    return int(re.search(r"\((\d+) kept from an earlier run\)", stdout).group(1))
