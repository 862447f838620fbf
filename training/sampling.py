"""Source sampling: which samples a loader slot reads, and which source each sample of a batch is drawn from.
(The loss side's ``task.mixing``, mean or pareto, is how per-source losses combine: ``training.tasks``.)

A *slot* is one loader worker of one rank, an int: ``slot = rank * workers + worker`` of ``slots = world * workers``;
:class:`WorkerPlace` ``(rank, world, worker, workers)`` is where that worker sits, and gives its slot. Within
one pass over a source (an epoch of that source), slots read disjoint samples:

- with at least as many shards as slots, shards are dealt out (``split_by_node`` then ``split_by_worker``);
- with fewer shards than slots (a small source on a big cluster), every slot reads the shards but keeps
  only every ``slots``-th sample (``split_samples``), so no slot is left without data and nothing repeats.

Sampling as in MiDaS: each sample of a batch first draws its source (uniform by default, weights
configurable) and then takes the next sample of that source's stream.

Everything here is a function of seeds and of the manifests' sample counts, never of what was read: an
epoch's order is a permutation known before its first byte (``epoch_length``, ``shuffle`` over indices),
and the source draws can be replayed without data (``skip_draws``). That is what lets a resumed run
continue at an exact sample position (see ``training.data.source_stream``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")


class WorkerPlace(NamedTuple):
    """Where one loader worker sits: loader worker ``worker`` of ``workers`` on rank ``rank`` of ``world``."""

    rank: int
    world: int
    worker: int
    workers: int

    @property
    def slot(self) -> int:
        return self.rank * self.workers + self.worker

    @property
    def slots(self) -> int:
        return self.world * self.workers


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


def slot_shards(urls: Sequence[str], place: WorkerPlace) -> tuple[list[str], bool]:
    """(shards the slot at ``place`` reads, whether it must also split their samples)."""
    if len(urls) >= place.slots:
        return split_by_worker(split_by_node(urls, place.rank, place.world), place.worker, place.workers), False
    return list(urls), True


def kept_before(end: int, slot: int, slots: int) -> int:
    """How many of the raw positions ``0 .. end - 1`` ``split_samples(.., slot, slots)`` keeps."""
    return len(range(slot, max(end, 0), slots))


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


def reorder(indexed: Iterable[tuple[int, T]], order: Sequence[int], start: int = 0) -> Iterator[T]:
    """Items given as ``(index, item)`` in ascending index, yielded in ``order[start:]`` (a permutation of indices).

    Only items that arrived before their turn are held; for an ``order`` made by :func:`shuffle` with a buffer
    of B that is at most about B items, the memory of the buffer itself. Items whose position in ``order`` is
    before ``start`` must not be given.
    """
    pending: dict[int, T] = {}
    position = start
    for index, item in indexed:
        pending[index] = item
        while position < len(order) and order[position] in pending:
            yield pending.pop(order[position])
            position += 1
    if position < len(order):
        raise ValueError(f"the input ended before item {order[position]} (position {position} of {len(order)})")


def source_weights(sources: Sequence[str], weights: Mapping[str, float]) -> list[float]:
    """Sampling probabilities of ``sources`` (uniform unless ``weights`` names them); checks the names."""
    unknown = sorted(set(weights) - set(sources))
    if unknown:
        raise ValueError(f"mixing weights name sources that are not trained on: {unknown} (sources: {list(sources)})")
    values = [float(weights.get(s, 1.0)) for s in sources]
    if any(v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"mixing weights must be >= 0 with a positive sum, got {dict(zip(sources, values))}")
    total = sum(values)
    return [v / total for v in values]


def draw_samples(streams: Mapping[str, Iterator[Any]], probabilities: Sequence[float], rng: random.Random
                 ) -> Iterator[tuple[str, Any]]:
    """Endless ``(source, sample)``: draw a source with ``probabilities``, then take its next sample."""
    names = list(streams)
    while True:
        name = draw_source(names, probabilities, rng)
        yield name, next(streams[name])


def draw_source(names: Sequence[str], probabilities: Sequence[float], rng: random.Random) -> str:
    """One source draw of :func:`draw_samples` (one ``rng.random()``)."""
    return rng.choices(names, weights=probabilities)[0]


def skip_draws(names: Sequence[str], probabilities: Sequence[float], rng: random.Random, count: int) -> dict[str, int]:
    """Replay ``count`` draws of :func:`draw_samples` without data: how many samples each source gave (``rng``
    advances)."""
    taken = dict.fromkeys(names, 0)
    for _ in range(count):
        taken[draw_source(names, probabilities, rng)] += 1
    return taken
