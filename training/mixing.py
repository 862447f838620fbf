"""Which samples a loader slot reads, and how sources are mixed into batches.

A *slot* is one loader worker of one rank: ``slot = rank * workers + worker`` of ``slots = world * workers``.
Within one pass over a source (an epoch of that source), slots read disjoint samples:

- with at least as many shards as slots, shards are dealt out (``split_by_node`` then ``split_by_worker``);
- with fewer shards than slots (a small source on a big cluster), every slot reads the shards but keeps
  only every ``slots``-th sample (``split_samples``), so no slot is left without data and nothing repeats.

Mixing as in MiDaS: each sample of a batch first draws its source (uniform by default, weights
configurable) and then takes the next sample of that source's stream.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def split_by_node(urls: Sequence[str], rank: int, world: int) -> list[str]:
    """The shards of one rank: every ``world``-th, starting at ``rank``."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside world size {world}")
    return list(urls[rank::world])


def split_by_worker(urls: Sequence[str], worker: int, workers: int) -> list[str]:
    """The shards of one loader worker within a rank's shards."""
    if not 0 <= worker < workers:
        raise ValueError(f"worker {worker} is outside {workers} loader workers")
    return list(urls[worker::workers])


def split_samples(samples: Iterable[T], slot: int, slots: int) -> Iterator[T]:
    """Every ``slots``-th sample starting at ``slot`` (used when there are fewer shards than slots)."""
    for index, sample in enumerate(samples):
        if index % slots == slot:
            yield sample


def slot_shards(urls: Sequence[str], rank: int, world: int, worker: int, workers: int) -> tuple[list[str], bool]:
    """(shards this slot reads, whether it must also split their samples)."""
    if len(urls) >= world * workers:
        return split_by_worker(split_by_node(urls, rank, world), worker, workers), False
    return list(urls), True


def epoch_order(urls: Sequence[str], seed: int, epoch: int) -> list[str]:
    """Shards of one source in a shuffled order that every rank and worker agrees on (same seed, same epoch)."""
    order = sorted(urls)
    random.Random(f"{seed}-{epoch}").shuffle(order)
    return order


def shuffle(samples: Iterable[T], buffer: int, rng: random.Random) -> Iterator[T]:
    """Shuffle a stream through a buffer of ``buffer`` samples (0 or 1: no shuffling)."""
    if buffer <= 1:
        yield from samples
        return
    pool: list[T] = []
    for sample in samples:
        if len(pool) < buffer:
            pool.append(sample)
            continue
        index = rng.randrange(len(pool))
        pool[index], sample = sample, pool[index]
        yield sample
    rng.shuffle(pool)
    yield from pool


def source_weights(sources: Sequence[str], weights: Mapping[str, float]) -> list[float]:
    """Mixing probabilities of ``sources`` (uniform unless ``weights`` names them); checks the names."""
    unknown = sorted(set(weights) - set(sources))
    if unknown:
        raise ValueError(f"mixing weights name sources that are not trained on: {unknown} (sources: {list(sources)})")
    values = [float(weights.get(s, 1.0)) for s in sources]
    if any(v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"mixing weights must be >= 0 with a positive sum, got {dict(zip(sources, values))}")
    total = sum(values)
    return [v / total for v in values]


def mix(streams: Mapping[str, Iterator[Any]], probabilities: Sequence[float], rng: random.Random) -> Iterator[tuple[str, Any]]:
    """Endless ``(source, sample)``: draw a source with ``probabilities``, then take its next sample."""
    names = list(streams)
    while True:
        name = rng.choices(names, weights=probabilities)[0]
        yield name, next(streams[name])


def batched(samples: Iterable[T], size: int, collate: Callable[[list[T]], Any]) -> Iterator[Any]:
    """Full batches of ``size`` samples, collated (a trailing partial batch is dropped)."""
    batch: list[T] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == size:
            yield collate(batch)
            batch = []
