"""The distributed ingest job: one source -> ``<out>/<source>/<split>/`` shards, rejects and manifest.

Steps, in the order they run (nothing is written before step 4):

1. check the options: the output is reachable (bucket exists, credentials work), the root exists;
2. list the source and plan: screen (duplicates, unsafe paths), split by scene hash, cut each split's
   inputs sorted by id into shards of a fixed number of samples (:mod:`ingest.plan`);
3. resume: a planned shard whose completion record has the plan's fingerprint and whose sha256 still
   matches is kept as it is;
4. write the other shards as Ray tasks, one task per shard, at most ``workers`` at a time, on whatever
   cluster :mod:`pipeline.ray_cluster` reaches (``RAY_ADDRESS``, the cluster of ``ray job submit``, or a local one);
5. per split, write ``rejects.parquet`` and then ``manifest.parquet`` (last: its presence means complete).

A full disk in step 4 or 5 fails the job with :class:`NoSpaceLeft` (one line: the file being written, the
shards that are complete); nothing partial is left, and a re-run keeps those shards and writes the rest.

>>> summary = run_ingest(adapter, "s3://corpus", IngestSettings(val_fraction=0.05, max_side=640))
>>> print(summary.line())
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import statistics
import time
from collections import defaultdict

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from ingest.plan import IngestSettings, Plan, ShardPlan, make_plan, screen
from ingest.resize import resize_sample
from ingest.shard_task import PROGRESS_DIR, ShardRecord, load_record, record_url, write_shard
from ingest.sources.base import SourceAdapter
from pipeline import storage
from pipeline.manifest import write_manifest, write_rejects
from pipeline.progress import progress as progress_bar
from pipeline.ray_cluster import connect
from pipeline.shards import MANIFEST_NAME, ShardError, encode_sample, shard_dir, shard_url

# Tar overhead per sample: four members, each a 512-byte header plus padding to 512 bytes on average.
TAR_BYTES_PER_SAMPLE = 4 * (512 + 256)
PROBE_SAMPLES, PROBE_TRIES = 8, 32
_SHARD_NAME = re.compile(r"^shard-(\d{6})\.(tar|json)$")


@dataclasses.dataclass
class IngestSummary:
    """Counts of one run; ``inputs == written + rejected`` always holds."""

    source: str
    out: str
    inputs: int
    written: int
    rejected: int
    shards: int
    reused: int
    bytes: int
    seconds: float
    splits: dict[str, int]
    timings: dict[str, float]

    def line(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in sorted(self.splits.items()))
        return (f"ingested {self.source}: {self.inputs} inputs = {self.written} written + {self.rejected} rejected"
                f" ({splits}); {self.shards} shards ({self.reused} kept from an earlier run),"
                f" {self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s -> {storage.join(self.out, self.source)}")


class NoSpaceLeft(RuntimeError):
    """The output's disk filled up while ``path`` was being written; ``complete`` shards (completion records)
    are on disk whole and a re-run keeps them."""

    def __init__(self, path: str, complete: int):
        super().__init__(f"no space left on device writing {path}; {complete} shards complete;"
                         " re-run the same command to resume")
        self.path, self.complete = path, complete


def _no_space(exc: BaseException) -> OSError | None:
    """The ENOSPC ``OSError`` behind ``exc``: itself, the exception a Ray task raised (``RayTaskError.cause``),
    or one it was raised from; ``None`` when the disk was not full."""
    seen, todo = set(), [exc]
    while todo:
        error = todo.pop(0)
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return error
        todo += [getattr(error, "cause", None), error.__cause__, error.__context__]
    return None


# --------------------------------------------------------------------------- 1. checks


def check_output(out: str, options: storage.S3Options | None = None) -> None:
    """Fail now, writing nothing, unless ``out`` can be written: bucket and credentials, or a local folder."""
    if storage.is_s3(out):
        storage.list_files(out, options)  # raises StorageError naming the URL: no bucket, bad credentials
        return
    path = os.path.abspath(out)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise ValueError(f"--out {out}: {path} exists and is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out}: {path} is not writable")


def check_root(adapter: SourceAdapter) -> None:
    if not storage.is_s3(adapter.root) and not os.path.isdir(adapter.root):
        raise FileNotFoundError(f"--root {adapter.root}: no such directory")


def list_inputs(adapter: SourceAdapter):
    check_root(adapter)
    refs = adapter.list_samples()
    if not refs:
        raise ValueError(f"--root {adapter.root}: no samples of source {adapter.name!r} found there")
    return refs


# --------------------------------------------------------------------------- 2. plan


def estimate_samples_per_shard(adapter: SourceAdapter, refs, settings: IngestSettings) -> int:
    """Samples per shard from the median encoded size of the first readable inputs (sorted by id), so that
    the same input and options always give the same number."""
    sizes = []
    for ref in sorted(screen(adapter, refs)[0], key=lambda r: r.id)[:PROBE_TRIES]:
        try:
            sample = resize_sample(assemble_sample(adapter, ref, "train", settings.min_valid_fraction),
                                   settings.max_side)
            members = encode_sample(sample, settings.disparity_dtype)
        except (BadInput, ShardError):  # a bad input, or a sample the contract refuses: probe the next
            continue
        sizes.append(sum(len(v) for v in members.values()) + TAR_BYTES_PER_SAMPLE)
        if len(sizes) == PROBE_SAMPLES:
            break
    if not sizes:
        return 64  # nothing readable among the first inputs: most will be rejected anyway
    return max(1, int(settings.shard_size_mb * 1e6 // statistics.median(sizes)))


# --------------------------------------------------------------------------- 4. Ray


class _Progress:
    """Counts samples processed by every task (a Ray actor), so the bar moves per sample, not per shard."""

    def __init__(self):
        self.count = 0

    def add(self, n: int = 1) -> None:
        self.count += n

    def total(self) -> int:
        return self.count


def _shard_task(adapter, shard, out, settings, options, progress) -> ShardRecord:
    # Report at most twice a second: one actor call per sample would cost more than the bar is worth.
    state = {"unreported": 0, "last": time.monotonic()}

    def on_sample() -> None:
        state["unreported"] += 1
        if time.monotonic() - state["last"] >= 0.5:
            progress.add.remote(state["unreported"])
            state["unreported"], state["last"] = 0, time.monotonic()

    record = write_shard(adapter, shard, out, settings, options, on_sample=on_sample)
    if state["unreported"]:
        progress.add.remote(state["unreported"])
    return record


def _cancel(running: dict) -> list[ShardRecord]:
    """Cancel the running tasks and wait (briefly) for them to end; the records of those that finished anyway."""
    import ray

    for ref in running:
        ray.cancel(ref)
    ended, _ = ray.wait(list(running), num_returns=len(running), timeout=30) if running else ([], [])
    records = []
    for ref in ended:
        try:
            records.append(ray.get(ref))
        except ray.exceptions.RayError:
            pass  # cancelled, or failed as well: a re-run writes that shard
    running.clear()
    return records


def _ray_write_all(adapter, pending: list[ShardPlan], out, settings, options, bar, kept: int) -> list[ShardRecord]:
    """Write the ``pending`` shards as Ray tasks; their records. A full disk raises :class:`NoSpaceLeft`
    counting the ``kept`` shards of an earlier run and those this run completed."""
    import ray

    connect(log_to_driver=True)
    task = ray.remote(num_cpus=1, max_retries=2)(_shard_task)
    progress = ray.remote(num_cpus=0)(_Progress).remote()
    adapter_ref, base = ray.put(adapter), bar.n
    queue, running, done = list(reversed(pending)), {}, []
    try:
        while queue or running:
            while queue and len(running) < settings.workers:
                shard = queue.pop()
                running[task.remote(adapter_ref, shard, out, settings, options, progress)] = shard
            finished, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in finished:
                shard = running.pop(ref)
                try:
                    done.append(ray.get(ref))
                except ray.exceptions.RayError as exc:
                    full = _no_space(exc)
                    if full is None:
                        raise RuntimeError(f"writing {shard.split} shard {shard.index} failed: {exc}") from exc
                    done += _cancel(running)  # a shard finished meanwhile is complete too
                    path = full.filename or shard_url(out, adapter.name, shard.split, shard.index)
                    raise NoSpaceLeft(path, kept + len(done)) from None
            # A retried task counts its samples twice: never let the bar pass what is certainly done.
            seen = min(ray.get(progress.total.remote()), bar.total - base)
            bar.update(max(0, base + max(seen, sum(r.inputs for r in done)) - bar.n))
            bar.set_postfix(MB=f"{sum(r.bytes for r in done) / 1e6:.1f}", refresh=False)
    finally:
        for ref in running:
            ray.cancel(ref)
        ray.kill(progress)
    return done


# --------------------------------------------------------------------------- 5. finish


def _remove_stale(directory: str, keep: set[int], options) -> None:
    """Delete shards and records of an earlier plan that this plan no longer has (they would mislead)."""
    for url in storage.list_files(directory, options):
        relative = url[len(directory.rstrip("/")) + 1:]
        parts = relative.split("/")
        match = _SHARD_NAME.match(parts[-1])
        in_place = len(parts) == 1 or (len(parts) == 2 and parts[0] == PROGRESS_DIR)
        if match and in_place and int(match.group(1)) not in keep:
            storage.delete(url, options)
    if not storage.is_s3(directory):  # temporary files of writers killed mid-shard (S3 spools locally)
        for folder in (directory, os.path.join(directory, PROGRESS_DIR)):
            for name in os.listdir(folder) if os.path.isdir(folder) else []:
                if name.startswith(".shard-") and storage.TEMP_MARKER in name:
                    os.remove(os.path.join(folder, name))


def _finish(adapter, plan: Plan, records: list[ShardRecord], out, options) -> dict[str, int]:
    by_split: dict[str, list[ShardRecord]] = defaultdict(list)
    for record in records:
        by_split[record.split].append(record)
    written = {}
    for split in plan.splits:
        directory = shard_dir(out, adapter.name, split)
        ordered = sorted(by_split[split], key=lambda r: r.index)
        rejects = list(plan.rejects.get(split, [])) + [row for r in ordered for row in r.reject_rows()]
        _remove_stale(directory, {r.index for r in ordered}, options)
        write_rejects(directory, sorted(rejects, key=lambda r: (r.path, r.reason)), options)
        write_manifest(directory, [r.info for r in ordered if r.info is not None], options)
        written[split] = sum(r.samples for r in ordered)
    return written


def run_ingest(adapter: SourceAdapter, out: str, settings: IngestSettings,
               options: storage.S3Options | None = None, progress: bool = True) -> IngestSummary:
    """Ingest every input of ``adapter`` into ``<out>/<adapter.name>/<split>/``; see the module docstring."""
    start = time.perf_counter()
    check_output(out, options)
    refs = list_inputs(adapter)
    per_shard = settings.samples_per_shard or estimate_samples_per_shard(adapter, refs, settings)
    plan = make_plan(adapter, refs, settings, per_shard)

    kept, pending = [], []
    for shard in plan.shards:
        record = load_record(record_url(out, adapter.name, shard.split, shard.index), shard.fingerprint, options)
        (kept if record is not None else pending).append(record or shard)
    for split in sorted({s.split for s in pending}):
        # The directory is about to change: it must not look complete until its new manifest is written.
        storage.delete(storage.join(shard_dir(out, adapter.name, split), MANIFEST_NAME), options)

    done_inputs = sum(r.inputs for r in kept) + sum(len(v) for v in plan.rejects.values())
    with progress_bar(total=plan.inputs, initial=done_inputs, desc=f"ingest {adapter.name}", unit="sample",
                      disable=not progress) as bar:
        new = _ray_write_all(adapter, pending, out, settings, options, bar, len(kept)) if pending else []
        bar.update(plan.inputs - bar.n)
    records = kept + new
    try:
        written = _finish(adapter, plan, records, out, options)
    except OSError as exc:  # rejects.parquet or manifest.parquet: every shard is complete
        full = _no_space(exc)
        if full is None:
            raise
        raise NoSpaceLeft(full.filename or storage.join(out, adapter.name), len(records)) from None
    rejected = sum(len(v) for v in plan.rejects.values()) + sum(len(r.rejects) for r in records)
    timings = {k: sum(r.timings.get(k, 0.0) for r in new) for k in ("read", "resize", "write")}
    summary = IngestSummary(adapter.name, out, plan.inputs, sum(written.values()), rejected,
                            sum(r.url is not None for r in records), len(kept), sum(r.bytes for r in records),
                            time.perf_counter() - start, written, timings)
    if summary.inputs != summary.written + summary.rejected:  # a bug, never a data problem
        raise RuntimeError(f"lost inputs: {summary.line()}")
    return summary
