"""A bad shard in the middle of a run: what ``data.on_bad_shard`` (``fail`` or ``skip``) does, and how ranks agree.

Bad means deterministic, so a restart would meet it again: a tar that cannot be read on (truncated, a corrupt
header), a shard whose sample count, size or sha256 differs from its manifest row, a member that does not
decode against the shard contract, a shard that the manifest lists but storage does not have (all
``pipeline.shards.ShardError``). Storage that does not answer is not a bad shard: ``pipeline.storage``
retries it and Ray Train restarts the workers (``run.max_failures``).

The manifest holds one sha256 per shard, so the checksum is known when a shard has been read to its end:
its bytes are hashed as they stream by (no second read), by each loader worker the first time it reads the
shard in a phase (about 1 ms of CPU per MB, a few % of decoding and augmenting the same samples).

- ``fail``: the loader stream ends with the error instead of a batch; at the next step every rank learns of
  it (:func:`share`), all return from the train function together (no rank left in a collective, no worker
  error, so Ray Train spends no restart on it) and ``dpt train`` fails with one line naming the shard.
- ``skip``: a sample that does not decode is skipped; a tar that cannot be read on gives up the rest of the
  shard, each of its remaining samples leaving a :data:`SKIPPED` marker in its place in the stream; a checksum
  mismatch is reported (the shard's samples were already used, its last one excepted). A skipped sample is a
  draw that delivers nothing: the batch takes the next one, so every rank still runs every step, and each
  batch counts its skipped draws, which the data position keeps (exact resume). Rank 0 logs
  ``shards/skipped_samples`` and a tag per bad shard, and prints one warning line per shard.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Literal

import torch
import torch.distributed as dist

from pipeline.shards import ShardError, ShardInfo, ShardIntegrityError, iter_shard_members

OnBadShard = Literal["fail", "skip"]
SKIPPED = "dpt-skipped-sample"  # in a source stream: the place of a sample that a bad shard gave up
SKIPPED_SAMPLES_METRIC = "shards/skipped_samples"
SKIPPED_SHARD_TAG = "dpt.skipped_shard."  # + <source>/<split>/<shard file>: "<url>, key ...: what was wrong"
DATA_ERROR_TAG = "dpt.data_error"  # the line a run stopped with (data.on_bad_shard: fail)
_TAG_CHARACTERS = re.compile(r"[^A-Za-z0-9_\-. /]")


class BadShard(RuntimeError):
    """The run stopped on a bad shard (``data.on_bad_shard: fail``); the message is the one line for the user."""


@dataclasses.dataclass(frozen=True)
class Skip:
    """A bad shard under ``skip``: its url, what was wrong (the ShardError's line), the samples given up here."""

    url: str
    message: str
    samples: int


class ShardReader:
    """Reads the shards of one loader slot, checking each against its manifest row, and applies the policy.

    ``rows``: ``{url: ShardInfo}`` of the manifests (without a row a shard's checksum is not checked).
    The first read to the end of each shard in this process checks its bytes and sha256; later epochs only
    count its samples (the bytes did not change under a running loader, and the hash costs CPU).
    """

    def __init__(self, policy: OnBadShard = "fail", rows: Mapping[str, ShardInfo] | None = None):
        self.policy, self.rows = policy, dict(rows or {})
        self.verified: set[str] = set()
        self.skips: list[Skip] = []

    def members(self, url: str, count: int) -> Iterator[dict]:
        """Raw samples (``__key__``, ``__url__``, suffix -> bytes) of shard ``url`` that its manifest row says
        holds ``count``; :class:`ShardError` naming the shard when it is bad."""
        row = None if url in self.verified else self.rows.get(url)
        read = 0
        try:
            for read, sample in enumerate(iter_shard_members(url, expect=row), start=1):
                if read > count:
                    raise ShardIntegrityError(url, sample["__key__"], f"holds more samples than the {count} "
                                                                      f"of its manifest row")
                yield sample
        except FileNotFoundError as exc:
            raise ShardIntegrityError(url, None, "listed in the manifest but missing") from exc
        if read != count:
            raise ShardIntegrityError(url, None, f"holds {read} samples but its manifest row says {count}")
        if row is not None:
            self.verified.add(url)

    def bad(self, error: ShardError, samples: int) -> None:
        """A bad shard: under ``fail`` raise it, under ``skip`` note it (``samples``: how many this slot gives up)."""
        if self.policy == "fail":
            raise error
        self.skips.append(Skip(error.shard, str(error), samples))

    def take(self) -> list[Skip]:
        """The skips noted since the last call."""
        out, self.skips = self.skips, []
        return out


@dataclasses.dataclass
class DataNews:
    """What one rank has to tell the others before a step: the line that stops the run, or what it skipped
    (``skipped``: training samples skipped while its batch was filled)."""

    fatal: str | None = None
    skips: list[Skip] = dataclasses.field(default_factory=list)
    skipped: int = 0

    def __bool__(self) -> bool:
        return self.fatal is not None or bool(self.skips) or self.skipped > 0


def share(news: DataNews, world: int, device: torch.device) -> list[DataNews]:
    """The news of every rank that has any, on every rank. A collective: all ranks call it at the same point.

    When no rank has news (the steady state) it is one all-reduce of one integer; the news are gathered only
    when some rank has any."""
    if world == 1:
        return [news] if news else []
    flag = torch.tensor([int(bool(news))], device=device)
    dist.all_reduce(flag)
    if not flag.item():
        return []
    everyone: list[DataNews | None] = [None] * world
    dist.all_gather_object(everyone, news)
    return [n for n in everyone if n]


def fatal_line(error: ShardError, where: str) -> str:
    """The one line a run stops with under ``fail``; ``where``: e.g. "at step 7 on rank 1"."""
    directory = error.shard.rsplit("/", 1)[0]
    return (f"training data {where}: {error} (data.on_bad_shard: fail; `dpt shards verify --decode {directory}` "
            f"checks every shard of it; data.on_bad_shard=skip trains past bad shards)")


def skipped_shard_tag(url: str) -> str:
    """The MLflow tag of a skipped shard: ``dpt.skipped_shard.<source>/<split>/<shard file>``."""
    return SKIPPED_SHARD_TAG + _TAG_CHARACTERS.sub("_", "/".join(url.rstrip("/").split("/")[-3:]))


def warning_line(skip: Skip) -> str:
    """The one line rank 0 prints for a bad shard under ``skip``."""
    if skip.samples:
        gave = f"skipping {skip.samples} sample{'s' * (skip.samples != 1)} of a bad shard"
    else:
        gave = "a bad shard, nothing of it left to skip"
    return f"training data: {gave}: {skip.message} (data.on_bad_shard: skip)"


class SkipAccount:
    """What the ranks skipped, for MLflow and the console; ``total``: training samples skipped before (meta.json).

    Rank 0 logs ``shards/skipped_samples`` (the run's total over all ranks) whenever it grows, tags each bad
    shard once (``dpt.skipped_shard.<source>/<split>/<file>``, value: what was wrong) and prints one warning
    line per shard."""

    def __init__(self, total: int = 0):
        self.total = total
        self.shards: set[str] = set()

    def settle(self, everyone: list[DataNews], step: int, logger, rank: int) -> str | None:
        """Account for the news of all ranks (:func:`share`); returns the line that stops the run, if any."""
        fatal = next((news.fatal for news in everyone if news.fatal), None)
        if fatal is not None:
            if rank == 0:
                logger.set_tags({DATA_ERROR_TAG: fatal})
            return fatal
        new = {}
        for skip in (skip for news in everyone for skip in news.skips):
            if skip.url not in self.shards and skip.url not in new:
                new[skip.url] = skip
        self.shards.update(new)
        grew = sum(news.skipped for news in everyone)
        self.total += grew
        if rank == 0:
            for skip in new.values():  # not print(): Ray Train's patched print would show the line twice
                sys.stderr.write(warning_line(skip) + "\n")
                sys.stderr.flush()
            logger.set_tags({skipped_shard_tag(url): skip.message[:5000] for url, skip in new.items()})
            if grew:
                logger.log({SKIPPED_SAMPLES_METRIC: self.total}, step)
        return None
