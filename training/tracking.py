"""MLflow for training runs, through ``MlflowClient`` (no global active run).

The driver creates the run once and logs the resolved config as params (MLflow params cannot change, so a
resumed attempt never logs them again); rank 0 of the Ray workers logs metrics into that run by id and
tags each restart. Lineage: each source's manifest as an MLflow dataset input (context training, and
validation for the splits it validates on; pipeline.tracking_datasets) and as a tag with its sha256, the code
version. The driver and each node's rank 0 log MLflow's system metrics (training.system_metrics). At the end
the driver logs the final checkpoint as the run's MLflow model (:func:`log_final_model`; ``tracking.register_as``
registers it).

Tracking never blocks or fails training. Creating the run is the one synchronous call (a run cannot start
without its MLflow run) and fails fast, in one line naming the URI; logging the final model, after training,
the other (a few short attempts, then one warning line). Everything after it, metrics, restart
tags and the final status, goes through an outbox (pipeline.tracking_outbox): a queue put on the training
side, a background thread that delivers in order and keeps what MLflow did not take in the run's spill file
(``<storage.path>/<storage.name>/mlflow-spill-<run id>.jsonl``). If MLflow still does not answer when training
ends, one line says how much is not delivered, where it is, and the ``dpt tracking replay`` command.
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

from pipeline import storage
from pipeline.code_version import code_version, source_sha256
from pipeline.config import to_dict
from pipeline.shards import MANIFEST_NAME, shard_dir
from pipeline.tracking import CODE_SHA256_TAG, CODE_VERSION_TAG, CORPUS_TAG, experiment_id, manifest_sha256_tag
from pipeline.tracking_datasets import dataset_input, manifest_dataset
from pipeline.tracking_ops import FEW_ATTEMPTS, current_tracking_uri, http_attempts, permanent, reason
from pipeline.tracking_outbox import Outbox
from pipeline.tracking_spill import Pending, spill_path, without_credentials
from training.config import TrackingConfig
from training.system_metrics import STOP_WAIT_S, SystemMetrics

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config data -> ``{"optim.lr_decoder": "0.0001", ...}``."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: str(data)[:MAX_PARAM_LENGTH]}


_driver_metrics: dict[str, SystemMetrics] = {}  # run id -> the driver's system metrics, stopped by finish_run


def lineage(config) -> tuple[dict[str, str], list]:
    """The run's lineage: tags (the code version and source hash, the corpus prefix, the sha256 of each source's
    manifest.parquet) and MLflow dataset inputs (each source's training split, context ``training``, and where
    it has one its validation split ``schedule.val_split``, context ``validation``)."""
    shards = config.data.shards
    tags = {CODE_VERSION_TAG: code_version(), CODE_SHA256_TAG: source_sha256(), CORPUS_TAG: shards.prefix}
    inputs = []
    for source in shards.sources:
        entity, sha256 = manifest_dataset(shards.prefix, source, shards.split)
        tags[manifest_sha256_tag(source, shards.split)] = sha256
        inputs.append(dataset_input(entity, "training"))
    val_split = config.schedule.val_split
    for source in shards.sources:
        directory = shard_dir(shards.prefix, source, val_split)
        if val_split != shards.split and storage.exists(storage.join(directory, MANIFEST_NAME)):
            inputs.append(dataset_input(manifest_dataset(shards.prefix, source, val_split)[0], "validation"))
    return tags, inputs


def create_run(config, uri: str, origin: str = "") -> str:
    """Create the MLflow run of a training job with params and lineage tags; returns its id.

    With ``tracking.run_id`` the job logs into that existing run instead (``dpt pipeline`` makes it a child
    of the pipeline's run); params are logged only once, since MLflow params cannot change. A few short
    attempts; when MLflow does not answer or refuses, RuntimeError in one line naming the URI (and ``origin``,
    where the URI came from).
    """
    from mlflow.exceptions import MlflowException

    try:
        with http_attempts(FEW_ATTEMPTS):
            run_id = _create_run(config, uri)
    except MlflowException as exc:
        origin = {"config": "tracking.uri"}.get(origin, origin)
        where = without_credentials(uri) + (f" (from {origin})" if origin else "")
        if permanent(exc):
            raise RuntimeError(f"MLflow at {where} refused the training run: {reason(exc)}") from None
        raise RuntimeError(f"MLflow at {where} did not answer ({reason(exc)}): a training run cannot be created "
                           f"without it; start the server, or set tracking.uri / MLFLOW_TRACKING_URI") from None
    _driver_metrics[run_id] = SystemMetrics(uri, run_id, config.tracking.system_metrics,
                                            interval_s=config.tracking.system_metrics_interval_s)
    return run_id


def _create_run(config, uri: str) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Param, RunTag

    client = MlflowClient(uri)
    tags, inputs = lineage(config)
    if config.tracking.run_id:
        run = client.get_run(config.tracking.run_id)
        client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True)
        client.log_inputs(run.info.run_id, datasets=inputs)  # MLflow keeps one of each dataset and context
        if run.data.params:
            return run.info.run_id
    else:
        experiment = experiment_id(client, config.tracking.experiment, uri)
        run = client.create_run(experiment, run_name=config.tracking.run_name or config.storage.name, tags=tags)
        client.log_inputs(run.info.run_id, datasets=inputs)
    params = [Param(k, v) for k, v in sorted(flatten(to_dict(config)).items())]
    for start in range(0, len(params), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run.info.run_id, params=params[start:start + 100], synchronous=True)
    client.log_batch(run.info.run_id, tags=[RunTag("dpt.restarts", "0")], synchronous=True)
    return run.info.run_id


def spill_file(config, run_id: str) -> str:
    """Where this run keeps what MLflow did not take (pipeline.tracking_spill.spill_path)."""
    return spill_path(config.storage.path, config.storage.name, run_id)


def undelivered_line(uri: str, run_id: str, pending: Pending, lost: int = 0) -> str:
    """The one line that says what MLflow did not get, where it is, and how to deliver it."""
    others = (f" and {pending.others} other record{'s' * (pending.others != 1)} (tags, restart counts, the final "
              f"status)" if pending.others else "")
    gone = f"; {lost} more metric values could not be kept (the spill file was not writable)" if lost else ""
    return (f"tracking: MLflow at {without_credentials(uri)} did not answer by the end of training: "
            f"{pending.metric_values} metric values{others} of run {run_id} are not in MLflow; they are in "
            f"{pending.path} on {socket.gethostname()}: deliver them with "
            f"`dpt tracking replay {pending.path}` once it is up{gone}")


def finish_run(config, uri: str, run_id: str, status: str, wait_s: float | None = None,
               tags: dict[str, str] | None = None) -> str | None:
    """Set the run's final status (``FINISHED``, ``FAILED``, ``KILLED``) and ``tags`` through an outbox, after
    what rank 0 left in the spill file, within ``wait_s`` (default ``tracking.end_wait_s``) of MLflow not
    answering: the driver waits, as it can deliver what rank 0 left in a spill file it can read. Prints and
    returns the one-line report when MLflow did not get everything; never raises for MLflow. The driver's
    system metrics stop first (within a few seconds, or at once with ``wait_s=0``)."""
    monitor = _driver_metrics.pop(run_id, None)
    if monitor is not None:
        monitor.stop(min(STOP_WAIT_S, config.tracking.end_wait_s if wait_s is None else wait_s))
    outbox = Outbox(uri, run_id, spill_file(config, run_id), announce=False)  # its one line is below
    if tags:
        outbox.put("tags", tags=tags)
    outbox.put("terminated", status=status, end_time=int(time.time() * 1000))
    pending = outbox.close(config.tracking.end_wait_s if wait_s is None else wait_s)
    if pending is None and not outbox.lost:
        return None
    line = undelivered_line(uri, run_id, pending or Pending(outbox.spill.path, 0, 0), outbox.lost)
    print(line, file=sys.stderr, flush=True)
    return line


def log_final_model(config, uri: str, run_id: str, checkpoint: str, step: int) -> str | None:
    """Log the run's final checkpoint directory ``checkpoint`` (local or s3://) as its MLflow model, produced at
    ``step`` (``training.model.mlflow_model``), and register it as ``tracking.register_as`` when set; returns the
    model's URI (``models:/NAME/VERSION`` when registered, else ``models:/<model id>``). Synchronous, in a few short
    attempts per request; when MLflow does not take it, one warning line and None: the training result stands."""
    from training.model.mlflow_model import log_model

    register_as = config.tracking.register_as
    try:
        with http_attempts(FEW_ATTEMPTS), current_tracking_uri(uri):
            info = log_model(checkpoint, run_id, step, register_as,
                             storage.S3Options(config.storage.endpoint_url, config.storage.region))
    except Exception as exc:  # MLflow's, storage's, the model's: none of them undoes the training
        print(f"tracking: the final model was not logged to MLflow at {without_credentials(uri)} ({reason(exc)}); "
              f"the training result stands, its checkpoint is {checkpoint}", file=sys.stderr, flush=True)
        return None
    version = getattr(info, "registered_model_version", None)
    return f"models:/{register_as}/{version}" if register_as and version else info.model_uri


class RankZeroLogger:
    """Metrics and tags into an existing run from rank 0, through an outbox: a call is a queue put, never a wait
    for MLflow. On other ranks every call does nothing. A context manager: leaving it delivers what is left
    (at once after an exception), and rank 0 on another host than the driver prints the one-line report for
    its own spill file, which the driver cannot read."""

    def __init__(self, uri: str | None, run_id: str | None, active: bool, spill: str | None = None,
                 driver_host: str | None = None, end_wait_s: float = TrackingConfig.end_wait_s):
        """``end_wait_s``: how long closing waits for an MLflow that does not answer, on another host than the
        driver only (there the driver cannot read this rank's spill file; on the driver's host it waits)."""
        self.run_id = run_id
        self.uri = uri
        self.end_wait_s = end_wait_s
        self.outbox = Outbox(uri, run_id, spill) if active and uri and run_id and spill else None
        self.remote = driver_host is not None and driver_host != socket.gethostname()

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.outbox is None or not metrics:
            return
        now = int(time.time() * 1000)
        self.outbox.put("metrics", metrics=[[k.replace("@", "_"), float(v), now, step]
                                            for k, v in sorted(metrics.items())])

    def mark_restart(self, step: int, data: str | None = None, reason: str | None = None) -> None:
        """Tag a resumed attempt: how many restarts so far, the step it resumed from, how its data stream
        continued (``exact``, or why it was reseeded), and what wrote its checkpoint (``reason``: ``periodic``,
        ``sigterm``: a worker's SIGTERM, ``stopped``: the driver's; see training.preemption)."""
        if self.outbox is not None:
            self.outbox.put("restart", step=step, data=data, reason=reason)

    def end(self, status: str, tags: dict[str, str]) -> None:
        """Set the run's final status (and tags) from rank 0, for a driver that may not live to do it."""
        if self.outbox is not None:
            self.set_tags(tags)
            self.outbox.put("terminated", status=status, end_time=int(time.time() * 1000))

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.outbox is not None and tags:
            self.outbox.put("tags", tags={k: str(v) for k, v in tags.items()})

    def close(self, wait_s: float = 0.0) -> Pending | None:
        """Deliver what is left (see Outbox.close); on another host than the driver, print what is not."""
        if self.outbox is None:
            return None
        pending = self.outbox.close(self.end_wait_s if self.remote else wait_s)
        if self.remote and (pending or self.outbox.lost):
            print(undelivered_line(self.uri, self.run_id, pending or Pending(self.outbox.spill.path, 0, 0),
                                   self.outbox.lost), file=sys.stderr, flush=True)
        return pending

    def __enter__(self) -> RankZeroLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
