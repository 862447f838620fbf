"""The stages of the training data path, each a small generator with its own config, and ``Pipeline``, which chains
them in a named order (``training.data`` lists the orders: one source's stream, a loader worker's batches, the
validation batches).

``Pipeline`` is WebDataset's ``DataPipeline`` idea (open_clip builds its loader as ``wds.DataPipeline([stage,
...])``) with names: the first stage makes an iterator, each next one takes the iterator of the one before.
WebDataset's own shard stages cannot be used as they are: they read forward (shard list -> split -> tar
reader -> shuffle buffer over the samples read), whereas a source stream here plans each epoch before its
first byte, from the manifests' counts (``Epoch``: the shard order, this slot's shards, the shuffled order of
its samples), so that a resumed stream skips whole epochs by arithmetic, leaves shards unopened and drops
unwanted samples before decode (exact resume, ``training.curriculum``), and reads shards through
``ShardReader`` (checksums while streaming, ``data.on_bad_shard``).

One source's stream (:func:`epoch_shards` -> :func:`split_by_node_and_worker` -> :func:`shuffle` ->
:func:`read`) yields raw samples (suffix -> bytes) or :data:`SKIPPED`; a loader worker's draws then travel as
:class:`Draw` through :func:`decode` and the per-sample stages (``each``: a task's ``geometric``,
:func:`photometric`, a task's ``tensors``) to :func:`batches`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pipeline.shards import ShardError, decode_sample
from training import augment, sampling
from training.bad_shards import SKIPPED, ShardReader
from training.sampling import WorkerPlace

Stage = tuple[str, Callable[..., Iterator]]  # (name, the iterator of the stage before -> this stage's iterator)


class Pipeline:
    """Named stages in order: ``Pipeline(("shards", make), ("shuffle", fn), ...)``; iterating it runs the first
    stage's ``make()`` and passes the iterator through each next stage's ``fn(iterator)``."""

    def __init__(self, *stages: Stage):
        self.stages = list(stages)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.stages]

    def __iter__(self) -> Iterator:
        (_, first), *rest = self.stages
        items = first()
        for _, stage in rest:
            items = stage(items)
        return iter(items)


def seed_of(*parts) -> int:
    """A 64-bit seed from any parts (the same on every machine and Python)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


# --------------------------------------------------------------------------- one source's stream


@dataclasses.dataclass
class Epoch:
    """One pass over one source's shards, planned before a byte is read.

    shards: ``(url, manifest count)`` in the order they are read; keep: ``(slot, slots)``: every ``slots``-th raw
    sample from ``slot`` is this slot's (``(0, 1)``: all of them); length: the samples kept; order: the shuffled
    order of the kept samples' epoch indices; start: the first position in ``order`` still to deliver."""

    index: int
    shards: list[tuple[str, int]]
    keep: tuple[int, int] = (0, 1)
    length: int = 0
    order: list[int] = dataclasses.field(default_factory=list)
    start: int = 0


def epoch_shards(counts: Mapping[str, int], order_seed: int, epochs: int | None = None) -> Iterator[Epoch]:
    """Stage "shards": each epoch's shard order (``sampling.epoch_order``), the same on every rank and worker;
    endless unless ``epochs``. ``counts``: ``{url: samples}`` (the manifest)."""
    for index in itertools.count() if epochs is None else range(epochs):
        yield Epoch(index, [(url, counts[url]) for url in sampling.epoch_order(list(counts), order_seed, index)])


def split_by_node_and_worker(epochs: Iterable[Epoch], place: WorkerPlace) -> Iterator[Epoch]:
    """Stage "split by node/worker": the shards (or, with fewer shards than slots, every n-th sample) of the slot
    at ``place`` (``sampling.slot_shards``); a slot left without any sample is an error."""
    for epoch in epochs:
        counts = dict(epoch.shards)
        mine, split = sampling.slot_shards(list(counts), place)
        keep = (place.slot, place.slots) if split else (0, 1)
        length = sampling.kept_before(sum(counts[url] for url in mine), *keep)
        if length == 0:
            raise ValueError(f"shards {sorted(counts)[:3]}...: no sample for slot {place.slot}")
        yield dataclasses.replace(epoch, shards=[(url, counts[url]) for url in mine], keep=keep, length=length)


