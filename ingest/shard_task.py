"""One Ray task = one shard: read its planned inputs, write the shard, then its completion record.

The completion record ``<prefix>/<source>/<split>/_progress/shard-%06d.json`` is written atomically after
the shard itself, so its presence (with the plan's fingerprint, and a shard whose sha256 still matches)
is what lets a re-run skip the shard. It also carries the shard's rejects, so the final rejects.parquet
can be assembled without re-reading anything, and the time spent reading vs. writing (benchmarks).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from ingest.plan import IngestSettings, ShardPlan, input_path
from ingest.resize import resize_sample
from ingest.sources.base import SourceAdapter
from pipeline import storage
from pipeline.manifest import verify_shard
from pipeline.shards import Reject, ShardError, ShardInfo, ShardIntegrityError, ShardWriter, shard_dir, shard_url

PROGRESS_DIR = "_progress"


@dataclasses.dataclass
class ShardRecord:
    """What one finished shard task reports (and stores as its completion record).

    ``url`` is ``None`` when every input of the shard was rejected (no shard is written then).
    ``timings`` are seconds: ``read`` (read, decode, check, convert), ``resize``, ``write`` (encode and write).
    """

    split: str
    index: int
    fingerprint: str
    inputs: int
    url: str | None
    samples: int
    bytes: int
    sha256: str | None
    rejects: list[list[str]]
    timings: dict[str, float]

    @property
    def info(self) -> ShardInfo | None:
        return None if self.url is None else ShardInfo(self.url, self.samples, self.bytes, self.sha256)

    def reject_rows(self) -> list[Reject]:
        return [Reject(path, reason) for path, reason in self.rejects]


def record_url(prefix: str, source: str, split: str, index: int) -> str:
    return storage.join(shard_dir(prefix, source, split), PROGRESS_DIR, f"shard-{index:06d}.json")


def load_record(url: str, fingerprint: str, options: storage.S3Options | None) -> ShardRecord | None:
    """The completion record at ``url`` if it belongs to this plan and its shard still verifies."""
    try:
        record = ShardRecord(**json.loads(storage.read_bytes(url, options)))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None  # a record from another version: rewrite the shard
    if record.fingerprint != fingerprint:
        return None
    if record.info is not None:
        try:
            verify_shard(record.info, options)
        except ShardIntegrityError:
            return None
    return record


def _read_one(adapter: SourceAdapter, ref, split: str, settings: IngestSettings, timings: dict):
    """``(sample, None)`` ready to write, or ``(None, reason)`` when the input is rejected."""
    start = time.perf_counter()
    try:
        sample = assemble_sample(adapter, ref, split, settings.min_valid_fraction)
    except BadInput as exc:  # anything else (the store failing) fails the task, and a re-run resumes
        return None, str(exc)
    finally:
        timings["read"] += time.perf_counter() - start
    start = time.perf_counter()
    sample = resize_sample(sample, settings.max_side)
    timings["resize"] += time.perf_counter() - start
    return sample, None


def write_shard(adapter: SourceAdapter, shard: ShardPlan, prefix: str, settings: IngestSettings,
                options: storage.S3Options | None = None, on_sample: Callable[[], object] | None = None) -> ShardRecord:
    """Read, convert and write the inputs of ``shard``; returns (and stores) its completion record.

    A bad input (unreadable, mismatched, bad values, too few valid pixels) becomes a reject and the shard
    goes on; a storage failure raises (the job fails and a re-run resumes). ``on_sample`` is called after
    each input (written or rejected), for progress.
    """
    url = shard_url(prefix, adapter.name, shard.split, shard.index)
    timings = {"read": 0.0, "resize": 0.0, "write": 0.0}
    rejects: list[list[str]] = []
    written = 0
    start = time.perf_counter()
    writer = ShardWriter(url, options, settings.disparity_dtype)
    timings["write"] += time.perf_counter() - start
    try:
        for ref in shard.refs:
            sample, reason = _read_one(adapter, ref, shard.split, settings, timings)
            start = time.perf_counter()
            if sample is not None:
                try:
                    writer.write(sample)
                    written += 1
                except ShardError as exc:  # the sample breaks the contract (e.g. its metadata)
                    reason = str(exc)
            if reason is not None:
                rejects.append([input_path(adapter, ref), reason])
            timings["write"] += time.perf_counter() - start
            if on_sample is not None:
                on_sample()
        start = time.perf_counter()
        info = writer.close() if written else None
        if info is None:
            writer.abort()
        timings["write"] += time.perf_counter() - start
    except BaseException as exc:
        writer.abort(exc if isinstance(exc, Exception) else None)
        raise
    record = ShardRecord(
        shard.split, shard.index, shard.fingerprint, len(shard.refs), info.url if info else None,
        info.samples if info else 0, info.bytes if info else 0, info.sha256 if info else None, rejects, timings,
    )
    data = json.dumps(dataclasses.asdict(record), sort_keys=True, indent=1).encode()
    start = time.perf_counter()
    storage.write_bytes(record_url(prefix, adapter.name, shard.split, shard.index), data, options)
    # Writing the record (atomically, fsynced) is part of writing the shard; the stored copy cannot count it.
    record.timings["write"] += time.perf_counter() - start
    return record
