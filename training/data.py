"""The training data path: shards -> split by node/worker -> shuffle -> decode -> augment -> mix -> batch.

Shards (WebDataset tars) are streamed by ``pipeline.shards.iter_shard_members`` from the directories that the
manifests name (``<prefix>/<source>/<split>/``, local or ``s3://``; s3 through boto3 via ``pipeline.storage``).
Each manifest is read once when the loader is built; each shard's size and sha256 are checked against its row
as it streams by, and every sample is decoded and checked against the shard contract by
``pipeline.shards.decode_sample``; a bad shard is handled by ``data.on_bad_shard`` (``training.bad_shards``).
Streams are endless: each source restarts with a new shard order when it runs out, so a run is a number of
*steps*, every rank runs exactly the same number of them, and uneven shard counts cannot hang DDP. Within one
pass over a source no two slots (rank x loader worker) read the same sample (see ``training.mixing``). A rank's
stream is a deterministic function of the seeds, the curriculum phase, the rank and the loader worker, and
continues exactly after a given number of consumed batches (``DataPosition``, saved in checkpoints;
``training.resume``).

A batch is a dict: ``image`` float ``[B, 3, S, S]`` normalised, ``disparity`` float ``[B, 1, S, S]``
(inverse depth up to scale and shift), ``mask`` bool ``[B, 1, S, S]``, ``source`` and ``key``: lists of str.
The task that reads ``data.target`` decodes and augments each sample (``Task.transform``, training.tasks):
with ``target: segmentation`` the shards' ``seg.png`` replaces the depth target: ``labels`` int64 ``[B, S, S]``
(255 = ignore), augmented by ``training.seg_augment`` (random rescale, crop, flip).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.manifest import read_manifest
from pipeline.shards import ShardError, ShardInfo, decode_sample, shard_dir
from training import augment, mixing
from training.bad_shards import SKIPPED, OnBadShard, ShardReader
from training.seg_augment import SegmentationAugmentConfig
from training.tasks import task_for_target


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


def source_manifests(config: ShardsConfig) -> dict[str, dict[str, ShardInfo]]:
    """``{source: {shard url: manifest row}}`` of the shards holding samples; a missing or empty manifest is an
    error naming the source."""
    out = {}
    for source in config.sources:
        directory = shard_dir(config.prefix, source, config.split)
        try:
            shards = read_manifest(directory)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"source {source!r}: no manifest.parquet in {directory} (not ingested?)") from exc
        rows = {s.url: s for s in shards if s.samples > 0}
        if not rows:
            raise ValueError(f"source {source!r}: the manifest in {directory} lists no samples")
        out[source] = rows
    return out


def source_counts(config: ShardsConfig) -> dict[str, dict[str, int]]:
    """``{source: {shard url: samples}}`` from each source's manifest (see :func:`source_manifests`)."""
    return {source: {url: row.samples for url, row in rows.items()}
            for source, rows in source_manifests(config).items()}


