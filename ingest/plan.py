"""Plan an ingest run up front from the listing alone: which split each input goes to, which inputs are
rejected before reading (duplicate ids, paths escaping the root), and which shard each sample lands in.

Because the plan depends only on the listing and the options, a re-run (after a crash, or on another
cluster) assigns every sample to the same shard, which is what makes shards byte-identical and lets a
resumed run keep the shards already written. Each planned shard carries a fingerprint of everything that
determines its bytes; a shard is reused only when its completion record has the same fingerprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import defaultdict
from typing import Any

from ingest.sources.base import SampleRef, SourceAdapter
from pipeline.shards import CONTRACT_VERSION, DISPARITY_DTYPES, WRITER_VERSION, Reject, make_key

SPLIT_BY = ("scene", "none")


@dataclasses.dataclass(frozen=True)
class IngestSettings:
    """The options of ``dpt ingest`` that shape the output (``workers`` only changes the speed).

    ``val_fraction``: share of scenes (groups) sent to ``val``. ``max_side``: longest side in pixels
    after resizing (``None``: keep). ``shard_size_mb``: target shard size, turned into a fixed number of
    samples per shard from the first samples' encoded size (``samples_per_shard`` overrides it).
    """

    split_by: str = "scene"
    val_fraction: float = 0.0
    max_side: int | None = None
    shard_size_mb: float = 256.0
    workers: int = 2
    min_valid_fraction: float = 0.01
    disparity_dtype: str = "float16"
    samples_per_shard: int | None = None

    def __post_init__(self):
        if self.split_by not in SPLIT_BY:
            raise ValueError(f"--split-by must be one of {', '.join(SPLIT_BY)}, not {self.split_by!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"--val-fraction must be in [0, 1), not {self.val_fraction}")
        if self.max_side is not None and self.max_side < 1:
            raise ValueError(f"--max-side must be a positive number of pixels, not {self.max_side}")
        if not self.shard_size_mb > 0:
            raise ValueError(f"--shard-size-mb must be positive, not {self.shard_size_mb}")
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, not {self.workers}")
        if self.disparity_dtype not in DISPARITY_DTYPES:
            raise ValueError(f"--disparity-dtype must be one of {', '.join(DISPARITY_DTYPES)}, not {self.disparity_dtype!r}")
        if self.samples_per_shard is not None and self.samples_per_shard < 1:
            raise ValueError(f"samples per shard must be at least 1, not {self.samples_per_shard}")

    def content(self) -> dict[str, Any]:
        """The settings that change shard bytes (for fingerprints)."""
        return {"max_side": self.max_side, "min_valid_fraction": self.min_valid_fraction,
                "disparity_dtype": self.disparity_dtype}


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """One shard to write: its split, index, inputs in order (sorted by id) and fingerprint."""

    split: str
    index: int
    refs: tuple[SampleRef, ...]
    fingerprint: str


@dataclasses.dataclass
class Plan:
    shards: list[ShardPlan]
    rejects: dict[str, list[Reject]]  # split -> inputs rejected while planning
    inputs: int

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.shards} | set(self.rejects))


def input_path(adapter: SourceAdapter, ref: SampleRef) -> str:
    """How a reject names its input: the image's URL (else the first file's), or the id."""
    relative = ref.files.get("rgb") or ref.files.get("image") or next(iter(sorted(ref.files.values())), None)
    # Plain concatenation (not storage.join, which drops a leading '/'): an unsafe path stays visible.
    return f"{adapter.root.rstrip('/')}/{relative}" if relative else f"{adapter.name}:{ref.id}"


def split_of(ref: SampleRef, settings: IngestSettings) -> str:
    """The source's own split when it has one; else ``val`` for a ``val_fraction`` share of groups, by hash
    of the group (scene, video), so that frames of one group never straddle splits."""
    if ref.split:
        return ref.split
    if settings.split_by == "none" or settings.val_fraction <= 0:
        return "train"
    digest = hashlib.sha256(ref.group.encode("utf-8")).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < settings.val_fraction else "train"


def _unsafe(ref: SampleRef) -> str | None:
    for path in ref.files.values():
        if path.startswith("/") or "\\" in path or ".." in path.split("/"):
            return f"{path}: path escapes the source root"
    return None


def screen(adapter: SourceAdapter, refs: list[SampleRef]) -> tuple[list[SampleRef], list[tuple[SampleRef, str]]]:
    """Split the listing into inputs to read and ``(input, reason)`` rejected without reading: every
    input of a duplicated id or key (which one is right cannot be told), and unsafe paths."""
    by_key: dict[str, list[SampleRef]] = defaultdict(list)
    for ref in refs:
        by_key[make_key(adapter.name, ref.id)].append(ref)
    kept, rejected = [], []
    for key in sorted(by_key):
        same = by_key[key]
        for ref in same:
            if len(same) > 1:
                mine = set(ref.files.values())
                others = ", ".join(sorted({f"{adapter.root.rstrip('/')}/{p}" for o in same if o is not ref
                                           for p in o.files.values() if p not in mine}))
                rejected.append((ref, f"duplicate id {ref.id!r} (key {key}), also listed as {others}"))
            elif (reason := _unsafe(ref)) is not None:
                rejected.append((ref, reason))
            else:
                kept.append(ref)
    return kept, rejected


def adapter_fingerprint(adapter: SourceAdapter) -> dict[str, Any]:
    """The adapter's public configuration (class, name, kind, root, options): what it reads and how."""
    config = {k: v for k, v in vars(adapter).items() if not k.startswith("_") and k != "options"}
    return {"class": f"{type(adapter).__module__}.{type(adapter).__qualname__}", "name": adapter.name,
            "kind": str(getattr(adapter.kind, "value", adapter.kind)), "config": config}


def make_plan(adapter: SourceAdapter, refs: list[SampleRef], settings: IngestSettings,
              samples_per_shard: int) -> Plan:
    """Screen, split and cut the sorted inputs of each split into shards of ``samples_per_shard``."""
    kept, rejected = screen(adapter, refs)
    rejects: dict[str, list[Reject]] = defaultdict(list)
    for ref, reason in rejected:
        rejects[split_of(ref, settings)].append(Reject(input_path(adapter, ref), reason))
    by_split: dict[str, list[SampleRef]] = defaultdict(list)
    for ref in kept:
        by_split[split_of(ref, settings)].append(ref)
    common = {"contract": CONTRACT_VERSION, "writer": WRITER_VERSION, "adapter": adapter_fingerprint(adapter),
              **settings.content()}
    shards = []
    for split in sorted(by_split):
        ordered = sorted(by_split[split], key=lambda r: r.id)
        for index, start in enumerate(range(0, len(ordered), samples_per_shard)):
            chunk = tuple(ordered[start:start + samples_per_shard])
            body = {**common, "split": split, "index": index,
                    "inputs": [[r.id, r.group, r.split, sorted(r.files.items())] for r in chunk]}
            digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
            shards.append(ShardPlan(split, index, chunk, digest))
    return Plan(shards, dict(rejects), len(refs))
