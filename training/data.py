"""The training data path: shards -> split by node/worker -> shuffle -> decode -> augment -> mix -> batch.

Shards are read with WebDataset from the directories that the manifests name (``<prefix>/<source>/<split>/``,
local or ``s3://``; s3 streams through boto3 via ``pipeline.storage``). Each manifest is read once when the
loader is built; every sample is decoded and checked against the shard contract by
``pipeline.shards.decode_sample``. Streams are endless: each source restarts with a new shard order when
it runs out, so a run is a number of *steps*, every rank runs exactly the same number of them, and uneven
shard counts cannot hang DDP. Within one pass over a source no two slots (rank x loader worker) read the
same sample (see ``training.mixing``).

A batch is a dict: ``image`` float ``[B, 3, S, S]`` normalised, ``disparity`` float ``[B, 1, S, S]``
(inverse depth up to scale and shift), ``mask`` bool ``[B, 1, S, S]``, ``source`` and ``key``: lists of str.
With ``target: segmentation`` the shards' ``seg.png`` replaces the depth target: ``labels`` int64 ``[B, S, S]``
(255 = ignore), augmented by ``training.seg_augment`` (random rescale, crop, flip).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline import storage
from pipeline.manifest import read_manifest
from pipeline.shards import decode_sample, shard_dir
from training import augment, mixing
from training.seg_augment import SegmentationAugmentConfig, augment_segmentation


def _gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **_):
    """WebDataset opener for ``s3://``: a streaming boto3 body through pipeline.storage (AWS_* config)."""
    if mode != "rb":
        raise ValueError(f"{url}: s3 shards open read-only, not {mode!r}")
    return storage.open_read(url)


# WebDataset has no s3:// opener of its own (only `pipe:aws s3 cp`, a subprocess per shard).
wds.gopen_schemes["s3"] = _gopen_s3


@dataclasses.dataclass
class ShardsConfig:
    """prefix: the corpus root (local or s3://); sources: ``<prefix>/<source>/<split>/`` directories to read."""

    prefix: str
    sources: list[str]
    split: str = "train"

    def __post_init__(self):
        if not self.sources:
            raise ValueError("at least one source is needed")


@dataclasses.dataclass
class StreamConfig:
    """shuffle: samples in each slot's shuffle buffer; seed: shard order and shuffling (same on all ranks)."""

    shuffle: int = 64
    seed: int = 0


@dataclasses.dataclass
class LoaderConfig:
    """batch_size: per rank; workers: DataLoader processes per rank (0: in the training process)."""

    batch_size: int = 8
    workers: int = 2
    prefetch: int = 2


def source_shards(config: ShardsConfig) -> dict[str, list[str]]:
    """``{source: [shard url, ...]}`` from each source's manifest; a missing or empty one is an error."""
    out = {}
    for source in config.sources:
        directory = shard_dir(config.prefix, source, config.split)
        try:
            shards = read_manifest(directory)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"source {source!r}: no manifest.parquet in {directory} (not ingested?)") from exc
        urls = [s.url for s in shards if s.samples > 0]
        if not urls:
            raise ValueError(f"source {source!r}: the manifest in {directory} lists no samples")
        out[source] = urls
    return out


def read_samples(urls: Sequence[str]) -> Iterator[dict]:
    """Raw WebDataset samples (``__key__``, ``__url__``, suffix -> bytes) of shards, in order."""
    return wds.tarfile_samples([{"url": url} for url in urls])


def source_stream(urls, slot: tuple[int, int, int, int], stream: StreamConfig, seed: int,
                  epochs: int | None = None) -> Iterator[dict]:
    """Raw samples of one source for one slot ``(rank, world, worker, workers)``; endless unless ``epochs``."""
    rank, world, worker, workers = slot
    rng = random.Random(seed)
    epoch = 0
    while epochs is None or epoch < epochs:
        mine, split = mixing.slot_shards(mixing.epoch_order(urls, stream.seed, epoch), rank, world, worker, workers)
        samples = read_samples(mine)
        if split:
            samples = mixing.split_samples(samples, rank * workers + worker, world * workers)
        produced = 0
        for sample in mixing.shuffle(samples, stream.shuffle, rng):
            produced += 1
            yield sample
        if produced == 0:
            raise ValueError(f"shards {list(urls)[:3]}...: no sample for slot {rank * workers + worker}")
        epoch += 1


