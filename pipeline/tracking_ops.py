"""A training run's MLflow operations as plain records, and their delivery in bounded attempts.

A record is a JSON-ready dict, what the spill file stores one per line (:mod:`pipeline.tracking_spill`):

    {"id": "3f9c21ab:17", "run_id": R, "kind": "metrics", "metrics": [[key, value, timestamp_ms, step], ...]}
    {"id": ..., "run_id": R, "kind": "tags", "tags": {"name": "value"}}
    {"id": ..., "run_id": R, "kind": "restart", "step": 120, "data": "exact", "reason": "sigterm"}
    {"id": ..., "run_id": R, "kind": "terminated", "status": "FINISHED", "end_time": ms}

A record carries the time it was made (each metric's timestamp, the end time), so delivering it late, or
twice, writes the same thing: MLflow's SQL stores keep one row per (key, timestamp, step, value) of a run and
skip an exact repeat, a tag is overwritten with the same value, the status set again to the same value.
``restart`` counts (``dpt.restarts`` + 1), so it is the one record that must reach MLflow once: the spill
file's ``delivered`` lines see to that.

MLflow's client retries a failed request for minutes by default (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` 7 with
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` 2, each try up to ``MLFLOW_HTTP_REQUEST_TIMEOUT`` 120 s). It reads those
variables at every request, so :func:`http_attempts` sets them around our own calls only: one short attempt
while an outbox delivers in the background (it retries on its own schedule), a few for a command that waits on
the answer (creating the run, a replay).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

MAX_METRICS, MAX_TAGS = 1000, 100  # MLflow's limits per log_batch request

# One attempt of at most 10 s: the background delivery path (the outbox retries on its own schedule).
ONE_ATTEMPT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}
# Three attempts about 2 s apart, 10 s each at most: a command that waits on the answer (create the run, replay).
FEW_ATTEMPTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
HTTP_TIMEOUT_S = 10

# MLflow's answers that no retry changes (the request itself is wrong, the run is gone): the record is dropped.
PERMANENT_ERRORS = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "BAD_REQUEST"}


@contextlib.contextmanager
def http_attempts(settings: dict[str, str]) -> Iterator[None]:
    """MLflow's HTTP retry settings for the calls inside, restored after. They are process-wide environment
    variables: use this where ours are the only MLflow calls in flight (the rank-0 worker, whose training
    thread makes none; the driver before Ray starts, and while it waits on its outbox at the end)."""
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def current_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's current tracking URI set to ``uri`` for the calls inside, for MLflow's APIs that take none (a model's
    logging and registration, ``models:/`` downloads), then restored. Not MLflow's own ``_use_tracking_uri``:
    ``set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI``, and restoring "unset" would delete the variable."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    saved, variable = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved)
        if variable is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = variable


def metric_values(record: dict) -> int:
    return len(record.get("metrics", ()))


def groups(records: Iterable[dict]) -> Iterator[list[dict]]:
    """Consecutive records, in order, in groups that one request delivers: metrics and tags of a run together
    up to MLflow's batch limits; each ``restart`` and ``terminated`` alone."""
    group: list[dict] = []
    metrics = tags = 0
    for record in records:
        batchable = record["kind"] in ("metrics", "tags")
        m, t = metric_values(record), len(record.get("tags", {}))
        if group and (not batchable or group[0]["run_id"] != record["run_id"] or metrics + m > MAX_METRICS
                      or tags + t > MAX_TAGS):
            yield group
            group, metrics, tags = [], 0, 0
        group.append(record)
        metrics, tags = metrics + m, tags + t
        if not batchable:
            yield group
            group, metrics, tags = [], 0, 0
    if group:
        yield group


def deliver(client, group: list[dict]) -> None:
    """Send one group (from :func:`groups`) to MLflow; raises what the client raises."""
    from mlflow.entities import Metric, RunTag

    first = group[0]
    run_id = first["run_id"]
    if first["kind"] == "terminated":
        client.set_terminated(run_id, first["status"], end_time=first["end_time"])
        return
    if first["kind"] == "restart":
        _restart(client, first)
        return
    metrics = [Metric(k, v, ts, step) for r in group for k, v, ts, step in r.get("metrics", ())]
    tags = {k: v for r in group for k, v in r.get("tags", {}).items()}
    for start in range(0, max(1, len(metrics)), MAX_METRICS):
        # synchronous=True: MLFLOW_ENABLE_ASYNC_LOGGING would otherwise queue it in MLflow's own async logger,
        # which drops a batch that fails (an outage longer than its retries) and delivers out of order.
        client.log_batch(run_id, metrics=metrics[start:start + MAX_METRICS],
                         tags=[RunTag(k, v) for k, v in tags.items()] if start == 0 else [], synchronous=True)


def _restart(client, record: dict) -> None:
    """Count a resumed attempt: ``dpt.restarts``, the step it resumed from, how its data stream continued, and
    which checkpoint it resumed from (``reason``: ``periodic``, or why training stopped there: ``sigterm``...)."""
    from mlflow.entities import RunTag

    run = client.get_run(record["run_id"])
    restarts = int(run.data.tags.get("dpt.restarts", "0")) + 1
    tags = {"dpt.restarts": str(restarts), f"dpt.restart_{restarts}_from_step": str(record["step"])}
    if record.get("data") is not None:
        tags[f"dpt.restart_{restarts}_data"] = str(record["data"])
    if record.get("reason") is not None:
        tags[f"dpt.restart_{restarts}_reason"] = str(record["reason"])
    client.log_batch(record["run_id"], tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True)


def permanent(exc: BaseException) -> bool:
    """Whether MLflow refused the request itself (retrying cannot help), rather than not answering."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in PERMANENT_ERRORS


def reason(exc: BaseException) -> str:
    """A short reason for a failed request, for one-line messages (MLflow's own text runs to several hundred
    characters of urllib3 detail)."""
    text = str(exc)
    for needle, short in (("Connection refused", "connection refused"), ("timed out", "no answer in time"),
                          ("Name or service not known", "unknown host"),
                          ("Failed to resolve", "unknown host"), ("RemoteDisconnected", "connection closed")):
        if needle in text:
            return short
    error_code = getattr(exc, "error_code", None)
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"{error_code}: {first[:200]}" if error_code and error_code != "INTERNAL_ERROR" else first[:200]
