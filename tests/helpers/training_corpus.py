"""Small shard corpora for the training tests: procedural scenes with exact depth (pipeline.demo)."""

from __future__ import annotations

from pipeline.demo import demo_samples
from pipeline.manifest import write_manifest, write_rejects
from pipeline.shards import ShardWriter, shard_dir, shard_url


def write_source(prefix: str, source: str, count: int, per_shard: int, split: str = "train", offset: int = 0) -> list[str]:
    """Write ``count`` scenes of ``source`` into shards of ``per_shard`` samples; returns the sample keys."""
    samples = demo_samples(count, split=split, source=source, first=offset)
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


class ConstantDisparity:
    """Factory for the constant prediction (1 everywhere, ``[B, 1, H, W]``): the baseline "learned" must beat."""

    def __new__(cls):
        import torch

        class _Constant(torch.nn.Module):
            def forward(self, x):
                return torch.ones_like(x[:, :1])

        return _Constant()


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


def flip_member_bytes(shard: str, member: str, count: int = 16) -> None:
    """Invert ``count`` bytes in the middle of one tar member of ``shard`` (a member that no longer decodes,
    and a shard whose sha256 no longer matches its manifest row)."""
    import tarfile

    with tarfile.open(shard) as tar:
        info = tar.getmember(member)
    offset = info.offset_data + (info.size - count) // 2
    with open(shard, "r+b") as f:
        f.seek(offset)
        data = f.read(count)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def truncate_shard(shard: str, keep: float = 0.5) -> None:
    """Cut ``shard`` to the first ``keep`` of its bytes (a tar that cannot be read to its end)."""
    import os

    with open(shard, "r+b") as f:
        f.truncate(int(os.path.getsize(shard) * keep))


def flip_padding_byte(shard: str) -> None:
    """Set the shard's last byte (end-of-archive padding, which a tar reader never looks at): every sample
    still reads and decodes; only the sha256 differs from the manifest row."""
    with open(shard, "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x01")