def segmentation_transform(sample, config: SegmentationAugmentConfig, photo: augment.PhotometricConfig,
                           norm: augment.NormalizeConfig, rng: np.random.Generator | None) -> dict:
    """A decoded segmentation sample -> ``image [3, S, S]``, ``labels`` int64 ``[S, S]`` (255 = ignore)."""
    if sample.segmentation is None:
        raise ValueError(f"{sample.key}: data.target is segmentation but the sample has no seg.png member")
    image = torch.from_numpy(np.array(sample.rgb, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
    labels = torch.from_numpy(np.asarray(sample.segmentation, dtype=np.int64))
    image, labels, frame = augment_segmentation(image, labels, config, rng)
    image = augment.photometric(image, photo, rng) if rng is not None else image
    return {"image": augment.normalize(image, frame, norm), "labels": labels,
            "source": sample.meta["source"], "key": sample.key}


def train_transform(members: dict, config: augment.GeometricConfig, photo: augment.PhotometricConfig,
                    norm: augment.NormalizeConfig, rng: np.random.Generator,
                    segmentation: SegmentationAugmentConfig | None = None) -> dict:
    """Decode one raw sample and apply the paper's augmentation -> tensors of one sample.

    With ``segmentation`` (``data.target: segmentation``) the label map and the segmentation recipe are used."""
    sample = decode_sample(members)
    if segmentation is not None:
        return segmentation_transform(sample, segmentation, photo, norm, rng)
    image, disparity, mask = augment.to_tensors(sample.rgb, sample.disparity, sample.mask)
    image, disparity, mask, frame = augment.geometric(image, disparity, mask, config, rng)
    image = augment.photometric(image, photo, rng) if rng is not None else image
    return {"image": augment.normalize(image, frame, norm), "disparity": disparity[None], "mask": mask[None],
            "source": sample.meta["source"], "key": sample.key}


def collate(samples: list[dict]) -> dict:
    out = {name: torch.stack([s[name] for s in samples]) for name in ("image", "disparity", "mask", "labels")
           if name in samples[0]}
    out.update(source=[s["source"] for s in samples], key=[s["key"] for s in samples])
    return out


@dataclasses.dataclass
class DataConfig:
    """Everything the training data path needs; each stage reads only its own part."""

    shards: ShardsConfig
    weights: dict[str, float] = dataclasses.field(default_factory=dict)
    stream: StreamConfig = dataclasses.field(default_factory=StreamConfig)
    loader: LoaderConfig = dataclasses.field(default_factory=LoaderConfig)
    geometric: augment.GeometricConfig = dataclasses.field(default_factory=augment.GeometricConfig)
    photometric: augment.PhotometricConfig = dataclasses.field(default_factory=augment.PhotometricConfig)
    normalize: augment.NormalizeConfig = dataclasses.field(default_factory=augment.NormalizeConfig)
    # What the shards hold for the task: disparity (depth) or seg.png label maps (segmentation, own augmentation).
    target: Literal["disparity", "segmentation"] = "disparity"
    segmentation: SegmentationAugmentConfig = dataclasses.field(default_factory=SegmentationAugmentConfig)

    def segmentation_config(self) -> SegmentationAugmentConfig | None:
        return self.segmentation if self.target == "segmentation" else None


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


class MixedShardStream(IterableDataset):
    """Endless batches mixed across sources for one rank; each DataLoader worker is one slot.

    ``start_step`` (the data position of a resumed run) reseeds mixing, shuffling and augmentation so that a
    resumed run does not replay the order it has already trained on.
    """

    def __init__(self, config: DataConfig, shards: dict[str, list[str]], rank: int = 0, world: int = 1,
                 start_step: int = 0):
        self.config, self.shards, self.rank, self.world, self.start_step = config, shards, rank, world, start_step
        self.probabilities = mixing.source_weights(list(shards), config.weights)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        slot = (self.rank, self.world, worker, workers)
        base = (self.config.stream.seed, self.rank, worker, self.start_step)
        streams = {
            name: source_stream(urls, slot, self.config.stream, _seed(*base, name))
            for name, urls in self.shards.items()
        }
        rng = np.random.default_rng(_seed(*base, "augment"))
        cfg = self.config
        samples = (
            train_transform(members, cfg.geometric, cfg.photometric, cfg.normalize, rng, cfg.segmentation_config())
            for _, members in mixing.mix(streams, self.probabilities, random.Random(_seed(*base, "mix")))
        )
        return mixing.batched(samples, cfg.loader.batch_size, collate)


def make_loader(config: DataConfig, rank: int = 0, world: int = 1, start_step: int = 0,
                sources: Sequence[str] | None = None) -> Iterator[dict]:
    """An endless iterator of batches for one rank; ``sources`` restricts to a subset (curriculum)."""
    mixing.source_weights(config.shards.sources, config.weights)  # names a typo before anything streams
    shards = source_shards(config.shards)
    if sources is not None:
        missing = sorted(set(sources) - set(shards))
        if missing:
            raise ValueError(f"curriculum names sources {missing} that data.shards.sources does not list")
        shards = {name: shards[name] for name in sources}
    weights = {k: v for k, v in config.weights.items() if k in shards}
    dataset = MixedShardStream(dataclasses.replace(config, weights=weights), shards, rank, world, start_step)
    workers = config.loader.workers
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=False,
                        prefetch_factor=config.loader.prefetch if workers else None)
    return iter(loader)


def validation_batches(config: DataConfig, source: str, split: str, rank: int, world: int,
                       max_samples: int | None = None) -> Iterator[dict]:
    """Deterministic batches of one source's ``split`` for one rank (centred crop, no flip, no jitter).

    Ranks take every ``world``-th sample of the first ``max_samples``, so together they see each once.
    """
    shards = source_shards(dataclasses.replace(config.shards, sources=[source], split=split))[source]
    samples = itertools.islice(read_samples(shards), max_samples)
    mine = mixing.split_samples(samples, rank, world)
    tensors = (train_transform(m, config.geometric, config.photometric, config.normalize, None,
                               config.segmentation_config()) for m in mine)
    batch: list[dict] = []
    for sample in tensors:
        batch.append(sample)
        if len(batch) == config.loader.batch_size:
            yield collate(batch)
            batch = []
    if batch:
        yield collate(batch)