def shuffle(epochs: Iterable[Epoch], buffer: int, seed: int, start: int = 0) -> Iterator[Epoch]:
    """Stage "shuffle": each epoch's output order, a permutation of its sample indices through a shuffle buffer of
    ``buffer`` seeded by ``(seed, epoch)``; ``start`` samples already delivered are skipped: whole epochs here,
    by their lengths alone (nothing of them is read), the rest as the next epoch's ``start``."""
    for epoch in epochs:
        if start >= epoch.length:
            start -= epoch.length
            continue
        order = list(sampling.shuffle(range(epoch.length), buffer, random.Random(seed_of(seed, epoch.index))))
        yield dataclasses.replace(epoch, order=order, start=start)
        start = 0


def read(epochs: Iterable[Epoch], reader: ShardReader) -> Iterator[dict | str]:
    """Stage "read": each epoch's samples in its shuffled order from ``order[start]`` on, read through ``reader``
    (checksums as the bytes go by, ``data.on_bad_shard``). Shards holding none of the samples still due are not
    opened; unwanted samples of an opened shard are dropped as bytes, before any decode."""
    for epoch in epochs:
        position = [0] * epoch.length
        for index, item in enumerate(epoch.order):
            position[item] = index
        due = epoch.start
        kept = _kept_samples(epoch.shards, *epoch.keep, lambda i: position[i] >= due, reader)
        yield from sampling.reorder(kept, epoch.order, epoch.start)


