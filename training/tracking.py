"""MLflow for training runs, through ``MlflowClient`` (no global active run).

The driver creates the run once and logs the resolved config as params (MLflow params cannot change, so a
resumed attempt never logs them again); rank 0 of the Ray workers logs metrics into that run by id and
tags each restart. Lineage tags: each source's manifest sha256 and the code version.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from pipeline import storage
from pipeline.code_version import code_version, source_sha256
from pipeline.config import to_dict
from pipeline.shards import MANIFEST_NAME, shard_dir
from pipeline.tracking import CODE_SHA256_TAG, CODE_VERSION_TAG, experiment_id, manifest_sha256_tag

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config data -> ``{"optim.lr_decoder": "0.0001", ...}``."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: str(data)[:MAX_PARAM_LENGTH]}


def lineage_tags(prefix: str, sources: list[str], split: str) -> dict[str, str]:
    """The code version and source hash, the corpus prefix, and the sha256 of each source's manifest.parquet."""
    tags = {CODE_VERSION_TAG: code_version(), CODE_SHA256_TAG: source_sha256(), "dpt.corpus": prefix}
    for source in sources:
        data = storage.read_bytes(storage.join(shard_dir(prefix, source, split), MANIFEST_NAME))
        tags[manifest_sha256_tag(source, split)] = hashlib.sha256(data).hexdigest()
    return tags


def create_run(config, uri: str) -> str:
    """Create the MLflow run of a training job with params and lineage tags; returns its id.

    With ``tracking.run_id`` the job logs into that existing run instead (``dpt pipeline`` makes it a child
    of the pipeline's run); params are logged only once, since MLflow params cannot change.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Param, RunTag

    client = MlflowClient(uri)
    shards = config.data.shards
    tags = lineage_tags(shards.prefix, shards.sources, shards.split)
    if config.tracking.run_id:
        run = client.get_run(config.tracking.run_id)
        client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        if run.data.params:
            return run.info.run_id
    else:
        experiment = experiment_id(client, config.tracking.experiment, uri)
        run = client.create_run(experiment, run_name=config.tracking.run_name or config.storage.name, tags=tags)
    params = [Param(k, v) for k, v in sorted(flatten(to_dict(config)).items())]
    for start in range(0, len(params), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run.info.run_id, params=params[start:start + 100])
    client.log_batch(run.info.run_id, tags=[RunTag("dpt.restarts", "0")])
    return run.info.run_id


class RankZeroLogger:
    """Metrics into an existing run from rank 0; on other ranks every call does nothing."""

    def __init__(self, uri: str | None, run_id: str | None, active: bool):
        self.run_id = run_id
        self.client = None
        if active and uri and run_id:
            from mlflow import MlflowClient

            self.client = MlflowClient(uri)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k.replace("@", "_"), float(v), now, step) for k, v in sorted(metrics.items())]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start:start + 1000])

    def mark_restart(self, step: int, data: str | None = None) -> None:
        """Tag a resumed attempt: how many restarts so far, the step it resumed from, and how its data
        stream continued (``exact``, or why it was reseeded)."""
        if self.client is None:
            return
        run = self.client.get_run(self.run_id)
        restarts = int(run.data.tags.get("dpt.restarts", "0")) + 1
        self.client.set_tag(self.run_id, "dpt.restarts", str(restarts))
        self.client.set_tag(self.run_id, f"dpt.restart_{restarts}_from_step", str(step))
        if data is not None:
            self.client.set_tag(self.run_id, f"dpt.restart_{restarts}_data", data)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.client is not None:
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, value)
