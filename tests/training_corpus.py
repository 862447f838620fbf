"""Small shard corpora for the training tests: procedural scenes with exact depth (pipeline.demo)."""

from __future__ import annotations

from pipeline.demo import demo_samples
from pipeline.manifest import write_manifest, write_rejects
from pipeline.shards import ShardWriter, shard_dir, shard_url


def write_source(prefix: str, source: str, count: int, per_shard: int, split: str = "train", offset: int = 0) -> list[str]:
    """Write ``count`` scenes of ``source`` into shards of ``per_shard`` samples; returns the sample keys."""
    samples = demo_samples(count + offset, split=split, source=source)[offset:]
    infos = []
    for index, start in enumerate(range(0, count, per_shard)):
        with ShardWriter(shard_url(prefix, source, split, index)) as writer:
            for sample in samples[start:start + per_shard]:
                writer.write(sample)
        infos.append(writer.info)
    directory = shard_dir(prefix, source, split)
    write_rejects(directory, [])
    write_manifest(directory, infos)
    return [s.key for s in samples]


class TinyDepthNet:
    """Factory for a tiny CPU model with the DPT interface: [B, 3, H, W] -> non-negative [B, 1, H, W]."""

    def __new__(cls, width: int = 8):
        import torch
        from torch import nn

        class _Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.backbone = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.GELU(),
                                              nn.Conv2d(width, width, 3, padding=1), nn.GELU())
                self.head = nn.Conv2d(width, 1, 3, padding=1)

            def forward(self, x):
                return nn.functional.softplus(self.head(self.backbone(x)))

        return _Net()
