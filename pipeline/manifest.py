"""``manifest.parquet`` and ``rejects.parquet``: the two files that close an ingested ``<source>/<split>/``.

The manifest has one row per shard (``url``, ``samples``, ``bytes``, ``sha256``); its presence means the
directory is complete, so it is always written last and atomically. The shard ``url`` is stored relative
to the manifest's directory, so that a corpus copied from disk to S3 (or between buckets) stays valid;
:func:`read_manifest` returns absolute URLs. ``rejects.parquet`` has one row per input that was not
written (``path``, ``reason``), so that ``inputs = written + rejected`` can always be reconciled.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.progress import progress as progress_bar
from pipeline.shards import (
    CONTRACT_VERSION,
    MANIFEST_NAME,
    REJECTS_NAME,
    Reject,
    ShardError,
    ShardInfo,
    ShardIntegrityError,
    check_integrity,
)

MANIFEST_SCHEMA = pa.schema(
    [("url", pa.string()), ("samples", pa.int64()), ("bytes", pa.int64()), ("sha256", pa.string())],
    metadata={"dpt_shard_contract": CONTRACT_VERSION},
)
REJECTS_SCHEMA = pa.schema(
    [("path", pa.string()), ("reason", pa.string())],
    metadata={"dpt_shard_contract": CONTRACT_VERSION},
)


# Manifests are tiny: read them on one thread. pyarrow 25 (the newest MLflow allows) with its reader
# thread pool intermittently aborts the interpreter at exit ("terminate called without an active
# exception"); tests/test_cli.py runs the command line repeatedly and would catch a return of it.


def _write_table(url: str, table: pa.Table, options: storage.S3Options | None) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes(url, sink.getvalue().to_pybytes(), options)


def _read_table(url: str, schema: pa.Schema, options: storage.S3Options | None) -> pa.Table:
    data = storage.read_bytes(url, options)
    try:
        table = pq.read_table(pa.BufferReader(data), use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{url}: not a readable parquet file ({exc})") from exc
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise ValueError(f"{url}: missing columns {missing} (expected {schema.names})")
    return table.select(schema.names).cast(schema)


def _relative(directory: str, url: str) -> str:
    prefix = directory.rstrip("/") + "/"
    return url[len(prefix):] if url.startswith(prefix) else url


def write_manifest(directory: str, shards: list[ShardInfo], options: storage.S3Options | None = None,
                   metadata: dict[str, str] | None = None) -> str:
    """Write ``<directory>/manifest.parquet`` (rows sorted by url); returns its URL. ``metadata``: what holds for
    every sample of the directory (a pseudo-label corpus's kind and teacher), kept beside the contract version
    in the parquet schema's metadata (:func:`read_manifest_metadata`)."""
    rows = sorted(shards, key=lambda s: s.url)
    schema = MANIFEST_SCHEMA
    if metadata:
        schema = schema.with_metadata({**schema.metadata, **{k.encode(): str(v).encode() for k, v in metadata.items()}})
    table = pa.table(
        {
            "url": [_relative(directory, s.url) for s in rows],
            "samples": [s.samples for s in rows],
            "bytes": [s.bytes for s in rows],
            "sha256": [s.sha256 for s in rows],
        },
        schema=schema,
    )
    url = storage.join(directory, MANIFEST_NAME)
    _write_table(url, table, options)
    return url


def read_manifest(directory: str, options: storage.S3Options | None = None) -> list[ShardInfo]:
    """Rows of ``<directory>/manifest.parquet`` with absolute shard URLs."""
    url = storage.join(directory, MANIFEST_NAME)
    rows = _read_table(url, MANIFEST_SCHEMA, options).to_pylist()
    out = []
    for row in rows:
        shard = row["url"]
        if not (storage.is_s3(shard) or shard.startswith("/")):
            if ".." in shard.split("/"):
                raise ValueError(f"{url}: shard url {shard!r} escapes the corpus directory")
            shard = storage.join(directory, shard)
        out.append(ShardInfo(shard, row["samples"], row["bytes"], row["sha256"]))
    return out


def read_manifest_metadata(directory: str, options: storage.S3Options | None = None) -> dict[str, str]:
    """The schema metadata of ``<directory>/manifest.parquet``: ``dpt_shard_contract`` and what
    :func:`write_manifest` was given."""
    url = storage.join(directory, MANIFEST_NAME)
    try:
        schema = pq.read_schema(pa.BufferReader(storage.read_bytes(url, options)))
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{url}: not a readable parquet file ({exc})") from exc
    return {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}


def write_rejects(directory: str, rejects: list[Reject], options: storage.S3Options | None = None) -> str:
    table = pa.table(
        {"path": [r.path for r in rejects], "reason": [r.reason for r in rejects]}, schema=REJECTS_SCHEMA
    )
    url = storage.join(directory, REJECTS_NAME)
    _write_table(url, table, options)
    return url


def read_rejects(directory: str, options: storage.S3Options | None = None) -> list[Reject]:
    url = storage.join(directory, REJECTS_NAME)
    return [Reject(**row) for row in _read_table(url, REJECTS_SCHEMA, options).to_pylist()]


def is_complete(directory: str, options: storage.S3Options | None = None) -> bool:
    """True when the directory's manifest exists (it is written last)."""
    return storage.exists(storage.join(directory, MANIFEST_NAME), options)


def checksum(url: str, options: storage.S3Options | None = None) -> tuple[int, str]:
    """(bytes, sha256 hex) of one object, streamed."""
    digest, total = hashlib.sha256(), 0
    with storage.open_read(url, options) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            total += len(chunk)
    return total, digest.hexdigest()


def verify_shard(info: ShardInfo, options: storage.S3Options | None = None) -> None:
    """Raise :class:`ShardIntegrityError` naming the shard unless its size and sha256 match the manifest."""
    try:
        total, digest = checksum(info.url, options)
    except FileNotFoundError as exc:
        raise ShardIntegrityError(info.url, None, "listed in the manifest but missing") from exc
    check_integrity(info, total, digest)


def verify_directory(
    directory: str, decode: bool = False, options: storage.S3Options | None = None, progress: bool = True
) -> tuple[int, list[ShardError]]:
    """Check every shard of a complete directory; returns (samples checked, errors found).

    With ``decode`` every sample is also decoded against the contract (slower, catches bad content
    written with a valid checksum, e.g. by a foreign writer).
    """
    from pipeline.shards import iter_shard

    shards = read_manifest(directory, options)
    errors: list[ShardError] = []
    samples = 0
    for info in progress_bar(shards, desc=f"verify {directory}", unit="shard", disable=not progress):
        try:
            verify_shard(info, options)
            if decode:
                count = sum(1 for _ in iter_shard(info.url, options))
                if count != info.samples:
                    raise ShardIntegrityError(info.url, None, f"{count} samples, manifest says {info.samples}")
            samples += info.samples
        except ShardError as exc:
            errors.append(exc)
    return samples, errors