def _kept_samples(shards: Sequence[tuple[str, int]], slot: int, slots: int, wanted,
                  reader: ShardReader) -> Iterator[tuple[int, dict | str]]:
    """``(epoch index, raw sample)`` of the samples a slot keeps from ``shards`` (``(url, manifest count)`` in
    epoch order; every ``slots``-th raw sample from ``slot``) whose epoch index ``wanted`` accepts.

    A shard holding no wanted sample is not opened. A bad shard goes to ``reader.bad`` (``fail``: it raises);
    under ``skip`` each wanted sample the shard did not give is :data:`SKIPPED` in its place, so every later
    index stays where it was."""
    offset = 0
    for url, count in shards:
        first, last = sampling.kept_before(offset, slot, slots), sampling.kept_before(offset + count, slot, slots)
        if any(wanted(i) for i in range(first, last)):
            read_count = 0
            try:
                for read_count, sample in enumerate(reader.members(url, count), start=1):
                    raw = offset + read_count - 1
                    if raw % slots == slot and wanted(raw // slots):
                        yield raw // slots, sample
            except ShardError as error:
                lost = [raw // slots for raw in range(offset + read_count, offset + count)
                        if raw % slots == slot and wanted(raw // slots)]
                reader.bad(error, len(lost))
                for index in lost:
                    yield index, SKIPPED
        offset += count


def in_order(rows: Mapping[str, Any], reader: ShardReader, source: str) -> Iterator[Draw]:
    """Stage "shards" of validation: every sample of ``rows`` (``{url: manifest row}``) in manifest order, as draws
    without augmentation; a bad shard goes to ``reader.bad`` (``skip``: the rest of it is left out)."""
    index = 0
    for url, row in rows.items():
        read_count = 0
        try:
            for read_count, members in enumerate(reader.members(url, row.samples), start=1):
                yield Draw(index, source, members)
                index += 1
        except ShardError as error:
            reader.bad(error, max(0, row.samples - read_count))


# --------------------------------------------------------------------------- a loader worker's samples


@dataclasses.dataclass
class Draw:
    """One sample on its way through the per-sample stages: ``index``, its place in the worker's stream (the seed
    of its augmentation generator ``rng``; None: validation, deterministic); ``value``: the raw members, then
    the decoded ``Sample``, then the task's fields; :data:`SKIPPED` when it delivers no sample."""

    index: int
    source: str
    value: Any
    rng: np.random.Generator | None = None


def draws(streams: Mapping[str, Iterator], probabilities: Sequence[float], rng: random.Random, first: int,
          augment_seed: int) -> Iterator[Draw]:
    """Stage "sample sources": each draw takes a source with ``probabilities`` (``sampling.draw_samples``) and that
    source's next sample; draw ``i`` (counted from ``first``) augments with generator ``(augment_seed, i)``."""
    for index, (source, members) in enumerate(sampling.draw_samples(streams, probabilities, rng), start=first):
        yield Draw(index, source, members, np.random.default_rng((augment_seed, index)))


def decode(items: Iterable[Draw], reader: ShardReader) -> Iterator[Draw]:
    """Stage "decode": raw members -> ``pipeline.shards.Sample``, checked against the shard contract. A sample that
    does not decode goes to ``reader.bad`` (``fail``: it raises) and becomes :data:`SKIPPED` under ``skip``."""
    for item in items:
        if item.value is not SKIPPED:
            try:
                item.value = decode_sample(item.value)
            except ShardError as error:
                reader.bad(error, 1)
                item.value = SKIPPED
        yield item


def each(function: Callable[[Any, Any, np.random.Generator | None], Any], config: Any
         ) -> Callable[[Iterable[Draw]], Iterator[Draw]]:
    """A per-sample stage: ``function(value, config, rng)`` on every draw that delivers a sample."""
    def stage(items: Iterable[Draw]) -> Iterator[Draw]:
        for item in items:
            if item.value is not SKIPPED:
                item.value = function(item.value, config, item.rng)
            yield item

    return stage


def photometric(fields: dict, config: augment.PhotometricConfig, rng: np.random.Generator | None) -> dict:
    """Stage "photometric": colour jitter of ``fields["image"]`` (``augment.photometric``); the targets are
    untouched; none in validation (``rng=None``)."""
    if rng is None:
        return fields
    return {**fields, "image": augment.photometric(fields["image"], config, rng)}


def collate(samples: list[dict]) -> dict:
    """One batch of the per-sample stages' outputs: tensors stacked, ``source`` and ``key`` as lists."""
    out = {name: torch.stack([s[name] for s in samples]) for name in ("image", "disparity", "mask", "labels")
           if name in samples[0]}
    out.update(source=[s["source"] for s in samples], key=[s["key"] for s in samples])
    return out


def batches(items: Iterable[Draw], size: int, reader: ShardReader) -> Iterator[dict]:
    """Stage "batch" of the training stream: endless collated batches of ``size`` samples.

    A draw that delivers no sample is counted in the batch's ``skipped`` and the batch takes the next draw;
    ``bad_shards`` lists the skips ``reader`` noted meanwhile. Under ``fail`` a bad shard ends the stream with
    ``{"bad_shard": ShardError}`` in place of a batch (an exception would cross the DataLoader as text)."""
    batch, skipped = [], 0
    try:
        for item in items:
            if item.value is SKIPPED:
                skipped += 1
                continue
            batch.append(item.value)
            if len(batch) == size:
                yield {**collate(batch), "skipped": skipped, "bad_shards": reader.take()}
                batch, skipped = [], 0
    except ShardError as error:
        yield {"bad_shard": error}


def validation_batches(items: Iterable[Draw], size: int) -> Iterator[dict]:
    """Stage "batch" of validation: collated batches of ``size``, the last one smaller; skipped samples are left
    out."""
    batch = []
    for item in items:
        if item.value is SKIPPED:
            continue
        batch.append(item.value)
        if len(batch) == size:
            yield collate(batch)
            batch = []
    if batch:
        yield collate(batch)
