"""Helpers for the dataset adapter tests: tiny native trees written through pipeline.storage, and the
contract round trip (assemble -> ShardWriter -> iter_shard) every adapter must survive."""

from __future__ import annotations

import numpy as np

from ingest.assemble import assemble_sample
from ingest.sources import get_source
from pipeline import storage
from pipeline.shards import ShardWriter, iter_shard, shard_url

H, W = 8, 12


def rgb(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    """A smooth uint8 ``[h, w, 3]`` image (gradients survive JPEG well)."""
    ys, xs = np.mgrid[0:h, 0:w]
    base = np.stack([xs * 20 + seed * 7, ys * 25 + seed * 3, np.full((h, w), 90 + seed)], -1)
    return np.clip(base, 0, 255).astype(np.uint8)


def write_files(root: str, files: dict[str, bytes]) -> None:
    """Write each ``{relative path: bytes}`` of ``files`` under ``root`` (local or s3://)."""
    for relative, data in files.items():
        storage.write_bytes(storage.join(root, relative), data)


def adapter(name: str, root: str):
    return get_source(name)(root)


def assemble_all(source, refs, split: str = "train") -> dict:
    """id -> contract Sample for every ref."""
    return {ref.id: assemble_sample(source, ref, split) for ref in refs}


def round_trip(source, refs, out_root: str) -> None:
    """Assemble every ref, write one shard, read it back and require equality."""
    samples = [assemble_sample(source, ref, "train") for ref in refs]
    url = shard_url(out_root, source.name, "train", 0)
    with ShardWriter(url) as writer:
        for sample in samples:
            writer.write(sample)
    back = list(iter_shard(url))
    assert [s.key for s in back] == [s.key for s in samples]
    for orig, got in zip(samples, back):
        np.testing.assert_array_equal(got.mask, orig.mask)
        np.testing.assert_array_equal(got.disparity, np.where(orig.mask, orig.disparity, 0))
        assert got.meta == orig.meta
        assert got.rgb.shape == orig.rgb.shape
        if orig.rgb_format == "png":
            np.testing.assert_array_equal(got.rgb, orig.rgb)
