"""The curriculum of one rank, on every run: its phases (``training.config.phases``), each a data stream with a
position, and where a run's training data starts (step 0, or a checkpoint's position).

A checkpoint at step k holds the rank's ``DataPosition`` (``meta.json``: ``data_position``): the phase, the
batches the steps consumed from that phase's stream, and the layout the stream was built for. Resuming
rebuilds the same stream and fast-forwards it past those batches (``training.data.MixedShardStream``), so
steps k+1, k+2, ... see exactly the samples, source draws and augmentation draws that the uninterrupted run
would have seen. The stream cannot continue when the layout changed (another world size, loader workers,
batch size, seed, sources or weights) or when the checkpoint predates ``data_position``: then the phase's
stream starts afresh, seeded with the step (``salt``) so that it does not replay the phase's beginning,
and the reason is returned for the run's tags. No Ray here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from training.config import TrainConfig, phases
from training.data import DataConfig, DataPosition, make_loader

EXACT = "exact"


def stream_layout(config: DataConfig, world: int, sources: list[str]) -> dict[str, Any]:
    """What a phase's stream depends on beside the seeds: equal layouts give equal streams (same shards)."""
    return {"world": world, "workers": config.loader.workers, "batch_size": config.loader.batch_size,
            "seed": config.stream.seed, "shuffle": config.stream.shuffle, "sources": list(sources),
            "weights": {s: float(config.weights.get(s, 1.0)) for s in sources}}


def phase_bounds(config: TrainConfig) -> list[tuple[int, int, list[str]]]:
    """``[(start step, end step, sources)]`` of the run's phases (``training.config.phases``)."""
    out, start = [], 0
    for end, sources in phases(config):
        out.append((start, end, sources))
        start = end
    return out


def start_position(config: TrainConfig, world: int, step: int, saved: dict | None) -> tuple[DataPosition, str]:
    """The position to continue from at ``step`` (0 or a checkpoint's) and how: ``"exact"`` or why not.

    ``saved``: the checkpoint's ``data_position`` (None when it has none). A malformed one raises, naming the key.
    """
    bounds = phase_bounds(config)
    index = next((i for i, (start, end, _) in enumerate(bounds) if start <= step < end), None)
    if index is None:  # the run is complete: no stream is needed
        return DataPosition(len(bounds)), EXACT
    start, _, sources = bounds[index]
    layout = stream_layout(config.data, world, sources)
    if step == start:  # a phase begins here (also right after a checkpoint at a phase boundary)
        return DataPosition(index, layout=layout), EXACT
    if saved is None:
        reason = "the checkpoint's meta.json has no data_position (written before exact data resume)"
        return DataPosition(index, salt=step, layout=layout), f"reseeded at step {step}: {reason}"
    position = DataPosition.from_dict(saved)
    changed = [key for key in sorted(layout.keys() | position.layout.keys())
               if layout.get(key) != position.layout.get(key)]
    if position.phase != index:
        changed.insert(0, f"phase ({position.phase} saved, {index} now)")
    stream_start = position.salt or start
    if not changed and stream_start + position.batches != step:
        changed.append(f"batches ({position.batches} from step {stream_start} do not reach step {step})")
    if changed:
        return DataPosition(index, salt=step, layout=layout), f"reseeded at step {step}: changed {', '.join(changed)}"
    return position, EXACT


@dataclasses.dataclass
class PhaseData:
    """One phase's batches for one rank, steps ``[.., end)`` on ``sources``; ``position`` counts what was taken
    (``workers``: the loader's, whose round-robin the position's skipped draws follow)."""

    end: int
    sources: list[str]
    position: DataPosition
    loader: Iterator[dict]
    workers: int = 1

    def next_batch(self) -> dict:
        """The next batch for a training step (taking it is consuming it: the position advances). A bad shard
        under ``data.on_bad_shard: fail`` raises its ShardError here, in the training process."""
        batch = next(self.loader)
        if "bad_shard" in batch:
            raise batch["bad_shard"]
        self.position = self.position.consumed(batch, self.workers)
        return batch


def data_phases(config: TrainConfig, rank: int, world: int, step: int, first: DataPosition) -> Iterator[PhaseData]:
    """The phases left from ``step`` on, the current one continuing at ``first`` (see :func:`start_position`);
    each phase's loader is built when the previous phase is done."""
    for index, (start, end, sources) in enumerate(phase_bounds(config)):
        if step >= end:
            continue
        position = first if index == first.phase else DataPosition(
            index, layout=stream_layout(config.data, world, sources))
        loader = make_loader(config.data, rank, world, sources=sources, position=position)
        yield PhaseData(end, sources, position, loader, max(1, config.data.loader.workers))
        step = end
