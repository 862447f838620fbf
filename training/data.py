"""The training data path, as named stages in order (``training.stages``; each stage takes its own config):

    one source's stream (source_stream), per source:
        shards                the epoch's shard order from the manifest, the same on every rank and worker
        split by node/worker  this slot's shards, or every n-th sample with fewer shards than slots
        shuffle               the epoch's sample order (a shuffle buffer over indices, known before a byte is read)
        read                  the samples in that order, shards checked against their manifest rows as they stream
    a loader worker's batches (batch_pipeline):
        sample sources        each draw picks a source by data.weights and takes its next sample
        decode                bytes -> pipeline.shards.Sample, checked against the shard contract
        geometric             the task's joint augmentation of image and target (training.augment.geometric:
                              resize, crop, flip of image, disparity and mask; training.seg_augment for labels)
        photometric           colour jitter of the image only (data.photometric)
        tensors               the task's batch tensors: normalised image (data.normalize), targets
        batch                 data.loader.batch_size samples collated
    validation (validation_batches): shards in manifest order -> first max_samples -> split by node -> decode
    -> geometric (centred, no flip) -> photometric (none) -> tensors -> batch.

Shards (WebDataset tars) are streamed by ``pipeline.shards.iter_shard_members`` from the directories that the
manifests name (``<prefix>/<source>/<split>/``, local or ``s3://``; s3 through boto3 via ``pipeline.storage``).
Each manifest is read once when the loader is built; each shard's size and sha256 are checked against its row
as it streams by, and every sample is decoded and checked against the shard contract by
``pipeline.shards.decode_sample``; a bad shard is handled by ``data.on_bad_shard`` (``training.bad_shards``).
Streams are endless: each source restarts with a new shard order when it runs out, so a run is a number of
*steps*, every rank runs exactly the same number of them, and uneven shard counts cannot hang DDP. Within one
pass over a source no two slots (rank x loader worker) read the same sample (see ``training.sampling``). A rank's
stream is a deterministic function of the seeds, the curriculum phase, the rank and the loader worker, and
continues exactly after a given number of consumed batches (``DataPosition``, saved in checkpoints;
``training.curriculum``).

A batch is a dict: ``image`` float ``[B, 3, S, S]`` normalised, ``disparity`` float ``[B, 1, S, S]``
(inverse depth up to scale and shift), ``mask`` bool ``[B, 1, S, S]``, ``source`` and ``key``: lists of str.
The task that reads ``data.target`` brings the geometric and tensors stages (``Task.geometric``,
``Task.tensors``, training.tasks): with ``target: segmentation`` the shards' ``seg.png`` replaces the depth
target: ``labels`` int64 ``[B, S, S]`` (255 = ignore), augmented by ``training.seg_augment`` (random rescale,
crop, flip).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Literal

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.manifest import read_manifest
from pipeline.shards import ShardInfo, shard_dir
from training import augment, sampling, stages
from training.bad_shards import OnBadShard, ShardReader
from training.sampling import WorkerPlace
from training.seg_augment import SegmentationAugmentConfig
from training.stages import Pipeline, seed_of
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


def source_stream(shards: Mapping[str, int], place: WorkerPlace, stream: StreamConfig, seed: int,
                  epochs: int | None = None, start: int = 0, order_seed: int | None = None,
                  reader: ShardReader | None = None) -> Iterator[dict | str]:
    """Raw samples of one source for the slot at ``place`` (a ``WorkerPlace``); endless unless ``epochs``.

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
    order_seed = stream.seed if order_seed is None else order_seed
    yield from Pipeline(
        ("shards", partial(stages.epoch_shards, shards, order_seed, epochs)),
        ("split by node/worker", partial(stages.split_by_node_and_worker, place=WorkerPlace(*place))),
        ("shuffle", partial(stages.shuffle, buffer=stream.shuffle, seed=seed, start=start)),
        ("read", partial(stages.read, reader=reader)),
    )


def batch_pipeline(data: DataConfig, streams: Mapping[str, Iterator], probabilities: Sequence[float],
                   rng: random.Random, first: int, augment_seed: int, reader: ShardReader) -> Pipeline:
    """A loader worker's batches from its source streams (:func:`source_stream`), stage by stage: ``rng`` draws
    the sources (draws counted from ``first``), draw ``i`` augments with generator ``(augment_seed, i)``; the
    task that reads ``data.target`` brings its geometric augmentation and its tensors."""
    task = task_for_target(data.target)
    return Pipeline(
        ("sample sources", partial(stages.draws, streams, probabilities, rng, first, augment_seed)),
        ("decode", partial(stages.decode, reader=reader)),
        ("geometric", stages.each(task.geometric, task.geometric_config(data))),
        ("photometric", stages.each(stages.photometric, data.photometric)),
        ("tensors", stages.each(task.tensors, data.normalize)),
        ("batch", partial(stages.batches, size=data.loader.batch_size, reader=reader)),
    )


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


@dataclasses.dataclass
class DataPosition:
    """Where one rank's training stream stands; each checkpoint's ``meta.json`` holds it as ``data_position``.

    phase: the curriculum phase (index into ``training.config.phases``) the stream belongs to; salt: 0, or the
    step at which the stream was started afresh because the saved one could not continue (see
    ``training.curriculum``); batches: how many batches the training step has taken from this stream, which is
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
    it replays its source draws without data (``sampling.skip_draws``), each source stream skips the samples
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
        self.probabilities = sampling.source_weights(list(shards), config.weights)

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
        mix_rng = random.Random(seed_of(*base, "mix"))
        taken = sampling.skip_draws(list(self.shards), self.probabilities, mix_rng, skip)
        place = WorkerPlace(self.rank, self.world, worker, workers)
        reader = ShardReader(cfg.on_bad_shard, {url: row for rows in self.shards.values() for url, row in rows.items()})
        streams = {name: source_stream({url: row.samples for url, row in rows.items()}, place, cfg.stream,
                                       seed_of(*base, name), start=taken[name], order_seed=seed_of(*phase, "order"),
                                       reader=reader)
                   for name, rows in self.shards.items()}
        return iter(batch_pipeline(cfg, streams, self.probabilities, mix_rng, skip, seed_of(*base, "augment"), reader))


def make_loader(config: DataConfig, rank: int = 0, world: int = 1, sources: Sequence[str] | None = None,
                position: DataPosition | None = None) -> Iterator[dict]:
    """An endless iterator of batches for one rank; ``sources`` restricts to a subset (curriculum);
    ``position``: continue a stream after the batches it says were consumed (default: a fresh phase 0)."""
    sampling.source_weights(config.shards.sources, config.weights)  # names a typo before anything streams
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
    task = task_for_target(config.target)
    yield from Pipeline(
        ("shards", partial(stages.in_order, rows, reader, source)),
        ("first max_samples", lambda draws: itertools.islice(draws, max_samples)),
        ("split by node", partial(sampling.split_samples, slot=rank, slots=world)),
        ("decode", partial(stages.decode, reader=reader)),
        ("geometric", stages.each(task.geometric, task.geometric_config(config))),
        ("photometric", stages.each(stages.photometric, config.photometric)),  # none: validation draws no rng
        ("tensors", stages.each(task.tensors, config.normalize)),
        ("batch", partial(stages.validation_batches, size=config.loader.batch_size)),
    )