def _slot_samples(shards: Sequence[tuple[str, int]], slot: int, slots: int, wanted,
                  reader: ShardReader) -> Iterator[tuple[int, dict | str]]:
    """``(epoch index, raw sample)`` of the samples a slot keeps from ``shards`` (``(url, manifest count)`` in
    epoch order; every ``slots``-th raw sample from ``slot``) whose epoch index ``wanted`` accepts.

    A shard holding no wanted sample is not opened; unwanted samples of an opened shard are dropped as bytes,
    before any decode. A bad shard goes to ``reader.bad`` (``fail``: it raises); under ``skip`` each wanted
    sample the shard did not give is :data:`SKIPPED` in its place, so every later index stays where it was."""
    offset = 0
    for url, count in shards:
        first, last = mixing.kept_before(offset, slot, slots), mixing.kept_before(offset + count, slot, slots)
        if any(wanted(i) for i in range(first, last)):
            read = 0
            try:
                for read, sample in enumerate(reader.members(url, count), start=1):
                    raw = offset + read - 1
                    if raw % slots == slot and wanted(raw // slots):
                        yield raw // slots, sample
            except ShardError as error:
                lost = [raw // slots for raw in range(offset + read, offset + count)
                        if raw % slots == slot and wanted(raw // slots)]
                reader.bad(error, len(lost))
                for index in lost:
                    yield index, SKIPPED
        offset += count


def source_stream(shards: Mapping[str, int], slot: tuple[int, int, int, int], stream: StreamConfig, seed: int,
                  epochs: int | None = None, start: int = 0, order_seed: int | None = None,
                  reader: ShardReader | None = None) -> Iterator[dict | str]:
    """Raw samples of one source for one slot ``(rank, world, worker, workers)``; endless unless ``epochs``.

    ``shards``: ``{url: samples}`` (the manifest). Epoch ``e`` deals the shards in ``epoch_order(order_seed, e)``
    (``order_seed`` defaults to ``stream.seed``; it must be the same on every slot) and streams the slot's
    samples through a shuffle buffer seeded by ``(seed, e)``. The manifest's counts give each epoch's length
    before reading, so the epoch's output order is a permutation of its input indices computed up front, and
    ``start`` (samples this stream already delivered) is skipped at the cheapest level: whole epochs by
    arithmetic, shards holding none of the remaining samples unopened, the rest dropped before decode.
    ``reader`` reads the shards and applies ``data.on_bad_shard`` (default: no checksums, a bad shard raises);
    under ``skip`` a sample a bad shard did not give is :data:`SKIPPED`, which counts as delivered.
    """
    reader = reader or ShardReader()
    rank, world, worker, workers = slot
    order_seed = stream.seed if order_seed is None else order_seed
    epoch = 0
    while epochs is None or epoch < epochs:
        shard_order = mixing.epoch_order(list(shards), order_seed, epoch)
        mine, split = mixing.slot_shards(shard_order, rank, world, worker, workers)
        keep = (rank * workers + worker, world * workers) if split else (0, 1)
        length = mixing.kept_before(sum(shards[url] for url in mine), *keep)
        if length == 0:
            raise ValueError(f"shards {list(shards)[:3]}...: no sample for slot {rank * workers + worker}")
        if start >= length:  # an epoch this stream already delivered: nothing to read
            start -= length
            epoch += 1
            continue
        order = list(mixing.shuffle(range(length), stream.shuffle, random.Random(_seed(seed, epoch))))
        position = [0] * length
        for index, item in enumerate(order):
            position[item] = index
        skip = start
        indexed = _slot_samples([(url, shards[url]) for url in mine], *keep, lambda i: position[i] >= skip, reader)
        yield from mixing.reorder(indexed, order, start)
        start = 0
        epoch += 1


def train_transform(members: dict, config: DataConfig, rng: np.random.Generator | None) -> dict:
    """Decode one raw sample and apply the augmentation of the task that reads ``data.target`` (its
    ``transform``: ``training.augment`` for disparity, ``training.seg_augment`` for label maps) -> tensors of one
    sample. ``rng=None``: validation (centred, no flip, no jitter)."""
    return task_for_target(config.target).transform(decode_sample(members), config, rng)


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
    # What the shards hold for the task (its ``target``, checked against task.kind when the config loads):
    # disparity, metric_depth (disparity = exactly 1 / depth of metric sources, for task.kind metric_depth), or
    # seg.png label maps (with their own augmentation, ``segmentation``).
    target: Literal["disparity", "metric_depth", "segmentation"] = "disparity"
    segmentation: SegmentationAugmentConfig = dataclasses.field(default_factory=SegmentationAugmentConfig)
    # A shard that fails its checksum or decoding mid-run: stop the run naming it, or skip it and log it
    # (training.bad_shards).
    on_bad_shard: OnBadShard = "fail"


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


@dataclasses.dataclass
class DataPosition:
    """Where one rank's training stream stands; each checkpoint's ``meta.json`` holds it as ``data_position``.

    phase: the curriculum phase (index into ``training.config.phases``) the stream belongs to; salt: 0, or the
    step at which the stream was started afresh because the saved one could not continue (see
    ``training.resume``); batches: how many batches the training step has taken from this stream, which is
    all a rank's position is: with a DataLoader's round-robin over its workers it says how many batches each
    worker delivered (prefetched ones never count); layout: what else the stream is a function of (world size,
    loader workers, batch size, seed, sources, weights), so that a resume can tell whether it may continue;
    skipped: per stream worker (batch i comes from worker i % workers), the draws of the consumed batches that
    delivered no sample (a bad shard under ``data.on_bad_shard: skip``), empty when there were none.
    """

    phase: int = 0
    salt: int = 0
    batches: int = 0
    layout: dict = dataclasses.field(default_factory=dict)
    skipped: list[int] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def draws(self, worker: int, workers: int, batch_size: int) -> int:
        """How many source draws stream worker ``worker`` of ``workers`` made for the consumed batches."""
        skipped = self.skipped[worker] if worker < len(self.skipped) else 0
        return len(range(worker, self.batches, workers)) * batch_size + skipped

    def consumed(self, batch: dict, workers: int) -> DataPosition:
        """The position after the training step took ``batch`` (its ``skipped`` draws counted for its worker)."""
        skipped = list(self.skipped)
        if batch.get("skipped"):
            skipped += [0] * (workers - len(skipped))
            skipped[self.batches % workers] += int(batch["skipped"])
        return dataclasses.replace(self, batches=self.batches + 1, skipped=skipped)

    @classmethod
    def from_dict(cls, data: dict) -> DataPosition:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data and f.name != "skipped"]
        if missing:
            raise ValueError(f"checkpoint meta.json: data_position lacks {missing} (has {sorted(data)})")
        return cls(int(data["phase"]), int(data["salt"]), int(data["batches"]), dict(data["layout"]),
                   [int(n) for n in data.get("skipped", [])])  # none before data.on_bad_shard existed


class MixedShardStream(IterableDataset):
    """Endless batches mixed across sources for one rank; each DataLoader worker is one slot.

    The stream is a deterministic function of the seeds, the phase of ``position``, the rank and the worker;
    ``position.batches`` (the batches already consumed) makes each worker fast-forward past what it delivered:
    it replays its source draws without data (``mixing.skip_draws``), each source stream skips the samples
    it gave (``source_stream(start=...)``), and augmentation draws come from a generator per sample index, so
    none has to be replayed; draws that a bad shard left empty (``data.on_bad_shard: skip``) are counted per
    worker in ``position.skipped`` and replayed the same way. Exact continuation this way needs no data-loader
    state in the checkpoint (one integer per rank, and those counts) and no extra dependency (torchdata's
    StatefulDataLoader would still need this dataset-level fast-forward for an iterable dataset).
    """

    def __init__(self, config: DataConfig, shards: dict[str, dict[str, ShardInfo]], rank: int = 0, world: int = 1,
                 position: DataPosition | None = None):
        """``shards``: ``{source: {url: manifest row}}`` (:func:`source_manifests`)."""
        self.config, self.shards, self.rank, self.world = config, shards, rank, world
        self.position = position or DataPosition()
        self.probabilities = mixing.source_weights(list(shards), config.weights)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        loader_worker, workers = (info.id, info.num_workers) if info else (0, 1)
        consumed, cfg = self.position.batches, self.config
        # A DataLoader takes batch i from its worker i % workers and always starts at worker 0; after
        # `consumed` batches the next one is due from stream worker consumed % workers, so roles rotate.
        worker = (loader_worker + consumed) % workers
        skip = self.position.draws(worker, workers, cfg.loader.batch_size)  # draws this worker made
        phase = (cfg.stream.seed, self.position.phase, self.position.salt)
        base = (*phase, self.rank, worker)
        mix_rng = random.Random(_seed(*base, "mix"))
        taken = mixing.skip_draws(list(self.shards), self.probabilities, mix_rng, skip)
        slot = (self.rank, self.world, worker, workers)
        reader = ShardReader(cfg.on_bad_shard, {url: row for rows in self.shards.values() for url, row in rows.items()})
        streams = {name: source_stream({url: row.samples for url, row in rows.items()}, slot, cfg.stream,
                                       _seed(*base, name), start=taken[name], order_seed=_seed(*phase, "order"),
                                       reader=reader)
                   for name, rows in self.shards.items()}
        draws = enumerate(mixing.mix(streams, self.probabilities, mix_rng), start=skip)
        return _batches(draws, cfg, _seed(*base, "augment"), reader)


def _batches(draws: Iterator[tuple[int, tuple[str, dict | str]]], config: DataConfig, augment_seed: int,
             reader: ShardReader) -> Iterator[dict]:
    """Collated batches of decoded, augmented samples from ``(draw index, (source, raw sample))``.

    Draw ``i`` augments with generator ``(augment_seed, i)``. A draw that delivers no sample (:data:`SKIPPED`,
    or a sample that does not decode, under ``skip``) is counted in the batch's ``skipped`` and the batch takes
    the next draw; ``bad_shards`` lists the skips noted meanwhile. Under ``fail`` a bad shard ends the stream
    with ``{"bad_shard": ShardError}`` in place of a batch (an exception would cross the DataLoader as text)."""
    batch, skipped = [], 0
    while True:
        try:
            index, (_, members) = next(draws)
            if members is SKIPPED:
                skipped += 1
                continue
            try:
                batch.append(train_transform(members, config, np.random.default_rng((augment_seed, index))))
            except ShardError as error:
                reader.bad(error, 1)  # fail: raises
                skipped += 1
        except ShardError as error:
            yield {"bad_shard": error}
            return
        if len(batch) == config.loader.batch_size:
            yield {**collate(batch), "skipped": skipped, "bad_shards": reader.take()}
            batch, skipped = [], 0


def make_loader(config: DataConfig, rank: int = 0, world: int = 1, sources: Sequence[str] | None = None,
                position: DataPosition | None = None) -> Iterator[dict]:
    """An endless iterator of batches for one rank; ``sources`` restricts to a subset (curriculum);
    ``position``: continue a stream after the batches it says were consumed (default: a fresh phase 0)."""
    mixing.source_weights(config.shards.sources, config.weights)  # names a typo before anything streams
    shards = source_manifests(config.shards)
    if sources is not None:
        missing = sorted(set(sources) - set(shards))
        if missing:
            raise ValueError(f"curriculum names sources {missing} that data.shards.sources does not list")
        shards = {name: shards[name] for name in sources}
    weights = {k: v for k, v in config.weights.items() if k in shards}
    dataset = MixedShardStream(dataclasses.replace(config, weights=weights), shards, rank, world, position)
    workers = config.loader.workers
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=False,
                        prefetch_factor=config.loader.prefetch if workers else None, in_order=True)
    return iter(loader)


def _validation_samples(rows: Mapping[str, ShardInfo], reader: ShardReader) -> Iterator[dict]:
    """Raw samples of the shards in order; a bad shard goes to ``reader.bad`` (``skip``: the rest of it is left)."""
    for url, row in rows.items():
        read = 0
        try:
            for read, sample in enumerate(reader.members(url, row.samples), start=1):
                yield sample
        except ShardError as error:
            reader.bad(error, max(0, row.samples - read))


def validation_batches(config: DataConfig, source: str, split: str, rank: int, world: int,
                       max_samples: int | None = None, reader: ShardReader | None = None) -> Iterator[dict]:
    """Deterministic batches of one source's ``split`` for one rank (centred crop, no flip, no jitter).

    Ranks take every ``world``-th sample of the first ``max_samples``, so together they see each once.
    ``reader`` (default: one for ``config.on_bad_shard``) checks the shards against their manifest rows and
    applies the policy; skipped validation samples are left out (every rank reads the same shards, so the
    ranks' shares stay disjoint).
    """
    rows = source_manifests(dataclasses.replace(config.shards, sources=[source], split=split))[source]
    reader = reader or ShardReader(config.on_bad_shard)
    reader.rows.update(rows)
    mine = mixing.split_samples(itertools.islice(_validation_samples(rows, reader), max_samples), rank, world)
    batch: list[dict] = []
    for members in mine:
        try:
            sample = train_transform(members, config, None)
        except ShardError as error:
            reader.bad(error, 1)
            continue
        batch.append(sample)
        if len(batch) == config.loader.batch_size:
            yield collate(batch)
            batch = []
    if batch:
        yield collate(batch)
