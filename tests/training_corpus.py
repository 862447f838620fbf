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
