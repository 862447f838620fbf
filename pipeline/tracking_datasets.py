"""What a run read, as MLflow dataset inputs: the UI's "Datasets used", with a digest that names the data.

A shard split (``<prefix>/<source>/<split>/``) is one dataset: named ``<source>/<split>``, its source the URL
of its ``manifest.parquet``, its digest that file's sha256 (the first ``DIGEST_CHARS`` hex digits: MLflow keeps
at most 36 characters), its profile the sample and shard counts, the split and the whole sha256. Two runs on
the same corpus show the same digest; a re-ingested split shows another. An evaluation benchmark is one dataset
too (its folder as the source, the sha256 of the ids of the images scored as the digest).

The context (``training``, ``validation``, ``evaluation``) is MLflow's own input tag ``mlflow.data.context``.
"""

from __future__ import annotations

import hashlib
import json
import os

from pipeline import storage
from pipeline.shards import MANIFEST_NAME, shard_dir

DIGEST_CHARS = 32  # of the sha256's 64 hex digits (MLflow's limit on a dataset digest is 36 characters)
CONTEXTS = ("training", "validation", "evaluation")


def _absolute(url: str) -> str:
    """A local path made absolute (a dataset's source must name the same file from any directory)."""
    return url if "://" in url else os.path.abspath(url)


def source_of(url: str) -> tuple[str, str]:
    """``(source type, source JSON)`` of ``url`` as MLflow's own dataset sources write them (``local`` and
    ``s3``: ``{"uri": ...}``; ``http``: ``{"url": ...}``). Written here: importing MLflow's source registry
    takes seconds (it loads every dataset library it knows), at the start of every training run."""
    if url.startswith(("http://", "https://")):
        return "http", json.dumps({"url": url})
    if storage.is_s3(url):
        return "s3", json.dumps({"uri": url})
    return "local", json.dumps({"uri": _absolute(url)})


def dataset(name: str, url: str, sha256: str, profile: dict):
    """An MLflow dataset entity: ``name``, source ``url`` (local path, s3://, http(s)://), digest the first
    ``DIGEST_CHARS`` of ``sha256``, ``profile`` (with the whole sha256) as JSON."""
    from mlflow.entities import Dataset

    source_type, source = source_of(url)
    return Dataset(name=name, digest=sha256[:DIGEST_CHARS], source_type=source_type, source=source,
                   profile=json.dumps({**profile, "sha256": sha256}))


def manifest_dataset(prefix: str, source: str, split: str, data: bytes | None = None):
    """``(dataset, sha256)`` of one shard split from its manifest (``data``: its bytes, when already read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    url = storage.join(shard_dir(prefix, source, split), MANIFEST_NAME)
    data = storage.read_bytes(url) if data is None else data
    digest = hashlib.sha256(data).hexdigest()
    samples = pq.read_table(pa.BufferReader(data), columns=["samples"], use_threads=False).column("samples").to_pylist()
    profile = {"samples": sum(samples), "shards": len(samples), "split": split}
    return dataset(f"{source}/{split}", url, digest, profile), digest


def benchmark_dataset(name: str, url: str, image_ids: list[str], profile: dict | None = None):
    """The dataset of an evaluation benchmark: ``url`` its folder, the digest the sha256 of its sorted image ids
    (the same images give the same digest, a ``--limit`` or another copy of the benchmark another)."""
    ids = sorted(set(image_ids))
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    return dataset(name, url, digest, {"images": len(ids), **(profile or {})})


def dataset_input(entity, context: str):
    """``entity`` as a run input with its context (one of ``CONTEXTS``)."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    if context not in CONTEXTS:
        raise ValueError(f"dataset context {context!r}: expected one of {', '.join(CONTEXTS)}")
    return DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
